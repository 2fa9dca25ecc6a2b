//! `FaultyDisk`: wraps any block device and injects seeded faults, for tests and simulation.
//!
//! Faults: I/O errors on chosen ranges or at a rate, latent sector errors (a read error that
//! stays until the sector is rewritten), silent corruption (wrong data, no error), a whole
//! device failure, latency that reorders completions, and a volatile write cache that a
//! `crash` drops or tears sector by sector. Every random choice comes from one seeded
//! generator, so a run replays exactly from its seed.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES, check_range, check_sectors};
use crate::executor::Executor;
use crate::rng::SplitMix64;

/// Which requests an error range fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Both,
}

/// Random fault rates and latency; all rates in parts per million per request.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    pub read_error_ppm: u32,
    pub write_error_ppm: u32,
    /// A read returns data with one bit flipped and no error.
    pub corrupt_read_ppm: u32,
    /// Each request completes after a delay drawn from this range (nanoseconds).
    pub min_latency_ns: u64,
    pub max_latency_ns: u64,
    /// Writes without FUA wait in a volatile cache until a flush.
    pub write_cache: bool,
}

/// What `crash` did to the volatile cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub sectors_kept: u64,
    pub sectors_lost: u64,
}

/// Counters of what the disk saw and injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub errors_injected: u64,
    pub corruptions_injected: u64,
}

struct State {
    rng: SplitMix64,
    config: FaultConfig,
    error_ranges: Vec<(u64, u64, FaultOp)>,
    latent: BTreeSet<u64>,
    corrupt: BTreeSet<u64>,
    failed: bool,
    /// Every write fails with this (a full file system: `IoError::NoSpace`).
    write_error: Option<IoError>,
    /// Unflushed sectors, newest content.
    cache: BTreeMap<u64, Box<[u8]>>,
    stats: FaultStats,
}

/// A block device with injected faults.
pub struct FaultyDisk {
    inner: Rc<dyn BlockDevice>,
    exec: Executor,
    state: RefCell<State>,
}

impl FaultyDisk {
    pub fn new(inner: Rc<dyn BlockDevice>, exec: Executor, seed: u64, config: FaultConfig) -> Self {
        assert!(config.min_latency_ns <= config.max_latency_ns);
        FaultyDisk {
            inner,
            exec,
            state: RefCell::new(State {
                rng: SplitMix64::new(seed),
                config,
                error_ranges: Vec::new(),
                latent: BTreeSet::new(),
                corrupt: BTreeSet::new(),
                failed: false,
                write_error: None,
                cache: BTreeMap::new(),
                stats: FaultStats::default(),
            }),
        }
    }

    /// Rebinds the disk to another executor (after a simulated crash the old one is gone).
    pub fn set_executor(&mut self, exec: Executor) {
        self.exec = exec;
    }

    pub fn set_config(&self, config: FaultConfig) {
        assert!(config.min_latency_ns <= config.max_latency_ns);
        self.state.borrow_mut().config = config;
    }

    /// Every request fails from now on, as if the disk were pulled.
    pub fn fail(&self) {
        self.state.borrow_mut().failed = true;
    }

    /// Undoes `fail`.
    pub fn revive(&self) {
        self.state.borrow_mut().failed = false;
    }

    /// Every write fails with `error` from now on (`None`: writes work again); reads are
    /// unaffected. `IoError::NoSpace` is a host file system that filled up.
    pub fn set_write_error(&self, error: Option<IoError>) {
        self.state.borrow_mut().write_error = error;
    }

    pub fn is_failed(&self) -> bool {
        self.state.borrow().failed
    }

    /// Requests of kind `op` that touch `sectors` sectors at `sector` fail.
    pub fn add_error_range(&self, sector: u64, sectors: u64, op: FaultOp) {
        self.state
            .borrow_mut()
            .error_ranges
            .push((sector, sector + sectors, op));
    }

    pub fn clear_error_ranges(&self) {
        self.state.borrow_mut().error_ranges.clear();
    }

    /// Reads of `sector` fail until it is rewritten.
    pub fn add_latent_error(&self, sector: u64) {
        self.state.borrow_mut().latent.insert(sector);
    }

