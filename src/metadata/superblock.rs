//! The md v1.2 superblock: typed fields, decode with full validation, encode with checksum.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::{
    MAX_DEV_LIMIT, MD_SB_MAGIC, RESYNC_COMPLETE, SUPER_OFFSET_SECTORS_V1_2, SUPERBLOCK_BYTES,
    SUPERBLOCK_FIXED_BYTES, SUPERBLOCK_SECTORS,
};

// Byte offsets inside `struct mdp_superblock_1` (md_p.h). All integers are little-endian.
const OFF_MAGIC: usize = 0;
const OFF_MAJOR_VERSION: usize = 4;
const OFF_FEATURE_MAP: usize = 8;
const OFF_PAD0: usize = 12;
const OFF_SET_UUID: usize = 16;
const OFF_SET_NAME: usize = 32;
const OFF_CTIME: usize = 64;
const OFF_LEVEL: usize = 72;
const OFF_LAYOUT: usize = 76;
const OFF_SIZE: usize = 80;
const OFF_CHUNKSIZE: usize = 88;
const OFF_RAID_DISKS: usize = 92;
const OFF_BITMAP_OFFSET: usize = 96;
const OFF_NEW_LEVEL: usize = 100;
const OFF_RESHAPE_POSITION: usize = 104;
const OFF_DELTA_DISKS: usize = 112;
const OFF_NEW_LAYOUT: usize = 116;
const OFF_NEW_CHUNK: usize = 120;
const OFF_NEW_OFFSET: usize = 124;
const OFF_DATA_OFFSET: usize = 128;
const OFF_DATA_SIZE: usize = 136;
const OFF_SUPER_OFFSET: usize = 144;
const OFF_RECOVERY_OFFSET: usize = 152;
const OFF_DEV_NUMBER: usize = 160;
const OFF_CNT_CORRECTED_READ: usize = 164;
const OFF_DEVICE_UUID: usize = 168;
const OFF_DEVFLAGS: usize = 184;
const OFF_BBLOG_SHIFT: usize = 185;
const OFF_BBLOG_SIZE: usize = 186;
const OFF_BBLOG_OFFSET: usize = 188;
const OFF_UTIME: usize = 192;
const OFF_EVENTS: usize = 200;
const OFF_RESYNC_OFFSET: usize = 208;
const OFF_SB_CSUM: usize = 216;
const OFF_MAX_DEV: usize = 220;
const OFF_PAD3: usize = 224;
const OFF_DEV_ROLES: usize = SUPERBLOCK_FIXED_BYTES;

/// The kernel refuses a superblock whose `data_size` is below this many sectors.
const MIN_DATA_SIZE_SECTORS: u64 = 10;
/// The kernel reads the bad-block log into one page: at most this many sectors.
const MAX_BBLOG_SECTORS: u16 = 8;
/// mdadm's smallest chunk: 4 KiB.
const MIN_CHUNK_SECTORS: u32 = 8;

bitflags::bitflags! {
    /// `feature_map`: the `MD_FEATURE_*` bits of md_p.h, plus Orion's own bit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FeatureMap: u32 {
        /// `bitmap_offset` is meaningful: an internal write-intent bitmap exists.
        const BITMAP_OFFSET = 1;
        /// `recovery_offset` is meaningful: this member is part-way through a rebuild.
        const RECOVERY_OFFSET = 1 << 1;
        /// A reshape is in progress: `reshape_position`, `new_*`, `delta_disks` are meaningful.
        const RESHAPE_ACTIVE = 1 << 2;
        /// The bad-block log is not empty.
        const BAD_BLOCKS = 1 << 3;
        /// This member is replacing the active member with the same role.
        const REPLACEMENT = 1 << 4;
        /// The reshape runs from the end of the array towards the start.
        const RESHAPE_BACKWARDS = 1 << 5;
        /// `new_offset` is meaningful (a reshape moves `data_offset`).
        const NEW_OFFSET = 1 << 6;
        /// The recovery in progress is guided by the bitmap.
        const RECOVERY_BITMAP = 1 << 7;
        /// md-cluster array.
        const CLUSTERED = 1 << 8;
        /// The array has a raid5 write journal device.
        const JOURNAL = 1 << 9;
        /// raid5 partial parity log (the `bitmap_offset` word holds `ppl.offset`/`ppl.size`).
        const PPL = 1 << 10;
        /// Multiple partial parity logs.
        const MULTIPLE_PPLS = 1 << 11;
        /// raid0 `layout` is meaningful (1 original, 2 alternate multi-zone layout).
        const RAID0_LAYOUT = 1 << 12;
        /// Orion-only features are in use (see [`super::ORION_FEATURE`]). Linux defines bits
        /// 0..=12 only, and refuses any superblock with an unknown bit, so an array using
        /// Orion's extensions is refused by Linux instead of being misread.
        const ORION = super::ORION_FEATURE;
    }
}

impl FeatureMap {
    /// Every bit Linux defines (`MD_FEATURE_ALL` of current kernels).
    pub const LINUX_ALL: FeatureMap = FeatureMap::from_bits_retain(0x1fff);
    /// Every bit this codec accepts: Linux's bits and [`FeatureMap::ORION`].
    pub const KNOWN: FeatureMap = FeatureMap::from_bits_retain(0x1fff | super::ORION_FEATURE);
}

/// An md timestamp: low 40 bits seconds since the Unix epoch, high 24 bits microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MdTime(u64);

impl MdTime {
    /// `MD_SUPERBLOCK_1_TIME_SEC_MASK`.
    pub const SECONDS_MASK: u64 = (1 << 40) - 1;
    /// Largest microseconds value the 24-bit field can hold.
    pub const MICROS_MAX: u32 = (1 << 24) - 1;

    /// The time exactly as stored on disk.
    pub const fn from_raw(raw: u64) -> MdTime {
        MdTime(raw)
    }

    /// Whole seconds, microseconds zero (what mdadm writes). Seconds beyond 40 bits (year
    /// 36812) wrap, as they would on disk.
    pub const fn from_seconds(seconds: u64) -> MdTime {
        MdTime(seconds & Self::SECONDS_MASK)
    }

    /// Seconds and microseconds; `None` if either does not fit its field.
    pub const fn from_parts(seconds: u64, micros: u32) -> Option<MdTime> {
        if seconds > Self::SECONDS_MASK || micros > Self::MICROS_MAX {
            return None;
        }
        Some(MdTime(seconds | ((micros as u64) << 40)))
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn seconds(self) -> u64 {
        self.0 & Self::SECONDS_MASK
    }

    pub const fn micros(self) -> u32 {
        (self.0 >> 40) as u32
    }
}

/// md's RAID personalities this driver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `-1`: members concatenated.
    Linear,
    Raid0,
    Raid1,
    Raid4,
    Raid5,
    Raid6,
    Raid10,
}

impl Level {
    /// The level from md's `level` field; `None` for multipath (-4), faulty (-5) and anything
    /// else this driver does not implement.
    pub const fn from_md(level: i32) -> Option<Level> {
        match level {
            -1 => Some(Level::Linear),
            0 => Some(Level::Raid0),
            1 => Some(Level::Raid1),
            4 => Some(Level::Raid4),
            5 => Some(Level::Raid5),
            6 => Some(Level::Raid6),
            10 => Some(Level::Raid10),
            _ => None,
        }
    }

