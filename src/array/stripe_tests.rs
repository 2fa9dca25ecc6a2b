//! Parity-level engine tests: random I/O against a reference, parity recomputed from the
//! members after every write, degraded and failed arrays, latent errors and repair.

extern crate std;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::assemble::assemble;
use super::test_rig::{
    FaultyArray, assert_stripe_parity, faulty_array, named_members, options, read_now, write_now,
};
use super::{Array, Health};
use crate::block::{BlockDevice, Bytes, IoError};
use crate::executor::Executor;
use crate::layout::{ArrayLayout, Raid5Layout};
use crate::metadata::Level;
use crate::platform::faulty::{FaultOp, FaultyDisk};
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

const CHUNK_SECTORS: u32 = 16;
const SEED: u64 = 0x5eed_0005_0006_0004;

struct Rig {
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    disks: Vec<Rc<FaultyDisk>>,
    array: Rc<Array>,
    layout: Raid5Layout,
    data_offset: u64,
}

fn rig(level: Level, layout: Option<&str>, count: usize, latency: bool) -> Rig {
    let mut opts = options(level, layout, CHUNK_SECTORS, "p");
    opts.uuid = [5; 16];
    opts.entropy = 11;
    let FaultyArray {
        exec,
        mem,
        disks,
        array,
    } = faulty_array(opts, count, 8 * 2048, latency);
    let ArrayLayout::Raid5(layout) = array.layout().clone() else {
        panic!("a parity layout");
    };
    let data_offset = array.superblock().unwrap().data_offset_sectors;
    Rig {
        exec,
        mem,
        disks,
        array,
        layout,
        data_offset,
    }
}

impl Rig {
    fn write(&self, sector: u64, data: Vec<u8>) -> Result<(), IoError> {
        write_now(&self.exec, &self.array, sector, data)
    }

    fn read(&self, sector: u64, sectors: u64) -> Result<Vec<u8>, IoError> {
        read_now(&self.exec, &self.array, sector, sectors as usize)
    }

    fn fail_slot(&self, slot: usize) {
        let a = self.array.clone();
        self.exec
            .block_on(async move { a.fail_member(slot).await })
            .unwrap()
            .unwrap();
    }

    fn cell(&self, disk: usize, stripe: u64) -> Vec<u8> {
        let mut buf = vec![0u8; CHUNK_SECTORS as usize * 512];
        let at = self.data_offset + self.layout.member_sector(stripe, 0);
        self.mem[disk].read_at(at, &mut buf).unwrap();
        buf
    }

    /// Recomputes P (and Q) of `stripe` from the members' data and compares.
    fn check_parity(&self, stripe: u64, what: &str) {
        assert_stripe_parity(&self.layout, stripe, |d, s| self.cell(d, s), what);
    }
}

fn pattern(rng: &mut SplitMix64, sectors: u64) -> Vec<u8> {
    let mut v = vec![0u8; sectors as usize * 512];
    rng.fill(&mut v);
    v
}

/// Random writes inside the first `stripes` stripes, checking parity after each and the
/// whole region against a reference at the end. Returns the reference.
fn random_io(r: &Rig, rng: &mut SplitMix64, stripes: u64, writes: usize, what: &str) -> Vec<u8> {
    let sds = r.layout.stripe_data_sectors();
    let region = stripes * sds;
    let mut reference = r.read(0, region).unwrap();
    for _ in 0..writes {
        let len = rng.range_inclusive(1, 2 * sds + 3).min(region);
        let start = rng.below(region - len + 1);
        let data = pattern(rng, len);
        r.write(start, data.clone()).unwrap();
        let at = start as usize * 512;
        reference[at..at + data.len()].copy_from_slice(&data);
        if r.array.health() == Health::Optimal {
            for stripe in start / sds..=(start + len - 1) / sds {
                r.check_parity(stripe, what);
            }
        }
        // A random read-back of some range.
        let rlen = rng.range_inclusive(1, sds + 5).min(region);
        let rs = rng.below(region - rlen + 1);
        let back = r.read(rs, rlen).unwrap();
        let at = rs as usize * 512;
        assert!(
            back == reference[at..at + back.len()],
            "{what}: read of {rlen} at {rs} differs"
        );
    }
    assert!(
        r.read(0, region).unwrap() == reference,
        "{what}: region differs"
    );
    reference
}

fn configs() -> Vec<(Level, u32)> {
    let mut v = vec![(Level::Raid4, 0)];
    v.extend((0..=5).map(|a| (Level::Raid5, a)));
    // md layouts 0-5, the DDF layouts 8-10 (slots are member indices) and the -6 layouts.
    v.extend(
        (0..=5)
            .chain(8..=10)
            .chain(16..=20)
            .map(|a| (Level::Raid6, a)),
    );
    v
}

