//! Model-based test of RAID 50 and RAID 60: random reads, writes and flushes, many in flight,
//! against an in-memory reference, on `FaultyDisk` members with latency, member failures and
//! latent sector errors within each group's tolerance; each round ends with a clean stop and
//! a fresh assembly of the whole stack from the member disks (failed members that come back
//! are stale and stay out). Every read is checked.
//!
//! Seeded: a failure prints its seed; `SEED=<n> cargo test --test model_nested` replays it,
//! and `SEEDS=<count>` runs more seeds.

use std::cell::RefCell;
use std::rc::Rc;

use orion_raid::array::assemble::CreateOptions;
use orion_raid::array::nested::{NestedSpec, Stack, assemble_stacks, create_nested};
use orion_raid::array::{Array, Health, MemberState};
use orion_raid::block::{BlockDevice, Bytes, SECTOR_BYTES};
use orion_raid::executor::Executor;
use orion_raid::metadata::Level;
use orion_raid::platform::faulty::{FaultConfig, FaultyDisk};
use orion_raid::platform::memory::MemoryDisk;
use orion_raid::rng::SplitMix64;

const SECTOR: usize = SECTOR_BYTES;
const MEMBER_SECTORS: u64 = 8 * 2048;
/// The workload stays in the first 4 MiB of the array (every group, many stripes), so that
/// a full check stays quick in a debug build.
const SPAN_SECTORS: u64 = 8 * 1024;

#[derive(Clone, Copy, Debug)]
struct Config {
    name: &'static str,
    level: u32,
    groups: usize,
    per_group: usize,
    chunk_kib: u32,
    layout: Option<&'static str>,
}

impl Config {
    /// Members of one group that may be lost at once.
    fn tolerance(&self) -> usize {
        if self.level == 60 { 2 } else { 1 }
    }

    fn members(&self) -> usize {
        self.groups * self.per_group
    }
}

/// Sector content of a write version (version 0: never written, zeroes).
fn pattern(version: u64, sector: u64, out: &mut [u8]) {
    if version == 0 {
        out.fill(0);
        return;
    }
    let mut rng = SplitMix64::new(version.wrapping_mul(0x9e37_79b9) ^ sector);
    rng.fill(out);
    out[..8].copy_from_slice(&version.to_le_bytes());
}

fn fault_config(rng: &mut SplitMix64) -> FaultConfig {
    FaultConfig {
        min_latency_ns: 1_000,
        max_latency_ns: 1_000 + rng.below(100_000),
        write_cache: true,
        ..FaultConfig::default()
    }
}

type Shared<T> = Rc<RefCell<T>>;

struct Ctx {
    seed: u64,
    cfg: Config,
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    faulty: Vec<Rc<FaultyDisk>>,
    stack: Stack,
    /// Version each array sector holds.
    model: Shared<Vec<u64>>,
    rng: SplitMix64,
    next_version: u64,
    inflight_writes: Shared<Vec<(u64, u64)>>,
    inflight_reads: Shared<Vec<(u64, u64)>>,
    failures: Shared<Vec<String>>,
    /// Members given latent sector errors (they count as lost for the tolerance budget).
    impaired: Vec<bool>,
}

fn build(cfg: Config, seed: u64) -> Ctx {
    let mut rng = SplitMix64::new(seed);
    let exec = Executor::new();
    let mem: Vec<Rc<MemoryDisk>> = (0..cfg.members())
        .map(|_| Rc::new(MemoryDisk::new(MEMBER_SECTORS)))
        .collect();
    let faulty = wrap(&mem, &exec, &mut rng);
    let opts = CreateOptions {
        level: Level::Raid0,
        layout: cfg.layout.map(str::to_string),
        chunk_sectors: cfg.chunk_kib * 2,
        name: cfg.name.to_string(),
        uuid: rng.next_u64().to_le_bytes().repeat(2).try_into().unwrap(),
        time_s: 1_700_000_000,
        entropy: rng.next_u64(),
        assume_clean: true,
    };
    let members: Vec<(String, Rc<dyn BlockDevice>)> = faulty
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("disk{i}"), f.clone() as Rc<dyn BlockDevice>))
        .collect();
    let spec = NestedSpec::for_level(cfg.level, cfg.groups).unwrap();
    let e = exec.clone();
    let stack = exec
        .block_on(async move { create_nested(&e, members, &opts, spec).await })
        .expect("create finishes")
        .unwrap_or_else(|err| panic!("seed {seed}: create failed: {err}"));
    let sectors = stack.array.capacity_sectors() as usize;
    Ctx {
        seed,
        cfg,
        exec,
        mem,
        faulty,
        stack,
        model: Rc::new(RefCell::new(vec![0; sectors])),
        rng,
        next_version: 1,
        inflight_writes: Rc::default(),
        inflight_reads: Rc::default(),
        failures: Rc::default(),
        impaired: vec![false; cfg.members()],
    }
}

