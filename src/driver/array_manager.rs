//! The ArrayManager: the arrays the driver serves, by device id, with the nesting of
//! RAID 50 / 60 (groups are internal arrays) and the event log every array writes to; the
//! requests about whole arrays (`status`, `detail`, `stop`, `set`), the discovery of
//! nested arrays inside running ones, and the one route block requests take to them,
//! whichever front end (Orion IPC, the host's NBD server) they come from.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;

use alloc::vec;
use core::cell::RefCell;

use orion_driver::{DriverError, IoFlags, IoOp, IoRequest};

use super::disk_manager::ready_member_sets;
use super::{ARRAY_ID_BASE, Answer, CacheManager, RaidDriver, group_names, uuid_of};
pub use crate::array::WriteNotice;
use crate::array::assemble::assemble;
use crate::array::nested::{Stack, groups_of, read_inner_superblock};
use crate::array::scrub::ScrubReport;
use crate::array::settings::Setting;
use crate::array::{Array, MemberState};
use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES};
use crate::executor::Executor;
use crate::layout::ArrayLayout;
use crate::manage::{self, Refusal};
use crate::metadata::Superblock;
use crate::monitor::{Event, EventLog, MonitorConfig};

/// Told of every array that starts being served (the RebuildManager takes its jobs).
pub type OnArrayAdded = Rc<dyn Fn(&Rc<Array>)>;

/// One block request to a served array, its buffers owned so that none is copied on the way:
/// a read fills `buf` (any content: every byte is overwritten) and gives it back, a write's
/// `data` goes to the members as it is.
#[derive(Debug)]
pub enum BlockIo {
    Read {
        sector: u64,
        buf: Vec<u8>,
    },
    /// `fua`: durable on completion.
    Write {
        sector: u64,
        data: Bytes,
        fua: bool,
    },
    /// Every write completed before it is durable when it completes.
    Flush,
    /// The range's content is unspecified afterwards; `fua`: the discard is durable on
    /// completion (a flush follows it).
    Discard {
        sector: u64,
        sectors: u64,
        fua: bool,
    },
    /// The range reads back as zeroes afterwards.
    WriteZeroes {
        sector: u64,
        sectors: u64,
        fua: bool,
    },
}

impl BlockIo {
    /// The request of an Orion IPC block message (a read gets a zeroed buffer of its length).
    pub fn from_request(request: IoRequest) -> Self {
        let fua = request.flags.contains(IoFlags::FUA);
        let (sector, sectors) = (request.sector, u64::from(request.sector_count));
        match request.op {
            IoOp::Read => BlockIo::Read {
                sector,
                buf: alloc::vec![0u8; request.sector_count as usize * SECTOR_BYTES],
            },
            IoOp::Write => BlockIo::Write {
                sector,
                data: Bytes::from(request.data),
                fua,
            },
            IoOp::Flush => BlockIo::Flush,
            IoOp::Discard => BlockIo::Discard {
                sector,
                sectors,
                fua,
            },
            IoOp::WriteZeroes => BlockIo::WriteZeroes {
                sector,
                sectors,
                fua,
            },
        }
    }

    /// Performs the request on `array`; the data of a read, empty for anything else.
    async fn perform(self, array: &Array) -> Result<Vec<u8>, IoError> {
        match self {
            BlockIo::Read { sector, buf } => array.read(sector, buf).await,
            BlockIo::Write { sector, data, fua } => {
                array.write(sector, data, fua).await.map(|()| Vec::new())
            }
            BlockIo::Flush => array.flush().await.map(|()| Vec::new()),
            BlockIo::Discard {
                sector,
                sectors,
                fua,
            } => {
                array.discard(sector, sectors).await?;
                if fua {
                    array.flush().await?;
                }
                Ok(Vec::new())
            }
            BlockIo::WriteZeroes {
                sector,
                sectors,
                fua,
            } => {
                const PIECE_SECTORS: u64 = 2048;
                let zeros = Bytes::from(alloc::vec![0u8; PIECE_SECTORS as usize * SECTOR_BYTES]);
                let mut done = 0;
                while done < sectors {
                    let n = (sectors - done).min(PIECE_SECTORS);
                    let at = sector.checked_add(done).ok_or(IoError::OutOfRange {
                        sector,
                        sectors,
                        capacity_sectors: array.capacity_sectors(),
                    })?;
                    array
                        .write(at, zeros.slice(..n as usize * SECTOR_BYTES), fua)
                        .await?;
                    done += n;
                }
                Ok(Vec::new())
            }
        }
    }
}

