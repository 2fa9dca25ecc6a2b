//! `RaidDriver`: the driver process's message loop. It owns the managers (arrays, member
//! disks), turns IPC frames into tasks on the executor, and queues the frames to send: replies
//! to the storage service and requests to the member disks' drivers.

mod array_manager;
mod cache_manager;
mod disk_manager;
pub mod ipc_member;
mod monitoring;
mod rebuild_manager;

pub use array_manager::{ArrayManager, BlockIo, IoGeometry, WriteNotice};
pub use cache_manager::{CacheManager, DEFAULT_CACHE_BYTES};
pub use disk_manager::{DiskEntry, DiskId, DiskManager, DiskUse};
pub use monitoring::MonitoringSystem;
pub use rebuild_manager::{DEFAULT_MAX_CONCURRENT_JOBS, RebuildManager};

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use orion_driver::{
    DeviceClass, DeviceInfo, DriverError, Frame, FrameError, HotplugEvent, IoRequest, IoResponse,
    ManagementRequest, ManagementResponse, Message, OrionDriver, ShutdownReason, bad_frame_reply,
    decode, decode_header, dispatch,
};

use alloc::boxed::Box;
use core::future::Future;
use core::pin::Pin;

use crate::array::Array;
use crate::array::assemble::read_superblock;
use crate::array::nested::Stack;
use crate::array::persist::has_pool_label;
use crate::array::scrub::ScrubMode;
use crate::block::{BlockDevice, IoError, SECTOR_BYTES};
use crate::executor::{AsyncMutex, Executor};
use crate::manage::{ManagementOp, Refusal};
use crate::monitor::{ArrayMetrics, Event, EventLog, MonitorConfig};
use ipc_member::{IpcMember, IpcPort};

/// A management document as JSON (the encoding of every answer).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_vec(value).expect("management documents serialize")
}

/// A management answer: ready now, or given by a task once the work is done (a stop waits
/// for the superblocks, an `add` for the spare's label).
pub(crate) enum Answer {
    Now(Result<Vec<u8>, Refusal>),
    Later(Pin<Box<dyn Future<Output = Result<Vec<u8>, Refusal>>>>),
}

impl Answer {
    pub(crate) fn later(work: impl Future<Output = Result<Vec<u8>, Refusal>> + 'static) -> Self {
        Answer::Later(Box::pin(work))
    }

    /// A document answered at once.
    pub(crate) fn json<T: serde::Serialize>(result: Result<T, Refusal>) -> Self {
        Answer::Now(result.map(|v| to_json(&v)))
    }
}

/// The response frame's message for an answer to `opcode`.
fn management_response(opcode: u16, result: Result<Vec<u8>, Refusal>) -> Message {
    Message::ManagementResponse(match result {
        Ok(payload) => ManagementResponse {
            opcode,
            status: Ok(()),
            payload,
        },
        Err(refusal) => ManagementResponse {
            opcode,
            status: Err(refusal.status),
            payload: refusal.detail.into_bytes(),
        },
    })
}

/// First device id given to an array (member disks use the kernel's ids, below this).
pub const ARRAY_ID_BASE: u32 = 0x4000_0000;

/// Block requests of the storage service in flight at once; more are answered `Busy` at
/// once (the service retries), so a flood cannot grow the driver's memory without bound.
pub const MAX_CLIENT_REQUESTS: u32 = 512;

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

/// Where the driver is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverState {
    /// Loaded; no `Probe` or `Init` yet.
    Loaded,
    /// `Probe` answered.
    Probed,
    /// `Init` answered: arrays may start degraded, the storage service is served.
    Running,
    /// `Shutdown` received: arrays are being stopped.
    ShuttingDown,
    /// Every array stopped; the process may end.
    Stopped,
}

/// What the driver has handled so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames received (whole ones, good or bad).
    pub frames_in: u64,
    /// Frames received that did not decode.
    pub bad_frames: u64,
    /// Block requests of the storage service answered `Busy`.
    pub busy_replies: u64,
}

