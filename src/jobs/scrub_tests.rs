//! Scrub engine tests: corrupted member blocks on every redundant level are found, named
//! (RAID6) and repaired; read errors are corrected; degraded arrays are refused or checked as
//! far as they can be; concurrent writes never look like mismatches.

extern crate std;

use alloc::format;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use crate::array::Array;
use crate::array::scrub::{BlockKind, ScrubError, ScrubMode, ScrubOutcome, ScrubReport};
use crate::array::test_rig::{FaultyArray, faulty_array, options, read_now, write_now};
use crate::block::{BlockDevice, Bytes, SECTOR_BYTES};
use crate::executor::Executor;
use crate::layout::{ArrayLayout, MemberRole, Raid5Layout};
use crate::metadata::Level;
use crate::monitor::events::Event;
use crate::platform::faulty::FaultyDisk;
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

const CHUNK_SECTORS: u32 = 16;
const MEMBER_SECTORS: u64 = 2 * 2048;

struct Rig {
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    disks: Vec<Rc<FaultyDisk>>,
    array: Rc<Array>,
    data_offset: u64,
    /// What the test wrote, from array sector 0.
    written: Vec<u8>,
}

fn rig(level: Level, layout: Option<&str>, count: usize, latency: bool) -> Rig {
    rig_sized(level, layout, count, latency, MEMBER_SECTORS)
}

fn rig_sized(
    level: Level,
    layout: Option<&str>,
    count: usize,
    latency: bool,
    member_sectors: u64,
) -> Rig {
    let FaultyArray {
        exec,
        mem,
        disks,
        array,
    } = faulty_array(
        options(level, layout, CHUNK_SECTORS, "s"),
        count,
        member_sectors,
        latency,
    );
    let data_offset = array.superblock().unwrap().data_offset_sectors;
    Rig {
        exec,
        mem,
        disks,
        array,
        data_offset,
        written: Vec::new(),
    }
}

impl Rig {
    /// Writes random data over the first `sectors` array sectors.
    fn fill(&mut self, sectors: u64, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let mut data = vec![0u8; sectors as usize * SECTOR_BYTES];
        rng.fill(&mut data);
        for (i, piece) in data.chunks(64 * SECTOR_BYTES).enumerate() {
            write_now(&self.exec, &self.array, i as u64 * 64, piece.to_vec()).unwrap();
        }
        self.written = data;
    }

    fn parity_layout(&self) -> Raid5Layout {
        match self.array.layout() {
            ArrayLayout::Raid5(l) => l.clone(),
            _ => panic!("a parity layout"),
        }
    }

    /// Flips bytes of `sectors` sectors of member `disk` at data sector `sector`, behind the
    /// array's back.
    fn corrupt(&self, disk: usize, sector: u64, sectors: u64) {
        let at = self.data_offset + sector;
        let mut buf = vec![0u8; sectors as usize * SECTOR_BYTES];
        self.mem[disk].read_at(at, &mut buf).unwrap();
        for (i, b) in buf.iter_mut().enumerate() {
            if i % 97 == 5 {
                *b ^= 0xa5;
            }
        }
        self.mem[disk].write_at(at, &buf).unwrap();
    }

    fn scrub(&self, mode: ScrubMode) -> ScrubReport {
        let a = self.array.clone();
        self.exec
            .block_on(async move { super::scrub::scrub(&a, mode).await })
            .expect("scrub finishes")
            .expect("scrub starts")
    }

    fn verify(&self, what: &str) {
        let sectors = self.written.len() / SECTOR_BYTES;
        let back = read_now(&self.exec, &self.array, 0, sectors).unwrap();
        assert!(back == self.written, "{what}: data differs after repair");
    }
}

fn assert_clean(r: &ScrubReport, what: &str) {
    assert_eq!(r.outcome, ScrubOutcome::Finished, "{what}");
    assert_eq!(r.mismatched_sectors, 0, "{what}: {r:?}");
    assert!(r.bad_regions.is_empty(), "{what}: {r:?}");
}

