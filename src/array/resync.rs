//! Resync of the copy-based levels after an unclean shutdown: every block is read from one
//! live copy and written to the others, so mirrors that a crash left disagreeing agree again.
//!
//! Foreground I/O stays correct throughout: each region is resynced under an exclusive range
//! lock, so a write to it either lands before (and is copied) or after (and reaches every
//! copy itself). Progress is reported for `raid status`.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use super::{Array, ArrayError, Member};
use crate::block::{Bytes, IoError, SECTOR_BYTES};
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
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobKind {
    #[default]
    Resync,
    /// Scrub that counts mismatches (`raid check`).
    Check,
    /// Scrub that fixes mismatches (`raid repair`).
    Repair,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Resync => "resync",
            JobKind::Check => "check",
            JobKind::Repair => "repair",
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
        ((self.done_sectors as u128 * SECTOR_BYTES as u128 * 1_000_000_000) / elapsed_ns as u128)
            as u64
    }

    pub fn eta_s(&self) -> u64 {
        let rate = self.rate_bytes_per_s();
        if rate == 0 {
            return 0;
        }
        (self.total_sectors - self.done_sectors) * SECTOR_BYTES as u64 / rate
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

    /// Makes every copy of every block equal to the first live copy. Returns when done;
    /// afterwards a clean stop records the array as in sync. A member that fails a write is
    /// failed as in foreground I/O; a block no copy can be read from is left as it is and
    /// counted as an error (it returns errors to readers anyway).
    pub async fn resync(&self) -> Result<(), ArrayError> {
        if !self.redundant {
            self.needs_resync.set(false);
            return Ok(());
        }
        let total = self.layout.array_sectors();
        let started = self.exec.now_ns();
        self.job.set(Some(JobProgress {
            kind: JobKind::Resync,
            done_sectors: 0,
            total_sectors: total,
            started_ns: started,
            now_ns: started,
        }));
        self.emit(Event::ResyncStarted);
        let mut unreadable = 0u64;
        let mut sector = 0;
        while sector < total {
            let len = REGION_SECTORS.min(total - sector);
            unreadable += self.resync_region(sector, len).await;
            sector += len;
            if let Some(mut j) = self.job.get() {
                j.done_sectors = sector;
                self.job.set(Some(j));
            }
            if self.health() == super::Health::Failed {
                self.job.set(None);
                return Err(ArrayError::MetadataWrite(IoError::DeviceFailed));
            }
        }
        self.job.set(None);
        self.emit(Event::ResyncFinished {
            unreadable_extents: unreadable,
        });
        if unreadable > 0 {
            log::error!(
                "{}: resync finished; {unreadable} extents had no readable copy",
                self.name
            );
        } else {
            log::info!("{}: resync finished", self.name);
        }
        self.needs_resync.set(false);
        Ok(())
    }

    /// Returns the number of extents no copy could be read from.
    async fn resync_region(&self, sector: u64, sectors: u64) -> u64 {
        if let super::ArrayLayout::Raid5(l) = &self.layout {
            return self.parity_resync_region(l, sector, sectors).await;
        }
        let _g = self.lock.lock(sector, sector + sectors).await;
        let mut unreadable = 0;
        for (_, ext) in self.extents(sector, sectors) {
            let copies: Vec<(Rc<Member>, u64)> = ext
                .copies
                .iter()
                .filter_map(|c| self.member(c.disk_index).map(|m| (m.clone(), c.sector)))
                .collect();
            if copies.len() < 2 {
                continue;
            }
            let bytes = ext.sectors as usize * SECTOR_BYTES;
            let mut source = None;
            for (i, (m, s)) in copies.iter().enumerate() {
                if let Ok(d) = m.read_data(*s, vec![0u8; bytes]).await {
                    source = Some((i, Bytes::from(d)));
                    break;
                }
            }
            let Some((from, data)) = source else {
                unreadable += 1;
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
                if result.is_err() {
                    self.fail_member_rc(&member).await;
                }
            }
        }
        unreadable
    }
}
