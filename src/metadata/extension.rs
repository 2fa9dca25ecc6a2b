//! The Orion extension record: what a user set (policies, stripe cache size), where a scrub
//! was, and the label of a shared-pool spare, kept in the metadata space between the md
//! superblock and the data. Pure codec and placement: no I/O.
//!
//! Placement. On a v1.2 member md keeps, from `super_offset`: the 4 KiB superblock, the
//! write-intent bitmap space mdadm reserves at `super_offset + 8` (4 KiB, 64 KiB above
//! 8 GiB, 128 KiB above 200 GiB: [`default_bitmap_space_sectors`]), then the 4 KiB bad-block
//! log right after it (or just before the data when that does not fit). The record takes the
//! first 4 KiB-aligned block after both, e.g. sector 32 of a member below 8 GiB, which is
//! inside the 36 KiB after the superblock that the kernel never lets a reshape move data
//! into (`super_1_allow_new_offset`). A member whose superblock says md keeps a bitmap, a
//! partial parity log or a journal there gets no record: their size is not in the
//! superblock, and md's data must never be overwritten for a convenience of ours. Neither
//! does a member where the block would reach the data (`data_offset`, or a reshape's new
//! offset). Linux never reads this block; `mdadm --examine` does not see it.
//!
//! Format (little-endian), one 4 KiB block, the record in its first `length` bytes:
//! ```text
//!  0  8  magic "ORIONEXT"
//!  8  2  version (1)
//! 10  2  kind: 1 array record, 2 pool label
//! 12  4  length: bytes of header and entries (48 ..= 4096)
//! 16  4  CRC-32 (IEEE) of bytes [0, length) with this field zero
//! 20  4  zero
//! 24 16  array UUID (a pool label: zero)
//! 40  8  the `events` of the superblock update that wrote it
//! 48     entries: tag u16, value length u16, value
//! ```
//! Unknown tags are skipped (a newer writer may add entries); a known tag with the wrong
//! length makes the record invalid.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::{FeatureMap, Superblock, default_bitmap_space_sectors};

pub const EXTENSION_MAGIC: [u8; 8] = *b"ORIONEXT";
pub const EXTENSION_VERSION: u16 = 1;
/// One 4 KiB block.
pub const EXTENSION_BYTES: usize = 4096;
pub const EXTENSION_SECTORS: u64 = EXTENSION_BYTES as u64 / 512;
const HEADER_BYTES: usize = 48;
/// Where a pool spare's label is: it has no md superblock to place it from, so the place a
/// record takes on a member below 8 GiB (superblock at 8, bitmap space 16..24, bad-block
/// log 24..32).
pub const POOL_LABEL_SECTOR: u64 = 32;

const KIND_ARRAY: u16 = 1;
const KIND_POOL: u16 = 2;

const TAG_REBUILD_PRIORITY: u16 = 1;
const TAG_REBUILD_RATE: u16 = 2;
const TAG_SPARE_POLICY: u16 = 3;
const TAG_READ_POLICY: u16 = 4;
const TAG_READ_ERROR_LIMIT: u16 = 5;
const TAG_READ_ERROR_WINDOW: u16 = 6;
const TAG_IO_TIMEOUT: u16 = 7;
const TAG_CHECKPOINT_REGIONS: u16 = 8;
const TAG_STRIPE_CACHE: u16 = 9;
const TAG_SCRUB: u16 = 16;
const SCRUB_VALUE_BYTES: usize = 1 + 4 * 8;
const TAG_SCRUB_REGIONS: u16 = 17;
/// stripe, array sector, member sector, sectors (u64 each), wrong slot (u16), block kind,
/// syndrome slot.
const REGION_BYTES: usize = 4 * 8 + 2 + 1 + 1;
/// The most bad regions a record keeps (a scrub report lists 64).
pub const STORED_REGIONS_MAX: usize = 64;
const NONE_U64: u64 = u64::MAX;
const NONE_SLOT: u16 = u16::MAX;
const NONE_SYNDROME: u8 = u8::MAX;