    /// Reads of `sector` return wrong data (no error) until it is rewritten.
    pub fn corrupt_sector(&self, sector: u64) {
        self.state.borrow_mut().corrupt.insert(sector);
    }

    pub fn stats(&self) -> FaultStats {
        self.state.borrow().stats
    }

    /// Sectors written but not yet flushed.
    pub fn unflushed_sectors(&self) -> usize {
        self.state.borrow().cache.len()
    }

    /// Power loss: each unflushed sector independently lands or is lost (so multi-sector
    /// writes tear). Requests still in flight were dropped with their executor.
    pub fn crash(&self) -> CrashReport {
        let mut st = self.state.borrow_mut();
        let cache = core::mem::take(&mut st.cache);
        let mut report = CrashReport::default();
        let mut kept = Vec::new();
        for (sector, data) in cache {
            if st.rng.below(2) == 0 {
                kept.push((sector, data));
                report.sectors_kept += 1;
            } else {
                report.sectors_lost += 1;
            }
        }
        drop(st);
        for (sector, data) in kept {
            self.write_through_sync(sector, Bytes::from(data.into_vec()));
        }
        report
    }

    /// Writes to the inner device, which must complete at once (memory or file backed).
    fn write_through_sync(&self, sector: u64, data: Bytes) {
        let exec = Executor::new();
        let inner = self.inner.clone();
        let done = exec.block_on(async move { inner.write(sector, data, true).await });
        assert!(
            matches!(done, Some(Ok(()))),
            "inner device of a FaultyDisk must complete synchronously and without error"
        );
    }

    fn delay_ns(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        let (lo, hi) = (st.config.min_latency_ns, st.config.max_latency_ns);
        if hi == 0 {
            0
        } else {
            st.rng.range_inclusive(lo, hi)
        }
    }

    async fn latency(&self) {
        let delay = self.delay_ns();
        if delay > 0 {
            self.exec.sleep(delay).await;
        }
    }

    fn injected_error(&self, sector: u64, sectors: u64, is_write: bool) -> Option<IoError> {
        let mut st = self.state.borrow_mut();
        if st.failed {
            st.stats.errors_injected += 1;
            return Some(IoError::DeviceFailed);
        }
        if let (true, Some(e)) = (is_write, st.write_error.clone()) {
            st.stats.errors_injected += 1;
            return Some(e);
        }
        let end = sector + sectors;
        let hit = st.error_ranges.iter().find(|(s, e, op)| {
            *s < end
                && sector < *e
                && match op {
                    FaultOp::Both => true,
                    FaultOp::Read => !is_write,
                    FaultOp::Write => is_write,
                }
        });
        if let Some(&(s, _, _)) = hit {
            st.stats.errors_injected += 1;
            return Some(IoError::Media {
                sector: s.max(sector),
            });
        }
        let latent = st.latent.range(sector..end).next().copied();
        if let (false, Some(bad)) = (is_write, latent) {
            st.stats.errors_injected += 1;
            return Some(IoError::Media { sector: bad });
        }
        let ppm = if is_write {
            st.config.write_error_ppm
        } else {
            st.config.read_error_ppm
        };
        if st.rng.chance_ppm(ppm) {
            st.stats.errors_injected += 1;
            return Some(IoError::Media { sector });
        }
        None
    }

    async fn do_read(&self, sector: u64, buf: Vec<u8>) -> Result<Vec<u8>, IoError> {
        let sectors = check_range(sector, buf.len(), self.capacity_sectors())?;
        self.latency().await;
        self.state.borrow_mut().stats.reads += 1;
        if let Some(err) = self.injected_error(sector, sectors, false) {
            return Err(err);
        }
        let mut buf = self.inner.read(sector, buf).await?;
        let mut st = self.state.borrow_mut();
        let end = sector + sectors;
        for (&s, data) in st.cache.range(sector..end) {
            let off = ((s - sector) as usize) * SECTOR_BYTES;
            buf[off..off + SECTOR_BYTES].copy_from_slice(data);
        }
        let corrupt: Vec<u64> = st.corrupt.range(sector..end).copied().collect();
        for s in corrupt {
            let off = ((s - sector) as usize) * SECTOR_BYTES;
            buf[off + (s as usize % SECTOR_BYTES)] ^= 0x5a;
            st.stats.corruptions_injected += 1;
        }
        let ppm = st.config.corrupt_read_ppm;
        if !buf.is_empty() && st.rng.chance_ppm(ppm) {
            let bit = st.rng.below(buf.len() as u64 * 8);
            buf[(bit / 8) as usize] ^= 1 << (bit % 8);
            st.stats.corruptions_injected += 1;
        }
        Ok(buf)
    }