    /// The value stored in md's `level` field.
    pub const fn to_md(self) -> i32 {
        match self {
            Level::Linear => -1,
            Level::Raid0 => 0,
            Level::Raid1 => 1,
            Level::Raid4 => 4,
            Level::Raid5 => 5,
            Level::Raid6 => 6,
            Level::Raid10 => 10,
        }
    }

    /// Whether data is striped in chunks (so `chunk_sectors` must be sane).
    pub const fn is_striped(self) -> bool {
        matches!(
            self,
            Level::Raid0 | Level::Raid4 | Level::Raid5 | Level::Raid6 | Level::Raid10
        )
    }

    /// Fewest `raid_disks` md (kernel or mdadm) accepts for this level.
    pub const fn min_raid_disks(self) -> u32 {
        match self {
            Level::Linear | Level::Raid0 | Level::Raid1 => 1,
            Level::Raid4 | Level::Raid5 | Level::Raid10 => 2,
            Level::Raid6 => 4,
        }
    }

    /// mdadm's name for the level ("linear", "raid0", ...).
    pub const fn name(self) -> &'static str {
        match self {
            Level::Linear => "linear",
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Raid4 => "raid4",
            Level::Raid5 => "raid5",
            Level::Raid6 => "raid6",
            Level::Raid10 => "raid10",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The role of one device in `dev_roles[]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceRole {
    /// Holds data for this slot (0-based, below [`DeviceRole::ROLE_MAX`]).
    Active(u16),
    /// `0xffff`: a spare (also what md assumes for a device beyond `max_dev`).
    Spare,
    /// `0xfffe`: failed, never to be used again without being re-added.
    Faulty,
    /// `0xfffd`: the raid5 write journal device.
    Journal,
}

impl DeviceRole {
    pub const RAW_SPARE: u16 = 0xffff;
    pub const RAW_FAULTY: u16 = 0xfffe;
    pub const RAW_JOURNAL: u16 = 0xfffd;
    /// `MD_DISK_ROLE_MAX`: active slots are below this; `0xff00..=0xfffc` are undefined.
    pub const ROLE_MAX: u16 = 0xff00;

    /// The role for a raw table entry; `None` for the undefined values `0xff00..=0xfffc`.
    pub const fn from_raw(raw: u16) -> Option<DeviceRole> {
        match raw {
            Self::RAW_SPARE => Some(DeviceRole::Spare),
            Self::RAW_FAULTY => Some(DeviceRole::Faulty),
            Self::RAW_JOURNAL => Some(DeviceRole::Journal),
            slot if slot < Self::ROLE_MAX => Some(DeviceRole::Active(slot)),
            _ => None,
        }
    }

    /// The raw table entry. An `Active` slot at or above [`DeviceRole::ROLE_MAX`] cannot be
    /// stored; callers check with [`DeviceRole::is_storable`].
    pub const fn raw(self) -> u16 {
        match self {
            DeviceRole::Active(slot) => slot,
            DeviceRole::Spare => Self::RAW_SPARE,
            DeviceRole::Faulty => Self::RAW_FAULTY,
            DeviceRole::Journal => Self::RAW_JOURNAL,
        }
    }

    /// Whether [`DeviceRole::raw`] round-trips through [`DeviceRole::from_raw`].
    pub const fn is_storable(self) -> bool {
        match self {
            DeviceRole::Active(slot) => slot < Self::ROLE_MAX,
            _ => true,
        }
    }
}

impl fmt::Display for DeviceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRole::Active(slot) => write!(f, "active device {slot}"),
            DeviceRole::Spare => f.write_str("spare"),
            DeviceRole::Faulty => f.write_str("faulty"),
            DeviceRole::Journal => f.write_str("journal"),
        }
    }
}

/// raid0 multi-zone layouts (meaningful only with [`FeatureMap::RAID0_LAYOUT`]).
///
/// With members of unequal size raid0 has several zones; Linux 3.14 changed how chunks map
/// in the later zones, and 5.4 made the choice explicit. `Original` is the pre-3.14 mapping
/// and mdadm's default; `Alternate` is the 3.14–5.3 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Raid0Layout {
    Original,
    Alternate,
}

impl Raid0Layout {
    pub const fn from_raw(layout: u32) -> Option<Raid0Layout> {
        match layout {
            1 => Some(Raid0Layout::Original),
            2 => Some(Raid0Layout::Alternate),
            _ => None,
        }
    }

    pub const fn raw(self) -> u32 {
        match self {
            Raid0Layout::Original => 1,
            Raid0Layout::Alternate => 2,
        }
    }

    /// mdadm's name, as `--examine` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Raid0Layout::Original => "original",
            Raid0Layout::Alternate => "alternate",
        }
    }
}

impl fmt::Display for Raid0Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The raid10 `layout` word, decoded as `drivers/md/raid10.c` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Raid10Layout {
    /// `layout & 0xff`: copies of a chunk placed on adjacent members.
    pub near_copies: u8,
    /// `(layout >> 8) & 0xff`: copies placed in later parts of the members.
    pub far_copies: u8,
    /// Bit 16 (`0x10000`): the far copies are offset by one chunk, not by a far section.
    pub offset: bool,
    /// `layout >> 17`: 0 the classic far layout over all members; 1 (`0x20000`) the first,
    /// buggy "far sets" layout (sets of `raid_disks / far_copies` members); 2 (`0x40000`) the
    /// fixed "far sets" layout (sets of `near * far` members). Other values are invalid.
    pub far_set_variant: u8,
}

impl Raid10Layout {
    /// mdadm's default, `n2`.
    pub const NEAR2: Raid10Layout = Raid10Layout::near(2);

    pub const fn near(copies: u8) -> Raid10Layout {
        Raid10Layout {
            near_copies: copies,
            far_copies: 1,
            offset: false,
            far_set_variant: 0,
        }
    }

    pub const fn far(copies: u8) -> Raid10Layout {
        Raid10Layout {
            near_copies: 1,
            far_copies: copies,
            offset: false,
            far_set_variant: 0,
        }
    }

    pub const fn offset(copies: u8) -> Raid10Layout {
        Raid10Layout {
            near_copies: 1,
            far_copies: copies,
            offset: true,
            far_set_variant: 0,
        }
    }

    /// Decode a layout word; `None` if reserved bits (19 and up) are set or the far-set
    /// variant is 3, which the kernel refuses.
    pub const fn from_raw(layout: u32) -> Option<Raid10Layout> {
        if layout >> 19 != 0 {
            return None;
        }
        let far_set_variant = (layout >> 17) as u8;
        if far_set_variant > 2 {
            return None;
        }
        Some(Raid10Layout {
            near_copies: (layout & 0xff) as u8,
            far_copies: ((layout >> 8) & 0xff) as u8,
            offset: layout & 0x1_0000 != 0,
            far_set_variant,
        })
    }

    pub const fn raw(self) -> u32 {
        (self.near_copies as u32)
            | ((self.far_copies as u32) << 8)
            | if self.offset { 0x1_0000 } else { 0 }
            | ((self.far_set_variant as u32 & 3) << 17)
    }

    /// Copies of every chunk: `near * far`.
    pub const fn copies(self) -> u32 {
        self.near_copies as u32 * self.far_copies as u32
    }
}

impl fmt::Display for Raid10Layout {
    /// The way `mdadm --examine` prints it: `near=2`, `far=2`, `offset=2`, `near=2, far=3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.near_copies != 1 {
            write!(f, "near={}", self.near_copies)?;
            sep = ", ";
        }
        if self.far_copies != 1 {
            let kind = if self.offset { "offset" } else { "far" };
            write!(f, "{sep}{kind}={}", self.far_copies)?;
        }
        if self.copies() == 1 {
            f.write_str("NO REDUNDANCY")?;
        }
        Ok(())
    }
}

