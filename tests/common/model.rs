//! The reference model of the model-based tests (`tests/model.rs`, `tests/model_nested.rs`):
//! per-sector versions a read must return, what a crash may leave, the requests in flight
//! that keep it up to date, and the seed set with replay.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use orion_raid::array::Array;
use orion_raid::block::{BlockDevice, Bytes, SECTOR_BYTES};
use orion_raid::executor::Executor;
use orion_raid::platform::faulty::FaultConfig;
use orion_raid::rng::SplitMix64;

pub const SECTOR: usize = SECTOR_BYTES;

pub type Shared<T> = Rc<RefCell<T>>;

/// Content of `sector` as written by write `version` (0 = never written: zeroes).
pub fn pattern(version: u64, sector: u64, out: &mut [u8]) {
    if version == 0 {
        out.fill(0);
        return;
    }
    let mut rng = SplitMix64::new(version.wrapping_mul(0x9e37_79b9) ^ sector);
    rng.fill(out);
    out[..8].copy_from_slice(&version.to_le_bytes());
    out[8..16].copy_from_slice(&sector.to_le_bytes());
}

/// The write version whose content `data` is at `sector`, if it is one.
pub fn version_of(data: &[u8], sector: u64) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let version = u64::from_le_bytes(data[..8].try_into().ok()?);
    let mut expected = vec![0u8; SECTOR];
    pattern(version, sector, &mut expected);
    (expected == data).then_some(version)
}

/// Member latency up to `max_extra_latency_ns` over 1 µs, and a volatile write cache that a
/// crash tears.
pub fn fault_config(rng: &mut SplitMix64, max_extra_latency_ns: u64) -> FaultConfig {
    FaultConfig {
        min_latency_ns: 1_000,
        max_latency_ns: 1_000 + rng.below(max_extra_latency_ns),
        write_cache: true,
        ..FaultConfig::default()
    }
}

/// Per-sector model state.
#[derive(Clone, Debug, Default)]
pub struct SectorModel {
    /// Version a read must return now (writes are acked in order per sector: the generator
    /// never overlaps two in-flight writes).
    pub current: u64,
    /// Content is unspecified (discarded) until the next write.
    pub unspecified: bool,
    /// Version known durable (acked before a flush that completed was issued).
    pub durable: u64,
    /// Versions written since, not known durable: a crash may leave any of them.
    pub maybe: BTreeSet<u64>,
}

impl SectorModel {
    /// Whether a crash may leave this sector with any content (a discard is involved).
    fn crash_unspecified(&self, discards: &BTreeSet<u64>) -> bool {
        discards.contains(&self.durable) || self.maybe.iter().any(|v| discards.contains(v))
    }
}

pub struct Model {
    pub sectors: Vec<SectorModel>,
    /// Versions that are discards, not writes.
    pub discards: BTreeSet<u64>,
    /// Versions acked so far, with the ack counter at their ack.
    pub acked_at: Vec<(u64, u64, u64, u64)>, // (version, start, len, ack_tick)
    /// Ranges of the writes acked, for a test to take (`Vec::drain`) if it needs them.
    pub acked_writes: Vec<(u64, u64)>,
}

impl Model {
    pub fn new(sectors: usize) -> Self {
        Model {
            sectors: vec![SectorModel::default(); sectors],
            discards: BTreeSet::new(),
            acked_at: Vec::new(),
            acked_writes: Vec::new(),
        }
    }

