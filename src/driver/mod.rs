//! `RaidDriver`: the driver process's message loop. It owns the managers (arrays, member
//! disks), turns IPC frames into tasks on the executor, and queues the frames to send: replies
//! to the storage service and requests to the member disks' drivers.

pub mod ipc_member;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use orion_driver::{
    DeviceClass, DeviceInfo, DriverError, Frame, FrameError, HotplugEvent, IoOp, IoRequest,
    IoResponse, ManagementRequest, ManagementResponse, Message, OrionDriver, ShutdownReason,
    bad_frame_reply, decode, decode_header, dispatch,
};

use crate::array::assemble::{ASSEMBLY_OPTIONS, assemble, read_superblock};
use crate::array::nested::{Stack, groups_of, read_inner_superblock};
use crate::array::persist::{has_pool_label, write_pool_label};
use crate::array::scrub::{ScrubError, ScrubMode, ScrubReport};
use crate::array::settings::Setting;
use crate::array::{Array, MemberState};
use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES};
use crate::executor::{AsyncMutex, Executor};
use crate::manage;
use crate::metadata::{Candidate, SlotState, Superblock, group_candidates, plan_assembly};
use crate::monitor::{ArrayMetrics, Event, EventLog, MonitorConfig};
use ipc_member::{IpcMember, IpcPort};

mod erased {
    /// Serializes any management document (serde's trait is not object-safe).
    pub trait Json {
        fn to_json(&self) -> alloc::vec::Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> alloc::vec::Vec<u8> {
            // Serializing plain structs of strings and numbers cannot fail.
            serde_json::to_vec(self).expect("management documents serialize")
        }
    }
}

/// First device id given to an array (member disks use the kernel's ids, below this).
pub const ARRAY_ID_BASE: u32 = 0x4000_0000;

/// Translates an engine error into the status the storage service sees.
pub fn driver_error(e: &IoError) -> DriverError {
    match e {
        IoError::OutOfRange { .. } => DriverError::OutOfRange,
        IoError::Misaligned { .. } => DriverError::InvalidArgument,
        IoError::Timeout => DriverError::Timeout,
        IoError::ReadOnly => DriverError::ReadOnly,
        IoError::Unsupported => DriverError::Unsupported,
        IoError::NoSpace => DriverError::NoSpace,
        IoError::Media { .. } | IoError::DeviceFailed | IoError::DataLost { .. } => DriverError::Io,
    }
}

/// The arrays the driver serves, by device id.
#[derive(Default)]
pub struct ArrayManager {
    arrays: BTreeMap<u32, Rc<Array>>,
    next_id: u32,
    /// Arrays whose data starts with another array's superblock (the groups of a RAID
    /// 50/60): each one's superblock and its outer array's id once that runs. They are
    /// internal: not served to clients.
    inner: BTreeMap<u32, (Superblock, Option<u32>)>,
    /// Arrays already looked at for an inner superblock (outer arrays count as looked at:
    /// md nests one level here).
    probed: BTreeSet<u32>,
    /// Every array's events, in one sequence (it outlives a stopped array).
    events: Rc<EventLog>,
    monitor_config: MonitorConfig,
}

impl ArrayManager {
    /// Registers a running array and returns the device id it is served under. An array
    /// whose name another served array has is served under its name qualified by its UUID
    /// (`orion-1a2b3c4d`), with a warning naming both: names are how clients and commands
    /// reach arrays, so no two may share one.
    pub fn add(&mut self, array: Rc<Array>) -> u32 {
        let wanted = String::from(array.name());
        self.add_as(array, wanted)
    }

    fn add_as(&mut self, array: Rc<Array>, wanted: String) -> u32 {
        let name = self.free_name(&array, &wanted);
        if name != array.name() && !array.serve_as(name.clone()) {
            log::error!("{}: already named; not renamed to {name}", array.name());
        }
        if name != wanted
            && let Some((_, other)) = self.find(&wanted)
        {
            log::warn!(
                "two arrays named '{wanted}': array {} is served as '{wanted}', array {} as \
                 '{name}'",
                uuid_of(&other),
                uuid_of(&array)
            );
        }
        let id = ARRAY_ID_BASE + self.next_id;
        self.next_id += 1;
        array.monitor().attach_events(self.events.clone());
        array.monitor().configure(&self.monitor_config);
        array.emit(Event::ArrayStarted);
        array.check_health();
        self.arrays.insert(id, array);
        id
    }

    /// The event log every array writes to.
    pub fn events(&self) -> &Rc<EventLog> {
        &self.events
    }

    pub fn monitor_config(&self) -> MonitorConfig {
        self.monitor_config
    }

    pub fn get(&self, id: u32) -> Option<&Rc<Array>> {
        self.arrays.get(&id)
    }

    /// The array with this name, and its id.
    pub fn find(&self, name: &str) -> Option<(u32, Rc<Array>)> {
        self.arrays
            .iter()
            .find(|(_, a)| a.name() == name)
            .map(|(&id, a)| (id, a.clone()))
    }

    /// Stops serving an array.
    pub fn remove(&mut self, id: u32) -> Option<Rc<Array>> {
        self.inner.remove(&id);
        self.probed.remove(&id);
        self.arrays.remove(&id)
    }

    /// `wanted` if no served array has that name, else `wanted-UUID8` (then `-2`, `-3`… in
    /// the unlikely case that is taken too).
    fn free_name(&self, array: &Array, wanted: &str) -> String {
        if self.find(wanted).is_none() {
            return wanted.into();
        }
        let uuid = array
            .superblock()
            .map(|sb| sb.array_uuid)
            .unwrap_or([0; 16]);
        let base = alloc::format!(
            "{wanted}-{:02x}{:02x}{:02x}{:02x}",
            uuid[0],
            uuid[1],
            uuid[2],
            uuid[3]
        );
        let mut name = base.clone();
        let mut n = 2;
        while self.find(&name).is_some() {
            name = alloc::format!("{base}-{n}");
            n += 1;
        }
        name
    }

    /// Registers a running stack: the outer array (served) and its groups (internal).
    /// Returns the outer array's id. When the outer array is served under a qualified name,
    /// its groups' names follow it (`orion-1a2b3c4d-g0`).
    pub fn add_stack(&mut self, stack: &Stack) -> u32 {
        let id = self.add(stack.array.clone());
        self.probed.insert(id);
        let (md, served) = (stack.array.md_name(), stack.array.name());
        for group in &stack.groups {
            let wanted = match group.md_name().strip_prefix(md) {
                Some(rest) if md != served && rest.starts_with('-') => {
                    alloc::format!("{served}{rest}")
                }
                _ => String::from(group.name()),
            };
            let gid = self.add_as(group.clone(), wanted);
            self.probed.insert(gid);
            if let Some(sb) = stack.array.slots().iter().flatten().find_map(|m| {
                (Rc::as_ptr(&m.dev) as *const () == Rc::as_ptr(group) as *const ())
                    .then(|| m.superblock())
            }) {
                self.inner.insert(gid, (sb, Some(id)));
            }
        }
        id
    }

