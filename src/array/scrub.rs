//! Scrub: the `check` and `repair` background jobs of every redundant level, and their report.
//!
//! A scrub walks the array with a cursor, one mirror region or one parity stripe at a time
//! under the exclusive range/stripe lock (so a foreground write lands wholly before or after
//! the comparison, never in the middle of it), and compares the redundancy it finds:
//! * RAID 1/10: every live copy against the first readable copy in md's order; `repair`
//!   rewrites the copies that differ from it (md's choice of source).
//! * RAID 4/5: P against the xor of the data; `repair` rewrites P.
//! * RAID 6: P and Q against the data. When one block is wrong the syndromes name it
//!   ([`crate::parity::locate`]) and `repair` rewrites that block; when they cannot, `repair`
//!   regenerates P and Q as md does. With one member missing, the one parity that can still
//!   be checked is.
//!
//! Mismatches are counted in sectors as md's `mismatch_cnt`: a whole 4 KiB compare unit
//! ([`COMPARE_SECTORS`]) per unit that differs. Read errors met on the way are handled as in
//! foreground reads: the content is rebuilt from the redundancy and written back.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt;

use serde::{Deserialize, Serialize};

use super::buffers::ChunkBuffers;
use super::resync::{JobKind, JobProgress};
use super::stripe::CellRead;
use super::{Array, Member, MemberState};
use crate::block::{Bytes, IoError, SECTOR_BYTES};
use crate::executor::{AsyncMutex, join_all};
use crate::layout::{ArrayLayout, Extent, Raid5Layout};
use crate::metadata::extension::{
    STORED_REGIONS_MAX, ScrubCheckpoint, StoredBadRegion, StoredRegions, StoredWrongMember,
};
use crate::monitor::events::Event;
use crate::parity::locate::{Culprit, locate};

/// The unit a scrub compares and counts: md's stripe page (4 KiB).
pub const COMPARE_SECTORS: u64 = 8;
/// Bad regions a report lists; more are only counted.
pub const BAD_REGIONS_KEPT: usize = 64;
/// Array sectors of a mirror scrubbed under one lock (1 MiB).
const MIRROR_REGION_SECTORS: u64 = 2048;
/// Parity stripes scrubbed at once, each under its own lock: keeps every member busy while
/// a stripe is being compared, with buffers for a few stripes only.
const STRIPES_IN_FLIGHT: u64 = 4;

const COMPARE_BYTES: usize = COMPARE_SECTORS as usize * SECTOR_BYTES;

/// Which scrub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrubMode {
    /// Count and name mismatches; change nothing (except rewriting unreadable sectors).
    Check,
    /// As check, and make every mismatch consistent again.
    Repair,
}

impl ScrubMode {
    pub fn name(self) -> &'static str {
        match self {
            ScrubMode::Check => "check",
            ScrubMode::Repair => "repair",
        }
    }

    fn job_kind(self) -> JobKind {
        match self {
            ScrubMode::Check => JobKind::Check,
            ScrubMode::Repair => JobKind::Repair,
        }
    }
}

/// Where a scrub is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrubOutcome {
    Running,
    /// Walked the whole array.
    Finished,
    /// Stopped by `cancel_scrub` (or the array stopping).
    Cancelled,
    /// Stopped because the array lost the redundancy to check against.
    Aborted,
}

impl ScrubOutcome {
    pub fn name(self) -> &'static str {
        match self {
            ScrubOutcome::Running => "running",
            ScrubOutcome::Finished => "finished",
            ScrubOutcome::Cancelled => "cancelled",
            ScrubOutcome::Aborted => "aborted",
        }
    }
}

/// What a wrong block holds in its stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    Data,
    P,
    Q,
}

/// The member a RAID6 scrub found holding the one wrong block of a stripe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrongMember {
    /// The member's slot (role) in the array.
    pub slot: usize,
    /// The member's name (path).
    pub name: String,
    pub block: BlockKind,
    /// For a data block, its Q coefficient index (md's syndrome slot).
    pub syndrome_slot: Option<u8>,
}

/// A run of mismatched compare units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRegion {
    /// The parity stripe (RAID 4/5/6); `None` for mirrors.
    pub stripe: Option<u64>,
    /// First array sector of the region (of the stripe, for a parity level).
    pub array_sector: u64,
    /// Where the region starts on the members (relative to the data offset): on every
    /// member of a parity stripe, on the first copy of a mirror.
    pub member_sector: u64,
    pub sectors: u64,
    /// The wrong member, when the level can tell (RAID6 with every member present).
    pub wrong: Option<WrongMember>,
    /// The group array the region is in, in the combined report of a RAID 50/60 (its
    /// sectors are then the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The result of the last (or the running) scrub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    pub mode: ScrubMode,
    pub outcome: ScrubOutcome,
    /// Array sectors compared so far.
    pub checked_sectors: u64,
    /// Sectors found inconsistent, counted as md's `mismatch_cnt` (whole compare units).
    pub mismatched_sectors: u64,
    /// The first [`BAD_REGIONS_KEPT`] bad regions, in array order.
    pub bad_regions: Vec<BadRegion>,
    /// Bad regions found beyond those listed.
    pub bad_regions_omitted: u64,
    /// Mismatched sectors made consistent (repair only).
    pub repaired_sectors: u64,
    /// Sectors that failed a read and were rebuilt and rewritten.
    pub read_errors_corrected: u64,
    /// Array sectors that could not be compared (too little readable).
    pub unchecked_sectors: u64,
}

