//! Resync after an unclean shutdown: every block is read from one live copy and written to
//! the others (parity levels: parity recomputed), so members a crash left disagreeing agree
//! again. Also the progress record every background job shares (`JobProgress`).
//!
//! Foreground I/O stays correct throughout: each region is resynced under an exclusive range
//! lock, so a write to it either lands before (and is copied) or after (and reaches every
//! copy itself). Progress is reported for `raid status`. The position is checkpointed in
//! `resync_offset` (array sectors for the copy levels, member sectors for the parity levels)
//! when the array is stopped, and while no write has made the array dirty since it started,
//! so a restart resumes.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use super::{Array, ArrayError, Member};
use crate::block::{Bytes, SECTOR_BYTES};
use crate::executor::join_all;
use crate::monitor::Event;

/// Array sectors resynced under one lock (1 MiB).
const REGION_SECTORS: u64 = 2048;

/// A background job's progress, as `raid status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub kind: JobKind,
    pub done_sectors: u64,
    pub total_sectors: u64,
    /// Executor time the job started, and now.
    pub started_ns: u64,
    pub now_ns: u64,
    /// Where the job started (resumed from a checkpoint), for the rate.
    pub resumed_sectors: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobKind {
    #[default]
    Resync,
    /// Scrub that counts mismatches (`raid check`).
    Check,
    /// Scrub that fixes mismatches (`raid repair`).
    Repair,
    /// A member being rebuilt onto (a spare, a re-added stale member).
    Rebuild,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Resync => "resync",
            JobKind::Check => "check",
            JobKind::Repair => "repair",
            JobKind::Rebuild => "recovery",
        }
    }
}

impl JobProgress {
    /// 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.total_sectors == 0 {
            1.0
        } else {
            self.done_sectors as f64 / self.total_sectors as f64
        }
    }

    pub fn rate_bytes_per_s(&self) -> u64 {
        let elapsed_ns = self.now_ns.saturating_sub(self.started_ns);
        if elapsed_ns == 0 {
            return 0;
        }
        let moved = self.done_sectors.saturating_sub(self.resumed_sectors);
        ((moved as u128 * SECTOR_BYTES as u128 * 1_000_000_000) / elapsed_ns as u128) as u64
    }

    pub fn eta_s(&self) -> u64 {
        let rate = self.rate_bytes_per_s();
        if rate == 0 {
            return 0;
        }
        self.total_sectors.saturating_sub(self.done_sectors) * SECTOR_BYTES as u64 / rate
    }
}

impl Array {
    /// The background job running on this array, if any.
    pub fn job(&self) -> Option<JobProgress> {
        self.job.get().map(|mut j| {
            j.now_ns = self.exec.now_ns();
            j
        })
    }

    /// Makes every copy of every block equal to the first live copy (parity levels:
    /// recomputes parity), from the checkpoint on. Returns true when done (afterwards a
    /// clean stop records the array as in sync), false when stopped (the position is kept
    /// for `mark_clean` to record). A member that fails a write is failed as in foreground
    /// I/O; a block no copy can be read from is left as it is and counted (it returns
    /// errors to readers anyway).
    pub async fn resync(&self) -> Result<bool, ArrayError> {
        if !self.redundant {
            self.needs_resync.set(false);
            return Ok(true);
        }
        let (total, unit) = match &self.layout {
            // Parity levels count in member sectors, as md does: whole stripes.
            super::ArrayLayout::Raid5(l) => {
                (l.stripe_count() * l.chunk_sectors(), l.chunk_sectors())
            }
            _ => (self.layout.array_sectors(), 1),
        };
        let resume = (self.resync_cursor.get().min(total) / unit) * unit;
        if resume > 0 {
            log::info!("{}: resync resumes at {resume}", self.name());
        }
        let started = self.exec.now_ns();
        self.job.set(Some(JobProgress {
            kind: JobKind::Resync,
            done_sectors: resume,
            total_sectors: total,
            started_ns: started,
            now_ns: started,
            resumed_sectors: resume,
        }));
        self.monitor
            .emit(self.name(), self.wall_clock_base_s(), Event::ResyncStarted);
        let mut unreadable = 0u64;
        // The first region a member had no space for: the resync is to be redone from there.
        let mut no_space_at: Option<u64> = None;
        let mut sector = resume;
        let mut regions = 0u32;
        while sector < total {
            if self.jobs.stop.get() {
                if self.resync_again.replace(false) {
                    // A stall during this resync: the next one starts over.
                    self.resync_cursor.set(0);
                }
                self.job.set(None);
                return Ok(false);
            }
            self.throttle(sector - resume, started).await;
            let len = REGION_SECTORS.max(unit).min(total - sector);
            let region = self.resync_region(sector, len).await;
            unreadable += region.unreadable;
            if region.no_space {
                no_space_at.get_or_insert(sector);
            }
            sector += len;
            self.resync_cursor.set(sector);
            if let Some(mut j) = self.job.get() {
                j.done_sectors = sector;
                self.job.set(Some(j));
            }
            if self.health() == super::Health::Failed {
                self.job.set(None);
                return Err(ArrayError::ArrayFailed);
            }
            regions += 1;
            if regions >= self.policy.get().checkpoint_regions.max(1) && !self.dirty_on_disk.get() {
                regions = 0;
                self.checkpoint_resync().await;
            }
        }
        self.job.set(None);
        if let Some(at) = no_space_at {
            // Pending from there: retried when the jobs next start (a later write refused
            // for space, `raid add`, a restart: the position is recorded at a clean stop).
            log::warn!(
                "{}: resync incomplete: a member had no space (from {at}); retried later",
                self.name()
            );
            self.resync_cursor.set(at);
            return Ok(false);
        }
        self.monitor.emit(
            self.name(),
            self.wall_clock_base_s(),
            Event::ResyncFinished {
                unreadable_extents: unreadable,
            },
        );
        if unreadable > 0 {
            log::error!(
                "{}: resync finished; {unreadable} extents had no readable copy",
                self.name()
            );
        } else {
            log::info!("{}: resync finished", self.name());
        }
        if self.resync_again.replace(false) {
            // A stall during this resync may have torn writes behind its cursor.
            self.resync_cursor.set(0);
            return Ok(true);
        }
        self.needs_resync.set(false);
        Ok(true)
    }