    /// The outer array a group array belongs to.
    pub fn parent_of(&self, id: u32) -> Option<u32> {
        self.inner.get(&id).and_then(|(_, p)| *p)
    }

    /// Whether the array holds another array's superblock (internal, not served).
    pub fn is_inner(&self, id: u32) -> bool {
        self.inner.contains_key(&id)
    }

    /// The group arrays of an outer array, by id order.
    pub fn groups_of(&self, id: u32) -> Vec<(u32, Rc<Array>)> {
        self.inner
            .iter()
            .filter(|(_, (_, p))| *p == Some(id))
            .filter_map(|(&gid, _)| self.arrays.get(&gid).map(|a| (gid, a.clone())))
            .collect()
    }

    /// The status document of an array, nesting included.
    pub fn status(&self, id: u32, array: &Array) -> manage::ArrayStatus {
        let mut status = manage::array_status(id, array);
        self.mark_nesting(id, &mut status);
        status
    }

    /// Adds the nesting to an array's status: the parent of a group, the nested level and
    /// combined health of an outer array.
    pub fn mark_nesting(&self, id: u32, status: &mut manage::ArrayStatus) {
        status.parent = self
            .parent_of(id)
            .and_then(|p| self.arrays.get(&p))
            .map(|p| p.name().into());
        let groups = self.groups_of(id);
        if let Some(array) = self.arrays.get(&id) {
            let groups: Vec<&Array> = groups.iter().map(|(_, g)| g.as_ref()).collect();
            manage::apply_groups(status, array, &groups);
        }
        if groups.is_empty() {
            return;
        }
        // The outer RAID 0 keeps no redundancy: its checks and rebuilds are its groups'.
        status.mismatches = groups.iter().map(|(_, g)| g.mismatches()).sum();
        if status.job.is_none() {
            let jobs: Vec<_> = groups.iter().filter_map(|(_, g)| g.job()).collect();
            if let Some(first) = jobs.first() {
                status.job = Some(manage::JobStatus {
                    kind: first.kind.name().into(),
                    progress: jobs.iter().map(|j| j.fraction()).fold(1.0, f64::min),
                    rate_bytes_per_s: jobs.iter().map(|j| j.rate_bytes_per_s()).sum(),
                    eta_s: jobs.iter().map(|j| j.eta_s()).max().unwrap_or(0),
                });
            }
        }
    }

    /// The scrub report of an array; for an outer array, its groups' reports combined.
    pub fn scrub_report(&self, id: u32) -> Option<ScrubReport> {
        let groups = self.groups_of(id);
        if groups.is_empty() {
            return self.arrays.get(&id).and_then(|a| a.scrub_report());
        }
        let reports: Vec<(String, ScrubReport)> = groups
            .iter()
            .filter_map(|(_, g)| g.scrub_report().map(|r| (String::from(g.name()), r)))
            .collect();
        ScrubReport::combine(&reports)
    }

    /// The array a member command names: `name` itself, or for an outer array whose own
    /// members do not include `member`, the group that holds it.
    pub fn member_target(
        &self,
        name: &str,
        member: &str,
    ) -> Result<Rc<Array>, (DriverError, String)> {
        let (id, array) = self.find(name).ok_or((
            DriverError::NotFound,
            alloc::format!("no array named '{name}'"),
        ))?;
        let groups = self.groups_of(id);
        if groups.is_empty() || array.find_member(member).is_some() {
            return Ok(array);
        }
        if let Some((_, g)) = groups.iter().find(|(_, g)| g.find_member(member).is_some()) {
            return Ok(g.clone());
        }
        Err((
            DriverError::NotFound,
            alloc::format!(
                "no group of '{name}' has a member '{member}' (groups: {})",
                group_names(&groups)
            ),
        ))
    }

    /// The array `raid add NAME MEMBER` adds to: `name` itself, or for an outer array (a
    /// RAID 0 cannot use a spare) the first group with more empty or failed slots than
    /// spares waiting to fill them.
    pub fn add_target(&self, name: &str) -> Result<Rc<Array>, (DriverError, String)> {
        let (id, array) = self.find(name).ok_or((
            DriverError::NotFound,
            alloc::format!("no array named '{name}'"),
        ))?;
        let groups = self.groups_of(id);
        if groups.is_empty() {
            return Ok(array);
        }
        let wants_spare = |g: &Array| {
            let empty = g
                .slots()
                .iter()
                .filter(|m| m.as_ref().is_none_or(|m| m.state() == MemberState::Faulty))
                .count();
            empty > g.spares().len()
        };
        groups
            .iter()
            .find(|(_, g)| wants_spare(g))
            .map(|(_, g)| g.clone())
            .ok_or((
                DriverError::InvalidArgument,
                alloc::format!(
                    "no group of '{name}' is missing a member: add the spare to a group ({})",
                    group_names(&groups)
                ),
            ))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Rc<Array>)> {
        self.arrays.iter().map(|(&id, a)| (id, a))
    }

    pub fn len(&self) -> usize {
        self.arrays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrays.is_empty()
    }
}

/// An array's UUID as md prints it, for messages.
fn uuid_of(array: &Array) -> String {
    array
        .superblock()
        .map(|sb| alloc::format!("{}", crate::metadata::format_uuid(&sb.array_uuid)))
        .unwrap_or_else(|| String::from("(no superblock)"))
}

fn group_names(groups: &[(u32, Rc<Array>)]) -> String {
    let names: Vec<&str> = groups.iter().map(|(_, g)| g.name()).collect();
    names.join(", ")
}

/// What the driver knows of one member disk.
pub struct DiskEntry {
    pub info: DeviceInfo,
    pub device: Rc<IpcMember>,
    /// `None` until its superblock was read.
    pub superblock: Option<Result<Superblock, String>>,
    /// The array it serves in, if any.
    pub array_id: Option<u32>,
}

/// Member disks offered by the kernel, and the shared spare pool.
#[derive(Default)]
pub struct DiskManager {
    disks: BTreeMap<u32, DiskEntry>,
    /// Spares any array with the `shared` spare policy may draw from.
    spare_pool: Vec<(String, Rc<dyn BlockDevice>)>,
}

impl DiskManager {
    /// Adds a device to the shared spare pool; refused if the pool holds it already, by
    /// any name.
    pub fn add_pool_spare(&mut self, name: String, dev: Rc<dyn BlockDevice>) -> Result<(), String> {
        if let Some(role) = self.pool_role_of(&name, dev.as_ref()) {
            return Err(alloc::format!("{name} is already {role}"));
        }
        log::info!("{name} added to the shared spare pool");
        self.spare_pool.push((name, dev));
        Ok(())
    }

    /// "in the shared spare pool (as NAME)" if the pool holds `dev`: by its identity, or
    /// by its name for a device that cannot tell its identity.
    pub fn pool_role_of(&self, name: &str, dev: &dyn BlockDevice) -> Option<String> {
        let id = dev.identity();
        let (held_as, _) = self.spare_pool.iter().find(|(n, d)| match id {
            Some(id) => d.identity() == Some(id),
            None => n == name,
        })?;
        Some(if held_as == name {
            "in the shared spare pool".into()
        } else {
            alloc::format!("in the shared spare pool (as {held_as})")
        })
    }

