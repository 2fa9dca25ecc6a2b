//! Model-based test: random reads, writes, flushes and discards, many in flight, against an
//! in-memory reference, on `FaultyDisk` members with latency, latent errors, member failures
//! within the level's tolerance, and crashes that tear unflushed writes. Every read is checked.
//!
//! Seeded: a failure prints its seed; `SEED=<n> cargo test --test model` replays it, and
//! `SEEDS=<count>` runs more seeds than the fixed CI set.

use std::rc::Rc;

use orion_raid::array::assemble::{CreateOptions, DIRTY_DEGRADED_REASON, assemble, create};
use orion_raid::array::{Array, Health, MemberState, ReadPolicy};
use orion_raid::block::{BlockDevice, Bytes};
use orion_raid::executor::Executor;
use orion_raid::jobs;
use orion_raid::layout::ArrayLayout;
use orion_raid::metadata::{DeviceRole, Level};
use orion_raid::platform::faulty::FaultyDisk;
use orion_raid::platform::memory::MemoryDisk;
use orion_raid::rng::SplitMix64;

#[path = "common/model.rs"]
mod shared;

use shared::{Io, SECTOR, Workload, fault_config, pattern, run_seeds, version_of};

#[derive(Clone, Debug)]
struct Config {
    name: &'static str,
    level: Level,
    layout: Option<&'static str>,
    members: usize,
    /// Member sizes in MiB (unequal sizes exercise the RAID0 zones).
    member_mib: &'static [u64],
    chunk_kib: u32,
    /// Whether rounds end in a crash and reassembly. For the parity levels a crash while a
    /// member is failed leaves a dirty degraded array, which assembly refuses (as md does: the
    /// write hole may have left parity that would rebuild the missing member wrongly); the
    /// model asserts that refusal and starts over on fresh members (there is no forced
    /// assembly). Half of the parity rounds fail no member, so that crashes also reach
    /// re-assembly and the parity resync.
    crash: bool,
}

struct Ctx {
    seed: u64,
    cfg: Config,
    exec: Executor,
    disks: Vec<Rc<MemoryDisk>>,
    faulty: Vec<Rc<FaultyDisk>>,
    array: Rc<Array>,
    io: Io,
    rng: SplitMix64,
    next_version: u64,
    /// Members given latent sector errors.
    impaired: Vec<bool>,
    /// Disks beyond the members, added as spares (`disks` and `faulty` hold them after the
    /// members; a member is `disk{k}` for disk index `k`).
    spares: usize,
    /// Whether this round may fail members (parity crash rounds alternate).
    may_fail_members: bool,
    /// Whether a spare has been seen in a slot (rebuilding or active) at any point of the
    /// run. The workload's own injected failures may fail that spare later, so the end
    /// state alone cannot show that a spare was activated.
    spare_took_slot: bool,
}

fn is_parity(level: Level) -> bool {
    matches!(level, Level::Raid4 | Level::Raid5 | Level::Raid6)
}

fn tolerance_ok(cfg: &Config, array: &Array, alive: &[bool]) -> bool {
    match cfg.level {
        Level::Raid0 => alive.iter().all(|&a| a),
        Level::Raid1 => alive.iter().any(|&a| a),
        _ => array.layout().survives(alive),
    }
}