fn wrap(mem: &[Rc<MemoryDisk>], exec: &Executor, rng: &mut SplitMix64) -> Vec<Rc<FaultyDisk>> {
    mem.iter()
        .map(|m| {
            Rc::new(FaultyDisk::new(
                m.clone(),
                exec.clone(),
                rng.next_u64(),
                fault_config(rng),
            ))
        })
        .collect()
}

fn overlaps(list: &Shared<Vec<(u64, u64)>>, start: u64, len: u64) -> bool {
    list.borrow()
        .iter()
        .any(|&(s, l)| s < start + len && start < s + l)
}

impl Ctx {
    fn random_range(&mut self) -> (u64, u64) {
        let cap = self.stack.array.capacity_sectors().min(SPAN_SECTORS);
        let chunk = u64::from(self.cfg.chunk_kib) * 2;
        let len = match self.rng.below(4) {
            0 => 1 + self.rng.below(8),
            1 => chunk,
            2 => 1 + self.rng.below(4 * chunk),
            _ => 1 + self.rng.below(3 * chunk * self.cfg.groups as u64),
        }
        .min(cap);
        // A hot region half the time, so that requests meet.
        let span = if self.rng.below(2) == 0 { cap / 8 } else { cap };
        let start = self.rng.below(span.max(len) - len + 1);
        (start, len)
    }

    fn spawn_write(&mut self) {
        let (start, len) = self.random_range();
        if overlaps(&self.inflight_writes, start, len) || overlaps(&self.inflight_reads, start, len)
        {
            return;
        }
        let version = self.next_version;
        self.next_version += 1;
        let mut data = vec![0u8; len as usize * SECTOR];
        for (i, s) in data.chunks_mut(SECTOR).enumerate() {
            pattern(version, start + i as u64, s);
        }
        self.inflight_writes.borrow_mut().push((start, len));
        let fua = self.rng.below(8) == 0;
        let array = self.stack.array.clone();
        let (model, inflight, failures, seed) = (
            self.model.clone(),
            self.inflight_writes.clone(),
            self.failures.clone(),
            self.seed,
        );
        self.exec.spawn_detached(async move {
            let r = array.write(start, Bytes::from(data), fua).await;
            inflight.borrow_mut().retain(|&w| w != (start, len));
            match r {
                Ok(()) => model.borrow_mut()[start as usize..(start + len) as usize].fill(version),
                Err(e) => failures.borrow_mut().push(format!(
                    "seed {seed}: write of {len} sectors at {start} failed within tolerance: {e}"
                )),
            }
        });
    }

    fn spawn_read(&mut self) {
        let (start, len) = self.random_range();
        if overlaps(&self.inflight_writes, start, len) {
            return;
        }
        self.inflight_reads.borrow_mut().push((start, len));
        let array = self.stack.array.clone();
        let (model, inflight, failures, seed) = (
            self.model.clone(),
            self.inflight_reads.clone(),
            self.failures.clone(),
            self.seed,
        );
        self.exec.spawn_detached(async move {
            let r = array.read(start, vec![0u8; len as usize * SECTOR]).await;
            inflight.borrow_mut().retain(|&x| x != (start, len));
            let mut expected = vec![0u8; SECTOR];
            match r {
                Ok(data) => {
                    for (i, got) in data.chunks(SECTOR).enumerate() {
                        let sector = start + i as u64;
                        let version = model.borrow()[sector as usize];
                        pattern(version, sector, &mut expected);
                        if got != expected.as_slice() {
                            failures.borrow_mut().push(format!(
                                "seed {seed}: sector {sector} does not hold version {version}"
                            ));
                            return;
                        }
                    }
                }
                Err(e) => failures.borrow_mut().push(format!(
                    "seed {seed}: read of {len} sectors at {start} failed within tolerance: {e}"
                )),
            }
        });
    }