    /// Takes the smallest pool spare of at least `min_sectors`.
    pub fn take_pool_spare(&mut self, min_sectors: u64) -> Option<(String, Rc<dyn BlockDevice>)> {
        let i = self
            .spare_pool
            .iter()
            .enumerate()
            .filter(|(_, (_, d))| d.capacity_sectors() >= min_sectors)
            .min_by_key(|(_, (_, d))| d.capacity_sectors())
            .map(|(i, _)| i)?;
        Some(self.spare_pool.remove(i))
    }

    /// The pool: (name, capacity in sectors).
    pub fn pool(&self) -> Vec<(String, u64)> {
        self.spare_pool
            .iter()
            .map(|(n, d)| (n.clone(), d.capacity_sectors()))
            .collect()
    }

    pub fn get(&self, id: u32) -> Option<&DiskEntry> {
        self.disks.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &DiskEntry)> {
        self.disks.iter().map(|(&id, d)| (id, d))
    }

    pub fn len(&self) -> usize {
        self.disks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }
}

/// The RAID driver: managers, executor and the frames waiting to be sent.
pub struct RaidDriver {
    exec: Executor,
    outbox: Rc<RefCell<VecDeque<Frame>>>,
    port: Rc<IpcPort>,
    arrays: Rc<RefCell<ArrayManager>>,
    disks: Rc<RefCell<DiskManager>>,
    /// After `Init`, arrays may start degraded: every disk present at boot was offered.
    started: Rc<Cell<bool>>,
    /// Bumped to retire the running monitor task.
    monitor_generation: Rc<Cell<u64>>,
    /// Opens a member named in a management request (`raid add`): on the host a path.
    opener: RefCell<Option<DeviceOpener>>,
    /// The reply to `Shutdown` is queued: every array is stopped and the driver may exit.
    shut_down: Rc<Cell<bool>>,
    /// Held by the discovery that runs: one at a time (see [`discover`]).
    discovery: Rc<AsyncMutex<()>>,
}

/// Opens a device by name for `raid add` / `raid replace`.
pub type DeviceOpener = Rc<dyn Fn(&str) -> Result<Rc<dyn BlockDevice>, String>>;

/// The `array_id` of a kernel disk held by the shared spare pool.
const POOL_ARRAY_ID: u32 = u32::MAX;

/// Writes the pool label on a device given to the shared pool, unless it is a member of a
/// running array (then nothing is written).
async fn label_pool_spare(
    arrays: &Rc<RefCell<ArrayManager>>,
    name: &str,
    dev: &dyn BlockDevice,
) -> Result<(), (DriverError, String)> {
    if let Ok(sb) = read_superblock(dev).await {
        let running = arrays
            .borrow()
            .iter()
            .find(|(_, a)| {
                a.superblock()
                    .is_some_and(|s| s.array_uuid == sb.array_uuid)
            })
            .map(|(_, a)| alloc::string::String::from(a.name()));
        if let Some(array) = running {
            return Err((
                DriverError::AlreadyExists,
                alloc::format!("{name} is a member of running array {array}"),
            ));
        }
        log::info!(
            "{name}: md superblock of array {} wiped: it joins the spare pool",
            sb.name()
        );
    }
    write_pool_label(dev).await.map_err(|e| {
        (
            DriverError::Io,
            alloc::format!("{name}: pool label not written: {e}"),
        )
    })
}

/// The shared-pool hook an array draws spares from.
fn pool_source(disks: &Rc<RefCell<DiskManager>>) -> crate::array::rebuild::SpareSource {
    let disks = disks.clone();
    Rc::new(move |min_sectors| disks.borrow_mut().take_pool_spare(min_sectors))
}

impl RaidDriver {
    pub fn new(exec: Executor) -> Self {
        let outbox = Rc::new(RefCell::new(VecDeque::new()));
        RaidDriver {
            port: Rc::new(IpcPort::new(outbox.clone())),
            exec,
            outbox,
            arrays: Rc::new(RefCell::new(ArrayManager::default())),
            disks: Rc::new(RefCell::new(DiskManager::default())),
            started: Rc::new(Cell::new(false)),
            monitor_generation: Rc::new(Cell::new(0)),
            opener: RefCell::new(None),
            shut_down: Rc::new(Cell::new(false)),
            discovery: Rc::new(AsyncMutex::new(())),
        }
    }