/// A reshape in progress, as recorded when [`FeatureMap::RESHAPE_ACTIVE`] is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reshape {
    /// Next address in array space to reshape, in sectors.
    pub position_sectors: u64,
    pub new_level: Level,
    pub new_layout: u32,
    pub new_chunk_sectors: u32,
    /// New member count minus old member count.
    pub raid_disk_delta: i32,
    /// Signed change of `data_offset` in the new geometry, if [`FeatureMap::NEW_OFFSET`].
    pub new_offset_sectors: Option<i32>,
    /// The reshape walks from the end of the array to the start.
    pub backwards: bool,
}

/// Why a superblock is not trusted. Every decode failure is one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperblockError {
    /// Fewer bytes than the fixed part plus the role table need.
    Truncated {
        needed_bytes: usize,
        available_bytes: usize,
    },
    /// Not an md superblock.
    BadMagic { found: u32 },
    /// Not a version-1 superblock (0.90 has another layout).
    UnsupportedMajorVersion { found: u32 },
    /// `max_dev` larger than fits in 4 KiB.
    MaxDevTooLarge { max_dev: u32 },
    /// `sb_csum` does not match `calc_sb_1_csum`.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// A feature bit neither Linux nor Orion defines.
    UnknownFeatures { bits: u32 },
    /// `pad0` or `pad3` is not zero: probably a feature from a newer md.
    NonZeroPadding,
    /// `super_offset` is not 8 sectors, so this is not a v1.2 superblock at 4 KiB.
    WrongSuperOffset { found_sectors: u64 },
    /// Data would start inside the superblock.
    DataOffsetOverlapsSuperblock { data_offset_sectors: u64 },
    /// The reshape's new data offset would start inside the superblock (or below zero).
    NewDataOffsetOverlapsSuperblock {
        data_offset_sectors: u64,
        new_offset_sectors: i32,
    },
    /// `data_size` below the kernel's minimum.
    DataSizeTooSmall { data_size_sectors: u64 },
    /// The array uses more of each member (`size`) than this member has (`data_size`).
    UsedSizeExceedsDataSize {
        size_sectors: u64,
        data_size_sectors: u64,
    },
    /// `data_offset + data_size` ends past the device the superblock is on (the kernel's
    /// `super_1_load` refuses it). Only [`Superblock::check_device_size`] gives it: decode
    /// does not know the device.
    DataBeyondDevice {
        data_offset_sectors: u64,
        data_size_sectors: u64,
        device_sectors: u64,
    },
    /// A level this driver does not implement (multipath, faulty, or garbage).
    UnknownLevel { level: i32 },
    /// `raid_disks` is zero or larger than `max_dev`.
    RaidDiskCountOutOfRange { raid_disk_count: u32, max_dev: u32 },
    /// Fewer members than the level allows.
    TooFewMembers {
        level: Level,
        raid_disk_count: u32,
        minimum: u32,
    },
    /// A chunk size the level cannot use.
    BadChunkSize { level: Level, chunk_sectors: u32 },
    /// A layout the level does not define.
    BadLayout { level: Level, layout: u32 },
    /// Feature bits that contradict each other or the level.
    ConflictingFeatures { features: u32, reason: &'static str },
    /// The bad-block log is flagged non-empty but has no place or is larger than a page.
    BadBadBlockLog {
        offset_sectors: i32,
        size_sectors: u16,
    },
    /// The reshape record is inconsistent.
    BadReshape { reason: &'static str },
    /// This device's `dev_number` has no entry in the role table.
    DevNumberOutOfRange { dev_number: u32, max_dev: u32 },
    /// A role table entry holds one of the undefined values `0xff00..=0xfffc`.
    InvalidRole { dev_number: u32, raw: u16 },
    /// A role table entry names a slot the array does not have.
    RoleOutOfRange {
        dev_number: u32,
        slot: u16,
        slot_count: u32,
    },
    /// A journal role without [`FeatureMap::JOURNAL`].
    JournalWithoutFeature { dev_number: u32 },
    /// More devices claim one slot than md allows (two only with a replacement, level ≥ 1).
    DuplicateRole { slot: u16, count: u32 },
}

impl fmt::Display for SuperblockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SuperblockError as E;
        match self {
            E::Truncated {
                needed_bytes,
                available_bytes,
            } => write!(
                f,
                "superblock truncated: needs {needed_bytes} bytes, only {available_bytes} available"
            ),
            E::BadMagic { found } => {
                write!(
                    f,
                    "no md superblock: magic is {found:#010x}, expected {MD_SB_MAGIC:#010x}"
                )
            }
            E::UnsupportedMajorVersion { found } => {
                write!(
                    f,
                    "md superblock major version {found} is not supported (only 1)"
                )
            }
            E::MaxDevTooLarge { max_dev } => {
                write!(f, "max_dev {max_dev} exceeds the limit of {MAX_DEV_LIMIT}")
            }
            E::ChecksumMismatch { stored, computed } => write!(
                f,
                "sb_csum {stored:#010x} is wrong: the superblock's checksum is {computed:#010x}"
            ),
            E::UnknownFeatures { bits } => {
                f.write_str("feature_map has unknown bit")?;
                if bits.count_ones() > 1 {
                    f.write_str("s")?;
                }
                let mut sep = " ";
                for bit in (0..32).filter(|b| bits & (1 << b) != 0) {
                    write!(f, "{sep}{bit}")?;
                    sep = ", ";
                }
                write!(f, " ({bits:#x}); an md feature this driver does not know")
            }
            E::NonZeroPadding => f.write_str("superblock padding is not zero (unknown extension)"),
            E::WrongSuperOffset { found_sectors } => write!(
                f,
                "super_offset is {found_sectors} sectors, expected {SUPER_OFFSET_SECTORS_V1_2} \
                 for version 1.2"
            ),
            E::DataOffsetOverlapsSuperblock {
                data_offset_sectors,
            } => write!(
                f,
                "data_offset {data_offset_sectors} sectors overlaps the superblock"
            ),
            E::NewDataOffsetOverlapsSuperblock {
                data_offset_sectors,
                new_offset_sectors,
            } => {
                write!(
                    f,
                    "reshape new data offset {data_offset_sectors}{new_offset_sectors:+} sectors \
                     overlaps the superblock"
                )
            }
            E::DataSizeTooSmall { data_size_sectors } => write!(
                f,
                "data_size {data_size_sectors} sectors is below the minimum of \
                 {MIN_DATA_SIZE_SECTORS}"
            ),
            E::UsedSizeExceedsDataSize {
                size_sectors,
                data_size_sectors,
            } => write!(
                f,
                "size {size_sectors} sectors (used on each member) exceeds this member's \
                 data_size of {data_size_sectors} sectors"
            ),
            E::DataBeyondDevice {
                data_offset_sectors,
                data_size_sectors,
                device_sectors,
            } => write!(
                f,
                "data_offset {data_offset_sectors} + data_size {data_size_sectors} sectors \
                 end past the end of the device ({device_sectors} sectors)"
            ),
            E::UnknownLevel { level } => {
                match md_level_name(*level) {
                    Some(name) => write!(f, "level {level} ({name}) is not supported")?,
                    None => write!(f, "level {level} is not an md RAID level")?,
                }
                f.write_str(" (linear, raid0, raid1, raid4, raid5, raid6 and raid10 are known)")
            }
            E::RaidDiskCountOutOfRange {
                raid_disk_count,
                max_dev,
            } => write!(
                f,
                "raid_disks {raid_disk_count} is out of range 1..={max_dev} (max_dev)"
            ),
            E::TooFewMembers {
                level,
                raid_disk_count,
                minimum,
            } => write!(
                f,
                "raid_disks {raid_disk_count} is too few for {level} (at least {minimum})"
            ),
            E::BadChunkSize {
                level,
                chunk_sectors,
            } => {
                let needs = match level {
                    Level::Raid0 => "a whole number of KiB, at least 8 sectors",
                    _ => "a power of two of at least 8 sectors",
                };
                write!(
                    f,
                    "chunksize {chunk_sectors} sectors is not valid for {level} (needs {needs})"
                )
            }
            E::BadLayout { level, layout } => match level {
                Level::Raid0 => write!(
                    f,
                    "layout {layout} is not a raid0 zone layout (1 original, 2 alternate)"
                ),
                Level::Raid4 | Level::Raid5 => write!(
                    f,
                    "layout {layout} is not a {level} layout md defines (0 to 5)"
                ),
                Level::Raid6 => write!(
                    f,
                    "layout {layout} is not a raid6 layout md defines (0 to 5, 8 to 10, \
                     16 to 20)"
                ),
                Level::Raid10 => write!(
                    f,
                    "layout {layout:#x} is not a raid10 layout md accepts (near × far copies \
                     from 2 up to raid_disks, far-set variant at most 2, bits 19 and up clear)"
                ),
                Level::Linear | Level::Raid1 => {
                    write!(f, "layout {layout:#x} is not valid for {level}")
                }
            },
            E::ConflictingFeatures { features, reason } => {
                write!(f, "feature map {features:#x} is inconsistent: {reason}")
            }
            E::BadBadBlockLog {
                offset_sectors,
                size_sectors,
            } => write!(
                f,
                "bad-block log flagged non-empty but placed at offset {offset_sectors} with \
                 {size_sectors} sectors"
            ),
            E::BadReshape { reason } => write!(f, "reshape record is inconsistent: {reason}"),
            E::DevNumberOutOfRange {
                dev_number,
                max_dev,
            } => write!(
                f,
                "dev_number {dev_number} is outside the role table (max_dev {max_dev})"
            ),
            E::InvalidRole { dev_number, raw } => {
                write!(f, "device {dev_number} has undefined role {raw:#06x}")
            }
            E::RoleOutOfRange {
                dev_number,
                slot,
                slot_count,
            } => write!(
                f,
                "device {dev_number} claims slot {slot} but the array has {slot_count} slots"
            ),
            E::JournalWithoutFeature { dev_number } => write!(
                f,
                "device {dev_number} is a journal but the journal feature is not set"
            ),
            E::DuplicateRole { slot, count } => {
                write!(f, "{count} devices claim slot {slot}")
            }
        }
    }
}