    async fn do_write(&self, sector: u64, data: Bytes, fua: bool) -> Result<(), IoError> {
        let sectors = check_range(sector, data.len(), self.capacity_sectors())?;
        self.latency().await;
        self.state.borrow_mut().stats.writes += 1;
        if let Some(err) = self.injected_error(sector, sectors, true) {
            return Err(err);
        }
        let end = sector + sectors;
        let cached = {
            let mut st = self.state.borrow_mut();
            let stale: Vec<u64> = st.latent.range(sector..end).copied().collect();
            for s in stale {
                st.latent.remove(&s);
            }
            let stale: Vec<u64> = st.corrupt.range(sector..end).copied().collect();
            for s in stale {
                st.corrupt.remove(&s);
            }
            if st.config.write_cache && !fua {
                for (i, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
                    st.cache.insert(sector + i as u64, chunk.into());
                }
                true
            } else {
                let stale: Vec<u64> = st.cache.range(sector..end).map(|(&s, _)| s).collect();
                for s in stale {
                    st.cache.remove(&s);
                }
                false
            }
        };
        if cached {
            Ok(())
        } else {
            self.inner.write(sector, data, true).await
        }
    }

    async fn do_flush(&self) -> Result<(), IoError> {
        self.latency().await;
        let pending = {
            let mut st = self.state.borrow_mut();
            st.stats.flushes += 1;
            if st.failed {
                st.stats.errors_injected += 1;
                return Err(IoError::DeviceFailed);
            }
            core::mem::take(&mut st.cache)
        };
        for (sector, data) in pending {
            self.inner
                .write(sector, Bytes::from(data.into_vec()), true)
                .await?;
        }
        self.inner.flush().await
    }

    async fn do_discard(&self, sector: u64, sectors: u64) -> Result<(), IoError> {
        check_sectors(sector, sectors, self.capacity_sectors())?;
        self.latency().await;
        if let Some(err) = self.injected_error(sector, sectors, true) {
            return Err(err);
        }
        {
            let mut st = self.state.borrow_mut();
            let end = sector + sectors;
            let stale: Vec<u64> = st.cache.range(sector..end).map(|(&s, _)| s).collect();
            for s in stale {
                st.cache.remove(&s);
            }
        }
        self.inner.discard(sector, sectors).await
    }
}