    /// Whether `Shutdown` has been answered: the arrays are stopped and the process may end
    /// once the reply is sent.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.get()
    }

    /// How `raid add` / `raid replace` open the device they name.
    pub fn set_opener(&self, opener: DeviceOpener) {
        *self.opener.borrow_mut() = Some(opener);
    }

    /// Adds a device to the shared spare pool.
    pub fn add_pool_spare(&self, name: String, dev: Rc<dyn BlockDevice>) -> Result<(), String> {
        self.disks.borrow_mut().add_pool_spare(name, dev)
    }

    /// `raid check --cancel`: stops a running check or repair, or drops the checkpoint of one
    /// that was interrupted and has not resumed yet. Whether there was anything to cancel.
    fn cancel_scrub_of(&self, array: &Rc<Array>) -> bool {
        if array.cancel_scrub() {
            return true;
        }
        if array.scrub_checkpoint().is_none() {
            return false;
        }
        let a = array.clone();
        self.exec.spawn_detached(async move {
            if let Err(e) = a.forget_scrub_checkpoint().await {
                log::warn!("{}: recording the cancelled check: {e}", a.name());
            }
        });
        true
    }

    /// Records that the kernel disk `name` (if it is one) now serves `array`.
    fn claim_disk(&self, name: &str, array: &Rc<Array>) {
        let id = self
            .arrays
            .borrow()
            .iter()
            .find(|(_, a)| Rc::ptr_eq(a, array))
            .map(|(id, _)| id);
        for (disk_id, entry) in self.disks.borrow_mut().disks.iter_mut() {
            if alloc::format!("disk{disk_id}") == name {
                entry.array_id = id;
            }
        }
    }

    /// The role `dev` (offered as `name`) already has anywhere in this driver: a member
    /// of a served array (groups of a RAID 50/60 included) or a shared-pool spare.
    fn device_role(&self, name: &str, dev: &dyn BlockDevice) -> Option<String> {
        let in_array = self
            .arrays
            .borrow()
            .iter()
            .find_map(|(_, a)| a.role_of_device(name, dev));
        in_array.or_else(|| self.disks.borrow().pool_role_of(name, dev))
    }

    /// Refuses a device opened for `raid add` / `raid replace` that already has a role.
    fn refuse_if_in_use(
        &self,
        name: &str,
        dev: &dyn BlockDevice,
    ) -> Result<(), (DriverError, String)> {
        match self.device_role(name, dev) {
            Some(role) => Err((
                DriverError::AlreadyExists,
                alloc::format!("{name} is already {role}; refused"),
            )),
            None => Ok(()),
        }
    }

    /// Opens `name`: a free disk the kernel offered (`diskN`), else through the opener.
    fn open_device(&self, name: &str) -> Result<Rc<dyn BlockDevice>, (DriverError, String)> {
        let free = self
            .disks
            .borrow()
            .disks
            .iter()
            .find(|(id, d)| d.array_id.is_none() && alloc::format!("disk{id}") == name)
            .map(|(_, d)| d.device.clone() as Rc<dyn BlockDevice>);
        if let Some(dev) = free {
            return Ok(dev);
        }
        let opener = self.opener.borrow().clone();
        match opener {
            Some(open) => open(name).map_err(|e| (DriverError::NotFound, e)),
            None => Err((
                DriverError::NotFound,
                alloc::format!("no free device named '{name}'"),
            )),
        }
    }

    /// Applies `config` and (re)starts the monitor task, which ticks every array's rate
    /// windows and health each `tick_interval_ns`. Not started by default: a simulation that
    /// runs until idle would never be idle with it.
    pub fn start_monitor(&self, config: MonitorConfig) {
        {
            let mut arrays = self.arrays.borrow_mut();
            arrays.monitor_config = config;
            arrays.events.set_capacity(config.event_capacity);
        }
        let generation = self.monitor_generation.get() + 1;
        self.monitor_generation.set(generation);
        let current = self.monitor_generation.clone();
        let arrays = self.arrays.clone();
        let exec = self.exec.clone();
        let interval_ns = config.tick_interval_ns.max(1_000_000);
        self.exec.spawn_detached(async move {
            let mut next_ns = exec.now_ns();
            while current.get() == generation {
                let list: Vec<Rc<Array>> = arrays.borrow().iter().map(|(_, a)| a.clone()).collect();
                for array in list {
                    array.monitor_tick(Some(&config));
                    // A member file deleted or truncated under us is noticed here.
                    array.probe_members();
                }
                // A late tick does not cause a burst of catch-up ticks.
                next_ns = (next_ns + interval_ns).max(exec.now_ns());
                exec.sleep_until(next_ns).await;
            }
        });
    }

    /// Stops the monitor task at its next tick.
    pub fn stop_monitor(&self) {
        self.monitor_generation
            .set(self.monitor_generation.get() + 1);
    }

    /// The figures of every array.
    pub fn metrics(&self) -> Vec<ArrayMetrics> {
        self.arrays
            .borrow()
            .iter()
            .map(|(_, a)| a.metrics())
            .collect()
    }

    /// The event log every served array writes to.
    pub fn events(&self) -> Rc<EventLog> {
        self.arrays.borrow().events.clone()
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn arrays(&self) -> core::cell::Ref<'_, ArrayManager> {
        self.arrays.borrow()
    }

    pub fn disks(&self) -> core::cell::Ref<'_, DiskManager> {
        self.disks.borrow()
    }

    /// Serves an array that was assembled by other means (the host tool); returns its id.
    pub fn add_array(&self, array: Rc<Array>) -> u32 {
        array.set_spare_source(Some(pool_source(&self.disks)));
        self.arrays.borrow_mut().add(array)
    }

    /// Serves a stack assembled by other means (the host tool): the outer array is served,
    /// its groups are internal. Returns the outer array's id.
    pub fn add_stack(&self, stack: &Stack) -> u32 {
        // The groups of a RAID 50/60 rebuild from the pool; the outer RAID 0 never asks.
        for layer in stack.layers() {
            layer.set_spare_source(Some(pool_source(&self.disks)));
        }
        self.arrays.borrow_mut().add_stack(stack)
    }

    /// Frames waiting to be sent, oldest first.
    pub fn take_outgoing(&self) -> Vec<Frame> {
        self.outbox.borrow_mut().drain(..).collect()
    }

    /// Runs every task that can progress.
    pub fn poll(&self) {
        self.exec.run_until_stalled();
    }

    /// Handles one received frame; replies and requests it causes are queued.
    pub fn handle_frame(&mut self, frame: Frame) {
        if let Message::Shutdown { reason } = frame.message {
            self.start_shutdown(frame.sequence, reason);
        } else if let Some(reply) = dispatch(self, frame) {
            self.outbox.borrow_mut().push_back(reply);
        }
        self.poll();
    }

    /// Decodes and handles every whole frame at the start of `buf`; returns the bytes used.
    /// A frame that fails to decode is answered with an error (when its header can be read)
    /// and skipped; garbage with no readable header is dropped byte-wise up to the next
    /// possible frame, so one bad client cannot wedge the stream.
    pub fn handle_bytes(&mut self, buf: &[u8]) -> usize {
        let mut used = 0;
        while used < buf.len() {
            match decode(&buf[used..]) {
                Ok((frame, n)) => {
                    used += n;
                    self.handle_frame(frame);
                }
                Err(FrameError::NeedMore { .. }) => break,
                Err(e) => match decode_header(&buf[used..]) {
                    Ok(header) if header.frame_len() <= buf.len() - used => {
                        self.outbox
                            .borrow_mut()
                            .push_back(bad_frame_reply(header.sequence, "malformed frame"));
                        log::warn!("dropping malformed frame {}: {e}", header.sequence);
                        used += header.frame_len();
                    }
                    Ok(_) => break,
                    Err(_) => {
                        log::warn!("dropping a byte of an undecodable stream: {e}");
                        used += 1;
                    }
                },
            }
        }
        used
    }

    fn serve_io(&self, sequence: u64, request: IoRequest) {
        let array = self
            .arrays
            .borrow()
            .get(request.device_id)
            .filter(|_| !self.arrays.borrow().is_inner(request.device_id))
            .cloned();
        let Some(array) = array else {
            self.reply(
                sequence,
                Message::IoResponse(IoResponse::err(DriverError::NotFound)),
            );
            return;
        };
        let outbox = self.outbox.clone();
        self.exec.spawn_detached(async move {
            let response = match perform(&array, request).await {
                Ok(data) => IoResponse::ok(data),
                Err(e) => IoResponse::err(driver_error(&e)),
            };
            outbox.borrow_mut().push_back(Frame {
                sequence,
                message: Message::IoResponse(response),
            });
        });
    }

    fn reply(&self, sequence: u64, message: Message) {
        self.outbox
            .borrow_mut()
            .push_back(Frame { sequence, message });
    }

    fn disk_added(&self, info: DeviceInfo) -> Result<(), DriverError> {
        if info.class != DeviceClass::Block {
            return Err(DriverError::NotFound);
        }
        info.validate().map_err(|_| DriverError::InvalidArgument)?;
        let capacity_sectors =
            info.capacity_bytes().ok_or(DriverError::InvalidArgument)? / SECTOR_BYTES as u64;
        let id = info.id;
        if self.disks.borrow().disks.contains_key(&id) {
            return Err(DriverError::AlreadyExists);
        }
        let device = Rc::new(IpcMember::new(id, capacity_sectors, self.port.clone()));
        self.disks.borrow_mut().disks.insert(
            id,
            DiskEntry {
                info,
                device: device.clone(),
                superblock: None,
                array_id: None,
            },
        );
        let disks = self.disks.clone();
        let arrays = self.arrays.clone();
        let started = self.started.clone();
        let exec = self.exec.clone();
        let discovery = self.discovery.clone();
        self.exec.spawn_detached(async move {
            let sb = read_superblock(device.as_ref()).await;
            // Probed: from now on it counts for the decision to start an array degraded.
            if let Some(entry) = disks.borrow_mut().disks.get_mut(&id) {
                entry.superblock = Some(sb.clone());
            }
            // A shared-pool spare (no md superblock, Orion's pool label) goes back to the pool.
            if sb.is_err() && has_pool_label(device.as_ref()).await {
                let mut d = disks.borrow_mut();
                if d.add_pool_spare(alloc::format!("disk{id}"), device.clone())
                    .is_ok()
                    && let Some(entry) = d.disks.get_mut(&id)
                {
                    // Not free for `raid add NAME diskN`: the pool holds it.
                    entry.array_id = Some(POOL_ARRAY_ID);
                }
                drop(d);
                for (_, a) in arrays.borrow().iter() {
                    a.start_jobs();
                }
                return;
            }
            let _one_at_a_time = discovery.lock().await;
            discover(&exec, &disks, &arrays, started.get()).await;
        });
        Ok(())
    }

    fn disk_removed(&self, id: u32) -> Result<(), DriverError> {
        let entry = self
            .disks
            .borrow_mut()
            .disks
            .remove(&id)
            .ok_or(DriverError::NotFound)?;
        if entry.array_id == Some(POOL_ARRAY_ID) {
            let name = alloc::format!("disk{id}");
            self.disks
                .borrow_mut()
                .spare_pool
                .retain(|(n, _)| *n != name);
            return Ok(());
        }
        if let Some(array_id) = entry.array_id {
            let array = self.arrays.borrow().get(array_id).cloned();
            if let Some(array) = array {
                let slot = array.slots().iter().position(|s| {
                    s.as_ref().is_some_and(|m| {
                        Rc::ptr_eq(&m.dev, &(entry.device.clone() as Rc<dyn BlockDevice>))
                    })
                });
                if let Some(slot) = slot {
                    self.exec.spawn_detached(async move {
                        let _ = array.fail_member(slot).await;
                    });
                }
            }
        }
        Ok(())
    }

    /// Answers a management request at once, or later (with `sequence`) for `stop`.
    fn manage(&self, sequence: u64, request: ManagementRequest) -> Option<Message> {
        let opcode = request.opcode;
        let respond = move |status: Result<Vec<u8>, (DriverError, String)>| {
            Message::ManagementResponse(match status {
                Ok(payload) => ManagementResponse {
                    opcode,
                    status: Ok(()),
                    payload,
                },
                Err((e, why)) => ManagementResponse {
                    opcode,
                    status: Err(e),
                    payload: why.into_bytes(),
                },
            })
        };
        let named = |payload: &[u8]| -> Result<(u32, Rc<Array>), (DriverError, String)> {
            let req: manage::NameRequest = serde_json::from_slice(payload).map_err(|e| {
                (
                    DriverError::InvalidArgument,
                    alloc::format!("bad request: {e}"),
                )
            })?;
            self.arrays.borrow().find(&req.name).ok_or((
                DriverError::NotFound,
                alloc::format!("no array named '{}'", req.name),
            ))
        };
        let to_json = |value: &dyn erased::Json| value.to_json();
        let find = |name: &str| -> Result<Rc<Array>, (DriverError, String)> {
            self.arrays.borrow().find(name).map(|(_, a)| a).ok_or((
                DriverError::NotFound,
                alloc::format!("no array named '{name}'"),
            ))
        };
        match opcode {
            manage::OP_STATUS => {
                let report = manage::StatusReport {
                    arrays: self
                        .arrays
                        .borrow()
                        .iter()
                        .map(|(id, a)| self.arrays.borrow().status(id, a))
                        .collect(),
                    pool: self
                        .disks
                        .borrow()
                        .pool()
                        .into_iter()
                        .map(|(path, sectors)| manage::PoolSpare {
                            path,
                            size_bytes: sectors * SECTOR_BYTES as u64,
                        })
                        .collect(),
                };
                Some(respond(Ok(to_json(&report))))
            }
            manage::OP_DETAIL => Some(respond(named(&request.payload).map(|(id, a)| {
                let mut detail = manage::array_detail(id, &a);
                let arrays = self.arrays.borrow();
                arrays.mark_nesting(id, &mut detail.status);
                detail.scrub = arrays.scrub_report(id);
                to_json(&detail)
            }))),
            manage::OP_METRICS => {
                let arrays = if request.payload.is_empty() {
                    Ok(self.metrics())
                } else {
                    named(&request.payload).map(|(_, a)| vec![a.metrics()])
                };
                Some(respond(arrays.map(|arrays| {
                    to_json(&manage::MetricsReport {
                        arrays,
                        tick_interval_ns: self.arrays.borrow().monitor_config.tick_interval_ns,
                    })
                })))
            }
            manage::OP_EVENTS => {
                let req: Result<manage::EventsRequest, _> =
                    serde_json::from_slice(&request.payload);
                Some(respond(match req {
                    Ok(req) => {
                        let max = req.max_events.map_or(usize::MAX, |m| m as usize);
                        Ok(to_json(&self.events().after(req.after_seq, max)))
                    }
                    Err(e) => Err((
                        DriverError::InvalidArgument,
                        alloc::format!("bad request: {e}"),
                    )),
                }))
            }
            manage::OP_PROMETHEUS => Some(respond(Ok(crate::monitor::prometheus::render(
                &self.metrics(),
            )
            .into_bytes()))),
            manage::OP_STOP => match named(&request.payload) {
                Err(e) => Some(respond(Err(e))),
                Ok((id, _)) if self.arrays.borrow().parent_of(id).is_some() => {
                    let parent = self.arrays.borrow().parent_of(id);
                    let parent: String = parent
                        .and_then(|p| self.arrays.borrow().get(p).map(|a| a.name().into()))
                        .unwrap_or_default();
                    Some(respond(Err((
                        DriverError::Busy,
                        alloc::format!("the array is a group of '{parent}': stop '{parent}'"),
                    ))))
                }
                Ok((id, array)) => {
                    let arrays = self.arrays.clone();
                    let disks = self.disks.clone();
                    let outbox = self.outbox.clone();
                    // The outer array first: its superblock update writes into its groups.
                    let mut layers = vec![(id, array)];
                    layers.extend(self.arrays.borrow().groups_of(id));
                    self.exec.spawn_detached(async move {
                        let mut result = Ok(());
                        for (id, array) in layers {
                            // No repair write may land after the array is marked clean.
                            array.stop_scrub().await;
                            let r = array.mark_clean().await;
                            array.emit(Event::ArrayStopped);
                            result = result.and(r);
                            arrays.borrow_mut().remove(id);
                            for entry in disks.borrow_mut().disks.values_mut() {
                                if entry.array_id == Some(id) {
                                    entry.array_id = None;
                                }
                            }
                        }
                        let message = respond(match result {
                            Ok(()) => Ok(Vec::new()),
                            Err(e) => Err((DriverError::Io, alloc::format!("{e}"))),
                        });
                        outbox.borrow_mut().push_back(Frame { sequence, message });
                    });
                    None
                }
            },
            manage::OP_CHECK | manage::OP_REPAIR => {
                Some(respond(named(&request.payload).and_then(|(id, a)| {
                    let mode = if opcode == manage::OP_CHECK {
                        ScrubMode::Check
                    } else {
                        ScrubMode::Repair
                    };
                    let groups = self.arrays.borrow().groups_of(id);
                    // A RAID 50/60 is checked group by group, all groups at once.
                    let targets: Vec<Rc<Array>> = if groups.is_empty() {
                        vec![a.clone()]
                    } else {
                        groups.into_iter().map(|(_, g)| g).collect()
                    };
                    let scrub_error = |t: &Array, e: ScrubError| {
                        let status = match e {
                            ScrubError::Busy(_) | ScrubError::ResyncPending => DriverError::Busy,
                            ScrubError::NotRedundant | ScrubError::Degraded { .. } => {
                                DriverError::Unsupported
                            }
                        };
                        (status, alloc::format!("{}: {e}", t.name()))
                    };
                    // Refuse before starting any group where that can be told in advance.
                    for t in &targets {
                        if let Some(job) = t.job() {
                            return Err(scrub_error(t, ScrubError::Busy(job.kind)));
                        }
                    }
                    for (i, t) in targets.iter().enumerate() {
                        if let Err(e) = t.start_scrub(mode) {
                            for started in &targets[..i] {
                                started.cancel_scrub();
                            }
                            return Err(scrub_error(t, e));
                        }
                    }
                    Ok(to_json(&self.arrays.borrow().scrub_report(id)))
                })))
            }
            manage::OP_SCRUB_REPORT => {
                Some(respond(named(&request.payload).map(|(id, _)| {
                    to_json(&self.arrays.borrow().scrub_report(id))
                })))
            }
            manage::OP_SCRUB_CANCEL => {
                Some(respond(named(&request.payload).and_then(|(id, a)| {
                    let groups = self.arrays.borrow().groups_of(id);
                    let cancelled = if groups.is_empty() {
                        self.cancel_scrub_of(&a)
                    } else {
                        // Every group, not just up to the first that runs.
                        groups
                            .iter()
                            .fold(false, |any, (_, g)| self.cancel_scrub_of(g) || any)
                    };
                    if cancelled {
                        Ok(to_json(&self.arrays.borrow().scrub_report(id)))
                    } else {
                        Err((
                            DriverError::NotFound,
                            alloc::format!(
                                "{}: no check or repair is running or pending",
                                a.name()
                            ),
                        ))
                    }
                })))
            }
            manage::OP_FAIL | manage::OP_REMOVE => {
                let req: manage::MemberRequest = match parse(&request.payload) {
                    Ok(r) => r,
                    Err(e) => return Some(respond(Err(e))),
                };
                let target = self.arrays.borrow().member_target(&req.name, &req.member);
                let array = match target {
                    Ok(a) => a,
                    Err(e) => return Some(respond(Err(e))),
                };
                let outbox = self.outbox.clone();
                self.exec.spawn_detached(async move {
                    let result = if opcode == manage::OP_FAIL {
                        array.fail_named(&req.member).await
                    } else {
                        array.remove_named(&req.member).await
                    };
                    let message = respond(member_result(result));
                    outbox.borrow_mut().push_back(Frame { sequence, message });
                });
                None
            }
            manage::OP_ADD => {
                let req: manage::AddRequest = match parse(&request.payload) {
                    Ok(r) => r,
                    Err(e) => return Some(respond(Err(e))),
                };
                let target = req
                    .name
                    .as_deref()
                    .map(|n| self.arrays.borrow().add_target(n));
                let array = match target.transpose() {
                    Ok(a) => a,
                    Err(e) => return Some(respond(Err(e))),
                };
                let dev = match self.open_device(&req.member) {
                    Ok(d) => d,
                    Err(e) => return Some(respond(Err(e))),
                };
                if let Err(e) = self.refuse_if_in_use(&req.member, dev.as_ref()) {
                    return Some(respond(Err(e)));
                }
                let Some(array) = array else {
                    let disks = self.disks.clone();
                    let arrays = self.arrays.clone();
                    let outbox = self.outbox.clone();
                    self.exec.spawn_detached(async move {
                        let result = label_pool_spare(&arrays, &req.member, dev.as_ref()).await;
                        let result = result.and_then(|()| {
                            let mut d = disks.borrow_mut();
                            // A kernel disk in the pool is no longer free.
                            for (disk_id, entry) in d.disks.iter_mut() {
                                if alloc::format!("disk{disk_id}") == req.member {
                                    entry.array_id = Some(POOL_ARRAY_ID);
                                }
                            }
                            d.add_pool_spare(req.member.clone(), dev)
                                .map_err(|e| (DriverError::AlreadyExists, e))
                        });
                        if result.is_ok() {
                            // A shared array may be waiting for a spare.
                            for (_, a) in arrays.borrow().iter() {
                                a.start_jobs();
                            }
                        }
                        let message = respond(result.map(|()| Vec::new()));
                        outbox.borrow_mut().push_back(Frame { sequence, message });
                    });
                    return None;
                };
                self.claim_disk(&req.member, &array);
                let outbox = self.outbox.clone();
                self.exec.spawn_detached(async move {
                    let result = array.add_device(req.member, dev).await;
                    let message = respond(member_result(result));
                    outbox.borrow_mut().push_back(Frame { sequence, message });
                });
                None
            }
            manage::OP_REPLACE => {
                let req: manage::ReplaceRequest = match parse(&request.payload) {
                    Ok(r) => r,
                    Err(e) => return Some(respond(Err(e))),
                };
                let target = self.arrays.borrow().member_target(&req.name, &req.member);
                let array = match target {
                    Ok(a) => a,
                    Err(e) => return Some(respond(Err(e))),
                };
                let dev = match self.open_device(&req.with) {
                    Ok(d) => d,
                    Err(e) => return Some(respond(Err(e))),
                };
                if let Err(e) = self.refuse_if_in_use(&req.with, dev.as_ref()) {
                    return Some(respond(Err(e)));
                }
                self.claim_disk(&req.with, &array);
                let outbox = self.outbox.clone();
                self.exec.spawn_detached(async move {
                    let result = array.replace_named(&req.member, req.with, dev).await;
                    let message = respond(member_result(result));
                    outbox.borrow_mut().push_back(Frame { sequence, message });
                });
                None
            }
            manage::OP_SET => {
                let req: manage::SetRequest = match parse(&request.payload) {
                    Ok(r) => r,
                    Err(e) => return Some(respond(Err(e))),
                };
                let groups = match self.arrays.borrow().find(&req.name) {
                    Some((id, _)) => self.arrays.borrow().groups_of(id),
                    None => Vec::new(),
                };
                let applied = find(&req.name).and_then(|a| {
                    // Checked once, before any layer changes: a refusal changes nothing.
                    let setting = Setting::parse(&req.key, &req.value)
                        .map_err(|e| (DriverError::InvalidArgument, alloc::format!("{e}")))?;
                    // A RAID 50/60's rebuild and spare policies are its groups'.
                    for layer in core::iter::once(&a).chain(groups.iter().map(|(_, g)| g)) {
                        layer.apply(setting);
                    }
                    log::info!(
                        "{}: {} set to {}",
                        a.name(),
                        setting.key(),
                        setting.value_text()
                    );
                    Ok(a)
                });
                let a = match applied {
                    Ok(a) => a,
                    Err(e) => return Some(respond(Err(e))),
                };
                // Answered once the setting is on disk (the extension record): it survives
                // a restart.
                let outbox = self.outbox.clone();
                self.exec.spawn_detached(async move {
                    let mut result = Ok(());
                    for layer in core::iter::once(&a).chain(groups.iter().map(|(_, g)| g)) {
                        if let Err(e) = layer.persist_settings().await {
                            result = Err((DriverError::Io, alloc::format!("not recorded: {e}")));
                        }
                    }
                    let message = respond(result.map(|()| {
                        to_json(&manage::SettingsReport {
                            settings: a.settings(),
                        })
                    }));
                    outbox.borrow_mut().push_back(Frame { sequence, message });
                });
                None
            }
            manage::OP_POOL => {
                let pool = self.disks.borrow().pool();
                Some(respond(Ok(to_json(&manage::PoolReport {
                    spares: pool
                        .into_iter()
                        .map(|(n, s)| (n, s * SECTOR_BYTES as u64))
                        .collect(),
                }))))
            }
            _ => Some(respond(Err((
                DriverError::Protocol(orion_driver::ProtocolError::UnknownOpcode),
                alloc::format!("unknown management opcode {opcode:#06x}"),
            )))),
        }
    }

    fn start_shutdown(&self, sequence: u64, reason: ShutdownReason) {
        log::info!("shutdown requested ({reason:?})");
        // Outer arrays before the groups they write into.
        let mut arrays: Vec<(bool, Rc<Array>)> = self
            .arrays
            .borrow()
            .iter()
            .map(|(id, a)| (self.arrays.borrow().is_inner(id), a.clone()))
            .collect();
        arrays.sort_by_key(|(inner, _)| *inner);
        let arrays: Vec<Rc<Array>> = arrays.into_iter().map(|(_, a)| a).collect();
        let outbox = self.outbox.clone();
        let shut_down = self.shut_down.clone();
        self.exec.spawn_detached(async move {
            let mut result = Ok(());
            for array in arrays {
                array.stop_scrub().await;
                if let Err(e) = array.mark_clean().await {
                    log::error!("{}: not marked clean: {e}", array.name());
                    result = Err(DriverError::Io);
                }
                array.emit(Event::ArrayStopped);
            }
            let message = match result {
                Ok(()) => Message::Ack,
                Err(e) => Message::error(e, "an array could not be stopped cleanly"),
            };
            outbox.borrow_mut().push_back(Frame { sequence, message });
            shut_down.set(true);
        });
    }
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, (DriverError, String)> {
    serde_json::from_slice(payload).map_err(|e| {
        (
            DriverError::InvalidArgument,
            alloc::format!("bad request: {e}"),
        )
    })
}

