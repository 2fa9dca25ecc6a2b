//! Engine tests of nested arrays: RAID 50 and RAID 60 on memory disks, created, written,
//! degraded and assembled again from their member devices.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::super::test_rig::{options, read_now, write_now};
use super::*;
use crate::array::Health;
use crate::block::SECTOR_BYTES;
use crate::metadata::Superblock;
use crate::platform::memory::MemoryDisk;

const MEMBER_SECTORS: u64 = 16 * 2048;
const CHUNK_SECTORS: u32 = 64;

struct Rig {
    exec: Executor,
    mem: Vec<Rc<MemoryDisk>>,
    stack: Stack,
}

fn named(mem: &[Rc<MemoryDisk>], skip: &[usize]) -> Vec<NamedDevice> {
    mem.iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect()
}

fn nested_options(name: &str) -> CreateOptions {
    let mut opts = options(Level::Raid0, None, CHUNK_SECTORS, name);
    opts.uuid = [0x5a; 16];
    opts
}

fn rig(level: u32, groups: usize, per_group: usize) -> Rig {
    let exec = Executor::new();
    let mem: Vec<Rc<MemoryDisk>> = (0..groups * per_group)
        .map(|_| Rc::new(MemoryDisk::new(MEMBER_SECTORS)))
        .collect();
    let members = named(&mem, &[]);
    let spec = NestedSpec::for_level(level, groups).expect("50 or 60");
    let e = exec.clone();
    let stack = exec
        .block_on(async move { create_nested(&e, members, &nested_options("big"), spec).await })
        .expect("create finishes")
        .expect("create succeeds");
    for layer in stack.layers() {
        crate::jobs::attach(layer);
    }
    Rig { exec, mem, stack }
}

impl Rig {
    fn mark_clean(&self) {
        let s = self.stack.clone();
        self.exec
            .block_on(async move { s.mark_clean().await })
            .expect("finishes")
            .expect("clean");
    }

    fn assemble(&self, skip: &[usize]) -> StackAssembly {
        let exec = Executor::new();
        let members = named(&self.mem, skip);
        let e = exec.clone();
        let result = exec
            .block_on(async move { assemble_stacks(&e, members).await })
            .expect("assembly finishes");
        for layer in result.stacks.iter().flat_map(Stack::layers) {
            crate::jobs::attach(layer);
        }
        result
    }
}

/// Seeded pattern data: `sectors` sectors whose bytes depend on the seed and position.
fn pattern(seed: u64, sectors: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut data = vec![0u8; sectors * SECTOR_BYTES];
    rng.fill(&mut data);
    data
}

/// Writes a spread of requests (unaligned, crossing chunks and groups) and returns them.
fn write_spread(exec: &Executor, array: &Rc<Array>, seed: u64) -> Vec<(u64, Vec<u8>)> {
    let capacity = array.capacity_sectors();
    let mut rng = SplitMix64::new(seed);
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 0..24u64 {
        let sectors = 1 + rng.below(3 * u64::from(CHUNK_SECTORS)) as usize;
        let sector = rng.below(capacity - sectors as u64);
        // Later writes may overlap earlier ones: keep only what is still current.
        let data = pattern(seed ^ (i + 1), sectors);
        written.retain(|(s, d)| {
            let end = s + (d.len() / SECTOR_BYTES) as u64;
            end <= sector || *s >= sector + sectors as u64
        });
        write_now(exec, array, sector, data.clone()).expect("write");
        written.push((sector, data));
    }
    written
}

fn check_reads(exec: &Executor, array: &Rc<Array>, written: &[(u64, Vec<u8>)], seed: u64) {
    for (sector, data) in written {
        let got = read_now(exec, array, *sector, data.len() / SECTOR_BYTES)
            .unwrap_or_else(|e| panic!("seed {seed}: read at {sector} failed: {e}"));
        assert!(
            got == *data,
            "seed {seed}: data at sector {sector} differs from what was written"
        );
    }
}

fn only_stack(result: &StackAssembly) -> &Stack {
    assert_eq!(
        result.stacks.len(),
        1,
        "one stack expected; problems: {:?}",
        result.problems
    );
    &result.stacks[0]
}

#[test]
fn raid50_create_write_read_and_reassemble() {
    let seed = 50;
    let r = rig(50, 2, 3);
    assert_eq!(r.stack.level_name(), "raid50");
    assert_eq!(r.stack.groups.len(), 2);
    let group_capacity = r.stack.groups[0].capacity_sectors();
    assert!(r.stack.array.capacity_sectors() > group_capacity);
    let written = write_spread(&r.exec, &r.stack.array, seed);
    check_reads(&r.exec, &r.stack.array, &written, seed);
    r.mark_clean();

    let again = r.assemble(&[]);
    let stack = only_stack(&again);
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!(stack.array.name(), "big");
    assert_eq!(stack.level_name(), "raid50");
    let names: Vec<&str> = stack.groups.iter().map(|g| g.name()).collect();
    assert_eq!(names, ["big-g0", "big-g1"]);
    let exec = stack.array.executor().clone();
    check_reads(&exec, &stack.array, &written, seed);
}