/// Corrupts a data block, P and Q in three stripes of a RAID6 and checks that each is named.
fn raid6_names_the_wrong_member(layout: &str, count: usize) {
    let what = format!("raid6 layout {layout} on {count}");
    let mut r = rig(Level::Raid6, Some(layout), count, false);
    let l = r.parity_layout();
    let sds = l.stripe_data_sectors();
    r.fill(sds * 12, 0x5c0b + count as u64);
    assert_clean(&r.scrub(ScrubMode::Check), &what);
    let (s_data, s_p, s_q) = (3u64, 7u64, 10u64);
    let data_index = (count + 1) % l.data_disks();
    let d_disk = l.data_disk(s_data, data_index);
    let p_disk = l.parity_disk(s_p);
    let q_disk = l.q_disk(s_q).unwrap();
    // A whole compare unit of a data block, one sector of P, a sector of Q in the second
    // unit.
    r.corrupt(d_disk, l.member_sector(s_data, 0), 8);
    r.corrupt(p_disk, l.member_sector(s_p, 3), 1);
    r.corrupt(q_disk, l.member_sector(s_q, 9), 1);
    let check = r.scrub(ScrubMode::Check);
    assert_eq!(check.mismatched_sectors, 24, "{what}: {check:?}");
    let found: Vec<(u64, u64, usize, BlockKind)> = check
        .bad_regions
        .iter()
        .map(|b| {
            let w = b.wrong.as_ref().expect("raid6 names the member");
            assert_eq!(w.name, format!("d{}", w.slot), "{what}");
            (b.stripe.unwrap(), b.member_sector, w.slot, w.block)
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (s_data, l.member_sector(s_data, 0), d_disk, BlockKind::Data),
            (s_p, l.member_sector(s_p, 0), p_disk, BlockKind::P),
            (s_q, l.member_sector(s_q, 8), q_disk, BlockKind::Q),
        ],
        "{what}"
    );
    let slot = check.bad_regions[0].wrong.as_ref().unwrap().syndrome_slot;
    assert_eq!(slot, l.syndrome_slot(s_data, d_disk), "{what}");
    // The corrupted data reads back right anyway? No: a read trusts the data member; only
    // repair puts it right.
    let repair = r.scrub(ScrubMode::Repair);
    assert_eq!(repair.mismatched_sectors, 24, "{what}");
    assert_eq!(repair.repaired_sectors, 24, "{what}");
    assert_clean(&r.scrub(ScrubMode::Check), &what);
    r.verify(&what);
}

#[test]
fn raid6_every_layout_names_data_p_and_q() {
    // md layouts 0-5, DDF 8-10, and the -6 layouts; two member counts for some.
    for (layout, count) in [
        ("0", 5),
        ("1", 6),
        ("2", 4),
        ("2", 7),
        ("3", 5),
        ("4", 6),
        ("5", 5),
        ("8", 5),
        ("9", 6),
        ("10", 5),
        ("16", 5),
        ("17", 6),
        ("18", 5),
        ("19", 5),
        ("20", 6),
    ] {
        raid6_names_the_wrong_member(layout, count);
    }
}

#[test]
fn raid6_two_wrong_blocks_regenerate_parity() {
    let mut r = rig(Level::Raid6, None, 6, false);
    let l = r.parity_layout();
    r.fill(l.stripe_data_sectors() * 4, 77);
    // Two data blocks of stripe 2, the same bytes: no single member explains it.
    r.corrupt(l.data_disk(2, 0), l.member_sector(2, 0), 1);
    r.corrupt(l.data_disk(2, 1), l.member_sector(2, 1), 1);
    let check = r.scrub(ScrubMode::Check);
    assert_eq!(check.mismatched_sectors, 8);
    assert_eq!(check.bad_regions.len(), 1);
    assert_eq!(check.bad_regions[0].wrong, None);
    let repair = r.scrub(ScrubMode::Repair);
    assert_eq!(repair.repaired_sectors, 8);
    assert_clean(&r.scrub(ScrubMode::Check), "after regeneration");
}

