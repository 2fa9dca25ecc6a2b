//! Engine unit tests: read repair, read balancing, member failure handling.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::assemble::{CreateOptions, assemble, create};
use super::test_rig::{faulty_array, named_members, options, read_now, write_now};
use super::{Array, Health, MemberState, ReadPolicy};
use crate::block::{BlockDevice, IoError};
use crate::executor::Executor;
use crate::metadata::{DeviceRole, Level, Superblock};
use crate::platform::faulty::{FaultConfig, FaultOp, FaultyDisk};
use crate::platform::memory::MemoryDisk;

struct Rig {
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    disks: Vec<Rc<FaultyDisk>>,
    array: Rc<Array>,
}

fn rig(level: Level, layout: Option<&str>, count: usize, latency: bool) -> Rig {
    let r = faulty_array(options(level, layout, 64, "t"), count, 16 * 2048, latency);
    Rig {
        exec: r.exec,
        mem: r.mem,
        disks: r.disks,
        array: r.array,
    }
}

impl Rig {
    /// Assembles whatever the memory members hold now (named `d0`, `d1`, …).
    fn reassemble(&self) -> super::assemble::AssembleResult {
        let candidates = named_members(&self.mem);
        let e = self.exec.clone();
        let result = self
            .exec
            .block_on(async move { assemble(&e, candidates).await })
            .unwrap();
        for array in &result.arrays {
            crate::jobs::attach(array);
        }
        result
    }

    fn write(&self, sector: u64, data: Vec<u8>) -> Result<(), IoError> {
        write_now(&self.exec, &self.array, sector, data)
    }

    fn read(&self, sector: u64, sectors: usize) -> Result<Vec<u8>, IoError> {
        read_now(&self.exec, &self.array, sector, sectors)
    }

    fn superblock_on(&self, disk: usize) -> Superblock {
        superblock_of(&self.mem[disk])
    }
}

/// The superblock a memory member holds now.
fn superblock_of(m: &MemoryDisk) -> Superblock {
    let mut block = vec![0u8; 4096];
    m.read_at(8, &mut block).unwrap();
    Superblock::decode(&block).unwrap()
}

/// Every byte of a memory member (to prove a refusal wrote nothing).
fn member_bytes(m: &MemoryDisk) -> Vec<u8> {
    let mut all = vec![0u8; (m.capacity_sectors() * 512) as usize];
    m.read_at(0, &mut all).unwrap();
    all
}

#[test]
fn latent_error_is_read_around_and_repaired() {
    let r = rig(Level::Raid1, None, 2, false);
    let data: Vec<u8> = (0..8 * 512).map(|i| (i % 256) as u8).collect();
    r.write(100, data.clone()).unwrap();
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    // Both members get a latent error at a different sector of the range.
    r.disks[0].add_latent_error(offset + 102);
    r.disks[1].add_latent_error(offset + 105);
    r.array.set_read_policy(ReadPolicy::RoundRobin);
    for _ in 0..4 {
        assert_eq!(r.read(100, 8).unwrap(), data);
    }
    // The failing copies were rewritten from the good one: no more errors, nothing failed.
    let corrected = corrected_sectors(&r.array);
    assert!(corrected >= 8, "corrected {corrected}");
    for d in &r.disks {
        let d = d.clone();
        let back = r
            .exec
            .block_on(async move { d.read(offset + 100, vec![0u8; 4096]).await })
            .unwrap();
        assert_eq!(back.unwrap(), data);
    }
    assert_eq!(r.array.health(), Health::Optimal);
}