fn member_result(
    r: Result<(), crate::array::rebuild::MemberError>,
) -> Result<Vec<u8>, (DriverError, String)> {
    use crate::array::rebuild::MemberError;
    r.map(|()| Vec::new()).map_err(|e| {
        let code = match &e {
            MemberError::NoSuchMember(_) => DriverError::NotFound,
            MemberError::Io(_) => DriverError::Io,
            MemberError::InUse(_) | MemberError::WouldFail(_) => DriverError::Busy,
            MemberError::AlreadyMember { .. } => DriverError::AlreadyExists,
            _ => DriverError::InvalidArgument,
        };
        (code, alloc::format!("{e}"))
    })
}

/// Performs one block request on an array; returns the data of a read.
pub async fn perform(array: &Array, request: IoRequest) -> Result<Vec<u8>, IoError> {
    let fua = request.flags.contains(orion_driver::IoFlags::FUA);
    let bytes = request.sector_count as usize * SECTOR_BYTES;
    match request.op {
        IoOp::Read => array.read(request.sector, vec![0u8; bytes]).await,
        IoOp::Write => array
            .write(request.sector, Bytes::from(request.data), fua)
            .await
            .map(|()| Vec::new()),
        IoOp::Flush => array.flush().await.map(|()| Vec::new()),
        IoOp::Discard => array
            .discard(request.sector, u64::from(request.sector_count))
            .await
            .map(|()| Vec::new()),
        IoOp::WriteZeroes => {
            const PIECE_SECTORS: u64 = 2048;
            let total = u64::from(request.sector_count);
            let zeros = Bytes::from(vec![0u8; PIECE_SECTORS as usize * SECTOR_BYTES]);
            let mut done = 0;
            while done < total {
                let n = (total - done).min(PIECE_SECTORS);
                array
                    .write(
                        request.sector + done,
                        zeros.slice(..n as usize * SECTOR_BYTES),
                        fua,
                    )
                    .await?;
                done += n;
            }
            Ok(Vec::new())
        }
    }
}