impl core::error::Error for SuperblockError {}

/// md's name for a `level` value, for the levels the kernel has (or had) a personality for.
pub const fn md_level_name(level: i32) -> Option<&'static str> {
    match level {
        -5 => Some("faulty"),
        -4 => Some("multipath"),
        -1 => Some("linear"),
        0 => Some("raid0"),
        1 => Some("raid1"),
        4 => Some("raid4"),
        5 => Some("raid5"),
        6 => Some("raid6"),
        10 => Some("raid10"),
        _ => None,
    }
}

/// Why a role could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleError {
    /// `dev_number` beyond the largest role table md allows.
    DevNumberTooLarge { dev_number: u32 },
    /// An active slot outside the array.
    SlotOutOfRange { slot: u16, slot_count: u32 },
}

impl fmt::Display for RoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleError::DevNumberTooLarge { dev_number } => write!(
                f,
                "dev_number {dev_number} does not fit a role table of at most {MAX_DEV_LIMIT}"
            ),
            RoleError::SlotOutOfRange { slot, slot_count } => {
                write!(f, "slot {slot} is outside the array's {slot_count} slots")
            }
        }
    }
}

impl core::error::Error for RoleError {}

/// One md v1.2 superblock, every field of `struct mdp_superblock_1` typed.
///
/// Not stored: `magic` and `major_version` (constants), `pad0`/`pad3` (always zero),
/// `sb_csum` (computed by [`Superblock::encode`], verified by [`Superblock::decode`]) and
/// `max_dev` (the length of [`Superblock::dev_roles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `feature_map`.
    pub features: FeatureMap,
    /// `set_uuid`: identifies the array; equal on every member.
    pub array_uuid: [u8; 16],
    /// `set_name`: NUL-padded, not necessarily NUL-terminated; see [`Superblock::name`].
    pub set_name: [u8; 32],
    /// `ctime`: array creation time.
    pub ctime: MdTime,
    /// `level`.
    pub level: Level,
    /// `layout`: level-specific (raid5/6 algorithm, raid10 near/far/offset, raid0 zones).
    pub layout: u32,
    /// `size`: sectors of each member the array uses (for levels ≥ 1).
    pub size_sectors: u64,
    /// `chunksize`, in sectors (the rounding for linear; unused by raid1).
    pub chunk_sectors: u32,
    /// `raid_disks`: slots in the array (the new count while a reshape runs).
    pub raid_disk_count: u32,
    /// `bitmap_offset`: signed sectors from the superblock to the bitmap. With a PPL feature
    /// the same word holds `ppl.offset` (low 16 bits) and `ppl.size`; see
    /// [`Superblock::ppl`].
    pub bitmap_offset_sectors: i32,
    /// `new_level`, raw: only meaningful while a reshape is active ([`Superblock::reshape`]).
    pub new_level: i32,
    /// `reshape_position`, in array sectors.
    pub reshape_position_sectors: u64,
    /// `delta_disks`: new member count minus old.
    pub raid_disk_delta: i32,
    /// `new_layout`.
    pub new_layout: u32,
    /// `new_chunk`, in sectors.
    pub new_chunk_sectors: u32,
    /// `new_offset`: signed change of `data_offset` in the new geometry.
    pub new_offset_sectors: i32,
    /// `data_offset`: where data starts on this member, in sectors.
    pub data_offset_sectors: u64,
    /// `data_size`: sectors of this member available for data.
    pub data_size_sectors: u64,
    /// `super_offset`: where this superblock is, in sectors (8 for v1.2).
    pub super_offset_sectors: u64,
    /// `recovery_offset` (or `journal_tail` on a journal device): sectors from
    /// `data_offset` already rebuilt, honoured with [`FeatureMap::RECOVERY_OFFSET`].
    pub recovery_offset_sectors: u64,
    /// `dev_number`: this device's permanent index into `dev_roles`.
    pub dev_number: u32,
    /// `cnt_corrected_read`: read errors fixed by rewriting.
    pub corrected_read_count: u32,
    /// `device_uuid`: identifies this member.
    pub device_uuid: [u8; 16],
    /// `devflags`: [`Superblock::DEV_FLAG_WRITE_MOSTLY`], [`Superblock::DEV_FLAG_FAILFAST`].
    pub dev_flags: u8,
    /// `bblog_shift`: bad-block entries are in units of `1 << shift` sectors.
    pub bblog_shift: u8,
    /// `bblog_size`: sectors reserved for the bad-block log.
    pub bblog_size_sectors: u16,
    /// `bblog_offset`: signed sectors from the superblock to the bad-block log.
    pub bblog_offset_sectors: i32,
    /// `utime`: last superblock update.
    pub utime: MdTime,
    /// `events`: incremented on every update; orders superblocks of one array.
    pub events: u64,
    /// `resync_offset`: array data before this sector is known in sync;
    /// [`RESYNC_COMPLETE`] when clean.
    pub resync_offset_sectors: u64,
    /// `dev_roles[max_dev]`, raw: see [`DeviceRole::from_raw`].
    pub dev_roles: Vec<u16>,
}

