//! The RebuildManager and DiskManager side of one array: policies (failure detection, rebuild
//! priority and rate, spare policy), member management (fail, add, remove, replace, spares)
//! and the background-job runner (resync, then the rebuild of each member being rebuilt,
//! then spare activation for empty or failed slots).
//!
//! Every state change is written to the superblocks (events bumped) before it is acted on:
//! a spare is recorded in its slot before the rebuild writes to it, a finished rebuild is
//! recorded before the member serves reads above its old cursor. The rebuild position is
//! checkpointed in the member's `recovery_offset` (with md's `RECOVERY_OFFSET` feature bit)
//! every few regions and when stopped, after a flush of the member, so a stop or crash
//! resumes there.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::{Context, Poll};

use super::assemble::NamedDevice;
use super::buffers::ChunkBuffers;
use super::resync::{JobKind, JobProgress};
use super::{Array, ArrayError, Health, Member, MemberState, SUPERBLOCK_SECTOR};
use crate::block::{Bytes, SECTOR_BYTES};
use crate::executor::{AsyncMutex, Semaphore, SemaphorePermit};
use crate::layout::ArrayLayout;
use crate::metadata::{DeviceRole, FeatureMap, Superblock};
use crate::monitor::Event;
use crate::rng::SplitMix64;

/// Member sectors rebuilt under one lock at low priority or under a rate limit (1 MiB), so a
/// region holds up foreground I/O briefly; parity levels round to whole stripes. Also the
/// region of a parity rebuild at any priority: several are kept in flight instead, which
/// keeps the cells between their read, their xor and their write in the CPU caches
/// (`benches/rebuild.sh`: 8 MiB regions, one or two at a time, ran at half the speed).
const REGION_SECTORS: u64 = 2048;
/// The region of a copy level's rebuild at normal and high priority with no rate limit
/// (8 MiB), and the unit `checkpoint_regions` counts then: fewer lock and throttle rounds.
const BULK_REGION_SECTORS: u64 = 8 * REGION_SECTORS;
/// Regions of a parity array's rebuild in flight at normal and high priority with no rate
/// limit: the next regions' reads run while one is xored and written, so neither the
/// members nor the engine wait for the other.
const PARITY_REGIONS_IN_FLIGHT: usize = 3;
/// Regions in flight when they run as worker jobs (host files): they hold no engine
/// buffers, and with only a few, the jobs (all started at once on the worker pool) finish
/// together and leave the cores idle until the engine starts the next ones.
const OFFLOADED_REGIONS_IN_FLIGHT: usize = 8;
/// What the buffers of a parity rebuild's cells keep between uses.
const CELL_POOL_MAX_BYTES: usize = 64 << 20;
/// How long a low-priority job waits for foreground I/O to drain before going anyway.
const LOW_PRIORITY_MAX_WAIT_NS: u64 = 200_000_000;
/// The nap of a job yielding to foreground I/O.
const YIELD_NS: u64 = 1_000_000;

/// When a member of a redundant array is failed besides on a write error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePolicy {
    /// More read errors than this within the window fail the member; 0: never.
    pub read_error_limit: u32,
    pub read_error_window_ns: u64,
    /// An I/O slower than this fails the member; 0: no timeout.
    pub io_timeout_ns: u64,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            read_error_limit: 20,
            read_error_window_ns: 60_000_000_000,
            io_timeout_ns: 30_000_000_000,
        }
    }
}

/// How a background job shares the members with foreground I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildPriority {
    /// Waits (a while) for foreground I/O to drain before each region.
    Low,
    /// Yields once between regions when foreground I/O is in flight.
    Normal,
    /// Never waits (only the rate limit applies).
    High,
}

/// Where a failed member's replacement comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparePolicy {
    /// The array's own spares only.
    Dedicated,
    /// The array's own spares, then the shared pool.
    Shared,
    /// No automatic spare activation.
    None,
}

impl RebuildPriority {
    pub fn name(self) -> &'static str {
        match self {
            RebuildPriority::Low => "low",
            RebuildPriority::Normal => "normal",
            RebuildPriority::High => "high",
        }
    }
}

impl SparePolicy {
    pub fn name(self) -> &'static str {
        match self {
            SparePolicy::Dedicated => "dedicated",
            SparePolicy::Shared => "shared",
            SparePolicy::None => "none",
        }
    }
}

/// Per-array policies, changed with `raid set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayPolicy {
    pub failure: FailurePolicy,
    pub rebuild_priority: RebuildPriority,
    /// 0: unlimited.
    pub rebuild_rate_bytes_per_s: u64,
    pub spare_policy: SparePolicy,
    /// Regions between two checkpoints of a job's position.
    pub checkpoint_regions: u32,
}

impl Default for ArrayPolicy {
    fn default() -> Self {
        ArrayPolicy {
            failure: FailurePolicy::default(),
            rebuild_priority: RebuildPriority::Normal,
            rebuild_rate_bytes_per_s: 0,
            spare_policy: SparePolicy::Dedicated,
            checkpoint_regions: 16,
        }
    }
}

pub use super::settings::SETTING_KEYS;

/// Why a member operation or a setting was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberError {
    UnknownKey(String),
    /// A value the key does not take; `allowed` says what it does.
    BadValue {
        key: String,
        value: String,
        allowed: String,
    },
    NoSuchMember(String),
    /// `remove` of a member that is neither faulty nor a spare.
    InUse(String),
    /// The device is smaller than a member of this array must be.
    TooSmall {
        need_sectors: u64,
        have_sectors: u64,
    },
    /// The member cannot be failed without failing the array.
    WouldFail(String),
    /// Nothing to replace onto / with.
    NotReplaceable(String),
    /// The device offered already has a role (`role`, in words): one device never fills
    /// two.
    AlreadyMember {
        device: String,
        role: String,
    },
    Io(String),
}

