//! Model-based test of RAID 50 and RAID 60: random reads, writes, discards and flushes, many
//! in flight, against an in-memory reference, on `FaultyDisk` members with latency, member
//! failures and latent sector errors within each group's tolerance, spares that a group
//! rebuilds onto under the workload, and crashes that tear the writes in flight. A round ends
//! either with a clean stop or with a crash, then the whole stack is assembled again from the
//! member disks as `raid serve` does (failed members that come back are stale and stay out;
//! a group that crashed while degraded is refused, and with it the stack). Silent corruption
//! within tolerance is injected on a quiet stack and must be found and fixed by a repair
//! scrub. Every read is checked.
//!
//! Seeded: a failure prints its seed; `SEED=<n> cargo test --test model_nested` replays it,
//! and `SEEDS=<count>` runs more seeds.

use std::collections::BTreeSet;
use std::rc::Rc;

use orion_raid::array::assemble::{CreateOptions, DIRTY_DEGRADED_REASON};
use orion_raid::array::nested::{NestedSpec, Stack, assemble_stacks, create_nested, group_name};
use orion_raid::array::{Array, Health, MemberState};
use orion_raid::block::BlockDevice;
use orion_raid::executor::Executor;
use orion_raid::jobs;
use orion_raid::layout::ArrayLayout;
use orion_raid::metadata::{DeviceRole, Level};
use orion_raid::platform::faulty::FaultyDisk;
use orion_raid::platform::memory::MemoryDisk;
use orion_raid::rng::SplitMix64;

#[path = "common/model.rs"]
mod shared;

use shared::{Io, SECTOR, Workload, fault_config, run_seeds};

const MEMBER_SECTORS: u64 = 4 * 2048;
/// The workload stays in the first 4 MiB of the array (every group, many stripes), so that
/// a full check stays quick in a debug build.
const SPAN_SECTORS: u64 = 8 * 1024;
const MAX_EXTRA_LATENCY_NS: u64 = 100_000;

#[derive(Clone, Copy, Debug)]
struct Config {
    name: &'static str,
    level: u32,
    groups: usize,
    per_group: usize,
    chunk_kib: u32,
    layout: Option<&'static str>,
    /// Spare disks added to each group at the start; then the first two rounds fail a
    /// member early, and the group rebuilds onto its spare under the workload.
    spares_per_group: usize,
    /// Whether the first two rounds end in a crash instead of a clean stop.
    crash: bool,
}

impl Config {
    /// Members of one group that may be lost at once.
    fn tolerance(&self) -> usize {
        if self.level == 60 { 2 } else { 1 }
    }

    fn members(&self) -> usize {
        self.groups * self.per_group
    }

    fn disks(&self) -> usize {
        self.members() + self.groups * self.spares_per_group
    }

    /// The groups the array range touches (the outer RAID 0 deals chunks round-robin).
    fn groups_of_range(&self, start: u64, len: u64) -> Vec<bool> {
        let chunk = u64::from(self.chunk_kib) * 2;
        let mut touched = vec![false; self.groups];
        for c in (start / chunk..=(start + len - 1) / chunk).take(self.groups) {
            touched[(c % self.groups as u64) as usize] = true;
        }
        touched
    }
}

/// The disk index of a member (`disk{k}`).
fn disk_index(name: &str) -> usize {
    name.trim_start_matches("disk")
        .parse()
        .expect("members are named disk<k>")
}

struct Ctx {
    seed: u64,
    cfg: Config,
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    faulty: Vec<Rc<FaultyDisk>>,
    stack: Stack,
    io: Io,
    rng: SplitMix64,
    next_version: u64,
    /// Disks given latent sector errors (they count as lost for the tolerance budget).
    impaired: Vec<bool>,
    /// Whether this round may fail members (crash rounds alternate, so that crashes also
    /// reach re-assembly and the resync, not only the refusal of a dirty degraded group).
    may_fail_members: bool,
    /// Groups that acknowledged a write since the stack was assembled: they are dirty.
    written: Vec<bool>,
}