#[test]
fn superblocks_of_each_layer() {
    let r = rig(50, 2, 3);
    r.mark_clean();
    // Member superblocks are the groups'.
    for (i, m) in r.mem.iter().enumerate() {
        let mut block = vec![0u8; SUPERBLOCK_BYTES];
        m.read_at(SUPERBLOCK_SECTOR, &mut block).unwrap();
        let sb = Superblock::decode(&block).unwrap();
        assert_eq!(sb.level, Level::Raid5);
        assert_eq!(sb.raid_disk_count, 3);
        assert_eq!(sb.name(), format!("big-g{}", i / 3));
        assert_eq!(sb.array_uuid, group_uuid(&[0x5a; 16], i / 3));
        assert!(sb.is_clean(), "member {i} clean after mark_clean");
    }
    assert_ne!(group_uuid(&[0x5a; 16], 0), group_uuid(&[0x5a; 16], 1));
    // The outer superblock is 4 KiB into each group's data: with left-symmetric the first
    // chunk of a group is on its first member, right after that member's data offset.
    for (g, group) in r.stack.groups.iter().enumerate() {
        let first = &r.mem[g * 3];
        let mut block = vec![0u8; SUPERBLOCK_BYTES];
        let member_sb = group.slots()[0].as_ref().unwrap().superblock();
        first
            .read_at(
                member_sb.data_offset_sectors + SUPERBLOCK_SECTOR,
                &mut block,
            )
            .unwrap();
        let outer = Superblock::decode(&block).unwrap();
        assert_eq!(outer.level, Level::Raid0);
        assert_eq!(outer.raid_disk_count, 2);
        assert_eq!(outer.name(), "big");
        assert_eq!(outer.array_uuid, [0x5a; 16]);
        assert_eq!(
            outer.own_role(),
            crate::metadata::DeviceRole::Active(g as u16)
        );
        assert_eq!(outer.chunk_sectors, CHUNK_SECTORS);
        assert_eq!(outer.events, r.stack.array.superblock().unwrap().events);
        assert!(outer.is_clean());
        // The same superblock, read through the group array.
        let exec = r.exec.clone();
        let gr = group.clone();
        let via_group = exec
            .block_on(async move { read_inner_superblock(&gr).await })
            .unwrap()
            .expect("outer superblock visible through the group");
        assert_eq!(via_group, outer);
        assert!(outer.data_size_sectors <= group.capacity_sectors());
    }
}

#[test]
fn raid50_survives_one_failed_member_per_group() {
    let seed = 51;
    let r = rig(50, 2, 3);
    let written = write_spread(&r.exec, &r.stack.array, seed);
    for (g, group) in r.stack.groups.iter().enumerate() {
        let gr = group.clone();
        r.exec
            .block_on(async move { gr.fail_member(g + 1).await })
            .unwrap()
            .unwrap();
        assert_eq!(group.health(), Health::Degraded);
    }
    check_reads(&r.exec, &r.stack.array, &written, seed);
    // Writes go on degraded.
    let more = write_spread(&r.exec, &r.stack.array, seed + 100);
    check_reads(&r.exec, &r.stack.array, &more, seed + 100);
    r.mark_clean();

    // The failed members are stale: assembled from everything, the groups come up degraded
    // with the same data.
    let again = r.assemble(&[]);
    let stack = only_stack(&again);
    for group in &stack.groups {
        assert_eq!(group.health(), Health::Degraded);
    }
    let exec = stack.array.executor().clone();
    check_reads(&exec, &stack.array, &more, seed + 100);
}

#[test]
fn raid50_assembles_with_one_member_missing_per_group() {
    let seed = 52;
    let r = rig(50, 2, 3);
    let written = write_spread(&r.exec, &r.stack.array, seed);
    r.mark_clean();
    let again = r.assemble(&[0, 5]);
    let stack = only_stack(&again);
    assert_eq!(stack.groups.len(), 2);
    for group in &stack.groups {
        assert_eq!(group.health(), Health::Degraded);
    }
    let exec = stack.array.executor().clone();
    check_reads(&exec, &stack.array, &written, seed);
}