    /// Checks data read at `start` against what every sector must hold now.
    pub fn check_current(&self, start: u64, data: &[u8]) -> Result<(), String> {
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            let s = start + i as u64;
            let sm = &self.sectors[s as usize];
            if sm.unspecified {
                continue;
            }
            let got = version_of(chunk, s);
            if got != Some(sm.current) {
                return Err(format!(
                    "sector {s}: read version {got:?}, expected {}",
                    sm.current
                ));
            }
        }
        Ok(())
    }

    /// Checks what the sectors from 0 hold after a crash (the durable version or one written
    /// since, anything where a discard was involved), then takes that as the new state.
    pub fn settle_after_crash(&mut self, data: &[u8]) -> Result<(), String> {
        let discards = std::mem::take(&mut self.discards);
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            let sm = &mut self.sectors[i];
            let got = version_of(chunk, i as u64);
            let anything = sm.crash_unspecified(&discards);
            let ok =
                anything || got == Some(sm.durable) || got.is_some_and(|v| sm.maybe.contains(&v));
            if !ok {
                return Err(format!(
                    "after crash sector {i} holds {got:?}; durable {} maybe {:?}",
                    sm.durable, sm.maybe
                ));
            }
            let v = got.unwrap_or(0);
            *sm = SectorModel {
                current: v,
                unspecified: anything,
                durable: v,
                maybe: BTreeSet::new(),
            };
        }
        self.acked_at.clear();
        self.acked_writes.clear();
        Ok(())
    }
}

/// The requests in flight against an array and the model they keep up to date. Callers
/// choose ranges, versions and flags (their generator, their order of draws); this issues
/// the request and checks or records its outcome.
#[derive(Clone)]
pub struct Io {
    pub seed: u64,
    pub model: Shared<Model>,
    /// Counts acks, to tell which writes a flush covers.
    pub tick: Shared<u64>,
    pub inflight_writes: Shared<Vec<(u64, u64)>>,
    /// Ranges of reads issued and not completed.
    pub inflight_reads: Shared<Vec<(u64, u64)>>,
    pub failures: Shared<Vec<String>>,
}

fn overlaps(list: &Shared<Vec<(u64, u64)>>, start: u64, len: u64) -> bool {
    list.borrow()
        .iter()
        .any(|&(s, l)| s < start + len && start < s + l)
}

impl Io {
    pub fn new(seed: u64, sectors: usize) -> Self {
        Io {
            seed,
            model: Rc::new(RefCell::new(Model::new(sectors))),
            tick: Rc::default(),
            inflight_writes: Rc::default(),
            inflight_reads: Rc::default(),
            failures: Rc::default(),
        }
    }

    pub fn overlaps_inflight_write(&self, start: u64, len: u64) -> bool {
        overlaps(&self.inflight_writes, start, len)
    }

    /// A write may not overlap a read in flight either: the read's expected data would then
    /// depend on timing.
    pub fn overlaps_inflight_io(&self, start: u64, len: u64) -> bool {
        self.overlaps_inflight_write(start, len) || overlaps(&self.inflight_reads, start, len)
    }

    pub fn is_idle(&self) -> bool {
        self.inflight_writes.borrow().is_empty() && self.inflight_reads.borrow().is_empty()
    }

    /// After a crash: the requests died with their executor.
    pub fn forget_inflight(&self) {
        self.inflight_writes.borrow_mut().clear();
        self.inflight_reads.borrow_mut().clear();
    }

    pub fn spawn_write(
        &self,
        exec: &Executor,
        array: &Rc<Array>,
        start: u64,
        len: u64,
        version: u64,
        fua: bool,
    ) {
        let mut data = vec![0u8; len as usize * SECTOR];
        for (i, s) in data.chunks_mut(SECTOR).enumerate() {
            pattern(version, start + i as u64, s);
        }
        {
            let mut m = self.model.borrow_mut();
            for s in start..start + len {
                m.sectors[s as usize].maybe.insert(version);
            }
        }
        self.inflight_writes.borrow_mut().push((start, len));
        let (io, array) = (self.clone(), array.clone());
        exec.spawn_detached(async move {
            let r = array.write(start, Bytes::from(data), fua).await;
            io.inflight_writes
                .borrow_mut()
                .retain(|&w| w != (start, len));
            let mut m = io.model.borrow_mut();
            match r {
                Ok(()) => {
                    *io.tick.borrow_mut() += 1;
                    let t = *io.tick.borrow();
                    for s in start..start + len {
                        let sm = &mut m.sectors[s as usize];
                        sm.current = version;
                        sm.unspecified = false;
                        if fua {
                            sm.durable = version;
                            sm.maybe.retain(|&v| v > version);
                        }
                    }
                    m.acked_at.push((version, start, len, t));
                    m.acked_writes.push((start, len));
                }
                Err(e) => io.failures.borrow_mut().push(format!(
                    "seed {}: write of {len} sectors at {start} failed within tolerance: {e}",
                    io.seed
                )),
            }
        });
    }

