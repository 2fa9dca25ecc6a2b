//! The simulation engine: plays the Orion kernel (probe, init, hotplug, timers, interrupts,
//! shutdown, kill and restart), the storage service (block requests many at a time,
//! management requests) and the member disks' drivers (answers late and out of order, I/O
//! errors, silence, hot removal, writes torn by a crash) for one driver over a
//! [`Transport`], and checks every read against the [`Model`].

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use orion_driver::{
    DeviceInfo, DriverError, Frame, HotplugEvent, IoFlags, IoOp, IoRequest, IoResponse, Message,
    ShutdownReason, encode, serve_io,
};

use super::disk::{SimDisk, SimDiskDriver};
use super::model::{ANY, Model, ZERO, write_data};
use super::proto;
use super::transport::{DriverFault, Transport};
use crate::array::assemble::{CreateOptions, create};
use crate::array::nested::{NestedSpec, create_nested};
use crate::block::{BlockDevice, SECTOR_BYTES};
use crate::executor::Executor;
use crate::manage::{ArrayStatus, StatusReport};
use crate::metadata::Level;
use crate::rng::SplitMix64;

/// The name of the simulated array (its groups are `sim-g0`, `sim-g1`, … for RAID 50/60).
pub const ARRAY_NAME: &str = "sim";
/// Timers go to the driver this often (simulated time).
const TIMER_INTERVAL_NS: u64 = 100_000_000;
/// Simulated time one busy step of the loop takes.
const STEP_NS: u64 = 20_000;
/// The member I/O timeout the simulation sets (a silent member is failed after it).
const IO_TIMEOUT_MS: u64 = 1000;
/// The same for a driver process on the real clock: a shared, busy machine may not run the
/// simulator for a second, and a timeout then is a stall of the host, not a member fault.
const IO_TIMEOUT_REAL_CLOCK_MS: u64 = 3000;
/// Simulated time with requests owed and no answer before the run counts as hung.
const HANG_NS: u64 = 600_000_000_000;
/// Chunk of the arrays made beforehand (64 KiB).
const CHUNK_SECTORS: u32 = 128;
/// The driver's device id and irq numbering for the disks.
const FIRST_DISK_ID: u32 = 100;

/// A RAID level the simulator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimLevel {
    Raid0,
    Raid1,
    Raid4,
    Raid5,
    Raid6,
    Raid10,
    Raid50,
    Raid60,
}

impl SimLevel {
    pub const ALL: [SimLevel; 8] = [
        SimLevel::Raid0,
        SimLevel::Raid1,
        SimLevel::Raid4,
        SimLevel::Raid5,
        SimLevel::Raid6,
        SimLevel::Raid10,
        SimLevel::Raid50,
        SimLevel::Raid60,
    ];

    /// The level's number (`50` for RAID 50).
    pub fn number(self) -> u32 {
        match self {
            SimLevel::Raid0 => 0,
            SimLevel::Raid1 => 1,
            SimLevel::Raid4 => 4,
            SimLevel::Raid5 => 5,
            SimLevel::Raid6 => 6,
            SimLevel::Raid10 => 10,
            SimLevel::Raid50 => 50,
            SimLevel::Raid60 => 60,
        }
    }

    pub fn from_number(n: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.number() == n)
    }

    /// Groups (RAID 50/60) or 1, and members per group.
    fn shape(self) -> (usize, usize) {
        match self {
            SimLevel::Raid0 => (1, 3),
            SimLevel::Raid1 => (1, 2),
            SimLevel::Raid4 | SimLevel::Raid5 | SimLevel::Raid10 => (1, 4),
            SimLevel::Raid6 => (1, 5),
            SimLevel::Raid50 => (2, 3),
            SimLevel::Raid60 => (2, 4),
        }
    }

    /// Member failures at once each group survives without data loss.
    pub fn tolerance(self) -> usize {
        match self {
            SimLevel::Raid0 => 0,
            SimLevel::Raid6 | SimLevel::Raid60 => 2,
            _ => 1,
        }
    }

    /// Levels with parity, where a crash while degraded may lose data legitimately (the
    /// RAID-5 write hole): crashes wait for the array to be whole.
    fn has_parity(self) -> bool {
        !matches!(self, SimLevel::Raid0 | SimLevel::Raid1 | SimLevel::Raid10)
    }

    fn md_level(self) -> Level {
        match self {
            SimLevel::Raid0 | SimLevel::Raid50 | SimLevel::Raid60 => Level::Raid0,
            SimLevel::Raid1 => Level::Raid1,
            SimLevel::Raid4 => Level::Raid4,
            SimLevel::Raid5 => Level::Raid5,
            SimLevel::Raid6 => Level::Raid6,
            SimLevel::Raid10 => Level::Raid10,
        }
    }
}

/// What one simulation run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub level: SimLevel,
    /// Block requests of the storage service (the final read-back comes on top).
    pub ops: u64,
    /// Member faults: I/O errors, silence (timeouts), hot removal, `fail`, slow members.
    pub faults: bool,
    /// Kills of the driver with member writes in flight torn, and restarts.
    pub crashes: bool,
    /// Size of each member disk.
    pub member_sectors: u64,
    /// Members per array (per group for RAID 50/60), if not the level's default.
    pub members_per_group: Option<usize>,
    /// Block requests in flight at once, at most.
    pub depth: usize,
    /// Whether the arrays made beforehand skip the initial resync (mdadm --assume-clean).
    pub assume_clean: bool,
    /// The heap the driver may use; a higher reported peak fails the run.
    pub heap_budget_bytes: u64,
    /// Prints what the simulation does (faults, crashes, repairs) on stderr.
    pub trace: bool,
    /// Members return other data than they hold now and then, with no error (a fault no
    /// level without checksums detects): the check that the model catches wrong reads.
    pub corrupt_member_reads: bool,
}