fn le16(b: &[u8; SUPERBLOCK_FIXED_BYTES], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8; SUPERBLOCK_FIXED_BYTES], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8; SUPERBLOCK_FIXED_BYTES], off: usize) -> u64 {
    let lo = le32(b, off) as u64;
    let hi = le32(b, off + 4) as u64;
    lo | (hi << 32)
}

fn bytes16(b: &[u8; SUPERBLOCK_FIXED_BYTES], off: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&b[off..off + 16]);
    out
}

fn put(block: &mut [u8], off: usize, bytes: &[u8]) {
    block[off..off + bytes.len()].copy_from_slice(bytes);
}

/// `calc_sb_1_csum` over the first `len` bytes: the sum of little-endian 32-bit words with
/// `sb_csum` counted as zero, a trailing 16-bit half word added when `max_dev` is odd, and the
/// carry above 32 bits folded in once.
fn checksum_over(block: &[u8], len: usize) -> u32 {
    let bytes = &block[..len];
    let mut sum: u64 = 0;
    let mut words = bytes.chunks_exact(4);
    for (index, w) in words.by_ref().enumerate() {
        if index * 4 == OFF_SB_CSUM {
            continue;
        }
        sum += u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let rest = words.remainder();
    if rest.len() >= 2 {
        sum += u16::from_le_bytes([rest[0], rest[1]]) as u64;
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// The checksum md would store for this raw superblock (`calc_sb_1_csum`), or `None` if the
/// bytes are too short for the fixed part and the `max_dev` entries, or `max_dev` is beyond
/// [`MAX_DEV_LIMIT`].
pub fn checksum(block: &[u8]) -> Option<u32> {
    let fixed: &[u8; SUPERBLOCK_FIXED_BYTES] =
        block.get(..SUPERBLOCK_FIXED_BYTES)?.try_into().ok()?;
    let max_dev = le32(fixed, OFF_MAX_DEV);
    if max_dev > MAX_DEV_LIMIT {
        return None;
    }
    let len = SUPERBLOCK_FIXED_BYTES + 2 * max_dev as usize;
    if block.len() < len {
        return None;
    }
    Some(checksum_over(block, len))
}

/// Formats an md UUID the way mdadm prints it: `xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`.
pub struct UuidDisplay<'a>(pub &'a [u8; 16]);

impl fmt::Display for UuidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i != 0 && i % 4 == 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// `format_uuid(&u).to_string()` gives mdadm's `xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`.
pub fn format_uuid(uuid: &[u8; 16]) -> UuidDisplay<'_> {
    UuidDisplay(uuid)
}

/// Parses 32 hex digits, ignoring the separators mdadm accepts (`:`, `.`, `-`, space).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for c in text.chars() {
        if matches!(c, ':' | '.' | '-' | ' ') {
            continue;
        }
        let value = c.to_digit(16)? as u8;
        let byte = out.get_mut(nibbles / 2)?;
        *byte = (*byte << 4) | value;
        nibbles += 1;
    }
    (nibbles == 32).then_some(out)
}

impl Superblock {
    /// `devflags` bit: read from this member only when no other copy is available.
    pub const DEV_FLAG_WRITE_MOSTLY: u8 = 1;
    /// `devflags` bit: fail this member fast on I/O errors.
    pub const DEV_FLAG_FAILFAST: u8 = 2;