impl fmt::Display for MemberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberError::UnknownKey(k) => write!(
                f,
                "unknown setting '{k}' (known: {})",
                SETTING_KEYS.join(", ")
            ),
            MemberError::BadValue {
                key,
                value,
                allowed,
            } => write!(
                f,
                "{key}={value} refused: {key} takes {allowed}, or {}",
                super::settings::DEFAULT_VALUE
            ),
            MemberError::NoSuchMember(m) => write!(f, "no member '{m}' in this array"),
            MemberError::InUse(m) => {
                write!(
                    f,
                    "member '{m}' is in use: only a faulty or spare member can be removed"
                )
            }
            MemberError::TooSmall {
                need_sectors,
                have_sectors,
            } => write!(
                f,
                "device too small: {have_sectors} sectors, a member needs {need_sectors}"
            ),
            MemberError::WouldFail(m) => {
                write!(f, "failing '{m}' would fail the array; refused")
            }
            MemberError::NotReplaceable(m) => write!(f, "cannot replace: {m}"),
            MemberError::AlreadyMember { device, role } => {
                write!(f, "{device} is already {role}; refused")
            }
            MemberError::Io(e) => f.write_str(e),
        }
    }
}

/// Takes a device of at least this many sectors from a shared spare pool.
pub type SpareSource = Rc<dyn Fn(u64) -> Option<NamedDevice>>;

/// State of an array's background-job runner.
pub(super) struct JobControl {
    running: Cell<bool>,
    pub(super) stop: Cell<bool>,
    /// Held by the runner while it runs: `stop_jobs` waits on it.
    done: AsyncMutex<()>,
    /// A rebuild hit data it could not read: not retried until something changes.
    blocked: Cell<bool>,
    spare_source: core::cell::RefCell<Option<SpareSource>>,
    /// Foreground requests started, as a low-priority job last looked (see `throttle`).
    foreground_seen: Cell<u64>,
    /// The driver's limit on arrays running background jobs at once (the RebuildManager's):
    /// the runner holds a permit while it resyncs or rebuilds.
    permits: core::cell::RefCell<Option<Rc<Semaphore>>>,
}

impl Default for JobControl {
    fn default() -> Self {
        JobControl {
            running: Cell::new(false),
            stop: Cell::new(false),
            done: AsyncMutex::new(()),
            blocked: Cell::new(false),
            spare_source: core::cell::RefCell::new(None),
            foreground_seen: Cell::new(0),
            permits: core::cell::RefCell::new(None),
        }
    }
}

impl Array {
    pub fn policy(&self) -> ArrayPolicy {
        self.policy.get()
    }

    /// Sets the policies; failure detection applies to the members at once.
    pub fn set_policy(&self, policy: ArrayPolicy) {
        self.policy.set(policy);
        for m in self.all_members() {
            m.failure_policy
                .set(self.redundant.then_some(policy.failure));
        }
    }

    /// Where a `shared` array takes a spare from when it has none of its own.
    pub fn set_spare_source(&self, source: Option<SpareSource>) {
        *self.jobs.spare_source.borrow_mut() = source;
    }

    /// Every member the array knows: in slots, spares, failed ones not yet removed.
    fn all_members(&self) -> Vec<Rc<Member>> {
        let mut out: Vec<Rc<Member>> = self.slots.borrow().iter().flatten().cloned().collect();
        let replacements: Vec<Rc<Member>> = out
            .iter()
            .filter_map(|m| m.replacement.borrow().clone())
            .collect();
        out.extend(replacements);
        out.extend(self.spares.borrow().iter().cloned());
        out
    }

    /// The member called `name` (its path as shown in status), or in slot `name` if it is
    /// a number no member is called.
    pub fn find_member(&self, name: &str) -> Option<Rc<Member>> {
        let all = self.all_members();
        if let Some(m) = all.iter().find(|m| m.name == name) {
            return Some(m.clone());
        }
        let slot: usize = name.parse().ok()?;
        self.slots.borrow().get(slot).cloned().flatten()
    }