    /// Records the resync position, valid only while no write made the array dirty (a torn
    /// write below the position would otherwise be skipped after a crash).
    async fn checkpoint_resync(&self) {
        if self.flush_members().await.is_err() {
            return;
        }
        let _ = self
            .update_superblocks(|sb| {
                if !self.dirty_on_disk.get() {
                    sb.resync_offset_sectors = self.resync_cursor.get();
                }
            })
            .await;
    }

    /// Resyncs one region: how many extents no copy could be read from, and whether a
    /// member had no space for a copy.
    async fn resync_region(&self, sector: u64, sectors: u64) -> RegionSync {
        if let super::ArrayLayout::Raid5(l) = &self.layout {
            // Member sectors to the array sectors of the same stripes.
            let first = sector / l.chunk_sectors();
            let end = (sector + sectors).div_ceil(l.chunk_sectors());
            let sds = l.stripe_data_sectors();
            return self
                .parity_resync_region(l, first * sds, (end - first) * sds)
                .await;
        }
        let _g = self.lock.lock(sector, sector + sectors).await;
        let mut out = RegionSync::default();
        for (_, ext) in self.extents(sector, sectors) {
            let copies: Vec<(Rc<Member>, u64)> = ext
                .copies
                .iter()
                .filter_map(|c| self.member(c.disk_index).map(|m| (m, c.sector)))
                .collect();
            if copies.len() < 2 {
                continue;
            }
            let bytes = ext.sectors as usize * SECTOR_BYTES;
            let mut source = None;
            for (i, (m, s)) in copies.iter().enumerate() {
                // A member being rebuilt is a source only where it is rebuilt already.
                if m.state() != super::MemberState::Active
                    && *s + ext.sectors > m.recovery_offset.get()
                {
                    continue;
                }
                if let Ok(d) = m.read_data(*s, vec![0u8; bytes]).await {
                    source = Some((i, Bytes::from(d)));
                    break;
                }
            }
            let Some((from, data)) = source else {
                out.unreadable += 1;
                continue;
            };
            let writes: Vec<_> = copies
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != from)
                .map(|(_, (m, s))| {
                    let data = data.clone();
                    async move { (m.clone(), m.write_data(*s, data, false).await) }
                })
                .collect();
            for (member, result) in join_all(writes).await {
                match result {
                    Ok(()) => {}
                    Err(e) if !e.fails_member() => out.no_space = true,
                    Err(_) => self.fail_member_rc(&member).await,
                }
            }
        }
        out
    }
}

/// What the resync of one region left.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RegionSync {
    /// Extents (stripes) no copy of the data could be read from: left as they were.
    pub unreadable: u64,
    /// A member had no space for what the resync wrote: the region is still to do.
    pub no_space: bool,
}