fn build(cfg: &Config, seed: u64, spares: usize) -> Ctx {
    let mut rng = SplitMix64::new(seed);
    let exec = Executor::new();
    let disks: Vec<Rc<MemoryDisk>> = (0..cfg.members + spares)
        .map(|i| {
            let mib = cfg.member_mib[i % cfg.member_mib.len()];
            Rc::new(MemoryDisk::new(mib * 2048))
        })
        .collect();
    let faulty: Vec<Rc<FaultyDisk>> = disks
        .iter()
        .map(|d| {
            Rc::new(FaultyDisk::new(
                d.clone(),
                exec.clone(),
                rng.next_u64(),
                fault_config(&mut rng, 200_000),
            ))
        })
        .collect();
    let opts = CreateOptions {
        level: cfg.level,
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
        .take(cfg.members)
        .enumerate()
        .map(|(i, f)| (format!("disk{i}"), f.clone() as Rc<dyn BlockDevice>))
        .collect();
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .expect("create finishes")
        .unwrap_or_else(|err| panic!("seed {seed}: create failed: {err}"));
    // Its jobs run whenever one is due, as the driver's RebuildManager runs them.
    jobs::attach(&array);
    for (k, f) in faulty.iter().enumerate().skip(cfg.members) {
        let a = array.clone();
        let dev = f.clone() as Rc<dyn BlockDevice>;
        exec.block_on(async move { a.add_device(format!("disk{k}"), dev).await })
            .expect("add finishes")
            .unwrap_or_else(|err| panic!("seed {seed}: add spare failed: {err}"));
    }
    let sectors = array.capacity_sectors() as usize;
    Ctx {
        seed,
        cfg: cfg.clone(),
        exec,
        disks,
        faulty,
        array,
        io: Io::new(seed, sectors),
        rng,
        next_version: 1,
        impaired: vec![false; cfg.members + spares],
        spares,
        may_fail_members: true,
        spare_took_slot: false,
    }
}

/// The disk index of a member (`disk{k}`).
fn disk_index(name: &str) -> usize {
    name.trim_start_matches("disk")
        .parse()
        .expect("members are named disk<k>")
}

impl Workload for Ctx {
    fn exec(&self) -> Executor {
        self.exec.clone()
    }

    fn target(&self) -> Rc<Array> {
        self.array.clone()
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
        let cap = self.array.capacity_sectors();
        let len = match self.rng.below(4) {
            0 => 1 + self.rng.below(8),
            1 => 1 + self.rng.below(64),
            2 => 1 + self.rng.below(512),
            _ => 1 + self.rng.below(2048),
        }
        .min(cap);
        // Bias towards a small hot region so that reads hit written data.
        let hot = (cap / 8).max(len);
        let start = if self.rng.below(3) == 0 {
            self.rng.below(cap - len + 1)
        } else {
            self.rng.below(hot - len + 1)
        };
        (start, len)
    }

    /// Fails a random member if the level still tolerates it.
    fn maybe_fail_member(&mut self) {
        let i = self.rng.below(self.cfg.members as u64) as usize;
        self.fail_slot(i);
    }

    /// Latent sector errors on one live member, only where another copy is healthy (the
    /// level tolerates one bad copy; the array must read around it and repair it).
    fn after_step(&mut self) {
        self.note_spare_in_slot();
    }

    fn maybe_latent_errors(&mut self) {
        if self.cfg.level == Level::Raid0 {
            return;
        }
        let i = self.rng.below(self.cfg.members as u64) as usize;
        let mut alive = self.alive();
        if !alive[i] {
            return;
        }
        alive[i] = false;
        if !tolerance_ok(&self.cfg, &self.array, &alive) {
            return;
        }
        let Some(k) = self.array.slots()[i].as_ref().map(|m| disk_index(&m.name)) else {
            return;
        };
        let i = k;
        self.impaired[i] = true;
        // In the part of the member the hot region of the workload maps to.
        let sb = self.array.superblock().expect("a live member");
        let span = (sb.size_sectors / 4).max(1);
        for _ in 0..16 {
            let s = sb.data_offset_sectors + self.rng.below(span);
            self.faulty[i].add_latent_error(s);
        }
    }
}

impl Ctx {
    /// Records whether a disk added as a spare serves in a slot now.
    fn note_spare_in_slot(&mut self) {
        let members = self.cfg.members;
        if self.array.slots().iter().flatten().any(|m| {
            disk_index(&m.name) >= members
                && matches!(m.state(), MemberState::Active | MemberState::Rebuilding)
        }) {
            self.spare_took_slot = true;
        }
    }

    /// Which members still hold good copies: in the array, not failed, and without injected
    /// latent errors (a member with bad sectors counts as lost for the tolerance budget).
    fn alive(&self) -> Vec<bool> {
        (0..self.cfg.members)
            .map(|i| match self.array.slots().get(i) {
                Some(Some(m)) if m.state() == MemberState::Active => {
                    let k = disk_index(&m.name);
                    !self.faulty[k].is_failed() && !self.impaired[k]
                }
                _ => false,
            })
            .collect()
    }

    /// Fails a member: one with latent errors if there is one (it already counts as lost
    /// for the tolerance budget), else a random one if the level tolerates it.
    fn force_fail(&mut self) {
        let impaired = self.array.slots().iter().flatten().find_map(|m| {
            let k = disk_index(&m.name);
            (m.state() == MemberState::Active && self.impaired[k] && !self.faulty[k].is_failed())
                .then_some(k)
        });
        match impaired {
            Some(k) => self.faulty[k].fail(),
            None => {
                let slot = self.rng.below(self.cfg.members as u64) as usize;
                self.fail_slot(slot);
            }
        }
    }

    /// Fails the disk in slot `i` if the level still tolerates it.
    fn fail_slot(&mut self, i: usize) {
        let mut alive = self.alive();
        if !alive[i] {
            return;
        }
        alive[i] = false;
        self.note_spare_in_slot();
        if self.may_fail_members
            && self.cfg.level != Level::Raid0
            && tolerance_ok(&self.cfg, &self.array, &alive)
        {
            let k = self.array.slots()[i]
                .as_ref()
                .map(|m| disk_index(&m.name))
                .expect("a live slot has a member");
            self.faulty[k].fail();
        }
    }

    fn quiesce(&mut self) {
        self.exec.run_until_idle();
        self.check_failures();
        assert!(
            self.io.is_idle(),
            "{} seed {}: requests never completed (deadlock)",
            self.cfg.name,
            self.seed
        );
        assert_eq!(self.exec.task_count(), 0, "seed {}: tasks left", self.seed);
    }

    /// Power loss with requests in flight: the executor and its tasks are dropped, each disk
    /// keeps or loses each unflushed sector, failed disks may come back (stale), and the array
    /// is assembled again from what is on the disks.
    fn crash_and_reassemble(&mut self) {
        self.note_spare_in_slot();
        // Members the array had recorded as faulty on disk must stay out after assembly.
        let recorded_faulty: Vec<u32> = self
            .array
            .superblock()
            .map(|sb| {
                (0..sb.max_dev())
                    .filter(|&d| sb.role_of(d) == DeviceRole::Faulty)
                    .collect()
            })
            .unwrap_or_default();
        // A parity array that loses power while degraded is dirty and degraded at assembly.
        let degraded_at_crash =
            self.array.health() != Health::Optimal || self.faulty.iter().any(|f| f.is_failed());
        let exec = Executor::new();
        let old = std::mem::replace(&mut self.exec, exec.clone());
        drop(old);
        self.io.forget_inflight();
        let mut faulty = Vec::new();
        for (i, f) in self.faulty.iter().enumerate() {
            f.crash();
            // A failed disk that comes back has old events: assembly must leave it out.
            let revive = f.is_failed() && self.rng.below(2) == 0;
            let nf = Rc::new(FaultyDisk::new(
                self.disks[i].clone(),
                exec.clone(),
                self.rng.next_u64(),
                fault_config(&mut self.rng, 200_000),
            ));
            if f.is_failed() && !revive {
                nf.fail();
            }
            faulty.push(nf);
        }
        self.faulty = faulty;
        // The new disks carry no latent errors.
        self.impaired = vec![false; self.cfg.members + self.spares];
        let candidates: Vec<(String, Rc<dyn BlockDevice>)> = self
            .faulty
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("disk{i}"), f.clone() as Rc<dyn BlockDevice>))
            .collect();
        let e = exec.clone();
        let seed = self.seed;
        let result = exec
            .block_on(async move { assemble(&e, candidates).await })
            .expect("assembly finishes");
        if result.arrays.is_empty() && is_parity(self.cfg.level) && degraded_at_crash {
            // md's write hole: refused, with that reason. No forced assembly exists, so the
            // round ends here and the test goes on with a fresh array and model.
            assert!(
                result
                    .problems
                    .iter()
                    .any(|p| p.reason == DIRTY_DEGRADED_REASON),
                "{} seed {seed}: dirty degraded array refused without saying why: {:?}",
                self.cfg.name,
                result.problems
            );
            self.start_over();
            return;
        }
        let array = result.arrays.into_iter().next().unwrap_or_else(|| {
            panic!("seed {seed}: array did not assemble: {:?}", result.problems)
        });
        jobs::attach(&array);
        assert_ne!(array.health(), Health::Failed, "seed {seed}");
        for member in array.slots().iter().flatten() {
            let dev_number = member.superblock().dev_number;
            assert!(
                !recorded_faulty.contains(&dev_number),
                "seed {seed}: member {} was recorded faulty but was assembled",
                member.name
            );
        }
        self.array = array;
        self.verify_after_crash();
    }

    fn verify_after_crash(&mut self) {
        let cap = self.array.capacity_sectors();
        // The array comes up dirty: resync it, then every copy must agree.
        assert!(
            self.array.needs_resync() || !self.array.is_redundant(),
            "seed {}: an unclean shutdown went unnoticed",
            self.seed
        );
        let array = self.array.clone();
        let resynced = self
            .exec
            .block_on(async move { jobs::resync(&array).await })
            .expect("resync finishes");
        assert!(resynced.is_ok(), "seed {}: resync failed", self.seed);
        assert!(!self.array.needs_resync());
        self.array.set_read_policy(ReadPolicy::RoundRobin);
        // As the server does after assembly: a rebuild the crash interrupted resumes, a spare
        // takes an empty slot (with the next round's workload running).
        jobs::start(&self.array);
        let mut reads = Vec::new();
        // Mirrors are read once per copy; a parity array has one copy to read.
        let passes = if is_parity(self.cfg.level) {
            1
        } else {
            self.cfg.members
        };
        for _ in 0..passes {
            let array = self.array.clone();
            let data = self
                .exec
                .block_on(async move { array.read(0, vec![0u8; cap as usize * SECTOR]).await })
                .expect("read finishes");
            match data {
                Ok(d) => reads.push(d),
                Err(e) => panic!("seed {}: full read after crash failed: {e}", self.seed),
            }
        }
        assert!(
            reads.windows(2).all(|w| w[0] == w[1]),
            "{} seed {}: copies disagree after resync",
            self.cfg.name,
            self.seed
        );
        let data = reads.swap_remove(0);
        if let Err(e) = self.io.model.borrow_mut().settle_after_crash(&data) {
            panic!(
                "{} seed {}: {e}\nreplay with SEED={}",
                self.cfg.name, self.seed, self.seed
            );
        }
        self.spawn_flush();
        self.quiesce();
    }

    /// Silent corruption within tolerance, on a quiet array with every member serving and no
    /// latent errors: a few extents get corrupt sectors on one member each, where a scrub
    /// `repair` knows which copy is right (RAID 6: any block, the syndromes locate it;
    /// RAID 4/5: the parity, as repair makes parity follow the data; mirrors: a copy other
    /// than the first, md's repair source). Repair must find and fix them all, a check
    /// afterwards find none; reads do not verify, so none happens while the corruption is
    /// there. The next full check then proves no data changed.
    fn corrupt_and_repair(&mut self) {
        let (seed, name) = (self.seed, self.cfg.name);
        if self.cfg.level == Level::Raid0
            || self.alive().contains(&false)
            || self.array.health() != Health::Optimal
            || self.array.needs_resync()
        {
            return;
        }
        let slots = self.array.slots();
        let member_at = |slot: usize| {
            let m = slots[slot].clone().expect("every slot serves");
            (disk_index(&m.name), m.superblock().data_offset_sectors)
        };
        let cap = self.array.capacity_sectors();
        let mut corrupted = 0;
        for _ in 0..4 {
            // In the hot region, where the workload wrote.
            let at = self.rng.below((cap / 8).max(1));
            let (slot, member_sector, run) = match self.array.layout() {
                ArrayLayout::Raid5(l) => {
                    let chunk = l.chunk_sectors();
                    let stripe = at / l.stripe_data_sectors();
                    let slot = if self.cfg.level == Level::Raid6 {
                        self.rng.below(self.cfg.members as u64) as usize
                    } else {
                        l.parity_disk(stripe)
                    };
                    let first = self.rng.below(chunk);
                    (slot, l.member_sector(stripe, first), chunk - first)
                }
                layout => {
                    let Some(extent) = layout.map(at) else {
                        continue;
                    };
                    if extent.copies.len() < 2 {
                        continue;
                    }
                    let c = 1 + self.rng.below(extent.copies.len() as u64 - 1) as usize;
                    let copy = extent.copies[c];
                    (copy.disk_index, copy.sector, extent.sectors)
                }
            };
            let (k, base) = member_at(slot);
            for s in 0..(1 + self.rng.below(run.min(8))) {
                self.faulty[k].corrupt_sector(base + member_sector + s);
            }
            corrupted += 1;
        }
        if corrupted == 0 {
            return;
        }
        let array = self.array.clone();
        let repaired = self
            .exec
            .block_on(async move { jobs::scrub::repair_mismatches(&array).await })
            .expect("repair finishes")
            .unwrap_or_else(|e| panic!("{name} seed {seed}: repair: {e}"));
        assert!(
            repaired.mismatched_sectors > 0 && repaired.repaired_sectors > 0,
            "{name} seed {seed}: repair missed the corruption: {repaired:?}\n\
             replay with SEED={seed}"
        );
        let array = self.array.clone();
        let checked = self
            .exec
            .block_on(async move { jobs::scrub::check(&array).await })
            .expect("check finishes")
            .unwrap_or_else(|e| panic!("{name} seed {seed}: check: {e}"));
        assert_eq!(
            checked.mismatched_sectors, 0,
            "{name} seed {seed}: still inconsistent after repair: {checked:?}\n\
             replay with SEED={seed}"
        );
    }

    /// Replaces the array, its members and the model with fresh ones, keeping the seed that
    /// replays the whole run.
    fn start_over(&mut self) {
        let (seed, spare_took_slot) = (self.seed, self.spare_took_slot);
        *self = build(&self.cfg, self.rng.next_u64(), self.spares);
        self.seed = seed;
        self.io.seed = seed;
        self.spare_took_slot = spare_took_slot;
    }
}

