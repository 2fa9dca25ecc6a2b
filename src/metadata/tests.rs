//! Tests of the superblock codec, its validation and the create-time defaults.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

const UUID_A: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
];
const DEV_UUID: [u8; 16] = [0x5a; 16];
const MEMBER_SECTORS: u64 = 64 * 2048; // 64 MiB

/// A healthy 4-member raid5 superblock for device 1.
fn raid5_sb() -> Superblock {
    let roles = [0, 1, 2, 3].map(DeviceRole::Active);
    let data_offset = default_data_offset_sectors_for_chunk(MEMBER_SECTORS, 1024);
    let spec = CreateSpec {
        level: Level::Raid5,
        layout: 2,
        chunk_sectors: 1024,
        raid_disk_count: 4,
        array_uuid: UUID_A,
        name: b"host:r5",
        size_sectors: default_component_sectors(
            Level::Raid5,
            1024,
            usable_data_sectors(MEMBER_SECTORS, data_offset),
        ),
        data_offset_sectors: data_offset,
        time_seconds: 1_700_000_000,
        assume_clean: false,
        roles: &roles,
    };
    Superblock::new_for_create(&spec, 1, MEMBER_SECTORS, DEV_UUID).expect("valid spec")
}

fn block_of(sb: &Superblock) -> Vec<u8> {
    sb.encode()
}

/// Recomputes `sb_csum` after a test edited raw bytes.
fn reseal(block: &mut [u8]) {
    let csum = checksum(block).expect("checksummable");
    block[216..220].copy_from_slice(&csum.to_le_bytes());
}

fn set_u32(block: &mut [u8], off: usize, v: u32) {
    block[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn decode_edited(
    sb: &Superblock,
    edit: impl FnOnce(&mut Superblock),
) -> Result<Superblock, SuperblockError> {
    let mut sb = sb.clone();
    edit(&mut sb);
    Superblock::decode(&sb.encode())
}

// ---------------------------------------------------------------- checksum

#[test]
fn checksum_of_minimal_block_is_magic_plus_version() {
    let mut block = vec![0u8; 256];
    set_u32(&mut block, 0, MD_SB_MAGIC);
    set_u32(&mut block, 4, 1);
    // 0xa92b4efc + 1, no carry.
    assert_eq!(checksum(&block), Some(0xa92b_4efd));
}

#[test]
fn checksum_folds_the_carry_once() {
    let mut block = vec![0u8; 256];
    set_u32(&mut block, 0, MD_SB_MAGIC);
    set_u32(&mut block, 4, 1);
    set_u32(&mut block, 16, 0xffff_ffff);
    set_u32(&mut block, 20, 0xffff_ffff);
    // 0xa92b4efd + 2 * 0xffffffff = 0x2_a92b_4efb; 0xa92b4efb + 0x2 = 0xa92b4efd.
    assert_eq!(checksum(&block), Some(0xa92b_4efd));
}

#[test]
fn checksum_adds_trailing_half_word_for_odd_max_dev() {
    let mut block = vec![0u8; 258];
    set_u32(&mut block, 0, MD_SB_MAGIC);
    set_u32(&mut block, 4, 1);
    set_u32(&mut block, 220, 1); // max_dev = 1: 258 bytes, the last two a half word
    block[256..258].copy_from_slice(&0x1234u16.to_le_bytes());
    // 0xa92b4efc + 1 + 1 + 0x1234 = 0xa92b6132.
    assert_eq!(checksum(&block), Some(0xa92b_6132));
}

#[test]
fn checksum_ignores_stored_checksum_and_bytes_past_the_table() {
    let mut block = vec![0u8; 4096];
    set_u32(&mut block, 0, MD_SB_MAGIC);
    set_u32(&mut block, 4, 1);
    set_u32(&mut block, 216, 0xdead_beef);
    block[256..].fill(0x77);
    assert_eq!(checksum(&block), Some(0xa92b_4efd));
    assert_eq!(checksum(&block[..255]), None);
    set_u32(&mut block, 220, MAX_DEV_LIMIT + 1);
    assert_eq!(checksum(&block), None);
}

/// A fixed create-time raid1 superblock whose checksum `mdadm --examine` reported as correct
/// (see tests/mdadm_examine_sb.rs); pinned so a codec change that alters bytes is noticed.
#[test]
fn golden_raid1_superblock_checksum() {
    let roles = [DeviceRole::Active(0), DeviceRole::Active(1)];
    let spec = CreateSpec {
        level: Level::Raid1,
        layout: 0,
        chunk_sectors: 0,
        raid_disk_count: 2,
        array_uuid: UUID_A,
        name: b"golden",
        size_sectors: 129_024,
        data_offset_sectors: 2048,
        time_seconds: 1_700_000_000,
        assume_clean: false,
        roles: &roles,
    };
    let sb = Superblock::new_for_create(&spec, 0, MEMBER_SECTORS, DEV_UUID).unwrap();
    let block = sb.encode();
    let stored = u32::from_le_bytes(block[216..220].try_into().unwrap());
    assert_eq!(stored, sb.checksum());
    assert_eq!(stored, GOLDEN_RAID1_CHECKSUM);
}

const GOLDEN_RAID1_CHECKSUM: u32 = 0x41b6_70cf;

// ---------------------------------------------------------------- encode / decode

#[test]
fn encode_layout_matches_md_p_h_offsets() {
    let sb = raid5_sb();
    let b = block_of(&sb);
    assert_eq!(b.len(), SUPERBLOCK_BYTES);
    assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), MD_SB_MAGIC);
    assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 1);
    assert_eq!(&b[16..32], &UUID_A);
    assert_eq!(&b[32..39], b"host:r5");
    assert_eq!(u32::from_le_bytes(b[72..76].try_into().unwrap()), 5);
    assert_eq!(u32::from_le_bytes(b[76..80].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(b[88..92].try_into().unwrap()), 1024);
    assert_eq!(u32::from_le_bytes(b[92..96].try_into().unwrap()), 4);
    assert_eq!(
        u64::from_le_bytes(b[128..136].try_into().unwrap()),
        sb.data_offset_sectors
    );
    assert_eq!(u64::from_le_bytes(b[144..152].try_into().unwrap()), 8);
    assert_eq!(u32::from_le_bytes(b[160..164].try_into().unwrap()), 1);
    assert_eq!(&b[168..184], &DEV_UUID);
    assert_eq!(u32::from_le_bytes(b[220..224].try_into().unwrap()), 128);
    assert_eq!(
        u16::from_le_bytes(b[258..260].try_into().unwrap()),
        1,
        "dev 1 is slot 1"
    );
    assert_eq!(
        u16::from_le_bytes(b[264..266].try_into().unwrap()),
        0xffff,
        "unused entry"
    );
    assert!(
        b[512..].iter().all(|&x| x == 0xff),
        "past the table is 0xff like mdadm"
    );
    assert!(b[224..256].iter().all(|&x| x == 0), "pad3");
    assert_eq!(Superblock::decode(&b), Ok(sb));
}