/// The settings a record carries, as stored numbers (the array layer maps them onto its
/// policy types). `None`: not recorded, the default applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredSettings {
    /// 0 low, 1 normal, 2 high.
    pub rebuild_priority: Option<u8>,
    pub rebuild_rate_bytes_per_s: Option<u64>,
    /// 0 dedicated, 1 shared, 2 none.
    pub spare_policy: Option<u8>,
    /// 0 round-robin, 1 adaptive.
    pub read_policy: Option<u8>,
    pub read_error_limit: Option<u32>,
    pub read_error_window_ns: Option<u64>,
    pub io_timeout_ns: Option<u64>,
    pub checkpoint_regions: Option<u32>,
    pub stripe_cache_bytes: Option<u64>,
}

/// Where an interrupted check or repair resumes, and what it had found before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubCheckpoint {
    pub repair: bool,
    /// Array sectors below this were scrubbed.
    pub cursor_sectors: u64,
    pub mismatched_sectors: u64,
    pub repaired_sectors: u64,
    pub read_errors_corrected: u64,
}

/// A bad region an interrupted scrub had listed, so the resumed one reports it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBadRegion {
    pub stripe: Option<u64>,
    pub array_sector: u64,
    pub member_sector: u64,
    pub sectors: u64,
    pub wrong: Option<StoredWrongMember>,
}

/// The member a RAID6 scrub named as holding the wrong block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredWrongMember {
    pub slot: u16,
    /// 0 data, 1 P, 2 Q.
    pub block: u8,
    pub syndrome_slot: Option<u8>,
}

/// The bad regions listed before a scrub's checkpoint, and how many more it had found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRegions {
    /// At most [`STORED_REGIONS_MAX`], in array order.
    pub listed: Vec<StoredBadRegion>,
    pub omitted: u64,
}

/// What an extension block holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionRecord {
    /// A member's copy of its array's Orion state.
    Array {
        array_uuid: [u8; 16],
        events: u64,
        settings: StoredSettings,
        scrub: Option<ScrubCheckpoint>,
        /// With a checkpoint: what the scrub had listed before it.
        scrub_regions: StoredRegions,
    },
    /// A device given to the shared spare pool (it has no md superblock).
    PoolLabel,
}

/// Why a block is not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionError {
    /// No record here (never written, or wiped).
    NoMagic,
    UnsupportedVersion(u16),
    UnknownKind(u16),
    BadLength(u32),
    BadChecksum {
        stored: u32,
        computed: u32,
    },
    /// An entry runs past the record, or a known entry has the wrong size.
    BadEntry {
        tag: u16,
    },
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionError::NoMagic => f.write_str("no Orion extension record"),
            ExtensionError::UnsupportedVersion(v) => {
                write!(f, "extension record version {v} is not supported")
            }
            ExtensionError::UnknownKind(k) => write!(f, "extension record of unknown kind {k}"),
            ExtensionError::BadLength(l) => write!(f, "extension record length {l} is invalid"),
            ExtensionError::BadChecksum { stored, computed } => write!(
                f,
                "extension record checksum {stored:#010x} does not match {computed:#010x}"
            ),
            ExtensionError::BadEntry { tag } => write!(f, "extension record entry {tag} is bad"),
        }
    }
}