impl SimConfig {
    /// A run with faults and crashes on, 8 MiB members.
    pub fn new(seed: u64, level: SimLevel, ops: u64) -> Self {
        SimConfig {
            seed,
            level,
            ops,
            faults: true,
            crashes: true,
            member_sectors: 16 * 1024,
            members_per_group: None,
            depth: 48,
            assume_clean: seed.is_multiple_of(2),
            heap_budget_bytes: (64 + 16) << 20,
            trace: false,
            corrupt_member_reads: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    pub level: u32,
    pub ops: u64,
    pub faults: u64,
    pub crashes: u64,
    /// Reads that returned data no write could have left there, and errors (read or write)
    /// where the faults injected did not exceed what the level tolerates.
    pub wrong_reads: u64,
    pub heap_peak_bytes: u64,
    /// The first wrong reads, described.
    pub wrong_details: Vec<String>,
    /// Why the run stopped early (a driver panic, a hang, a protocol breach), if it did.
    pub failure: Option<String>,
    /// Member requests answered, management requests made (for a feel of the run).
    pub member_requests: u64,
    pub management_requests: u64,
    /// Heap peak over budget.
    pub over_budget: bool,
}

impl SimReport {
    /// The line `orion-sim` ends with.
    pub fn summary_line(&self) -> String {
        format!(
            "orion-sim: seed {} level {} ops {} faults {} crashes {} wrong_reads {} heap_peak_bytes {}",
            self.seed,
            self.level,
            self.ops,
            self.faults,
            self.crashes,
            self.wrong_reads,
            self.heap_peak_bytes
        )
    }

    pub fn passed(&self) -> bool {
        self.wrong_reads == 0 && self.failure.is_none() && !self.over_budget
    }
}

/// Why a run stopped.
#[derive(Debug)]
enum SimError {
    Driver(DriverFault),
    Stuck(String),
    Protocol(String),
}

impl From<DriverFault> for SimError {
    fn from(f: DriverFault) -> Self {
        SimError::Driver(f)
    }
}

impl core::fmt::Display for SimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SimError::Driver(d) => write!(f, "{d}"),
            SimError::Stuck(why) => write!(f, "stuck: {why}"),
            SimError::Protocol(why) => write!(f, "protocol: {why}"),
        }
    }
}

type SimResult<T> = Result<T, SimError>;

/// A member disk the kernel has (or had).
struct Disk {
    disk: Rc<SimDisk>,
    plugged: bool,
    irq: u32,
    /// Chance per member request of an I/O error.
    error_ppm: u32,
    /// Its driver answers nothing (the driver's I/O timeout must fail it).
    silent: bool,
    /// Answers take 20–150 ms more until then.
    slow_until_ns: u64,
}

/// A member request waiting for its answer.
struct MemberIo {
    due_ns: u64,
    order: u64,
    sequence: u64,
    request: IoRequest,
    error: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Read,
    Write,
    Flush,
}

struct ClientOp {
    kind: ClientKind,
    sector: u64,
    sectors: u64,
    /// Issued while the level's tolerance was exceeded: an error is allowed.
    errors_allowed: bool,
}

/// A member the simulation is hurting, and until when.
struct Victim {
    group: String,
    until_op: u64,
}

/// The array as the driver serves it now.
#[derive(Default, Clone)]
struct Served {
    device_id: u32,
    capacity_sectors: u64,
}

struct Sim<'c, T: Transport> {
    cfg: &'c SimConfig,
    rng: SplitMix64,
    t: T,
    now_ns: u64,
    next_timer_ns: u64,
    last_progress_ns: u64,
    disks: BTreeMap<u32, Disk>,
    next_disk_id: u32,
    queue: Vec<MemberIo>,
    withheld: Vec<MemberIo>,
    client: BTreeMap<u64, ClientOp>,
    awaiting: BTreeSet<u64>,
    replies: BTreeMap<u64, Message>,
    next_sequence: u64,
    next_tag: u64,
    model: Model,
    report: SimReport,
    served: Served,
    hot_start: u64,
    hot_sectors: u64,
    victims: BTreeMap<u32, Victim>,
    issued: u64,
    /// RAID 0 with a member returning errors: requests in flight meanwhile may fail.
    error_window: bool,
}

/// Runs one simulation over `transport`.
pub fn run<T: Transport>(cfg: &SimConfig, transport: T) -> SimReport {
    let mut sim = Sim {
        cfg,
        rng: SplitMix64::new(cfg.seed ^ 0x6f72_696f_6e73_696d),
        t: transport,
        now_ns: 0,
        next_timer_ns: 0,
        last_progress_ns: 0,
        disks: BTreeMap::new(),
        next_disk_id: FIRST_DISK_ID,
        queue: Vec::new(),
        withheld: Vec::new(),
        client: BTreeMap::new(),
        awaiting: BTreeSet::new(),
        replies: BTreeMap::new(),
        next_sequence: 1,
        next_tag: 1,
        model: Model::default(),
        report: SimReport {
            seed: cfg.seed,
            level: cfg.level.number(),
            ..SimReport::default()
        },
        served: Served::default(),
        hot_start: 0,
        hot_sectors: 0,
        victims: BTreeMap::new(),
        issued: 0,
        error_window: false,
    };
    if let Err(e) = sim.scenario() {
        let tail = sim.t.log_tail();
        let mut text = e.to_string();
        if !tail.is_empty() && !text.contains(&tail) {
            text.push_str("\n--- driver log (end) ---\n");
            text.push_str(&tail);
        }
        sim.report.failure = Some(text);
        sim.t.kill();
        sim.trace(|| sim.superblocks());
    }
    sim.report.ops = sim.issued.min(cfg.ops);
    sim.report.over_budget = sim.report.heap_peak_bytes > cfg.heap_budget_bytes;
    sim.report
}