    /// Decodes and validates a superblock read from [`super::SUPERBLOCK_OFFSET_BYTES`] of a
    /// member. `bytes` must hold at least 256 + 2·`max_dev` bytes; a whole 4 KiB block is
    /// the normal input. Never panics; anything not trusted is a [`SuperblockError`].
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let truncated = |needed_bytes| SuperblockError::Truncated {
            needed_bytes,
            available_bytes: bytes.len(),
        };
        let b: &[u8; SUPERBLOCK_FIXED_BYTES] = bytes
            .get(..SUPERBLOCK_FIXED_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or(truncated(SUPERBLOCK_FIXED_BYTES))?;

        let magic = le32(b, OFF_MAGIC);
        if magic != MD_SB_MAGIC {
            return Err(SuperblockError::BadMagic { found: magic });
        }
        let major = le32(b, OFF_MAJOR_VERSION);
        if major != 1 {
            return Err(SuperblockError::UnsupportedMajorVersion { found: major });
        }
        let max_dev = le32(b, OFF_MAX_DEV);
        if max_dev > MAX_DEV_LIMIT {
            return Err(SuperblockError::MaxDevTooLarge { max_dev });
        }
        let roles_end = OFF_DEV_ROLES + 2 * max_dev as usize;
        let roles = bytes
            .get(OFF_DEV_ROLES..roles_end)
            .ok_or(truncated(roles_end))?;

        let stored = le32(b, OFF_SB_CSUM);
        let computed = checksum_over(bytes, roles_end);
        if stored != computed {
            return Err(SuperblockError::ChecksumMismatch { stored, computed });
        }

        let feature_bits = le32(b, OFF_FEATURE_MAP);
        let unknown = feature_bits & !FeatureMap::KNOWN.bits();
        if unknown != 0 {
            return Err(SuperblockError::UnknownFeatures { bits: unknown });
        }
        if le32(b, OFF_PAD0) != 0 || b[OFF_PAD3..SUPERBLOCK_FIXED_BYTES].iter().any(|&x| x != 0) {
            return Err(SuperblockError::NonZeroPadding);
        }
        let raw_level = le32(b, OFF_LEVEL) as i32;
        let level =
            Level::from_md(raw_level).ok_or(SuperblockError::UnknownLevel { level: raw_level })?;

        let mut set_name = [0u8; 32];
        set_name.copy_from_slice(&b[OFF_SET_NAME..OFF_SET_NAME + 32]);
        let sb = Superblock {
            features: FeatureMap::from_bits_retain(feature_bits),
            array_uuid: bytes16(b, OFF_SET_UUID),
            set_name,
            ctime: MdTime::from_raw(le64(b, OFF_CTIME)),
            level,
            layout: le32(b, OFF_LAYOUT),
            size_sectors: le64(b, OFF_SIZE),
            chunk_sectors: le32(b, OFF_CHUNKSIZE),
            raid_disk_count: le32(b, OFF_RAID_DISKS),
            bitmap_offset_sectors: le32(b, OFF_BITMAP_OFFSET) as i32,
            new_level: le32(b, OFF_NEW_LEVEL) as i32,
            reshape_position_sectors: le64(b, OFF_RESHAPE_POSITION),
            raid_disk_delta: le32(b, OFF_DELTA_DISKS) as i32,
            new_layout: le32(b, OFF_NEW_LAYOUT),
            new_chunk_sectors: le32(b, OFF_NEW_CHUNK),
            new_offset_sectors: le32(b, OFF_NEW_OFFSET) as i32,
            data_offset_sectors: le64(b, OFF_DATA_OFFSET),
            data_size_sectors: le64(b, OFF_DATA_SIZE),
            super_offset_sectors: le64(b, OFF_SUPER_OFFSET),
            recovery_offset_sectors: le64(b, OFF_RECOVERY_OFFSET),
            dev_number: le32(b, OFF_DEV_NUMBER),
            corrected_read_count: le32(b, OFF_CNT_CORRECTED_READ),
            device_uuid: bytes16(b, OFF_DEVICE_UUID),
            dev_flags: b[OFF_DEVFLAGS],
            bblog_shift: b[OFF_BBLOG_SHIFT],
            bblog_size_sectors: le16(b, OFF_BBLOG_SIZE),
            bblog_offset_sectors: le32(b, OFF_BBLOG_OFFSET) as i32,
            utime: MdTime::from_raw(le64(b, OFF_UTIME)),
            events: le64(b, OFF_EVENTS),
            resync_offset_sectors: le64(b, OFF_RESYNC_OFFSET),
            dev_roles: roles
                .chunks_exact(2)
                .map(|r| u16::from_le_bytes([r[0], r[1]]))
                .collect(),
        };
        sb.validate()?;
        Ok(sb)
    }

    /// The semantic checks [`Superblock::decode`] applies after the checksum: geometry,
    /// offsets, features against level, the role table. Useful on a superblock built or
    /// edited in memory before it is written.
    pub fn validate(&self) -> Result<(), SuperblockError> {
        use SuperblockError as E;
        let max_dev = self.max_dev();
        if self.dev_roles.len() > MAX_DEV_LIMIT as usize {
            return Err(E::MaxDevTooLarge { max_dev });
        }
        let unknown = self.features.bits() & !FeatureMap::KNOWN.bits();
        if unknown != 0 {
            return Err(E::UnknownFeatures { bits: unknown });
        }
        if self.super_offset_sectors != SUPER_OFFSET_SECTORS_V1_2 {
            return Err(E::WrongSuperOffset {
                found_sectors: self.super_offset_sectors,
            });
        }
        let data_floor = SUPER_OFFSET_SECTORS_V1_2 + SUPERBLOCK_SECTORS;
        if self.data_offset_sectors < data_floor {
            return Err(E::DataOffsetOverlapsSuperblock {
                data_offset_sectors: self.data_offset_sectors,
            });
        }
        if self
            .features
            .contains(FeatureMap::RESHAPE_ACTIVE | FeatureMap::NEW_OFFSET)
        {
            let new_start = self.data_offset_sectors as i128 + self.new_offset_sectors as i128;
            if new_start < data_floor as i128 {
                return Err(E::NewDataOffsetOverlapsSuperblock {
                    data_offset_sectors: self.data_offset_sectors,
                    new_offset_sectors: self.new_offset_sectors,
                });
            }
        }
        if self.data_size_sectors < MIN_DATA_SIZE_SECTORS {
            return Err(E::DataSizeTooSmall {
                data_size_sectors: self.data_size_sectors,
            });
        }
        if self.level.to_md() >= 1 && self.size_sectors > self.data_size_sectors {
            return Err(E::UsedSizeExceedsDataSize {
                size_sectors: self.size_sectors,
                data_size_sectors: self.data_size_sectors,
            });
        }
        if self.raid_disk_count == 0 || self.raid_disk_count > max_dev {
            return Err(E::RaidDiskCountOutOfRange {
                raid_disk_count: self.raid_disk_count,
                max_dev,
            });
        }
        let minimum = self.level.min_raid_disks();
        if self.raid_disk_count < minimum {
            return Err(E::TooFewMembers {
                level: self.level,
                raid_disk_count: self.raid_disk_count,
                minimum,
            });
        }
        self.validate_chunk()?;
        self.validate_layout()?;
        self.validate_features()?;
        self.validate_reshape()?;
        self.validate_roles()
    }

    /// The check `decode` cannot make: the data area (`data_offset + data_size`) must lie
    /// within the device the superblock was read from, `device_sectors` long. The kernel
    /// refuses such a member (`super_1_load`); so does assembly.
    pub fn check_device_size(&self, device_sectors: u64) -> Result<(), SuperblockError> {
        let end = self.data_offset_sectors.checked_add(self.data_size_sectors);
        if end.is_none_or(|end| end > device_sectors) {
            return Err(SuperblockError::DataBeyondDevice {
                data_offset_sectors: self.data_offset_sectors,
                data_size_sectors: self.data_size_sectors,
                device_sectors,
            });
        }
        Ok(())
    }