#[test]
fn raid5_and_raid4_check_and_repair_parity() {
    for (level, layout, count) in [
        (Level::Raid5, None, 4),
        (Level::Raid5, Some("0"), 3),
        (Level::Raid5, Some("5"), 5),
        (Level::Raid4, None, 4),
    ] {
        let what = format!("{level} {layout:?} on {count}");
        let mut r = rig(level, layout, count, false);
        let l = r.parity_layout();
        let sds = l.stripe_data_sectors();
        r.fill(sds * 10, 5);
        assert_clean(&r.scrub(ScrubMode::Check), &what);
        let p = |s: u64| l.parity_disk(s);
        r.corrupt(p(2), l.member_sector(2, 0), 16); // both units of the P chunk
        r.corrupt(p(6), l.member_sector(6, 12), 1);
        let check = r.scrub(ScrubMode::Check);
        assert_eq!(check.mismatched_sectors, 24, "{what}");
        let found: Vec<(Option<u64>, u64, u64)> = check
            .bad_regions
            .iter()
            .map(|b| (b.stripe, b.member_sector, b.sectors))
            .collect();
        assert_eq!(
            found,
            vec![
                (Some(2), l.member_sector(2, 0), 16),
                (Some(6), l.member_sector(6, 8), 8)
            ],
            "{what}"
        );
        assert!(check.bad_regions.iter().all(|b| b.wrong.is_none()));
        assert_eq!(check.bad_regions[0].array_sector, 2 * sds);
        assert_eq!(r.array.mismatches(), 24);
        // Check changed nothing.
        assert_eq!(r.scrub(ScrubMode::Check).mismatched_sectors, 24, "{what}");
        let repair = r.scrub(ScrubMode::Repair);
        assert_eq!(repair.repaired_sectors, 24, "{what}");
        assert_clean(&r.scrub(ScrubMode::Check), &what);
        assert_eq!(r.array.mismatches(), 0);
        r.verify(&what);
        // A data block corrupted: found; repair makes the parity follow the data (md).
        let d = l.data_disk(4, 0);
        r.corrupt(d, l.member_sector(4, 1), 1);
        let check = r.scrub(ScrubMode::Check);
        assert_eq!(check.mismatched_sectors, 8, "{what}");
        assert_eq!(check.bad_regions[0].stripe, Some(4));
        r.scrub(ScrubMode::Repair);
        assert_clean(&r.scrub(ScrubMode::Check), &what);
    }
}