impl ScrubReport {
    fn new(mode: ScrubMode) -> Self {
        ScrubReport {
            mode,
            outcome: ScrubOutcome::Running,
            checked_sectors: 0,
            mismatched_sectors: 0,
            bad_regions: Vec::new(),
            bad_regions_omitted: 0,
            repaired_sectors: 0,
            read_errors_corrected: 0,
            unchecked_sectors: 0,
        }
    }

    /// One report for the groups of a RAID 50/60, from each group's (name, report): counts
    /// summed, bad regions tagged with their group (group order, then the group's order),
    /// running while any group runs, else the worst way a group ended. `None` when no group
    /// has a report.
    pub fn combine(groups: &[(String, ScrubReport)]) -> Option<ScrubReport> {
        let (_, first) = groups.first()?;
        let mut all = ScrubReport::new(first.mode);
        let rank = |o: ScrubOutcome| match o {
            ScrubOutcome::Finished => 0,
            ScrubOutcome::Cancelled => 1,
            ScrubOutcome::Aborted => 2,
            ScrubOutcome::Running => 3,
        };
        all.outcome = ScrubOutcome::Finished;
        for (name, r) in groups {
            if rank(r.outcome) > rank(all.outcome) {
                all.outcome = r.outcome;
            }
            all.checked_sectors += r.checked_sectors;
            all.mismatched_sectors += r.mismatched_sectors;
            all.repaired_sectors += r.repaired_sectors;
            all.read_errors_corrected += r.read_errors_corrected;
            all.unchecked_sectors += r.unchecked_sectors;
            all.bad_regions_omitted += r.bad_regions_omitted;
            for region in &r.bad_regions {
                if all.bad_regions.len() < BAD_REGIONS_KEPT {
                    all.bad_regions.push(BadRegion {
                        group: Some(name.clone()),
                        ..region.clone()
                    });
                } else {
                    all.bad_regions_omitted += 1;
                }
            }
        }
        Some(all)
    }

    /// Adds a region, keeping the list the first [`BAD_REGIONS_KEPT`] in array order
    /// (stripes are scrubbed a few at a time, so regions may arrive out of order).
    fn add_region(&mut self, region: BadRegion) {
        let key = |r: &BadRegion| (r.array_sector, r.member_sector);
        let at = self.bad_regions.partition_point(|r| key(r) <= key(&region));
        // A run that continues the one before it (the next compare unit, same verdict)
        // grows it.
        if let Some(prev) = at.checked_sub(1).map(|i| &mut self.bad_regions[i])
            && prev.stripe == region.stripe
            && prev.wrong == region.wrong
            && prev.member_sector + prev.sectors == region.member_sector
            && (region.stripe.is_some() || prev.array_sector + prev.sectors == region.array_sector)
        {
            prev.sectors += region.sectors;
            return;
        }
        if at >= BAD_REGIONS_KEPT {
            self.bad_regions_omitted += 1;
            return;
        }
        self.bad_regions.insert(at, region);
        if self.bad_regions.len() > BAD_REGIONS_KEPT {
            self.bad_regions.pop();
            self.bad_regions_omitted += 1;
        }
    }
}

/// Why a scrub did not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScrubError {
    /// The level keeps no redundancy (RAID0, a one-member mirror).
    NotRedundant,
    /// Members are missing and what is left has no redundancy to compare.
    Degraded { missing: usize },
    /// Another background job runs.
    Busy(JobKind),
    /// An unclean shutdown was seen and its resync has not run: mismatches are expected.
    ResyncPending,
}

impl fmt::Display for ScrubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScrubError::NotRedundant => f.write_str("the array has no redundancy to check"),
            ScrubError::Degraded { missing } => write!(
                f,
                "the array is degraded ({missing} member(s) missing or failed) and has no \
                 redundancy left to check against; rebuild it first"
            ),
            ScrubError::Busy(kind) => write!(f, "a {} is already running", kind.name()),
            ScrubError::ResyncPending => {
                f.write_str("a resync after an unclean shutdown has not run yet")
            }
        }
    }
}

/// A listed bad region as the extension record stores it.
fn region_to_stored(r: &BadRegion) -> StoredBadRegion {
    StoredBadRegion {
        stripe: r.stripe,
        array_sector: r.array_sector,
        member_sector: r.member_sector,
        sectors: r.sectors,
        wrong: r.wrong.as_ref().map(|w| StoredWrongMember {
            slot: w.slot.min(u16::MAX as usize - 1) as u16,
            block: match w.block {
                BlockKind::Data => 0,
                BlockKind::P => 1,
                BlockKind::Q => 2,
            },
            syndrome_slot: w.syndrome_slot,
        }),
    }
}

/// Scrub state kept in the array.
pub(super) struct ScrubState {
    report: RefCell<Option<ScrubReport>>,
    cancel: Cell<bool>,
    /// Held while a scrub walks the array: `stop_scrub` waits on it.
    running: AsyncMutex<()>,
    /// Where an interrupted scrub resumes: recorded in the extension record with every
    /// superblock update, so a stop or a crash resumes there (see `persist.rs`).
    checkpoint: Cell<Option<ScrubCheckpoint>>,
    /// The bad regions the scrub had listed when `checkpoint` was taken: a resumed scrub
    /// reports them too.
    checkpoint_regions: RefCell<StoredRegions>,
    /// Set by `stop_scrub`: the scrub ends keeping its checkpoint (a user's cancel clears it).
    stopping: Cell<bool>,
}