#[test]
fn decode_accepts_exactly_the_needed_length() {
    let sb = raid5_sb();
    let b = block_of(&sb);
    let needed = 256 + 2 * 128;
    assert_eq!(Superblock::decode(&b[..needed]), Ok(sb));
    assert_eq!(
        Superblock::decode(&b[..needed - 1]),
        Err(SuperblockError::Truncated {
            needed_bytes: needed,
            available_bytes: needed - 1
        })
    );
}

#[test]
fn orion_feature_bit_is_accepted_and_not_a_linux_bit() {
    assert_eq!(FeatureMap::LINUX_ALL.bits() & ORION_FEATURE, 0);
    assert_eq!(FeatureMap::ORION.bits(), ORION_FEATURE);
    let sb = decode_edited(&raid5_sb(), |sb| sb.features |= FeatureMap::ORION).unwrap();
    assert!(sb.features.contains(FeatureMap::ORION));
}

// ---------------------------------------------------------------- every error variant

#[test]
fn error_truncated() {
    assert_eq!(
        Superblock::decode(&[0u8; 100]),
        Err(SuperblockError::Truncated {
            needed_bytes: 256,
            available_bytes: 100
        })
    );
    let b = block_of(&raid5_sb());
    assert!(matches!(
        Superblock::decode(&b[..300]),
        Err(SuperblockError::Truncated {
            needed_bytes: 512,
            available_bytes: 300
        })
    ));
}

#[test]
fn error_bad_magic() {
    let mut b = block_of(&raid5_sb());
    set_u32(&mut b, 0, 0xa92b_4efd);
    assert_eq!(
        Superblock::decode(&b),
        Err(SuperblockError::BadMagic { found: 0xa92b_4efd })
    );
    assert!(matches!(
        Superblock::decode(&[0u8; 4096]),
        Err(SuperblockError::BadMagic { found: 0 })
    ));
}

#[test]
fn error_unsupported_major_version() {
    let mut b = block_of(&raid5_sb());
    set_u32(&mut b, 4, 0);
    assert_eq!(
        Superblock::decode(&b),
        Err(SuperblockError::UnsupportedMajorVersion { found: 0 })
    );
}

#[test]
fn error_max_dev_too_large() {
    let mut b = block_of(&raid5_sb());
    set_u32(&mut b, 220, 1921);
    assert_eq!(
        Superblock::decode(&b),
        Err(SuperblockError::MaxDevTooLarge { max_dev: 1921 })
    );
    // 1920 is the limit itself and fits exactly in 4 KiB.
    let mut sb = raid5_sb();
    sb.dev_roles.resize(1920, DeviceRole::RAW_SPARE);
    assert_eq!(
        Superblock::decode(&sb.encode()).map(|s| s.max_dev()),
        Ok(1920)
    );
}

#[test]
fn error_checksum_mismatch() {
    let mut b = block_of(&raid5_sb());
    let stored = u32::from_le_bytes(b[216..220].try_into().unwrap());
    set_u32(&mut b, 216, stored.wrapping_add(1));
    assert_eq!(
        Superblock::decode(&b),
        Err(SuperblockError::ChecksumMismatch {
            stored: stored.wrapping_add(1),
            computed: stored
        })
    );
}

#[test]
fn error_unknown_features() {
    let mut b = block_of(&raid5_sb());
    set_u32(&mut b, 8, 1 << 13);
    reseal(&mut b);
    assert_eq!(
        Superblock::decode(&b),
        Err(SuperblockError::UnknownFeatures { bits: 1 << 13 })
    );
}

#[test]
fn error_non_zero_padding() {
    for off in [12usize, 224, 255] {
        let mut b = block_of(&raid5_sb());
        b[off] = 1;
        reseal(&mut b);
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::NonZeroPadding),
            "offset {off}"
        );
    }
}

#[test]
fn error_unknown_level() {
    for level in [-4i32, -5, 2, 3, 7, 11, i32::MAX] {
        let mut b = block_of(&raid5_sb());
        set_u32(&mut b, 72, level as u32);
        reseal(&mut b);
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::UnknownLevel { level })
        );
    }
}

#[test]
fn error_wrong_super_offset() {
    let r = decode_edited(&raid5_sb(), |sb| sb.super_offset_sectors = 0);
    assert_eq!(
        r,
        Err(SuperblockError::WrongSuperOffset { found_sectors: 0 })
    );
}

#[test]
fn error_data_offset_overlaps_superblock() {
    let r = decode_edited(&raid5_sb(), |sb| sb.data_offset_sectors = 15);
    assert_eq!(
        r,
        Err(SuperblockError::DataOffsetOverlapsSuperblock {
            data_offset_sectors: 15
        })
    );
    assert!(decode_edited(&raid5_sb(), |sb| sb.data_offset_sectors = 16).is_ok());
}

#[test]
fn error_new_data_offset_overlaps_superblock() {
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::RESHAPE_ACTIVE | FeatureMap::NEW_OFFSET;
        sb.new_level = 5;
        sb.new_offset_sectors = -(sb.data_offset_sectors as i32);
    });
    assert!(matches!(
        r,
        Err(SuperblockError::NewDataOffsetOverlapsSuperblock { .. })
    ));
}

#[test]
fn error_data_size_too_small() {
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.data_size_sectors = 9;
        sb.size_sectors = 8;
    });
    assert_eq!(
        r,
        Err(SuperblockError::DataSizeTooSmall {
            data_size_sectors: 9
        })
    );
}

#[test]
fn error_used_size_exceeds_data_size() {
    let r = decode_edited(&raid5_sb(), |sb| sb.size_sectors = sb.data_size_sectors + 1);
    assert!(matches!(
        r,
        Err(SuperblockError::UsedSizeExceedsDataSize { .. })
    ));
    // raid0 uses each member's whole data_size; its `size` is not checked against it.
    let mut raid0 = raid5_sb();
    raid0.level = Level::Raid0;
    raid0.layout = 0;
    raid0.size_sectors = raid0.data_size_sectors + 1;
    assert!(Superblock::decode(&raid0.encode()).is_ok());
}