#[test]
fn mirrors_check_and_repair_from_the_first_copy() {
    for (level, layout, count) in [
        (Level::Raid1, None, 2),
        (Level::Raid1, None, 3),
        (Level::Raid10, None, 4),
        (Level::Raid10, Some("f2"), 4),
        (Level::Raid10, Some("o2"), 3),
        (Level::Raid10, Some("n3"), 5),
    ] {
        let what = format!("{level} {layout:?} on {count}");
        let mut r = rig(level, layout, count, false);
        r.fill(256, 9);
        assert_clean(&r.scrub(ScrubMode::Check), &what);
        // Corrupt the last copy of array sectors 40..41 and 130..146 (two whole units and
        // the one before: 128..136, 136..144, 144..152).
        let l = r.array.layout().clone();
        let mut expected = Vec::new();
        for (sector, sectors) in [(40u64, 1u64), (130, 16)] {
            for s in sector..sector + sectors {
                let ext = l.map(s).unwrap();
                let last = ext.copies.last().unwrap();
                r.corrupt(last.disk_index, last.sector, 1);
            }
            let first_unit = sector / 8 * 8;
            let end_unit = (sector + sectors).div_ceil(8) * 8;
            expected.push((first_unit, end_unit - first_unit));
        }
        let check = r.scrub(ScrubMode::Check);
        assert_eq!(check.mismatched_sectors, 8 + 24, "{what}: {check:?}");
        // A region may be split where the layout's chunks split the copies.
        let mut found: Vec<(u64, u64)> = Vec::new();
        for b in &check.bad_regions {
            assert_eq!(b.stripe, None);
            match found.last_mut() {
                Some(f) if f.0 + f.1 == b.array_sector => f.1 += b.sectors,
                _ => found.push((b.array_sector, b.sectors)),
            }
        }
        assert_eq!(found, expected, "{what}");
        let repair = r.scrub(ScrubMode::Repair);
        assert_eq!(repair.repaired_sectors, 32, "{what}");
        assert_clean(&r.scrub(ScrubMode::Check), &what);
        r.verify(&what);
        // Every copy reads back the data (read balancing would hide a bad one).
        for s in [40u64, 130, 145] {
            for c in l.map(s).unwrap().copies {
                let mut buf = vec![0u8; SECTOR_BYTES];
                r.mem[c.disk_index]
                    .read_at(r.data_offset + c.sector, &mut buf)
                    .unwrap();
                let at = s as usize * SECTOR_BYTES;
                assert!(buf == r.written[at..at + SECTOR_BYTES], "{what} sector {s}");
            }
        }
    }
}

#[test]
fn read_errors_during_a_scrub_are_rebuilt_and_rewritten() {
    for (level, count) in [(Level::Raid1, 2), (Level::Raid5, 4), (Level::Raid6, 5)] {
        let what = format!("{level}");
        let mut r = rig(level, None, count, false);
        r.fill(512, 3);
        let member_sector = 20;
        r.disks[1].add_latent_error(r.data_offset + member_sector);
        let check = r.scrub(ScrubMode::Check);
        assert_clean(&check, &what);
        assert!(check.read_errors_corrected >= 1, "{what}: {check:?}");
        assert_eq!(check.unchecked_sectors, 0, "{what}");
        assert!(
            r.array.slots()[1]
                .as_ref()
                .unwrap()
                .counters()
                .corrected_sectors
                >= 1
        );
        // The sector reads again, and the second check meets no error.
        let again = r.scrub(ScrubMode::Check);
        assert_eq!(again.read_errors_corrected, 0, "{what}");
        r.verify(&what);
    }
}

#[test]
fn degraded_arrays_are_refused_unless_redundancy_is_left() {
    let r = rig(Level::Raid5, None, 4, false);
    let a = r.array.clone();
    r.exec
        .block_on(async move { a.fail_member(2).await })
        .unwrap()
        .unwrap();
    let a = r.array.clone();
    let e = r
        .exec
        .block_on(async move { super::scrub::check(&a).await })
        .unwrap();
    assert_eq!(e, Err(ScrubError::Degraded { missing: 1 }));
    assert!(format!("{}", e.unwrap_err()).contains("degraded"));

    let r0 = rig(Level::Raid0, None, 2, false);
    let a = r0.array.clone();
    let e = r0
        .exec
        .block_on(async move { super::scrub::check(&a).await })
        .unwrap();
    assert_eq!(e, Err(ScrubError::NotRedundant));

    // RAID6 with one member gone: the remaining parity is still checked, and repaired.
    for gone in 0..5 {
        let mut r = rig(Level::Raid6, None, 5, false);
        let l = r.parity_layout();
        r.fill(l.stripe_data_sectors() * 6, 11);
        let a = r.array.clone();
        r.exec
            .block_on(async move { a.fail_member(gone).await })
            .unwrap()
            .unwrap();
        // Corrupt a block of stripe 3 on a member that is not the missing one.
        let victim = (gone + 1) % 5;
        r.corrupt(victim, l.member_sector(3, 0), 1);
        let check = r.scrub(ScrubMode::Check);
        assert_eq!(check.mismatched_sectors, 8, "gone {gone}: {check:?}");
        assert_eq!(check.bad_regions[0].stripe, Some(3));
        assert_eq!(check.bad_regions[0].wrong, None);
        let repair = r.scrub(ScrubMode::Repair);
        assert_eq!(repair.repaired_sectors, 8);
        assert_clean(&r.scrub(ScrubMode::Check), &format!("gone {gone}"));
        // Stripe 3's data is intact when the corrupted block is a parity that no read
        // (nor the check) used to rebuild the missing member; every other stripe always is.
        let parity = |d| matches!(l.member_role(3, d), MemberRole::P | MemberRole::Q);
        let intact = parity(victim) && (parity(gone) || l.member_role(3, victim) == MemberRole::Q);
        if intact {
            r.verify(&format!("gone {gone}"));
        } else {
            let sds = l.stripe_data_sectors() as usize;
            r.written.truncate(3 * sds * SECTOR_BYTES);
            r.verify(&format!("gone {gone}, stripes before 3"));
        }
    }
    // RAID1 of three with one missing still has two copies to compare.
    let r = rig(Level::Raid1, None, 3, false);
    let a = r.array.clone();
    r.exec
        .block_on(async move { a.fail_member(0).await })
        .unwrap()
        .unwrap();
    assert_clean(&r.scrub(ScrubMode::Check), "raid1 3-1");
}

