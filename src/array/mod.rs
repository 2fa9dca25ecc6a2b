//! The per-array I/O engine: members, their states, and the read/write/flush/discard paths
//! of the copy-based levels (RAID 0, 1, 10), with range locks, read balancing, read repair
//! and member failure persisted in the superblocks before a write is acknowledged.

pub mod assemble;
#[cfg(test)]
mod assemble_tests;
mod background;
pub use background::{JobControl, JobKind, JobProgress, JobRunner};
mod buffers;
pub(crate) use buffers::ChunkBuffers;
mod gather;
pub use gather::WriteNotice;
#[cfg(test)]
mod gather_tests;
#[cfg(test)]
mod member_rules_tests;
pub mod members;
pub mod nested;
#[cfg(test)]
mod offload_tests;
pub mod persist;
#[cfg(test)]
mod persist_tests;
pub mod rangelock;
pub mod scrub;
pub mod settings;
mod stripe;
pub(crate) use stripe::{CellRead, SharedCell};
pub mod stripe_cache;
#[cfg(test)]
mod stripe_tests;
#[cfg(test)]
pub(crate) mod test_rig;
#[cfg(test)]
mod tests;

use alloc::collections::VecDeque;
use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt;

use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES, check_range, check_sectors};
use crate::executor::{AsyncMutex, Executor, join_all};
use crate::layout::{ArrayLayout, Extent};
use crate::metadata::{DeviceRole, FeatureMap, MdTime, Superblock};
use crate::monitor::{ArrayMonitor, Event, MemberMonitor, OpKind};
use crate::parity::ParityEngine;
pub use members::{ArrayPolicy, FailurePolicy, RebuildPriority, SparePolicy};
use rangelock::RangeLock;

/// Where the v1.2 superblock sits on every member.
pub const SUPERBLOCK_SECTOR: u64 = 8;
/// md's "no resync needed" marker in `resync_offset`.
pub const RESYNC_DONE: u64 = u64::MAX;

/// The state of one member, as md keeps it.
///
/// A member that comes back with older events (stale) is re-added as `Rebuilding` from
/// zero: without a write-intent bitmap nothing on it can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// In sync and serving.
    Active,
    /// Failed: receives nothing.
    Faulty,
    /// Holds no data; waits to take the place of a failed member.
    Spare,
    /// In a slot, being rebuilt: takes every write, serves reads only below its
    /// `recovery_offset`.
    Rebuilding,
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Active => "active",
            MemberState::Faulty => "faulty",
            MemberState::Spare => "spare",
            MemberState::Rebuilding => "rebuilding",
        })
    }
}

/// How a mirrored read picks its copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Rotate through the in-sync copies.
    RoundRobin,
    /// The copy whose member has the fewest requests in flight (ties rotate).
    LeastOutstanding,
}

/// Array health as users see it; defined with the block device contract, beside
/// [`HealthState`], so that the monitor reads it without knowing arrays.
pub use crate::block::Health;

/// The state every view reports; defined with the block device contract, which a group of
/// a RAID 50/60 reports it through ([`BlockDevice::array_health`]).
pub use crate::block::HealthState;

/// Per-member counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberCounters {
    pub reads: u64,
    pub writes: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    /// Sectors rewritten after a read error was corrected from another copy.
    pub corrected_sectors: u64,
}

/// One member device of an array.
pub struct Member {
    pub dev: Rc<dyn BlockDevice>,
    /// Where the member came from (path, `mem:` spec), for display.
    pub name: String,
    superblock: RefCell<Superblock>,
    state: Cell<MemberState>,
    inflight: Cell<u32>,
    counters: Cell<MemberCounters>,
    monitor: MemberMonitor,
    /// Member sectors (from the data offset) already rebuilt, while `Rebuilding`: writes
    /// below it reach this member and reads may use it. Its data there may still sit in the
    /// device's volatile cache.
    recovery_offset: Cell<u64>,
    /// The rebuild position made durable (the member flushed after its data up to it was
    /// written): what superblocks record, whichever update writes them, so that a crash
    /// never finds a position covering data the member lost. At most `recovery_offset`.
    durable_recovery_offset: Cell<u64>,
    /// md's replacement: a member being rebuilt as a copy of this one while this one still
    /// serves; it receives every write this one does.
    replacement: RefCell<Option<Rc<Member>>>,
    /// This member is itself a replacement (md's `REPLACEMENT` feature).
    is_replacement: Cell<bool>,
    /// What the monitor's probe of its device found (reported once).
    problem: RefCell<Option<crate::block::DeviceProblem>>,
    /// Its rebuild is complete and being recorded: superblock updates write it in sync,
    /// while it stays `Rebuilding` (not yet relied on as a full copy) until the record is on
    /// disk.
    in_sync_pending: Cell<bool>,
    /// When a member is failed for slowness or read errors; `None` on a non-redundant
    /// array (where failing a member loses data, so errors are only passed up).
    failure_policy: Cell<Option<FailurePolicy>>,
    /// The executor clock (set when the member joins an array).
    clock: RefCell<Option<Executor>>,
    /// Executor times of the recent read errors, oldest first.
    read_error_times: RefCell<VecDeque<u64>>,
    /// When this member's last I/O timed out; cleared by its next I/O that completes. The
    /// array tells a stall (many members at once) from a failed member by these.
    timed_out_at_ns: Cell<Option<u64>>,
}

impl Member {
    pub fn new(name: String, dev: Rc<dyn BlockDevice>, superblock: Superblock) -> Self {
        Member {
            dev,
            name,
            superblock: RefCell::new(superblock),
            state: Cell::new(MemberState::Active),
            inflight: Cell::new(0),
            counters: Cell::new(MemberCounters::default()),
            monitor: MemberMonitor::new(),
            recovery_offset: Cell::new(0),
            durable_recovery_offset: Cell::new(0),
            failure_policy: Cell::new(None),
            clock: RefCell::new(None),
            read_error_times: RefCell::new(VecDeque::new()),
            timed_out_at_ns: Cell::new(None),
            replacement: RefCell::new(None),
            is_replacement: Cell::new(false),
            problem: RefCell::new(None),
            in_sync_pending: Cell::new(false),
        }
    }

    /// A member that joins in `state` (e.g. `Rebuilding` from `recovery_offset_sectors`).
    pub fn with_state(
        name: String,
        dev: Rc<dyn BlockDevice>,
        superblock: Superblock,
        state: MemberState,
        recovery_offset_sectors: u64,
    ) -> Self {
        let m = Member::new(name, dev, superblock);
        m.state.set(state);
        // Read from its superblock: durable.
        m.recovery_offset.set(recovery_offset_sectors);
        m.durable_recovery_offset.set(recovery_offset_sectors);
        m
    }

    /// Moves the rebuild cursor to `sectors` (a new rebuild, a resume at a region
    /// boundary). The durable position never runs ahead of the cursor.
    pub(crate) fn set_recovery_start(&self, sectors: u64) {
        self.recovery_offset.set(sectors);
        self.durable_recovery_offset
            .set(self.durable_recovery_offset.get().min(sectors));
    }

    /// Moves the rebuild cursor on: everything below `sectors` is rebuilt.
    pub(crate) fn set_recovery_offset(&self, sectors: u64) {
        self.recovery_offset.set(sectors);
    }

    /// Records that the member's data up to `sectors` is flushed: the position superblock
    /// updates write from now on (at most the cursor, which may have moved back meanwhile).
    pub(crate) fn set_recovery_durable(&self, sectors: u64) {
        self.durable_recovery_offset
            .set(sectors.min(self.recovery_offset.get()));
    }

    /// The member being rebuilt as the replacement of this one, if any.
    pub fn replacement(&self) -> Option<Rc<Member>> {
        self.replacement.borrow().clone()
    }

    /// Byte counts and latencies of the requests sent to this member.
    pub fn monitor(&self) -> &MemberMonitor {
        &self.monitor
    }

    pub fn state(&self) -> MemberState {
        self.state.get()
    }

    /// Member sectors already rebuilt (meaningful while `Rebuilding`).
    pub fn recovery_offset_sectors(&self) -> u64 {
        self.recovery_offset.get()
    }

    fn now_ns(&self) -> u64 {
        self.clock.borrow().as_ref().map_or(0, Executor::now_ns)
    }