impl<T: Transport> Sim<'_, T> {
    fn scenario(&mut self) -> SimResult<()> {
        self.make_disks()?;
        self.boot()?;
        self.add_spares()?;
        let fault_points = self.points(if self.cfg.faults { 700 } else { 0 });
        let crash_points = self.points(if self.cfg.crashes { 5000 } else { 0 });
        while self.issued < self.cfg.ops {
            while self.client.len() < self.cfg.depth && self.issued < self.cfg.ops {
                self.issue_op()?;
                if fault_points.contains(&self.issued) {
                    self.inject_fault()?;
                }
                if crash_points.contains(&self.issued) {
                    self.crash_if_safe()?;
                }
                if self.issued.is_multiple_of(400) {
                    self.reconcile()?;
                }
                if self.rng.chance_ppm(200_000) {
                    break;
                }
            }
            self.step()?;
        }
        self.drain()?;
        self.reconcile()?;
        self.shutdown()?;
        // Everything written must be there after a clean restart.
        self.boot()?;
        self.read_back()?;
        self.shutdown()?;
        Ok(())
    }

    /// `count` distinct op numbers, one per `every` ops on average (at least one when on).
    fn points(&mut self, every: u64) -> BTreeSet<u64> {
        if every == 0 || self.cfg.ops < 200 {
            return BTreeSet::new();
        }
        let count = (self.cfg.ops / every).max(1);
        (0..count)
            .map(|_| self.rng.range_inclusive(100, self.cfg.ops - 50))
            .collect()
    }

    // ---- disks -------------------------------------------------------------------------

    fn new_disk(&mut self, disk: Rc<SimDisk>) -> u32 {
        let id = self.next_disk_id;
        self.next_disk_id += 1;
        self.disks.insert(
            id,
            Disk {
                disk,
                plugged: true,
                irq: 32 + id,
                error_ppm: 0,
                silent: false,
                slow_until_ns: 0,
            },
        );
        id
    }

    fn device_info(&self, id: u32) -> DeviceInfo {
        let d = &self.disks[&id];
        let mut info = DeviceInfo::block(id, &format!("ram{id}"), 512, d.disk.capacity_sectors())
            .unwrap_or_else(|_| DeviceInfo::block(id, "ram", 512, 0).expect("a plain name"));
        info.irq = Some(d.irq);
        info
    }

    /// The members, with the array's superblocks written beforehand, and a blank spare.
    fn make_disks(&mut self) -> SimResult<()> {
        let (groups, default_members) = self.cfg.level.shape();
        let per_group = self.cfg.members_per_group.unwrap_or(default_members);
        let disks: Vec<Rc<SimDisk>> = (0..groups * per_group)
            .map(|_| Rc::new(SimDisk::new(self.cfg.member_sectors)))
            .collect();
        let members: Vec<(String, Rc<dyn BlockDevice>)> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("m{i}"), d.clone() as Rc<dyn BlockDevice>))
            .collect();
        let mut uuid = [0u8; 16];
        self.rng.fill(&mut uuid);
        let opts = CreateOptions {
            level: self.cfg.level.md_level(),
            layout: None,
            chunk_sectors: CHUNK_SECTORS,
            name: ARRAY_NAME.into(),
            uuid,
            time_s: 1_800_000_000,
            entropy: self.rng.next_u64(),
            assume_clean: self.cfg.assume_clean,
        };
        let exec = Executor::new();
        let e = exec.clone();
        let nested = NestedSpec::for_level(self.cfg.level.number(), groups);
        let created = exec.block_on(async move {
            match nested {
                Some(spec) => {
                    let stack = create_nested(&e, members, &opts, spec)
                        .await
                        .map_err(|x| format!("{x:?}"))?;
                    for layer in stack.layers() {
                        layer.mark_clean().await.map_err(|x| x.to_string())?;
                    }
                    Ok(())
                }
                None => {
                    let array = create(&e, members, &opts)
                        .await
                        .map_err(|x| format!("{x:?}"))?;
                    array.mark_clean().await.map_err(|x| x.to_string())
                }
            }
        });
        match created {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(SimError::Protocol(format!("create: {e}"))),
            None => return Err(SimError::Protocol("create did not finish".into())),
        }
        for d in disks {
            self.new_disk(d);
        }
        Ok(())
    }

    // ---- the channel -------------------------------------------------------------------

    fn sequence(&mut self) -> u64 {
        let s = self.next_sequence;
        self.next_sequence += 1;
        s
    }

    fn frame(sequence: u64, message: Message) -> SimResult<Vec<u8>> {
        encode(&Frame { sequence, message }).map_err(|e| SimError::Protocol(format!("{e}")))
    }

    /// One turn: due member answers and timers go out, the driver runs, its frames are
    /// handled, the clock moves.
    fn step(&mut self) -> SimResult<()> {
        self.now_ns = self.now_ns.max(self.t.clock_floor_ns());
        let mut wire = Vec::new();
        if self.queue.iter().any(|io| io.due_ns <= self.now_ns) {
            self.queue.sort_by_key(|io| (io.due_ns, io.order));
            let due = self.queue.partition_point(|io| io.due_ns <= self.now_ns);
            let ready: Vec<MemberIo> = self.queue.drain(..due).collect();
            for io in ready {
                if let Some(response) = self.answer(&io) {
                    wire.extend(Self::frame(io.sequence, Message::IoResponse(response))?);
                }
            }
        }
        if self.now_ns >= self.next_timer_ns {
            wire.extend(Self::frame(
                0,
                Message::Timer {
                    timer_id: 1,
                    now_ns: self.now_ns,
                },
            )?);
            self.next_timer_ns = self.now_ns + TIMER_INTERVAL_NS;
        }
        let delivered = !wire.is_empty();
        if delivered {
            self.t.send(&wire)?;
        }
        let owed = !self.client.is_empty() || !self.awaiting.is_empty();
        // A process runs on its own: frames not here yet may still come (its assembly's
        // member requests, say), so it is always given its moment, and the clock follows
        // the real one instead of jumping ahead of work the driver may be doing (its
        // timeouts would fire on requests the simulator has not even read yet).
        let real_clock = self.t.clock_floor_ns() > 0;
        let frames = self.t.exchange(self.now_ns, owed || real_clock)?;
        let got = !frames.is_empty();
        for frame in frames {
            self.handle(frame)?;
        }
        if got || delivered || real_clock {
            self.now_ns += STEP_NS;
        } else {
            let next_due = self.queue.iter().map(|io| io.due_ns).min();
            let next = next_due.map_or(self.next_timer_ns, |d| d.min(self.next_timer_ns));
            self.now_ns = next.max(self.now_ns + STEP_NS);
        }
        if !owed || got {
            self.last_progress_ns = self.now_ns;
        } else if self.now_ns - self.last_progress_ns > HANG_NS {
            let withheld: Vec<String> = self
                .withheld
                .iter()
                .take(12)
                .map(|io| {
                    format!(
                        "{:?} disk{} {}+{}",
                        io.request.op,
                        io.request.device_id,
                        io.request.sector,
                        io.request.sector_count
                    )
                })
                .collect();
            self.trace(|| format!("withheld: {}", withheld.join(", ")));
            return Err(SimError::Stuck(format!(
                "no answer for {} s: {} block requests and {} other requests owed \
                 (sequences {:?}), {} member requests withheld",
                HANG_NS / 1_000_000_000,
                self.client.len(),
                self.awaiting.len(),
                self.awaiting
                    .iter()
                    .chain(self.client.keys())
                    .take(8)
                    .collect::<Vec<_>>(),
                self.withheld.len()
            )));
        }
        Ok(())
    }

    /// The member disk's answer to one of its requests (`None`: it is gone).
    fn answer(&mut self, io: &MemberIo) -> Option<IoResponse> {
        let d = self.disks.get(&io.request.device_id)?;
        if !d.plugged {
            return None;
        }
        self.report.member_requests += 1;
        if io.error {
            return Some(IoResponse::err(DriverError::Io));
        }
        let disk = d.disk.clone();
        let mut response = serve_io(&mut SimDiskDriver(&disk), &io.request);
        if self.cfg.corrupt_member_reads
            && io.request.op == IoOp::Read
            && !response.data.is_empty()
            && self.rng.chance_ppm(20_000)
        {
            let at = self.rng.below(response.data.len() as u64) as usize;
            response.data[at] ^= 0x5a;
        }
        Some(response)
    }

    fn handle(&mut self, frame: Frame) -> SimResult<()> {
        match frame.message {
            Message::IoRequest(request) => {
                self.member_request(frame.sequence, request);
                Ok(())
            }
            Message::Error(e) if frame.sequence == 0 => Err(SimError::Driver(
                DriverFault::Panicked(e.detail.as_str().to_string()),
            )),
            Message::IoResponse(response) if self.client.contains_key(&frame.sequence) => {
                self.client_done(frame.sequence, response);
                Ok(())
            }
            message if self.awaiting.remove(&frame.sequence) => {
                self.replies.insert(frame.sequence, message);
                Ok(())
            }
            message => Err(SimError::Protocol(format!(
                "a frame nobody asked for: {} {message:?}",
                frame.sequence
            ))),
        }
    }

    fn member_request(&mut self, sequence: u64, request: IoRequest) {
        let now = self.now_ns;
        let Some(d) = self.disks.get(&request.device_id) else {
            // Not a disk of this kernel: its (absent) driver says so.
            self.queue.push(MemberIo {
                due_ns: now,
                order: 0,
                sequence,
                request,
                error: true,
            });
            return;
        };
        if !d.plugged {
            // A pulled disk's driver is gone: nothing answers.
            return;
        }
        let (silent, error_ppm, slow) = (d.silent, d.error_ppm, d.slow_until_ns > now);
        let mut latency = self.rng.range_inclusive(20_000, 300_000);
        if self.rng.chance_ppm(30_000) {
            latency += self.rng.range_inclusive(1_000_000, 50_000_000);
        }
        if slow {
            latency += self.rng.range_inclusive(20_000_000, 150_000_000);
        }
        let error = request.op != IoOp::Flush && self.rng.chance_ppm(error_ppm);
        let io = MemberIo {
            due_ns: now + latency,
            order: self.rng.next_u64(),
            sequence,
            request,
            error,
        };
        if silent {
            self.withheld.push(io);
        } else {
            self.queue.push(io);
        }
    }

    /// Sends `message` and runs until its reply.
    fn call(&mut self, message: Message) -> SimResult<Message> {
        if matches!(message, Message::ManagementRequest(_)) {
            self.report.management_requests += 1;
        }
        let sequence = self.sequence();
        self.awaiting.insert(sequence);
        let wire = Self::frame(sequence, message)?;
        self.t.send(&wire)?;
        loop {
            if let Some(reply) = self.replies.remove(&sequence) {
                return Ok(reply);
            }
            self.step()?;
        }
    }

    /// A request the kernel expects `Ack` for.
    fn call_ack(&mut self, what: &str, message: Message) -> SimResult<()> {
        match self.call(message)? {
            Message::Ack => Ok(()),
            other => Err(SimError::Protocol(format!("{what}: {other:?}"))),
        }
    }

    fn manage(&mut self, message: Message) -> SimResult<(bool, String)> {
        let reply = self.call(message)?;
        let (ok, payload) = proto::response(&reply).map_err(SimError::Protocol)?;
        Ok((ok, String::from_utf8_lossy(payload).into_owned()))
    }

    fn status(&mut self) -> SimResult<StatusReport> {
        let reply = self.call(proto::status())?;
        proto::parse_status(&reply).map_err(SimError::Protocol)
    }

    fn sample_heap(&mut self) -> SimResult<()> {
        let reply = self.call(proto::metrics())?;
        if let Some(peak) = proto::heap_peak(&reply) {
            self.report.heap_peak_bytes = self.report.heap_peak_bytes.max(peak);
        }
        Ok(())
    }

    // ---- boot and shutdown -------------------------------------------------------------

    /// Starts the driver over the plugged disks: some probed, the rest hotplugged, all sent
    /// at once (their discoveries race), then `Init`; waits for the array.
    fn boot(&mut self) -> SimResult<()> {
        let floor = self.t.clock_floor_ns();
        if floor > 0 {
            self.now_ns = floor;
        }
        self.t.start(self.now_ns)?;
        self.next_timer_ns = self.now_ns;
        self.last_progress_ns = self.now_ns;
        let mut ids: Vec<u32> = self
            .disks
            .iter()
            .filter(|(_, d)| d.plugged)
            .map(|(&id, _)| id)
            .collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        let mut wire = Vec::new();
        let mut owed = Vec::new();
        for id in ids {
            let info = self.device_info(id);
            let message = if self.rng.chance_ppm(500_000) {
                Message::Probe(info)
            } else {
                Message::Hotplug {
                    event: HotplugEvent::Added,
                    device: info,
                }
            };
            let sequence = self.sequence();
            self.awaiting.insert(sequence);
            owed.push(sequence);
            wire.extend(Self::frame(sequence, message)?);
        }
        self.t.send(&wire)?;
        for sequence in owed {
            while !self.replies.contains_key(&sequence) {
                self.step()?;
            }
            match self.replies.remove(&sequence) {
                Some(Message::Ack) => {}
                other => return Err(SimError::Protocol(format!("probe/hotplug: {other:?}"))),
            }
        }
        self.call_ack("init", Message::Init)?;
        self.wait_for_array()?;
        let timeout_ms = if self.t.clock_floor_ns() > 0 {
            IO_TIMEOUT_REAL_CLOCK_MS
        } else {
            IO_TIMEOUT_MS
        };
        let groups = self.group_names();
        for name in groups {
            let (ok, why) =
                self.manage(proto::set(&name, "io_timeout_ms", &timeout_ms.to_string()))?;
            if !ok {
                return Err(SimError::Protocol(format!(
                    "set io_timeout_ms on {name}: {why}"
                )));
            }
        }
        Ok(())
    }

    /// The arrays whose members are disks: the array itself, or its groups.
    fn group_names(&self) -> Vec<String> {
        match self.cfg.level.shape() {
            (1, _) => vec![ARRAY_NAME.to_string()],
            (groups, _) => (0..groups).map(|g| format!("{ARRAY_NAME}-g{g}")).collect(),
        }
    }

    fn wait_for_array(&mut self) -> SimResult<()> {
        let deadline = self.now_ns + 120_000_000_000;
        loop {
            let status = self.status()?;
            if let Some(a) = status.arrays.iter().find(|a| a.name == ARRAY_NAME) {
                self.served = Served {
                    device_id: a.device_id,
                    capacity_sectors: a.size_bytes / SECTOR_BYTES as u64,
                };
                if self.hot_sectors == 0 {
                    let cap = self.served.capacity_sectors;
                    self.hot_sectors = cap.min(8192);
                    self.hot_start = self.rng.below(cap - self.hot_sectors + 1);
                }
                return Ok(());
            }
            if self.now_ns > deadline {
                return Err(SimError::Stuck(format!(
                    "array {ARRAY_NAME} not assembled: {status:?}"
                )));
            }
            for _ in 0..50 {
                self.step()?;
            }
        }
    }

    /// Waits for every block request in flight to be answered.
    fn drain(&mut self) -> SimResult<()> {
        while !self.client.is_empty() {
            self.step()?;
        }
        Ok(())
    }

    fn shutdown(&mut self) -> SimResult<()> {
        self.drain()?;
        self.sample_heap()?;
        self.call_ack(
            "shutdown",
            Message::Shutdown {
                reason: ShutdownReason::PowerOff,
            },
        )?;
        self.t.wait_exit()?;
        // Whatever was still queued for the dead process is moot.
        self.queue.clear();
        self.withheld.clear();
        Ok(())
    }

    // ---- the storage service -----------------------------------------------------------

    fn errors_allowed(&self) -> bool {
        self.error_window
    }

    fn issue_op(&mut self) -> SimResult<()> {
        self.issued += 1;
        let cap = self.served.capacity_sectors;
        let sectors = match self.rng.below(10) {
            0..=5 => self.rng.range_inclusive(1, 16),
            6..=8 => self.rng.range_inclusive(17, 128),
            _ => self.rng.range_inclusive(129, 512),
        };
        let sector = if self.rng.chance_ppm(850_000) {
            let span = self.hot_sectors.saturating_sub(sectors).max(1);
            self.hot_start + self.rng.below(span)
        } else {
            self.rng.below(cap.saturating_sub(sectors).max(1))
        };
        let sectors = sectors.min(cap - sector) as u32;
        let sequence = self.sequence();
        let fua = if self.rng.chance_ppm(100_000) {
            IoFlags::FUA
        } else {
            IoFlags::empty()
        };
        let device_id = self.served.device_id;
        let (kind, request) = match self.rng.below(100) {
            0..=44 => {
                self.model.begin_read(sequence, sector, u64::from(sectors));
                (
                    ClientKind::Read,
                    IoRequest::read(device_id, sector, sectors),
                )
            }
            45..=89 => {
                let tag = self.next_tag;
                self.next_tag += 1;
                self.model
                    .begin_write(sequence, tag, sector, u64::from(sectors));
                (
                    ClientKind::Write,
                    IoRequest::write(device_id, sector, write_data(tag, sector, sectors), fua),
                )
            }
            90..=92 => (ClientKind::Flush, IoRequest::flush(device_id)),
            93..=96 => {
                self.model
                    .begin_write(sequence, ZERO, sector, u64::from(sectors));
                let mut r = IoRequest::read(device_id, sector, sectors);
                r.op = IoOp::WriteZeroes;
                r.flags = fua;
                (ClientKind::Write, r)
            }
            _ => {
                self.model
                    .begin_write(sequence, ANY, sector, u64::from(sectors));
                let mut r = IoRequest::read(device_id, sector, sectors);
                r.op = IoOp::Discard;
                (ClientKind::Write, r)
            }
        };
        self.client.insert(
            sequence,
            ClientOp {
                kind,
                sector,
                sectors: u64::from(sectors),
                errors_allowed: self.errors_allowed(),
            },
        );
        let wire = Self::frame(sequence, Message::IoRequest(request))?;
        self.t.send(&wire)?;
        Ok(())
    }

    /// Every disk's superblock in brief (events, its own index, the roles), for a failure.
    fn superblocks(&self) -> String {
        let exec = Executor::new();
        let mut lines = Vec::new();
        for (id, d) in &self.disks {
            let disk = d.disk.clone();
            let sb = exec.block_on(async move {
                crate::array::assemble::read_superblock(disk.as_ref()).await
            });
            let text = match sb {
                Some(Ok(sb)) => format!(
                    "events {} dev_number {} resync {:#x} roles {:?}",
                    sb.events,
                    sb.dev_number,
                    sb.resync_offset_sectors,
                    sb.dev_roles
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| **r != 0xffff)
                        .map(|(i, r)| format!("{i}:{r:#x}"))
                        .collect::<Vec<_>>()
                ),
                Some(Err(e)) => e,
                None => "read did not finish".into(),
            };
            lines.push(format!("disk{id} (plugged {}): {text}", d.plugged));
        }
        format!("superblocks:\n  {}", lines.join("\n  "))
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.cfg.trace {
            eprintln!(
                "orion-sim: [op {} t {} ms] {}",
                self.issued,
                self.now_ns / 1_000_000,
                what()
            );
        }
    }

    fn wrong(&mut self, text: String) {
        self.report.wrong_reads += 1;
        if self.report.wrong_details.len() < 8 {
            self.report.wrong_details.push(text);
        }
    }

    fn client_done(&mut self, sequence: u64, response: IoResponse) {
        let Some(op) = self.client.remove(&sequence) else {
            return;
        };
        let range = format!("sectors {}+{}", op.sector, op.sectors);
        match (op.kind, response.status) {
            (ClientKind::Read, Ok(())) => {
                let bad = self.model.check_read(sequence, &response.data);
                if let Some((s, got, allowed)) = bad.first() {
                    let text = format!(
                        "read {range}: {} sectors wrong, first {s}: holds {got:?}, allowed {allowed:?}",
                        bad.len()
                    );
                    self.wrong(text);
                }
            }
            (ClientKind::Read, Err(e)) => {
                self.model.drop_read(sequence);
                if !op.errors_allowed {
                    self.wrong(format!(
                        "read {range}: error {e} with faults the level tolerates"
                    ));
                }
            }
            (ClientKind::Write, status) => {
                self.model.end_write(sequence, status.is_ok());
                if let Err(e) = status
                    && !op.errors_allowed
                {
                    self.wrong(format!(
                        "write {range}: error {e} with faults the level tolerates"
                    ));
                }
            }
            (ClientKind::Flush, Ok(())) => {}
            (ClientKind::Flush, Err(e)) => {
                if !op.errors_allowed {
                    self.wrong(format!("flush: error {e} with faults the level tolerates"));
                }
            }
        }
    }

    /// Reads every sector ever written, many requests at a time.
    fn read_back(&mut self) -> SimResult<()> {
        let ranges = self.model.written_ranges(512);
        let device_id = self.served.device_id;
        for (sector, sectors) in ranges {
            while self.client.len() >= self.cfg.depth {
                self.step()?;
            }
            let sequence = self.sequence();
            self.model.begin_read(sequence, sector, sectors);
            self.client.insert(
                sequence,
                ClientOp {
                    kind: ClientKind::Read,
                    sector,
                    sectors,
                    errors_allowed: false,
                },
            );
            let request = IoRequest::read(device_id, sector, sectors as u32);
            let wire = Self::frame(sequence, Message::IoRequest(request))?;
            self.t.send(&wire)?;
        }
        self.drain()
    }

    // ---- faults ------------------------------------------------------------------------

    /// The groups as the driver reports them: (name, status).
    fn groups_of(&self, status: &StatusReport) -> Vec<ArrayStatus> {
        let names = self.group_names();
        status
            .arrays
            .iter()
            .filter(|a| names.contains(&a.name))
            .cloned()
            .collect()
    }

    /// Members of `group` not active, plus members being hurt that still are.
    fn failures_in(&self, group: &ArrayStatus) -> usize {
        let down = group.members.iter().filter(|m| m.state != "active").count();
        let hurt = self
            .victims
            .iter()
            .filter(|(id, v)| {
                v.group == group.name
                    && group
                        .members
                        .iter()
                        .any(|m| m.state == "active" && proto::disk_id(&m.path) == Some(**id))
            })
            .count();
        down + hurt
    }

    fn inject_fault(&mut self) -> SimResult<()> {
        let status = self.status()?;
        let groups = self.groups_of(&status);
        let level = self.cfg.level;
        let choice = self.rng.below(100);
        // Faults no level needs redundancy for: slow members, interrupts.
        if choice < 15 {
            let ids: Vec<u32> = self.plugged_ids();
            let id = ids[self.rng.below(ids.len() as u64) as usize];
            let until = self.now_ns + self.rng.range_inclusive(50_000_000, 400_000_000);
            if let Some(d) = self.disks.get_mut(&id) {
                d.slow_until_ns = until;
            }
            self.report.faults += 1;
            return Ok(());
        }
        if choice < 25 {
            let ids: Vec<u32> = self.plugged_ids();
            let id = ids[self.rng.below(ids.len() as u64) as usize];
            let irq = self.disks[&id].irq;
            let reply = self.call(Message::Interrupt {
                irq,
                timestamp_ns: self.now_ns,
            })?;
            if reply != Message::Ack {
                return Err(SimError::Protocol(format!("interrupt {irq}: {reply:?}")));
            }
            return Ok(());
        }
        if level.tolerance() == 0 {
            // RAID 0: a short burst of errors on one member, which the array may return.
            let ids = self.plugged_ids();
            let id = ids[self.rng.below(ids.len() as u64) as usize];
            if let Some(d) = self.disks.get_mut(&id) {
                d.error_ppm = 50_000;
            }
            self.victims.insert(
                id,
                Victim {
                    group: ARRAY_NAME.into(),
                    until_op: self.issued + 40,
                },
            );
            // Until the errors stop (`reconcile`), and for the requests already in flight,
            // whose member requests are made from now on too.
            self.error_window = true;
            for op in self.client.values_mut() {
                op.errors_allowed = true;
            }
            self.report.faults += 1;
            self.trace(|| format!("errors on disk{id}"));
            return Ok(());
        }
        // A member failure, where its group can take one more.
        let candidates: Vec<(String, u32)> = groups
            .iter()
            .filter(|g| {
                g.job.is_none() && !g.needs_resync && self.failures_in(g) < level.tolerance()
            })
            .flat_map(|g| {
                g.members
                    .iter()
                    .filter(|m| m.state == "active")
                    .filter_map(|m| proto::disk_id(&m.path))
                    .filter(|id| !self.victims.contains_key(id))
                    .map(|id| (g.name.clone(), id))
                    .collect::<Vec<_>>()
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let (group, id) = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        self.report.faults += 1;
        self.trace(|| format!("fault {choice} on disk{id} of {group}"));
        match choice {
            25..=44 => {
                if let Some(d) = self.disks.get_mut(&id) {
                    d.error_ppm = 300_000;
                }
            }
            45..=64 => {
                if let Some(d) = self.disks.get_mut(&id) {
                    d.silent = true;
                }
            }
            65..=84 => {
                let info = self.device_info(id);
                self.call_ack(
                    "hot removal",
                    Message::Hotplug {
                        event: HotplugEvent::Removed,
                        device: info,
                    },
                )?;
                if let Some(d) = self.disks.get_mut(&id) {
                    d.plugged = false;
                }
            }
            _ => {
                let (ok, why) = self.manage(proto::fail(&group, &proto::disk_name(id)))?;
                if !ok {
                    return Err(SimError::Protocol(format!(
                        "fail {} in {group} refused: {why}",
                        proto::disk_name(id)
                    )));
                }
            }
        }
        self.victims.insert(
            id,
            Victim {
                group,
                until_op: self.issued + 300,
            },
        );
        Ok(())
    }

    fn plugged_ids(&self) -> Vec<u32> {
        self.disks
            .iter()
            .filter(|(_, d)| d.plugged)
            .map(|(&id, _)| id)
            .collect()
    }

    /// A blank disk plugged in and added to `group` as a spare.
    fn add_blank(&mut self, group: &str) -> SimResult<()> {
        let id = self.new_disk(Rc::new(SimDisk::new(self.cfg.member_sectors)));
        let info = self.device_info(id);
        self.call_ack(
            "hotplug",
            Message::Hotplug {
                event: HotplugEvent::Added,
                device: info,
            },
        )?;
        // Its probe (a superblock read) runs before it may be added.
        for _ in 0..20 {
            self.step()?;
        }
        let (ok, why) = self.manage(proto::add(group, &proto::disk_name(id)))?;
        if !ok {
            return Err(SimError::Protocol(format!(
                "add {} to {group} refused: {why}",
                proto::disk_name(id)
            )));
        }
        Ok(())
    }

    /// One spare per redundant group, hotplugged after boot.
    fn add_spares(&mut self) -> SimResult<()> {
        if self.cfg.level.tolerance() == 0 {
            return Ok(());
        }
        for group in self.group_names() {
            self.add_blank(&group)?;
        }
        Ok(())
    }

    /// What an administrator does: failed members are removed (and their disks pulled),
    /// groups without a spare get a fresh one (its rebuild starts), faults whose time is
    /// up end, and the heap is sampled.
    fn reconcile(&mut self) -> SimResult<()> {
        self.sample_heap()?;
        let status = self.status()?;
        let groups = self.groups_of(&status);
        self.trace(|| {
            groups
                .iter()
                .map(|g| {
                    let members: Vec<String> = g
                        .members
                        .iter()
                        .chain(g.spares.iter())
                        .map(|m| format!("{}:{}", m.path, m.state))
                        .collect();
                    format!(
                        "{} {} job {:?} [{}]",
                        g.name,
                        g.state,
                        g.job.as_ref().map(|j| &j.kind),
                        members.join(" ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let ended: Vec<u32> = self
            .victims
            .iter()
            .filter(|(_, v)| v.until_op <= self.issued)
            .map(|(&id, _)| id)
            .collect();
        for id in ended {
            let still_member = groups.iter().any(|g| {
                g.members
                    .iter()
                    .any(|m| m.state == "active" && proto::disk_id(&m.path) == Some(id))
            });
            if let Some(d) = self.disks.get_mut(&id) {
                d.error_ppm = 0;
                // A silent member that was not failed yet stays silent until it is.
                if !still_member {
                    d.silent = false;
                }
                if !(d.silent && still_member) {
                    self.victims.remove(&id);
                }
            }
        }
        if self.disks.values().all(|d| d.error_ppm == 0) {
            self.error_window = false;
        }
        for g in &groups {
            let failed: Vec<String> = g
                .members
                .iter()
                .chain(g.spares.iter())
                .filter(|m| m.state == "faulty")
                .map(|m| m.path.clone())
                .collect();
            for path in failed {
                let (ok, why) = self.manage(proto::remove(&g.name, &path))?;
                if !ok {
                    return Err(SimError::Protocol(format!(
                        "remove {path} from {}: {why}",
                        g.name
                    )));
                }
                if let Some(id) = proto::disk_id(&path) {
                    self.victims.remove(&id);
                    if self.disks.get(&id).is_some_and(|d| d.plugged) {
                        let info = self.device_info(id);
                        self.call_ack(
                            "unplug",
                            Message::Hotplug {
                                event: HotplugEvent::Removed,
                                device: info,
                            },
                        )?;
                    }
                    self.disks.remove(&id);
                }
            }
        }
        if self.cfg.level.tolerance() == 0 {
            return Ok(());
        }
        // Fresh status: removals change the picture.
        let status = self.status()?;
        for g in self.groups_of(&status) {
            let missing = g.members.iter().filter(|m| m.state == "missing").count();
            let spares = g.spares.iter().filter(|m| m.state == "spare").count();
            if missing > spares || (spares == 0 && g.state == "optimal") {
                self.add_blank(&g.name)?;
            }
        }
        Ok(())
    }

    // ---- crashes -----------------------------------------------------------------------

    fn crash_if_safe(&mut self) -> SimResult<()> {
        if self.cfg.level.has_parity() {
            let status = self.status()?;
            let whole = self
                .groups_of(&status)
                .iter()
                .all(|g| g.state == "optimal" && !g.needs_resync);
            if !whole {
                return Ok(());
            }
        }
        self.sample_heap()?;
        self.crash()
    }

    /// kill -9 with member writes in flight: each is applied whole, not at all, or sector
    /// by sector in part; then the driver starts again over the same disks.
    fn crash(&mut self) -> SimResult<()> {
        self.trace(|| "crash".into());
        self.t.kill();
        self.report.crashes += 1;
        let in_flight: Vec<MemberIo> = self
            .queue
            .drain(..)
            .chain(self.withheld.drain(..))
            .collect();
        for io in in_flight {
            let Some(d) = self.disks.get(&io.request.device_id) else {
                continue;
            };
            if !d.plugged || io.error {
                continue;
            }
            let disk = d.disk.clone();
            let r = &io.request;
            match (r.op, self.rng.below(3)) {
                (IoOp::Write, 0) | (IoOp::WriteZeroes | IoOp::Discard, 0) => {
                    let _ = serve_io(&mut SimDiskDriver(&disk), r);
                }
                (IoOp::Write, 2) => {
                    let rng = &mut self.rng;
                    disk.write_torn(r.sector, &r.data, |_| rng.chance_ppm(500_000));
                }
                _ => {}
            }
        }
        self.model.crash();
        self.client.clear();
        self.awaiting.clear();
        self.replies.clear();
        self.victims.clear();
        self.error_window = false;
        for d in self.disks.values_mut() {
            d.error_ppm = 0;
            d.silent = false;
            d.slow_until_ns = 0;
        }
        self.boot()
    }
}