#[test]
fn error_raid_disk_count_out_of_range() {
    let r = decode_edited(&raid5_sb(), |sb| sb.raid_disk_count = 0);
    assert_eq!(
        r,
        Err(SuperblockError::RaidDiskCountOutOfRange {
            raid_disk_count: 0,
            max_dev: 128
        })
    );
    let r = decode_edited(&raid5_sb(), |sb| sb.raid_disk_count = 129);
    assert_eq!(
        r,
        Err(SuperblockError::RaidDiskCountOutOfRange {
            raid_disk_count: 129,
            max_dev: 128
        })
    );
}

#[test]
fn error_too_few_members() {
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.raid_disk_count = 1;
        sb.dev_roles = vec![0, 0xffff];
        sb.dev_number = 0;
    });
    assert_eq!(
        r,
        Err(SuperblockError::TooFewMembers {
            level: Level::Raid5,
            raid_disk_count: 1,
            minimum: 2
        })
    );
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.level = Level::Raid6;
        sb.raid_disk_count = 3;
        sb.dev_roles = vec![0, 1, 2];
    });
    assert!(matches!(
        r,
        Err(SuperblockError::TooFewMembers { minimum: 4, .. })
    ));
}

#[test]
fn error_bad_chunk_size() {
    for (level, chunk) in [
        (Level::Raid5, 0u32),
        (Level::Raid5, 4),
        (Level::Raid5, 24),
        (Level::Raid6, 1000),
        (Level::Raid10, 12),
        (Level::Raid0, 0),
        (Level::Raid0, 7),
        (Level::Raid0, 9),
    ] {
        let r = decode_edited(&raid5_sb(), |sb| {
            sb.level = level;
            sb.layout = if level == Level::Raid10 { 0x102 } else { 2 };
            sb.chunk_sectors = chunk;
        });
        assert_eq!(
            r,
            Err(SuperblockError::BadChunkSize {
                level,
                chunk_sectors: chunk
            })
        );
    }
    // raid0 may use a chunk that is not a power of two (12 KiB), raid1 ignores it.
    assert!(
        decode_edited(&raid5_sb(), |sb| {
            sb.level = Level::Raid0;
            sb.chunk_sectors = 24;
        })
        .is_ok()
    );
    assert!(
        decode_edited(&raid5_sb(), |sb| {
            sb.level = Level::Raid1;
            sb.chunk_sectors = 0;
        })
        .is_ok()
    );
}

#[test]
fn error_bad_layout() {
    let cases = [
        (Level::Raid5, 6u32),
        (Level::Raid4, 17),
        (Level::Raid6, 7),
        (Level::Raid6, 21),
        (Level::Raid10, 0x101),    // one copy
        (Level::Raid10, 0x105),    // five copies on four members
        (Level::Raid10, 0x6_0102), // far-set variant 3
        (Level::Raid10, 0x8_0102), // reserved bit 19
        (Level::Raid10, 0),
    ];
    for (level, layout) in cases {
        let r = decode_edited(&raid5_sb(), |sb| {
            sb.level = level;
            sb.layout = layout;
        });
        assert_eq!(
            r,
            Err(SuperblockError::BadLayout { level, layout }),
            "{level} {layout:#x}"
        );
    }
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.level = Level::Raid0;
        sb.features |= FeatureMap::RAID0_LAYOUT;
        sb.layout = 3;
    });
    assert_eq!(
        r,
        Err(SuperblockError::BadLayout {
            level: Level::Raid0,
            layout: 3
        })
    );
    for layout in [0x102u32, 0x201, 0x1_0201, 0x2_0201, 0x4_0201, 0x202] {
        assert!(
            decode_edited(&raid5_sb(), |sb| {
                sb.level = Level::Raid10;
                sb.layout = layout;
            })
            .is_ok(),
            "{layout:#x}"
        );
    }
    for layout in [0u32..=5, 8..=10, 16..=20].into_iter().flatten() {
        assert!(
            decode_edited(&raid5_sb(), |sb| {
                sb.level = Level::Raid6;
                sb.layout = layout;
            })
            .is_ok()
        );
    }
}

#[test]
fn error_conflicting_features() {
    let r = decode_edited(&raid5_sb(), |sb| sb.features |= FeatureMap::RAID0_LAYOUT);
    assert!(matches!(
        r,
        Err(SuperblockError::ConflictingFeatures { .. })
    ));
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::PPL | FeatureMap::BITMAP_OFFSET;
    });
    assert!(matches!(
        r,
        Err(SuperblockError::ConflictingFeatures { .. })
    ));
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::PPL | FeatureMap::MULTIPLE_PPLS;
    });
    assert!(matches!(
        r,
        Err(SuperblockError::ConflictingFeatures { .. })
    ));
}

#[test]
fn error_bad_bad_block_log() {
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::BAD_BLOCKS;
        sb.bblog_offset_sectors = 0;
    });
    assert!(matches!(
        r,
        Err(SuperblockError::BadBadBlockLog {
            offset_sectors: 0,
            ..
        })
    ));
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::BAD_BLOCKS;
        sb.bblog_size_sectors = 9;
    });
    assert!(matches!(
        r,
        Err(SuperblockError::BadBadBlockLog {
            size_sectors: 9,
            ..
        })
    ));
}

#[test]
fn error_bad_reshape() {
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::RESHAPE_ACTIVE;
        sb.new_level = 3;
    });
    assert!(matches!(r, Err(SuperblockError::BadReshape { .. })));
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::RESHAPE_ACTIVE;
        sb.new_level = 5;
        sb.raid_disk_delta = 4;
    });
    assert!(matches!(r, Err(SuperblockError::BadReshape { .. })));
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::RESHAPE_ACTIVE;
        sb.new_level = 5;
        sb.raid_disk_delta = i32::MIN;
    });
    assert!(matches!(r, Err(SuperblockError::BadReshape { .. })));
}

#[test]
fn error_dev_number_out_of_range() {
    let r = decode_edited(&raid5_sb(), |sb| sb.dev_number = 128);
    assert_eq!(
        r,
        Err(SuperblockError::DevNumberOutOfRange {
            dev_number: 128,
            max_dev: 128
        })
    );
}