/// What a front end needs to know of a served array's shape to export it and size its
/// requests well, without knowing its layout (Linux's queue limits, in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoGeometry {
    pub capacity_sectors: u64,
    /// The chunk (0 for an array without one, RAID 1).
    pub chunk_bytes: usize,
    /// The data of one full stripe of a parity array (a write of it needs no reads); 0 for
    /// the other levels.
    pub full_stripe_bytes: usize,
}

/// The arrays the driver serves, by device id.
#[derive(Default)]
pub struct ArrayManager {
    pub(super) arrays: BTreeMap<u32, Rc<Array>>,
    pub(super) next_id: u32,
    /// Arrays whose data starts with another array's superblock (the groups of a RAID
    /// 50/60): each one's superblock and its outer array's id once that runs. They are
    /// internal: not served to clients.
    pub(super) inner: BTreeMap<u32, (Superblock, Option<u32>)>,
    /// Arrays already looked at for an inner superblock (outer arrays count as looked at:
    /// md nests one level here).
    pub(super) probed: BTreeSet<u32>,
    /// Every array's events, in one sequence (it outlives a stopped array).
    pub(super) events: Rc<EventLog>,
    pub(super) monitor_config: MonitorConfig,
    pub(super) on_added: Option<OnArrayAdded>,
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
        if let Some(hook) = &self.on_added {
            hook(&array);
        }
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
        super::monitoring::emit(&array, Event::ArrayStarted);
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

    /// The array served to clients as device `id` (a group of a RAID 50/60 is internal).
    fn served(&self, id: u32) -> Option<&Rc<Array>> {
        self.arrays.get(&id).filter(|_| !self.is_inner(id))
    }

    /// Whether device `id` is an array served to clients (not stopped, not a group).
    pub fn serves(&self, id: u32) -> bool {
        self.served(id).is_some()
    }