fn wrap(mem: &[Rc<MemoryDisk>], exec: &Executor, rng: &mut SplitMix64) -> Vec<Rc<FaultyDisk>> {
    mem.iter()
        .map(|m| {
            Rc::new(FaultyDisk::new(
                m.clone(),
                exec.clone(),
                rng.next_u64(),
                fault_config(rng, MAX_EXTRA_LATENCY_NS),
            ))
        })
        .collect()
}

fn named(faulty: &[Rc<FaultyDisk>]) -> Vec<(String, Rc<dyn BlockDevice>)> {
    faulty
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("disk{i}"), f.clone() as Rc<dyn BlockDevice>))
        .collect()
}

fn build(cfg: Config, seed: u64) -> Ctx {
    let mut rng = SplitMix64::new(seed);
    let exec = Executor::new();
    let mem: Vec<Rc<MemoryDisk>> = (0..cfg.disks())
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
    let mut members = named(&faulty);
    let spares = members.split_off(cfg.members());
    let spec = NestedSpec::for_level(cfg.level, cfg.groups).unwrap();
    let e = exec.clone();
    let stack = exec
        .block_on(async move { create_nested(&e, members, &opts, spec).await })
        .expect("create finishes")
        .unwrap_or_else(|err| panic!("seed {seed}: create failed: {err}"));
    // Their jobs run whenever one is due, as the driver's RebuildManager runs them.
    for layer in stack.layers() {
        jobs::attach(layer);
    }
    for (i, (name, dev)) in spares.into_iter().enumerate() {
        let group = stack.groups[i / cfg.spares_per_group].clone();
        exec.block_on(async move { group.add_device(name, dev).await })
            .expect("add finishes")
            .unwrap_or_else(|err| panic!("seed {seed}: add spare failed: {err}"));
    }
    let sectors = stack.array.capacity_sectors() as usize;
    Ctx {
        seed,
        cfg,
        exec,
        mem,
        faulty,
        stack,
        io: Io::new(seed, sectors),
        rng,
        next_version: 1,
        impaired: vec![false; cfg.disks()],
        may_fail_members: true,
        written: vec![false; cfg.groups],
    }
}

impl Workload for Ctx {
    fn exec(&self) -> Executor {
        self.exec.clone()
    }

    fn target(&self) -> Rc<Array> {
        self.stack.array.clone()
    }

    fn io(&self) -> &Io {
        &self.io
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    fn next_version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version - 1
    }

    fn name(&self) -> &'static str {
        self.cfg.name
    }

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

    fn maybe_fail_member(&mut self) {
        let (g, slot) = self.random_slot();
        self.fail_slot(g, slot);
    }

    fn maybe_latent_errors(&mut self) {
        let (g, slot) = self.random_slot();
        if !self.may_lose(g, slot) {
            return;
        }
        let k = self.active_disk(g, slot).expect("a serving slot");
        self.impaired[k] = true;
        let sb = self.stack.groups[g].superblock().expect("a live member");
        let span = (sb.size_sectors / 4).max(1);
        for _ in 0..16 {
            let s = sb.data_offset_sectors + self.rng.below(span);
            self.faulty[k].add_latent_error(s);
        }
    }

    fn after_step(&mut self) {
        self.note_written();
    }
}

impl Ctx {
    /// Records which groups acknowledged writes (each marked itself dirty on its members
    /// first, durably).
    fn note_written(&mut self) {
        let mut m = self.io.model.borrow_mut();
        for (start, len) in m.acked_writes.drain(..) {
            for (g, hit) in self.cfg.groups_of_range(start, len).into_iter().enumerate() {
                self.written[g] |= hit;
            }
        }
    }

    /// The disk in slot `slot` of group `g`, if it is an active member there.
    fn active_disk(&self, g: usize, slot: usize) -> Option<usize> {
        match self.stack.groups[g].slots().get(slot) {
            Some(Some(m)) if m.state() == MemberState::Active => Some(disk_index(&m.name)),
            _ => None,
        }
    }

    /// Slots of group `g` that hold a good copy: an active member, not failed, without
    /// injected latent errors.
    fn serving(&self, g: usize) -> Vec<bool> {
        (0..self.cfg.per_group)
            .map(|slot| {
                self.active_disk(g, slot)
                    .is_some_and(|k| !self.faulty[k].is_failed() && !self.impaired[k])
            })
            .collect()
    }