#[test]
fn unrepairable_sector_fails_only_that_read() {
    let r = rig(Level::Raid10, Some("n2"), 2, false);
    r.write(0, vec![1u8; 64 * 512]).unwrap();
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    // Both copies of sector 10 are unreadable and cannot be rewritten.
    for d in &r.disks {
        d.add_latent_error(offset + 10);
        d.add_error_range(offset + 10, 1, FaultOp::Write);
    }
    assert_eq!(r.read(8, 4), Err(IoError::DataLost { sector: 10 }));
    // The rest of the array reads fine.
    assert_eq!(r.read(0, 8).unwrap(), vec![1u8; 8 * 512]);
    assert_eq!(r.read(11, 8).unwrap(), vec![1u8; 8 * 512]);
}

#[test]
fn write_error_fails_member_and_persists_it_before_ack() {
    let r = rig(Level::Raid1, None, 3, false);
    let events_before = r.superblock_on(0).events;
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    r.disks[1].add_error_range(offset, 1 << 20, FaultOp::Write);
    r.write(0, vec![7u8; 4096]).unwrap();
    assert_eq!(r.array.health(), Health::Degraded);
    assert_eq!(
        r.array.slots()[1].as_ref().unwrap().state(),
        MemberState::Faulty
    );
    for disk in [0, 2] {
        let sb = r.superblock_on(disk);
        assert!(sb.events > events_before);
        assert_eq!(sb.role_of(0), DeviceRole::Active(0));
        assert_eq!(sb.role_of(1), DeviceRole::Faulty);
        assert_eq!(sb.role_of(2), DeviceRole::Active(2));
        // Unused entries of the table stay spare (0xffff), as mdadm writes them.
        assert_eq!(sb.role_of(3), DeviceRole::Spare);
        assert_eq!(sb.role_of(sb.max_dev() - 1), DeviceRole::Spare);
    }
    // Reassembly leaves the failed member out even though it reads fine.
    let result = r.reassemble();
    assert_eq!(result.arrays.len(), 1);
    assert!(result.arrays[0].slots()[1].is_none());
    assert!(result.problems.iter().any(|p| p.member == "d1"));
    let a = result.arrays[0].clone();
    let back = r
        .exec
        .block_on(async move { a.read(0, vec![0u8; 4096]).await })
        .unwrap()
        .unwrap();
    assert_eq!(back, vec![7u8; 4096]);
}

#[test]
fn raid0_write_error_is_returned_not_hidden() {
    let r = rig(Level::Raid0, None, 2, false);
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    r.disks[1].add_error_range(offset, 64, FaultOp::Write);
    // Sector 64..128 is chunk 1, on member 1.
    assert!(matches!(
        r.write(64, vec![1u8; 512]),
        Err(IoError::DataLost { .. })
    ));
    assert!(r.write(0, vec![1u8; 512]).is_ok());
}

#[test]
fn reads_balance_across_copies() {
    for policy in [ReadPolicy::RoundRobin, ReadPolicy::LeastOutstanding] {
        let r = rig(Level::Raid1, None, 3, true);
        r.array.set_read_policy(policy);
        // Many reads in flight at once.
        for i in 0..300u64 {
            let a = r.array.clone();
            r.exec.spawn_detached(async move {
                a.read(i * 8, vec![0u8; 4096]).await.unwrap();
            });
        }
        r.exec.run_until_idle();
        let reads: Vec<u64> = r
            .array
            .slots()
            .iter()
            .flatten()
            .map(|m| m.counters().reads)
            .collect();
        for &n in &reads {
            assert!(n >= 60, "{policy:?}: unbalanced {reads:?}");
        }
    }
}

#[test]
fn least_outstanding_avoids_a_slow_member() {
    let r = rig(Level::Raid1, None, 2, false);
    r.disks[0].set_config(FaultConfig {
        min_latency_ns: 100_000,
        max_latency_ns: 100_000,
        ..FaultConfig::default()
    });
    r.disks[1].set_config(FaultConfig {
        min_latency_ns: 1_000,
        max_latency_ns: 1_000,
        ..FaultConfig::default()
    });
    r.array.set_read_policy(ReadPolicy::LeastOutstanding);
    // A closed loop of 4 readers: the fast member finishes more.
    for _ in 0..4 {
        let a = r.array.clone();
        r.exec.spawn_detached(async move {
            for i in 0..50u64 {
                a.read(i, vec![0u8; 512]).await.unwrap();
            }
        });
    }
    r.exec.run_until_idle();
    let slow = r.array.slots()[0].as_ref().unwrap().counters().reads;
    let fast = r.array.slots()[1].as_ref().unwrap().counters().reads;
    assert!(fast > 4 * slow, "fast {fast} slow {slow}");
}