    fn validate_chunk(&self) -> Result<(), SuperblockError> {
        let chunk = self.chunk_sectors;
        let ok = match self.level {
            // Linear's "rounding" and raid1's unused chunk may be anything.
            Level::Linear | Level::Raid1 => true,
            // mdadm: at least 4 KiB, whole KiB; the kernel's raid0 needs no power of two.
            Level::Raid0 => chunk >= MIN_CHUNK_SECTORS && chunk.is_multiple_of(2),
            // raid4/5/6/10: the kernel insists on a power of two of at least a page.
            Level::Raid4 | Level::Raid5 | Level::Raid6 | Level::Raid10 => {
                chunk >= MIN_CHUNK_SECTORS && chunk.is_power_of_two()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(SuperblockError::BadChunkSize {
                level: self.level,
                chunk_sectors: chunk,
            })
        }
    }

    fn validate_layout(&self) -> Result<(), SuperblockError> {
        let layout = self.layout;
        let ok = match self.level {
            Level::Linear | Level::Raid1 => true,
            // Without the feature bit the kernel ignores raid0's layout word.
            Level::Raid0 => {
                !self.features.contains(FeatureMap::RAID0_LAYOUT)
                    || Raid0Layout::from_raw(layout).is_some()
            }
            // left/right asymmetric/symmetric, parity-first, parity-last.
            Level::Raid4 | Level::Raid5 => layout <= 5,
            // As raid5, the rotating-zero/N variants (8..=10), and the "-6" layouts (16..=20).
            Level::Raid6 => matches!(layout, 0..=5 | 8..=10 | 16..=20),
            Level::Raid10 => match Raid10Layout::from_raw(layout) {
                Some(l) => l.copies() >= 2 && l.copies() <= self.raid_disk_count,
                None => false,
            },
        };
        if ok {
            Ok(())
        } else {
            Err(SuperblockError::BadLayout {
                level: self.level,
                layout,
            })
        }
    }

    fn validate_features(&self) -> Result<(), SuperblockError> {
        let f = self.features;
        let conflict = |reason| {
            Err(SuperblockError::ConflictingFeatures {
                features: f.bits(),
                reason,
            })
        };
        if f.contains(FeatureMap::RAID0_LAYOUT) && self.level != Level::Raid0 {
            return conflict("raid0 layout flag on a level other than raid0");
        }
        if f.intersects(FeatureMap::PPL | FeatureMap::MULTIPLE_PPLS) {
            if f.intersects(FeatureMap::BITMAP_OFFSET | FeatureMap::JOURNAL) {
                return conflict("partial parity log together with a bitmap or journal");
            }
            if f.contains(FeatureMap::PPL | FeatureMap::MULTIPLE_PPLS) {
                return conflict("both single and multiple partial parity logs");
            }
        }
        if f.contains(FeatureMap::BAD_BLOCKS)
            && (self.bblog_offset_sectors == 0
                || self.bblog_size_sectors == 0
                || self.bblog_size_sectors > MAX_BBLOG_SECTORS)
        {
            return Err(SuperblockError::BadBadBlockLog {
                offset_sectors: self.bblog_offset_sectors,
                size_sectors: self.bblog_size_sectors,
            });
        }
        Ok(())
    }

    fn validate_reshape(&self) -> Result<(), SuperblockError> {
        if !self.features.contains(FeatureMap::RESHAPE_ACTIVE) {
            return Ok(());
        }
        let bad = |reason| Err(SuperblockError::BadReshape { reason });
        if Level::from_md(self.new_level).is_none() {
            return bad("reshape to an unsupported level");
        }
        let old_count = self.raid_disk_count as i64 - self.raid_disk_delta as i64;
        if old_count < 1 || old_count > self.max_dev() as i64 {
            return bad("member count before the reshape is out of range");
        }
        Ok(())
    }

    fn validate_roles(&self) -> Result<(), SuperblockError> {
        use SuperblockError as E;
        let max_dev = self.max_dev();
        if self.dev_number >= max_dev {
            return Err(E::DevNumberOutOfRange {
                dev_number: self.dev_number,
                max_dev,
            });
        }
        let slot_count = self.slot_count();
        // slot_count ≤ max_dev ≤ 1920 after validate_reshape, so this stays small.
        let mut claims = vec![0u32; slot_count as usize];
        for (dev_number, &raw) in (0u32..).zip(&self.dev_roles) {
            match DeviceRole::from_raw(raw) {
                None => return Err(E::InvalidRole { dev_number, raw }),
                Some(DeviceRole::Active(slot)) => {
                    let Some(count) = claims.get_mut(slot as usize) else {
                        return Err(E::RoleOutOfRange {
                            dev_number,
                            slot,
                            slot_count,
                        });
                    };
                    *count += 1;
                    let allowed = if self.level.to_md() >= 1 { 2 } else { 1 };
                    if *count > allowed {
                        return Err(E::DuplicateRole {
                            slot,
                            count: *count,
                        });
                    }
                }
                Some(DeviceRole::Journal) if !self.features.contains(FeatureMap::JOURNAL) => {
                    return Err(E::JournalWithoutFeature { dev_number });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Writes the 4 KiB block with a fresh checksum. Bytes after the role table are `0xff`,
    /// as mdadm leaves them, so a later, larger `max_dev` reads those entries as spares.
    ///
    /// Panics if `dev_roles` has more than [`MAX_DEV_LIMIT`] entries: that superblock cannot
    /// exist on disk and no decoded or constructed one has it.
    pub fn encode_into(&self, block: &mut [u8; SUPERBLOCK_BYTES]) {
        assert!(
            self.dev_roles.len() <= MAX_DEV_LIMIT as usize,
            "superblock role table of {} entries exceeds {MAX_DEV_LIMIT}",
            self.dev_roles.len()
        );
        block.fill(0);
        put(block, OFF_MAGIC, &MD_SB_MAGIC.to_le_bytes());
        put(block, OFF_MAJOR_VERSION, &1u32.to_le_bytes());
        put(block, OFF_FEATURE_MAP, &self.features.bits().to_le_bytes());
        put(block, OFF_SET_UUID, &self.array_uuid);
        put(block, OFF_SET_NAME, &self.set_name);
        put(block, OFF_CTIME, &self.ctime.raw().to_le_bytes());
        put(block, OFF_LEVEL, &self.level.to_md().to_le_bytes());
        put(block, OFF_LAYOUT, &self.layout.to_le_bytes());
        put(block, OFF_SIZE, &self.size_sectors.to_le_bytes());
        put(block, OFF_CHUNKSIZE, &self.chunk_sectors.to_le_bytes());
        put(block, OFF_RAID_DISKS, &self.raid_disk_count.to_le_bytes());
        put(
            block,
            OFF_BITMAP_OFFSET,
            &self.bitmap_offset_sectors.to_le_bytes(),
        );
        put(block, OFF_NEW_LEVEL, &self.new_level.to_le_bytes());
        put(
            block,
            OFF_RESHAPE_POSITION,
            &self.reshape_position_sectors.to_le_bytes(),
        );
        put(block, OFF_DELTA_DISKS, &self.raid_disk_delta.to_le_bytes());
        put(block, OFF_NEW_LAYOUT, &self.new_layout.to_le_bytes());
        put(block, OFF_NEW_CHUNK, &self.new_chunk_sectors.to_le_bytes());
        put(
            block,
            OFF_NEW_OFFSET,
            &self.new_offset_sectors.to_le_bytes(),
        );
        put(
            block,
            OFF_DATA_OFFSET,
            &self.data_offset_sectors.to_le_bytes(),
        );
        put(block, OFF_DATA_SIZE, &self.data_size_sectors.to_le_bytes());
        put(
            block,
            OFF_SUPER_OFFSET,
            &self.super_offset_sectors.to_le_bytes(),
        );
        put(
            block,
            OFF_RECOVERY_OFFSET,
            &self.recovery_offset_sectors.to_le_bytes(),
        );
        put(block, OFF_DEV_NUMBER, &self.dev_number.to_le_bytes());
        put(
            block,
            OFF_CNT_CORRECTED_READ,
            &self.corrected_read_count.to_le_bytes(),
        );
        put(block, OFF_DEVICE_UUID, &self.device_uuid);
        block[OFF_DEVFLAGS] = self.dev_flags;
        block[OFF_BBLOG_SHIFT] = self.bblog_shift;
        put(
            block,
            OFF_BBLOG_SIZE,
            &self.bblog_size_sectors.to_le_bytes(),
        );
        put(
            block,
            OFF_BBLOG_OFFSET,
            &self.bblog_offset_sectors.to_le_bytes(),
        );
        put(block, OFF_UTIME, &self.utime.raw().to_le_bytes());
        put(block, OFF_EVENTS, &self.events.to_le_bytes());
        put(
            block,
            OFF_RESYNC_OFFSET,
            &self.resync_offset_sectors.to_le_bytes(),
        );
        put(block, OFF_MAX_DEV, &self.max_dev().to_le_bytes());
        let roles_end = OFF_DEV_ROLES + 2 * self.dev_roles.len();
        for (entry, role) in block[OFF_DEV_ROLES..roles_end]
            .chunks_exact_mut(2)
            .zip(&self.dev_roles)
        {
            entry.copy_from_slice(&role.to_le_bytes());
        }
        block[roles_end..].fill(0xff);
        let csum = checksum_over(block, roles_end);
        put(block, OFF_SB_CSUM, &csum.to_le_bytes());
    }

    /// The 4 KiB block to write at [`super::SUPERBLOCK_OFFSET_BYTES`]; see
    /// [`Superblock::encode_into`].
    pub fn encode(&self) -> Vec<u8> {
        let mut block = [0u8; SUPERBLOCK_BYTES];
        self.encode_into(&mut block);
        block.to_vec()
    }

    /// The `sb_csum` [`Superblock::encode`] writes.
    pub fn checksum(&self) -> u32 {
        let mut block = [0u8; SUPERBLOCK_BYTES];
        self.encode_into(&mut block);
        u32::from_le_bytes([
            block[OFF_SB_CSUM],
            block[OFF_SB_CSUM + 1],
            block[OFF_SB_CSUM + 2],
            block[OFF_SB_CSUM + 3],
        ])
    }

    /// `max_dev`: entries in the role table.
    pub fn max_dev(&self) -> u32 {
        self.dev_roles.len() as u32
    }

    /// `set_name` up to its first NUL.
    pub fn name_bytes(&self) -> &[u8] {
        let end = self
            .set_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.set_name.len());
        &self.set_name[..end]
    }

    /// `set_name` as text, invalid UTF-8 replaced.
    pub fn name(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.name_bytes())
    }

    /// The role md gives `dev_number`: a device beyond the table is a spare, as md treats it.
    /// An undefined raw value (only possible in a superblock edited in memory; decode refuses
    /// it) is reported as faulty so it is never trusted.
    pub fn role_of(&self, dev_number: u32) -> DeviceRole {
        match self.dev_roles.get(dev_number as usize) {
            None => DeviceRole::Spare,
            Some(&raw) => DeviceRole::from_raw(raw).unwrap_or(DeviceRole::Faulty),
        }
    }

    /// This device's own role in its own table.
    pub fn own_role(&self) -> DeviceRole {
        self.role_of(self.dev_number)
    }

    /// Slots an active role may name: `raid_disks`, plus the members being removed while a
    /// shrinking reshape runs.
    pub fn slot_count(&self) -> u32 {
        if self.features.contains(FeatureMap::RESHAPE_ACTIVE) && self.raid_disk_delta < 0 {
            self.raid_disk_count
                .saturating_add(self.raid_disk_delta.unsigned_abs())
        } else {
            self.raid_disk_count
        }
    }

    /// The reshape in progress, if [`FeatureMap::RESHAPE_ACTIVE`] (and the new level is
    /// known, which decode guarantees).
    pub fn reshape(&self) -> Option<Reshape> {
        if !self.features.contains(FeatureMap::RESHAPE_ACTIVE) {
            return None;
        }
        Some(Reshape {
            position_sectors: self.reshape_position_sectors,
            new_level: Level::from_md(self.new_level)?,
            new_layout: self.new_layout,
            new_chunk_sectors: self.new_chunk_sectors,
            raid_disk_delta: self.raid_disk_delta,
            new_offset_sectors: self
                .features
                .contains(FeatureMap::NEW_OFFSET)
                .then_some(self.new_offset_sectors),
            backwards: self.features.contains(FeatureMap::RESHAPE_BACKWARDS),
        })
    }

    /// The raid10 layout, for a raid10 array.
    pub fn raid10_layout(&self) -> Option<Raid10Layout> {
        (self.level == Level::Raid10)
            .then(|| Raid10Layout::from_raw(self.layout))
            .flatten()
    }

    /// The raid0 zone layout, when the array records one ([`FeatureMap::RAID0_LAYOUT`]).
    pub fn raid0_layout(&self) -> Option<Raid0Layout> {
        (self.level == Level::Raid0 && self.features.contains(FeatureMap::RAID0_LAYOUT))
            .then(|| Raid0Layout::from_raw(self.layout))
            .flatten()
    }

    /// The partial parity log as (signed offset from the superblock, size), in sectors, when
    /// a PPL feature is set (it shares the `bitmap_offset` word).
    pub fn ppl(&self) -> Option<(i16, u16)> {
        if !self
            .features
            .intersects(FeatureMap::PPL | FeatureMap::MULTIPLE_PPLS)
        {
            return None;
        }
        let word = self.bitmap_offset_sectors as u32;
        Some((word as u16 as i16, (word >> 16) as u16))
    }

    /// `journal_tail` on a journal device (it shares the `recovery_offset` word).
    pub fn journal_tail_sectors(&self) -> u64 {
        self.recovery_offset_sectors
    }

    /// Whether the array was shut down cleanly (nothing left to resync).
    pub fn is_clean(&self) -> bool {
        self.resync_offset_sectors == RESYNC_COMPLETE
    }

    /// mdadm's text for the array UUID.
    pub fn array_uuid_display(&self) -> UuidDisplay<'_> {
        UuidDisplay(&self.array_uuid)
    }

    /// Counts one more superblock update. Saturates rather than wrapping: a wrapped counter
    /// would make this superblock look older than every other.
    pub fn bump_events(&mut self) {
        self.events = self.events.saturating_add(1);
    }

    /// Records the update time.
    pub fn touch(&mut self, utime: MdTime) {
        self.utime = utime;
    }

    /// Records `role` for `dev_number`, growing the table with spare entries as md does
    /// when a device with a new number joins.
    pub fn set_role(&mut self, dev_number: u32, role: DeviceRole) -> Result<(), RoleError> {
        if dev_number >= MAX_DEV_LIMIT {
            return Err(RoleError::DevNumberTooLarge { dev_number });
        }
        if let DeviceRole::Active(slot) = role {
            let slot_count = self.slot_count();
            if slot as u32 >= slot_count || !role.is_storable() {
                return Err(RoleError::SlotOutOfRange { slot, slot_count });
            }
        }
        let index = dev_number as usize;
        if index >= self.dev_roles.len() {
            self.dev_roles.resize(index + 1, DeviceRole::RAW_SPARE);
        }
        self.dev_roles[index] = role.raw();
        Ok(())
    }

    /// Marks `dev_number` faulty in the role table.
    pub fn mark_faulty(&mut self, dev_number: u32) -> Result<(), RoleError> {
        self.set_role(dev_number, DeviceRole::Faulty)
    }
}