    /// Whether slot `slot` of group `g` may be lost too without the group losing data.
    fn may_lose(&self, g: usize, slot: usize) -> bool {
        let serving = self.serving(g);
        let lost = serving.iter().filter(|&&s| !s).count();
        serving[slot] && lost < self.cfg.tolerance()
    }

    fn random_slot(&mut self) -> (usize, usize) {
        let g = self.rng.below(self.cfg.groups as u64) as usize;
        let slot = self.rng.below(self.cfg.per_group as u64) as usize;
        (g, slot)
    }

    fn fail_slot(&mut self, g: usize, slot: usize) {
        if self.may_fail_members && self.may_lose(g, slot) {
            let k = self.active_disk(g, slot).expect("a serving slot");
            self.faulty[k].fail();
        }
    }

    /// Fails a member of a random group: one with latent errors if the group has one (it
    /// already counts as lost), else a random one if the group tolerates it.
    fn force_fail(&mut self) {
        let (g, slot) = self.random_slot();
        let impaired = (0..self.cfg.per_group)
            .filter_map(|s| self.active_disk(g, s))
            .find(|&k| self.impaired[k] && !self.faulty[k].is_failed());
        match impaired {
            Some(k) => self.faulty[k].fail(),
            None => self.fail_slot(g, slot),
        }
    }

    fn quiesce(&mut self) {
        self.exec.run_until_idle();
        self.note_written();
        self.check_failures();
        assert!(
            self.io.is_idle(),
            "{} seed {}: requests never completed (deadlock)",
            self.cfg.name,
            self.seed
        );
    }

    /// Fresh `FaultyDisk`s on the member images, on a fresh executor; a failed disk may come
    /// back (then it is stale and must stay out). The candidates of an assembly.
    fn replace_disks(&mut self, exec: &Executor) -> Vec<(String, Rc<dyn BlockDevice>)> {
        let fresh = wrap(&self.mem, exec, &mut self.rng);
        for (old, new) in self.faulty.iter().zip(&fresh) {
            if old.is_failed() && self.rng.below(2) == 0 {
                new.fail();
            }
        }
        self.faulty = fresh;
        self.impaired = vec![false; self.cfg.disks()];
        self.written = vec![false; self.cfg.groups];
        self.exec = exec.clone();
        named(&self.faulty)
    }

    /// Checks a stack that assembled: every group present, at the level created, and no
    /// member the group had recorded faulty back in a slot.
    fn take_stack(&mut self, stack: Stack, recorded_faulty: &[(String, Vec<u32>)]) {
        let seed = self.seed;
        for layer in stack.layers() {
            jobs::attach(layer);
        }
        assert_eq!(stack.groups.len(), self.cfg.groups, "seed {seed}");
        assert_eq!(stack.level_name(), format!("raid{}", self.cfg.level));
        for group in &stack.groups {
            assert_ne!(group.health(), Health::Failed, "seed {seed}");
            let faulty = recorded_faulty
                .iter()
                .find(|(name, _)| name == group.name())
                .map(|(_, f)| f.as_slice())
                .unwrap_or_default();
            for member in group.slots().iter().flatten() {
                assert!(
                    !faulty.contains(&member.superblock().dev_number),
                    "seed {seed}: {} was recorded faulty in {} but was assembled",
                    member.name,
                    group.name()
                );
            }
        }
        self.stack = stack;
    }

    /// Each group's device numbers its superblock records faulty.
    fn recorded_faulty(&self) -> Vec<(String, Vec<u32>)> {
        self.stack
            .groups
            .iter()
            .map(|g| {
                let faulty = g
                    .superblock()
                    .map(|sb| {
                        (0..sb.max_dev())
                            .filter(|&d| sb.role_of(d) == DeviceRole::Faulty)
                            .collect()
                    })
                    .unwrap_or_default();
                (g.name().to_string(), faulty)
            })
            .collect()
    }