    /// Records a read error; true when the member has now had more than the policy allows
    /// within its window.
    fn read_error_limit_exceeded(&self, now_ns: u64) -> bool {
        let Some(p) = self.failure_policy.get() else {
            return false;
        };
        if p.read_error_limit == 0 {
            return false;
        }
        let mut times = self.read_error_times.borrow_mut();
        times.push_back(now_ns);
        while times
            .front()
            .is_some_and(|&t| now_ns.saturating_sub(t) > p.read_error_window_ns)
        {
            times.pop_front();
        }
        // Bounded: only the last `limit + 1` matter.
        while times.len() > p.read_error_limit as usize + 1 {
            times.pop_front();
        }
        times.len() > p.read_error_limit as usize
    }

    /// Awaits a device request, giving up (`IoError::Timeout`, the request dropped) once it
    /// has taken longer than the policy's I/O timeout.
    pub(crate) async fn within_timeout<T>(
        &self,
        io: crate::block::IoFuture<'_, T>,
    ) -> Result<T, IoError> {
        let timeout_ns = match self.failure_policy.get() {
            Some(p) if p.io_timeout_ns > 0 => p.io_timeout_ns,
            _ => return io.await,
        };
        let Some(exec) = self.clock.borrow().clone() else {
            return io.await;
        };
        let mut io = io;
        let mut deadline = core::pin::pin!(exec.sleep(timeout_ns));
        let r = core::future::poll_fn(|cx| {
            if let core::task::Poll::Ready(r) = io.as_mut().poll(cx) {
                return core::task::Poll::Ready(r);
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return core::task::Poll::Ready(Err(IoError::Timeout));
            }
            core::task::Poll::Pending
        })
        .await;
        match r {
            Err(IoError::Timeout) => self.timed_out_at_ns.set(Some(exec.now_ns())),
            Ok(_) => self.timed_out_at_ns.set(None),
            Err(_) => {}
        }
        r
    }

    /// Whether this member's last I/O timed out less than `window_ns` ago.
    fn timed_out_within(&self, now_ns: u64, window_ns: u64) -> bool {
        self.timed_out_at_ns
            .get()
            .is_some_and(|t| now_ns.saturating_sub(t) <= window_ns)
    }

    pub fn counters(&self) -> MemberCounters {
        self.counters.get()
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.get()
    }

    /// This member's superblock as last written.
    pub fn superblock(&self) -> Superblock {
        self.superblock.borrow().clone()
    }

    /// Tests: change the superblock this member holds in memory (as one kept from an older
    /// update would be), without writing it.
    #[cfg(test)]
    pub(crate) fn edit_superblock_in_memory(&self, f: impl FnOnce(&mut Superblock)) {
        f(&mut self.superblock.borrow_mut())
    }

    pub(crate) fn data_offset(&self) -> u64 {
        self.superblock.borrow().data_offset_sectors
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut MemberCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Reads member data sectors (relative to the data offset). Under a failure policy, a
    /// read slower than the timeout, or one error too many within the window, answers
    /// `DeviceFailed`: the callers fail the member on that.
    pub(crate) async fn read_data(&self, sector: u64, buf: Vec<u8>) -> Result<Vec<u8>, IoError> {
        self.read_data_counted(sector, buf, true).await
    }

    /// As [`Self::read_data`], but a plain read error is not counted: for a fast path whose
    /// caller retries a failed read on the general path, which counts it once.
    pub(crate) async fn read_data_probe(
        &self,
        sector: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, IoError> {
        self.read_data_counted(sector, buf, false).await
    }

    async fn read_data_counted(
        &self,
        sector: u64,
        buf: Vec<u8>,
        count_errors: bool,
    ) -> Result<Vec<u8>, IoError> {
        let bytes = buf.len() as u64;
        let read = self.dev.read(self.data_offset() + sector, buf);
        self.read_counted(bytes, read, count_errors).await
    }

    /// As [`Self::read_data_probe`], into a slice of a larger buffer (no copy where the
    /// device supports it).
    async fn read_data_probe_into(&self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let bytes = buf.len() as u64;
        let read = self.dev.read_into(self.data_offset() + sector, buf);
        self.read_counted(bytes, read, false).await
    }

    async fn read_counted<T>(
        &self,
        bytes: u64,
        read: crate::block::IoFuture<'_, T>,
        count_errors: bool,
    ) -> Result<T, IoError> {
        let _busy = Busy::new(&self.inflight);
        self.count(|c| c.reads += 1);
        let started_ns = self.monitor.start();
        let r = self.within_timeout(read).await;
        self.monitor.finish(false, bytes, started_ns, r.is_ok());
        if matches!(r, Err(IoError::Timeout)) {
            log::warn!("{}: a read took longer than the I/O timeout", self.name);
            self.count(|c| c.read_errors += 1);
            return Err(IoError::DeviceFailed);
        }
        if r.is_err() && count_errors {
            self.count(|c| c.read_errors += 1);
            if self.read_error_limit_exceeded(self.now_ns()) {
                log::warn!("{}: too many read errors", self.name);
                return Err(IoError::DeviceFailed);
            }
        }
        r
    }

    pub(crate) async fn write_data(
        &self,
        sector: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<(), IoError> {
        let _busy = Busy::new(&self.inflight);
        self.count(|c| c.writes += 1);
        let (bytes, started_ns) = (data.len() as u64, self.monitor.start());
        // Taken before the write is awaited: a replacement that finishes meanwhile takes
        // the slot and must not miss this write.
        let replacement = self.replacement.borrow().clone();
        let r = self
            .within_timeout(
                self.dev
                    .write(self.data_offset() + sector, data.clone(), fua),
            )
            .await;
        self.monitor.finish(true, bytes, started_ns, r.is_ok());
        // A replacement gets what its original gets; if it cannot take it, it is dropped
        // (the original still holds the data, nothing is lost). Only marked here: the array
        // records it in the superblocks before it acknowledges the write
        // (`record_failed_replacements`).
        if let Some(rep) = replacement
            .filter(|m| matches!(m.state(), MemberState::Rebuilding | MemberState::Active))
            && rep
                .within_timeout(rep.dev.write(rep.data_offset() + sector, data, fua))
                .await
                .is_err()
        {
            log::error!("{}: replacement {} failed a write", self.name, rep.name);
            rep.count(|c| c.write_errors += 1);
            rep.state.set(MemberState::Faulty);
        }
        if let Err(e) = &r {
            if matches!(e, IoError::Timeout) {
                log::warn!("{}: a write took longer than the I/O timeout", self.name);
            }
            self.count(|c| c.write_errors += 1);
        }
        r
    }
}

struct Busy<'a>(&'a Cell<u32>);

impl<'a> Busy<'a> {
    fn new(c: &'a Cell<u32>) -> Self {
        c.set(c.get() + 1);
        Busy(c)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Copies that failed a read and are to be rewritten from a good copy.
struct RepairJob {
    array_sector: u64,
    sectors: u64,
    bad: Vec<(Rc<Member>, u64)>,
}

/// Counters of the array as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArrayCounters {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub errors: u64,
    /// Stripe cache lookups of the parity levels served from memory, and not.
    #[serde(default)]
    pub cache_hits: u64,
    #[serde(default)]
    pub cache_misses: u64,
}

/// An assembled array: itself a block device.
pub struct Array {
    exec: Executor,
    /// The name in the superblocks.
    md_name: String,
    /// The name it is served under when that differs (two arrays of one name on a server):
    /// set once, before it is served.
    served_name: core::cell::OnceCell<String>,
    layout: ArrayLayout,
    /// Whether any one member can fail without losing data.
    redundant: bool,
    /// Indexed by role (slot); `None` is a missing member. Members come and go while the
    /// array runs (failure, spare activation, add, remove).
    slots: RefCell<Vec<Option<Rc<Member>>>>,
    /// The array's own (dedicated) spares, and members failed out of their slot that were
    /// not removed yet.
    spares: RefCell<Vec<Rc<Member>>>,
    /// The array itself, for the background tasks it starts (empty when built with `new`).
    this: Weak<Array>,
    policy: Cell<ArrayPolicy>,
    /// Background-job runner state (see `background.rs`).
    jobs: JobControl,
    /// Array requests in flight (a low-priority rebuild yields to them).
    foreground: Cell<u32>,
    lock: RangeLock,
    meta: AsyncMutex<()>,
    /// Member failures whose record in the superblocks is still being written, and the
    /// requests waiting for that (see [`Array::failures_recorded`]).
    unrecorded_failures: Cell<u32>,
    failure_waiters: RefCell<Vec<core::task::Waker>>,
    read_policy: Cell<ReadPolicy>,
    rotor: Cell<usize>,
    /// True while `resync_offset` on disk is 0 (writes may be in flight: resync all).
    dirty_on_disk: Cell<bool>,
    /// md's partial parity log bits of a RAID5 that has one. The log is not kept here, so
    /// the superblocks record it only while they record the array clean: a crash of ours
    /// then leaves an array Linux sees as dirty without a log (a resync, or, degraded, a
    /// refusal without `--force`), never one whose log claims to close a write hole it
    /// does not. A clean stop records the log again. The metadata space stays md's.
    ppl_features: FeatureMap,
    /// Where the resync is (or resumes), in its units (see `resync.rs`).
    resync_cursor: Cell<u64>,
    /// True when the array was assembled from an unclean shutdown.
    needs_resync: Cell<bool>,
    counters: Cell<ArrayCounters>,
    /// Wall-clock seconds at executor time zero (the core has no wall clock of its own).
    wall_clock_base_s: Cell<u64>,
    /// The background job in progress (resync).
    job: Cell<Option<JobProgress>>,
    /// The parity kernels of the RAID 4/5/6 paths.
    parity: Cell<ParityEngine>,
    /// The check/repair job's report and controls.
    scrub: scrub::ScrubState,
    monitor: ArrayMonitor,
    /// Recently used stripe cells of the RAID 4/5/6 paths.
    stripe_cache: RefCell<stripe_cache::StripeCache>,
    /// The stripe cache budget asked for (the `stripe_cache` setting).
    stripe_cache_wanted: Cell<usize>,
    /// The most the driver's CacheManager lets this array's stripe cache hold (its share of
    /// the driver's cache size); the cache runs at the smaller of the two.
    stripe_cache_cap: Cell<usize>,
    /// Writes waiting to be gathered into full stripes (RAID 4/5/6, `gather.rs`).
    gather: RefCell<gather::Gather>,
    /// When the last stall was reported (see `stalled_by_timeouts`), to report each once.
    stall_reported_ns: Cell<Option<u64>>,
    /// A stall hit while a resync ran: the regions it had passed need another one.
    resync_again: Cell<bool>,
    /// For a group of a RAID 50/60: the outer array, which re-checks its health (and emits
    /// its events) when the group's changes.
    parent: RefCell<Weak<dyn BlockDevice>>,
}

/// Failures of array-wide operations (not of one block request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayError {
    /// Every remaining member failed while writing metadata.
    MetadataWrite(IoError),
    /// No such member slot.
    NoSuchMember(usize),
    /// A rebuild found no readable copy of the data it had to rebuild (member sector, in
    /// the member rebuilt).
    RebuildSourceUnreadable { sector: u64 },
    /// The array failed (more members lost than it tolerates) while a job ran.
    ArrayFailed,
}

impl fmt::Display for ArrayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArrayError::MetadataWrite(e) => write!(f, "could not write superblocks: {e}"),
            ArrayError::NoSuchMember(i) => write!(f, "no member in slot {i}"),
            ArrayError::RebuildSourceUnreadable { sector } => write!(
                f,
                "no readable copy of the data to rebuild at member sector {sector}"
            ),
            ArrayError::ArrayFailed => f.write_str("the array failed"),
        }
    }
}