// Faults are injected on the way to the same medium: it is the inner device.
crate::block_device_via_async_fns!(FaultyDisk, |d| d.inner.capacity_sectors(), {
    fn identity(&self) -> Option<crate::block::DeviceIdentity> {
        self.inner.identity()
    }

    fn probe(&self) -> Option<crate::block::DeviceProblem> {
        self.inner.probe()
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::memory::MemoryDisk;
    use alloc::vec;

    fn disk(exec: &Executor, config: FaultConfig) -> (Rc<MemoryDisk>, Rc<FaultyDisk>) {
        let mem = Rc::new(MemoryDisk::new(64));
        let faulty = Rc::new(FaultyDisk::new(mem.clone(), exec.clone(), 1, config));
        (mem, faulty)
    }

    #[test]
    fn latent_errors_persist_until_rewritten() {
        let exec = Executor::new();
        let (_, d) = disk(&exec, FaultConfig::default());
        d.add_latent_error(5);
        let d2 = d.clone();
        let r = exec.block_on(async move {
            let first = d2.read(4, vec![0; 1024]).await;
            let second = d2.read(0, vec![0; 512]).await;
            d2.write(5, Bytes::from(vec![7u8; 512]), false)
                .await
                .unwrap();
            let third = d2.read(4, vec![0; 1024]).await;
            (first, second, third)
        });
        let (first, second, third) = r.unwrap();
        assert_eq!(first, Err(IoError::Media { sector: 5 }));
        assert!(second.is_ok());
        assert_eq!(&third.unwrap()[512..], &[7u8; 512][..]);
    }

    #[test]
    fn crash_keeps_flushed_and_tears_unflushed() {
        let exec = Executor::new();
        let config = FaultConfig {
            write_cache: true,
            ..FaultConfig::default()
        };
        let (mem, d) = disk(&exec, config);
        let d2 = d.clone();
        exec.block_on(async move {
            d2.write(0, Bytes::from(vec![1u8; 4 * 512]), false)
                .await
                .unwrap();
            d2.flush().await.unwrap();
            d2.write(0, Bytes::from(vec![2u8; 32 * 512]), false)
                .await
                .unwrap();
            // The cache is visible to reads before the crash.
            let back = d2.read(0, vec![0; 512]).await.unwrap();
            assert_eq!(back, vec![2u8; 512]);
        })
        .unwrap();
        let report = d.crash();
        assert_eq!(report.sectors_kept + report.sectors_lost, 32);
        assert!(
            report.sectors_kept > 0 && report.sectors_lost > 0,
            "{report:?}"
        );
        let mut buf = vec![0u8; 32 * 512];
        mem.read_at(0, &mut buf).unwrap();
        for (i, sector) in buf.chunks(512).enumerate() {
            let expected_old = if i < 4 { 1 } else { 0 };
            assert!(
                sector.iter().all(|&b| b == 2) || sector.iter().all(|&b| b == expected_old),
                "sector {i} is neither old nor new"
            );
        }
    }

    #[test]
    fn latency_reorders_completions() {
        let exec = Executor::new();
        let config = FaultConfig {
            min_latency_ns: 1,
            max_latency_ns: 1_000_000,
            ..FaultConfig::default()
        };
        let (_, d) = disk(&exec, config);
        let order = Rc::new(RefCell::new(Vec::new()));
        for i in 0..16u64 {
            let d = d.clone();
            let order = order.clone();
            exec.spawn_detached(async move {
                d.read(i, vec![0; 512]).await.unwrap();
                order.borrow_mut().push(i);
            });
        }
        exec.run_until_idle();
        let order = order.borrow();
        assert_eq!(order.len(), 16);
        assert!(
            order.windows(2).any(|w| w[0] > w[1]),
            "no reordering: {order:?}"
        );
    }

    #[test]
    fn silent_corruption_and_failure() {
        let exec = Executor::new();
        let (mem, d) = disk(&exec, FaultConfig::default());
        mem.write_at(3, &[9u8; 512]).unwrap();
        d.corrupt_sector(3);
        let d2 = d.clone();
        let back = exec
            .block_on(async move { d2.read(3, vec![0; 512]).await })
            .unwrap()
            .unwrap();
        assert_ne!(back, vec![9u8; 512]);
        d.fail();
        let d2 = d.clone();
        let r = exec
            .block_on(async move { d2.read(0, vec![0; 512]).await })
            .unwrap();
        assert_eq!(r, Err(IoError::DeviceFailed));
        assert_eq!(d.stats().corruptions_injected, 1);
    }

    #[test]
    fn error_ranges_hit_only_their_op() {
        let exec = Executor::new();
        let (_, d) = disk(&exec, FaultConfig::default());
        d.add_error_range(10, 4, FaultOp::Write);
        let d2 = d.clone();
        let (w, r) = exec
            .block_on(async move {
                let w = d2.write(12, Bytes::from(vec![0u8; 512]), false).await;
                let r = d2.read(12, vec![0; 512]).await.map(|_| ());
                (w, r)
            })
            .unwrap();
        assert_eq!(w, Err(IoError::Media { sector: 12 }));
        assert_eq!(r, Ok(()));
    }
}