impl ScrubState {
    pub(super) fn new() -> Self {
        ScrubState {
            report: RefCell::new(None),
            cancel: Cell::new(false),
            running: AsyncMutex::new(()),
            checkpoint: Cell::new(None),
            checkpoint_regions: RefCell::new(StoredRegions::default()),
            stopping: Cell::new(false),
        }
    }
}

/// One block write a repair makes: member, chunk offset, content.
type CellWrite = (usize, u64, Vec<u8>);

impl Array {
    /// The member in `slot` if it is in sync: a scrub compares only those.
    fn active_member(&self, slot: usize) -> Option<Rc<Member>> {
        self.member(slot)
            .filter(|m| m.state() == MemberState::Active)
    }

    /// Scrubs the whole array, counting mismatches; returns the report when done.
    pub async fn check(&self) -> Result<ScrubReport, ScrubError> {
        self.scrub(ScrubMode::Check).await
    }

    /// Scrubs the whole array and makes every mismatch consistent; returns the report.
    /// (`repair` alone is the engine's read-error repair of one extent.)
    pub async fn repair_mismatches(&self) -> Result<ScrubReport, ScrubError> {
        self.scrub(ScrubMode::Repair).await
    }

    /// Runs a whole scrub of either kind and returns its report.
    pub async fn scrub(&self, mode: ScrubMode) -> Result<ScrubReport, ScrubError> {
        self.begin_scrub(mode, None)?;
        Ok(self.run_scrub(mode, 0).await)
    }

    /// Starts a scrub as a background task on the array's executor and returns at once;
    /// follow it with [`Array::job`] and [`Array::scrub_report`].
    pub fn start_scrub(self: &Rc<Self>, mode: ScrubMode) -> Result<(), ScrubError> {
        self.begin_scrub(mode, None)?;
        let array = self.clone();
        self.exec.spawn_detached(async move {
            array.run_scrub(mode, 0).await;
        });
        Ok(())
    }

    /// Resumes, in the background, a scrub interrupted by a stop or a crash (its checkpoint
    /// came from the extension record at assembly), as md resumes a resync. When it cannot
    /// run now (a resync or rebuild goes first, the array is degraded) the checkpoint is
    /// dropped: md does not resume an interrupted check after a recovery either. Returns
    /// whether a scrub was resumed.
    pub fn resume_scrub(&self) -> bool {
        let Some(cp) = self.scrub.checkpoint.get() else {
            return false;
        };
        if self.scrub_running() {
            return false;
        }
        let Some(me) = self.this.upgrade() else {
            return false;
        };
        let mode = if cp.repair {
            ScrubMode::Repair
        } else {
            ScrubMode::Check
        };
        if cp.cursor_sectors >= self.layout.array_sectors() {
            self.scrub.checkpoint.set(None);
            return false;
        }
        if let Err(e) = self.begin_scrub(mode, Some(cp)) {
            log::info!(
                "{}: interrupted {} not resumed ({e}); dropped",
                self.name(),
                mode.name()
            );
            self.scrub.checkpoint.set(None);
            return false;
        }
        log::info!(
            "{}: {} resumes at array sector {}",
            self.name(),
            mode.name(),
            cp.cursor_sectors
        );
        self.exec.spawn_detached(async move {
            me.run_scrub(mode, cp.cursor_sectors).await;
        });
        true
    }

    /// Where an interrupted scrub resumes, as the extension record stores it.
    pub fn scrub_checkpoint(&self) -> Option<ScrubCheckpoint> {
        self.scrub.checkpoint.get()
    }

    /// The bad regions listed before the checkpoint, as the extension record stores them.
    pub fn scrub_checkpoint_regions(&self) -> StoredRegions {
        self.scrub.checkpoint_regions.borrow().clone()
    }

    /// Sets (at assembly) or clears the scrub checkpoint and the bad regions found before
    /// it; written with the next superblock update.
    pub fn set_scrub_checkpoint(
        &self,
        checkpoint: Option<ScrubCheckpoint>,
        regions: StoredRegions,
    ) {
        self.scrub.checkpoint.set(checkpoint);
        *self.scrub.checkpoint_regions.borrow_mut() = regions;
    }

    /// Asks a running scrub to stop after the region it is on, forgetting its position.
    /// Returns whether one runs. (A checkpoint of an interrupted scrub that has not resumed
    /// is dropped with `set_scrub_checkpoint(None)` and a superblock update.)
    pub fn cancel_scrub(&self) -> bool {
        let running = self.scrub_running();
        if running {
            self.scrub.cancel.set(true);
        }
        running
    }

    /// Stops a running scrub and waits until it has let go of the array (before a stop:
    /// no repair write may land after the array is marked clean). Unlike a cancel, the
    /// scrub keeps its position: the next start resumes it.
    pub async fn stop_scrub(&self) {
        if self.scrub_running() {
            self.scrub.stopping.set(true);
            self.scrub.cancel.set(true);
            let _ = self.scrub.running.lock().await;
        }
    }

    /// The report of the running scrub, or else of the last one since assembly.
    pub fn scrub_report(&self) -> Option<ScrubReport> {
        self.scrub.report.borrow().clone()
    }

    /// Mismatched sectors found by the running or last scrub (md's `mismatch_cnt`).
    pub fn mismatches(&self) -> u64 {
        self.scrub
            .report
            .borrow()
            .as_ref()
            .map_or(0, |r| r.mismatched_sectors)
    }

    pub(super) fn scrub_running(&self) -> bool {
        self.scrub
            .report
            .borrow()
            .as_ref()
            .is_some_and(|r| r.outcome == ScrubOutcome::Running)
    }