/// The RAID driver: its five managers (arrays, disks, cache, background jobs, monitoring),
/// the executor they run on and the frames waiting to be sent.
pub struct RaidDriver {
    exec: Executor,
    outbox: Rc<RefCell<VecDeque<Frame>>>,
    port: Rc<IpcPort>,
    device_info: RefCell<Option<DeviceInfo>>,
    state: Cell<DriverState>,
    stats: Cell<DriverStats>,
    array_manager: Rc<RefCell<ArrayManager>>,
    disk_manager: Rc<RefCell<DiskManager>>,
    /// After `Init`, arrays may start degraded: every disk present at boot was offered.
    started: Rc<Cell<bool>>,
    monitoring: MonitoringSystem,
    /// The reply to `Shutdown` is queued: every array is stopped and the driver may exit.
    shut_down: Rc<Cell<bool>>,
    /// Disks given through the embedding API (`crate::api`).
    embedded: Rc<RefCell<crate::api::EmbeddedDisks>>,
    /// Block requests of the storage service being served ([`MAX_CLIENT_REQUESTS`]).
    client_requests: Rc<Cell<u32>>,
    rebuild_manager: Rc<RebuildManager>,
    cache_manager: Rc<CacheManager>,
    /// Held by the discovery that runs: one at a time (see [`discover`]).
    discovery: Rc<AsyncMutex<()>>,
}

/// Opens a device by name for `raid add` / `raid replace`.
pub type DeviceOpener = Rc<dyn Fn(&str) -> Result<Rc<dyn BlockDevice>, String>>;

impl RaidDriver {
    /// A driver on `exec` (the platform's executor: a clock source, or simulated time).
    pub fn with_executor(exec: Executor) -> Self {
        let outbox = Rc::new(RefCell::new(VecDeque::new()));
        let disk_manager = Rc::new(RefCell::new(DiskManager::default()));
        let rebuild_manager = Rc::new(RebuildManager::new(Some(disk_manager.clone())));
        let cache_manager = Rc::new(CacheManager::default());
        let (jobs, cache) = (rebuild_manager.clone(), cache_manager.clone());
        let arrays = ArrayManager {
            on_added: Some(Rc::new(move |array: &Rc<Array>| {
                jobs.adopt(array);
                cache.adopt(array);
            })),
            ..ArrayManager::default()
        };
        RaidDriver {
            port: Rc::new(IpcPort::new(outbox.clone())),
            exec,
            outbox,
            device_info: RefCell::new(None),
            state: Cell::new(DriverState::Loaded),
            stats: Cell::new(DriverStats::default()),
            array_manager: Rc::new(RefCell::new(arrays)),
            disk_manager,
            started: Rc::new(Cell::new(false)),
            monitoring: MonitoringSystem::default(),
            shut_down: Rc::new(Cell::new(false)),
            embedded: Rc::new(RefCell::new(crate::api::EmbeddedDisks::default())),
            client_requests: Rc::new(Cell::new(0)),
            rebuild_manager,
            cache_manager,
            discovery: Rc::new(AsyncMutex::new(())),
        }
    }

    pub(crate) fn embedded(&self) -> Rc<RefCell<crate::api::EmbeddedDisks>> {
        self.embedded.clone()
    }

    /// Where the driver is in its life.
    pub fn state(&self) -> DriverState {
        if self.shut_down.get() {
            DriverState::Stopped
        } else {
            self.state.get()
        }
    }

    /// What the driver has handled so far.
    pub fn stats(&self) -> DriverStats {
        self.stats.get()
    }

    /// The device the kernel probed the driver with.
    pub fn device_info(&self) -> Option<DeviceInfo> {
        self.device_info.borrow().clone()
    }

    fn count(&self, f: impl FnOnce(&mut DriverStats)) {
        let mut st = self.stats.get();
        f(&mut st);
        self.stats.set(st);
    }

    /// The background jobs of every array.
    pub fn rebuild_manager(&self) -> &RebuildManager {
        &self.rebuild_manager
    }

    /// The memory budget every array's cache shares.
    pub fn cache_manager(&self) -> &CacheManager {
        &self.cache_manager
    }