#[test]
fn requests_past_the_end_change_nothing() {
    let r = rig(Level::Raid10, Some("f2"), 4, false);
    let cap = r.array.capacity_sectors();
    let member_writes = |r: &Rig| -> u64 { r.disks.iter().map(|d| d.stats().writes).sum() };
    let before = member_writes(&r);
    assert!(matches!(
        r.write(cap - 1, vec![1u8; 1024]),
        Err(IoError::OutOfRange { .. })
    ));
    assert!(matches!(r.read(cap, 1), Err(IoError::OutOfRange { .. })));
    assert!(matches!(
        r.write(0, vec![1u8; 100]),
        Err(IoError::Misaligned { .. })
    ));
    assert_eq!(member_writes(&r), before);
}

#[test]
fn assembly_reports_missing_corrupt_and_groups_arrays() {
    let a = rig(Level::Raid1, None, 3, false);
    let b = rig(Level::Raid10, Some("n2"), 4, false);
    // b's UUID must differ from a's: rewrite b with another UUID.
    let exec = a.exec.clone();
    let members: Vec<(String, Rc<dyn BlockDevice>)> = b
        .mem
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("e{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect();
    let opts = CreateOptions {
        level: Level::Raid10,
        layout: None,
        chunk_sectors: 64,
        name: "other".into(),
        uuid: [4; 16],
        time_s: 1_000,
        entropy: 5,
        assume_clean: true,
    };
    let e = exec.clone();
    exec.block_on(async move { create(&e, members, &opts).await })
        .unwrap()
        .unwrap();
    // A blank disk and one with a corrupted superblock.
    let blank = Rc::new(MemoryDisk::new(16 * 2048));
    let corrupt = Rc::new(MemoryDisk::new(16 * 2048));
    let mut block = vec![0u8; 4096];
    a.mem[2].read_at(8, &mut block).unwrap();
    block[200] ^= 0x40;
    corrupt.write_at(8, &block).unwrap();

    let mut candidates: Vec<(String, Rc<dyn BlockDevice>)> = vec![
        ("d0".into(), a.mem[0].clone()),
        ("d1".into(), a.mem[1].clone()),
        ("blank".into(), blank),
        ("corrupt".into(), corrupt),
    ];
    for (i, m) in b.mem.iter().enumerate() {
        candidates.push((format!("e{i}"), m.clone()));
    }
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, candidates).await })
        .unwrap();
    let mut names: Vec<String> = result.arrays.iter().map(|x| x.name().into()).collect();
    names.sort();
    assert_eq!(names, ["other", "t"]);
    let t = result.arrays.iter().find(|x| x.name() == "t").unwrap();
    assert_eq!(t.health(), Health::Degraded);
    assert!(t.slots()[2].is_none());
    let other = result.arrays.iter().find(|x| x.name() == "other").unwrap();
    assert_eq!(other.health(), Health::Optimal);
    let why = |who: &str| {
        result
            .problems
            .iter()
            .find(|p| p.member.contains(who) || p.reason.contains(who))
            .map(|p| p.reason.clone())
            .unwrap_or_else(|| panic!("no problem reported for {who}: {:?}", result.problems))
    };
    assert!(why("blank").contains("no valid md superblock"));
    assert!(why("corrupt").contains("checksum"));
    assert!(why("slot 2").contains("missing"));
}