#[test]
fn error_invalid_role() {
    for raw in [0xff00u16, 0xfffc] {
        let r = decode_edited(&raid5_sb(), |sb| sb.dev_roles[7] = raw);
        assert_eq!(r, Err(SuperblockError::InvalidRole { dev_number: 7, raw }));
    }
}

#[test]
fn error_role_out_of_range() {
    let r = decode_edited(&raid5_sb(), |sb| sb.dev_roles[4] = 4);
    assert_eq!(
        r,
        Err(SuperblockError::RoleOutOfRange {
            dev_number: 4,
            slot: 4,
            slot_count: 4
        })
    );
    // While a shrinking reshape runs, the slots being removed are still valid.
    let sb = decode_edited(&raid5_sb(), |sb| {
        sb.features |= FeatureMap::RESHAPE_ACTIVE;
        sb.new_level = 5;
        sb.raid_disk_count = 3;
        sb.raid_disk_delta = -1;
    })
    .unwrap();
    assert_eq!(sb.slot_count(), 4);
}

#[test]
fn error_journal_without_feature() {
    let r = decode_edited(&raid5_sb(), |sb| sb.dev_roles[5] = DeviceRole::RAW_JOURNAL);
    assert_eq!(
        r,
        Err(SuperblockError::JournalWithoutFeature { dev_number: 5 })
    );
    assert!(
        decode_edited(&raid5_sb(), |sb| {
            sb.dev_roles[5] = DeviceRole::RAW_JOURNAL;
            sb.features |= FeatureMap::JOURNAL;
        })
        .is_ok()
    );
}

#[test]
fn error_duplicate_role() {
    // Two devices on one slot is a replacement in progress (level ≥ 1); three is corrupt.
    assert!(decode_edited(&raid5_sb(), |sb| sb.dev_roles[4] = 2).is_ok());
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.dev_roles[4] = 2;
        sb.dev_roles[5] = 2;
    });
    assert_eq!(r, Err(SuperblockError::DuplicateRole { slot: 2, count: 3 }));
    let r = decode_edited(&raid5_sb(), |sb| {
        sb.level = Level::Raid0;
        sb.layout = 0;
        sb.dev_roles[4] = 2;
    });
    assert_eq!(r, Err(SuperblockError::DuplicateRole { slot: 2, count: 2 }));
}

#[test]
fn every_error_displays_something_specific() {
    let errors = [
        SuperblockError::Truncated {
            needed_bytes: 1,
            available_bytes: 0,
        },
        SuperblockError::BadMagic { found: 0 },
        SuperblockError::UnsupportedMajorVersion { found: 0 },
        SuperblockError::MaxDevTooLarge { max_dev: 0 },
        SuperblockError::ChecksumMismatch {
            stored: 0,
            computed: 1,
        },
        SuperblockError::UnknownFeatures { bits: 1 },
        SuperblockError::NonZeroPadding,
        SuperblockError::WrongSuperOffset { found_sectors: 0 },
        SuperblockError::DataOffsetOverlapsSuperblock {
            data_offset_sectors: 0,
        },
        SuperblockError::NewDataOffsetOverlapsSuperblock {
            data_offset_sectors: 0,
            new_offset_sectors: -1,
        },
        SuperblockError::DataSizeTooSmall {
            data_size_sectors: 0,
        },
        SuperblockError::UsedSizeExceedsDataSize {
            size_sectors: 1,
            data_size_sectors: 0,
        },
        SuperblockError::UnknownLevel { level: 3 },
        SuperblockError::RaidDiskCountOutOfRange {
            raid_disk_count: 0,
            max_dev: 0,
        },
        SuperblockError::TooFewMembers {
            level: Level::Raid6,
            raid_disk_count: 3,
            minimum: 4,
        },
        SuperblockError::BadChunkSize {
            level: Level::Raid5,
            chunk_sectors: 3,
        },
        SuperblockError::BadLayout {
            level: Level::Raid5,
            layout: 9,
        },
        SuperblockError::ConflictingFeatures {
            features: 0,
            reason: "x",
        },
        SuperblockError::BadBadBlockLog {
            offset_sectors: 0,
            size_sectors: 0,
        },
        SuperblockError::BadReshape { reason: "x" },
        SuperblockError::DevNumberOutOfRange {
            dev_number: 0,
            max_dev: 0,
        },
        SuperblockError::InvalidRole {
            dev_number: 0,
            raw: 0xff00,
        },
        SuperblockError::RoleOutOfRange {
            dev_number: 0,
            slot: 0,
            slot_count: 0,
        },
        SuperblockError::JournalWithoutFeature { dev_number: 0 },
        SuperblockError::DuplicateRole { slot: 0, count: 3 },
        SuperblockError::DataBeyondDevice {
            data_offset_sectors: 1,
            data_size_sectors: 2,
            device_sectors: 2,
        },
    ];
    let texts: Vec<_> = errors.iter().map(|e| e.to_string()).collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(t.len() > 10, "{t}");
        assert!(!texts[..i].contains(t), "duplicate message {t}");
    }
}

// ---------------------------------------------------------------- corruption detection

fn assert_every_bit_flip_detected(sb: &Superblock) {
    let block = sb.encode();
    let checked = 256 + 2 * sb.dev_roles.len();
    for byte in 0..checked {
        for bit in 0..8 {
            let mut b = block.clone();
            b[byte] ^= 1 << bit;
            assert!(
                Superblock::decode(&b).is_err(),
                "flip of byte {byte} bit {bit} went unnoticed"
            );
        }
    }
    // Bytes past the role table are not covered by the checksum (nor by md).
    if checked < block.len() {
        let mut b = block.clone();
        b[checked] ^= 1;
        assert_eq!(Superblock::decode(&b).as_ref(), Ok(sb));
    }
}

#[test]
fn single_bit_flips_in_checksummed_range_are_detected() {
    assert_every_bit_flip_detected(&raid5_sb());
    let mut odd = raid5_sb();
    odd.dev_roles.truncate(5);
    assert_every_bit_flip_detected(&odd);
}

// ---------------------------------------------------------------- helpers

