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
pub use disk_manager::{DiskEntry, DiskManager};
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

use crate::array::assemble::{ASSEMBLY_OPTIONS, assemble, read_superblock};
use crate::array::nested::{Stack, groups_of, read_inner_superblock};
use crate::array::persist::{has_pool_label, write_pool_label};
use crate::array::scrub::{ScrubError, ScrubMode};
use crate::array::settings::Setting;
use crate::array::{Array, MemberState};
use crate::block::{BlockDevice, IoError, SECTOR_BYTES};
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
    /// Opens a member named in a management request (`raid add`): on the host a path.
    opener: RefCell<Option<DeviceOpener>>,
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
    /// A driver on `exec` (the platform's executor: a clock source, or simulated time).
    pub fn with_executor(exec: Executor) -> Self {
        let outbox = Rc::new(RefCell::new(VecDeque::new()));
        let rebuild_manager = Rc::new(RebuildManager::default());
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
            disk_manager: Rc::new(RefCell::new(DiskManager::default())),
            started: Rc::new(Cell::new(false)),
            monitoring: MonitoringSystem::default(),
            opener: RefCell::new(None),
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
        *self.opener.borrow_mut() = Some(opener);
    }

    /// Adds a device to the shared spare pool.
    pub fn add_pool_spare(&self, name: String, dev: Rc<dyn BlockDevice>) -> Result<(), String> {
        self.disk_manager.borrow_mut().add_pool_spare(name, dev)
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
            .array_manager
            .borrow()
            .iter()
            .find(|(_, a)| Rc::ptr_eq(a, array))
            .map(|(id, _)| id);
        for (disk_id, entry) in self.disk_manager.borrow_mut().disks.iter_mut() {
            if alloc::format!("disk{disk_id}") == name {
                entry.array_id = id;
            }
        }
    }

    /// The role `dev` (offered as `name`) already has anywhere in this driver: a member
    /// of a served array (groups of a RAID 50/60 included) or a shared-pool spare.
    fn device_role(&self, name: &str, dev: &dyn BlockDevice) -> Option<String> {
        let in_array = self
            .array_manager
            .borrow()
            .iter()
            .find_map(|(_, a)| a.role_of_device(name, dev));
        in_array.or_else(|| self.disk_manager.borrow().pool_role_of(name, dev))
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
            .disk_manager
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
    /// Starts the MonitoringSystem's periodic task (or restarts it with `config`).
    pub fn start_monitor(&self, config: MonitorConfig) {
        self.monitoring
            .start(&self.exec, &self.array_manager, config);
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
        array.set_spare_source(Some(pool_source(&self.disk_manager)));
        self.array_manager.borrow_mut().add(array)
    }

    /// Serves a stack assembled by other means (the host tool): the outer array is served,
    /// its groups are internal. Returns the outer array's id.
    pub fn add_stack(&self, stack: &Stack) -> u32 {
        // The groups of a RAID 50/60 rebuild from the pool; the outer RAID 0 never asks.
        for layer in stack.layers() {
            layer.set_spare_source(Some(pool_source(&self.disk_manager)));
        }
        self.array_manager.borrow_mut().add_stack(stack)
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
        let id = info.id;
        if self.disk_manager.borrow().disks.contains_key(&id) {
            return Err(DriverError::AlreadyExists);
        }
        self.port.device_back(id);
        let device = Rc::new(IpcMember::new(id, capacity_sectors, self.port.clone()));
        self.disk_manager.borrow_mut().disks.insert(
            id,
            DiskEntry {
                info,
                device: device.clone(),
                superblock: None,
                array_id: None,
            },
        );
        let disks = self.disk_manager.clone();
        let arrays = self.array_manager.clone();
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
            .disk_manager
            .borrow_mut()
            .disks
            .remove(&id)
            .ok_or(DriverError::NotFound)?;
        // Its driver is gone: what it was asked fails now, not never.
        self.port.device_gone(id);
        if entry.array_id == Some(POOL_ARRAY_ID) {
            let name = alloc::format!("disk{id}");
            self.disk_manager
                .borrow_mut()
                .spare_pool
                .retain(|(n, _)| *n != name);
            return Ok(());
        }
        if let Some(array_id) = entry.array_id {
            let array = self.array_manager.borrow().get(array_id).cloned();
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
            self.array_manager.borrow().find(&req.name).ok_or((
                DriverError::NotFound,
                alloc::format!("no array named '{}'", req.name),
            ))
        };
        let to_json = |value: &dyn erased::Json| value.to_json();
        let find = |name: &str| -> Result<Rc<Array>, (DriverError, String)> {
            self.array_manager
                .borrow()
                .find(name)
                .map(|(_, a)| a)
                .ok_or((
                    DriverError::NotFound,
                    alloc::format!("no array named '{name}'"),
                ))
        };
        match opcode {
            manage::OP_STATUS => {
                let report = manage::StatusReport {
                    arrays: self
                        .array_manager
                        .borrow()
                        .iter()
                        .map(|(id, a)| self.array_manager.borrow().status(id, a))
                        .collect(),
                    pool: self
                        .disk_manager
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
                let arrays = self.array_manager.borrow();
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
                        tick_interval_ns: self
                            .array_manager
                            .borrow()
                            .monitor_config
                            .tick_interval_ns,
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
                Ok((id, _)) if self.array_manager.borrow().parent_of(id).is_some() => {
                    let parent = self.array_manager.borrow().parent_of(id);
                    let parent: String = parent
                        .and_then(|p| self.array_manager.borrow().get(p).map(|a| a.name().into()))
                        .unwrap_or_default();
                    Some(respond(Err((
                        DriverError::Busy,
                        alloc::format!("the array is a group of '{parent}': stop '{parent}'"),
                    ))))
                }
                Ok((id, array)) => {
                    let arrays = self.array_manager.clone();
                    let disks = self.disk_manager.clone();
                    let outbox = self.outbox.clone();
                    // The outer array first: its superblock update writes into its groups.
                    let mut layers = vec![(id, array)];
                    layers.extend(self.array_manager.borrow().groups_of(id));
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
                    let groups = self.array_manager.borrow().groups_of(id);
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
                    Ok(to_json(&self.array_manager.borrow().scrub_report(id)))
                })))
            }
            manage::OP_SCRUB_REPORT => {
                Some(respond(named(&request.payload).map(|(id, _)| {
                    to_json(&self.array_manager.borrow().scrub_report(id))
                })))
            }
            manage::OP_SCRUB_CANCEL => {
                Some(respond(named(&request.payload).and_then(|(id, a)| {
                    let groups = self.array_manager.borrow().groups_of(id);
                    let cancelled = if groups.is_empty() {
                        self.cancel_scrub_of(&a)
                    } else {
                        // Every group, not just up to the first that runs.
                        groups
                            .iter()
                            .fold(false, |any, (_, g)| self.cancel_scrub_of(g) || any)
                    };
                    if cancelled {
                        Ok(to_json(&self.array_manager.borrow().scrub_report(id)))
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
                let target = self
                    .array_manager
                    .borrow()
                    .member_target(&req.name, &req.member);
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
                    .map(|n| self.array_manager.borrow().add_target(n));
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
                    let disks = self.disk_manager.clone();
                    let arrays = self.array_manager.clone();
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
                let target = self
                    .array_manager
                    .borrow()
                    .member_target(&req.name, &req.member);
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
                let groups = match self.array_manager.borrow().find(&req.name) {
                    Some((id, _)) => self.array_manager.borrow().groups_of(id),
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
                // A new stripe_cache ask changes every array's share.
                self.cache_manager.rebalance();
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
                let pool = self.disk_manager.borrow().pool();
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
        self.state.set(DriverState::ShuttingDown);
        log::info!("shutdown requested ({reason:?})");
        // Outer arrays before the groups they write into.
        let mut arrays: Vec<(bool, Rc<Array>)> = self
            .array_manager
            .borrow()
            .iter()
            .map(|(id, a)| (self.array_manager.borrow().is_inner(id), a.clone()))
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
            discover(&exec, &disks, &arrays, true).await;
        });
        Ok(())
    }

    /// A member disk's interrupt: the device asks for attention (media change, a reset,
    /// a failing unit). The RAID driver owns no hardware, so it checks what matters to it:
    /// the disk still reads its superblock. One that cannot is failed in its array, as a
    /// failed I/O would fail it (a spare takes its place). An irq no disk has is
    /// `NotFound`.
    fn handle_irq(&mut self, irq: u32) -> Result<(), DriverError> {
        let hit: Vec<(u32, Rc<IpcMember>, Option<u32>)> = self
            .disk_manager
            .borrow()
            .disks
            .iter()
            .filter(|(_, d)| d.info.irq == Some(irq))
            .map(|(&id, d)| (id, d.device.clone(), d.array_id))
            .collect();
        if hit.is_empty() {
            return Err(DriverError::NotFound);
        }
        for (id, device, array_id) in hit {
            let array = array_id.and_then(|a| self.array_manager.borrow().get(a).cloned());
            self.exec.spawn_detached(async move {
                let check = device
                    .read(crate::array::SUPERBLOCK_SECTOR, vec![0u8; SECTOR_BYTES])
                    .await;
                let Err(e) = check else {
                    return;
                };
                log::error!("disk{id}: attention interrupt {irq}, and it cannot be read: {e}");
                let Some(array) = array else {
                    return;
                };
                let dev = device as Rc<dyn BlockDevice>;
                let slot = array
                    .slots()
                    .iter()
                    .position(|m| m.as_ref().is_some_and(|m| Rc::ptr_eq(&m.dev, &dev)));
                if let Some(slot) = slot {
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