/// A read across several chunks reads each into its part of one buffer; a failing copy in
/// the middle is read around (here both copies fail, at different sectors) and repaired.
#[test]
fn multi_chunk_read_reads_around_errors_and_repairs() {
    let r = rig(Level::Raid10, Some("n2"), 4, false);
    let data: Vec<u8> = (0..256 * 512).map(|i| (i * 7 % 251) as u8).collect();
    r.write(0, data.clone()).unwrap();
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    // Chunk 1 (array sectors 64..128) lives on members 2 and 3 at member sectors 0..64.
    r.disks[2].add_latent_error(offset + 10);
    r.disks[3].add_latent_error(offset + 20);
    // Sectors 32..160: part of chunk 0, chunk 1, part of chunk 2.
    assert_eq!(r.read(32, 128).unwrap(), &data[32 * 512..160 * 512]);
    let corrected = corrected_sectors(&r.array);
    // The general path repairs what it met: at least the copy it read around.
    assert!(corrected >= 1, "corrected {corrected}");
    for _ in 0..4 {
        assert_eq!(r.read(0, 256).unwrap(), data);
    }
    assert_eq!(r.array.health(), Health::Optimal);
}

/// RAID0: a bad sector in one chunk of a multi-chunk read fails the read with that sector;
/// the same chunks read fine around it.
#[test]
fn multi_chunk_read_on_raid0_reports_the_lost_sector() {
    let r = rig(Level::Raid0, None, 3, false);
    let data: Vec<u8> = (0..384 * 512).map(|i| (i * 13 % 253) as u8).collect();
    r.write(0, data.clone()).unwrap();
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    // Array chunk 4 (sectors 256..320) is member 1's second chunk: member sectors 64..128.
    r.disks[1].add_latent_error(offset + 64 + 5);
    assert_eq!(r.read(200, 150), Err(IoError::DataLost { sector: 256 }));
    assert_eq!(r.read(0, 256).unwrap(), &data[..256 * 512]);
    assert_eq!(r.read(262, 100).unwrap(), &data[262 * 512..362 * 512]);
}

/// Sectors rewritten from a good copy after a read error, over all members.
fn corrected_sectors(array: &Array) -> u64 {
    array
        .slots()
        .iter()
        .flatten()
        .map(|m| m.counters().corrected_sectors)
        .sum()
}

/// An array whose superblocks record an interrupted reshape (md's `RESHAPE_ACTIVE`, half in
/// the old geometry and half in the new) is not started: reading it with either geometry
/// returns other data. The problem names the reshape and its position, and nothing is
/// written to any member.
#[test]
fn interrupted_reshape_is_refused_and_nothing_is_written() {
    use crate::metadata::FeatureMap;
    let r = rig(Level::Raid5, None, 4, false);
    for m in &r.mem {
        let mut sb = superblock_of(m);
        sb.features |= FeatureMap::RESHAPE_ACTIVE;
        sb.reshape_position_sectors = 102_400;
        sb.raid_disk_delta = 1;
        sb.new_level = sb.level.to_md();
        sb.new_layout = sb.layout;
        sb.new_chunk_sectors = sb.chunk_sectors;
        m.write_at(8, &sb.encode()).unwrap();
    }
    let before: Vec<Vec<u8>> = r.mem.iter().map(|m| member_bytes(m)).collect();
    let result = r.reassemble();
    assert!(result.arrays.is_empty(), "{result:?}");
    let reason = result
        .problems
        .iter()
        .map(|p| p.reason.as_str())
        .find(|p| p.contains("reshape"))
        .unwrap_or_else(|| panic!("no reshape problem: {:?}", result.problems));
    assert!(reason.contains("102400"), "{reason}");
    assert!(reason.contains("3 -> 4 members"), "{reason}");
    for (m, old) in r.mem.iter().zip(&before) {
        assert!(member_bytes(m) == *old, "a member was written");
    }
}