fn run(cfg: &Config, seed: u64, spares: usize) {
    let mut ctx = build(cfg, seed, spares);
    for round in 0..3 {
        if cfg.crash && is_parity(cfg.level) {
            ctx.may_fail_members = ctx.rng.below(2) == 0;
        }
        if spares > 0 && round == 0 {
            // A failure early on: a spare takes the slot and is rebuilt while the workload
            // runs (and, with crashes, the round may end in the middle of that rebuild).
            ctx.run_steps(50);
            ctx.force_fail();
            // With crashes, end the round soon: the crash then likely lands mid-rebuild.
            ctx.run_steps(if cfg.crash { 60 } else { 350 });
        } else {
            ctx.run_steps(400);
        }
        if round < 2 && cfg.crash {
            ctx.crash_and_reassemble();
        } else {
            ctx.quiesce();
        }
    }
    // Silent corruption within tolerance, found and repaired by a scrub on the quiet array.
    ctx.corrupt_and_repair();
    // Final full check against the model, on a quiet array.
    let cap = ctx.array.capacity_sectors();
    let array = ctx.array.clone();
    let data = ctx
        .exec
        .block_on(async move { array.read(0, vec![0u8; cap as usize * SECTOR]).await })
        .unwrap()
        .unwrap_or_else(|e| panic!("seed {seed}: final read failed: {e}"));
    if spares > 0 {
        ctx.note_spare_in_slot();
        check_spares(&ctx, cfg, seed);
    }
    if let Err(e) = ctx.io.model.borrow().check_current(0, &data) {
        panic!("{} seed {seed}: {e}\nreplay with SEED={seed}", cfg.name);
    }
}