    /// Stops the stack cleanly and assembles it again from every member disk.
    fn stop_and_reassemble(&mut self) {
        let stack = self.stack.clone();
        let cleaned = self
            .exec
            .block_on(async move { stack.mark_clean().await })
            .expect("clean finishes");
        assert!(cleaned.is_ok(), "seed {}: mark clean failed", self.seed);
        let recorded_faulty = self.recorded_faulty();
        let exec = Executor::new();
        let candidates = self.replace_disks(&exec);
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
        for group in &stack.groups {
            assert!(
                !group.needs_resync(),
                "seed {seed}: a clean stop left a group dirty"
            );
        }
        self.take_stack(stack, &recorded_faulty);
        self.start_jobs();
    }

    /// As the server does after assembly: resyncs, rebuilds to resume, spares to activate.
    fn start_jobs(&self) {
        for layer in self.stack.layers() {
            jobs::start(layer);
        }
    }

    /// Power loss with requests in flight: the executor and its tasks are dropped, each disk
    /// keeps or loses each unflushed sector, failed disks may come back (stale), and the
    /// stack is assembled again from what is on the disks.
    fn crash_and_reassemble(&mut self) {
        let recorded_faulty = self.recorded_faulty();
        // A group is degraded if a slot is empty, being rebuilt, or holds a failed disk the
        // group has not noticed yet.
        let degraded: Vec<bool> = (0..self.cfg.groups)
            .map(|g| {
                let group = &self.stack.groups[g];
                group.health() != Health::Optimal
                    || group.slots().iter().any(|m| match m {
                        Some(m) => {
                            m.state() != MemberState::Active
                                || self.faulty[disk_index(&m.name)].is_failed()
                        }
                        None => true,
                    })
            })
            .collect();
        let written = self.written.clone();
        let exec = Executor::new();
        drop(std::mem::replace(&mut self.exec, exec.clone()));
        self.io.forget_inflight();
        for f in &self.faulty {
            f.crash();
        }
        let candidates = self.replace_disks(&exec);
        let e = exec.clone();
        let seed = self.seed;
        let name = self.cfg.name;
        let mut result = exec
            .block_on(async move { assemble_stacks(&e, candidates).await })
            .expect("assembly finishes");
        if result.stacks.is_empty() {
            // A group that lost power while degraded may hold stripes whose parity matches
            // neither the old nor the new data (the write hole): it is refused, and the outer
            // RAID 0 cannot start without it. The other groups are not served on their own:
            // their data is only part of the outer array's.
            for (g, &was_degraded) in degraded.iter().enumerate() {
                let label = group_name(name, g);
                let refused = result.problems.iter().any(|p| {
                    p.member.starts_with(&format!("{label} ")) && p.reason == DIRTY_DEGRADED_REASON
                });
                let not_served = result
                    .problems
                    .iter()
                    .any(|p| p.member == label && p.reason.contains("did not start"));
                assert!(
                    refused || not_served,
                    "{name} seed {seed}: group {g} neither refused nor left out: {:?}",
                    result.problems
                );
                assert!(
                    was_degraded || !refused,
                    "{name} seed {seed}: group {g} was not degraded at the crash but was \
                     refused as dirty and degraded: {:?}",
                    result.problems
                );
            }
            assert!(
                result
                    .problems
                    .iter()
                    .any(|p| p.reason == DIRTY_DEGRADED_REASON),
                "{name} seed {seed}: the stack did not start, and no group says why: {:?}",
                result.problems
            );
            self.start_over();
            return;
        }
        assert_eq!(
            result.stacks.len(),
            1,
            "seed {seed}: one stack expected: {:?}",
            result.problems
        );
        let stack = result.stacks.remove(0);
        self.take_stack(stack, &recorded_faulty);
        self.verify_after_crash(&written);
    }