/// An array with md's write journal (raid5-cache) is not started, and nothing is written:
/// the journal may hold writes newer than the members.
#[test]
fn array_with_a_write_journal_is_refused_and_nothing_is_written() {
    use crate::metadata::FeatureMap;
    let r = rig(Level::Raid5, None, 4, false);
    for d in 0..4 {
        let mut sb = r.superblock_on(d);
        sb.features |= FeatureMap::JOURNAL;
        r.mem[d].write_at(8, &sb.encode()).unwrap();
    }
    let before: Vec<Vec<u8>> = r.mem.iter().map(|m| member_bytes(m)).collect();
    let result = r.reassemble();
    assert!(result.arrays.is_empty(), "{result:?}");
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.reason.contains("write journal")
                && p.reason.contains("journal device: missing")
                && p.reason.contains("nothing was written")),
        "{:?}",
        result.problems
    );
    for (m, old) in r.mem.iter().zip(&before) {
        assert!(member_bytes(m) == *old, "a member was written");
    }
}

/// A RAID5 with md's partial parity log, whose log holds entries (from a Linux crash): we do
/// not keep the log, so before serving, every member's log is emptied as md does at start
/// (an empty header with the array's signature, the rest of the area zero). A log area that
/// lies over the data is refused and nothing is written.
#[test]
fn partial_parity_log_is_emptied_before_serving_and_a_bad_area_refused() {
    use crate::metadata::FeatureMap;
    use crate::metadata::ppl;
    let r = rig(Level::Raid5, None, 4, false);
    let data_offset = r.array.superblock().unwrap().data_offset_sectors;
    // md's placement: 8 sectors past the superblock; size as fits before the data here.
    let (offset, size) = (8i16, 1000u16);
    let start = 8 + 8;
    assert!(start + u64::from(size) <= data_offset);
    let set_ppl = |m: &MemoryDisk, offset: i16, size: u16| {
        let mut sb = superblock_of(m);
        sb.features |= FeatureMap::MULTIPLE_PPLS;
        sb.bitmap_offset_sectors = (u32::from(offset as u16) | (u32::from(size) << 16)) as i32;
        m.write_at(8, &sb.encode()).unwrap();
        sb
    };
    for m in &r.mem {
        let sb = set_ppl(m, offset, size);
        // A header with entries, and a later header of the ring.
        let mut header = ppl::empty_header(&sb.array_uuid);
        header[528..532].copy_from_slice(&3u32.to_le_bytes());
        let csum = ppl::header_checksum(&header);
        header[532..536].copy_from_slice(&csum.to_le_bytes());
        assert_eq!(
            ppl::decode_header(&header, &sb.array_uuid).unwrap().entries,
            3
        );
        m.write_at(start, &header).unwrap();
        m.write_at(start + 300, &header).unwrap();
    }
    let result = r.reassemble();
    assert_eq!(result.arrays.len(), 1, "{result:?}");
    for m in &r.mem {
        let mut area = vec![0u8; usize::from(size) * 512];
        m.read_at(start, &mut area).unwrap();
        let sb = superblock_of(m);
        assert_eq!(
            ppl::decode_header(&area, &sb.array_uuid),
            Some(ppl::PplHeader {
                generation: 0,
                entries: 0
            })
        );
        let nz = area[4096..].iter().position(|&b| b != 0);
        assert!(nz.is_none(), "the ring was not zeroed: byte {nz:?}");
    }
    // While written, the superblocks record no log (dirty without one is what a crash must
    // leave); a clean stop records it again. Our settings record never goes into its area.
    let array = result.arrays[0].clone();
    let multiple = |sb: &Superblock| sb.features.contains(FeatureMap::MULTIPLE_PPLS);
    assert!(multiple(&r.superblock_on(0)));
    write_now(&r.exec, &array, 0, vec![9u8; 4096]).unwrap();
    for d in 0..4 {
        let sb = r.superblock_on(d);
        assert!(!multiple(&sb) && sb.resync_offset_sectors == 0, "disk {d}");
        assert_eq!(sb.ppl(), None);
    }
    let a = array.clone();
    r.exec
        .block_on(async move { a.mark_clean().await })
        .unwrap()
        .unwrap();
    for (d, m) in r.mem.iter().enumerate() {
        let sb = r.superblock_on(d);
        assert!(multiple(&sb) && sb.is_clean(), "disk {d}");
        assert_eq!(sb.ppl(), Some((offset, size)));
        let mut area = vec![0u8; usize::from(size) * 512];
        m.read_at(start, &mut area).unwrap();
        assert!(
            area[4096..].iter().all(|&b| b == 0),
            "written into the log area"
        );
    }
    drop((array, result));
    // The log over the data: refused, nothing written.
    for m in &r.mem {
        set_ppl(m, 8, (data_offset - 8) as u16);
    }
    let before: Vec<Vec<u8>> = r.mem.iter().map(|m| member_bytes(m)).collect();
    let result = r.reassemble();
    assert!(result.arrays.is_empty(), "{result:?}");
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.reason.contains("ppl.offset 8") && p.reason.contains("overlaps the data")),
        "{:?}",
        result.problems
    );
    for (m, old) in r.mem.iter().zip(&before) {
        assert!(member_bytes(m) == *old, "a member was written");
    }
}