/// The first sector of the extension block of a member with this superblock, or `None`
/// when there is no place that is certainly free (see the module comment).
pub fn extension_sector(sb: &Superblock) -> Option<u64> {
    let md_owned = FeatureMap::BITMAP_OFFSET
        | FeatureMap::PPL
        | FeatureMap::MULTIPLE_PPLS
        | FeatureMap::JOURNAL;
    if sb.features.intersects(md_owned) {
        return None;
    }
    let superblock = sb.super_offset_sectors;
    let mut end = superblock
        .checked_add(8)?
        .checked_add(default_bitmap_space_sectors(sb.size_sectors))?
        // The bad-block log mdadm puts right after the bitmap space, recorded or not.
        .checked_add(8)?;
    if sb.bblog_size_sectors > 0 {
        let bblog = superblock.checked_add_signed(sb.bblog_offset_sectors as i64)?;
        end = end.max(bblog.checked_add(sb.bblog_size_sectors as u64)?);
    }
    let start = end.checked_next_multiple_of(EXTENSION_SECTORS)?;
    let mut data = sb.data_offset_sectors;
    if sb.features.contains(FeatureMap::NEW_OFFSET) {
        data = data.min(data.checked_add_signed(sb.new_offset_sectors as i64)?);
    }
    // Metadata after the data (v1.0) leaves no room before it.
    (superblock < data && start.checked_add(EXTENSION_SECTORS)? <= data).then_some(start)
}