#[test]
fn raid50_with_a_group_lost_does_not_start() {
    let r = rig(50, 2, 3);
    write_spread(&r.exec, &r.stack.array, 53);
    r.mark_clean();
    let again = r.assemble(&[3, 4]);
    assert!(again.stacks.is_empty(), "nothing to serve");
    let text = format!("{:?}", again.problems);
    // Group 1 cannot run, so the outer array cannot; group 0 is left unserved.
    assert!(text.contains("big-g1 ("), "{text}");
    assert!(text.contains("big (5a5a5a5a"), "{text}");
    assert!(
        text.contains("big-g0\", reason: \"member of an array that did not start"),
        "{text}"
    );
}

#[test]
fn raid60_survives_two_failed_members_per_group() {
    let seed = 60;
    let r = rig(60, 2, 4);
    assert_eq!(r.stack.level_name(), "raid60");
    let written = write_spread(&r.exec, &r.stack.array, seed);
    let g0 = r.stack.groups[0].clone();
    r.exec
        .block_on(async move {
            g0.fail_member(0).await.unwrap();
            g0.fail_member(3).await.unwrap();
        })
        .unwrap();
    check_reads(&r.exec, &r.stack.array, &written, seed);
    r.mark_clean();
    // Group 0 lost members 0 and 3 (now stale); group 1 loses members 5 and 6 by absence.
    let again = r.assemble(&[5, 6]);
    let stack = only_stack(&again);
    assert_eq!(stack.level_name(), "raid60");
    for group in &stack.groups {
        assert_eq!(group.health(), Health::Degraded);
    }
    let exec = stack.array.executor().clone();
    check_reads(&exec, &stack.array, &written, seed);
}

#[test]
fn plain_arrays_assemble_beside_stacks() {
    let r = rig(60, 2, 4);
    r.mark_clean();
    let exec = Executor::new();
    let extra: Vec<Rc<MemoryDisk>> = (0..3)
        .map(|_| Rc::new(MemoryDisk::new(MEMBER_SECTORS)))
        .collect();
    let e = exec.clone();
    let extra_members = named(&extra, &[]);
    exec.block_on(async move {
        let a = create(&e, extra_members, &options(Level::Raid5, None, 64, "solo"))
            .await
            .unwrap();
        a.mark_clean().await.unwrap();
    })
    .unwrap();
    let mut members = named(&r.mem, &[]);
    members.extend(
        extra
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("x{i}"), m.clone() as Rc<dyn BlockDevice>)),
    );
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble_stacks(&e, members).await })
        .unwrap();
    assert!(result.problems.is_empty(), "{:?}", result.problems);
    let mut names: Vec<(String, usize)> = result
        .stacks
        .iter()
        .map(|s| (s.array.name().into(), s.groups.len()))
        .collect();
    names.sort();
    assert_eq!(names, [("big".into(), 2), ("solo".into(), 0)]);
}

#[test]
fn nested_geometry_is_checked_before_anything_is_written() {
    let spec50 = |g| NestedSpec::for_level(50, g).unwrap();
    let spec60 = |g| NestedSpec::for_level(60, g).unwrap();
    let err = |r: Result<(), CreateError>| format!("{}", r.unwrap_err());
    assert!(err(check_nested(spec50(2), 7, "a", None)).contains("cannot be split"));
    assert!(err(check_nested(spec50(2), 4, "a", None)).contains("at least 3 members per group"));
    assert!(err(check_nested(spec60(2), 6, "a", None)).contains("at least 4 members per group"));
    assert!(err(check_nested(spec50(1), 6, "a", None)).contains("at least 2 groups"));
    assert!(err(check_nested(spec50(0), 6, "a", None)).contains("at least 2 groups"));
    assert!(err(check_nested(spec50(2), 6, &"n".repeat(29), None)).contains("too long"));
    assert!(err(check_nested(spec50(2), 6, "a", Some("bogus"))).contains("bogus"));
    assert!(check_nested(spec50(2), 6, &"n".repeat(28), Some("ra")).is_ok());
    assert!(check_nested(spec60(3), 12, "a", Some("left-symmetric-6")).is_ok());
    assert!(NestedSpec::for_level(10, 2).is_none());

    // A refused create writes nothing.
    let exec = Executor::new();
    let mem: Vec<Rc<MemoryDisk>> = (0..7)
        .map(|_| Rc::new(MemoryDisk::new(MEMBER_SECTORS)))
        .collect();
    let members = named(&mem, &[]);
    let e = exec.clone();
    let r = exec
        .block_on(async move {
            create_nested(&e, members, &nested_options("a"), spec50(2))
                .await
                .map(|_| ())
        })
        .unwrap();
    assert!(matches!(r, Err(CreateError::Nesting(_))));
    for m in &mem {
        let mut block = vec![0u8; SUPERBLOCK_BYTES];
        m.read_at(SUPERBLOCK_SECTOR, &mut block).unwrap();
        assert!(block.iter().all(|&b| b == 0));
    }
}