/// Which superblock writes a closed gate holds.
type HeldRecord = fn(&Superblock) -> bool;

/// A member disk whose superblock writes wait at a gate the test opens (so a test can hold
/// a record in flight), and whose data writes fail when told to.
struct GatedDisk {
    inner: MemoryDisk,
    /// Closed for the superblock writes the function picks.
    gate: core::cell::Cell<Option<HeldRecord>>,
    waiters: core::cell::RefCell<Vec<core::task::Waker>>,
    fail_data_writes: core::cell::Cell<bool>,
}

impl GatedDisk {
    fn new(sectors: u64) -> Self {
        GatedDisk {
            inner: MemoryDisk::new(sectors),
            gate: core::cell::Cell::new(None),
            waiters: core::cell::RefCell::new(Vec::new()),
            fail_data_writes: core::cell::Cell::new(false),
        }
    }

    fn close_gate(&self, held: HeldRecord) {
        self.gate.set(Some(held));
    }

    fn open_gate(&self) {
        self.gate.set(None);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn superblock(&self) -> Superblock {
        let mut block = vec![0u8; 4096];
        self.inner.read_at(8, &mut block).unwrap();
        Superblock::decode(&block).unwrap()
    }
}

impl BlockDevice for GatedDisk {
    fn capacity_sectors(&self) -> u64 {
        self.inner.capacity_sectors()
    }

    fn read(&self, sector: u64, buf: Vec<u8>) -> crate::block::IoFuture<'_, Vec<u8>> {
        self.inner.read(sector, buf)
    }

    fn write(
        &self,
        sector: u64,
        data: crate::block::Bytes,
        fua: bool,
    ) -> crate::block::IoFuture<'_, ()> {
        alloc::boxed::Box::pin(async move {
            if sector == super::SUPERBLOCK_SECTOR {
                let record = Superblock::decode(&data);
                core::future::poll_fn(|cx| {
                    let held = self.gate.get();
                    if held.is_some_and(|h| record.as_ref().is_ok_and(h)) {
                        self.waiters.borrow_mut().push(cx.waker().clone());
                        core::task::Poll::Pending
                    } else {
                        core::task::Poll::Ready(())
                    }
                })
                .await;
            } else if self.fail_data_writes.get() {
                return Err(IoError::DeviceFailed);
            }
            self.inner.write(sector, data, fua).await
        })
    }

    fn flush(&self) -> crate::block::IoFuture<'_, ()> {
        self.inner.flush()
    }

    fn discard(&self, sector: u64, sectors: u64) -> crate::block::IoFuture<'_, ()> {
        self.inner.discard(sector, sectors)
    }
}

