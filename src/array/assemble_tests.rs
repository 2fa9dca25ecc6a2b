//! Assembly of members whose superblocks decode badly or disagree: every case is refused
//! with a problem naming the superblock field (or feature bit) at fault, nothing is written
//! to any member, and nothing panics. Each superblock is rewritten with a correct checksum
//! (unless the checksum is the case), so the refusal is about the field, not the checksum.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::SUPERBLOCK_SECTOR;
use super::assemble::{Problem, assemble, create};
use super::test_rig::{named_members, options};
use crate::block::BlockDevice;
use crate::executor::Executor;
use crate::metadata::{FeatureMap, Level, Superblock, checksum};
use crate::platform::memory::MemoryDisk;

const MIB: u64 = 2048;
const OFF_LEVEL: usize = 72;
const OFF_SB_CSUM: usize = 216;

/// Creates an array on memory disks of these sizes, applies `edit(member, block)` to each
/// member's superblock block, then assembles with a fresh executor. Asserts that no array
/// starts and that not one byte of any member changed; gives the problems reported.
fn refused(
    level: Level,
    layout: Option<&str>,
    member_sectors: &[u64],
    edit: impl Fn(usize, &mut Vec<u8>),
) -> Vec<Problem> {
    let exec = Executor::new();
    let disks: Vec<Rc<MemoryDisk>> = member_sectors
        .iter()
        .map(|&s| Rc::new(MemoryDisk::new(s)))
        .collect();
    let opts = options(level, layout, 64, "bad");
    let members = named_members(&disks);
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .unwrap()
        .unwrap();
    drop(array);
    for (i, d) in disks.iter().enumerate() {
        let mut block = vec![0u8; 4096];
        d.read_at(SUPERBLOCK_SECTOR, &mut block).unwrap();
        edit(i, &mut block);
        d.write_at(SUPERBLOCK_SECTOR, &block).unwrap();
    }
    let before: Vec<Vec<u8>> = disks.iter().map(|d| contents(d)).collect();
    let exec = Executor::new();
    let candidates = named_members(&disks);
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, candidates).await })
        .unwrap();
    exec.run_until_idle();
    assert!(
        result.arrays.is_empty(),
        "started despite {:?}",
        result.problems
    );
    for (i, d) in disks.iter().enumerate() {
        assert!(contents(d) == before[i], "member d{i} was written");
    }
    result.problems
}

fn contents(d: &MemoryDisk) -> Vec<u8> {
    let mut all = vec![0u8; d.capacity_sectors() as usize * 512];
    d.read_at(0, &mut all).unwrap();
    all
}

/// Decodes, edits the typed superblock and encodes it again (a correct checksum; encode
/// does not validate, so any field value can be written).
fn typed(block: &mut Vec<u8>, edit: impl FnOnce(&mut Superblock)) {
    let mut sb = Superblock::decode(block).expect("created superblock decodes");
    edit(&mut sb);
    *block = sb.encode();
}

/// Overwrites a raw 32-bit field and recomputes the checksum.
fn raw_u32(block: &mut [u8], offset: usize, value: u32) {
    block[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    let csum = checksum(block).expect("checksummable");
    block[OFF_SB_CSUM..OFF_SB_CSUM + 4].copy_from_slice(&csum.to_le_bytes());
}

/// Asserts that some problem names every one of `words`, and gives its text.
fn named(problems: &[Problem], words: &[&str]) -> String {
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.member, p.reason))
        .collect();
    text.iter()
        .find(|t| words.iter().all(|w| t.contains(w)))
        .cloned()
        .unwrap_or_else(|| panic!("no problem names {words:?}: {text:#?}"))
}

const FOUR: &[u64] = &[8 * MIB; 4];

#[test]
fn unknown_feature_bit_is_named() {
    let p = refused(Level::Raid5, None, FOUR, |_, b| {
        typed(b, |sb| sb.features |= FeatureMap::from_bits_retain(1 << 14));
    });
    named(&p, &["d0", "feature_map", "bit 14"]);
    named(&p, &["d3", "feature_map", "bit 14"]);
}

#[test]
fn levels_md_knows_but_not_served_are_named() {
    for (raw, name) in [(-4i32, "multipath"), (-5, "faulty")] {
        let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
            raw_u32(b, OFF_LEVEL, raw as u32);
        });
        named(
            &p,
            &["d1", &format!("level {raw} ({name})"), "not supported"],
        );
    }
    // Linear decodes (examine shows it) but is not served.
    let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
        typed(b, |sb| sb.level = Level::Linear);
    });
    named(&p, &["level -1 (linear)", "not served"]);
}

#[test]
fn unknown_level_number_is_named() {
    for raw in [2i32, 3, 7, 11, -2, i32::MIN] {
        let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
            raw_u32(b, OFF_LEVEL, raw as u32);
        });
        named(&p, &["d0", &format!("level {raw} is not an md RAID level")]);
    }
}