    fn verify_after_crash(&mut self, written: &[bool]) {
        let seed = self.seed;
        let name = self.cfg.name;
        // The outer RAID 0 has no redundancy to resync; each group written to since its
        // assembly comes up dirty and is resynced.
        assert!(!self.stack.array.is_redundant());
        for (g, group) in self.stack.groups.iter().enumerate() {
            assert!(
                group.needs_resync() || !written[g],
                "{name} seed {seed}: group {g} was written to, but its unclean shutdown went \
                 unnoticed"
            );
        }
        for layer in self.stack.layers() {
            let layer = layer.clone();
            let resynced = self
                .exec
                .block_on(async move { jobs::resync(&layer).await })
                .expect("resync finishes");
            assert!(
                matches!(resynced, Ok(true)),
                "{name} seed {seed}: resync failed"
            );
        }
        for layer in self.stack.layers() {
            assert!(!layer.needs_resync(), "seed {seed}");
        }
        let array: Rc<Array> = self.stack.array.clone();
        let cap = array.capacity_sectors().min(SPAN_SECTORS) as usize;
        let data = self
            .exec
            .block_on(async move { array.read(0, vec![0u8; cap * SECTOR]).await })
            .expect("read finishes")
            .unwrap_or_else(|e| panic!("{name} seed {seed}: full read after crash failed: {e}"));
        if let Err(e) = self.io.model.borrow_mut().settle_after_crash(&data) {
            panic!("{name} seed {seed}: {e}\nreplay with SEED={seed}");
        }
        self.start_jobs();
        self.spawn_flush();
        self.quiesce();
    }

    /// Replaces the stack, its disks and the model with fresh ones, keeping the seed that
    /// replays the whole run.
    fn start_over(&mut self) {
        let seed = self.seed;
        *self = build(self.cfg, self.rng.next_u64());
        self.seed = seed;
        self.io.seed = seed;
    }

    fn full_check(&self) {
        let array: Rc<Array> = self.stack.array.clone();
        let cap = array.capacity_sectors().min(SPAN_SECTORS) as usize;
        let data = self
            .exec
            .block_on(async move { array.read(0, vec![0u8; cap * SECTOR]).await })
            .expect("read finishes")
            .unwrap_or_else(|e| panic!("seed {}: full read failed: {e}", self.seed));
        if let Err(e) = self.io.model.borrow().check_current(0, &data) {
            panic!(
                "{} seed {}: {e}\nreplay with SEED={}",
                self.cfg.name, self.seed, self.seed
            );
        }
    }

    /// Silent corruption within tolerance, on a quiet stack: in each group with every member
    /// serving, a few stripes get corrupt sectors in one block each (RAID 6: any block, which
    /// the syndromes locate; RAID 5: the parity, as a repair makes parity follow the data);
    /// a repair scrub must find and fix them all, and a check afterwards find none. Reads
    /// do not verify parity, so no read happens while the corruption is there.
    fn corrupt_and_repair(&mut self) {
        let (seed, name) = (self.seed, self.cfg.name);
        let chunk = u64::from(self.cfg.chunk_kib) * 2;
        for g in 0..self.cfg.groups {
            let group = self.stack.groups[g].clone();
            if self.serving(g).contains(&false)
                || group.health() != Health::Optimal
                || group.needs_resync()
            {
                continue;
            }
            let ArrayLayout::Raid5(layout) = group.layout().clone() else {
                panic!("a group has a parity layout");
            };
            // The stripes the workload's span reaches in this group.
            let stripes = (SPAN_SECTORS / (self.cfg.groups as u64 * layout.stripe_data_sectors()))
                .clamp(1, layout.stripe_count());
            let mut used = BTreeSet::new();
            for _ in 0..4 {
                let stripe = self.rng.below(stripes);
                if !used.insert(stripe) {
                    continue;
                }
                let slot = if self.cfg.level == 60 {
                    self.rng.below(self.cfg.per_group as u64) as usize
                } else {
                    layout.parity_disk(stripe)
                };
                let member = group.slots()[slot].clone().expect("a serving slot");
                let base = member.superblock().data_offset_sectors;
                let disk = &self.faulty[disk_index(&member.name)];
                let first = self.rng.below(chunk);
                let count = 1 + self.rng.below((chunk - first).min(8));
                for offset in first..first + count {
                    disk.corrupt_sector(base + layout.member_sector(stripe, offset));
                }
            }
            let g2 = group.clone();
            let repaired = self
                .exec
                .block_on(async move { jobs::scrub::repair_mismatches(&g2).await })
                .expect("repair finishes")
                .unwrap_or_else(|e| panic!("{name} seed {seed}: repair of group {g}: {e}"));
            assert!(
                repaired.mismatched_sectors > 0 && repaired.repaired_sectors > 0,
                "{name} seed {seed}: repair of group {g} missed the corruption: {repaired:?}\n\
                 replay with SEED={seed}"
            );
            let checked = self
                .exec
                .block_on(async move { jobs::scrub::check(&group).await })
                .expect("check finishes")
                .unwrap_or_else(|e| panic!("{name} seed {seed}: check of group {g}: {e}"));
            assert_eq!(
                checked.mismatched_sectors, 0,
                "{name} seed {seed}: group {g} still inconsistent after repair: {checked:?}\n\
                 replay with SEED={seed}"
            );
        }
    }