/// A write that skips a member another request has just failed is acknowledged only once
/// that failure is recorded on the other members: else a crash before the record leaves
/// the failed member "in sync" on disk, assembly takes its stale copy, and the acknowledged
/// write is lost (found by the model test, raid10n2+spares seed 56).
#[test]
fn write_skipping_a_failed_member_waits_for_the_failure_record() {
    let exec = Executor::new();
    let disks: Vec<Rc<GatedDisk>> = (0..3).map(|_| Rc::new(GatedDisk::new(16 * 2048))).collect();
    let members = super::test_rig::named_members(&disks);
    let opts = options(Level::Raid1, None, 64, "gated");
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .unwrap()
        .unwrap();
    crate::jobs::attach(&array);
    // Dirty the array first, so that the writes below need no superblock update of their own.
    write_now(&exec, &array, 0, vec![1u8; 4096]).unwrap();
    disks[1].fail_data_writes.set(true);
    for d in [&disks[0], &disks[2]] {
        d.close_gate(|_| true);
    }
    let done = |exec: &Executor, sector: u64| {
        let a = array.clone();
        let flag = Rc::new(core::cell::RefCell::new(None));
        let f = flag.clone();
        exec.spawn_detached(async move {
            let r = a.write(sector, vec![2u8; 4096].into(), false).await;
            *f.borrow_mut() = Some(r);
        });
        flag
    };
    // The first write fails on d1: d1 is marked faulty, its record waits at the gate.
    let first = done(&exec, 0);
    exec.run_until_stalled();
    assert_eq!(
        array.slots()[1].as_ref().unwrap().state(),
        MemberState::Faulty
    );
    assert!(first.borrow().is_none());
    // The second skips d1 and must wait for the record too.
    let second = done(&exec, 1000);
    exec.run_until_stalled();
    assert!(
        second.borrow().is_none(),
        "acknowledged before the failure was recorded"
    );
    for d in [&disks[0], &disks[2]] {
        d.open_gate();
    }
    exec.run_until_idle();
    assert_eq!(*first.borrow(), Some(Ok(())));
    assert_eq!(*second.borrow(), Some(Ok(())));
    for d in [&disks[0], &disks[2]] {
        assert_eq!(d.superblock().role_of(1), DeviceRole::Faulty);
    }
}

/// A rebuilt member counts as in sync only once its superblock says so: until then a crash
/// finds it recovering, so the array must not treat it as a full copy (and let the last
/// member recorded in sync fail as if it were redundant; found by the model test,
/// raid1+spare seed 229).
#[test]
fn rebuilt_member_is_in_sync_only_once_recorded() {
    let exec = Executor::new();
    let disks: Vec<Rc<GatedDisk>> = (0..3).map(|_| Rc::new(GatedDisk::new(8 * 2048))).collect();
    let members = super::test_rig::named_members(&disks[..2]);
    let opts = options(Level::Raid1, None, 64, "gated");
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .unwrap()
        .unwrap();
    crate::jobs::attach(&array);
    write_now(&exec, &array, 0, vec![3u8; 4096]).unwrap();
    // The spare's own record of being in sync (an active role, no recovery offset) waits.
    disks[2].close_gate(|sb| {
        matches!(sb.own_role(), DeviceRole::Active(_))
            && !sb
                .features
                .contains(crate::metadata::FeatureMap::RECOVERY_OFFSET)
    });
    let (a, spare) = (array.clone(), disks[2].clone() as Rc<dyn BlockDevice>);
    exec.block_on(async move { a.add_device("d2".into(), spare).await })
        .unwrap()
        .unwrap();
    let a = array.clone();
    exec.block_on(async move { a.fail_member(1).await })
        .unwrap()
        .unwrap();
    exec.run_until_stalled();
    let member = array.slots()[1].clone().expect("the spare took the slot");
    assert_eq!(member.name, "d2");
    assert_eq!(
        member.state(),
        MemberState::Rebuilding,
        "in sync before the record is on disk"
    );
    assert_eq!(array.health(), Health::Degraded);
    disks[2].open_gate();
    exec.run_until_idle();
    assert_eq!(member.state(), MemberState::Active);
    assert_eq!(array.health(), Health::Optimal);
    let sb = disks[2].superblock();
    assert_eq!(sb.own_role(), DeviceRole::Active(1));
    assert!(
        !sb.features
            .contains(crate::metadata::FeatureMap::RECOVERY_OFFSET)
    );
}