#[test]
fn random_writes_read_back_and_keep_parity() {
    std::eprintln!("seed {SEED:#x}");
    let mut rng = SplitMix64::new(SEED);
    for (level, algorithm) in configs() {
        for count in 4..=7 {
            let layout = format!("{algorithm}");
            let r = rig(level, Some(&layout), count, count % 2 == 1);
            let what = format!("{level} layout {algorithm} on {count}");
            random_io(&r, &mut rng, 6, 25, &what);
            assert_eq!(r.array.health(), Health::Optimal, "{what}");
        }
    }
}

#[test]
fn degraded_arrays_read_and_write() {
    std::eprintln!("seed {SEED:#x}");
    let mut rng = SplitMix64::new(SEED ^ 1);
    for (level, algorithm) in configs() {
        for count in [4usize, 5, 7] {
            let layout = format!("{algorithm}");
            let r = rig(level, Some(&layout), count, false);
            let what = format!("degraded {level} layout {algorithm} on {count}");
            let reference = random_io(&r, &mut rng, 5, 10, &what);
            let region = reference.len() as u64 / 512;
            let tolerated = r.layout.parity_disks();
            // The first failure is found by I/O (the disk is pulled), the second by hand.
            // Reads served by the stripe cache would not touch the pulled disk: off for this.
            let first = rng.below(count as u64) as usize;
            r.disks[first].fail();
            r.array.set_stripe_cache_bytes(0);
            assert!(r.read(0, region).unwrap() == reference, "{what}");
            r.array
                .set_stripe_cache_bytes(super::stripe_cache::DEFAULT_CACHE_BYTES);
            if tolerated == 2 {
                let second = (first + 1 + rng.below(count as u64 - 1) as usize) % count;
                r.fail_slot(second);
            }
            assert_eq!(r.array.health(), Health::Degraded, "{what}");
            assert!(r.read(0, region).unwrap() == reference, "{what}");
            random_io(&r, &mut rng, 5, 15, &what);
            assert_eq!(r.array.health(), Health::Degraded, "{what}");
        }
    }
}

#[test]
fn three_failures_on_raid6_lose_exactly_the_dead_chunks() {
    let mut rng = SplitMix64::new(SEED ^ 2);
    for algorithm in [0u32, 2, 5, 16, 19] {
        let count = 6;
        let r = rig(Level::Raid6, Some(&format!("{algorithm}")), count, false);
        let reference = random_io(&r, &mut rng, 6, 5, "raid6 before loss");
        for slot in [1, 3, 4] {
            r.fail_slot(slot);
        }
        assert_eq!(r.array.health(), Health::Failed);
        let l = r.layout.clone();
        let chunk = u64::from(CHUNK_SECTORS);
        let chunks = reference.len() as u64 / 512 / chunk;
        for c in 0..chunks {
            let at = l.stripe_of(c * chunk).unwrap();
            let disk = l.data_disk(at.stripe, at.data_index);
            let got = r.read(c * chunk + 3, chunk - 3);
            if [1, 3, 4].contains(&disk) {
                assert_eq!(
                    got,
                    Err(IoError::DataLost {
                        sector: c * chunk + 3
                    })
                );
            } else {
                let from = (c * chunk + 3) as usize * 512;
                assert!(got.unwrap() == reference[from..from + (chunk - 3) as usize * 512]);
            }
        }
        // Writes to a lost chunk fail; writes elsewhere still land.
        let _ = r.write(0, vec![7u8; 512 * chunk as usize * 3]);
    }
}

#[test]
fn latent_error_is_rebuilt_and_repaired() {
    for (level, count) in [(Level::Raid5, 4), (Level::Raid6, 5), (Level::Raid4, 3)] {
        let r = rig(level, None, count, false);
        let mut rng = SplitMix64::new(SEED ^ 3);
        let reference = random_io(&r, &mut rng, 4, 8, "latent");
        // The latent error is found by a member read, which the stripe cache would spare.
        r.array.set_stripe_cache_bytes(0);
        let l = r.layout.clone();
        // A latent error in data chunk 1 of stripe 2, sector 5.
        let disk = l.data_disk(2, 1);
        let member_sector = r.data_offset + l.member_sector(2, 5);
        r.disks[disk].add_latent_error(member_sector);
        let region = reference.len() as u64 / 512;
        assert!(r.read(0, region).unwrap() == reference);
        let corrected = r.array.slots()[disk].as_ref().unwrap().counters();
        assert!(corrected.corrected_sectors >= 1, "{level}");
        // The member holds the right data again and reads without error.
        let direct = {
            let d = r.disks[disk].clone();
            r.exec
                .block_on(async move { d.read(member_sector, vec![0u8; 512]).await })
                .unwrap()
                .unwrap()
        };
        let array_sector = (2 * l.data_disks() as u64 + 1) * u64::from(CHUNK_SECTORS) + 5;
        let at = array_sector as usize * 512;
        assert!(direct == reference[at..at + 512]);
        assert_eq!(r.array.health(), Health::Optimal);
        r.check_parity(2, "after repair");
    }
}