#[test]
fn md_time_splits_seconds_and_micros() {
    let t = MdTime::from_parts(1_700_000_000, 999_999).unwrap();
    assert_eq!(t.seconds(), 1_700_000_000);
    assert_eq!(t.micros(), 999_999);
    assert_eq!(t.raw(), 1_700_000_000 | (999_999u64 << 40));
    assert_eq!(MdTime::from_raw(t.raw()), t);
    assert_eq!(MdTime::from_parts(1 << 40, 0), None);
    assert_eq!(MdTime::from_parts(0, 1 << 24), None);
    assert_eq!(MdTime::from_seconds(5).raw(), 5);
}

#[test]
fn uuid_formats_like_mdadm_and_parses_back() {
    let text = format_uuid(&UUID_A).to_string();
    assert_eq!(text, "01234567:89abcdef:fedcba98:76543210");
    assert_eq!(parse_uuid(&text), Some(UUID_A));
    assert_eq!(
        parse_uuid("01234567-89ab-cdef-fedc-ba9876543210"),
        Some(UUID_A)
    );
    assert_eq!(parse_uuid("0123"), None);
    assert_eq!(parse_uuid("01234567:89abcdef:fedcba98:765432100"), None);
    assert_eq!(parse_uuid("g1234567:89abcdef:fedcba98:76543210"), None);
    assert_eq!(raid5_sb().array_uuid_display().to_string(), text);
}

#[test]
fn raid10_layout_names_and_bits() {
    assert_eq!(Raid10Layout::NEAR2.raw(), 0x102);
    assert_eq!(Raid10Layout::far(2).raw(), 0x201);
    assert_eq!(Raid10Layout::offset(2).raw(), 0x1_0201);
    assert_eq!(Raid10Layout::NEAR2.to_string(), "near=2");
    assert_eq!(Raid10Layout::far(3).to_string(), "far=3");
    assert_eq!(Raid10Layout::offset(2).to_string(), "offset=2");
    assert_eq!(
        Raid10Layout::from_raw(0x202).unwrap().to_string(),
        "near=2, far=2"
    );
    assert_eq!(
        Raid10Layout::from_raw(0x101).unwrap().to_string(),
        "NO REDUNDANCY"
    );
    let sets = Raid10Layout::from_raw(0x4_0201).unwrap();
    assert_eq!(sets.far_set_variant, 2);
    assert_eq!(sets.raw(), 0x4_0201);
    assert_eq!(Raid10Layout::from_raw(0x2_0201).unwrap().far_set_variant, 1);
    assert_eq!(Raid10Layout::from_raw(0x6_0201), None);
    assert_eq!(Raid10Layout::from_raw(1 << 19), None);
    for raw in 0u32..(1 << 19) {
        if let Some(l) = Raid10Layout::from_raw(raw) {
            assert_eq!(l.raw(), raw);
        }
    }
}

#[test]
fn raid0_layout_names() {
    assert_eq!(Raid0Layout::from_raw(1), Some(Raid0Layout::Original));
    assert_eq!(Raid0Layout::from_raw(2), Some(Raid0Layout::Alternate));
    assert_eq!(Raid0Layout::from_raw(0), None);
    assert_eq!(Raid0Layout::Original.to_string(), "original");
    assert_eq!(Raid0Layout::Alternate.to_string(), "alternate");
}

#[test]
fn roles_and_events_helpers() {
    let mut sb = raid5_sb();
    assert_eq!(sb.own_role(), DeviceRole::Active(1));
    assert_eq!(sb.role_of(4), DeviceRole::Spare);
    assert_eq!(sb.role_of(5000), DeviceRole::Spare);
    sb.mark_faulty(2).unwrap();
    assert_eq!(sb.role_of(2), DeviceRole::Faulty);
    sb.set_role(200, DeviceRole::Active(2)).unwrap();
    assert_eq!(sb.max_dev(), 201, "table grows like md's");
    assert_eq!(sb.role_of(199), DeviceRole::Spare);
    assert_eq!(
        sb.set_role(0, DeviceRole::Active(4)),
        Err(RoleError::SlotOutOfRange {
            slot: 4,
            slot_count: 4
        })
    );
    assert_eq!(
        sb.set_role(1920, DeviceRole::Spare),
        Err(RoleError::DevNumberTooLarge { dev_number: 1920 })
    );
    sb.bump_events();
    sb.bump_events();
    assert_eq!(sb.events, 2);
    sb.events = u64::MAX;
    sb.bump_events();
    assert_eq!(sb.events, u64::MAX);
    sb.touch(MdTime::from_seconds(42));
    let back = Superblock::decode(&sb.encode()).unwrap();
    assert_eq!(back, sb);
    assert_eq!(back.utime.seconds(), 42);
    assert_eq!(
        DeviceRole::from_raw(0xfeff),
        Some(DeviceRole::Active(0xfeff))
    );
    assert!(!DeviceRole::Active(0xff00).is_storable());
}

#[test]
fn name_is_lossy_up_to_nul() {
    let mut sb = raid5_sb();
    assert_eq!(sb.name(), "host:r5");
    sb.set_name = [b'x'; 32];
    assert_eq!(sb.name().len(), 32, "a full name has no NUL");
    sb.set_name[3] = 0xff;
    sb.set_name[4] = 0;
    assert_eq!(sb.name(), "xxx\u{fffd}");
}

#[test]
fn ppl_and_reshape_accessors() {
    let mut sb = raid5_sb();
    assert_eq!(sb.ppl(), None);
    sb.features |= FeatureMap::PPL;
    sb.bitmap_offset_sectors = ((200u32 << 16) | 8) as i32;
    assert_eq!(sb.ppl(), Some((8, 200)));
    assert_eq!(sb.reshape(), None);
    sb.features |= FeatureMap::RESHAPE_ACTIVE | FeatureMap::NEW_OFFSET;
    sb.new_level = 6;
    sb.new_offset_sectors = -2048;
    sb.reshape_position_sectors = 77;
    let r = sb.reshape().unwrap();
    assert_eq!(r.new_level, Level::Raid6);
    assert_eq!(r.new_offset_sectors, Some(-2048));
    assert_eq!(r.position_sectors, 77);
    assert!(!r.backwards);
}

// ---------------------------------------------------------------- create-time defaults