    /// Whether a spare disk holds a slot of its group.
    fn spare_in_slot(&self) -> bool {
        self.stack.groups.iter().any(|g| {
            g.slots()
                .iter()
                .flatten()
                .any(|m| disk_index(&m.name) >= self.cfg.members())
        })
    }
}

fn run(cfg: Config, seed: u64) {
    let mut ctx = build(cfg, seed);
    let mut spare_seen = false;
    for round in 0..3 {
        if round == 2 {
            // On the stack as the last assembly left it, once its rebuilds are done.
            ctx.quiesce();
            ctx.corrupt_and_repair();
            ctx.full_check();
        }
        // With spares: a crash in the first rebuild, a clean stop in the second.
        let crash_rounds = if cfg.spares_per_group > 0 { 1 } else { 2 };
        let crash = cfg.crash && round < crash_rounds;
        ctx.may_fail_members = !crash || ctx.rng.below(2) == 0;
        if cfg.spares_per_group > 0 && round < 2 {
            // A failure early on: the group's spare takes the slot and is rebuilt under the
            // workload; the round ends soon, likely in the middle of that rebuild (a crash
            // there leaves the group dirty and degraded; a clean stop records the rebuild's
            // position and the next assembly resumes it).
            ctx.may_fail_members = true;
            ctx.run_steps(50);
            ctx.force_fail();
            let steps = 20 + ctx.rng.below(60) as usize;
            ctx.run_steps(steps);
        } else if crash {
            // The crash lands anywhere in the workload.
            let steps = 30 + ctx.rng.below(270) as usize;
            ctx.run_steps(steps);
        } else {
            ctx.run_steps(300);
        }
        // A spare may fail in turn later; that it took a slot is what counts.
        spare_seen |= ctx.spare_in_slot();
        if crash {
            ctx.crash_and_reassemble();
        } else {
            ctx.quiesce();
            ctx.full_check();
            ctx.stop_and_reassemble();
            ctx.full_check();
        }
    }
    ctx.quiesce();
    ctx.full_check();
    if cfg.spares_per_group > 0 {
        assert!(
            spare_seen,
            "{} seed {seed}: no spare was activated\nreplay with SEED={seed}",
            cfg.name
        );
    }
}

fn run_all(cfg: Config) {
    run_seeds(cfg.name, 3, |seed| run(cfg, seed));
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
        spares_per_group: 0,
        crash: true,
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
        spares_per_group: 0,
        crash: true,
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
        spares_per_group: 0,
        crash: true,
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
        spares_per_group: 0,
        crash: true,
    });
}

#[test]
fn raid50_two_groups_of_three_with_spares_rebuild() {
    run_all(Config {
        name: "raid50 2x3+spares",
        level: 50,
        groups: 2,
        per_group: 3,
        chunk_kib: 16,
        layout: None,
        spares_per_group: 1,
        crash: true,
    });
}

#[test]
fn raid60_two_groups_of_four_with_spares_rebuild() {
    run_all(Config {
        name: "raid60 2x4+spares",
        level: 60,
        groups: 2,
        per_group: 4,
        chunk_kib: 16,
        layout: None,
        spares_per_group: 1,
        crash: true,
    });
}