    fn spawn_flush(&mut self) {
        let array = self.stack.array.clone();
        let (failures, seed) = (self.failures.clone(), self.seed);
        self.exec.spawn_detached(async move {
            if let Err(e) = array.flush().await {
                failures
                    .borrow_mut()
                    .push(format!("seed {seed}: flush failed within tolerance: {e}"));
            }
        });
    }

    /// The group array member `i` belongs to, and whether it still serves there.
    fn serving(&self, i: usize) -> bool {
        let group = &self.stack.groups[i / self.cfg.per_group];
        let dev = Rc::as_ptr(&self.faulty[i]) as *const ();
        let in_group =
            group.slots().iter().flatten().any(|m| {
                m.state() == MemberState::Active && Rc::as_ptr(&m.dev) as *const () == dev
            });
        in_group && !self.faulty[i].is_failed() && !self.impaired[i]
    }

    /// Whether member `i` may be lost too without its group losing data.
    fn may_lose(&self, i: usize) -> bool {
        let g = i / self.cfg.per_group;
        let lost = (g * self.cfg.per_group..(g + 1) * self.cfg.per_group)
            .filter(|&j| j == i || !self.serving(j))
            .count();
        self.serving(i) && lost <= self.cfg.tolerance()
    }

    fn maybe_fail_member(&mut self) {
        let i = self.rng.below(self.cfg.members() as u64) as usize;
        if self.may_lose(i) {
            self.faulty[i].fail();
        }
    }

    fn maybe_latent_errors(&mut self) {
        let i = self.rng.below(self.cfg.members() as u64) as usize;
        if !self.may_lose(i) {
            return;
        }
        self.impaired[i] = true;
        let group = &self.stack.groups[i / self.cfg.per_group];
        let sb = group.superblock().expect("a live member");
        let span = (sb.size_sectors / 4).max(1);
        for _ in 0..16 {
            let s = sb.data_offset_sectors + self.rng.below(span);
            self.faulty[i].add_latent_error(s);
        }
    }

    fn run_steps(&mut self, steps: usize) {
        for _ in 0..steps {
            match self.rng.below(100) {
                0..=46 => self.spawn_write(),
                47..=88 => self.spawn_read(),
                89..=96 => self.spawn_flush(),
                97 => self.maybe_fail_member(),
                _ => self.maybe_latent_errors(),
            }
            if self.rng.below(4) == 0 {
                let target = self.exec.now_ns() + self.rng.below(100_000);
                self.exec.advance_to(target);
                self.exec.run_until_stalled();
            }
            self.check_failures();
        }
    }

    fn check_failures(&self) {
        if let Some(first) = self.failures.borrow().first() {
            panic!(
                "{} ({}): first failure: {first}\nreplay with SEED={}",
                self.cfg.name, self.seed, self.seed
            );
        }
    }

    fn quiesce(&mut self) {
        self.exec.run_until_idle();
        self.check_failures();
        assert!(
            self.inflight_writes.borrow().is_empty() && self.inflight_reads.borrow().is_empty(),
            "{} seed {}: requests never completed (deadlock)",
            self.cfg.name,
            self.seed
        );
    }