    pub fn spawn_read(&self, exec: &Executor, array: &Rc<Array>, start: u64, len: u64) {
        let (io, array) = (self.clone(), array.clone());
        self.inflight_reads.borrow_mut().push((start, len));
        exec.spawn_detached(async move {
            let result = array.read(start, vec![0u8; len as usize * SECTOR]).await;
            {
                let mut r = io.inflight_reads.borrow_mut();
                let pos = r
                    .iter()
                    .position(|&x| x == (start, len))
                    .expect("tracked read");
                r.swap_remove(pos);
            }
            let seed = io.seed;
            match result {
                Ok(data) => {
                    if let Err(e) = io.model.borrow().check_current(start, &data) {
                        io.failures.borrow_mut().push(format!("seed {seed}: {e}"));
                    }
                }
                Err(e) => io.failures.borrow_mut().push(format!(
                    "seed {seed}: read of {len} sectors at {start} failed within tolerance: {e}"
                )),
            }
        });
    }

    /// A discard is a write of unspecified content: it may reach the disks before it is
    /// acknowledged, and it is durable only after a flush.
    pub fn spawn_discard(
        &self,
        exec: &Executor,
        array: &Rc<Array>,
        start: u64,
        len: u64,
        version: u64,
    ) {
        self.inflight_writes.borrow_mut().push((start, len));
        {
            let mut m = self.model.borrow_mut();
            m.discards.insert(version);
            for s in start..start + len {
                m.sectors[s as usize].maybe.insert(version);
            }
        }
        let (io, array) = (self.clone(), array.clone());
        exec.spawn_detached(async move {
            let r = array.discard(start, len).await;
            io.inflight_writes
                .borrow_mut()
                .retain(|&w| w != (start, len));
            match r {
                Ok(()) => {
                    *io.tick.borrow_mut() += 1;
                    let t = *io.tick.borrow();
                    let mut m = io.model.borrow_mut();
                    for s in start..start + len {
                        let sm = &mut m.sectors[s as usize];
                        sm.current = version;
                        sm.unspecified = true;
                    }
                    m.acked_at.push((version, start, len, t));
                }
                Err(e) => io
                    .failures
                    .borrow_mut()
                    .push(format!("seed {}: discard at {start} failed: {e}", io.seed)),
            }
        });
    }

    /// A flush makes durable every write acked before it was issued.
    pub fn spawn_flush(&self, exec: &Executor, array: &Rc<Array>) {
        let issued_at = *self.tick.borrow();
        let (io, array) = (self.clone(), array.clone());
        exec.spawn_detached(async move {
            match array.flush().await {
                Ok(()) => {
                    let mut m = io.model.borrow_mut();
                    let durable: Vec<(u64, u64, u64)> = m
                        .acked_at
                        .iter()
                        .filter(|w| w.3 <= issued_at)
                        .map(|w| (w.0, w.1, w.2))
                        .collect();
                    for (version, start, len) in durable {
                        for s in start..start + len {
                            let sm = &mut m.sectors[s as usize];
                            if version >= sm.durable {
                                sm.durable = version;
                                sm.maybe.retain(|&v| v > version);
                            }
                        }
                    }
                    m.acked_at.retain(|w| w.3 > issued_at);
                }
                Err(e) => io.failures.borrow_mut().push(format!(
                    "seed {}: flush failed within tolerance: {e}",
                    io.seed
                )),
            }
        });
    }