#[test]
fn one_job_at_a_time_and_cancel() {
    let r = rig(Level::Raid5, None, 4, true);
    super::scrub::start(&r.array, ScrubMode::Check).unwrap();
    assert_eq!(
        super::scrub::start(&r.array, ScrubMode::Repair),
        Err(ScrubError::Busy(crate::array::JobKind::Check))
    );
    let job = r.array.job().expect("a job runs");
    assert_eq!(job.kind.name(), "check");
    // Let it get going, then cancel.
    for _ in 0..50 {
        r.exec.run_until_stalled();
        if let Some(d) = r.exec.next_deadline_ns() {
            r.exec.advance_to(d);
        }
    }
    assert!(super::scrub::cancel(&r.array));
    r.exec.run_until_idle();
    let report = r.array.scrub_report().unwrap();
    assert_eq!(report.outcome, ScrubOutcome::Cancelled);
    assert!(report.checked_sectors < r.array.layout().array_sectors());
    assert!(r.array.job().is_none());
    // A new scrub may start after it.
    let report = r.scrub(ScrubMode::Check);
    assert_clean(&report, "after cancel");
    assert_eq!(report.checked_sectors, r.array.layout().array_sectors());
}

/// Random writes race a check (member latency interleaves them): no false mismatch, and the
/// data is the last written.
#[test]
fn concurrent_writes_during_a_check_are_never_mismatches() {
    const SEED: u64 = 0xc0c0_5c0b;
    for (level, layout, count) in [
        (Level::Raid5, None, 4),
        (Level::Raid6, Some("1"), 5),
        (Level::Raid1, None, 2),
        (Level::Raid10, Some("f2"), 4),
    ] {
        let what = format!("{level} seed {SEED:#x}");
        // Mirrors are scrubbed 1 MiB at a time: give them several such regions.
        let mut r = rig_sized(level, layout, count, true, 6 * 2048);
        let span = r.array.layout().array_sectors();
        r.fill(span, SEED);
        let reference = Rc::new(core::cell::RefCell::new(r.written.clone()));
        let array = r.array.clone();
        let check = r
            .exec
            .spawn(async move { super::scrub::check(&array).await });
        let during = Rc::new(core::cell::Cell::new(0u32));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let array = r.array.clone();
            let reference = reference.clone();
            let during = during.clone();
            writers.push(r.exec.spawn(async move {
                let mut rng = SplitMix64::new(SEED ^ w);
                for _ in 0..60 {
                    let sectors = 1 + rng.below(40);
                    let sector = rng.below(span - sectors);
                    let mut data = vec![0u8; sectors as usize * SECTOR_BYTES];
                    rng.fill(&mut data);
                    // Overlapping writes of different tasks are ordered by the array's
                    // locks; the reference is updated when the write is acknowledged, which
                    // for overlaps is the same order.
                    array
                        .write(sector, Bytes::from(data.clone()), false)
                        .await
                        .unwrap();
                    let at = sector as usize * SECTOR_BYTES;
                    reference.borrow_mut()[at..at + data.len()].copy_from_slice(&data);
                    if array.job().is_some() {
                        during.set(during.get() + 1);
                    }
                }
            }));
        }
        r.exec.run_until_idle();
        let report = check.try_take().expect("check done").expect("check ran");
        assert_clean(&report, &what);
        assert!(
            during.get() > 10,
            "{what}: the writes did not overlap the check"
        );
        for w in writers {
            w.try_take().expect("writer done");
        }
        // A writer updates the reference in the same poll its write completes, before
        // the lock lets an overlapping write start: the reference is exact.
        r.written = reference.borrow().clone();
        r.verify(&what);
        assert_clean(&r.scrub(ScrubMode::Check), &what);
    }
}