    /// Stops the stack cleanly and assembles it again from every member disk; a failed disk
    /// may come back (then stale, left out).
    fn stop_and_reassemble(&mut self) {
        let stack = self.stack.clone();
        let cleaned = self
            .exec
            .block_on(async move { stack.mark_clean().await })
            .expect("clean finishes");
        assert!(cleaned.is_ok(), "seed {}: mark clean failed", self.seed);
        let exec = Executor::new();
        let fresh = wrap(&self.mem, &exec, &mut self.rng);
        for (old, new) in self.faulty.iter().zip(&fresh) {
            if old.is_failed() && self.rng.below(2) == 0 {
                new.fail();
            }
        }
        self.faulty = fresh;
        self.impaired = vec![false; self.cfg.members()];
        self.exec = exec.clone();
        let candidates: Vec<(String, Rc<dyn BlockDevice>)> = self
            .faulty
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("disk{i}"), f.clone() as Rc<dyn BlockDevice>))
            .collect();
        let e = exec.clone();
        let seed = self.seed;
        let mut result = exec
            .block_on(async move { assemble_stacks(&e, candidates).await })
            .expect("assembly finishes");
        assert_eq!(
            result.stacks.len(),
            1,
            "seed {seed}: stack did not assemble: {:?}",
            result.problems
        );
        let stack = result.stacks.remove(0);
        assert_eq!(stack.groups.len(), self.cfg.groups, "seed {seed}");
        assert_eq!(stack.level_name(), format!("raid{}", self.cfg.level));
        for group in &stack.groups {
            assert_ne!(group.health(), Health::Failed, "seed {seed}");
            assert!(
                !group.needs_resync(),
                "seed {seed}: a clean stop left a group dirty"
            );
        }
        self.stack = stack;
    }

    fn full_check(&self) {
        let array: Rc<Array> = self.stack.array.clone();
        let cap = array.capacity_sectors().min(SPAN_SECTORS) as usize;
        let data = self
            .exec
            .block_on(async move { array.read(0, vec![0u8; cap * SECTOR]).await })
            .expect("read finishes")
            .unwrap_or_else(|e| panic!("seed {}: full read failed: {e}", self.seed));
        let model = self.model.borrow();
        let mut expected = vec![0u8; SECTOR];
        for (i, got) in data.chunks(SECTOR).enumerate() {
            pattern(model[i], i as u64, &mut expected);
            assert!(
                got == expected.as_slice(),
                "{} seed {}: sector {i} does not hold version {}\nreplay with SEED={}",
                self.cfg.name,
                self.seed,
                model[i],
                self.seed
            );
        }
    }
}

fn run(cfg: Config, seed: u64) {
    let mut ctx = build(cfg, seed);
    for _round in 0..3 {
        ctx.run_steps(300);
        ctx.quiesce();
        ctx.full_check();
        ctx.stop_and_reassemble();
        ctx.full_check();
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SEED") {
        return vec![s.parse().expect("SEED must be a number")];
    }
    let count: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    (1..=count).map(|i| i * 7919).collect()
}

fn run_all(cfg: Config) {
    for seed in seeds() {
        let result = std::panic::catch_unwind(move || run(cfg, seed));
        if let Err(e) = result {
            eprintln!(
                "{}: failed with seed {seed}; replay with SEED={seed}",
                cfg.name
            );
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn raid50_two_groups_of_three() {
    run_all(Config {
        name: "raid50 2x3",
        level: 50,
        groups: 2,
        per_group: 3,
        chunk_kib: 16,
        layout: None,
    });
}

#[test]
fn raid50_three_groups_of_four_right_asymmetric() {
    run_all(Config {
        name: "raid50 3x4 ra",
        level: 50,
        groups: 3,
        per_group: 4,
        chunk_kib: 8,
        layout: Some("right-asymmetric"),
    });
}

#[test]
fn raid60_two_groups_of_four() {
    run_all(Config {
        name: "raid60 2x4",
        level: 60,
        groups: 2,
        per_group: 4,
        chunk_kib: 16,
        layout: None,
    });
}

#[test]
fn raid60_two_groups_of_five_parity_first_6() {
    run_all(Config {
        name: "raid60 2x5 pf6",
        level: 60,
        groups: 2,
        per_group: 5,
        chunk_kib: 8,
        layout: Some("parity-first-6"),
    });
}