#[test]
fn degraded_raid5_with_a_latent_error_loses_one_sector() {
    let r = rig(Level::Raid5, None, 4, false);
    let mut rng = SplitMix64::new(SEED ^ 4);
    let reference = random_io(&r, &mut rng, 4, 8, "lse");
    let l = r.layout.clone();
    let chunk = u64::from(CHUNK_SECTORS);
    let dead = l.data_disk(1, 0);
    r.fail_slot(dead);
    // Another member of stripe 1 has a bad sector at offset 6: only that row is lost.
    let other = l.data_disk(1, 1);
    r.disks[other].add_latent_error(r.data_offset + l.member_sector(1, 6));
    let chunk_start = l.data_disks() as u64 * chunk;
    assert_eq!(
        r.read(chunk_start, chunk),
        Err(IoError::DataLost {
            sector: chunk_start + 6
        })
    );
    let from = chunk_start as usize * 512;
    assert!(r.read(chunk_start, 6).unwrap() == reference[from..from + 6 * 512]);
    let from7 = from + 7 * 512;
    assert!(r.read(chunk_start + 7, chunk - 7).unwrap() == reference[from7..from7 + 9 * 512]);
}

#[test]
fn write_error_fails_the_member_and_the_write_succeeds() {
    for level in [Level::Raid5, Level::Raid6] {
        let r = rig(level, None, 5, false);
        let mut rng = SplitMix64::new(SEED ^ 5);
        let mut reference = random_io(&r, &mut rng, 4, 4, "write error");
        r.disks[2].add_error_range(0, 1 << 20, FaultOp::Write);
        let sds = r.layout.stripe_data_sectors();
        let data = pattern(&mut rng, sds + 9);
        r.write(5, data.clone()).unwrap();
        reference[5 * 512..5 * 512 + data.len()].copy_from_slice(&data);
        assert_eq!(r.array.health(), Health::Degraded);
        let region = reference.len() as u64 / 512;
        assert!(r.read(0, region).unwrap() == reference);
        // The failure is recorded on the survivors.
        let sb = r.array.superblock().unwrap();
        assert!(sb.events > 0);
    }
}

#[test]
fn full_stripe_write_reads_nothing() {
    let r = rig(Level::Raid6, None, 6, false);
    let sds = r.layout.stripe_data_sectors();
    let reads_before: u64 = r
        .array
        .slots()
        .iter()
        .flatten()
        .map(|m| m.counters().reads)
        .sum();
    let mut rng = SplitMix64::new(SEED ^ 6);
    r.write(sds, pattern(&mut rng, 2 * sds)).unwrap();
    let reads_after: u64 = r
        .array
        .slots()
        .iter()
        .flatten()
        .map(|m| m.counters().reads)
        .sum();
    assert_eq!(reads_before, reads_after);
    r.check_parity(1, "full stripe");
    r.check_parity(2, "full stripe");
}

#[test]
fn dirty_degraded_raid5_does_not_assemble_clean_one_does() {
    let r = rig(Level::Raid5, Some("left-symmetric"), 4, false);
    r.write(0, vec![9u8; 4096]).unwrap();
    let candidates = |r: &Rig| -> Vec<(String, Rc<dyn BlockDevice>)> {
        named_members(&r.disks).into_iter().skip(1).collect()
    };
    // Written and not stopped cleanly: dirty on disk.
    let e = r.exec.clone();
    let c = candidates(&r);
    let result = r
        .exec
        .block_on(async move { assemble(&e, c).await })
        .unwrap();
    assert!(result.arrays.is_empty(), "{result:?}");
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.reason == super::assemble::DIRTY_DEGRADED_REASON),
        "the refusal says why: {result:?}"
    );
    let a = r.array.clone();
    r.exec
        .block_on(async move { a.mark_clean().await })
        .unwrap()
        .unwrap();
    let e = r.exec.clone();
    let c = candidates(&r);
    let result = r
        .exec
        .block_on(async move { assemble(&e, c).await })
        .unwrap();
    assert_eq!(result.arrays.len(), 1, "{result:?}");
    let a = result.arrays[0].clone();
    crate::jobs::attach(&a);
    assert_eq!(a.health(), Health::Degraded);
    let back = r
        .exec
        .block_on(async move { a.read(0, vec![0u8; 4096]).await })
        .unwrap()
        .unwrap();
    assert_eq!(back, vec![9u8; 4096]);
}

