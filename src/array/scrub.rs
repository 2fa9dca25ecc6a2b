//! Scrub: the report of the `check` and `repair` background jobs of every redundant level,
//! and the scrub state an array keeps; the jobs themselves are `crate::jobs::scrub`.
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

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt;

use serde::{Deserialize, Serialize};

use super::{Array, JobKind};
use crate::executor::AsyncMutex;
use crate::metadata::extension::{
    ScrubCheckpoint, StoredBadRegion, StoredRegions, StoredWrongMember,
};

/// The unit a scrub compares and counts: md's stripe page (4 KiB).
pub const COMPARE_SECTORS: u64 = 8;
/// Bad regions a report lists; more are only counted.
pub const BAD_REGIONS_KEPT: usize = 64;

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

    pub(crate) fn job_kind(self) -> JobKind {
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
    /// Stopped by a cancel (`jobs::scrub::cancel`) or the array stopping.
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
    pub(crate) fn new(mode: ScrubMode) -> Self {
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
    pub(crate) fn add_region(&mut self, region: BadRegion) {
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
pub(crate) fn region_to_stored(r: &BadRegion) -> StoredBadRegion {
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

/// Scrub state kept in the array: the report, the controls of the scrub running, and the
/// checkpoint an interrupted one resumes from (see `crate::jobs::scrub`).
pub(crate) struct ScrubState {
    pub(crate) report: RefCell<Option<ScrubReport>>,
    pub(crate) cancel: Cell<bool>,
    /// Held while a scrub walks the array: a stop waits on it.
    pub(crate) running: AsyncMutex<()>,
    /// Where an interrupted scrub resumes: recorded in the extension record with every
    /// superblock update, so a stop or a crash resumes there (see `persist.rs`).
    pub(crate) checkpoint: Cell<Option<ScrubCheckpoint>>,
    /// The bad regions the scrub had listed when `checkpoint` was taken: a resumed scrub
    /// reports them too.
    pub(crate) checkpoint_regions: RefCell<StoredRegions>,
    /// Set by a stop: the scrub ends keeping its checkpoint (a user's cancel clears it).
    pub(crate) stopping: Cell<bool>,
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

impl Array {
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

    /// The scrub state, for the scrub job.
    pub(crate) fn scrub_state(&self) -> &ScrubState {
        &self.scrub
    }

    /// Whether a scrub is walking the array.
    pub(crate) fn scrub_running(&self) -> bool {
        self.scrub
            .report
            .borrow()
            .as_ref()
            .is_some_and(|r| r.outcome == ScrubOutcome::Running)
    }
}
