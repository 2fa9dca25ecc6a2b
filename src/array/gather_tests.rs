//! Engine tests of full-stripe gathering: concurrent writes that together fill stripes are
//! written with no member reads, in issue order where they overlap, with errors only for
//! the data that was lost, on healthy and degraded RAID 5 and RAID 6, and announced writes.

extern crate std;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::assemble::assemble;
use super::test_rig::{FaultyArray, assert_stripe_parity, faulty_array, options, read_now};
use super::{Array, Health};
use crate::block::{BlockDevice, Bytes, IoError};
use crate::executor::{Executor, JoinHandle};
use crate::layout::{ArrayLayout, Raid5Layout};
use crate::metadata::Level;
use crate::platform::faulty::{FaultOp, FaultyDisk};
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

const CHUNK_SECTORS: u32 = 16;
const MEMBER_SECTORS: u64 = 8 * 2048;
const SEED: u64 = 0x5eed_6a7e_0000_0001;

struct Rig {
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    disks: Vec<Rc<FaultyDisk>>,
    array: Rc<Array>,
    layout: Raid5Layout,
    data_offset: u64,
}

fn rig(level: Level, count: usize, latency: bool) -> Rig {
    let FaultyArray {
        exec,
        mem,
        disks,
        array,
    } = faulty_array(
        options(level, None, CHUNK_SECTORS, "g"),
        count,
        MEMBER_SECTORS,
        latency,
    );
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

fn pattern(rng: &mut SplitMix64, sectors: u64) -> Vec<u8> {
    let mut v = vec![0u8; sectors as usize * 512];
    rng.fill(&mut v);
    v
}

impl Rig {
    fn sds(&self) -> u64 {
        self.layout.stripe_data_sectors()
    }

    /// Reads the members took (every disk, failed or not).
    fn member_reads(&self) -> u64 {
        self.disks.iter().map(|d| d.stats().reads).sum()
    }

    /// Starts every write at once (no executor turn in between) and returns their outcomes.
    fn write_together(&self, writes: &[(u64, Vec<u8>)]) -> Vec<Result<(), IoError>> {
        let handles: Vec<JoinHandle<Result<(), IoError>>> = writes
            .iter()
            .map(|(sector, data)| {
                let a = self.array.clone();
                let (sector, data) = (*sector, Bytes::from(data.clone()));
                self.exec
                    .spawn(async move { a.write(sector, data, false).await })
            })
            .collect();
        self.exec.run_until_idle();
        handles
            .iter()
            .map(|h| h.try_take().expect("every write finishes"))
            .collect()
    }

    fn read(&self, sector: u64, sectors: u64) -> Result<Vec<u8>, IoError> {
        read_now(&self.exec, &self.array, sector, sectors as usize)
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

    /// Marks the array clean, then for every member assembles copies of the other members
    /// (degraded) and checks that the first `expected.len()` bytes read back as expected:
    /// what is on the members is consistent whichever one member is lost.
    fn check_with_each_member_missing(&self, expected: &[u8], what: &str) {
        let a = self.array.clone();
        self.exec
            .block_on(async move { a.mark_clean().await })
            .unwrap()
            .unwrap();
        let used = self.data_offset
            + (expected.len() as u64 / 512).div_ceil(self.sds()) * u64::from(CHUNK_SECTORS);
        for missing in 0..self.mem.len() {
            let exec = Executor::new();
            let copies: Vec<(String, Rc<dyn BlockDevice>)> = self
                .mem
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != missing)
                .map(|(i, m)| {
                    let copy = MemoryDisk::new(MEMBER_SECTORS);
                    let mut buf = vec![0u8; used as usize * 512];
                    m.read_at(0, &mut buf).unwrap();
                    copy.write_at(0, &buf).unwrap();
                    (format!("d{i}"), Rc::new(copy) as Rc<dyn BlockDevice>)
                })
                .collect();
            let e = exec.clone();
            let result = exec.block_on(async move { assemble(&e, copies).await });
            let arrays = result.unwrap().arrays;
            assert_eq!(
                arrays.len(),
                1,
                "{what}: assembles without member {missing}"
            );
            let a = arrays[0].clone();
            assert_eq!(a.health(), Health::Degraded);
            let got = read_now(&exec, &a, 0, expected.len() / 512).unwrap();
            assert!(got == expected, "{what}: data without member {missing}");
        }
    }
}

/// Splits each of `stripes` stripes into 1 to 4 writes at random points.
fn split_stripes(r: &Rig, rng: &mut SplitMix64, stripes: u64) -> Vec<(u64, Vec<u8>)> {
    let sds = r.sds();
    let mut writes = Vec::new();
    for stripe in 0..stripes {
        let mut cuts: Vec<u64> = (0..rng.below(4)).map(|_| 1 + rng.below(sds - 1)).collect();
        cuts.push(0);
        cuts.push(sds);
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            writes.push((stripe * sds + w[0], pattern(rng, w[1] - w[0])));
        }
    }
    // Issue order must not matter for disjoint writes.
    for i in (1..writes.len()).rev() {
        writes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    writes
}

fn apply(reference: &mut [u8], writes: &[(u64, Vec<u8>)]) {
    for (sector, data) in writes {
        let at = *sector as usize * 512;
        reference[at..at + data.len()].copy_from_slice(data);
    }
}

#[test]
fn concurrent_pieces_of_whole_stripes_read_nothing() {
    for (level, count) in [(Level::Raid5, 5), (Level::Raid6, 6), (Level::Raid5, 3)] {
        for cache in [false, true] {
            let what = format!("{level:?} x{count} cache {cache}");
            let r = rig(level, count, false);
            if !cache {
                r.array.set_stripe_cache_bytes(0);
            }
            let mut rng = SplitMix64::new(SEED ^ count as u64);
            let stripes = 6;
            let writes = split_stripes(&r, &mut rng, stripes);
            let before = r.member_reads();
            for out in r.write_together(&writes) {
                out.unwrap();
            }
            assert_eq!(r.member_reads(), before, "{what}: no member reads");
            let mut reference = vec![0u8; (stripes * r.sds()) as usize * 512];
            apply(&mut reference, &writes);
            for stripe in 0..stripes {
                r.check_parity(stripe, &what);
            }
            assert!(r.read(0, stripes * r.sds()).unwrap() == reference, "{what}");
            r.check_with_each_member_missing(&reference, &what);
        }
    }
}

#[test]
fn a_lone_partial_write_still_reads_what_it_needs() {
    let r = rig(Level::Raid5, 5, false);
    r.array.set_stripe_cache_bytes(0);
    let mut rng = SplitMix64::new(SEED ^ 2);
    let half = r.sds() / 2;
    let data = pattern(&mut rng, half);
    let before = r.member_reads();
    r.write_together(&[(0, data.clone())])[0].clone().unwrap();
    assert!(r.member_reads() > before, "the other half is read");
    r.check_parity(0, "lone");
    assert!(r.read(0, half).unwrap() == data);
}

#[test]
fn overlapping_concurrent_writes_land_in_issue_order() {
    for (level, count) in [(Level::Raid5, 5), (Level::Raid6, 6)] {
        for latency in [false, true] {
            let what = format!("{level:?} latency {latency}");
            let r = rig(level, count, latency);
            let mut rng = SplitMix64::new(SEED ^ 3);
            let span = 3 * r.sds();
            let mut reference = vec![0u8; span as usize * 512];
            for _round in 0..4 {
                let writes: Vec<(u64, Vec<u8>)> = (0..12)
                    .map(|_| {
                        let start = rng.below(span - 1);
                        let len = 1 + rng.below((span - start).min(2 * r.sds()));
                        (start, pattern(&mut rng, len))
                    })
                    .collect();
                for out in r.write_together(&writes) {
                    out.unwrap();
                }
                apply(&mut reference, &writes);
                assert!(r.read(0, span).unwrap() == reference, "{what}");
                for stripe in 0..3 {
                    r.check_parity(stripe, &what);
                }
            }
            r.check_with_each_member_missing(&reference, &what);
        }
    }
}

#[test]
fn degraded_arrays_gather_without_reads() {
    for (level, count, dead) in [
        (Level::Raid5, 5, vec![1]),
        (Level::Raid6, 6, vec![0]),
        (Level::Raid6, 6, vec![2, 4]),
    ] {
        let what = format!("{level:?} without {dead:?}");
        let r = rig(level, count, false);
        r.array.set_stripe_cache_bytes(0);
        for &d in &dead {
            r.disks[d].fail();
        }
        let mut rng = SplitMix64::new(SEED ^ 4);
        // A first write finds the failed members and fails them out of the array.
        let first = pattern(&mut rng, r.sds());
        r.write_together(&[(0, first.clone())])[0].clone().unwrap();
        assert_eq!(r.array.health(), Health::Degraded, "{what}");
        let stripes = 5;
        let writes = split_stripes(&r, &mut rng, stripes);
        let before = r.member_reads();
        for out in r.write_together(&writes) {
            out.unwrap();
        }
        assert_eq!(r.member_reads(), before, "{what}: no member reads");
        let mut reference = vec![0u8; (stripes * r.sds()) as usize * 512];
        apply(&mut reference, &writes);
        assert!(r.read(0, stripes * r.sds()).unwrap() == reference, "{what}");
    }
}

#[test]
fn a_member_failing_in_a_gathered_write_fails_only_the_lost_data() {
    for (level, count) in [(Level::Raid5, 5), (Level::Raid6, 6)] {
        let what = format!("{level:?}");
        let r = rig(level, count, false);
        let l = r.layout.clone();
        let chunk = u64::from(CHUNK_SECTORS);
        let mut rng = SplitMix64::new(SEED ^ 5);
        // Within tolerance: a write error fails the member, every write succeeds.
        let victim = l.data_disk(0, 1);
        r.disks[victim].add_error_range(0, MEMBER_SECTORS, FaultOp::Write);
        let writes: Vec<(u64, Vec<u8>)> = (0..l.data_disks() as u64)
            .map(|i| (i * chunk, pattern(&mut rng, chunk)))
            .collect();
        for out in r.write_together(&writes) {
            out.unwrap();
        }
        assert_eq!(r.array.health(), Health::Degraded, "{what}");
        let mut reference = vec![0u8; (2 * r.sds()) as usize * 512];
        apply(&mut reference, &writes);
        assert!(r.read(0, r.sds()).unwrap() == reference[..r.sds() as usize * 512]);
        // Beyond tolerance: with `victim` gone, fail members (none for RAID5, one more
        // for RAID6) that hold no data of stripe 1, then a gathered write of stripe 1 loses
        // exactly the chunks on `victim` and on the member that fails under it.
        let extra: Vec<usize> = (0..count)
            .filter(|&d| d != victim)
            .filter(|&d| (0..l.data_disks()).all(|i| l.data_disk(1, i) != d))
            .take(l.parity_disks() - 1)
            .collect();
        for &d in &extra {
            r.disks[d].fail();
        }
        // Stripe 1: the piece on data index 0 goes to a member that fails on write.
        let breaking = l.data_disk(1, 0);
        r.disks[breaking].add_error_range(0, MEMBER_SECTORS, FaultOp::Write);
        let writes: Vec<(u64, Vec<u8>)> = (0..l.data_disks() as u64)
            .map(|i| (r.sds() + i * chunk, pattern(&mut rng, chunk)))
            .collect();
        let outs = r.write_together(&writes);
        let lost_index = (0..l.data_disks()).find(|&i| l.data_disk(1, i) == victim);
        for (i, out) in outs.iter().enumerate() {
            let lost = l.data_disk(1, i) == breaking || Some(i) == lost_index;
            match out {
                Err(IoError::DataLost { sector }) if lost => {
                    assert_eq!(*sector, r.sds() + i as u64 * chunk, "{what}");
                }
                Ok(()) if !lost => {}
                other => panic!("{what}: write {i}: {other:?}"),
            }
        }
        // The chunks that reached a live member read back.
        for (i, (sector, data)) in writes.iter().enumerate() {
            let d = l.data_disk(1, i);
            if d != breaking && d != victim {
                assert!(
                    r.read(*sector, chunk).unwrap() == *data,
                    "{what}: chunk {i}"
                );
            }
        }
    }
}

#[test]
fn an_announced_write_completes_the_stripe() {
    for (level, count) in [(Level::Raid5, 5), (Level::Raid6, 6)] {
        let what = format!("{level:?}");
        let r = rig(level, count, false);
        r.array.set_stripe_cache_bytes(0);
        let mut rng = SplitMix64::new(SEED ^ 6);
        let half = r.sds() / 2;
        let (a, b) = (pattern(&mut rng, half), pattern(&mut rng, half));
        let notice = r.array.expect_write(half, half);
        let before = r.member_reads();
        let arr = r.array.clone();
        let first = Bytes::from(a.clone());
        let h1 = r
            .exec
            .spawn(async move { arr.write(0, first, false).await });
        r.exec.run_until_stalled();
        assert!(
            h1.try_take().is_none(),
            "{what}: waits for the announced write"
        );
        // The announced write arrives: submitted, then its notice ends.
        let arr = r.array.clone();
        let second = Bytes::from(b.clone());
        let h2 = r
            .exec
            .spawn(async move { arr.write(half, second, false).await });
        drop(notice);
        r.exec.run_until_idle();
        h1.try_take().unwrap().unwrap();
        h2.try_take().unwrap().unwrap();
        assert_eq!(r.member_reads(), before, "{what}: no member reads");
        r.check_parity(0, &what);
        let mut reference = a.clone();
        reference.extend_from_slice(&b);
        assert!(r.read(0, 2 * half).unwrap() == reference, "{what}");

        // A notice withdrawn without its write: the waiting write goes on alone.
        let notice = r.array.expect_write(r.sds() + half, half);
        let arr = r.array.clone();
        let third = Bytes::from(a.clone());
        let sds = r.sds();
        let h3 = r
            .exec
            .spawn(async move { arr.write(sds, third, false).await });
        r.exec.run_until_stalled();
        assert!(h3.try_take().is_none());
        drop(notice);
        r.exec.run_until_idle();
        h3.try_take().unwrap().unwrap();
        r.check_parity(1, &what);
        assert!(r.read(r.sds(), half).unwrap() == a);

        // A notice whose payload never comes (a stalled client): the waiting write goes on
        // alone once its wait deadline passes, with the notice still there.
        let notice = r.array.expect_write(2 * r.sds() + half, half);
        let arr = r.array.clone();
        let fourth = Bytes::from(b.clone());
        let h4 = r
            .exec
            .spawn(async move { arr.write(2 * sds, fourth, false).await });
        r.exec.run_until_stalled();
        assert!(h4.try_take().is_none(), "{what}: waits at first");
        r.exec.run_until_idle();
        h4.try_take()
            .expect("the wait for a stalled announcement ends")
            .unwrap();
        r.check_parity(2, &what);
        assert!(r.read(2 * r.sds(), half).unwrap() == b);
        drop(notice);
    }
}