    fn slot_index(&self, member: &Rc<Member>) -> Option<usize> {
        self.slots
            .borrow()
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| Rc::ptr_eq(m, member)))
    }

    /// Member sectors a member of this array holds data in.
    pub fn member_used_sectors(&self) -> u64 {
        match &self.layout {
            ArrayLayout::Raid5(l) => l.stripe_count() * l.chunk_sectors(),
            _ => self.superblock().map_or(0, |sb| sb.size_sectors),
        }
    }

    /// Sectors a device needs to become a member: data offset plus the used size.
    pub fn member_min_sectors(&self) -> u64 {
        let offset = self.superblock().map_or(0, |sb| sb.data_offset_sectors);
        offset + self.member_used_sectors()
    }

    /// `raid fail`: marks a member faulty (recorded before anything else happens); a spare
    /// then takes its slot if the policy allows. A member whose loss would fail the array
    /// is refused.
    pub async fn fail_named(&self, name: &str) -> Result<(), MemberError> {
        let member = self
            .find_member(name)
            .ok_or_else(|| MemberError::NoSuchMember(name.to_string()))?;
        if member.state() == MemberState::Active {
            let mut alive = self.alive();
            if let Some(slot) = self.slot_index(&member) {
                alive[slot] = false;
            }
            if !self.layout.survives(&alive) {
                return Err(MemberError::WouldFail(name.to_string()));
            }
        }
        if member.state() == MemberState::Spare {
            member.state.set(MemberState::Faulty);
            let _ = self.update_superblocks(|_| {}).await;
            log::info!("{}: spare {} marked faulty", self.name(), member.name);
            return Ok(());
        }
        self.fail_member_rc(&member).await;
        Ok(())
    }

    /// The monitor's look at every member's device ([`crate::block::BlockDevice::probe`]):
    /// a member whose image file was deleted (it is lost when the server exits) or
    /// truncated (its tail is gone) is reported once (event `member_gone`, the log) and
    /// failed as after an I/O error, so a spare takes over while what it holds can still
    /// be read; a spare is marked faulty. Not when failing it would fail the array: then
    /// it serves what it still can, and its errors speak for themselves.
    pub fn probe_members(&self) {
        for member in self.all_members() {
            if member.state() == MemberState::Faulty || member.problem.borrow().is_some() {
                continue;
            }
            let Some(problem) = member.dev.probe() else {
                continue;
            };
            log::error!("{}: member {}: {problem}", self.name(), member.name);
            let reason = problem.to_string();
            *member.problem.borrow_mut() = Some(problem);
            self.monitor.emit(
                self.name(),
                self.wall_clock_base_s(),
                Event::MemberGone {
                    slot: self.slot_of(&member).unwrap_or(u32::MAX),
                    member: member.name.clone(),
                    reason,
                },
            );
            let survives = match self.slot_index(&member) {
                Some(slot) if member.state() == MemberState::Active => {
                    let mut alive = self.alive();
                    alive[slot] = false;
                    self.redundant && self.layout.survives(&alive)
                }
                _ => true,
            };
            let Some(me) = self.this.upgrade() else {
                continue;
            };
            if survives {
                self.exec.spawn_detached(async move {
                    if member.state() == MemberState::Spare {
                        member.state.set(MemberState::Faulty);
                        let _ = me.update_superblocks(|_| {}).await;
                    } else {
                        me.fail_member_rc(&member).await;
                    }
                });
            }
        }
    }

    /// `raid remove`: takes a faulty or spare member out of the array (recorded faulty in
    /// the role table, so it never comes back by itself).
    pub async fn remove_named(&self, name: &str) -> Result<(), MemberError> {
        let member = self
            .find_member(name)
            .ok_or_else(|| MemberError::NoSuchMember(name.to_string()))?;
        if !matches!(member.state(), MemberState::Faulty | MemberState::Spare) {
            return Err(MemberError::InUse(name.to_string()));
        }
        let was_spare = member.state() == MemberState::Spare;
        member.state.set(MemberState::Faulty);
        {
            let mut slots = self.slots.borrow_mut();
            for s in slots.iter_mut() {
                if s.as_ref().is_some_and(|m| Rc::ptr_eq(m, &member)) {
                    *s = None;
                }
            }
        }
        self.spares.borrow_mut().retain(|m| !Rc::ptr_eq(m, &member));
        if was_spare {
            // Recorded faulty, so that it does not come back as a spare by itself.
            let dev_number = member.superblock.borrow().dev_number;
            self.update_superblocks(|sb| {
                let _ = sb.set_role(dev_number, DeviceRole::Faulty);
            })
            .await
            .map_err(|e| MemberError::Io(e.to_string()))?;
        }
        log::info!("{}: member {} removed", self.name(), member.name);
        Ok(())
    }

    /// A superblock for a device joining the array as a spare: the array's, with a free
    /// device number and a fresh device UUID.
    fn joining_superblock(&self, capacity_sectors: u64) -> Result<Superblock, MemberError> {
        let mut sb = self
            .superblock()
            .ok_or_else(|| MemberError::Io("array has no live member".into()))?;
        let need = self.member_min_sectors();
        if capacity_sectors < need {
            return Err(MemberError::TooSmall {
                need_sectors: need,
                have_sectors: capacity_sectors,
            });
        }
        let used: Vec<u32> = self
            .all_members()
            .iter()
            .map(|m| m.superblock.borrow().dev_number)
            .collect();
        // A new number, never a reused one: a removed member that comes back must find its
        // own number recorded faulty, not taken by another device in sync.
        let dev_number = sb.max_dev().max(used.iter().max().map_or(0, |m| m + 1));
        let mut rng = SplitMix64::new(
            u64::from_le_bytes(sb.array_uuid[..8].try_into().unwrap_or([0; 8]))
                ^ sb.events.rotate_left(17)
                ^ u64::from(dev_number).rotate_left(40)
                ^ self.exec.now_ns(),
        );
        rng.fill(&mut sb.device_uuid);
        sb.dev_number = dev_number;
        sb.data_size_sectors = capacity_sectors - sb.data_offset_sectors;
        sb.features -= FeatureMap::RECOVERY_OFFSET | FeatureMap::REPLACEMENT;
        sb.recovery_offset_sectors = 0;
        sb.corrected_read_count = 0;
        sb.dev_flags = 0;
        sb.set_role(dev_number, DeviceRole::Spare)
            .map_err(|e| MemberError::Io(format!("{e}")))?;
        Ok(sb)
    }

    /// `raid add`: the device joins as a spare (superblock written to it, then to every
    /// member); if a slot is empty or failed and the policy allows, the spare takes it and
    /// the rebuild starts.
    pub async fn add_device(&self, name: String, dev: NamedDeviceDev) -> Result<(), MemberError> {
        let member = self.prepare_spare(name, dev).await?;
        self.spares.borrow_mut().push(member.clone());
        self.update_superblocks(|_| {})
            .await
            .map_err(|e| MemberError::Io(e.to_string()))?;
        log::info!("{}: {} added as a spare", self.name(), member.name);
        self.jobs.blocked.set(false);
        self.kick_jobs();
        Ok(())
    }

    /// What `member` is in this array, in words.
    fn role_words(&self, member: &Rc<Member>) -> String {
        if let Some(slot) = self.slot_index(member) {
            return match member.state() {
                MemberState::Rebuilding => format!("the member being rebuilt in slot {slot}"),
                MemberState::Faulty => format!("the failed member of slot {slot}"),
                _ => format!("the active member in slot {slot}"),
            };
        }
        let replaced = self.slots.borrow().iter().position(|m| {
            m.as_ref().is_some_and(|m| {
                m.replacement
                    .borrow()
                    .as_ref()
                    .is_some_and(|r| Rc::ptr_eq(r, member))
            })
        });
        match (replaced, member.state()) {
            (Some(slot), _) => format!("the replacement being built for slot {slot}"),
            (None, MemberState::Faulty) => "a failed member (not removed yet)".into(),
            _ => "a spare".into(),
        }
    }

    /// The role the device `dev` (offered as `name`) already has in this array, in words
    /// naming the array ("the active member in slot 1 of array s6 (as s6-1.img)"), if any.
    /// A device is itself by its identity (device and inode, device number), whatever path
    /// reached it; a device that cannot tell its identity by its name.
    pub fn role_of_device(
        &self,
        name: &str,
        dev: &dyn crate::block::BlockDevice,
    ) -> Option<String> {
        let id = dev.identity();
        let member = self.all_members().into_iter().find(|m| match id {
            Some(id) => m.dev.identity() == Some(id),
            None => m.name == name,
        })?;
        let known_as = if member.name == name {
            String::new()
        } else {
            format!(" (as {})", member.name)
        };
        Some(format!(
            "{} of array {}{known_as}",
            self.role_words(&member),
            self.name()
        ))
    }

    /// The member whose md superblock `dev` carries (same array, same device UUID), if
    /// it is one this array holds: the same disk reached another way than its identity
    /// tells (a loop device over a member's image), or a copy of a member.
    async fn member_by_superblock(
        &self,
        dev: &dyn crate::block::BlockDevice,
    ) -> Option<Rc<Member>> {
        let sb = super::assemble::read_superblock(dev).await.ok()?;
        let ours = self.superblock()?;
        if sb.array_uuid != ours.array_uuid {
            return None;
        }
        self.all_members()
            .into_iter()
            .find(|m| m.superblock.borrow().device_uuid == sb.device_uuid)
    }

    async fn prepare_spare(
        &self,
        name: String,
        dev: NamedDeviceDev,
    ) -> Result<Rc<Member>, MemberError> {
        if let Some(role) = self.role_of_device(&name, dev.as_ref()) {
            return Err(MemberError::AlreadyMember { device: name, role });
        }
        if let Some(m) = self.member_by_superblock(dev.as_ref()).await {
            return Err(MemberError::AlreadyMember {
                role: format!(
                    "{} of array {} ({}) by its md superblock: that disk by another path, \
                     or a copy of it (wipe a copy's superblock to add it)",
                    self.role_words(&m),
                    self.name(),
                    m.name
                ),
                device: name,
            });
        }
        let sb = self.joining_superblock(dev.capacity_sectors())?;
        dev.write(SUPERBLOCK_SECTOR, Bytes::from(sb.encode()), true)
            .await
            .map_err(|e| MemberError::Io(format!("{name}: {e}")))?;
        let member = Rc::new(Member::with_state(name, dev, sb, MemberState::Spare, 0));
        self.join(&member);
        Ok(member)
    }

    /// `raid replace`: `new` joins as the replacement of the in-sync member `old`: it gets
    /// every write `old` gets and is rebuilt as a copy of it while `old` keeps serving;
    /// when complete it takes the slot and `old` becomes a spare. Recorded (md's
    /// `REPLACEMENT` feature) before the copy starts.
    pub async fn replace_named(
        &self,
        old: &str,
        name: String,
        dev: NamedDeviceDev,
    ) -> Result<(), MemberError> {
        let member = self
            .find_member(old)
            .ok_or_else(|| MemberError::NoSuchMember(old.to_string()))?;
        if member.state() != MemberState::Active || self.slot_index(&member).is_none() {
            return Err(MemberError::NotReplaceable(format!(
                "'{old}' is not an in-sync member"
            )));
        }
        if member
            .replacement
            .borrow()
            .as_ref()
            .is_some_and(|r| r.state() == MemberState::Rebuilding)
        {
            return Err(MemberError::NotReplaceable(format!(
                "'{old}' is already being replaced"
            )));
        }
        let rep = self.prepare_spare(name, dev).await?;
        rep.state.set(MemberState::Rebuilding);
        rep.set_recovery_start(0);
        rep.is_replacement.set(true);
        *member.replacement.borrow_mut() = Some(rep.clone());
        self.update_superblocks(|_| {})
            .await
            .map_err(|e| MemberError::Io(e.to_string()))?;
        log::info!("{}: {} replaces {old}", self.name(), rep.name);
        self.jobs.blocked.set(false);
        self.kick_jobs();
        Ok(())
    }

    /// The member being rebuilt as a replacement of the member in `slot`, if any.
    pub fn replacement_of(&self, slot: usize) -> Option<Rc<Member>> {
        self.slots
            .borrow()
            .get(slot)?
            .as_ref()?
            .replacement
            .borrow()
            .clone()
    }

    /// Starts the background jobs if any is due (resync, rebuild, spare activation).
    pub fn start_jobs(&self) {
        self.jobs.stop.set(false);
        self.kick_jobs();
    }

    pub(super) fn kick_jobs(&self) {
        if self.jobs.running.get() || self.jobs.stop.get() {
            return;
        }
        let Some(me) = self.this.upgrade() else {
            return;
        };
        self.jobs.running.set(true);
        self.exec.spawn_detached(async move {
            me.run_jobs().await;
        });
    }

    /// Whether the background-job runner is active.
    pub fn jobs_running(&self) -> bool {
        self.jobs.running.get()
    }

    /// Asks the jobs to stop at the next region and waits until they did (their position
    /// is checkpointed).
    pub async fn stop_jobs(&self) {
        self.jobs.stop.set(true);
        // A runner waiting for a permit gives up.
        if let Some(p) = self.jobs.permits.borrow().as_ref() {
            p.wake_all();
        }
        let _g = self.jobs.done.lock().await;
    }

    /// Shares the driver's limit on arrays running background jobs at once.
    pub fn set_job_permits(&self, permits: Option<Rc<Semaphore>>) {
        *self.jobs.permits.borrow_mut() = permits;
    }

    /// Takes a permit for background work into `held` (waiting while the limit is reached)
    /// unless one is held already; false when a stop came first.
    async fn job_permit(&self, held: &mut Option<SemaphorePermit>) -> bool {
        if held.is_some() {
            return true;
        }
        let permits = self.jobs.permits.borrow().clone();
        let Some(permits) = permits else {
            return true;
        };
        *held = permits.acquire_unless(|| self.jobs.stop.get()).await;
        held.is_some()
    }

    async fn run_jobs(&self) {
        let _g = self.jobs.done.lock().await;
        let mut permit = None;
        loop {
            if self.jobs.stop.get() || self.health() == Health::Failed {
                break;
            }
            let work = self.needs_resync.get()
                || self.slots.borrow().iter().flatten().any(|m| {
                    m.state() == MemberState::Rebuilding
                        || m.replacement
                            .borrow()
                            .as_ref()
                            .is_some_and(|r| r.state() == MemberState::Rebuilding)
                });
            if work && !self.job_permit(&mut permit).await {
                break;
            }
            if self.needs_resync.get() {
                match self.resync().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        log::error!("{}: resync stopped: {e}", self.name());
                        break;
                    }
                }
            }
            let rebuilding = self
                .slots
                .borrow()
                .iter()
                .enumerate()
                .find_map(|(slot, m)| {
                    m.as_ref()
                        .filter(|m| m.state() == MemberState::Rebuilding)
                        .map(|m| (slot, m.clone()))
                });
            if let Some((slot, target)) = rebuilding {
                if self.jobs.blocked.get() {
                    break;
                }
                match self.rebuild_member(slot, &target, None).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        if target.state() == MemberState::Faulty {
                            self.rebuild_failed(slot, &target, "the member failed");
                            continue;
                        }
                        break;
                    }
                    Err(e) => {
                        log::error!("{}: rebuild of {} stopped: {e}", self.name(), target.name);
                        self.rebuild_failed(slot, &target, &e.to_string());
                        self.jobs.blocked.set(true);
                        break;
                    }
                }
            }
            let replacing = self
                .slots
                .borrow()
                .iter()
                .enumerate()
                .find_map(|(slot, m)| {
                    let m = m.as_ref()?;
                    let rep = m.replacement.borrow().clone()?;
                    (m.state() == MemberState::Active && rep.state() == MemberState::Rebuilding)
                        .then(|| (slot, m.clone(), rep))
                });
            if let Some((slot, old, rep)) = replacing {
                if self.jobs.blocked.get() {
                    break;
                }
                match self.rebuild_member(slot, &rep, Some(&old)).await {
                    Ok(true) => continue,
                    Ok(false) if rep.state() == MemberState::Faulty => {
                        self.rebuild_failed(slot, &rep, "the replacement failed");
                        self.record_failed_replacements().await;
                        continue;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        log::error!("{}: replacement by {} stopped: {e}", self.name(), rep.name);
                        self.rebuild_failed(slot, &rep, &e.to_string());
                        self.jobs.blocked.set(true);
                        break;
                    }
                }
            }
            if !self.activate_spare().await {
                break;
            }
        }
        // A scrub running beside this runner keeps its progress.
        if !self
            .job
            .get()
            .is_some_and(|j| matches!(j.kind, JobKind::Check | JobKind::Repair))
        {
            self.job.set(None);
        }
        self.jobs.running.set(false);
        // A check or repair interrupted by a stop or crash goes on after the recovery
        // (see `persist.rs`).
        if !self.jobs.stop.get() {
            self.resume_scrub();
        }
    }

    /// Puts a spare into the first slot that is empty or failed (dedicated spares first,
    /// smallest sufficient first; then the shared pool). Recorded before the rebuild.
    async fn activate_spare(&self) -> bool {
        let policy = self.policy.get().spare_policy;
        if policy == SparePolicy::None || !self.redundant {
            return false;
        }
        let slot = self
            .slots
            .borrow()
            .iter()
            .position(|m| m.as_ref().is_none_or(|m| m.state() == MemberState::Faulty));
        let Some(slot) = slot else {
            return false;
        };
        let need = self.member_min_sectors();
        let spare = self
            .spares
            .borrow()
            .iter()
            .filter(|m| m.state() == MemberState::Spare && m.dev.capacity_sectors() >= need)
            .min_by_key(|m| m.dev.capacity_sectors())
            .cloned();
        let spare = match spare {
            Some(s) => s,
            None if policy == SparePolicy::Shared => {
                let source = self.jobs.spare_source.borrow().clone();
                let Some((name, dev)) = source.and_then(|f| f(need)) else {
                    return false;
                };
                match self.prepare_spare(name.clone(), dev).await {
                    Ok(m) => {
                        log::info!("{}: took {name} from the shared spare pool", self.name());
                        m
                    }
                    Err(e) => {
                        log::error!("{}: pool spare {name} unusable: {e}", self.name());
                        return false;
                    }
                }
            }
            None => return false,
        };
        self.spares.borrow_mut().retain(|m| !Rc::ptr_eq(m, &spare));
        let old = self.slots.borrow_mut()[slot].replace(spare.clone());
        if let Some(old) = old {
            // A failed member stays listed until removed.
            self.spares.borrow_mut().push(old);
        }
        spare.set_recovery_start(0);
        spare.state.set(MemberState::Rebuilding);
        if let Err(e) = self.update_superblocks(|_| {}).await {
            log::error!("{}: spare activation not recorded: {e}", self.name());
            return false;
        }
        log::info!(
            "{}: spare {} activated in slot {slot}; rebuild starts",
            self.name(),
            spare.name
        );
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::SpareActivated {
                slot: slot as u32,
                member: spare.name.clone(),
            },
        );
        self.check_health();
        true
    }

    fn rebuild_failed(&self, slot: usize, target: &Member, reason: &str) {
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::RebuildFailed {
                slot: slot as u32,
                member: target.name.clone(),
                reason: reason.to_string(),
            },
        );
        self.check_health();
    }

    /// Detaches every replacement that failed a write and records that in the superblocks
    /// (the roles are rebuilt from the member states): otherwise a restart could resume it
    /// from its checkpoint although it missed a write below it. Called before a write that
    /// reached it is acknowledged.
    pub(super) async fn record_failed_replacements(&self) {
        let failed: Vec<Rc<Member>> = self
            .slots
            .borrow()
            .iter()
            .flatten()
            .filter_map(|m| {
                let mut rep = m.replacement.borrow_mut();
                if rep
                    .as_ref()
                    .is_some_and(|r| r.state() == MemberState::Faulty)
                {
                    rep.take()
                } else {
                    None
                }
            })
            .collect();
        if failed.is_empty() {
            return;
        }
        for rep in &failed {
            rep.is_replacement.set(false);
            let mut spares = self.spares.borrow_mut();
            if !spares.iter().any(|s| Rc::ptr_eq(s, rep)) {
                // A failed member stays listed until removed.
                spares.push(rep.clone());
            }
        }
        if let Err(e) = self.update_superblocks(|_| {}).await {
            log::error!("{}: failed replacement not recorded: {e}", self.name());
        }
        for rep in &failed {
            log::error!("{}: replacement {} dropped", self.name(), rep.name);
        }
    }

    /// Records a rebuild position: the member's data up to it is flushed first, and only
    /// then is the position durable (every superblock update records the durable one).
    async fn checkpoint_rebuild(&self, target: &Rc<Member>) {
        let at = target.recovery_offset.get();
        if target.within_timeout(target.dev.flush()).await.is_err() {
            self.fail_member_rc(target).await;
            return;
        }
        // The cursor may have moved back meanwhile (a write the member missed).
        target
            .durable_recovery_offset
            .set(at.min(target.recovery_offset.get()));
        let _ = self.update_superblocks(|_| {}).await;
    }

    /// Waits as the priority and rate limit ask before the next region; `moved_sectors` is
    /// what the job did since `started_ns`.
    pub(super) async fn throttle(&self, moved_sectors: u64, started_ns: u64) {
        let p = self.policy.get();
        match p.rebuild_priority {
            RebuildPriority::High => {}
            RebuildPriority::Normal => {
                if self.foreground.get() > 0 {
                    self.exec.sleep(YIELD_NS / 10).await;
                }
            }
            RebuildPriority::Low => {
                // Goes when foreground I/O has been quiet for a whole nap (none in flight,
                // none started meanwhile), not at the first instant nothing is in flight: a
                // busy client's queue empties for a moment between its batches.
                let started = || {
                    let c = self.counters.get();
                    c.reads.wrapping_add(c.writes)
                };
                // No foreground request since the last region: go at once.
                let quiet =
                    self.foreground.get() == 0 && started() == self.jobs.foreground_seen.get();
                let until = self.exec.now_ns() + LOW_PRIORITY_MAX_WAIT_NS;
                while !quiet && self.exec.now_ns() < until {
                    let before = started();
                    let idle_before = self.foreground.get() == 0;
                    self.exec.sleep(YIELD_NS).await;
                    if idle_before && self.foreground.get() == 0 && started() == before {
                        break;
                    }
                }
                self.jobs.foreground_seen.set(started());
            }
        }
        let rate = p.rebuild_rate_bytes_per_s;
        if rate > 0 {
            let bytes = moved_sectors as u128 * SECTOR_BYTES as u128;
            let due_ns = started_ns as u128 + bytes * 1_000_000_000 / rate as u128;
            if due_ns > self.exec.now_ns() as u128 {
                self.exec
                    .sleep_until(due_ns.min(u64::MAX as u128) as u64)
                    .await;
            }
        }
    }

    /// Rebuilds `target` in `slot` from its `recovery_offset` on; with `replacing`, target
    /// is the replacement of that member (which serves meanwhile and is copied from). True
    /// when finished (the member is then in sync, recorded; a replaced member becomes a
    /// spare), false when stopped or the target failed; an error when data needed for it
    /// could not be read.
    async fn rebuild_member(
        &self,
        slot: usize,
        target: &Rc<Member>,
        replacing: Option<&Rc<Member>>,
    ) -> Result<bool, ArrayError> {
        let total = self.member_used_sectors();
        let unit = match &self.layout {
            ArrayLayout::Raid5(l) => l.chunk_sectors(),
            _ => 1,
        };
        let resume = (target.recovery_offset.get().min(total) / unit) * unit;
        target.set_recovery_start(resume);
        log::info!(
            "{}: rebuild of {} in slot {slot} starts at member sector {resume}",
            self.name(),
            target.name
        );
        let started = self.exec.now_ns();
        self.job.set(Some(JobProgress {
            kind: JobKind::Rebuild,
            done_sectors: resume,
            total_sectors: total,
            started_ns: started,
            now_ns: started,
            resumed_sectors: resume,
        }));
        // By slot, not `member_event`: a replacement holds no slot of its own.
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::RebuildStarted {
                slot: slot as u32,
                member: target.name.clone(),
            },
        );
        let parity = matches!(&self.layout, ArrayLayout::Raid5(_));
        let offloaded = parity && replacing.is_none() && offload_target(target).is_some();
        let pool = ChunkBuffers::new(CELL_POOL_MAX_BYTES);
        let mut window = Window::default();
        // Where the next region starts; `recovery_offset` trails it by the regions in flight.
        let mut next = resume;
        // Member sectors retired since the last checkpoint, and the end of the last region.
        let mut since_checkpoint = 0u64;
        let mut checkpointed_at = resume;
        loop {
            let stopped = if target.state() != MemberState::Rebuilding {
                Some(Ok(false))
            } else if self.jobs.stop.get() {
                None
            } else if self.health() == Health::Failed {
                Some(Err(ArrayError::ArrayFailed))
            } else {
                if next >= total && window.is_empty() {
                    break;
                }
                let p = self.policy.get();
                let gentle =
                    p.rebuild_priority == RebuildPriority::Low || p.rebuild_rate_bytes_per_s > 0;
                // Copy levels move the cursor inside a region: one at a time.
                let depth = if parity && !gentle {
                    if offloaded {
                        OFFLOADED_REGIONS_IN_FLIGHT
                    } else {
                        PARITY_REGIONS_IN_FLIGHT
                    }
                } else {
                    1
                };
                if next < total && window.len() < depth {
                    window.drive(self.throttle(next - resume, started)).await;
                    // Small regions when the job is to give way or keep to a rate.
                    let region = if gentle || parity {
                        REGION_SECTORS
                    } else {
                        BULK_REGION_SECTORS
                    };
                    let region = region.max(unit) / unit * unit;
                    let end = (next + region).min(total);
                    // The member replaced stops being a source if it failed (then target
                    // took its slot and is rebuilt from the others).
                    let source = replacing.filter(|o| o.state() == MemberState::Active);
                    let at = next;
                    let pool = &pool;
                    let region_done: Region<'_> = match &self.layout {
                        ArrayLayout::Raid5(l) => Box::pin(async move {
                            // Where the general path starts: past what worker jobs did.
                            let from = match source {
                                Some(_) => at / unit,
                                None => match self
                                    .rebuild_stripes_offloaded(
                                        l,
                                        (at / unit, end / unit),
                                        target,
                                        slot,
                                    )
                                    .await
                                {
                                    Ok(()) => return true,
                                    Err(stripe) => stripe,
                                },
                            };
                            self.rebuild_stripes(l, (from, end / unit), target, slot, source, pool)
                                .await
                                .is_ok()
                        }),
                        _ => Box::pin(self.rebuild_copies(slot, target, at, end, source)),
                    };
                    window.push(end, region_done);
                    next = end;
                    continue;
                }
                let (end, ok) = window.retire().await.expect("a region is in flight");
                if !ok {
                    // Regions after a failed one may have been written, but the cursor
                    // stays before it.
                    while window.retire().await.is_some() {}
                    if target.state() != MemberState::Rebuilding {
                        self.job.set(None);
                        return Ok(false);
                    }
                    self.checkpoint_rebuild(target).await;
                    self.job.set(None);
                    return Err(ArrayError::RebuildSourceUnreadable {
                        sector: target.recovery_offset.get(),
                    });
                }
                if parity {
                    // Every region before this one is written: retired in order.
                    target.recovery_offset.set(end);
                }
                if let Some(mut j) = self.job.get() {
                    j.done_sectors = target.recovery_offset.get();
                    self.job.set(Some(j));
                }
                // Every `checkpoint_regions` regions of the size the priority asks (bulk
                // for a parity job too, whose regions are small to keep them in flight).
                since_checkpoint += end - checkpointed_at;
                checkpointed_at = end;
                let every = if gentle {
                    REGION_SECTORS
                } else {
                    BULK_REGION_SECTORS
                };
                if since_checkpoint >= u64::from(p.checkpoint_regions.max(1)) * every.max(unit) {
                    since_checkpoint = 0;
                    // Regions in flight go on; the cursor does not move meanwhile, so the
                    // checkpoint covers only data the flush made durable.
                    window.drive(self.checkpoint_rebuild(target)).await;
                }
                continue;
            };
            // Stopping: let the regions in flight finish, moving the cursor over those that
            // are written and in order, then record it (a stop) or give up.
            let mut in_order = true;
            while let Some((end, ok)) = window.retire().await {
                in_order &= ok;
                if in_order && parity {
                    target.recovery_offset.set(end);
                }
            }
            match stopped {
                None => {
                    if target.state() == MemberState::Rebuilding {
                        self.checkpoint_rebuild(target).await;
                    }
                    self.job.set(None);
                    return Ok(false);
                }
                Some(r) => {
                    self.job.set(None);
                    return r;
                }
            }
        }
        // In sync: flushed, then recorded, before it serves reads everywhere.
        if target.within_timeout(target.dev.flush()).await.is_err() {
            self.fail_member_rc(target).await;
            self.job.set(None);
            return Ok(false);
        }
        // A write may have failed it while the flush ran.
        if target.state() != MemberState::Rebuilding {
            self.job.set(None);
            return Ok(false);
        }
        // Recorded in sync before it counts as in sync: until the record is on disk a crash
        // finds it recovering, so the array must not rely on it as a full copy (nor let the
        // last member recorded in sync fail as if it were redundant). A replacement is
        // recorded in sync beside the member it replaces, which keeps its slot and takes
        // every write meanwhile: swapped first, the array would rely on neither for that
        // moment (it failed when the replaced member was its last one in sync, and then
        // recorded nothing, not even a failure racing it).
        target.in_sync_pending.set(true);
        let recorded = self.update_superblocks(|_| {}).await;
        target.in_sync_pending.set(false);
        // A write may have failed it while the record was written.
        if target.state() != MemberState::Rebuilding {
            self.job.set(None);
            return Ok(false);
        }
        if let Err(e) = recorded {
            log::error!("{}: rebuild end not recorded: {e}", self.name());
        }
        // Looked at after the record: the member it replaces may have failed meanwhile,
        // and the replacement taken its slot already.
        let in_slot = self
            .slots
            .borrow()
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|m| Rc::ptr_eq(m, target));
        target.is_replacement.set(false);
        target.state.set(MemberState::Active);
        if !in_slot && let Some(old) = replacing {
            // The replacement takes the slot; the member it replaced becomes a spare. A
            // write that skips it from now on waits for this to be on disk before its
            // acknowledgement, as for a member failure: until then a crash finds the old
            // member recorded in the slot.
            self.unrecorded_failures
                .set(self.unrecorded_failures.get() + 1);
            self.slots.borrow_mut()[slot] = Some(target.clone());
            old.replacement.borrow_mut().take();
            old.state.set(MemberState::Spare);
            self.spares.borrow_mut().push(old.clone());
            log::info!(
                "{}: {} replaced {} in slot {slot}; {} is now a spare",
                self.name(),
                target.name,
                old.name,
                old.name
            );
            if let Err(e) = self.update_superblocks(|_| {}).await {
                log::error!("{}: replacement not recorded: {e}", self.name());
            }
            self.failures_done(1);
        }
        log::info!("{}: rebuild of {} finished", self.name(), target.name);
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::RebuildFinished {
                slot: slot as u32,
                member: target.name.clone(),
            },
        );
        self.check_health();
        self.job.set(None);
        Ok(true)
    }

    /// Rebuilds stripes `[first, end)` of a parity array whose members offer
    /// [`Offload`](crate::block::Offload) (the host's files) with one job per cell
    /// ([`Offload::write_xor_of`](crate::block::Offload::write_xor_of): reads, xor and
    /// write off the engine), under the same stripe lock as `rebuild_stripes`. Applies
    /// where every cell P covers is readable and every device offers the jobs; there are
    /// no retries or per-sector fallback.
    /// `Err` gives the first stripe not rebuilt: the caller does the rest the general way
    /// (stripes after it that were written are simply written again).
    pub(super) async fn rebuild_stripes_offloaded(
        &self,
        l: &crate::layout::Raid5Layout,
        (first, end): (u64, u64),
        target: &Rc<Member>,
        slot: usize,
    ) -> Result<(), u64> {
        let Some(target_jobs) = offload_target(target) else {
            return Err(first);
        };
        let _g = self.lock.lock(first, end).await;
        for stripe in first..end {
            self.stripe_cache_invalidate(stripe);
        }
        let chunk = l.chunk_sectors();
        let bytes = l.cell_bytes();
        let engine = self.parity.get();
        let jobs: Vec<_> = (first..end)
            .map(|stripe| async move {
                let q = l.q_disk(stripe);
                let at = l.member_sector(stripe, 0);
                let members: Vec<Rc<Member>> = (0..l.disk_count())
                    .filter(|&d| d != slot && Some(d) != q)
                    .map(|d| self.readable(d, at, chunk))
                    .collect::<Option<_>>()
                    .filter(|_| q != Some(slot))
                    .ok_or(stripe)?;
                let sources: Vec<(&dyn crate::block::BlockDevice, u64)> = members
                    .iter()
                    .map(|m| (&*m.dev, m.data_offset() + at))
                    .collect();
                let job = target_jobs
                    .write_xor_of(target.data_offset() + at, &sources, bytes, engine)
                    .ok_or(stripe)?;
                let started_ns = target.monitor.start();
                let r = target.within_timeout(job).await;
                // Counted as the reads and the write they stand for.
                for m in &members {
                    m.count(|c| c.reads += 1);
                    m.monitor.finish(false, bytes as u64, started_ns, r.is_ok());
                }
                target.count(|c| c.writes += 1);
                target
                    .monitor
                    .finish(true, bytes as u64, started_ns, r.is_ok());
                if matches!(r, Err(crate::block::IoError::Timeout)) {
                    // The job may still write after the general path redid the stripe and a
                    // client wrote over it: the target is failed, as for a write timeout.
                    self.fail_member_rc(target).await;
                }
                r.map_err(|_| stripe)
            })
            .collect();
        let mut first_error = None;
        for r in crate::executor::join_all(jobs).await {
            if let Err(stripe) = r {
                first_error = Some(first_error.map_or(stripe, |f: u64| f.min(stripe)));
            }
        }
        match first_error {
            Some(stripe) => Err(stripe),
            None => Ok(()),
        }
    }

    /// Copy levels: rebuilds member sectors `[at, end)` of `target` from other copies, one
    /// contiguous piece at a time, each under the exclusive lock of its array range; the
    /// cursor moves past each piece under that lock. False when a piece had no readable
    /// source or the target failed.
    async fn rebuild_copies(
        &self,
        slot: usize,
        target: &Rc<Member>,
        at: u64,
        end: u64,
        source: Option<&Rc<Member>>,
    ) -> bool {
        // RAID10 maps contiguously within a chunk; RAID1 everywhere.
        let chunk = match &self.layout {
            ArrayLayout::Raid10(_) => self
                .superblock()
                .map(|sb| u64::from(sb.chunk_sectors.max(1))),
            _ => None,
        };
        let mut y = at;
        while y < end {
            let mut len = match chunk {
                Some(c) => (end - y).min(c - y % c),
                None => end - y,
            };
            let Some((_, x)) = self.layout.unmap(slot, y) else {
                // Holds no data (e.g. past the used area).
                target.recovery_offset.set(y + len);
                y += len;
                continue;
            };
            let Some(ext) = self.layout.map(x) else {
                target.recovery_offset.set(y + len);
                y += len;
                continue;
            };
            assert!(
                ext.copies
                    .iter()
                    .any(|c| c.disk_index == slot && c.sector == y),
                "unmap and map agree"
            );
            len = len.min(ext.sectors);
            let _g = self.lock.lock(x, x + len).await;
            let bytes = len as usize * SECTOR_BYTES;
            let mut data = match source {
                Some(src) => src.read_data(y, vec![0u8; bytes]).await.ok(),
                None => None,
            };
            for c in ext.copies.iter().filter(|c| c.disk_index != slot) {
                if data.is_some() {
                    break;
                }
                if let Some(m) = self.readable(c.disk_index, c.sector, len)
                    && let Ok(d) = m.read_data(c.sector, vec![0u8; bytes]).await
                {
                    data = Some(d);
                    break;
                }
            }
            let Some(data) = data else {
                log::error!(
                    "{}: rebuild: no readable copy of array sectors {x}+{len}",
                    self.name()
                );
                return false;
            };
            if target
                .write_data(y, Bytes::from(data), false)
                .await
                .is_err()
            {
                self.fail_member_rc(target).await;
                return false;
            }
            target.recovery_offset.set(y + len);
            y += len;
        }
        true
    }
}