    /// Whether what is alive still has redundancy: every block survives one more loss.
    fn can_scrub(&self) -> Result<(), ScrubError> {
        if !self.redundant {
            return Err(ScrubError::NotRedundant);
        }
        // A member being rebuilt (or a replacement being copied) holds data only below its
        // cursor: comparing against it would report false mismatches and a repair could
        // spread them. Recovery goes first, as in md.
        let rebuilding = self.slots.borrow().iter().flatten().any(|m| {
            m.state() == MemberState::Rebuilding
                || m.replacement
                    .borrow()
                    .as_ref()
                    .is_some_and(|r| r.state() == MemberState::Rebuilding)
        });
        if rebuilding {
            return Err(ScrubError::Busy(JobKind::Rebuild));
        }
        let alive = self.alive();
        let missing = alive.iter().filter(|&&a| !a).count();
        let still_redundant = (0..alive.len()).filter(|&i| alive[i]).all(|extra| {
            let mut fewer = alive.clone();
            fewer[extra] = false;
            self.layout.survives(&fewer)
        });
        if missing > 0 && !still_redundant {
            return Err(ScrubError::Degraded { missing });
        }
        Ok(())
    }

    /// Validates and claims the job slot, from the start or from a checkpoint; the scrub
    /// itself runs in [`Self::run_scrub`].
    fn begin_scrub(
        &self,
        mode: ScrubMode,
        from: Option<ScrubCheckpoint>,
    ) -> Result<(), ScrubError> {
        if let Some(job) = self.job.get() {
            return Err(ScrubError::Busy(job.kind));
        }
        if self.needs_resync.get() {
            return Err(ScrubError::ResyncPending);
        }
        self.can_scrub()?;
        let now = self.exec.now_ns();
        let from_sector = from.map_or(0, |c| c.cursor_sectors);
        self.job.set(Some(JobProgress {
            kind: mode.job_kind(),
            done_sectors: from_sector,
            total_sectors: self.layout.array_sectors(),
            started_ns: now,
            now_ns: now,
            resumed_sectors: from_sector,
        }));
        self.scrub.cancel.set(false);
        self.scrub.stopping.set(false);
        let mut report = ScrubReport::new(mode);
        if let Some(c) = from {
            report.checked_sectors = c.cursor_sectors;
            report.mismatched_sectors = c.mismatched_sectors;
            report.repaired_sectors = c.repaired_sectors;
            report.read_errors_corrected = c.read_errors_corrected;
            let stored = self.scrub.checkpoint_regions.borrow();
            report.bad_regions = stored
                .listed
                .iter()
                .take(BAD_REGIONS_KEPT)
                .map(|r| self.region_from_stored(r))
                .collect();
            report.bad_regions_omitted = stored.omitted;
        } else {
            *self.scrub.checkpoint_regions.borrow_mut() = StoredRegions::default();
        }
        *self.scrub.report.borrow_mut() = Some(report);
        // A fresh scrub replaces an old position; a resumed one keeps it until its first
        // checkpoint.
        self.scrub.checkpoint.set(from);
        Ok(())
    }

    /// One monitoring event per mismatched stripe (or mirror extent), while the report
    /// still lists every bad region: a badly damaged array must not flood the event ring.
    fn emit_mismatch(&self, sector: u64, sectors: u64, slot: Option<usize>) {
        let listing = self
            .scrub
            .report
            .borrow()
            .as_ref()
            .is_some_and(|r| r.bad_regions_omitted == 0);
        if listing {
            self.monitor.emit(
                self.name(),
                self.wall_clock_base_s(),
                Event::MismatchFound {
                    sector,
                    sectors,
                    slot: slot.map(|s| s as u32),
                },
            );
        }
    }

    fn note(&self, f: impl FnOnce(&mut ScrubReport)) {
        if let Some(r) = self.scrub.report.borrow_mut().as_mut() {
            f(r);
        }
    }

    /// Takes the checkpoint of a scrub that has done everything below `cursor_sectors`,
    /// with the bad regions it has listed so far (all below the cursor).
    fn take_checkpoint(&self, mode: ScrubMode, cursor_sectors: u64) {
        let checkpoint = self.checkpoint_at(mode, cursor_sectors);
        let regions = self
            .scrub_report()
            .map(|r| StoredRegions {
                listed: r
                    .bad_regions
                    .iter()
                    .take(STORED_REGIONS_MAX)
                    .map(region_to_stored)
                    .collect(),
                omitted: r.bad_regions_omitted,
            })
            .unwrap_or_default();
        self.set_scrub_checkpoint(checkpoint, regions);
    }