/// A member whose superblock write fails is failed by that update, which records it on the
/// others; then, as after any failure, a spare takes the slot (found by the model test,
/// raid5+spare seed 233: the failure came from a superblock write and the spare stayed
/// idle for the rest of the run).
#[test]
fn member_failed_by_its_superblock_write_is_replaced_by_a_spare() {
    let r = rig(Level::Raid1, None, 2, false);
    let spare = Rc::new(FaultyDisk::new(
        Rc::new(MemoryDisk::new(16 * 2048)),
        r.exec.clone(),
        7,
        FaultConfig::default(),
    ));
    let (a, dev) = (r.array.clone(), spare.clone() as Rc<dyn BlockDevice>);
    r.exec
        .block_on(async move { a.add_device("s".into(), dev).await })
        .unwrap()
        .unwrap();
    // The first write marks the array dirty: a superblock update, which fails on d1.
    r.disks[1].add_error_range(super::SUPERBLOCK_SECTOR, 8, FaultOp::Write);
    r.write(0, vec![5u8; 4096]).unwrap();
    r.exec.run_until_idle();
    let slot = r.array.slots()[1].clone().expect("slot 1 filled");
    assert_eq!(slot.name, "s");
    assert_eq!(slot.state(), MemberState::Active);
    assert_eq!(r.array.health(), Health::Optimal);
    assert_eq!(r.superblock_on(0).role_of(1), DeviceRole::Faulty);
    assert_eq!(r.read(0, 8).unwrap(), vec![5u8; 4096]);
}

/// After an unclean shutdown the copies of a block may differ (a write that reached one of
/// them only). Until the resync has passed the block, every read takes the copy the resync
/// will keep (the first readable one, as md's read balancing does), so two reads never
/// return two versions (found by `orion-sim` on RAID10 after a crash).
#[test]
fn reads_before_the_resync_take_the_copy_the_resync_keeps() {
    for (level, layout) in [(Level::Raid1, None), (Level::Raid10, Some("n2"))] {
        let r = rig(level, layout, 2, false);
        r.write(0, vec![1u8; 8 * 512]).unwrap();
        let offset = r.array.superblock().unwrap().data_offset_sectors;
        // A newer write reached only the second copy before the crash.
        r.mem[1].write_at(offset, &[2u8; 8 * 512]).unwrap();
        r.array.needs_resync.set(true);
        r.array.resync_cursor.set(0);
        for policy in [ReadPolicy::RoundRobin, ReadPolicy::LeastOutstanding] {
            r.array.set_read_policy(policy);
            for _ in 0..4 {
                let got = r.read(0, 8).unwrap();
                assert!(got.iter().all(|&b| b == 1), "{level}: read {}", got[0]);
            }
        }
        // The resync keeps that copy.
        let a = r.array.clone();
        r.exec
            .block_on(async move { crate::jobs::resync(&a).await })
            .unwrap()
            .unwrap();
        let mut second = vec![0u8; 8 * 512];
        r.mem[1].read_at(offset, &mut second).unwrap();
        assert!(
            second.iter().all(|&b| b == 1),
            "{level}: resynced {}",
            second[0]
        );
        assert!(!r.array.needs_resync());
    }
}