/// What the spares must have done by the end of a run with spares. A member was failed in
/// round 0, so a spare must have taken a slot at some point. The workload's injected
/// failures may later fail that spare too (and a failed disk that comes back after a crash
/// is stale or recorded faulty, never reused), so an empty slot at the end is legitimate —
/// but only if no healthy spare is left: md activates any spare it has for an empty slot.
fn check_spares(ctx: &Ctx, cfg: &Config, seed: u64) {
    let slots = ctx.array.slots();
    let spares = ctx.array.spares();
    let describe = || {
        let mut out = String::new();
        for (i, m) in slots.iter().enumerate() {
            let state = m.as_ref().map(|m| (m.name.clone(), m.state()));
            out += &format!("\n  slot {i}: {state:?}");
        }
        for m in &spares {
            out += &format!("\n  spare {} {:?}", m.name, m.state());
        }
        let failed: Vec<bool> = ctx.faulty.iter().map(|f| f.is_failed()).collect();
        out + &format!("\n  failed disks: {failed:?}")
    };
    assert!(
        ctx.spare_took_slot,
        "{} seed {seed}: no spare was activated{}\nreplay with SEED={seed}",
        cfg.name,
        describe()
    );
    let empty_slot = slots
        .iter()
        .position(|m| m.as_ref().is_none_or(|m| m.state() == MemberState::Faulty));
    let idle_spare = spares
        .iter()
        .find(|m| m.state() == MemberState::Spare && !ctx.faulty[disk_index(&m.name)].is_failed());
    if let (Some(slot), Some(spare)) = (empty_slot, idle_spare) {
        panic!(
            "{} seed {seed}: slot {slot} is empty while spare {} is idle{}\nreplay with SEED={seed}",
            cfg.name,
            spare.name,
            describe()
        );
    }
}