fn member_reads(r: &Rig) -> u64 {
    r.array
        .slots()
        .iter()
        .flatten()
        .map(|m| m.counters().reads)
        .sum()
}

#[test]
fn partial_writes_pick_the_plan_with_fewer_reads() {
    let r = rig(Level::Raid6, None, 7, false);
    let chunk = u64::from(CHUNK_SECTORS);
    let mut rng = SplitMix64::new(SEED ^ 7);
    // One sector of one chunk: read-modify-write reads it, P and Q (3) rather than the
    // four untouched chunks.
    let before = member_reads(&r);
    r.write(3, pattern(&mut rng, 1)).unwrap();
    assert_eq!(member_reads(&r) - before, 3);
    // Four of five chunks: reconstruct-write reads the one untouched chunk.
    let before = member_reads(&r);
    r.write(0, pattern(&mut rng, 4 * chunk)).unwrap();
    assert_eq!(member_reads(&r) - before, 1);
    r.check_parity(0, "plans");
}

#[test]
fn writes_after_an_unclean_shutdown_rewrite_parity_from_the_data() {
    // Seven members: a one-chunk write would read-modify-write (3 reads, not 4).
    let r = rig(Level::Raid6, None, 7, false);
    let mut rng = SplitMix64::new(SEED ^ 8);
    r.write(0, pattern(&mut rng, 40)).unwrap();
    // Stale parity in the first rows of stripe 0, as a crash between data and parity leaves.
    let l = r.layout.clone();
    for d in [l.parity_disk(0), l.q_disk(0).unwrap()] {
        r.mem[d]
            .write_at(r.data_offset + l.member_sector(0, 0), &[0xeeu8; 4 * 512])
            .unwrap();
    }
    // Not stopped cleanly: the reassembled array knows its parity is not to be trusted.
    let e = r.exec.clone();
    let c = named_members(&r.disks);
    let result = r
        .exec
        .block_on(async move { assemble(&e, c).await })
        .unwrap();
    let a = result.arrays[0].clone();
    crate::jobs::attach(&a);
    assert!(a.needs_resync());
    let data = pattern(&mut rng, 4);
    let d = Bytes::from(data.clone());
    let a2 = a.clone();
    r.exec
        .block_on(async move { a2.write(0, d, false).await })
        .unwrap()
        .unwrap();
    r.check_parity(0, "after a write on a dirty array");
    let back = r
        .exec
        .block_on(async move { a.read(0, vec![0u8; 4 * 512]).await })
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
}

#[test]
fn smallest_arrays_work_and_survive_one_failure() {
    let mut rng = SplitMix64::new(SEED ^ 9);
    for (level, count) in [(Level::Raid5, 2), (Level::Raid5, 3), (Level::Raid4, 2)] {
        let r = rig(level, None, count, false);
        let what = format!("{level} on {count}");
        let reference = random_io(&r, &mut rng, 6, 20, &what);
        r.disks[count - 1].fail();
        let region = reference.len() as u64 / 512;
        assert!(r.read(0, region).unwrap() == reference, "{what}");
        random_io(&r, &mut rng, 6, 10, &what);
        assert_eq!(r.array.health(), Health::Degraded, "{what}");
    }
}

#[test]
fn resync_recomputes_stale_parity() {
    for (level, count) in [(Level::Raid5, 4), (Level::Raid6, 6)] {
        let r = rig(level, None, count, false);
        let mut rng = SplitMix64::new(SEED ^ 10);
        let reference = random_io(&r, &mut rng, 5, 10, "resync");
        let l = r.layout.clone();
        for stripe in [0u64, 3] {
            let d = l.parity_disk(stripe);
            r.mem[d]
                .write_at(r.data_offset + l.member_sector(stripe, 2), &[0x3cu8; 512])
                .unwrap();
        }
        let a = r.array.clone();
        r.exec
            .block_on(async move { crate::jobs::resync(&a).await })
            .unwrap()
            .unwrap();
        for stripe in 0..l.stripe_count() {
            r.check_parity(stripe, "after resync");
        }
        let region = reference.len() as u64 / 512;
        assert!(r.read(0, region).unwrap() == reference);
    }
}