#[test]
fn data_offset_follows_mdadm() {
    // Small members: 1 MiB without a chunk, 2 MiB with the default 512 KiB chunk.
    assert_eq!(default_data_offset_sectors(MEMBER_SECTORS), 2048);
    assert_eq!(
        default_data_offset_sectors_for_chunk(MEMBER_SECTORS, 1024),
        4096
    );
    assert_eq!(default_data_offset_sectors(1024 * 2048), 4096);
    // 100 GiB: 64 KiB bitmap space + 64 MiB headroom, rounded up to 65 MiB.
    assert_eq!(default_data_offset_sectors(100 * 1024 * 1024 * 2), 133_120);
    // 1 TiB and up: 128 KiB bitmap space + 128 MiB headroom, rounded up to 129 MiB.
    assert_eq!(default_data_offset_sectors(1 << 31), 264_192);
    assert_eq!(
        default_data_offset_sectors_for_chunk(1 << 31, 1024),
        264_192
    );
    assert_eq!(default_data_offset_sectors(0), 2048);
}

#[test]
fn bitmap_space_follows_mdadm() {
    assert_eq!(default_bitmap_space_sectors(127), 0);
    assert_eq!(default_bitmap_space_sectors(128), 8);
    assert_eq!(default_bitmap_space_sectors(8 * 1024 * 2048 + 8), 8);
    assert_eq!(default_bitmap_space_sectors(8 * 1024 * 2048 + 9), 128);
    assert_eq!(default_bitmap_space_sectors(200 * 1024 * 2048 + 127), 128);
    assert_eq!(default_bitmap_space_sectors(200 * 1024 * 2048 + 128), 256);
}

#[test]
fn sizes_and_table_follow_mdadm() {
    assert_eq!(
        usable_data_sectors(MEMBER_SECTORS, 2048),
        MEMBER_SECTORS - 2048
    );
    assert_eq!(usable_data_sectors(100, 2048), 0);
    assert_eq!(default_component_sectors(Level::Raid1, 0, 129_999), 129_920);
    assert_eq!(
        default_component_sectors(Level::Raid5, 1024, 129_999),
        129_024
    );
    assert_eq!(
        default_component_sectors(Level::Linear, 0, 129_999),
        129_999
    );
    assert_eq!(default_max_dev(1), 128);
    assert_eq!(default_max_dev(128), 128);
    assert_eq!(default_max_dev(129), 384);
    assert_eq!(default_max_dev(1920), 1920);
    assert_eq!(bad_block_log_placement(129_920, 2048), Some((16, 8)));
    assert_eq!(bad_block_log_placement(1 << 31, 264_192), Some((264, 8)));
    assert_eq!(bad_block_log_placement(129_920, 30), Some((14, 8)));
    assert_eq!(bad_block_log_placement(129_920, 20), None);
}

#[test]
fn new_for_create_fills_what_mdadm_fills() {
    let sb = raid5_sb();
    assert_eq!(sb.features, FeatureMap::empty());
    assert_eq!(sb.events, 0);
    assert_eq!(sb.ctime, sb.utime);
    assert_eq!(sb.ctime.seconds(), 1_700_000_000);
    assert_eq!(sb.ctime.micros(), 0);
    assert_eq!(
        sb.resync_offset_sectors, 0,
        "a new raid5 needs its initial resync"
    );
    assert_eq!(sb.super_offset_sectors, 8);
    assert_eq!(sb.data_offset_sectors, 4096);
    assert_eq!(sb.data_size_sectors, MEMBER_SECTORS - 4096);
    assert_eq!(sb.size_sectors, (MEMBER_SECTORS - 4096) / 1024 * 1024);
    assert_eq!(sb.max_dev(), 128);
    assert_eq!(sb.dev_number, 1);
    assert_eq!(sb.device_uuid, DEV_UUID);
    assert_eq!(&sb.dev_roles[..5], &[0, 1, 2, 3, 0xffff]);
    assert_eq!((sb.bblog_offset_sectors, sb.bblog_size_sectors), (16, 8));
    assert_eq!(sb.recovery_offset_sectors, 0);
    assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
}

#[test]
fn new_for_create_raid0_gets_layout_feature_and_is_clean() {
    let roles = [DeviceRole::Active(0), DeviceRole::Active(1)];
    let mut spec = CreateSpec {
        level: Level::Raid0,
        layout: Raid0Layout::Original.raw(),
        chunk_sectors: 1024,
        raid_disk_count: 2,
        array_uuid: UUID_A,
        name: b"r0",
        size_sectors: 126_976,
        data_offset_sectors: 4096,
        time_seconds: 1,
        assume_clean: false,
        roles: &roles,
    };
    let sb = Superblock::new_for_create(&spec, 0, MEMBER_SECTORS, DEV_UUID).unwrap();
    assert!(sb.features.contains(FeatureMap::RAID0_LAYOUT));
    assert_eq!(sb.raid0_layout(), Some(Raid0Layout::Original));
    assert!(sb.is_clean());
    spec.layout = 0;
    let sb = Superblock::new_for_create(&spec, 0, MEMBER_SECTORS, DEV_UUID).unwrap();
    assert!(!sb.features.contains(FeatureMap::RAID0_LAYOUT));
    assert_eq!(sb.raid0_layout(), None);
}

#[test]
fn new_for_create_rejects_bad_input() {
    let roles = [DeviceRole::Active(0), DeviceRole::Active(1)];
    let spec = CreateSpec {
        level: Level::Raid1,
        layout: 0,
        chunk_sectors: 0,
        raid_disk_count: 2,
        array_uuid: UUID_A,
        name: b"ok",
        size_sectors: 1000,
        data_offset_sectors: 2048,
        time_seconds: 1,
        assume_clean: true,
        roles: &roles,
    };
    let make = |spec: &CreateSpec<'_>, dev, member| {
        Superblock::new_for_create(spec, dev, member, DEV_UUID)
    };
    assert!(make(&spec, 1, MEMBER_SECTORS).unwrap().is_clean());
    let long = [b'n'; 32];
    assert_eq!(
        make(
            &CreateSpec {
                name: &long,
                ..spec
            },
            0,
            MEMBER_SECTORS
        ),
        Err(CreateError::BadName { length_bytes: 32 })
    );
    assert!(matches!(
        make(
            &CreateSpec {
                name: b"a\0b",
                ..spec
            },
            0,
            MEMBER_SECTORS
        ),
        Err(CreateError::BadName { .. })
    ));
    assert_eq!(
        make(&spec, 2, MEMBER_SECTORS),
        Err(CreateError::DevNumberOutOfRange {
            dev_number: 2,
            device_count: 2
        })
    );
    assert_eq!(
        make(&spec, 0, 2048),
        Err(CreateError::MemberTooSmall {
            member_sectors: 2048,
            data_offset_sectors: 2048
        })
    );
    let faulty = [DeviceRole::Active(0), DeviceRole::Faulty];
    assert!(matches!(
        make(
            &CreateSpec {
                roles: &faulty,
                ..spec
            },
            0,
            MEMBER_SECTORS
        ),
        Err(CreateError::UnsupportedRole {
            dev_number: 1,
            role: DeviceRole::Faulty
        })
    ));
    let many = vec![DeviceRole::Spare; 1921];
    assert!(matches!(
        make(
            &CreateSpec {
                roles: &many,
                ..spec
            },
            0,
            MEMBER_SECTORS
        ),
        Err(CreateError::TooManyDevices { device_count: 1921 })
    ));
    assert!(matches!(
        make(
            &CreateSpec {
                size_sectors: MEMBER_SECTORS,
                ..spec
            },
            0,
            MEMBER_SECTORS
        ),
        Err(CreateError::Invalid(
            SuperblockError::UsedSizeExceedsDataSize { .. }
        ))
    ));
    assert!(matches!(
        make(
            &CreateSpec {
                level: Level::Raid5,
                ..spec
            },
            0,
            MEMBER_SECTORS
        ),
        Err(CreateError::Invalid(SuperblockError::BadChunkSize { .. }))
    ));
    assert!(!format!("{}", CreateError::Invalid(SuperblockError::NonZeroPadding)).is_empty());
}

