//! The DiskManager side of one array: policies (failure detection, rebuild priority and
//! rate, spare policy), member management (fail, add, remove, replace, spares), and the
//! member changes the background jobs (`crate::jobs`) ask for: a spare into a slot, a
//! rebuilt member in sync.
//!
//! Every state change is written to the superblocks (events bumped) before it is acted on:
//! a spare is recorded in its slot before the rebuild writes to it, a finished rebuild is
//! recorded before the member serves reads above its old cursor.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::{Array, ArrayError, Member, MemberState, SUPERBLOCK_SECTOR};
use crate::block::Bytes;
use crate::layout::ArrayLayout;
use crate::metadata::{DeviceRole, FeatureMap, Superblock};
use crate::monitor::Event;
use crate::rng::SplitMix64;

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

    /// Makes `dev` (offered as `name`) a member of this array holding no data: refused when
    /// it already has a role here (by its identity or by its md superblock) or is too small;
    /// otherwise its superblock is written and it joins, not yet listed anywhere.
    pub(crate) async fn prepare_spare(
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

    /// Detaches every replacement that failed a write and records that in the superblocks
    /// (the roles are rebuilt from the member states): otherwise a restart could resume it
    /// from its checkpoint although it missed a write below it. Called before a write that
    /// reached it is acknowledged.
    pub(crate) async fn record_failed_replacements(&self) {
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

    /// Puts `spare` (one of this array's spares, or a device just prepared for it) into
    /// `slot`, to be rebuilt from the start; a failed member there stays listed until
    /// removed. Recorded before anything is written to it.
    pub(crate) async fn install_spare(
        &self,
        slot: usize,
        spare: &Rc<Member>,
    ) -> Result<(), ArrayError> {
        self.spares.borrow_mut().retain(|m| !Rc::ptr_eq(m, spare));
        let old = self.slots.borrow_mut()[slot].replace(spare.clone());
        if let Some(old) = old {
            // A failed member stays listed until removed.
            self.spares.borrow_mut().push(old);
        }
        spare.set_recovery_start(0);
        spare.state.set(MemberState::Rebuilding);
        self.update_superblocks(|_| {}).await
    }

    /// `target`, rebuilt in `slot` up to its end (with `replacing`: as the replacement of
    /// that member), becomes a member in sync: flushed, then recorded, before it serves reads
    /// everywhere; a replacement then takes the slot and the member it replaced becomes a
    /// spare. False when it failed on the way (a write may fail it meanwhile).
    pub(crate) async fn complete_rebuild(
        &self,
        slot: usize,
        target: &Rc<Member>,
        replacing: Option<&Rc<Member>>,
    ) -> bool {
        if target.within_timeout(target.dev.flush()).await.is_err() {
            self.fail_member_rc(target).await;
            return false;
        }
        // A write may have failed it while the flush ran.
        if target.state() != MemberState::Rebuilding {
            return false;
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
            return false;
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
        true
    }
}

/// A device to add.
pub type NamedDeviceDev = Rc<dyn crate::block::BlockDevice>;