/// The jobs `target` runs off the engine when a parity rebuild onto it can use them
/// ([`Array::rebuild_stripes_offloaded`]). Not for a member being replaced: a write to it
/// must reach its replacement too, which the general path does.
fn offload_target(target: &Member) -> Option<&dyn crate::block::Offload> {
    if target.replacement.borrow().is_some() {
        return None;
    }
    target.dev.offload()
}

/// A device to add.
pub type NamedDeviceDev = Rc<dyn crate::block::BlockDevice>;

/// One region of a rebuild in flight: true when it is written.
type Region<'a> = Pin<Box<dyn Future<Output = bool> + 'a>>;

/// A rebuild's regions in flight, oldest first; they are polled together but retired in
/// order, so the cursor only ever moves over regions that are written and have no gap
/// before them.
#[derive(Default)]
struct Window<'a> {
    /// End sector, the region while it runs, its outcome once it has one.
    regions: VecDeque<(u64, Option<Region<'a>>, Option<bool>)>,
}

impl<'a> Window<'a> {
    fn len(&self) -> usize {
        self.regions.len()
    }

    fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    fn push(&mut self, end_sectors: u64, region: Region<'a>) {
        self.regions.push_back((end_sectors, Some(region), None));
    }

    fn poll_regions(&mut self, cx: &mut Context<'_>) {
        for (_, region, outcome) in self.regions.iter_mut() {
            if let Some(r) = region
                && let Poll::Ready(ok) = r.as_mut().poll(cx)
            {
                *outcome = Some(ok);
                // Dropped at once: it releases its stripe lock.
                *region = None;
            }
        }
    }

    /// Runs `other` to completion while the regions go on (they finish, but none retires).
    async fn drive<T>(&mut self, other: impl Future<Output = T>) -> T {
        let mut other = pin!(other);
        poll_fn(|cx| {
            self.poll_regions(cx);
            other.as_mut().poll(cx)
        })
        .await
    }

    /// Waits for the oldest region: its end and whether it was written; `None` when none
    /// is in flight.
    async fn retire(&mut self) -> Option<(u64, bool)> {
        poll_fn(|cx| {
            self.poll_regions(cx);
            match self.regions.front() {
                None => Poll::Ready(None),
                Some((end, _, Some(ok))) => {
                    let done = (*end, *ok);
                    self.regions.pop_front();
                    Poll::Ready(Some(done))
                }
                Some(_) => Poll::Pending,
            }
        })
        .await
    }
}