    /// Starts `io` on the served array `id`: the future (it holds the array, not the
    /// manager) gives the data of a read, empty for anything else. `None`: no such array.
    pub fn submit_io(
        &self,
        id: u32,
        io: BlockIo,
    ) -> Option<impl Future<Output = Result<Vec<u8>, IoError>> + 'static + use<>> {
        let array = self.served(id)?.clone();
        Some(async move { io.perform(&array).await })
    }

    /// The shape of the served array `id`.
    pub fn geometry(&self, id: u32) -> Option<IoGeometry> {
        let array = self.served(id)?;
        let chunk_bytes = array
            .superblock()
            .map_or(0, |sb| sb.chunk_sectors as usize * SECTOR_BYTES);
        let full_stripe_bytes = match array.layout() {
            ArrayLayout::Raid5(l) => l.stripe_data_sectors() as usize * SECTOR_BYTES,
            _ => 0,
        };
        Some(IoGeometry {
            capacity_sectors: array.capacity_sectors(),
            chunk_bytes,
            full_stripe_bytes,
        })
    }

    /// Announces to the served array `id` a write of `sectors` at `sector` whose data is
    /// still arriving, so that it can gather it with the writes around it into full
    /// stripes; the announcement lasts as long as the notice.
    pub fn expect_write(&self, id: u32, sector: u64, sectors: u64) -> Option<WriteNotice> {
        Some(self.served(id)?.expect_write(sector, sectors))
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
    pub fn member_target(&self, name: &str, member: &str) -> Result<Rc<Array>, Refusal> {
        let (id, array) = self.named(name)?;
        let groups = self.groups_of(id);
        if groups.is_empty() || array.find_member(member).is_some() {
            return Ok(array);
        }
        if let Some((_, g)) = groups.iter().find(|(_, g)| g.find_member(member).is_some()) {
            return Ok(g.clone());
        }
        Err(Refusal::not_found(alloc::format!(
            "no group of '{name}' has a member '{member}' (groups: {})",
            group_names(&groups)
        )))
    }

    /// The array `raid add NAME MEMBER` adds to: `name` itself, or for an outer array (a
    /// RAID 0 cannot use a spare) the first group with more empty or failed slots than
    /// spares waiting to fill them.
    pub fn add_target(&self, name: &str) -> Result<Rc<Array>, Refusal> {
        let (id, array) = self.named(name)?;
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
            .ok_or(Refusal::invalid(alloc::format!(
                "no group of '{name}' is missing a member: add the spare to a group ({})",
                group_names(&groups)
            )))
    }

    /// The served array named `name`, or the refusal that says there is none.
    pub fn named(&self, name: &str) -> Result<(u32, Rc<Array>), Refusal> {
        self.find(name)
            .ok_or_else(|| Refusal::not_found(alloc::format!("no array named '{name}'")))
    }

    /// The device id `array` is served under.
    pub fn id_of(&self, array: &Rc<Array>) -> Option<u32> {
        self.iter()
            .find(|(_, a)| Rc::ptr_eq(a, array))
            .map(|(id, _)| id)
    }

    /// `raid status`: every array, with the shared pool (`(name, sectors)`).
    pub fn status_report(&self, pool: Vec<(String, u64)>) -> manage::StatusReport {
        manage::StatusReport {
            arrays: self.iter().map(|(id, a)| self.status(id, a)).collect(),
            pool: pool
                .into_iter()
                .map(|(path, sectors)| manage::PoolSpare {
                    path,
                    size_bytes: sectors * SECTOR_BYTES as u64,
                })
                .collect(),
        }
    }

    /// `raid detail NAME`.
    pub fn detail(&self, name: &str) -> Result<manage::ArrayDetail, Refusal> {
        let (id, array) = self.named(name)?;
        let mut detail = manage::array_detail(id, &array);
        self.mark_nesting(id, &mut detail.status);
        detail.scrub = self.scrub_report(id);
        Ok(detail)
    }

    /// `raid stop NAME`: flushes, marks clean and stops serving the array (a RAID 50/60
    /// with its groups); answered when that is on disk. `stopped` hears of each layer
    /// stopped, so the disks it held are free again.
    pub(crate) fn stop(this: &Rc<RefCell<Self>>, name: &str, stopped: Rc<dyn Fn(u32)>) -> Answer {
        let (id, array) = match this.borrow().named(name) {
            Ok(found) => found,
            Err(e) => return Answer::Now(Err(e)),
        };
        if let Some(parent) = this.borrow().parent_of(id) {
            let parent: String = this
                .borrow()
                .get(parent)
                .map(|a| a.name().into())
                .unwrap_or_default();
            return Answer::Now(Err(Refusal::new(
                DriverError::Busy,
                alloc::format!("the array is a group of '{parent}': stop '{parent}'"),
            )));
        }
        // The outer array first: its superblock update writes into its groups.
        let mut layers = vec![(id, array)];
        layers.extend(this.borrow().groups_of(id));
        let arrays = this.clone();
        Answer::later(async move {
            let mut result = Ok(());
            for (id, array) in layers {
                // No repair write may land after the array is marked clean.
                crate::jobs::scrub::stop(&array).await;
                let r = array.mark_clean().await;
                super::monitoring::emit(&array, Event::ArrayStopped);
                result = result.and(r);
                arrays.borrow_mut().remove(id);
                stopped(id);
            }
            result
                .map(|()| Vec::new())
                .map_err(|e| Refusal::new(DriverError::Io, alloc::format!("{e}")))
        })
    }

    /// `raid set NAME key=value`: applied to the array (and a RAID 50/60's groups, whose
    /// rebuild and spare policies they are) at once, answered once recorded on disk (the
    /// extension record), so it survives a restart. A refusal changes nothing.
    pub(crate) fn set(
        this: &Rc<RefCell<Self>>,
        req: manage::SetRequest,
        cache: &CacheManager,
    ) -> Answer {
        let (id, array) = match this.borrow().named(&req.name) {
            Ok(found) => found,
            Err(e) => return Answer::Now(Err(e)),
        };
        let setting = match Setting::parse(&req.key, &req.value) {
            Ok(s) => s,
            Err(e) => return Answer::Now(Err(Refusal::invalid(alloc::format!("{e}")))),
        };
        let mut layers = vec![array.clone()];
        layers.extend(this.borrow().groups_of(id).into_iter().map(|(_, g)| g));
        for layer in &layers {
            layer.apply(setting);
        }
        log::info!(
            "{}: {} set to {}",
            array.name(),
            setting.key(),
            setting.value_text()
        );
        // A new stripe_cache ask changes every array's share.
        cache.rebalance();
        Answer::later(async move {
            let mut result = Ok(());
            for layer in &layers {
                if let Err(e) = layer.persist_settings().await {
                    result = Err(Refusal::new(
                        DriverError::Io,
                        alloc::format!("not recorded: {e}"),
                    ));
                }
            }
            result.map(|()| {
                super::to_json(&manage::SettingsReport {
                    settings: array.settings(),
                })
            })
        })
    }

    /// Every array, outer arrays before the groups they write into (the order to stop them).
    pub fn stop_order(&self) -> Vec<Rc<Array>> {
        let mut arrays: Vec<(bool, Rc<Array>)> = self
            .iter()
            .map(|(id, a)| (self.is_inner(id), a.clone()))
            .collect();
        arrays.sort_by_key(|(inner, _)| *inner);
        arrays.into_iter().map(|(_, a)| a).collect()
    }

    /// Looks for superblocks at the start of running arrays' data, and starts the outer
    /// arrays they describe (RAID 50/60: a RAID 0 over RAID 5/6 groups) as disk discovery
    /// does from disks.
    pub(super) async fn discover_nested(
        exec: &Executor,
        arrays: &Rc<RefCell<Self>>,
        degraded_ok: bool,
    ) {
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

/// The driver's block-request entry points for front ends that run in the driver's process
/// (the host's NBD server): the same route as an Orion IPC block request, through the
/// ArrayManager. They live here, next to what they route to.
impl RaidDriver {
    /// Starts `io` on the served array `id` (see [`ArrayManager::submit_io`]); the future
    /// runs on the driver's executor. `None`: no such array (stopped, or never served).
    pub fn submit_io(
        &self,
        id: u32,
        io: BlockIo,
    ) -> Option<impl Future<Output = Result<Vec<u8>, IoError>> + 'static + use<>> {
        self.array_manager.borrow().submit_io(id, io)
    }

    /// Whether device `id` is an array served to clients.
    pub fn serves(&self, id: u32) -> bool {
        self.array_manager.borrow().serves(id)
    }

    /// The shape of the served array `id`, for its export.
    pub fn io_geometry(&self, id: u32) -> Option<IoGeometry> {
        self.array_manager.borrow().geometry(id)
    }

    /// Announces a write still arriving (see [`ArrayManager::expect_write`]).
    pub fn expect_write(&self, id: u32, sector: u64, sectors: u64) -> Option<WriteNotice> {
        self.array_manager
            .borrow()
            .expect_write(id, sector, sectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::assemble::{CreateOptions, create};
    use crate::array::test_rig::{drive, named_members};
    use crate::executor::Executor;
    use crate::metadata::Level;
    use crate::platform::memory::MemoryDisk;

    /// A RAID 5 of four 8 MiB memory members with 64 KiB chunks, served by a manager.
    fn served_raid5() -> (Executor, ArrayManager, u32) {
        let exec = Executor::new();
        let disks: Vec<Rc<MemoryDisk>> = (0..4)
            .map(|_| Rc::new(MemoryDisk::new((8 << 20) / SECTOR_BYTES as u64)))
            .collect();
        let opts = CreateOptions {
            level: Level::Raid5,
            layout: None,
            chunk_sectors: 128,
            name: "r5".into(),
            uuid: [7; 16],
            time_s: 1_000,
            entropy: 3,
            assume_clean: true,
        };
        let e = exec.clone();
        let members = named_members(&disks);
        let array = drive(&exec, async move { create(&e, members, &opts).await }).unwrap();
        let mut manager = ArrayManager::default();
        let id = manager.add(array);
        (exec, manager, id)
    }

    /// Every kind of request reaches the array through `submit_io`, with what it asks for:
    /// a write reads back, write-zeroes and a durable discard answer, and the geometry a
    /// front end exports is the array's.
    #[test]
    fn requests_reach_the_served_array() {
        let (exec, manager, id) = served_raid5();
        let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let write = BlockIo::Write {
            sector: 256,
            data: Bytes::from(data.clone()),
            fua: true,
        };
        assert_eq!(
            drive(&exec, manager.submit_io(id, write).unwrap()),
            Ok(Vec::new())
        );
        let read = BlockIo::Read {
            sector: 256,
            buf: alloc::vec![0xee; data.len()],
        };
        assert_eq!(drive(&exec, manager.submit_io(id, read).unwrap()), Ok(data));
        let zero = BlockIo::WriteZeroes {
            sector: 256,
            sectors: 8,
            fua: false,
        };
        assert!(drive(&exec, manager.submit_io(id, zero).unwrap()).is_ok());
        let read = BlockIo::Read {
            sector: 256,
            buf: alloc::vec![0xee; 4096],
        };
        assert_eq!(
            drive(&exec, manager.submit_io(id, read).unwrap()),
            Ok(alloc::vec![0; 4096])
        );
        let trim = BlockIo::Discard {
            sector: 0,
            sectors: 128,
            fua: true,
        };
        assert!(drive(&exec, manager.submit_io(id, trim).unwrap()).is_ok());
        assert!(drive(&exec, manager.submit_io(id, BlockIo::Flush).unwrap()).is_ok());

        let geometry = manager.geometry(id).unwrap();
        let array = manager.get(id).unwrap();
        assert_eq!(geometry.capacity_sectors, array.capacity_sectors());
        assert_eq!(geometry.chunk_bytes, 64 << 10);
        assert_eq!(geometry.full_stripe_bytes, 3 * (64 << 10));
        assert!(manager.serves(id));
        assert!(manager.expect_write(id, 0, 8).is_some());
    }

    /// A request past the end is the array's error; a device that is not served gets no
    /// future at all.
    #[test]
    fn bad_requests_are_refused() {
        let (exec, mut manager, id) = served_raid5();
        let capacity = manager.geometry(id).unwrap().capacity_sectors;
        let past = BlockIo::Read {
            sector: capacity,
            buf: alloc::vec![0; 512],
        };
        assert!(matches!(
            drive(&exec, manager.submit_io(id, past).unwrap()),
            Err(IoError::OutOfRange { .. })
        ));
        let zeroes_past = BlockIo::WriteZeroes {
            sector: u64::MAX - 1,
            sectors: 4096,
            fua: false,
        };
        assert!(drive(&exec, manager.submit_io(id, zeroes_past).unwrap()).is_err());
        assert!(manager.submit_io(id + 1, BlockIo::Flush).is_none());
        assert!(manager.geometry(id + 1).is_none());
        manager.remove(id);
        assert!(!manager.serves(id));
        assert!(manager.submit_io(id, BlockIo::Flush).is_none());
        assert!(manager.expect_write(id, 0, 8).is_none());
    }
}