    /// A stored bad region as the report lists it; the wrong member's name is its slot's
    /// current one.
    fn region_from_stored(&self, r: &StoredBadRegion) -> BadRegion {
        BadRegion {
            stripe: r.stripe,
            array_sector: r.array_sector,
            member_sector: r.member_sector,
            sectors: r.sectors,
            wrong: r.wrong.map(|w| WrongMember {
                slot: w.slot as usize,
                name: self
                    .slots
                    .borrow()
                    .get(w.slot as usize)
                    .and_then(|m| m.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default(),
                block: match w.block {
                    0 => BlockKind::Data,
                    1 => BlockKind::P,
                    _ => BlockKind::Q,
                },
                syndrome_slot: w.syndrome_slot,
            }),
            group: None,
        }
    }

    /// The checkpoint of a scrub that has done everything below `cursor_sectors`.
    fn checkpoint_at(&self, mode: ScrubMode, cursor_sectors: u64) -> Option<ScrubCheckpoint> {
        let report = self.scrub_report()?;
        Some(ScrubCheckpoint {
            repair: mode == ScrubMode::Repair,
            cursor_sectors,
            mismatched_sectors: report.mismatched_sectors,
            repaired_sectors: report.repaired_sectors,
            read_errors_corrected: report.read_errors_corrected,
        })
    }

    /// Walks the array, from `from_sector` (0, or a checkpoint's cursor), for a scrub
    /// claimed by [`Self::begin_scrub`].
    async fn run_scrub(&self, mode: ScrubMode, from_sector: u64) -> ScrubReport {
        let _running = self.scrub.running.lock().await;
        let total = self.layout.array_sectors();
        log::info!("{}: {} started", self.name(), mode.name());
        let repair = mode == ScrubMode::Repair;
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::CheckStarted { repair },
        );
        let mut outcome = ScrubOutcome::Finished;
        // Every cell of the stripes in flight, P and Q included.
        let cell_bytes = match &self.layout {
            ArrayLayout::Raid5(l) => l.cell_bytes(),
            _ => 0,
        };
        let pool = ChunkBuffers::new(
            STRIPES_IN_FLIGHT as usize * (self.layout.disk_count() + 2) * cell_bytes,
        );
        let mut sector = from_sector.min(total);
        let mut stripe = match &self.layout {
            ArrayLayout::Raid5(l) => sector / l.stripe_data_sectors(),
            _ => 0,
        };
        let mut regions_since_checkpoint = 0u32;
        let started_ns = self.exec.now_ns();
        while sector < total {
            if self.scrub.cancel.get() {
                outcome = ScrubOutcome::Cancelled;
                break;
            }
            if self.can_scrub().is_err() {
                outcome = ScrubOutcome::Aborted;
                break;
            }
            match &self.layout {
                ArrayLayout::Raid5(l) => {
                    let end = (stripe + STRIPES_IN_FLIGHT).min(l.stripe_count());
                    join_all(
                        (stripe..end)
                            .map(|s| self.scrub_stripe(l, s, mode, &pool))
                            .collect(),
                    )
                    .await;
                    stripe = end;
                    sector = if end == l.stripe_count() {
                        total
                    } else {
                        (stripe * l.stripe_data_sectors()).min(total)
                    };
                }
                _ => {
                    let len = MIRROR_REGION_SECTORS.min(total - sector);
                    self.scrub_mirror_region(sector, len, mode).await;
                    sector += len;
                }
            }
            if let Some(mut j) = self.job.get() {
                j.done_sectors = sector;
                self.job.set(Some(j));
            }
            // Paced as the other background jobs: priority and rate limit.
            self.throttle(sector - from_sector.min(total), started_ns)
                .await;
            regions_since_checkpoint += 1;
            if regions_since_checkpoint >= self.policy.get().checkpoint_regions && sector < total {
                regions_since_checkpoint = 0;
                self.take_checkpoint(mode, sector);
                if let Err(e) = self.update_superblocks(|_| {}).await {
                    log::warn!("{}: scrub checkpoint not recorded: {e}", self.name());
                }
            }
        }
        self.job.set(None);
        self.note(|r| r.outcome = outcome);
        if self.scrub.stopping.get() && outcome == ScrubOutcome::Cancelled {
            // Stopped with the array: resumes here at the next start (written by the
            // superblock update that marks the array clean).
            self.take_checkpoint(mode, sector);
        } else {
            self.scrub.checkpoint.set(None);
            if let Err(e) = self.update_superblocks(|_| {}).await {
                log::warn!("{}: scrub end not recorded: {e}", self.name());
            }
        }
        self.scrub.stopping.set(false);
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::CheckFinished {
                repair,
                mismatches: self.mismatches(),
            },
        );
        let report = self.scrub_report().expect("a begun scrub has a report");
        let level = if report.mismatched_sectors > 0 {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "{}: {} {}: {} sectors checked, {} mismatched, {} repaired, {} read errors corrected",
            self.name(),
            mode.name(),
            outcome.name(),
            report.checked_sectors,
            report.mismatched_sectors,
            report.repaired_sectors,
            report.read_errors_corrected
        );
        report
    }

    async fn scrub_mirror_region(&self, sector: u64, sectors: u64, mode: ScrubMode) {
        let _g = self.lock.lock(sector, sector + sectors).await;
        let extents = self.extents(sector, sectors);
        join_all(
            extents
                .iter()
                .map(|(s, ext)| self.scrub_extent(*s, ext, mode))
                .collect(),
        )
        .await;
    }

    /// Compares every live copy of one extent with the first readable one.
    async fn scrub_extent(&self, array_sector: u64, ext: &Extent, mode: ScrubMode) {
        let copies: Vec<(Rc<Member>, u64)> = ext
            .copies
            .iter()
            .filter_map(|c| {
                self.active_member(c.disk_index)
                    .map(|m| (m.clone(), c.sector))
            })
            .collect();
        if copies.len() < 2 {
            self.note(|r| r.unchecked_sectors += ext.sectors);
            return;
        }
        let bytes = ext.sectors as usize * SECTOR_BYTES;
        let reads: Vec<_> = copies
            .iter()
            .map(|(m, s)| async move { m.read_data(*s, vec![0u8; bytes]).await })
            .collect();
        let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(copies.len());
        let mut unreadable: Vec<usize> = Vec::new();
        for (i, r) in join_all(reads).await.into_iter().enumerate() {
            match r {
                Ok(d) => contents.push(Some(d)),
                Err(e) => {
                    let (m, s) = &copies[i];
                    log::warn!(
                        "{}: read error on {} at member sector {s}: {e}",
                        self.name(),
                        m.name
                    );
                    if matches!(e, IoError::DeviceFailed) {
                        self.fail_member_rc(m).await;
                    } else {
                        unreadable.push(i);
                    }
                    contents.push(None);
                }
            }
        }
        let Some(source) = contents.iter().position(Option::is_some) else {
            self.note(|r| r.unchecked_sectors += ext.sectors);
            return;
        };
        let good = Bytes::from(contents[source].take().expect("the source was read"));
        for &i in &unreadable {
            let (m, s) = &copies[i];
            if m.state() == MemberState::Active {
                self.rewrite(m, *s, ext.sectors, good.clone()).await;
                self.note(|r| r.read_errors_corrected += ext.sectors);
            }
        }
        let compared = contents.iter().filter(|c| c.is_some()).count();
        if compared == 0 && unreadable.is_empty() {
            // Only the source is left (the others failed now): nothing to compare with.
            self.note(|r| r.unchecked_sectors += ext.sectors);
            return;
        }
        self.note(|r| r.checked_sectors += ext.sectors);
        // Per compare unit: which copies differ from the source.
        let units = bytes.div_ceil(COMPARE_BYTES);
        let mut writes: Vec<(usize, usize, usize)> = Vec::new(); // (copy, from, to) bytes
        for u in 0..units {
            let from = u * COMPARE_BYTES;
            let to = (from + COMPARE_BYTES).min(bytes);
            let mut differs = false;
            for (i, c) in contents.iter().enumerate() {
                let Some(c) = c else { continue };
                if c[from..to] != good[from..to] {
                    differs = true;
                    match writes.last_mut() {
                        Some(w) if w.0 == i && w.2 == from => w.2 = to,
                        _ => writes.push((i, from, to)),
                    }
                }
            }
            if differs {
                let sectors = ((to - from) / SECTOR_BYTES) as u64;
                let off = (from / SECTOR_BYTES) as u64;
                self.note(|r| {
                    r.mismatched_sectors += sectors;
                    r.add_region(BadRegion {
                        stripe: None,
                        array_sector: array_sector + off,
                        member_sector: copies[0].1 + off,
                        sectors,
                        wrong: None,
                        group: None,
                    });
                });
            }
        }
        let extent_mismatched: u64 = (0..units)
            .filter(|&u| {
                let (from, to) = (u * COMPARE_BYTES, ((u + 1) * COMPARE_BYTES).min(bytes));
                writes.iter().any(|w| w.1 < to && from < w.2)
            })
            .map(|u| ((COMPARE_BYTES.min(bytes - u * COMPARE_BYTES)) / SECTOR_BYTES) as u64)
            .sum();
        if extent_mismatched > 0 {
            self.emit_mismatch(array_sector, extent_mismatched, None);
        }
        if mode == ScrubMode::Repair && !writes.is_empty() {
            if self.mark_dirty().await.is_err() {
                return;
            }
            // Units rewritten on several copies are counted once.
            let mut fixed = vec![false; units];
            let jobs: Vec<_> = writes
                .iter()
                .map(|&(i, from, to)| {
                    let (m, s) = copies[i].clone();
                    let data = good.slice(from..to);
                    let at = s + (from / SECTOR_BYTES) as u64;
                    async move { (m.clone(), m.write_data(at, data, false).await) }
                })
                .collect();
            for ((m, r), &(_, from, to)) in join_all(jobs).await.into_iter().zip(&writes) {
                match r {
                    Ok(()) => {
                        for f in &mut fixed[from / COMPARE_BYTES..to.div_ceil(COMPARE_BYTES)] {
                            *f = true;
                        }
                    }
                    Err(e) => {
                        log::warn!("{}: repair write failed on {}: {e}", self.name(), m.name);
                        // No space: the mismatch stays (reported), the member stays in.
                        if e.fails_member() {
                            self.fail_member_rc(&m).await;
                        }
                    }
                }
            }
            let sectors: u64 = (0..units)
                .filter(|&u| fixed[u])
                .map(|u| ((COMPARE_BYTES.min(bytes - u * COMPARE_BYTES)) / SECTOR_BYTES) as u64)
                .sum();
            self.note(|r| r.repaired_sectors += sectors);
        }
    }

    /// Reads one member's cell sector by sector after a read error, rebuilding and
    /// rewriting the sectors that fail. `None` when a sector cannot be rebuilt.
    async fn scrub_reread_cell(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        disk: usize,
    ) -> Option<Vec<u8>> {
        let chunk = l.chunk_sectors();
        let mut out = vec![0u8; l.cell_bytes()];
        for off in 0..chunk {
            let direct = match self.read_cells(l, stripe, off, 1, &[disk]).await.pop() {
                Some((_, CellRead::Ok(data))) => Some(data),
                _ => None,
            };
            let data = match direct {
                Some(d) => d,
                None => {
                    let rebuilt = self.reconstruct_cell(l, stripe, off, 1, disk).await.ok()?;
                    if let Some(m) = self.active_member(disk) {
                        let at = l.member_sector(stripe, off);
                        self.rewrite(&m, at, 1, Bytes::from(rebuilt.clone())).await;
                        self.note(|r| r.read_errors_corrected += 1);
                    }
                    rebuilt
                }
            };
            let at = off as usize * SECTOR_BYTES;
            out[at..at + SECTOR_BYTES].copy_from_slice(&data);
        }
        Some(out)
    }

    /// Checks (and repairs) one parity stripe, holding it alone, in buffers from `pool`.
    async fn scrub_stripe(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        mode: ScrubMode,
        pool: &ChunkBuffers,
    ) {
        let bytes = l.cell_bytes();
        let mut cells: Vec<Option<Vec<u8>>> = (0..l.disk_count())
            .map(|_| Some(pool.take(bytes)))
            .collect();
        let mut p = pool.take(bytes);
        let mut q = pool.take(if l.q_disk(stripe).is_some() { bytes } else { 0 });
        self.scrub_stripe_in(l, stripe, mode, &mut cells, &mut p, &mut q)
            .await;
        for buf in cells.into_iter().flatten().chain([p, q]) {
            pool.give(buf);
        }
    }

    /// [`Self::scrub_stripe`] with its buffers: `cells` (one per member) are read into,
    /// `p` and `q` receive the recomputed parity.
    async fn scrub_stripe_in(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        mode: ScrubMode,
        cells: &mut [Option<Vec<u8>>],
        p: &mut [u8],
        q: &mut [u8],
    ) {
        let _g = self.lock.lock(stripe, stripe + 1).await;
        // The scrub reads and rewrites member cells behind the stripe cache: forget the
        // stripe now and again when done (before the lock is let go).
        self.stripe_cache_invalidate(stripe);
        let _forget = ForgetStripe(self, stripe);
        let n = l.disk_count();
        let k = l.data_disks();
        let sds = l.stripe_data_sectors();
        let at = l.member_sector(stripe, 0);
        let reads: Vec<_> = (0..n)
            .map(|d| {
                let member = self.active_member(d);
                let buf = if member.is_some() {
                    cells[d].take()
                } else {
                    None
                };
                async move {
                    match (member, buf) {
                        (Some(m), Some(buf)) => {
                            let r = m.read_data(at, buf).await;
                            (d, Some(m), r)
                        }
                        _ => (d, None, Err(IoError::DeviceFailed)),
                    }
                }
            })
            .collect();
        let mut errored = Vec::new();
        for (d, member, r) in join_all(reads).await {
            match (member, r) {
                (_, Ok(data)) => cells[d] = Some(data),
                (None, Err(_)) => cells[d] = None,
                (Some(m), Err(e)) => {
                    log::warn!(
                        "{}: read error on {} at member sector {at}: {e}",
                        self.name(),
                        m.name
                    );
                    if matches!(e, IoError::DeviceFailed) {
                        self.fail_member_rc(&m).await;
                    } else {
                        errored.push(d);
                    }
                }
            }
        }
        for d in errored {
            cells[d] = self.scrub_reread_cell(l, stripe, d).await;
            if cells[d].is_none() && self.active_member(d).is_some() {
                // A sector neither readable nor rebuildable: comparing would blame parity
                // for a lost block.
                self.note(|r| r.unchecked_sectors += sds);
                return;
            }
        }
        let gone: Vec<usize> = (0..n).filter(|&d| cells[d].is_none()).collect();
        let p_disk = l.parity_disk(stripe);
        let q_disk = l.q_disk(stripe);
        let data_disks: Vec<usize> = (0..k).map(|i| l.data_disk(stripe, i)).collect();
        let slots: Vec<u8> = match q_disk {
            Some(_) => data_disks
                .iter()
                .map(|&d| {
                    l.syndrome_slot(stripe, d)
                        .expect("a data member has a syndrome slot")
                })
                .collect(),
            None => Vec::new(),
        };
        let engine = self.parity.get();
        let bytes = p.len();
        match gone.as_slice() {
            [] => {}
            [g] if q_disk.is_some() && *g != p_disk && Some(*g) != q_disk => {
                // A data member is missing: rebuild it from P, then Q is what can be checked.
                let others: Vec<&[u8]> = (0..n)
                    .filter(|&d| d != *g && Some(d) != q_disk)
                    .map(|d| cells[d].as_deref().expect("every other cell was read"))
                    .collect();
                let mut rebuilt = vec![0u8; bytes];
                engine.xor(&others, &mut rebuilt);
                cells[*g] = Some(rebuilt);
            }
            [_] if q_disk.is_some() => {}
            _ => {
                self.note(|r| r.unchecked_sectors += sds);
                return;
            }
        }
        let missing = gone.first().copied();
        let data: Vec<&[u8]> = data_disks
            .iter()
            .map(|&d| cells[d].as_deref().expect("data present or rebuilt"))
            .collect();
        if q_disk.is_some() {
            engine.pq_gen(&data, &slots, p, q);
        } else {
            engine.xor(&data, p);
        }
        let (p, q): (&[u8], &[u8]) = (p, q);
        // Which parities can be compared: those present and not used to rebuild a member.
        let check_p = missing.is_none() || missing == q_disk;
        let check_q = q_disk.is_some() && (missing.is_none() || missing != q_disk);
        let stored = |d: Option<usize>| d.and_then(|d| cells[d].as_deref());
        let stored_p = stored(Some(p_disk)).filter(|_| check_p);
        let stored_q = stored(q_disk).filter(|_| check_q);
        let zero = [0u8; COMPARE_BYTES];
        let mut writes: Vec<CellWrite> = Vec::new();
        let mut repaired = 0u64;
        // For the monitoring event: mismatched sectors of this stripe, and the one member
        // they are all blamed on (`Some(None)` once blame is unknown or split).
        let mut stripe_mismatched = 0u64;
        let mut blamed: Option<Option<usize>> = None;
        self.note(|r| r.checked_sectors += sds);
        for u in 0..bytes / COMPARE_BYTES {
            let range = u * COMPARE_BYTES..(u + 1) * COMPARE_BYTES;
            let same = |stored: Option<&[u8]>, fresh: &[u8]| {
                stored.is_none_or(|s| s[range.clone()] == fresh[range.clone()])
            };
            if same(stored_p, p) && (q_disk.is_none() || same(stored_q, q)) {
                continue;
            }
            let delta = |stored: Option<&[u8]>, fresh: &[u8]| -> Vec<u8> {
                match stored {
                    Some(s) => s[range.clone()]
                        .iter()
                        .zip(&fresh[range.clone()])
                        .map(|(a, b)| a ^ b)
                        .collect(),
                    None => zero.to_vec(),
                }
            };
            let dp = delta(stored_p, p);
            let dq = if q_disk.is_some() {
                delta(stored_q, q)
            } else {
                zero.to_vec()
            };
            let culprit = if q_disk.is_some() && missing.is_none() {
                locate(&dp, &dq, &slots)
            } else if dp.iter().chain(&dq).any(|&b| b != 0) {
                Culprit::Unknown
            } else {
                Culprit::Consistent
            };
            let wrong_disk = match culprit {
                Culprit::Consistent => continue,
                Culprit::P if q_disk.is_some() => Some((p_disk, BlockKind::P, None)),
                Culprit::Q => q_disk.map(|d| (d, BlockKind::Q, None)),
                Culprit::Data(i) => Some((data_disks[i], BlockKind::Data, Some(slots[i]))),
                Culprit::P | Culprit::Unknown => None,
            };
            let offset = (u as u64) * COMPARE_SECTORS;
            let wrong = wrong_disk.map(|(d, block, syndrome_slot)| WrongMember {
                slot: d,
                name: self.member(d).map(|m| m.name.clone()).unwrap_or_default(),
                block,
                syndrome_slot,
            });
            stripe_mismatched += COMPARE_SECTORS;
            let this = wrong_disk.map(|w| w.0);
            blamed = match blamed {
                None => Some(this),
                Some(b) if b == this => Some(b),
                Some(_) => Some(None),
            };
            self.note(|r| {
                r.mismatched_sectors += COMPARE_SECTORS;
                r.add_region(BadRegion {
                    stripe: Some(stripe),
                    array_sector: stripe * sds,
                    member_sector: l.member_sector(stripe, offset),
                    sectors: COMPARE_SECTORS,
                    wrong,
                    group: None,
                });
            });
            if mode != ScrubMode::Repair {
                continue;
            }
            repaired += COMPARE_SECTORS;
            let mut push = |d: usize, content: Vec<u8>| match writes.last_mut() {
                Some(w) if w.0 == d && w.1 + (w.2.len() / SECTOR_BYTES) as u64 == offset => {
                    w.2.extend_from_slice(&content);
                }
                _ => writes.push((d, offset, content)),
            };
            match culprit {
                Culprit::Data(i) => {
                    let d = data_disks[i];
                    let fixed: Vec<u8> = cells[d].as_deref().expect("data read")[range.clone()]
                        .iter()
                        .zip(&dp)
                        .map(|(a, b)| a ^ b)
                        .collect();
                    push(d, fixed);
                }
                Culprit::Q => {
                    if let Some(qd) = q_disk {
                        push(qd, q[range.clone()].to_vec());
                    }
                }
                _ => {
                    // P alone, or md's regeneration when the culprit is unknown: every
                    // parity that was compared is rewritten from the data.
                    if check_p {
                        push(p_disk, p[range.clone()].to_vec());
                    }
                    if let (true, Some(qd)) = (check_q, q_disk) {
                        push(qd, q[range.clone()].to_vec());
                    }
                }
            }
        }
        if stripe_mismatched > 0 {
            self.emit_mismatch(stripe * sds, stripe_mismatched, blamed.flatten());
        }
        if writes.is_empty() {
            return;
        }
        // Runs per member were built in unit order; P and Q runs interleave, so merge again.
        writes.sort_by_key(|w| (w.0, w.1));
        let mut merged: Vec<CellWrite> = Vec::new();
        for w in writes {
            match merged.last_mut() {
                Some(m) if m.0 == w.0 && m.1 + (m.2.len() / SECTOR_BYTES) as u64 == w.1 => {
                    m.2.extend_from_slice(&w.2);
                }
                _ => merged.push(w),
            }
        }
        if self.mark_dirty().await.is_err() {
            return;
        }
        let jobs: Vec<_> = merged
            .into_iter()
            .filter_map(|(d, offset, content)| {
                self.active_member(d).map(|m| async move {
                    let at = l.member_sector(stripe, offset);
                    (
                        m.clone(),
                        m.write_data(at, Bytes::from(content), false).await,
                    )
                })
            })
            .collect();
        let mut all_written = true;
        for (m, r) in join_all(jobs).await {
            if let Err(e) = r {
                log::warn!("{}: repair write failed on {}: {e}", self.name(), m.name);
                if e.fails_member() {
                    self.fail_member_rc(&m).await;
                }
                all_written = false;
            }
        }
        if all_written {
            self.note(|r| r.repaired_sectors += repaired);
        }
    }
}

/// Forgets a stripe's cached cells when dropped.
struct ForgetStripe<'a>(&'a Array, u64);

impl Drop for ForgetStripe<'_> {
    fn drop(&mut self) {
        self.0.stripe_cache_invalidate(self.1);
    }
}