#[test]
fn read_modify_write_of_a_cached_stripe_reads_nothing() {
    let r = rig(Level::Raid5, None, 5, false);
    let mut rng = SplitMix64::new(SEED ^ 9);
    // Cold: one sector of one chunk reads the old data and P.
    let hits = r.array.counters().cache_hits;
    let before = member_reads(&r);
    r.write(3, pattern(&mut rng, 1)).unwrap();
    assert_eq!(member_reads(&r) - before, 2);
    // Warm: the same sector again finds both in the cache.
    let before = member_reads(&r);
    let last = pattern(&mut rng, 1);
    r.write(3, last.clone()).unwrap();
    assert_eq!(member_reads(&r) - before, 0);
    assert!(r.array.counters().cache_hits >= hits + 2);
    r.check_parity(0, "after cached read-modify-write");
    assert_eq!(r.read(3, 1).unwrap(), last);
    // A partial read fills the cache; a second read of it is served from memory.
    let chunk = u64::from(CHUNK_SECTORS);
    let stripe = 4 * chunk;
    let first = r.read(stripe + chunk + 1, 5).unwrap();
    let before = member_reads(&r);
    assert_eq!(r.read(stripe + chunk + 1, 5).unwrap(), first);
    assert_eq!(member_reads(&r) - before, 0);
    // Read-modify-write inside that range reads only P (a read does not bring parity in).
    let before = member_reads(&r);
    r.write(stripe + chunk + 2, pattern(&mut rng, 3)).unwrap();
    assert_eq!(member_reads(&r) - before, 1);
    // Whole chunks are streamed, not cached.
    r.read(stripe, stripe).unwrap();
    let before = member_reads(&r);
    r.read(stripe, stripe).unwrap();
    assert!(member_reads(&r) - before > 0);
    r.check_parity(1, "after a write into a read-cached stripe");
    // With the cache off, the same write reads old data and parity again.
    r.array.set_stripe_cache_bytes(0);
    let before = member_reads(&r);
    r.write(3, pattern(&mut rng, 1)).unwrap();
    assert_eq!(member_reads(&r) - before, 2);
    r.check_parity(0, "cache off");
}

#[test]
fn stripe_cache_forgets_a_failed_member_and_stays_correct() {
    for (level, count) in [(Level::Raid5, 4), (Level::Raid6, 6)] {
        let r = rig(level, None, count, false);
        let mut rng = SplitMix64::new(SEED ^ 10);
        let reference = random_io(&r, &mut rng, 4, 12, "cache");
        let region = reference.len() as u64 / 512;
        // Everything cached, then a member fails: reads rebuild from the survivors.
        assert!(r.read(0, region).unwrap() == reference);
        r.fail_slot(1);
        assert!(r.read(0, region).unwrap() == reference, "{level} degraded");
        let reference = random_io(&r, &mut rng, 4, 12, "cache degraded");
        assert!(r.read(0, reference.len() as u64 / 512).unwrap() == reference);
        assert!(r.array.counters().cache_hits > 0 && r.array.counters().cache_misses > 0);
    }
}

#[test]
fn stripe_cache_stays_within_a_small_budget() {
    let r = rig(Level::Raid6, None, 5, true);
    // Room for three cells only: most lookups miss, results stay right.
    r.array
        .set_stripe_cache_bytes(3 * CHUNK_SECTORS as usize * 512 + 17);
    let mut rng = SplitMix64::new(SEED ^ 11);
    let reference = random_io(&r, &mut rng, 6, 30, "small cache");
    assert!(r.read(0, reference.len() as u64 / 512).unwrap() == reference);
    assert!(r.array.stripe_cache_held_bytes() <= r.array.stripe_cache_effective_bytes());
    assert!(r.array.stripe_cache_held_bytes() > 0);
}

#[test]
fn plan_choice_counts_cached_cells_as_free() {
    // RAID6 on 7: a one-sector write reads D, P, Q (3) by read-modify-write, or the four
    // untouched chunks by reconstruct-write. With those four cached, the latter reads nothing.
    let r = rig(Level::Raid6, None, 7, false);
    let chunk = u64::from(CHUNK_SECTORS);
    let mut rng = SplitMix64::new(SEED ^ 12);
    for i in 1..5 {
        r.read(i * chunk + 3, 1).unwrap();
    }
    let before = member_reads(&r);
    r.write(3, pattern(&mut rng, 1)).unwrap();
    assert_eq!(member_reads(&r) - before, 0);
    r.check_parity(0, "reconstruct-write from cached cells");
}