#[test]
fn unknown_parity_layouts_are_named() {
    for layout in [6u32, 7, 9, 16, 21, 0xffff_ffff] {
        let p = refused(Level::Raid5, None, FOUR, |_, b| {
            typed(b, |sb| sb.layout = layout);
        });
        named(&p, &[&format!("layout {layout} is not a raid5 layout")]);
    }
    let p = refused(Level::Raid6, None, FOUR, |_, b| {
        typed(b, |sb| sb.layout = 11);
    });
    named(&p, &["layout 11 is not a raid6 layout"]);
}

#[test]
fn bad_raid10_layout_words_are_named() {
    // Reserved bit 19, far-set variant 3, one copy, more copies than members.
    for layout in [0x8_0102u32, 0x6_0102, 0x101, 0x105, 0] {
        let p = refused(Level::Raid10, None, FOUR, |_, b| {
            typed(b, |sb| sb.layout = layout);
        });
        named(&p, &[&format!("layout {layout:#x} is not a raid10 layout")]);
    }
}

#[test]
fn raid0_layout_word_out_of_range_is_named() {
    for layout in [0u32, 3, 0x102] {
        let p = refused(Level::Raid0, None, &[8 * MIB; 2], |_, b| {
            typed(b, |sb| sb.layout = layout);
        });
        named(
            &p,
            &[&format!("layout {layout} is not a raid0 zone layout")],
        );
    }
    // Without RAID0_LAYOUT the kernel ignores the word; members of unequal size then have
    // zones whose mapping nothing records: refused, never guessed from the word.
    let p = refused(
        Level::Raid0,
        None,
        &[8 * MIB, 12 * MIB, 16 * MIB],
        |_, b| {
            typed(b, |sb| {
                sb.features -= FeatureMap::RAID0_LAYOUT;
                sb.layout = 2;
            });
        },
    );
    named(&p, &["RAID0_LAYOUT", "zone layout"]);
}

#[test]
fn chunk_sizes_that_are_not_a_power_of_two_or_zero_are_named() {
    for chunk in [0u32, 4, 24, 1000] {
        let p = refused(Level::Raid5, None, FOUR, |_, b| {
            typed(b, |sb| sb.chunk_sectors = chunk);
        });
        named(&p, &[&format!("chunksize {chunk} sectors"), "raid5"]);
    }
    for chunk in [0u32, 7] {
        let p = refused(Level::Raid0, None, &[8 * MIB; 2], |_, b| {
            typed(b, |sb| sb.chunk_sectors = chunk);
        });
        named(&p, &[&format!("chunksize {chunk} sectors"), "raid0"]);
    }
}

#[test]
fn raid_disks_zero_or_beyond_the_role_table_is_named() {
    let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
        typed(b, |sb| sb.raid_disk_count = 0);
    });
    named(&p, &["raid_disks 0"]);
    let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
        typed(b, |sb| sb.raid_disk_count = sb.max_dev() + 1);
    });
    named(&p, &["raid_disks", "max_dev"]);
}

#[test]
fn members_that_disagree_on_geometry_are_named() {
    type Edit = fn(&mut Superblock);
    let cases: [(&str, Edit); 6] = [
        ("level (raid5 vs raid6)", |sb| sb.level = Level::Raid6),
        ("layout (0x2 vs 0x0)", |sb| sb.layout = 0),
        ("chunksize (64 vs 256 sectors)", |sb| sb.chunk_sectors = 256),
        ("raid_disks (4 vs 5)", |sb| {
            sb.raid_disk_count = 5;
        }),
        ("size", |sb| sb.size_sectors -= 128),
        ("ctime", |sb| {
            sb.ctime = crate::metadata::MdTime::from_seconds(5)
        }),
    ];
    for (what, change) in cases {
        // At the same events, and with the odd member one event behind (stale: it would be
        // re-added and rebuilt with a geometry it never had).
        for behind in [0u64, 1] {
            let p = refused(Level::Raid5, None, FOUR, |i, b| {
                if i == 2 {
                    typed(b, change);
                } else {
                    typed(b, |sb| sb.events += behind);
                }
            });
            let text = named(&p, &["disagree on", what, "d2"]);
            assert!(text.contains("d0"), "{text}");
        }
    }
}

#[test]
fn data_area_beyond_the_device_is_named() {
    let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
        typed(b, |sb| sb.data_size_sectors += 8);
    });
    named(
        &p,
        &[
            "d0",
            "data_offset",
            "data_size",
            "past the end of the device",
        ],
    );
}

#[test]
fn dev_number_outside_the_role_table_is_named() {
    let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
        typed(b, |sb| sb.dev_number = sb.max_dev());
    });
    named(&p, &["d1", "dev_number", "max_dev"]);
}

#[test]
fn wrong_checksum_is_named() {
    let p = refused(Level::Raid1, None, &[8 * MIB; 2], |_, b| {
        b[OFF_SB_CSUM] ^= 1;
    });
    named(&p, &["d0", "sb_csum"]);
}