// ---------------------------------------------------------------- properties

const LEVELS: [Level; 7] = [
    Level::Linear,
    Level::Raid0,
    Level::Raid1,
    Level::Raid4,
    Level::Raid5,
    Level::Raid6,
    Level::Raid10,
];

/// Any valid superblock: every field drawn from its whole valid range.
fn arb_superblock() -> impl Strategy<Value = Superblock> {
    let geometry = (
        0usize..LEVELS.len(),
        1u32..=64,
        0u32..=16,
        any::<u32>(),
        any::<u32>(),
    );
    let numbers = (
        any::<[u64; 8]>(),
        any::<[u32; 4]>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
    );
    let table = (
        proptest::collection::vec(0u8..4, 0..=200),
        any::<u16>(),
        any::<u32>(),
    );
    (geometry, numbers, table).prop_map(|(geo, nums, tbl)| {
        let (level_index, raid_disks, chunk_shift, layout_seed, feature_seed) = geo;
        let (u64s, u32s, device_uuid, set_name) = nums;
        let (choices, dev_seed, misc) = tbl;
        let level = LEVELS[level_index];
        let raid_disk_count = raid_disks.max(level.min_raid_disks());
        let chunk_sectors = match level {
            Level::Linear | Level::Raid1 => u32s[0],
            Level::Raid0 => 8 + 2 * (u32s[0] % 100_000),
            _ => 8 << (chunk_shift % 17),
        };
        let mut features = FeatureMap::from_bits_retain(
            feature_seed
                & (FeatureMap::BITMAP_OFFSET
                    | FeatureMap::RECOVERY_OFFSET
                    | FeatureMap::REPLACEMENT
                    | FeatureMap::RECOVERY_BITMAP
                    | FeatureMap::CLUSTERED
                    | FeatureMap::ORION
                    | FeatureMap::BAD_BLOCKS
                    | FeatureMap::RESHAPE_ACTIVE
                    | FeatureMap::RESHAPE_BACKWARDS
                    | FeatureMap::NEW_OFFSET
                    | FeatureMap::JOURNAL)
                    .bits(),
        );
        let layout = match level {
            Level::Linear | Level::Raid1 => layout_seed,
            Level::Raid0 => {
                if layout_seed & 1 == 1 {
                    features |= FeatureMap::RAID0_LAYOUT;
                    1 + (layout_seed >> 1) % 2
                } else {
                    layout_seed >> 1
                }
            }
            Level::Raid4 | Level::Raid5 => layout_seed % 6,
            Level::Raid6 => {
                [0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20][layout_seed as usize % 14]
            }
            Level::Raid10 => {
                let copies = 2 + layout_seed % (raid_disk_count - 1);
                let near = (layout_seed >> 8) % 2 == 0;
                let variant = ((layout_seed >> 9) % 3) as u8;
                let l = if near {
                    Raid10Layout::near(copies as u8)
                } else {
                    Raid10Layout {
                        far_set_variant: variant,
                        ..Raid10Layout::offset(copies as u8)
                    }
                };
                l.raw()
            }
        };
        // Role table: at least raid_disks entries, each slot claimed at most once.
        let max_dev = (choices.len() as u32).max(raid_disk_count);
        let mut next_slot = 0u32;
        let mut dev_roles: Vec<u16> = (0..max_dev as usize)
            .map(|i| match choices.get(i).copied().unwrap_or(2) {
                0 => DeviceRole::RAW_SPARE,
                1 => DeviceRole::RAW_FAULTY,
                _ if next_slot < raid_disk_count => {
                    next_slot += 1;
                    (next_slot - 1) as u16
                }
                _ => DeviceRole::RAW_SPARE,
            })
            .collect();
        let dev_number = dev_seed as u32 % max_dev;
        if features.contains(FeatureMap::JOURNAL) {
            dev_roles[dev_number as usize] = DeviceRole::RAW_JOURNAL;
        }
        let data_offset_sectors = 16 + u64s[0] % (1 << 40);
        let data_size_sectors = 10 + u64s[1] % (1 << 50);
        let size_sectors = if level.to_md() >= 1 {
            u64s[2] % (data_size_sectors + 1)
        } else {
            u64s[2]
        };
        let (new_level, raid_disk_delta, new_offset_sectors) =
            if features.contains(FeatureMap::RESHAPE_ACTIVE) {
                let to = LEVELS[(misc % 7) as usize].to_md();
                // Grow only, so no slot is beyond raid_disks.
                let delta = (misc >> 3) % raid_disk_count;
                (to, delta as i32, (u32s[1] % 1_000_000) as i32)
            } else {
                (misc as i32, u32s[1] as i32, u32s[2] as i32)
            };
        let (bblog_offset_sectors, bblog_size_sectors) =
            if features.contains(FeatureMap::BAD_BLOCKS) {
                (1 + (u32s[3] % 1000) as i32, 1 + (u32s[3] >> 16) as u16 % 8)
            } else {
                (u32s[3] as i32, (u32s[3] >> 7) as u16)
            };
        Superblock {
            features,
            array_uuid: device_uuid.map(|b| b ^ 0xa5),
            set_name,
            ctime: MdTime::from_raw(u64s[3]),
            level,
            layout,
            size_sectors,
            chunk_sectors,
            raid_disk_count,
            bitmap_offset_sectors: u32s[2] as i32,
            new_level,
            reshape_position_sectors: u64s[4],
            raid_disk_delta,
            new_layout: u32s[3],
            new_chunk_sectors: u32s[0].rotate_left(7),
            new_offset_sectors,
            data_offset_sectors,
            data_size_sectors,
            super_offset_sectors: 8,
            recovery_offset_sectors: u64s[5],
            dev_number,
            corrected_read_count: u32s[1].rotate_left(3),
            device_uuid,
            dev_flags: (misc >> 8) as u8,
            bblog_shift: (misc >> 16) as u8,
            bblog_size_sectors,
            bblog_offset_sectors,
            utime: MdTime::from_raw(u64s[6]),
            events: u64s[7],
            resync_offset_sectors: u64s[5].rotate_left(11),
            dev_roles,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(sb in arb_superblock()) {
        prop_assert_eq!(sb.validate(), Ok(()));
        let block = sb.encode();
        prop_assert_eq!(block.len(), SUPERBLOCK_BYTES);
        let back = Superblock::decode(&block);
        prop_assert_eq!(back.as_ref(), Ok(&sb));
        prop_assert_eq!(back.unwrap().encode(), block);
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4200)) {
        if let Ok(sb) = Superblock::decode(&bytes) {
            prop_assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
        }
    }

    /// Random edits of a valid block, resealed so they get past the checksum and exercise
    /// the semantic checks: decode never panics and whatever it accepts round-trips.
    #[test]
    fn prop_resealed_edits_never_panic(
        sb in arb_superblock(),
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
    ) {
        let mut block = sb.encode();
        for (at, value) in edits {
            block[at] = value;
        }
        if checksum(&block).is_some() {
            reseal(&mut block);
        }
        if let Ok(decoded) = Superblock::decode(&block) {
            prop_assert_eq!(decoded.validate(), Ok(()));
            prop_assert_eq!(Superblock::decode(&decoded.encode()), Ok(decoded));
        }
    }
}

// ---------------------------------------------------------------- refusals name the field

/// Every refusal of a decoded field names that field (as md_p.h spells it) and the value,
/// so the user sees which one is wrong, not only that something is.
#[test]
fn refusals_name_the_field_and_value() {
    let text = |r: Result<Superblock, SuperblockError>| r.unwrap_err().to_string();
    let sb = raid5_sb();
    let mut b = block_of(&sb);
    set_u32(&mut b, 8, 1 << 14 | 1 << 20);
    reseal(&mut b);
    let t = text(Superblock::decode(&b));
    assert!(
        t.contains("feature_map") && t.contains("bits 14, 20"),
        "{t}"
    );
    for (level, words) in [
        (-4i32, "level -4 (multipath)"),
        (-5, "level -5 (faulty)"),
        (7, "level 7 is not an md RAID level"),
    ] {
        let mut b = block_of(&sb);
        set_u32(&mut b, 72, level as u32);
        reseal(&mut b);
        let t = text(Superblock::decode(&b));
        assert!(t.contains(words), "{t}");
    }
    type Edit = fn(&mut Superblock);
    let cases: [(&str, Edit); 11] = [
        ("layout 6 is not a raid5 layout", |sb| sb.layout = 6),
        ("layout 7 is not a raid6 layout", |sb| {
            sb.level = Level::Raid6;
            sb.layout = 7;
        }),
        ("layout 0x105 is not a raid10 layout", |sb| {
            sb.level = Level::Raid10;
            sb.layout = 0x105;
        }),
        ("layout 3 is not a raid0 zone layout", |sb| {
            sb.level = Level::Raid0;
            sb.features |= FeatureMap::RAID0_LAYOUT;
            sb.layout = 3;
        }),
        ("chunksize 0 sectors", |sb| sb.chunk_sectors = 0),
        ("chunksize 24 sectors", |sb| sb.chunk_sectors = 24),
        ("raid_disks 0", |sb| sb.raid_disk_count = 0),
        ("raid_disks 129", |sb| sb.raid_disk_count = 129),
        ("raid_disks 1 is too few for raid5", |sb| {
            sb.raid_disk_count = 1;
            sb.dev_roles = vec![0, 0xffff];
            sb.dev_number = 0;
        }),
        (
            "dev_number 128 is outside the role table (max_dev 128)",
            |sb| sb.dev_number = 128,
        ),
        ("exceeds this member's data_size", |sb| {
            sb.size_sectors = sb.data_size_sectors + 1
        }),
    ];
    for (words, edit) in cases {
        let t = text(decode_edited(&sb, edit));
        assert!(t.contains(words), "{words}: {t}");
    }
    let mut b = block_of(&sb);
    b[216] ^= 1;
    let t = text(Superblock::decode(&b));
    assert!(t.contains("sb_csum"), "{t}");
}

#[test]
fn data_area_must_lie_on_the_device() {
    let sb = raid5_sb();
    let end = sb.data_offset_sectors + sb.data_size_sectors;
    assert_eq!(sb.check_device_size(end), Ok(()));
    assert_eq!(sb.check_device_size(MEMBER_SECTORS), Ok(()));
    let e = sb.check_device_size(end - 1).unwrap_err();
    assert_eq!(
        e,
        SuperblockError::DataBeyondDevice {
            data_offset_sectors: sb.data_offset_sectors,
            data_size_sectors: sb.data_size_sectors,
            device_sectors: end - 1,
        }
    );
    let t = e.to_string();
    assert!(t.contains("data_offset") && t.contains("data_size"), "{t}");
    // A sum that overflows is beyond any device, not a wrap to a small number.
    let mut huge = sb.clone();
    huge.data_size_sectors = u64::MAX - 1;
    assert!(huge.check_device_size(u64::MAX).is_err());
}

#[test]
fn md_level_names() {
    assert_eq!(md_level_name(-4), Some("multipath"));
    assert_eq!(md_level_name(-5), Some("faulty"));
    assert_eq!(md_level_name(10), Some("raid10"));
    assert_eq!(md_level_name(2), None);
    for level in [-1, 0, 1, 4, 5, 6, 10] {
        let l = Level::from_md(level).unwrap();
        assert_eq!(md_level_name(level), Some(l.name()));
    }
}