    /// Whether `Shutdown` has been answered: the arrays are stopped and the process may end
    /// once the reply is sent.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.get()
    }

    /// How `raid add` / `raid replace` open the device they name.
    pub fn set_opener(&self, opener: DeviceOpener) {
        self.disk_manager.borrow_mut().set_opener(opener);
    }

    /// Adds a device to the shared spare pool.
    pub fn add_pool_spare(&self, name: String, dev: Rc<dyn BlockDevice>) -> Result<(), String> {
        self.disk_manager.borrow_mut().add_pool_spare(name, dev)
    }

    /// Applies `config` and (re)starts the monitor task, which ticks every array's rate
    /// windows and health each `tick_interval_ns`. Not started by default: a simulation that
    /// runs until idle would never be idle with it.
    /// Starts the MonitoringSystem's periodic task (or restarts it with `config`).
    pub fn start_monitor(&self, config: MonitorConfig) {
        self.monitoring
            .start(&self.exec, &self.array_manager, config);
    }

    /// Where the platform counts its heap: metrics report the peak `probe` reads.
    pub fn set_heap_probe(&self, probe: monitoring::HeapProbe) {
        self.monitoring.set_heap_probe(probe);
    }

    /// Stops the monitor task at its next tick.
    pub fn stop_monitor(&self) {
        self.monitoring.stop();
    }

    /// The figures of every array.
    pub fn metrics(&self) -> Vec<ArrayMetrics> {
        self.monitoring.metrics(&self.array_manager.borrow())
    }

    /// The event log every served array writes to.
    pub fn events(&self) -> Rc<EventLog> {
        self.monitoring.events(&self.array_manager.borrow())
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn arrays(&self) -> core::cell::Ref<'_, ArrayManager> {
        self.array_manager.borrow()
    }

    pub fn disk_manager(&self) -> core::cell::Ref<'_, DiskManager> {
        self.disk_manager.borrow()
    }

    /// Serves an array that was assembled by other means (the host tool); returns its id.
    pub fn add_array(&self, array: Rc<Array>) -> u32 {
        self.array_manager.borrow_mut().add(array)
    }

    /// Serves a stack assembled by other means (the host tool): the outer array is served,
    /// its groups are internal. Returns the outer array's id.
    pub fn add_stack(&self, stack: &Stack) -> u32 {
        self.array_manager.borrow_mut().add_stack(stack)
    }

    /// Member requests sent and not yet answered (at most
    /// [`ipc_member::MAX_MEMBER_REQUESTS`]).
    pub fn member_requests_in_flight(&self) -> usize {
        self.port.in_flight()
    }

    /// The most member requests that were pending at once.
    pub fn member_requests_peak(&self) -> usize {
        self.port.peak_in_flight()
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
                    self.count(|st| st.frames_in += 1);
                    used += n;
                    self.handle_frame(frame);
                }
                Err(FrameError::NeedMore { .. }) => break,
                Err(e) => match decode_header(&buf[used..]) {
                    Ok(header) if header.frame_len() <= buf.len() - used => {
                        self.outbox
                            .borrow_mut()
                            .push_back(bad_frame_reply(header.sequence, "malformed frame"));
                        self.count(|st| {
                            st.frames_in += 1;
                            st.bad_frames += 1;
                        });
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
        let id = request.device_id;
        let not_found = Message::IoResponse(IoResponse::err(DriverError::NotFound));
        if !self.array_manager.borrow().serves(id) {
            self.reply(sequence, not_found);
            return;
        }
        // Before the request's buffer is made: a flood answered `Busy` allocates nothing.
        if self.client_requests.get() >= MAX_CLIENT_REQUESTS {
            self.reply(
                sequence,
                Message::IoResponse(IoResponse::err(DriverError::Busy)),
            );
            self.count(|st| st.busy_replies += 1);
            return;
        }
        let Some(io) = self
            .array_manager
            .borrow()
            .submit_io(id, BlockIo::from_request(request))
        else {
            self.reply(sequence, not_found);
            return;
        };
        self.client_requests.set(self.client_requests.get() + 1);
        let outbox = self.outbox.clone();
        let count = self.client_requests.clone();
        self.exec.spawn_detached(async move {
            let response = match io.await {
                Ok(data) => IoResponse::ok(data),
                Err(e) => IoResponse::err(driver_error(&e)),
            };
            count.set(count.get() - 1);
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
        let id = DiskId(info.id);
        if self.disk_manager.borrow().contains(id) {
            return Err(DriverError::AlreadyExists);
        }
        self.port.device_back(id.0);
        let device = Rc::new(IpcMember::new(id.0, capacity_sectors, self.port.clone()));
        self.disk_manager
            .borrow_mut()
            .insert(id, info, device.clone());
        let disks = self.disk_manager.clone();
        let arrays = self.array_manager.clone();
        let started = self.started.clone();
        let exec = self.exec.clone();
        let discovery = self.discovery.clone();
        self.exec.spawn_detached(async move {
            let sb = read_superblock(device.as_ref()).await;
            // Probed: from now on it counts for the decision to start an array degraded.
            disks.borrow_mut().probed(id, sb.clone());
            // A shared-pool spare (no md superblock, Orion's pool label) goes back to the pool.
            if sb.is_err() && has_pool_label(device.as_ref()).await {
                let joined = disks.borrow_mut().add_pool_spare(id.name(), device.clone());
                if let Err(e) = joined {
                    log::warn!("{id}: {e}");
                }
                for (_, a) in arrays.borrow().iter() {
                    crate::jobs::start(a);
                }
                return;
            }
            let _one_at_a_time = discovery.lock().await;
            disk_manager::discover(&exec, &disks, &arrays, started.get()).await;
        });
        Ok(())
    }

    fn disk_removed(&self, id: DiskId) -> Result<(), DriverError> {
        let entry = self
            .disk_manager
            .borrow_mut()
            .remove(id)
            .ok_or(DriverError::NotFound)?;
        // Its driver is gone: what it was asked fails now, not never.
        self.port.device_gone(id.0);
        if let DiskUse::Array(array_id) = entry.used_by {
            let array = self.array_manager.borrow().get(array_id).cloned();
            if let Some(array) = array {
                let dev = entry.device.clone() as Rc<dyn BlockDevice>;
                if let Some(slot) = disk_manager::slot_of(&array, &dev) {
                    self.exec.spawn_detached(async move {
                        let _ = array.fail_member(slot).await;
                    });
                }
            }
        }
        Ok(())
    }

    /// Decodes a management request once and hands it to the manager that owns it; the
    /// answer goes out now or, from a task, when the work is done.
    fn manage(&self, sequence: u64, request: ManagementRequest) -> Option<Message> {
        let opcode = request.opcode;
        let answer = match ManagementOp::decode(&request) {
            Ok(op) => self.route(op),
            Err(refusal) => Answer::Now(Err(refusal)),
        };
        match answer {
            Answer::Now(result) => Some(management_response(opcode, result)),
            Answer::Later(work) => {
                let outbox = self.outbox.clone();
                self.exec.spawn_detached(async move {
                    let message = management_response(opcode, work.await);
                    outbox.borrow_mut().push_back(Frame { sequence, message });
                });
                None
            }
        }
    }

    /// The owner of each management operation.
    fn route(&self, op: ManagementOp) -> Answer {
        use ManagementOp as Op;
        let arrays = &self.array_manager;
        let disks = &self.disk_manager;
        match op {
            Op::Status => Answer::json(Ok(arrays.borrow().status_report(disks.borrow().pool()))),
            Op::Detail(r) => Answer::json(arrays.borrow().detail(&r.name)),
            Op::Stop(r) => {
                let disks = disks.clone();
                let release = Rc::new(move |id| disks.borrow_mut().release_array(id));
                ArrayManager::stop(arrays, &r.name, release)
            }
            Op::Set(r) => ArrayManager::set(arrays, r, &self.cache_manager),
            Op::Check(r) => Answer::json(self.rebuild_manager.start_scrub(
                &arrays.borrow(),
                &r.name,
                ScrubMode::Check,
            )),
            Op::Repair(r) => Answer::json(self.rebuild_manager.start_scrub(
                &arrays.borrow(),
                &r.name,
                ScrubMode::Repair,
            )),
            Op::ScrubReport(r) => {
                Answer::json(self.rebuild_manager.scrub_report(&arrays.borrow(), &r.name))
            }
            Op::ScrubCancel(r) => Answer::json(self.rebuild_manager.cancel_scrub(
                &self.exec,
                &arrays.borrow(),
                &r.name,
            )),
            Op::Metrics(r) => Answer::json(
                self.monitoring
                    .metrics_report(&arrays.borrow(), r.as_ref().map(|r| r.name.as_str())),
            ),
            Op::Events(r) => Answer::json(Ok(self.monitoring.events_after(&arrays.borrow(), &r))),
            Op::Prometheus => Answer::Now(Ok(self
                .monitoring
                .prometheus(&arrays.borrow())
                .into_bytes())),
            Op::Fail(r) => disk_manager::fail_or_remove(arrays, r, true),
            Op::Remove(r) => disk_manager::fail_or_remove(arrays, r, false),
            Op::Add(r) => disk_manager::add(disks, arrays, r),
            Op::Replace(r) => disk_manager::replace(disks, arrays, r),
            Op::Pool => Answer::json(Ok(disk_manager::pool_report(&disks.borrow()))),
        }
    }

    fn start_shutdown(&self, sequence: u64, reason: ShutdownReason) {
        self.state.set(DriverState::ShuttingDown);
        log::info!("shutdown requested ({reason:?})");
        // Outer arrays before the groups they write into.
        let arrays = self.array_manager.borrow().stop_order();
        let outbox = self.outbox.clone();
        let shut_down = self.shut_down.clone();
        self.exec.spawn_detached(async move {
            let mut result = Ok(());
            for array in arrays {
                crate::jobs::scrub::stop(&array).await;
                if let Err(e) = array.mark_clean().await {
                    log::error!("{}: not marked clean: {e}", array.name());
                    result = Err(DriverError::Io);
                }
                monitoring::emit(&array, Event::ArrayStopped);
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

impl OrionDriver for RaidDriver {
    /// The RAID driver takes every block device offered: it reads its superblock and starts
    /// arrays as their members arrive.
    fn probe(&mut self, device: &DeviceInfo) -> Result<(), DriverError> {
        *self.device_info.borrow_mut() = Some(device.clone());
        if self.state.get() == DriverState::Loaded {
            self.state.set(DriverState::Probed);
        }
        self.disk_added(device.clone())
    }

    fn init(&mut self) -> Result<(), DriverError> {
        self.state.set(DriverState::Running);
        self.started.set(true);
        let disks = self.disk_manager.clone();
        let arrays = self.array_manager.clone();
        let exec = self.exec.clone();
        let discovery = self.discovery.clone();
        self.exec.spawn_detached(async move {
            let _one_at_a_time = discovery.lock().await;
            disk_manager::discover(&exec, &disks, &arrays, true).await;
        });
        Ok(())
    }

    /// A member disk's interrupt: the device asks for attention (media change, a reset,
    /// a failing unit). The RAID driver owns no hardware, so it checks what matters to it:
    /// the disk still reads its superblock. One that cannot is failed in its array, as a
    /// failed I/O would fail it (a spare takes its place). An irq no disk has is
    /// `NotFound`.
    fn handle_irq(&mut self, irq: u32) -> Result<(), DriverError> {
        let hit = self.disk_manager.borrow().on_irq(irq);
        if hit.is_empty() {
            return Err(DriverError::NotFound);
        }
        for (id, device, array_id) in hit {
            let array = array_id.and_then(|a| self.array_manager.borrow().get(a).cloned());
            self.exec.spawn_detached(async move {
                let check = device
                    .read(crate::array::SUPERBLOCK_SECTOR, vec![0u8; SECTOR_BYTES])
                    .await;
                // Only a device that is gone is failed for it: a media error on one sector
                // is the member's to count and repair like any other, not a reason to fail
                // it (on RAID 0 that would fail the array for a bad sector).
                let e = match check {
                    Ok(_) => return,
                    Err(e @ IoError::DeviceFailed) => e,
                    Err(e) => {
                        log::warn!("{id}: attention interrupt {irq}; a probe read failed: {e}");
                        return;
                    }
                };
                log::error!("{id}: attention interrupt {irq}, and it cannot be read: {e}");
                let Some(array) = array else {
                    return;
                };
                let dev = device as Rc<dyn BlockDevice>;
                if let Some(slot) = disk_manager::slot_of(&array, &dev) {
                    let _ = array.fail_member(slot).await;
                }
            });
        }
        Ok(())
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
                    HotplugEvent::Removed => self.disk_removed(DiskId(device.id)),
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