    /// Panics with the first failure a request recorded, naming the seed to replay.
    pub fn check_failures(&self, name: &str) {
        let failures = self.failures.borrow();
        if let Some(first) = failures.first() {
            panic!(
                "{name} ({}): {} failure(s), first: {first}\nreplay with SEED={}",
                self.seed,
                failures.len(),
                self.seed
            );
        }
    }
}

/// A random workload against one array under test: requests of every kind, member
/// failures and latent errors, many in flight at once. The test supplies the array, the
/// range generator and the failure moves; the step loop and the request issuing are shared.
pub trait Workload {
    fn exec(&self) -> Executor;
    /// The array requests go to (the outer array of a stack).
    fn target(&self) -> Rc<Array>;
    fn io(&self) -> &Io;
    fn rng(&mut self) -> &mut SplitMix64;
    /// A fresh write version (1, 2, ...).
    fn next_version(&mut self) -> u64;
    /// The test's name, for failure messages.
    fn name(&self) -> &'static str;
    /// The range of the next request: (start sector, sectors).
    fn random_range(&mut self) -> (u64, u64);
    /// Fails a random member if the level still tolerates it.
    fn maybe_fail_member(&mut self);
    /// Gives a random member latent sector errors if the level still tolerates it.
    fn maybe_latent_errors(&mut self);
    /// Runs after every step, before failures are checked.
    fn after_step(&mut self) {}

    fn spawn_write(&mut self) {
        let (start, len) = self.random_range();
        if self.io().overlaps_inflight_io(start, len) {
            return;
        }
        let version = self.next_version();
        let fua = self.rng().below(8) == 0;
        let (exec, array) = (self.exec(), self.target());
        self.io()
            .spawn_write(&exec, &array, start, len, version, fua);
    }

    fn spawn_read(&mut self) {
        let (start, len) = self.random_range();
        if self.io().overlaps_inflight_write(start, len) {
            return;
        }
        let (exec, array) = (self.exec(), self.target());
        self.io().spawn_read(&exec, &array, start, len);
    }

    fn spawn_discard(&mut self) {
        let (start, len) = self.random_range();
        if self.io().overlaps_inflight_io(start, len) {
            return;
        }
        let version = self.next_version();
        let (exec, array) = (self.exec(), self.target());
        self.io().spawn_discard(&exec, &array, start, len, version);
    }

    fn spawn_flush(&mut self) {
        let (exec, array) = (self.exec(), self.target());
        self.io().spawn_flush(&exec, &array);
    }

    fn check_failures(&self) {
        self.io().check_failures(self.name());
    }

    /// `steps` random moves; now and then simulated time advances so that some requests
    /// complete while many stay in flight.
    fn run_steps(&mut self, steps: usize) {
        for _ in 0..steps {
            match self.rng().below(100) {
                0..=44 => self.spawn_write(),
                45..=84 => self.spawn_read(),
                85..=89 => self.spawn_discard(),
                90..=96 => self.spawn_flush(),
                97 => self.maybe_fail_member(),
                _ => self.maybe_latent_errors(),
            }
            if self.rng().below(4) == 0 {
                let exec = self.exec();
                let target = exec.now_ns() + self.rng().below(100_000);
                exec.advance_to(target);
                exec.run_until_stalled();
            }
            self.after_step();
            self.check_failures();
        }
    }
}

/// The seeds to run: `SEED=<n>` replays one, `SEEDS=<count>` runs more than the fixed set
/// of `default_count`.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SEED") {
        return vec![s.parse().expect("SEED must be a number")];
    }
    let count: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (1..=count).map(|i| i * 7919).collect()
}

/// Runs `run` for every seed, naming the seed of a failure.
pub fn run_seeds(name: &str, default_count: u64, run: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(default_count) {
        let result = std::panic::catch_unwind(|| run(seed));
        if let Err(e) = result {
            eprintln!("{name}: failed with seed {seed}; replay with SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