impl Array {
    /// Builds an array from its geometry and members; `slots[i]` has role `i`.
    pub fn new(
        exec: Executor,
        name: String,
        layout: ArrayLayout,
        slots: Vec<Option<Rc<Member>>>,
    ) -> Self {
        Self::build(exec, name, layout, slots, Weak::new())
    }

    /// As [`Array::new`], for an array that starts background jobs (spare activation and
    /// rebuild after a failure) by itself.
    pub fn new_rc(
        exec: Executor,
        name: String,
        layout: ArrayLayout,
        slots: Vec<Option<Rc<Member>>>,
        spares: Vec<Rc<Member>>,
    ) -> Rc<Self> {
        Rc::new_cyclic(|this| {
            let a = Self::build(exec, name, layout, slots, this.clone());
            for s in spares {
                a.join(&s);
                a.spares.borrow_mut().push(s);
            }
            a
        })
    }

    fn build(
        exec: Executor,
        name: String,
        layout: ArrayLayout,
        slots: Vec<Option<Rc<Member>>>,
        this: Weak<Array>,
    ) -> Self {
        assert_eq!(
            layout.disk_count(),
            slots.len(),
            "one slot per layout member"
        );
        let n = slots.len();
        let redundant = n > 1
            && (0..n).all(|dead| {
                let alive: Vec<bool> = (0..n).map(|i| i != dead).collect();
                layout.survives(&alive)
            });
        // Where a resync resumes: RESYNC_DONE when clean, 0 when writes were in flight.
        let resync_from = slots
            .iter()
            .flatten()
            .filter(|m| m.state() == MemberState::Active)
            .map(|m| m.superblock.borrow().resync_offset_sectors)
            .min()
            .unwrap_or(RESYNC_DONE);
        let dirty = resync_from != RESYNC_DONE;
        let ppl_features = slots
            .iter()
            .flatten()
            .map(|m| m.superblock.borrow().features & (FeatureMap::PPL | FeatureMap::MULTIPLE_PPLS))
            .find(|f| !f.is_empty())
            .unwrap_or(FeatureMap::empty());
        for m in slots.iter().flatten() {
            m.monitor.set_clock(exec.clone());
        }
        let monitor = ArrayMonitor::new(exec.clone());
        let cache_cell_sectors = match &layout {
            ArrayLayout::Raid5(l) => l.chunk_sectors(),
            _ => 0,
        };
        let array = Array {
            exec,
            md_name: name,
            served_name: core::cell::OnceCell::new(),
            layout,
            redundant,
            slots: RefCell::new(slots),
            spares: RefCell::new(Vec::new()),
            this,
            policy: Cell::new(ArrayPolicy::default()),
            jobs: JobControl::default(),
            foreground: Cell::new(0),
            lock: RangeLock::new(),
            meta: AsyncMutex::new(()),
            unrecorded_failures: Cell::new(0),
            failure_waiters: RefCell::new(Vec::new()),
            read_policy: Cell::new(ReadPolicy::LeastOutstanding),
            rotor: Cell::new(0),
            dirty_on_disk: Cell::new(resync_from == 0),
            ppl_features,
            needs_resync: Cell::new(dirty),
            resync_cursor: Cell::new(if dirty { resync_from } else { 0 }),
            counters: Cell::new(ArrayCounters::default()),
            wall_clock_base_s: Cell::new(0),
            job: Cell::new(None),
            parity: Cell::new(ParityEngine::widest()),
            scrub: scrub::ScrubState::new(),
            monitor,
            stripe_cache: RefCell::new(stripe_cache::StripeCache::new(
                stripe_cache::DEFAULT_CACHE_BYTES,
                cache_cell_sectors,
            )),
            stripe_cache_wanted: Cell::new(stripe_cache::DEFAULT_CACHE_BYTES),
            stripe_cache_cap: Cell::new(usize::MAX),
            gather: RefCell::new(gather::Gather::default()),
            stall_reported_ns: Cell::new(None),
            resync_again: Cell::new(false),
            parent: RefCell::new(Weak::<Array>::new()),
        };
        // Until the platform says otherwise, time continues from the last update on disk.
        let last = array
            .slots
            .borrow()
            .iter()
            .flatten()
            .map(|m| m.superblock.borrow().utime.seconds())
            .max()
            .unwrap_or(0);
        array.wall_clock_base_s.set(last);
        for m in array.slots.borrow().iter().flatten() {
            array.join(m);
            if let Some(r) = m.replacement.borrow().as_ref() {
                array.join(r);
            }
            m.dev.stack_under(array.this.clone());
        }
        array
    }

    /// The outer array of a RAID 50/60 group.
    pub fn parent(&self) -> Option<Rc<dyn BlockDevice>> {
        self.parent.borrow().upgrade()
    }

    /// Gives a member joining the array its clock and failure policy.
    fn join(&self, member: &Rc<Member>) {
        *member.clock.borrow_mut() = Some(self.exec.clone());
        member
            .failure_policy
            .set(self.redundant.then_some(self.policy.get().failure));
    }

    /// Sets the wall-clock time (seconds since the Unix epoch) that executor time zero
    /// corresponds to; superblock update times are derived from it.
    pub fn set_wall_clock_base(&self, seconds: u64) {
        self.wall_clock_base_s.set(seconds);
    }

    /// Wall-clock seconds at executor time zero.
    pub fn wall_clock_base_s(&self) -> u64 {
        self.wall_clock_base_s.get()
    }

    /// Counters, latencies, rates and events of this array (`emit` records an event).
    pub fn monitor(&self) -> &ArrayMonitor {
        &self.monitor
    }