/// The report's JSON names are what `raid check --json` scripts read.
#[test]
fn report_json_field_names() {
    let mut r = rig(Level::Raid6, None, 4, false);
    let l = r.parity_layout();
    r.fill(l.stripe_data_sectors() * 2, 1);
    let q = l.q_disk(1).unwrap();
    r.corrupt(q, l.member_sector(1, 0), 1);
    let report = r.scrub(ScrubMode::Check);
    let json = serde_json::to_string(&report).unwrap();
    for needle in [
        "\"mode\":\"check\"",
        "\"outcome\":\"finished\"",
        "\"mismatched_sectors\":8",
        "\"block\":\"q\"",
        &format!("\"slot\":{q}"),
        &format!("\"name\":\"d{q}\""),
        "\"stripe\":1",
    ] {
        assert!(json.contains(needle), "{needle} missing in {json}");
    }
    let back: ScrubReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    // The monitoring events: start, the mismatched stripe naming Q's member, finish.
    let events: Vec<Event> = r
        .array
        .monitor()
        .events()
        .after(0, usize::MAX)
        .events
        .into_iter()
        .map(|e| e.event)
        .filter(|e| {
            matches!(
                e,
                Event::CheckStarted { .. }
                    | Event::CheckFinished { .. }
                    | Event::MismatchFound { .. }
            )
        })
        .collect();
    let sds = l.stripe_data_sectors();
    assert_eq!(
        events,
        vec![
            Event::CheckStarted { repair: false },
            Event::MismatchFound {
                sector: sds,
                sectors: 8,
                slot: Some(q as u32)
            },
            Event::CheckFinished {
                repair: false,
                mismatches: 8
            },
        ]
    );
}

/// Past the bound, the report keeps the first regions in array order and counts the rest,
/// although stripes are scrubbed a few at a time.
#[test]
fn bad_region_list_is_bounded_and_in_order() {
    use crate::array::scrub::BAD_REGIONS_KEPT;
    let r = rig(Level::Raid5, None, 4, true);
    let l = r.parity_layout();
    let corrupted = BAD_REGIONS_KEPT as u64 + 16;
    assert!(corrupted <= l.stripe_count());
    for stripe in 0..corrupted {
        r.corrupt(l.parity_disk(stripe), l.member_sector(stripe, 0), 1);
    }
    let check = r.scrub(ScrubMode::Check);
    assert_eq!(check.mismatched_sectors, corrupted * 8);
    assert_eq!(check.bad_regions_omitted, 16);
    let stripes: Vec<u64> = check
        .bad_regions
        .iter()
        .map(|b| b.stripe.unwrap())
        .collect();
    assert_eq!(stripes, (0..BAD_REGIONS_KEPT as u64).collect::<Vec<_>>());
}