/// The member sets to assemble now, as indexes into `superblocks`: per array, its members
/// when all of them are present and in sync, or, with `degraded_ok`, whatever it has.
fn ready_member_sets(superblocks: Vec<Superblock>, degraded_ok: bool) -> Vec<Vec<usize>> {
    let candidates: Vec<Candidate> = superblocks
        .into_iter()
        .enumerate()
        .map(|(i, sb)| (i, Ok(sb)))
        .collect();
    group_candidates(&candidates)
        .arrays
        .into_iter()
        .filter(|(uuid, _)| {
            degraded_ok
                || plan_assembly(uuid, &candidates, ASSEMBLY_OPTIONS, |p| {
                    p.iter().all(|&x| x)
                })
                .is_ok_and(|plan| {
                    plan.slots
                        .iter()
                        .all(|s| matches!(s, SlotState::InSync { .. }))
                })
        })
        .map(|(_, ids)| ids)
        .collect()
}

/// Starts every array whose members are all present (or, once the boot's disks were all
/// offered, every array that can run degraded) from the disks not yet in an array.
///
/// Callers hold the driver's discovery lock: the disks found free here are marked used
/// only once their assembly is done, after member I/O, and a second discovery running
/// meanwhile (another probe finishing) would assemble the same disks again.
async fn discover(
    exec: &Executor,
    disks: &Rc<RefCell<DiskManager>>,
    arrays: &Rc<RefCell<ArrayManager>>,
    degraded_ok: bool,
) {
    // A disk whose superblock is still being read may be the member that makes an array
    // whole: no array starts degraded until every offered disk has been probed (the last
    // probe to finish runs this again).
    let probing = disks
        .borrow()
        .disks
        .values()
        .any(|d| d.superblock.is_none());
    let degraded_ok = degraded_ok && !probing;
    // A disk of an array that runs without it (pulled and plugged in again, or late at
    // boot) is a stale member of that array, not the start of a second copy of it: as md's
    // incremental assembly, it is left for `raid add`.
    let running: Vec<([u8; 16], String)> = arrays
        .borrow()
        .iter()
        .filter_map(|(_, a)| {
            a.superblock()
                .map(|sb| (sb.array_uuid, String::from(a.name())))
        })
        .collect();
    let free: Vec<(u32, Rc<IpcMember>, Superblock)> = disks
        .borrow()
        .disks
        .iter()
        .filter(|(_, d)| d.array_id.is_none())
        .filter_map(|(&id, d)| match &d.superblock {
            Some(Ok(sb)) => match running.iter().find(|(uuid, _)| *uuid == sb.array_uuid) {
                Some((_, name)) => {
                    log::info!(
                        "disk{id}: a member of running array {name} that runs without it;                          not started again (`raid add` puts it back)"
                    );
                    None
                }
                None => Some((id, d.device.clone(), sb.clone())),
            },
            _ => None,
        })
        .collect();
    let superblocks = free.iter().map(|(_, _, sb)| sb.clone()).collect();
    for ids in ready_member_sets(superblocks, degraded_ok) {
        let members: Vec<(String, Rc<dyn BlockDevice>)> = ids
            .iter()
            .map(|&i| {
                let (id, dev, _) = &free[i];
                (
                    alloc::format!("disk{id}"),
                    dev.clone() as Rc<dyn BlockDevice>,
                )
            })
            .collect();
        log::debug!(
            "discovery: assembling {} (degraded start allowed: {degraded_ok})",
            members
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let result = assemble(exec, members).await;
        for problem in &result.problems {
            log::warn!("{}: {}", problem.member, problem.reason);
        }
        for array in result.arrays {
            array.set_spare_source(Some(pool_source(disks)));
            let array_id = arrays.borrow_mut().add(array.clone());
            log::info!("array {} started as device {array_id:#x}", array.name());
            // Resync after an unclean shutdown, rebuilds to resume, spares to activate.
            array.start_jobs();
            for member in array.slots().iter().flatten() {
                if member.state() != MemberState::Active {
                    continue;
                }
                let mut d = disks.borrow_mut();
                if let Some(entry) = d
                    .disks
                    .values_mut()
                    .find(|e| Rc::ptr_eq(&(e.device.clone() as Rc<dyn BlockDevice>), &member.dev))
                {
                    entry.array_id = Some(array_id);
                }
            }
        }
    }
    discover_nested(exec, arrays, degraded_ok).await;
}

/// Looks for superblocks at the start of running arrays' data, and starts the outer arrays
/// they describe (RAID 50/60: a RAID 0 over RAID 5/6 groups) as `discover` does from disks.
async fn discover_nested(exec: &Executor, arrays: &Rc<RefCell<ArrayManager>>, degraded_ok: bool) {
    let unprobed: Vec<(u32, Rc<Array>)> = arrays
        .borrow()
        .iter()
        .filter(|(id, _)| !arrays.borrow().probed.contains(id))
        .map(|(id, a)| (id, a.clone()))
        .collect();
    for (id, array) in unprobed {
        arrays.borrow_mut().probed.insert(id);
        if let Some(sb) = read_inner_superblock(&array).await {
            arrays.borrow_mut().inner.insert(id, (sb, None));
        }
    }
    let free: Vec<(u32, Rc<Array>, Superblock)> = {
        let a = arrays.borrow();
        a.inner
            .iter()
            .filter(|(_, (_, parent))| parent.is_none())
            .filter_map(|(&id, (sb, _))| a.arrays.get(&id).map(|x| (id, x.clone(), sb.clone())))
            .collect()
    };
    let superblocks = free.iter().map(|(_, _, sb)| sb.clone()).collect();
    for ids in ready_member_sets(superblocks, degraded_ok) {
        let members: Vec<(String, Rc<dyn BlockDevice>)> = ids
            .iter()
            .map(|&i| {
                let (_, array, _) = &free[i];
                (array.name().into(), array.clone() as Rc<dyn BlockDevice>)
            })
            .collect();
        let result = assemble(exec, members).await;
        for problem in &result.problems {
            log::warn!("{}: {}", problem.member, problem.reason);
        }
        let groups: Vec<Rc<Array>> = free.iter().map(|(_, a, _)| a.clone()).collect();
        for outer in result.arrays {
            let mut manager = arrays.borrow_mut();
            let outer_id = manager.add(outer.clone());
            manager.probed.insert(outer_id);
            for group in groups_of(&outer, &groups) {
                let gid = free.iter().find(|(_, a, _)| Rc::ptr_eq(a, &group));
                if let Some(entry) = gid.and_then(|(gid, _, _)| manager.inner.get_mut(gid)) {
                    entry.1 = Some(outer_id);
                }
            }
            log::info!("array {} started as device {outer_id:#x}", outer.name());
        }
    }
}

impl OrionDriver for RaidDriver {
    /// The RAID driver takes every block device offered: it reads its superblock and starts
    /// arrays as their members arrive.
    fn probe(&mut self, device: &DeviceInfo) -> Result<(), DriverError> {
        self.disk_added(device.clone())
    }

    fn init(&mut self) -> Result<(), DriverError> {
        self.started.set(true);
        let disks = self.disks.clone();
        let arrays = self.arrays.clone();
        let exec = self.exec.clone();
        let discovery = self.discovery.clone();
        self.exec.spawn_detached(async move {
            let _one_at_a_time = discovery.lock().await;
            discover(&exec, &disks, &arrays, true).await;
        });
        Ok(())
    }

    fn handle_irq(&mut self, _irq: u32) -> Result<(), DriverError> {
        // The RAID driver owns no hardware: its members answer over IPC.
        Err(DriverError::Unsupported)
    }

    /// Synchronous form: runs the clean-up as far as it can without waiting for replies.
    /// The message loop uses the deferred form (`handle_frame`), which answers when done.
    fn shutdown(&mut self, reason: ShutdownReason) -> Result<(), DriverError> {
        self.start_shutdown(u64::MAX, reason);
        self.poll();
        let done = self.outbox.borrow().iter().any(|f| f.sequence == u64::MAX);
        self.outbox.borrow_mut().retain(|f| f.sequence != u64::MAX);
        if done { Ok(()) } else { Err(DriverError::Busy) }
    }

    fn handle_message(&mut self, sequence: u64, message: Message) -> Option<Message> {
        match message {
            Message::IoRequest(request) => {
                self.serve_io(sequence, request);
                None
            }
            Message::IoResponse(response) => {
                if !self.port.complete(sequence, response) {
                    log::warn!("reply {sequence} matches no request");
                }
                None
            }
            Message::Error(reply) => {
                // A member driver refused one of our requests outright.
                self.port.complete(sequence, IoResponse::err(reply.error));
                None
            }
            Message::Timer { now_ns, .. } => {
                self.exec.advance_to(now_ns);
                None
            }
            Message::ManagementRequest(request) => self.manage(sequence, request),
            Message::Hotplug { event, device } => {
                let result = match event {
                    HotplugEvent::Added => self.disk_added(device),
                    HotplugEvent::Removed => self.disk_removed(device.id),
                };
                Some(match result {
                    Ok(()) => Message::Ack,
                    Err(e) => Message::error(e, ""),
                })
            }
            other => orion_driver::default_reply(&other),
        }
    }
}