fn put_entry(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

impl ExtensionRecord {
    /// The whole 4 KiB block.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_BYTES];
        out[..8].copy_from_slice(&EXTENSION_MAGIC);
        out[8..10].copy_from_slice(&EXTENSION_VERSION.to_le_bytes());
        match self {
            ExtensionRecord::PoolLabel => {
                out[10..12].copy_from_slice(&KIND_POOL.to_le_bytes());
            }
            ExtensionRecord::Array {
                array_uuid,
                events,
                settings: s,
                scrub,
                scrub_regions,
            } => {
                out[10..12].copy_from_slice(&KIND_ARRAY.to_le_bytes());
                out[24..40].copy_from_slice(array_uuid);
                out[40..48].copy_from_slice(&events.to_le_bytes());
                let mut e = |tag, v: &[u8]| put_entry(&mut out, tag, v);
                if let Some(v) = s.rebuild_priority {
                    e(TAG_REBUILD_PRIORITY, &[v]);
                }
                if let Some(v) = s.rebuild_rate_bytes_per_s {
                    e(TAG_REBUILD_RATE, &v.to_le_bytes());
                }
                if let Some(v) = s.spare_policy {
                    e(TAG_SPARE_POLICY, &[v]);
                }
                if let Some(v) = s.read_policy {
                    e(TAG_READ_POLICY, &[v]);
                }
                if let Some(v) = s.read_error_limit {
                    e(TAG_READ_ERROR_LIMIT, &v.to_le_bytes());
                }
                if let Some(v) = s.read_error_window_ns {
                    e(TAG_READ_ERROR_WINDOW, &v.to_le_bytes());
                }
                if let Some(v) = s.io_timeout_ns {
                    e(TAG_IO_TIMEOUT, &v.to_le_bytes());
                }
                if let Some(v) = s.checkpoint_regions {
                    e(TAG_CHECKPOINT_REGIONS, &v.to_le_bytes());
                }
                if let Some(v) = s.stripe_cache_bytes {
                    e(TAG_STRIPE_CACHE, &v.to_le_bytes());
                }
                if let Some(c) = scrub {
                    let mut v = Vec::with_capacity(SCRUB_VALUE_BYTES);
                    v.push(c.repair as u8);
                    for n in [
                        c.cursor_sectors,
                        c.mismatched_sectors,
                        c.repaired_sectors,
                        c.read_errors_corrected,
                    ] {
                        v.extend_from_slice(&n.to_le_bytes());
                    }
                    e(TAG_SCRUB, &v);
                    if !scrub_regions.listed.is_empty() || scrub_regions.omitted > 0 {
                        let listed = &scrub_regions.listed
                            [..scrub_regions.listed.len().min(STORED_REGIONS_MAX)];
                        let mut v = Vec::with_capacity(8 + listed.len() * REGION_BYTES);
                        v.extend_from_slice(&scrub_regions.omitted.to_le_bytes());
                        for r in listed {
                            for n in [
                                r.stripe.unwrap_or(NONE_U64),
                                r.array_sector,
                                r.member_sector,
                                r.sectors,
                            ] {
                                v.extend_from_slice(&n.to_le_bytes());
                            }
                            let (slot, block, syndrome) = match r.wrong {
                                Some(w) => {
                                    (w.slot, w.block, w.syndrome_slot.unwrap_or(NONE_SYNDROME))
                                }
                                None => (NONE_SLOT, 0, NONE_SYNDROME),
                            };
                            v.extend_from_slice(&slot.to_le_bytes());
                            v.push(block);
                            v.push(syndrome);
                        }
                        e(TAG_SCRUB_REGIONS, &v);
                    }
                }
            }
        }
        let length = out.len();
        assert!(length <= EXTENSION_BYTES, "the entries fit one block");
        out[12..16].copy_from_slice(&(length as u32).to_le_bytes());
        let crc = crc32fast::hash(&out);
        out[16..20].copy_from_slice(&crc.to_le_bytes());
        out.resize(EXTENSION_BYTES, 0);
        out
    }

    /// Decodes a block read from a member: anything but a whole, checksummed record of a
    /// known version and kind is an error, never a panic.
    pub fn decode(block: &[u8]) -> Result<ExtensionRecord, ExtensionError> {
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |b: &[u8], o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        if block.len() < HEADER_BYTES || block[..8] != EXTENSION_MAGIC {
            return Err(ExtensionError::NoMagic);
        }
        let version = u16_at(block, 8);
        if version != EXTENSION_VERSION {
            return Err(ExtensionError::UnsupportedVersion(version));
        }
        let length_word = u32_at(block, 12);
        let length = length_word as usize;
        if !(HEADER_BYTES..=EXTENSION_BYTES.min(block.len())).contains(&length) {
            return Err(ExtensionError::BadLength(length_word));
        }
        let stored = u32_at(block, 16);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&block[..16]);
        hasher.update(&[0u8; 4]);
        hasher.update(&block[20..length]);
        let computed = hasher.finalize();
        if stored != computed {
            return Err(ExtensionError::BadChecksum { stored, computed });
        }
        match u16_at(block, 10) {
            KIND_POOL => return Ok(ExtensionRecord::PoolLabel),
            KIND_ARRAY => {}
            kind => return Err(ExtensionError::UnknownKind(kind)),
        }
        let mut array_uuid = [0u8; 16];
        array_uuid.copy_from_slice(&block[24..40]);
        let events = u64_at(block, 40);
        let mut s = StoredSettings::default();
        let mut scrub = None;
        let mut scrub_regions = StoredRegions::default();
        let mut at = HEADER_BYTES;
        while at < length {
            if length - at < 4 {
                return Err(ExtensionError::BadEntry { tag: 0 });
            }
            let tag = u16_at(block, at);
            let len = u16_at(block, at + 2) as usize;
            let bad = ExtensionError::BadEntry { tag };
            if len > length - at - 4 {
                return Err(bad);
            }
            let value = &block[at + 4..at + 4 + len];
            let want = |n: usize| if len == n { Ok(()) } else { Err(bad) };
            match tag {
                TAG_REBUILD_PRIORITY => {
                    want(1)?;
                    s.rebuild_priority = Some(value[0]);
                }
                TAG_SPARE_POLICY => {
                    want(1)?;
                    s.spare_policy = Some(value[0]);
                }
                TAG_READ_POLICY => {
                    want(1)?;
                    s.read_policy = Some(value[0]);
                }
                TAG_READ_ERROR_LIMIT => {
                    want(4)?;
                    s.read_error_limit = Some(u32_at(value, 0));
                }
                TAG_CHECKPOINT_REGIONS => {
                    want(4)?;
                    s.checkpoint_regions = Some(u32_at(value, 0));
                }
                TAG_REBUILD_RATE => {
                    want(8)?;
                    s.rebuild_rate_bytes_per_s = Some(u64_at(value, 0));
                }
                TAG_READ_ERROR_WINDOW => {
                    want(8)?;
                    s.read_error_window_ns = Some(u64_at(value, 0));
                }
                TAG_IO_TIMEOUT => {
                    want(8)?;
                    s.io_timeout_ns = Some(u64_at(value, 0));
                }
                TAG_STRIPE_CACHE => {
                    want(8)?;
                    s.stripe_cache_bytes = Some(u64_at(value, 0));
                }
                TAG_SCRUB => {
                    want(SCRUB_VALUE_BYTES)?;
                    scrub = Some(ScrubCheckpoint {
                        repair: value[0] != 0,
                        cursor_sectors: u64_at(value, 1),
                        mismatched_sectors: u64_at(value, 9),
                        repaired_sectors: u64_at(value, 17),
                        read_errors_corrected: u64_at(value, 25),
                    });
                }
                TAG_SCRUB_REGIONS => {
                    let count = len.checked_sub(8).ok_or(bad)? / REGION_BYTES;
                    want(8 + count * REGION_BYTES)?;
                    if count > STORED_REGIONS_MAX {
                        return Err(bad);
                    }
                    scrub_regions.omitted = u64_at(value, 0);
                    for i in 0..count {
                        let r = &value[8 + i * REGION_BYTES..8 + (i + 1) * REGION_BYTES];
                        let stripe = u64_at(r, 0);
                        let slot = u16_at(r, 32);
                        let wrong = if slot == NONE_SLOT {
                            None
                        } else {
                            if r[34] > 2 {
                                return Err(bad);
                            }
                            Some(StoredWrongMember {
                                slot,
                                block: r[34],
                                syndrome_slot: (r[35] != NONE_SYNDROME).then_some(r[35]),
                            })
                        };
                        scrub_regions.listed.push(StoredBadRegion {
                            stripe: (stripe != NONE_U64).then_some(stripe),
                            array_sector: u64_at(r, 8),
                            member_sector: u64_at(r, 16),
                            sectors: u64_at(r, 24),
                            wrong,
                        });
                    }
                }
                // A newer writer's entry: skipped.
                _ => {}
            }
            at += 4 + len;
        }
        if scrub.is_none() {
            // Regions belong to a checkpoint; alone they mean nothing.
            scrub_regions = StoredRegions::default();
        }
        Ok(ExtensionRecord::Array {
            array_uuid,
            events,
            settings: s,
            scrub,
            scrub_regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{CreateSpec, DeviceRole, Level, bad_block_log_placement};
    use crate::rng::SplitMix64;

    fn sample() -> ExtensionRecord {
        ExtensionRecord::Array {
            array_uuid: [7; 16],
            events: 42,
            settings: StoredSettings {
                rebuild_priority: Some(2),
                rebuild_rate_bytes_per_s: Some(50_000_000),
                spare_policy: Some(1),
                read_policy: Some(0),
                read_error_limit: Some(5),
                read_error_window_ns: Some(9_000_000_000),
                io_timeout_ns: Some(0),
                checkpoint_regions: Some(3),
                stripe_cache_bytes: Some(64 << 20),
            },
            scrub: Some(ScrubCheckpoint {
                repair: false,
                cursor_sectors: 123_456,
                mismatched_sectors: 16,
                repaired_sectors: 0,
                read_errors_corrected: 1,
            }),
            scrub_regions: StoredRegions {
                listed: vec![
                    StoredBadRegion {
                        stripe: Some(3),
                        array_sector: 384,
                        member_sector: 128,
                        sectors: 8,
                        wrong: Some(StoredWrongMember {
                            slot: 4,
                            block: 0,
                            syndrome_slot: Some(2),
                        }),
                    },
                    StoredBadRegion {
                        stripe: None,
                        array_sector: 9000,
                        member_sector: 9000,
                        sectors: 16,
                        wrong: None,
                    },
                ],
                omitted: 5,
            },
        }
    }

    fn member_sb(member_sectors: u64, data_offset_sectors: u64) -> Superblock {
        let roles = [DeviceRole::Active(0), DeviceRole::Active(1)];
        let size_sectors = member_sectors - data_offset_sectors;
        let spec = CreateSpec {
            level: Level::Raid1,
            layout: 0,
            chunk_sectors: 0,
            raid_disk_count: 2,
            array_uuid: [1; 16],
            name: b"t",
            size_sectors,
            data_offset_sectors,
            time_seconds: 0,
            assume_clean: true,
            roles: &roles,
        };
        Superblock::new_for_create(&spec, 0, member_sectors, [2; 16]).expect("valid spec")
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let block = r.encode();
        assert_eq!(block.len(), EXTENSION_BYTES);
        assert_eq!(ExtensionRecord::decode(&block), Ok(r));
        let pool = ExtensionRecord::PoolLabel;
        assert_eq!(ExtensionRecord::decode(&pool.encode()), Ok(pool));
        let empty = ExtensionRecord::Array {
            array_uuid: [0; 16],
            events: 0,
            settings: StoredSettings::default(),
            scrub: None,
            scrub_regions: StoredRegions::default(),
        };
        assert_eq!(ExtensionRecord::decode(&empty.encode()), Ok(empty));
        // A full list fits the block.
        let mut full = sample();
        if let ExtensionRecord::Array { scrub_regions, .. } = &mut full {
            let first = scrub_regions.listed[0];
            scrub_regions.listed = (0..STORED_REGIONS_MAX as u64)
                .map(|i| StoredBadRegion {
                    array_sector: i * 1024,
                    ..first
                })
                .collect();
        }
        assert_eq!(ExtensionRecord::decode(&full.encode()), Ok(full));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let block = sample().encode();
        let length = u32::from_le_bytes([block[12], block[13], block[14], block[15]]) as usize;
        for bit in 0..length * 8 {
            let mut b = block.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                ExtensionRecord::decode(&b).is_err(),
                "bit {bit} flipped was accepted"
            );
        }
        // Past the record: not covered, not read.
        let mut b = block.clone();
        b[length + 10] = 0xff;
        assert!(ExtensionRecord::decode(&b).is_ok());
    }

    #[test]
    fn unknown_entries_are_skipped_and_bad_ones_refused() {
        let mut block = sample().encode();
        let length = u32::from_le_bytes([block[12], block[13], block[14], block[15]]) as usize;
        // Append an unknown tag 999 with 3 bytes and re-seal.
        let extra = [0xe7u8, 0x03, 3, 0, 1, 2, 3];
        block[length..length + extra.len()].copy_from_slice(&extra);
        let reseal = |block: &mut Vec<u8>, length: usize| {
            block[12..16].copy_from_slice(&(length as u32).to_le_bytes());
            block[16..20].fill(0);
            let crc = crc32fast::hash(&block[..length]);
            block[16..20].copy_from_slice(&crc.to_le_bytes());
        };
        reseal(&mut block, length + extra.len());
        assert_eq!(ExtensionRecord::decode(&block), Ok(sample()));
        // A known tag with the wrong size.
        let mut block = sample().encode();
        let bad = [1u8, 0, 2, 0, 1, 1];
        block[length..length + bad.len()].copy_from_slice(&bad);
        reseal(&mut block, length + bad.len());
        assert_eq!(
            ExtensionRecord::decode(&block),
            Err(ExtensionError::BadEntry { tag: 1 })
        );
        // An entry running past the record.
        let mut block = sample().encode();
        let long = [0x10u8, 0, 0xff, 0];
        block[length..length + long.len()].copy_from_slice(&long);
        reseal(&mut block, length + long.len());
        assert!(ExtensionRecord::decode(&block).is_err());
    }

    /// Random blocks, random-length truncations and random corruptions of a valid record:
    /// the decoder answers, never panics.
    #[test]
    fn random_bytes_never_panic() {
        let seed = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0e47_0001_u64);
        let result = std::panic::catch_unwind(|| {
            let mut rng = SplitMix64::new(seed);
            let valid = sample().encode();
            for _ in 0..20_000 {
                let len = rng.below(EXTENSION_BYTES as u64 + 64) as usize;
                let mut b: Vec<u8> = match rng.below(3) {
                    0 => (0..len).map(|_| rng.next_u64() as u8).collect(),
                    _ => valid[..len.min(valid.len())].to_vec(),
                };
                // Keep the magic and version often, so the deeper paths are reached.
                if b.len() >= HEADER_BYTES && rng.below(2) == 0 {
                    b[..8].copy_from_slice(&EXTENSION_MAGIC);
                    b[8..10].copy_from_slice(&EXTENSION_VERSION.to_le_bytes());
                }
                for _ in 0..rng.below(4) {
                    if !b.is_empty() {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] = rng.next_u64() as u8;
                    }
                }
                // Reseal some, so entries are parsed behind a good checksum.
                if b.len() >= HEADER_BYTES && rng.below(2) == 0 {
                    let length = rng.range_inclusive(HEADER_BYTES as u64, b.len() as u64) as usize;
                    b[12..16].copy_from_slice(&(length as u32).to_le_bytes());
                    b[16..20].fill(0);
                    let crc = crc32fast::hash(&b[..length.min(EXTENSION_BYTES)]);
                    b[16..20].copy_from_slice(&crc.to_le_bytes());
                }
                let _ = ExtensionRecord::decode(&b);
            }
        });
        assert!(result.is_ok(), "decoder panicked; replay with SEED={seed}");
    }

    #[test]
    fn placement_avoids_md_structures() {
        // Below 8 GiB: bitmap space 16..24, bad-block log 24..32.
        let sb = member_sb(2 << 21, 2048);
        assert_eq!((sb.bblog_offset_sectors, sb.bblog_size_sectors), (16, 8));
        assert_eq!(extension_sector(&sb), Some(POOL_LABEL_SECTOR));
        // Above 8 GiB: 64 KiB bitmap space (16..144), log 144..152.
        let sb = member_sb(16 << 21, 16384);
        assert_eq!(extension_sector(&sb), Some(152));
        // Above 200 GiB: 128 KiB bitmap space (16..272), log 272..280.
        let sb = member_sb(300 << 21, 262_144);
        assert_eq!(
            bad_block_log_placement(sb.size_sectors, sb.data_offset_sectors),
            Some((264, 8))
        );
        assert_eq!(extension_sector(&sb), Some(280));
        for sb in [member_sb(2 << 21, 2048), member_sb(300 << 21, 262_144)] {
            let at = extension_sector(&sb).expect("placed");
            let bblog_end = sb.super_offset_sectors
                + sb.bblog_offset_sectors as u64
                + sb.bblog_size_sectors as u64;
            assert!(at >= bblog_end && at + EXTENSION_SECTORS <= sb.data_offset_sectors);
        }
    }

    #[test]
    fn no_place_when_md_uses_the_space_or_it_is_too_small() {
        let mut sb = member_sb(2 << 21, 2048);
        sb.features |= FeatureMap::BITMAP_OFFSET;
        assert_eq!(extension_sector(&sb), None);
        let mut sb = member_sb(2 << 21, 2048);
        sb.data_offset_sectors = 36;
        assert_eq!(extension_sector(&sb), None);
        let mut sb = member_sb(2 << 21, 2048);
        sb.features |= FeatureMap::NEW_OFFSET;
        sb.new_offset_sectors = -2016;
        assert_eq!(
            extension_sector(&sb),
            None,
            "a reshape moving data down to 32"
        );
        // md 1.0: superblock after the data.
        let mut sb = member_sb(2 << 21, 2048);
        sb.super_offset_sectors = (2 << 21) - 16;
        sb.data_offset_sectors = 0;
        assert_eq!(extension_sector(&sb), None);
    }
}