    fn wall_time(&self, now_ns: u64) -> MdTime {
        let micros = now_ns / 1_000;
        let seconds = self.wall_clock_base_s.get() + micros / 1_000_000;
        MdTime::from_parts(seconds & MdTime::SECONDS_MASK, (micros % 1_000_000) as u32)
            .unwrap_or(MdTime::from_seconds(seconds))
    }

    /// The name the array is known by: the one it is served under.
    pub fn name(&self) -> &str {
        self.served_name.get().unwrap_or(&self.md_name)
    }

    /// The name in its superblocks (`name` unless the server had to tell two apart).
    pub fn md_name(&self) -> &str {
        &self.md_name
    }

    /// Serves the array as `name` instead of its md name; once, before it is served.
    /// Whether it took.
    pub fn serve_as(&self, name: String) -> bool {
        self.served_name.set(name).is_ok()
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn layout(&self) -> &ArrayLayout {
        &self.layout
    }

    /// Whether any one member can fail without losing data.
    pub fn is_redundant(&self) -> bool {
        self.redundant
    }

    /// The members by slot (a snapshot: members come and go while the array runs).
    pub fn slots(&self) -> Vec<Option<Rc<Member>>> {
        self.slots.borrow().clone()
    }

    /// Spares, and failed members not yet removed.
    pub fn spares(&self) -> Vec<Rc<Member>> {
        self.spares.borrow().clone()
    }

    pub fn counters(&self) -> ArrayCounters {
        self.counters.get()
    }

    /// The parity engine the RAID 4/5/6 paths use.
    pub fn parity_engine(&self) -> ParityEngine {
        self.parity.get()
    }

    /// Replaces the parity engine (e.g. with the one `ParityEngine::select` picked).
    pub fn set_parity_engine(&self, engine: ParityEngine) {
        self.parity.set(engine);
    }

    pub fn read_policy(&self) -> ReadPolicy {
        self.read_policy.get()
    }

    pub fn set_read_policy(&self, policy: ReadPolicy) {
        self.read_policy.set(policy);
    }

    /// Whether the array came up after an unclean shutdown (mirrors may disagree on blocks
    /// written just before it).
    pub fn needs_resync(&self) -> bool {
        self.needs_resync.get()
    }

    /// Where the resync is, or resumes (array sectors; member sectors on the parity levels).
    pub(crate) fn resync_cursor(&self) -> u64 {
        self.resync_cursor.get()
    }

    pub(crate) fn set_resync_cursor(&self, at: u64) {
        self.resync_cursor.set(at);
    }

    /// The resync is done: every copy agrees.
    pub(crate) fn set_resynced(&self) {
        self.needs_resync.set(false);
    }

    /// Whether a stall hit while the resync ran (the regions it had passed need another
    /// one); cleared.
    pub(crate) fn take_resync_again(&self) -> bool {
        self.resync_again.replace(false)
    }

    /// Whether the superblocks record the array dirty (writes may have been in flight).
    pub(crate) fn is_dirty_on_disk(&self) -> bool {
        self.dirty_on_disk.get()
    }

    /// The background job running on this array, if any.
    pub fn job(&self) -> Option<JobProgress> {
        self.job.get().map(|mut j| {
            j.now_ns = self.exec.now_ns();
            j
        })
    }

    /// Records the progress of the job running (`None`: none runs).
    pub(crate) fn set_job(&self, job: Option<JobProgress>) {
        self.job.set(job);
    }

    /// The state of the background jobs, and who runs them.
    pub fn jobs(&self) -> &JobControl {
        &self.jobs
    }

    /// A job may be due: unless the jobs run already or are stopped, their runner starts
    /// them (an array no runner was given to runs none).
    pub(crate) fn kick_jobs(&self) {
        if self.jobs.running.get() || self.jobs.stop.get() {
            return;
        }
        let (Some(runner), Some(me)) = (self.jobs.runner(), self.this.upgrade()) else {
            return;
        };
        self.jobs.running.set(true);
        self.exec.spawn_detached(runner.run(me));
    }

    /// Asks the jobs to stop at the next region and waits until they did (their position
    /// is checkpointed).
    pub async fn stop_jobs(&self) {
        self.jobs.stop.set(true);
        if let Some(runner) = self.jobs.runner() {
            runner.stop_requested();
        }
        let _g = self.jobs.done.lock().await;
    }

    /// Array requests in flight (a low-priority job yields to them).
    pub(crate) fn foreground_requests(&self) -> u32 {
        self.foreground.get()
    }

    /// The lock a job takes over the range (copy levels: array sectors) or the stripes
    /// (parity levels) it works on.
    pub(crate) fn range_lock(&self) -> &RangeLock {
        &self.lock
    }

    /// Superblock fields shared by every member, from the first live member.
    pub fn superblock(&self) -> Option<Superblock> {
        self.live_members().next().map(|m| m.superblock())
    }

    pub(crate) fn alive(&self) -> Vec<bool> {
        self.slots
            .borrow()
            .iter()
            .map(|s| matches!(s, Some(m) if m.state() == MemberState::Active))
            .collect()
    }

    /// The health of the array, nesting included: a member that is a group array (RAID
    /// 50/60) counts as lost when the group failed, and a degraded group makes this array
    /// degraded. The one place health is computed; [`Self::health_state`] refines it.
    pub fn health(&self) -> Health {
        let mut group_degraded = false;
        let alive: Vec<bool> = self
            .slots
            .borrow()
            .iter()
            .map(|s| match s {
                Some(m) if m.state() == MemberState::Active => match m.dev.array_health() {
                    Some(HealthState::Failed) => false,
                    Some(HealthState::Degraded | HealthState::Rebuilding) => {
                        group_degraded = true;
                        true
                    }
                    _ => true,
                },
                _ => false,
            })
            .collect();
        if !self.layout.survives(&alive) {
            Health::Failed
        } else if alive.iter().all(|&a| a) && !group_degraded {
            Health::Optimal
        } else {
            Health::Degraded
        }
    }

    /// What status, stats, Prometheus and `raid monitor` report: [`Self::health`], with a
    /// degraded array shown as rebuilding when every redundancy it lacks, its own and its
    /// groups', is being rebuilt.
    pub fn health_state(&self) -> HealthState {
        match self.health() {
            Health::Optimal => return HealthState::Optimal,
            Health::Failed => return HealthState::Failed,
            Health::Degraded => {}
        }
        let slots = self.slots.borrow();
        let own_degraded = slots
            .iter()
            .any(|s| !matches!(s, Some(m) if m.state() == MemberState::Active));
        let own_rebuilding = self.job.get().is_some_and(|j| j.kind == JobKind::Rebuild);
        let group_degraded = slots
            .iter()
            .flatten()
            .filter_map(|m| m.dev.array_health())
            .any(|g| g == HealthState::Degraded);
        if (own_degraded && !own_rebuilding) || group_degraded {
            HealthState::Degraded
        } else {
            HealthState::Rebuilding
        }
    }

    /// Tells the monitor the health may have changed (it reports a change as an event) and,
    /// when it did, an outer array (RAID 50/60) that its group's did. Cheap: call it after
    /// anything that changes member states.
    pub fn check_health(&self) {
        let changed =
            self.monitor
                .observe_health(self.name(), self.wall_clock_base_s(), self.health());
        // A group's health is part of its outer array's.
        if changed && let Some(parent) = self.parent() {
            parent.lower_health_changed();
        }
    }

    /// The slot `member` holds in this array.
    pub fn slot_of(&self, member: &Member) -> Option<u32> {
        self.slots
            .borrow()
            .iter()
            .position(|s| {
                s.as_ref()
                    .is_some_and(|m| core::ptr::eq(m.as_ref(), member))
            })
            .map(|p| p as u32)
    }

    /// Members in sync, in slot order.
    fn live_members(&self) -> impl Iterator<Item = Rc<Member>> {
        let live: Vec<Rc<Member>> = self
            .slots
            .borrow()
            .iter()
            .flatten()
            .filter(|m| m.state() == MemberState::Active)
            .cloned()
            .collect();
        live.into_iter()
    }

    /// Every member that carries the array's superblock: in-sync and rebuilding members,
    /// and spares.
    fn superblock_members(&self) -> Vec<Rc<Member>> {
        let slots = self.slots.borrow();
        let spares = self.spares.borrow();
        let in_slots: Vec<Rc<Member>> = slots
            .iter()
            .flatten()
            .filter(|m| matches!(m.state(), MemberState::Active | MemberState::Rebuilding))
            .cloned()
            .collect();
        let replacements: Vec<Rc<Member>> = in_slots
            .iter()
            .filter_map(|m| m.replacement.borrow().clone())
            .filter(|r| r.state() == MemberState::Rebuilding)
            .collect();
        in_slots
            .into_iter()
            .chain(replacements)
            .chain(
                spares
                    .iter()
                    .filter(|m| m.state() == MemberState::Spare)
                    .cloned(),
            )
            .collect()
    }

    /// The member in `slot` if it takes writes: in sync, or being rebuilt.
    pub(crate) fn member(&self, slot: usize) -> Option<Rc<Member>> {
        self.slots
            .borrow()
            .get(slot)
            .and_then(Option::as_ref)
            .filter(|m| matches!(m.state(), MemberState::Active | MemberState::Rebuilding))
            .cloned()
    }

    /// The member in `slot` if its member sectors `[at, at + sectors)` hold valid data: in
    /// sync, or rebuilt past them.
    pub(crate) fn readable(&self, slot: usize, at: u64, sectors: u64) -> Option<Rc<Member>> {
        self.member(slot)
            .filter(|m| m.state() == MemberState::Active || at + sectors <= m.recovery_offset.get())
    }

    fn count(&self, f: impl FnOnce(&mut ArrayCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Splits `[sector, sector + sectors)` into extents that each map contiguously.
    pub(crate) fn extents(&self, sector: u64, sectors: u64) -> Vec<(u64, Extent)> {
        let mut out = Vec::new();
        let end = sector + sectors;
        let mut s = sector;
        while s < end {
            let mut ext = self
                .layout
                .map(s)
                .expect("a checked request lies inside the array");
            assert!(ext.sectors > 0, "layout returned an empty extent");
            ext.sectors = ext.sectors.min(end - s);
            let len = ext.sectors;
            out.push((s, ext));
            s += len;
        }
        out
    }

    /// Orders the copies of the extent at `array_sector` for a read: the preferred one
    /// first. Where a resync is still to come (after an unclean shutdown the copies may
    /// differ: a write that reached some of them), the first readable copy, which is the
    /// one the resync keeps: as md's read balancing, so that two reads of a block never
    /// return two versions of it.
    fn read_order(&self, array_sector: u64, ext: &Extent) -> Vec<(Rc<Member>, u64)> {
        let mut live: Vec<(Rc<Member>, u64)> = ext
            .copies
            .iter()
            .filter_map(|c| {
                self.readable(c.disk_index, c.sector, ext.sectors)
                    .map(|m| (m, c.sector))
            })
            .collect();
        // The resync of the copy levels counts in array sectors.
        let unsynced =
            self.needs_resync.get() && array_sector + ext.sectors > self.resync_cursor.get();
        if live.len() > 1 && !unsynced {
            let turn = self.rotor.get();
            self.rotor.set(turn.wrapping_add(1));
            let start = match self.read_policy.get() {
                ReadPolicy::RoundRobin => turn % live.len(),
                ReadPolicy::LeastOutstanding => {
                    let n = live.len();
                    (0..n)
                        .map(|i| (turn + i) % n)
                        .min_by_key(|&i| live[i].0.inflight())
                        .unwrap_or(0)
                }
            };
            live.rotate_left(start);
        }
        live
    }

    /// Reads one extent from the best copy, falling back to the others, and to a
    /// sector-by-sector read when every copy fails somewhere in the extent. Returns the data
    /// and the copies that need rewriting (done by the caller once its shared lock is gone).
    async fn read_extent(
        &self,
        array_sector: u64,
        ext: Extent,
        buf: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<RepairJob>), IoError> {
        let bytes = ext.sectors as usize * SECTOR_BYTES;
        assert_eq!(buf.len(), bytes, "extent buffer matches the extent");
        // The caller's buffer serves the first attempt; a retry (error path) gets a new one.
        let mut first = Some(buf);
        let mut failed: Vec<(Rc<Member>, u64)> = Vec::new();
        for (member, sector) in self.read_order(array_sector, &ext) {
            let buf = first.take().unwrap_or_else(|| vec![0u8; bytes]);
            match member.read_data(sector, buf).await {
                Ok(data) => {
                    let mut jobs = Vec::new();
                    if !failed.is_empty() && self.redundant {
                        jobs.push(RepairJob {
                            array_sector,
                            sectors: ext.sectors,
                            bad: failed,
                        });
                    }
                    return Ok((data, jobs));
                }
                Err(e) => {
                    log::warn!(
                        "{}: read error on {} at member sector {sector}: {e}",
                        self.name(),
                        member.name
                    );
                    if matches!(e, IoError::DeviceFailed) && self.redundant {
                        self.fail_member_rc(&member).await;
                    } else {
                        failed.push((member, sector));
                    }
                }
            }
        }
        if failed.len() < 2 || ext.sectors == 1 {
            return Err(IoError::DataLost {
                sector: array_sector,
            });
        }
        // Every copy failed somewhere: bad sectors on different copies need not overlap.
        let mut data = vec![0u8; bytes];
        let mut jobs = Vec::new();
        for i in 0..ext.sectors {
            let mut bad = Vec::new();
            let mut found = false;
            for (member, sector) in &failed {
                if member.state() != MemberState::Active {
                    continue;
                }
                match member.read_data(sector + i, vec![0u8; SECTOR_BYTES]).await {
                    Ok(d) => {
                        let off = i as usize * SECTOR_BYTES;
                        data[off..off + SECTOR_BYTES].copy_from_slice(&d);
                        found = true;
                        break;
                    }
                    Err(IoError::DeviceFailed) => self.fail_member_rc(member).await,
                    Err(_) => bad.push((member.clone(), sector + i)),
                }
            }
            if !found {
                return Err(IoError::DataLost {
                    sector: array_sector + i,
                });
            }
            if !bad.is_empty() {
                jobs.push(RepairJob {
                    array_sector: array_sector + i,
                    sectors: 1,
                    bad,
                });
            }
        }
        Ok((data, jobs))
    }

    /// Reads one extent into `buf`, a part of the reply buffer: the preferred copy straight
    /// into it; on an error the general path ([`Self::read_extent`]: other copies, sector by
    /// sector, error counting) takes over and its data is copied in.
    async fn read_extent_into(
        &self,
        array_sector: u64,
        ext: Extent,
        buf: &mut [u8],
    ) -> Result<Vec<RepairJob>, IoError> {
        assert_eq!(
            buf.len(),
            ext.sectors as usize * SECTOR_BYTES,
            "extent buffer matches the extent"
        );
        if let Some((member, sector)) = self.read_order(array_sector, &ext).into_iter().next() {
            match member.read_data_probe_into(sector, buf).await {
                Ok(()) => return Ok(Vec::new()),
                // Timed out or over its error limit: not asked again.
                Err(IoError::DeviceFailed) => {
                    log::warn!(
                        "{}: {} failed a read at member sector {sector}",
                        self.name(),
                        member.name
                    );
                    if !self.redundant {
                        return Err(IoError::DataLost {
                            sector: array_sector,
                        });
                    }
                    self.fail_member_rc(&member).await;
                }
                Err(_) => {}
            }
        }
        let (data, jobs) = self
            .read_extent(array_sector, ext, vec![0u8; buf.len()])
            .await?;
        buf.copy_from_slice(&data);
        Ok(jobs)
    }

    /// Rewrites the copies that failed a read with good data from another copy, under an
    /// exclusive lock so that no newer write is overwritten. A member that cannot take the
    /// rewrite is failed.
    async fn repair(&self, job: RepairJob) {
        let end = job.array_sector + job.sectors;
        let _g = self.lock.lock(job.array_sector, end).await;
        let Some(ext) = self.layout.map(job.array_sector) else {
            return;
        };
        let bytes = job.sectors as usize * SECTOR_BYTES;
        let good = ext
            .copies
            .iter()
            .filter_map(|c| {
                self.readable(c.disk_index, c.sector, job.sectors)
                    .map(|m| (m, c.sector))
            })
            .filter(|(m, _)| !job.bad.iter().any(|(b, _)| Rc::ptr_eq(b, m)));
        let mut data = None;
        for (member, sector) in good {
            if let Ok(d) = member.read_data(sector, vec![0u8; bytes]).await {
                data = Some(Bytes::from(d));
                break;
            }
        }
        let Some(data) = data else { return };
        for (member, sector) in job.bad {
            if member.state() != MemberState::Active {
                continue;
            }
            match member.write_data(sector, data.clone(), false).await {
                Ok(()) => {
                    member.count(|c| c.corrected_sectors += job.sectors);
                    log::info!(
                        "{}: corrected {} sectors on {} at member sector {sector}",
                        self.name(),
                        job.sectors,
                        member.name
                    );
                }
                // No room to rewrite it: the copy stays bad, the member stays in.
                Err(e) if !e.fails_member() => {}
                Err(_) => self.fail_member_rc(&member).await,
            }
        }
    }

    async fn do_read(&self, sector: u64, mut buf: Vec<u8>) -> Result<Vec<u8>, IoError> {
        let _busy = Busy::new(&self.foreground);
        if let ArrayLayout::Raid5(l) = &self.layout {
            return self.parity_read(l, sector, buf).await;
        }
        let sectors = check_range(sector, buf.len(), self.capacity_sectors())?;
        self.count(|c| {
            c.reads += 1;
            c.read_bytes += buf.len() as u64;
        });
        if sectors == 0 {
            return Ok(buf);
        }
        let guard = self.lock.lock_shared(sector, sector + sectors).await;
        let mut extents = self.extents(sector, sectors);
        if extents.len() == 1 {
            // The common case: one member read straight into the caller's buffer.
            let (s, ext) = extents.pop().expect("one extent");
            let result = self.read_extent(s, ext, buf).await;
            drop(guard);
            return match result {
                Ok((data, repairs)) => {
                    for job in repairs {
                        self.repair(job).await;
                    }
                    Ok(data)
                }
                Err(e) => {
                    self.count(|c| c.errors += 1);
                    Err(e)
                }
            };
        }
        // Each extent reads straight into its own part of the caller's buffer: no copy, no
        // zero-fill.
        let mut first_error = None;
        let mut repairs = Vec::new();
        {
            let mut rest: &mut [u8] = &mut buf;
            let mut futures = Vec::with_capacity(extents.len());
            for (s, ext) in extents {
                let (piece, after) = rest.split_at_mut(ext.sectors as usize * SECTOR_BYTES);
                rest = after;
                futures.push(self.read_extent_into(s, ext, piece));
            }
            assert!(rest.is_empty(), "extents cover the request");
            for result in join_all(futures).await {
                match result {
                    Ok(jobs) => repairs.extend(jobs),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        // Repairs take the range exclusively: only after this read let go of it.
        drop(guard);
        for job in repairs {
            self.repair(job).await;
        }
        match first_error {
            None => Ok(buf),
            Some(e) => {
                self.count(|c| c.errors += 1);
                Err(e)
            }
        }
    }

    async fn do_write(&self, sector: u64, data: Bytes, fua: bool) -> Result<(), IoError> {
        let r = self.write_members(sector, data, fua).await;
        // A replacement that failed this write missed it: that is on disk before the ack.
        self.record_failed_replacements().await;
        // So is a failure this write skipped a member for.
        self.failures_recorded().await;
        r
    }

    /// `count` member failures are recorded (or the attempt is over): wakes the requests
    /// waiting in [`Array::failures_recorded`] once none is left.
    fn failures_done(&self, count: u32) {
        self.unrecorded_failures
            .set(self.unrecorded_failures.get() - count);
        if self.unrecorded_failures.get() == 0 {
            let waiters = core::mem::take(&mut *self.failure_waiters.borrow_mut());
            for waker in waiters {
                waker.wake();
            }
        }
    }

    /// Waits until every member failure so far is recorded in the superblocks (or the
    /// attempt is over). A member is marked faulty at once and its record written after;
    /// a write that meanwhile skipped it must not be acknowledged before that record is on
    /// disk, or a crash leaves the member's old record of being in sync and assembly takes
    /// its stale copy (md holds such writes back the same way while `MD_SB_CHANGE_PENDING`).
    async fn failures_recorded(&self) {
        core::future::poll_fn(|cx| {
            if self.unrecorded_failures.get() == 0 {
                core::task::Poll::Ready(())
            } else {
                self.failure_waiters.borrow_mut().push(cx.waker().clone());
                core::task::Poll::Pending
            }
        })
        .await;
    }

    async fn write_members(&self, sector: u64, data: Bytes, fua: bool) -> Result<(), IoError> {
        let _busy = Busy::new(&self.foreground);
        if let ArrayLayout::Raid5(l) = &self.layout {
            return self.parity_write(l, sector, data, fua).await;
        }
        let sectors = check_range(sector, data.len(), self.capacity_sectors())?;
        self.count(|c| {
            c.writes += 1;
            c.write_bytes += data.len() as u64;
        });
        if sectors == 0 {
            return Ok(());
        }
        let _g = self.lock.lock(sector, sector + sectors).await;
        self.mark_dirty().await?;
        let extents = self.extents(sector, sectors);
        let mut jobs = Vec::new();
        for (s, ext) in &extents {
            let off = ((s - sector) as usize) * SECTOR_BYTES;
            let piece = data.slice(off..off + ext.sectors as usize * SECTOR_BYTES);
            for copy in &ext.copies {
                if let Some(member) = self.member(copy.disk_index) {
                    let piece = piece.clone();
                    let at = copy.sector;
                    let extent_start = *s;
                    jobs.push(async move {
                        let r = member.write_data(at, piece, fua).await;
                        (extent_start, member, r)
                    });
                }
            }
        }
        let results = join_all(jobs).await;
        let mut written: Vec<u64> = Vec::new();
        let mut failed: Vec<Rc<Member>> = Vec::new();
        let mut no_space = false;
        for (extent_start, member, r) in results {
            match r {
                Ok(()) => written.push(extent_start),
                Err(e) if !e.fails_member() => {
                    log::warn!("{}: {} has no space for a write", self.name(), member.name);
                    no_space = true;
                }
                Err(e) => {
                    log::warn!("{}: write error on {}: {e}", self.name(), member.name);
                    if !failed.iter().any(|f| Rc::ptr_eq(f, &member)) {
                        failed.push(member);
                    }
                }
            }
        }
        // The failure is on disk before the write is acknowledged: after a crash, assembly
        // must never prefer the member that missed this write.
        if self.redundant {
            for member in &failed {
                self.fail_member_rc(member).await;
            }
            if Self::kept_after_failure(&failed) {
                self.count(|c| c.errors += 1);
                return Err(IoError::Timeout);
            }
        }
        if no_space {
            // Some copies may have it and others not; the resync makes them agree.
            self.count(|c| c.errors += 1);
            self.copies_may_differ(sector);
            return Err(IoError::NoSpace);
        }
        let lost = extents.iter().find(|(s, _)| !written.contains(s));
        match lost {
            None => Ok(()),
            Some((s, _)) => {
                self.count(|c| c.errors += 1);
                Err(IoError::DataLost { sector: *s })
            }
        }
    }

    /// A write that was refused for want of space (not acknowledged) may have reached some
    /// members and not others, so from `resync_from` (in the resync's unit: array sectors,
    /// member sectors on the parity levels) the copies or the parity may disagree with the
    /// data. The members stay in; a resync from there makes them agree again, at once if
    /// there is room by then, else when the jobs next start (recorded at a clean stop,
    /// like an unclean shutdown's). Until it is done a parity array does not trust its
    /// parity for a degraded read.
    fn copies_may_differ(&self, resync_from: u64) {
        if !self.redundant {
            return;
        }
        let from = if self.needs_resync.get() {
            self.resync_cursor.get().min(resync_from)
        } else {
            resync_from
        };
        self.resync_cursor.set(from);
        self.needs_resync.set(true);
        self.kick_jobs();
    }

    async fn do_flush(&self) -> Result<(), IoError> {
        self.count(|c| c.flushes += 1);
        let members: Vec<Rc<Member>> = self
            .slots
            .borrow()
            .iter()
            .flatten()
            .filter(|m| matches!(m.state(), MemberState::Active | MemberState::Rebuilding))
            .cloned()
            .collect();
        if members.is_empty() {
            return Err(IoError::DeviceFailed);
        }
        let results = join_all(
            members
                .iter()
                .map(|m| async move { m.within_timeout(m.dev.flush()).await })
                .collect(),
        )
        .await;
        let mut any_error = None;
        for (member, r) in members.iter().zip(results) {
            if let Err(e) = r {
                log::warn!("{}: flush failed on {}: {e}", self.name(), member.name);
                if !e.fails_member() {
                    // Some file systems report a full disk only at fsync.
                    any_error = Some(e);
                    continue;
                }
                if self.redundant {
                    self.fail_member_rc(member).await;
                }
                // Not failed (not redundant, or kept through a stall): its writes may not
                // be durable, so neither is the flush.
                if member.state() != MemberState::Faulty {
                    any_error = Some(e);
                }
            }
        }
        // Durable means durable after a crash too: with every member failure recorded.
        self.failures_recorded().await;
        match any_error {
            Some(e) => Err(e),
            None if self.health() == Health::Failed => Err(IoError::DeviceFailed),
            None => Ok(()),
        }
    }

    async fn do_discard(&self, sector: u64, sectors: u64) -> Result<(), IoError> {
        check_sectors(sector, sectors, self.capacity_sectors())?;
        self.count(|c| c.discards += 1);
        if sectors == 0 {
            return Ok(());
        }
        if matches!(self.layout, ArrayLayout::Raid5(_)) {
            // Discarding a data chunk would leave its stripe's parity matching other content
            // (members need not read back zeros), and a discard promises nothing: do nothing.
            return Ok(());
        }
        let _g = self.lock.lock(sector, sector + sectors).await;
        // Coalesce the member ranges so that a large discard is one request per member run.
        let mut runs: Vec<(usize, u64, u64)> = Vec::new();
        for (_, ext) in self.extents(sector, sectors) {
            for c in &ext.copies {
                match runs
                    .iter_mut()
                    .rev()
                    .find(|(d, s, n)| *d == c.disk_index && *s + *n == c.sector)
                {
                    Some(run) => run.2 += ext.sectors,
                    None => runs.push((c.disk_index, c.sector, ext.sectors)),
                }
            }
        }
        let jobs: Vec<_> = runs
            .into_iter()
            .filter_map(|(d, s, n)| {
                self.member(d).map(|m| async move {
                    let at = m.data_offset() + s;
                    // Under the I/O timeout as every member request: a silent member must
                    // not hold this range's lock (and every request behind it) for ever.
                    m.within_timeout(m.dev.discard(at, n)).await
                })
            })
            .collect();
        // A discard promises nothing about content, so a member that cannot discard loses
        // nothing; it is not failed for it.
        for r in join_all(jobs).await {
            if let Err(e) = r {
                log::debug!("{}: discard not done on a member: {e}", self.name());
            }
        }
        Ok(())
    }

    /// Whether failing `members` for their timed-out I/O would be wrong because the array
    /// stalled: the members whose I/O timed out within the last timeout period are more than
    /// the level tolerates, so the cause is shared (a controller, a bus, the host) and failing
    /// them would fail the array, and persist that, for a hiccup. Then nothing is failed; the
    /// stall is reported (once per timeout period) and the array is marked for a resync, since
    /// the writes that timed out may have landed on some members and not on others. A member
    /// that did not time out (an I/O error of its own) is never a stall.
    fn stalled_by_timeouts(&self, members: &[Rc<Member>]) -> bool {
        let window_ns = self.policy.get().failure.io_timeout_ns;
        let now_ns = self.exec.now_ns();
        if window_ns == 0
            || !self.redundant
            || !members
                .iter()
                .any(|m| m.timed_out_within(now_ns, window_ns))
        {
            return false;
        }
        let slots = self.slots.borrow();
        let stalled: Vec<&Rc<Member>> = slots
            .iter()
            .flatten()
            .filter(|m| m.state() != MemberState::Faulty && m.timed_out_within(now_ns, window_ns))
            .collect();
        let alive: Vec<bool> = slots
            .iter()
            .map(|s| {
                matches!(s, Some(m) if m.state() == MemberState::Active
                    && !m.timed_out_within(now_ns, window_ns))
            })
            .collect();
        if self.layout.survives(&alive) {
            return false;
        }
        let count = stalled.len() as u32;
        drop(slots);
        let reported = self
            .stall_reported_ns
            .get()
            .is_some_and(|t| now_ns.saturating_sub(t) < window_ns);
        if !reported {
            self.stall_reported_ns.set(Some(now_ns));
            log::error!(
                "{}: stalled: I/O to {count} members timed out at once, more than the level \
                 tolerates; no member failed, the I/O gets an error, a resync is due",
                self.name()
            );
            self.monitor.emit(
                self.name(),
                self.wall_clock_base_s(),
                Event::ArrayStalled { members: count },
            );
        }
        self.resync_after_stall();
        true
    }

    /// After a stall: writes may have reached some members and not others (mirrors that
    /// disagree, parity that matches neither). Writes use reconstruct-write from now on, and
    /// the next resync (at the next start, as after a crash, or the next background job run)
    /// covers the whole array.
    fn resync_after_stall(&self) {
        if self.job.get().is_some_and(|j| j.kind == JobKind::Resync) {
            self.resync_again.set(true);
            return;
        }
        self.needs_resync.set(true);
        self.resync_cursor.set(0);
    }

    /// Of `failed` (members an I/O failed on, each passed to `fail_member_rc`), whether one
    /// is still in the array: the array stalled, and what it missed is not on it.
    fn kept_after_failure(failed: &[Rc<Member>]) -> bool {
        failed.iter().any(|m| m.state() != MemberState::Faulty)
    }

    /// Marks the member in `slot` faulty and records it in the superblocks.
    pub async fn fail_member(&self, slot: usize) -> Result<(), ArrayError> {
        let member = self
            .slots
            .borrow()
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or(ArrayError::NoSuchMember(slot))?
            .clone();
        self.fail_member_rc(&member).await;
        Ok(())
    }

    pub(crate) async fn fail_member_rc(&self, member: &Rc<Member>) {
        if member.state() == MemberState::Faulty {
            // Failed by another request, whose record may still be in flight.
            self.failures_recorded().await;
            return;
        }
        if self.stalled_by_timeouts(core::slice::from_ref(member)) {
            // Kept: callers see the member still in and return an error for the I/O.
            return;
        }
        self.unrecorded_failures
            .set(self.unrecorded_failures.get() + 1);
        member.state.set(MemberState::Faulty);
        self.stripe_cache.borrow_mut().clear();
        log::error!("{}: member {} failed", self.name(), member.name);
        // Its replacement, if one is being built, takes the slot at once (no await since
        // the failure): it has every write so far, and takes the next ones itself.
        let replacement = member.replacement.borrow_mut().take();
        if let Some(rep) = replacement.filter(|r| r.state() == MemberState::Rebuilding) {
            let mut slots = self.slots.borrow_mut();
            if let Some(slot) = slots
                .iter()
                .position(|m| m.as_ref().is_some_and(|m| Rc::ptr_eq(m, member)))
            {
                rep.is_replacement.set(false);
                slots[slot] = Some(rep.clone());
                drop(slots);
                self.spares.borrow_mut().push(member.clone());
                log::info!(
                    "{}: replacement {} takes slot {slot}",
                    self.name(),
                    rep.name
                );
            }
        }
        let dev_number = member.superblock.borrow().dev_number;
        let _ = self
            .update_superblocks(|sb| {
                let _ = sb.set_role(dev_number, DeviceRole::Faulty);
            })
            .await;
        self.failures_done(1);
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::MemberFailed {
                slot: self.slot_of(member).unwrap_or(u32::MAX),
                member: member.name.clone(),
            },
        );
        self.check_health();
        // Only once the failure is on disk: a spare may take the slot.
        self.kick_jobs();
    }

    /// First write after a clean state: record on disk that the array is dirty, so that an
    /// unclean shutdown is detected at the next assembly.
    pub(crate) async fn mark_dirty(&self) -> Result<(), IoError> {
        if self.dirty_on_disk.get() || !self.redundant {
            return Ok(());
        }
        // Set first: a resync checkpoint that runs meanwhile must not record a position.
        self.dirty_on_disk.set(true);
        if self
            .update_superblocks(|sb| sb.resync_offset_sectors = 0)
            .await
            .is_err()
        {
            self.dirty_on_disk.set(false);
            return Err(IoError::DeviceFailed);
        }
        Ok(())
    }

    /// Stops the background jobs (they checkpoint their position) and records a clean
    /// state (everything flushed, mirrors in sync) in the superblocks. A resync that has
    /// not finished is recorded at the position it reached, so the next start resumes it.
    pub async fn mark_clean(&self) -> Result<(), ArrayError> {
        self.stop_jobs().await;
        self.do_flush().await.map_err(ArrayError::MetadataWrite)?;
        if self.needs_resync.get() {
            let cursor = self.resync_cursor.get();
            self.update_superblocks(|sb| sb.resync_offset_sectors = cursor)
                .await?;
            self.dirty_on_disk.set(cursor == 0);
            return Ok(());
        }
        self.update_superblocks(|sb| sb.resync_offset_sectors = RESYNC_DONE)
            .await?;
        self.dirty_on_disk.set(false);
        Ok(())
    }

    /// Flushes every member that takes writes; a member that fails the flush is failed.
    pub(crate) async fn flush_members(&self) -> Result<(), IoError> {
        self.do_flush().await
    }

    /// Applies `change` to every live member's superblock, bumps `events`, and writes them
    /// all durably. A member that fails the write is failed in turn (and the update redone).
    pub async fn update_superblocks(
        &self,
        change: impl Fn(&mut Superblock),
    ) -> Result<(), ArrayError> {
        let _meta = self.meta.lock().await;
        let now = self.exec.now_ns();
        // Members this update failed because their superblock write failed: recorded by
        // the retry below, which requests that skip them wait for (as for `fail_member_rc`).
        let mut failed_here = 0;
        loop {
            let members: Vec<Rc<Member>> = self.superblock_members();
            if !members.iter().any(|m| m.state() == MemberState::Active) {
                self.failures_done(failed_here);
                return Err(ArrayError::MetadataWrite(IoError::DeviceFailed));
            }
            let events = members
                .iter()
                .map(|m| m.superblock.borrow().events)
                .max()
                .unwrap_or(0)
                + 1;
            // Orion's record rides along with every update (see `persist.rs`).
            let array_uuid = members[0].superblock.borrow().array_uuid;
            let record = Bytes::from(self.extension_record(array_uuid, events).encode());
            // The role table is rebuilt from what is here, as md does: every device that is
            // not a live member (failed, or absent since assembly) is recorded faulty, so it
            // can never come back as fresh, even one event behind.
            let live: Vec<(u32, u16)> = self
                .slots
                .borrow()
                .iter()
                .enumerate()
                .filter_map(|(slot, m)| m.as_ref().map(|m| (slot, m)))
                .filter(|(_, m)| matches!(m.state(), MemberState::Active | MemberState::Rebuilding))
                .flat_map(|(slot, m)| {
                    let rep = m
                        .replacement
                        .borrow()
                        .clone()
                        .filter(|r| r.state() == MemberState::Rebuilding)
                        .map(|r| (r.superblock.borrow().dev_number, slot as u16));
                    core::iter::once((m.superblock.borrow().dev_number, slot as u16)).chain(rep)
                })
                .collect();
            let spares: Vec<u32> = members
                .iter()
                .filter(|m| m.state() == MemberState::Spare)
                .map(|m| m.superblock.borrow().dev_number)
                .collect();
            let table_len = members
                .iter()
                .map(|m| {
                    let sb = m.superblock.borrow();
                    sb.max_dev().max(sb.dev_number + 1)
                })
                .max()
                .unwrap_or(0);
            // One table for every member (as md writes the array's view to each): an entry
            // no member holds stays a spare entry only where every member's table says so,
            // so that members written by one update never disagree on the roles.
            let changed: Vec<Superblock> = members
                .iter()
                .map(|m| {
                    let mut sb = m.superblock.borrow().clone();
                    change(&mut sb);
                    sb
                })
                .collect();
            let unused_spare: Vec<u32> = (0..table_len)
                .filter(|&d| changed.iter().all(|sb| sb.role_of(d) == DeviceRole::Spare))
                .collect();
            let writes: Vec<_> = members
                .iter()
                .zip(changed)
                .map(|(m, mut sb)| {
                    if !self.ppl_features.is_empty() {
                        if sb.resync_offset_sectors == RESYNC_DONE {
                            sb.features |= self.ppl_features;
                        } else {
                            sb.features -= self.ppl_features;
                        }
                    }
                    for d in 0..table_len {
                        let role = match live.iter().find(|(dev, _)| *dev == d) {
                            Some(&(_, slot)) => DeviceRole::Active(slot),
                            None if spares.contains(&d) => DeviceRole::Spare,
                            // A spare holds no data: an unused or spare entry may stay one.
                            None if unused_spare.contains(&d) => DeviceRole::Spare,
                            None => DeviceRole::Faulty,
                        };
                        // Inside the limits: every number belongs to a member's superblock.
                        let _ = sb.set_role(d, role);
                    }
                    // Per member: how far a rebuild has come.
                    if m.state() == MemberState::Rebuilding && !m.in_sync_pending.get() {
                        sb.features |= FeatureMap::RECOVERY_OFFSET;
                        sb.recovery_offset_sectors =
                            m.durable_recovery_offset.get().min(m.recovery_offset.get());
                    } else {
                        sb.features -= FeatureMap::RECOVERY_OFFSET;
                        sb.recovery_offset_sectors = 0;
                    }
                    if m.is_replacement.get() {
                        sb.features |= FeatureMap::REPLACEMENT;
                    } else {
                        sb.features -= FeatureMap::REPLACEMENT;
                    }
                    sb.events = events;
                    sb.touch(self.wall_time(now));
                    let bytes = Bytes::from(sb.encode());
                    let m = m.clone();
                    let record = &record;
                    async move {
                        let r = m
                            .within_timeout(m.dev.write(SUPERBLOCK_SECTOR, bytes, true))
                            .await;
                        if r.is_ok() {
                            self.write_extension(&m, &sb, record).await;
                        }
                        (m, sb, r)
                    }
                })
                .collect();
            let results = join_all(writes).await;
            let timed_out: Vec<Rc<Member>> = results
                .iter()
                .filter(|(_, _, r)| matches!(r, Err(IoError::Timeout)))
                .map(|(m, _, _)| m.clone())
                .collect();
            // A stall is not a reason to fail members: the update is given up instead (the
            // members it reached are one event ahead, which md's assembly tolerates).
            let stalled = !timed_out.is_empty() && self.stalled_by_timeouts(&timed_out);
            let mut retry = false;
            for (m, sb, r) in results {
                match r {
                    Ok(()) => *m.superblock.borrow_mut() = sb,
                    Err(IoError::Timeout) if stalled => {
                        log::error!("{}: superblock write timed out on {}", self.name(), m.name);
                    }
                    Err(e) => {
                        log::error!(
                            "{}: superblock write failed on {}: {e}",
                            self.name(),
                            m.name
                        );
                        self.unrecorded_failures
                            .set(self.unrecorded_failures.get() + 1);
                        failed_here += 1;
                        m.state.set(MemberState::Faulty);
                        self.monitor.emit(
                            self.name(),
                            self.wall_clock_base_s(),
                            Event::MemberFailed {
                                slot: self.slot_of(&m).unwrap_or(u32::MAX),
                                member: m.name.clone(),
                            },
                        );
                        self.check_health();
                        self.stripe_cache.borrow_mut().clear();
                        retry = true;
                    }
                }
            }
            if stalled {
                // The attempt is over: requests waiting for the record must not wait forever.
                self.failures_done(failed_here);
                return Err(ArrayError::MetadataWrite(IoError::Timeout));
            }
            if !retry {
                if failed_here > 0 {
                    self.failures_done(failed_here);
                    // The failure is on disk now: a spare may take the slot.
                    self.kick_jobs();
                }
                return Ok(());
            }
        }
    }
}

// Every entry point is timed and counted by the array's monitor, once, here.
impl BlockDevice for Array {
    fn capacity_sectors(&self) -> u64 {
        self.layout.array_sectors()
    }

    fn read(&self, sector: u64, buf: Vec<u8>) -> crate::block::IoFuture<'_, Vec<u8>> {
        let bytes = buf.len() as u64;
        let request = self.do_read(sector, buf);
        alloc::boxed::Box::pin(self.monitor.timed(OpKind::Read, bytes, request))
    }

    fn write(&self, sector: u64, data: Bytes, fua: bool) -> crate::block::IoFuture<'_, ()> {
        let bytes = data.len() as u64;
        let request = self.do_write(sector, data, fua);
        alloc::boxed::Box::pin(self.monitor.timed(OpKind::Write, bytes, request))
    }

    fn flush(&self) -> crate::block::IoFuture<'_, ()> {
        alloc::boxed::Box::pin(self.monitor.timed(OpKind::Flush, 0, self.do_flush()))
    }

    fn discard(&self, sector: u64, sectors: u64) -> crate::block::IoFuture<'_, ()> {
        let request = self.do_discard(sector, sectors);
        let bytes = sectors.saturating_mul(SECTOR_BYTES as u64);
        alloc::boxed::Box::pin(self.monitor.timed(OpKind::Discard, bytes, request))
    }

    /// An array that is the member of another (a RAID 50/60 group) tells its outer array
    /// its health, for the health of the whole stack.
    fn array_health(&self) -> Option<HealthState> {
        Some(self.health_state())
    }

    fn stack_under(&self, upper: Weak<dyn BlockDevice>) {
        *self.parent.borrow_mut() = upper;
    }

    fn lower_health_changed(&self) {
        self.check_health();
    }
}