fn run_all(cfg: Config) {
    run_all_with_spares(cfg, 0);
}

/// As `run_all`, with `spares` spare disks added to the array at the start.
fn run_all_with_spares(cfg: Config, spares: usize) {
    run_seeds(cfg.name, 4, |seed| run(&cfg, seed, spares));
}

#[test]
fn raid0_unequal_members() {
    run_all(Config {
        name: "raid0",
        level: Level::Raid0,
        layout: None,
        members: 3,
        member_mib: &[6, 9, 12],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid1_three_copies() {
    run_all(Config {
        name: "raid1",
        level: Level::Raid1,
        layout: None,
        members: 3,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid10_near2_four() {
    run_all(Config {
        name: "raid10-n2",
        level: Level::Raid10,
        layout: Some("n2"),
        members: 4,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid10_near2_three() {
    run_all(Config {
        name: "raid10-n2x3",
        level: Level::Raid10,
        layout: Some("n2"),
        members: 3,
        member_mib: &[8],
        chunk_kib: 32,
        crash: true,
    });
}

#[test]
fn raid10_far2_four() {
    run_all(Config {
        name: "raid10-f2",
        level: Level::Raid10,
        layout: Some("f2"),
        members: 4,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid10_offset2_five() {
    run_all(Config {
        name: "raid10-o2",
        level: Level::Raid10,
        layout: Some("o2"),
        members: 5,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid5_left_symmetric_four() {
    run_all(Config {
        name: "raid5-ls",
        level: Level::Raid5,
        layout: Some("left-symmetric"),
        members: 4,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid5_right_asymmetric_five() {
    run_all(Config {
        name: "raid5-ra",
        level: Level::Raid5,
        layout: Some("right-asymmetric"),
        members: 5,
        member_mib: &[8],
        chunk_kib: 32,
        crash: true,
    });
}

#[test]
fn raid4_four() {
    run_all(Config {
        name: "raid4",
        level: Level::Raid4,
        layout: None,
        members: 4,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid6_left_symmetric_five() {
    run_all(Config {
        name: "raid6-ls",
        level: Level::Raid6,
        layout: Some("left-symmetric"),
        members: 5,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid6_parity_first_6_six() {
    run_all(Config {
        name: "raid6-pf6",
        level: Level::Raid6,
        layout: Some("parity-first-6"),
        members: 6,
        member_mib: &[8],
        chunk_kib: 32,
        crash: true,
    });
}

#[test]
fn overlapping_writes_land_in_order_on_every_mirror() {
    let cfg = Config {
        name: "raid1-order",
        level: Level::Raid1,
        layout: None,
        members: 3,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    };
    let ctx = build(&cfg, 42, 0);
    // 16 overlapping writes issued at once; the range lock must apply them in issue order
    // on every member, whatever the latency of each member.
    for v in 1..=16u64 {
        let array = ctx.array.clone();
        let mut data = vec![0u8; 8 * SECTOR];
        for (i, s) in data.chunks_mut(SECTOR).enumerate() {
            pattern(v, 100 + (v % 3) + i as u64, s);
        }
        ctx.exec.spawn_detached(async move {
            array
                .write(100 + (v % 3), Bytes::from(data), false)
                .await
                .unwrap();
        });
    }
    ctx.exec.run_until_idle();
    let sb = ctx.array.superblock().unwrap();
    let base = sb.data_offset_sectors;
    let mut copies = Vec::new();
    for f in &ctx.faulty {
        let f = f.clone();
        let data = ctx
            .exec
            .block_on(async move { f.read(base + 100, vec![0u8; 12 * SECTOR]).await })
            .unwrap()
            .unwrap();
        copies.push(data);
    }
    assert!(copies.windows(2).all(|w| w[0] == w[1]), "mirrors disagree");
    // Sector 100+2+7 = 109 was last written by v = 14 (v % 3 == 2); sector 100 by v = 15.
    assert_eq!(
        version_of(&copies[0][9 * SECTOR..10 * SECTOR], 109),
        Some(14)
    );
    assert_eq!(version_of(&copies[0][..SECTOR], 100), Some(15));
}

#[test]
fn raid1_two_copies() {
    run_all(Config {
        name: "raid1x2",
        level: Level::Raid1,
        layout: None,
        members: 2,
        member_mib: &[8],
        chunk_kib: 64,
        crash: true,
    });
}

#[test]
fn raid10_near3_five() {
    run_all(Config {
        name: "raid10-n3",
        level: Level::Raid10,
        layout: Some("n3"),
        members: 5,
        member_mib: &[8],
        chunk_kib: 16,
        crash: true,
    });
}

#[test]
fn raid10_near2_far2_four() {
    run_all(Config {
        name: "raid10-n2f2",
        level: Level::Raid10,
        layout: Some("n2f2"),
        members: 4,
        member_mib: &[8],
        chunk_kib: 32,
        crash: true,
    });
}

// Member failure, spare activation and rebuild under the concurrent workload; crash rounds
// (copy levels) may interrupt a rebuild, which resumes after reassembly.

#[test]
fn raid1_two_copies_with_spare_rebuild() {
    run_all_with_spares(
        Config {
            name: "raid1+spare",
            level: Level::Raid1,
            layout: None,
            members: 2,
            member_mib: &[8],
            chunk_kib: 64,
            crash: true,
        },
        1,
    );
}

#[test]
fn raid10_near2_four_with_spares_rebuild() {
    run_all_with_spares(
        Config {
            name: "raid10n2+spares",
            level: Level::Raid10,
            layout: None,
            members: 4,
            member_mib: &[8],
            chunk_kib: 64,
            crash: true,
        },
        2,
    );
}

#[test]
fn raid5_four_with_spare_rebuild() {
    run_all_with_spares(
        Config {
            name: "raid5+spare",
            level: Level::Raid5,
            layout: None,
            members: 4,
            member_mib: &[8],
            chunk_kib: 64,
            crash: false,
        },
        1,
    );
}

#[test]
fn raid6_five_with_spares_rebuild() {
    run_all_with_spares(
        Config {
            name: "raid6+spares",
            level: Level::Raid6,
            layout: None,
            members: 5,
            member_mib: &[8],
            chunk_kib: 64,
            crash: false,
        },
        2,
    );
}
