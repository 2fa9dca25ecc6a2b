//! What `mdadm --create` writes into a fresh v1.2 superblock, and its sizing rules.

use alloc::vec::Vec;
use core::fmt;

use super::superblock::{DeviceRole, FeatureMap, Level, MdTime, Raid0Layout, Superblock};
use super::{
    MAX_DEV_LIMIT, RESYNC_COMPLETE, SUPER_OFFSET_SECTORS_V1_2, SUPERBLOCK_FIXED_BYTES,
    SUPERBLOCK_SECTORS, SuperblockError,
};

const MIB_SECTORS: u64 = 2048;
const GIB_SECTORS: u64 = 1024 * MIB_SECTORS;
/// mdadm aims for reshape headroom of about 0.1% of the member, at most 128 MiB.
const MAX_HEADROOM_SECTORS: u64 = 128 * MIB_SECTORS;
/// mdadm's fixed allowance before the bitmap space: superblock area and bad-block log.
const BASE_METADATA_SECTORS: u64 = 24;
/// mdadm's bad-block log: one 4 KiB block (512 entries).
const BBLOG_SECTORS: u16 = 8;
/// mdadm puts the bitmap (and, after it, the bad-block log) 4 KiB after the superblock.
const BITMAP_OFFSET_FROM_SUPER_SECTORS: u64 = 8;
/// raid1 component sizes are rounded to 64 KiB so a later reshape to raid5 has whole chunks.
const RAID1_SIZE_ROUNDING_SECTORS: u64 = 128;
/// `set_name` is 32 bytes and mdadm keeps a terminating NUL.
const MAX_NAME_BYTES: usize = 31;

/// Space mdadm leaves for a write-intent bitmap between the superblock and the data
/// (`choose_bm_space`): none below 64 KiB, 4 KiB normally, 64 KiB above 8 GiB and 128 KiB
/// above 200 GiB. Always a multiple of 4 KiB.
pub fn default_bitmap_space_sectors(member_sectors: u64) -> u64 {
    if member_sectors < 128 {
        0
    } else if member_sectors - 128 >= 200 * GIB_SECTORS {
        256
    } else if member_sectors - 8 > 8 * GIB_SECTORS {
        128
    } else {
        8
    }
}

/// mdadm's default v1.2 `data_offset` for a member of `member_sectors` in an array with
/// `chunk_sectors` (0 for levels without a chunk): room for the superblock, the bitmap and
/// reshape headroom of about 0.1% of the member (at most 128 MiB, but for striped levels at
/// least twice the chunk), rounded up to a whole MiB.
pub fn default_data_offset_sectors_for_chunk(member_sectors: u64, chunk_sectors: u32) -> u64 {
    let bitmap = default_bitmap_space_sectors(member_sectors);
    let min_half_headroom = 2 * chunk_sectors as u64;
    let mut headroom = MAX_HEADROOM_SECTORS;
    while (headroom << 10) > member_sectors
        && (chunk_sectors == 0 || headroom / 2 >= min_half_headroom)
    {
        headroom >>= 1;
    }
    (BASE_METADATA_SECTORS + bitmap + headroom).div_ceil(MIB_SECTORS) * MIB_SECTORS
}

/// mdadm's default v1.2 `data_offset` for an array without a chunk (raid1, linear). Striped
/// levels keep more headroom: use [`default_data_offset_sectors_for_chunk`].
pub fn default_data_offset_sectors(member_sectors: u64) -> u64 {
    default_data_offset_sectors_for_chunk(member_sectors, 0)
}

/// `data_size` of a v1.2 member: everything after `data_offset` (zero if it does not fit).
pub fn usable_data_sectors(member_sectors: u64, data_offset_sectors: u64) -> u64 {
    member_sectors.saturating_sub(data_offset_sectors)
}

/// The `size` mdadm records for an array whose smallest member has `smallest_data_sectors`
/// after its data offset: striped levels use whole chunks, raid1 whole 64 KiB.
pub fn default_component_sectors(
    level: Level,
    chunk_sectors: u32,
    smallest_data_sectors: u64,
) -> u64 {
    let rounding = match level {
        Level::Raid1 => RAID1_SIZE_ROUNDING_SECTORS,
        _ if level.is_striped() && chunk_sectors > 0 => chunk_sectors as u64,
        _ => 1,
    };
    smallest_data_sectors - smallest_data_sectors % rounding
}

/// mdadm's `max_dev` for `device_count` devices (members and spares): the role table padded
/// so the superblock fills whole 512-byte sectors (128 entries, then 384, 640, ...).
pub fn default_max_dev(device_count: u32) -> u32 {
    let used = SUPERBLOCK_FIXED_BYTES as u64 + 2 * device_count as u64;
    let padded = used.div_ceil(512) * 512;
    let max_dev = (padded - SUPERBLOCK_FIXED_BYTES as u64) / 2;
    max_dev.min(MAX_DEV_LIMIT as u64) as u32
}

/// Where mdadm reserves the bad-block log on a v1.2 member, as (offset from the superblock,
/// size) in sectors: after the bitmap space if it fits before the data, else just before the
/// data, else nowhere. `size_sectors` is the array's per-member size, as mdadm uses it here.
pub fn bad_block_log_placement(size_sectors: u64, data_offset_sectors: u64) -> Option<(i32, u16)> {
    let bitmap_end = BITMAP_OFFSET_FROM_SUPER_SECTORS + default_bitmap_space_sectors(size_sectors);
    let log = BBLOG_SECTORS as u64;
    let offset = if data_offset_sectors >= SUPER_OFFSET_SECTORS_V1_2 + bitmap_end + log {
        bitmap_end
    } else if data_offset_sectors >= SUPER_OFFSET_SECTORS_V1_2 + 2 * SUPERBLOCK_SECTORS {
        data_offset_sectors - log - SUPER_OFFSET_SECTORS_V1_2
    } else {
        return None;
    };
    Some((i32::try_from(offset).ok()?, BBLOG_SECTORS))
}

/// The array-wide facts of a new array; one superblock per device is made from it with
/// [`Superblock::new_for_create`]. The core has no clock or random source: the time and the
/// UUIDs come from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateSpec<'a> {
    pub level: Level,
    /// Level-specific layout word; for raid0, [`Raid0Layout`] values 1 or 2 also set
    /// [`FeatureMap::RAID0_LAYOUT`] (as mdadm does on Linux ≥ 5.4), 0 leaves it unset.
    pub layout: u32,
    /// Chunk in sectors; 0 for raid1 (mdadm writes 0 there).
    pub chunk_sectors: u32,
    pub raid_disk_count: u32,
    pub array_uuid: [u8; 16],
    /// `set_name`, at most 31 bytes without NUL (mdadm writes `homehost:name`).
    pub name: &'a [u8],
    /// Per-member size the array uses, see [`default_component_sectors`].
    pub size_sectors: u64,
    /// Same on every member, see [`default_data_offset_sectors`].
    pub data_offset_sectors: u64,
    /// Creation time, seconds since the Unix epoch.
    pub time_seconds: u64,
    /// Contents need no initial resync (`--assume-clean`). raid0 and linear are always clean.
    pub assume_clean: bool,
    /// The role of every device, indexed by `dev_number`: `Active(slot)` or `Spare`. A slot
    /// created "missing" has no device, so no entry claims it (mdadm numbers devices in the
    /// order given and leaves a missing one's entry spare).
    pub roles: &'a [DeviceRole],
}

/// Why a create-time superblock could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// Longer than 31 bytes or containing a NUL.
    BadName { length_bytes: usize },
    /// More devices than a role table can hold.
    TooManyDevices { device_count: usize },
    /// `dev_number` is not an index into `roles`.
    DevNumberOutOfRange {
        dev_number: u32,
        device_count: usize,
    },
    /// Only active members and spares can be created (no journal, no faulty devices).
    UnsupportedRole { dev_number: u32, role: DeviceRole },
    /// No room for data after `data_offset`.
    MemberTooSmall {
        member_sectors: u64,
        data_offset_sectors: u64,
    },
    /// The result would not pass [`Superblock::validate`] (bad geometry or roles).
    Invalid(SuperblockError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::BadName { length_bytes } => write!(
                f,
                "array name of {length_bytes} bytes is too long (at most {MAX_NAME_BYTES}) or \
                 contains NUL"
            ),
            CreateError::TooManyDevices { device_count } => write!(
                f,
                "{device_count} devices exceed the superblock's limit of {MAX_DEV_LIMIT}"
            ),
            CreateError::DevNumberOutOfRange {
                dev_number,
                device_count,
            } => {
                write!(
                    f,
                    "dev_number {dev_number} is not one of the {device_count} devices"
                )
            }
            CreateError::UnsupportedRole { dev_number, role } => {
                write!(f, "device {dev_number} cannot be created as {role}")
            }
            CreateError::MemberTooSmall {
                member_sectors,
                data_offset_sectors,
            } => write!(
                f,
                "member of {member_sectors} sectors has no room for data after offset \
                 {data_offset_sectors}"
            ),
            CreateError::Invalid(e) => write!(f, "invalid array geometry: {e}"),
        }
    }
}

impl core::error::Error for CreateError {}

impl Superblock {
    /// The superblock `mdadm --create` would write on device `dev_number` (of
    /// `member_sectors` in total, identified by `device_uuid`): ctime = utime = the creation
    /// time in whole seconds, events 0 (md counts from the first update), `resync_offset` 0
    /// unless clean, `max_dev` padded to whole sectors, all other devices' roles from the
    /// spec, a reserved bad-block log, no bitmap.
    pub fn new_for_create(
        spec: &CreateSpec<'_>,
        dev_number: u32,
        member_sectors: u64,
        device_uuid: [u8; 16],
    ) -> Result<Superblock, CreateError> {
        if spec.name.len() > MAX_NAME_BYTES || spec.name.contains(&0) {
            return Err(CreateError::BadName {
                length_bytes: spec.name.len(),
            });
        }
        let device_count = spec.roles.len();
        if device_count > MAX_DEV_LIMIT as usize {
            return Err(CreateError::TooManyDevices { device_count });
        }
        if dev_number as usize >= device_count {
            return Err(CreateError::DevNumberOutOfRange {
                dev_number,
                device_count,
            });
        }
        for (number, &role) in (0u32..).zip(spec.roles) {
            if !matches!(role, DeviceRole::Active(_) | DeviceRole::Spare) {
                return Err(CreateError::UnsupportedRole {
                    dev_number: number,
                    role,
                });
            }
        }
        if member_sectors <= spec.data_offset_sectors {
            return Err(CreateError::MemberTooSmall {
                member_sectors,
                data_offset_sectors: spec.data_offset_sectors,
            });
        }

        let mut set_name = [0u8; 32];
        set_name[..spec.name.len()].copy_from_slice(spec.name);
        let max_dev = default_max_dev(device_count as u32);
        let mut dev_roles: Vec<u16> = spec.roles.iter().map(|r| r.raw()).collect();
        dev_roles.resize(max_dev as usize, DeviceRole::RAW_SPARE);

        let mut features = FeatureMap::empty();
        if spec.level == Level::Raid0 && Raid0Layout::from_raw(spec.layout).is_some() {
            features |= FeatureMap::RAID0_LAYOUT;
        }
        let clean = spec.assume_clean || matches!(spec.level, Level::Linear | Level::Raid0);
        let (bblog_offset_sectors, bblog_size_sectors) =
            bad_block_log_placement(spec.size_sectors, spec.data_offset_sectors).unwrap_or((0, 0));
        let time = MdTime::from_seconds(spec.time_seconds);

        let sb = Superblock {
            features,
            array_uuid: spec.array_uuid,
            set_name,
            ctime: time,
            level: spec.level,
            layout: spec.layout,
            size_sectors: spec.size_sectors,
            chunk_sectors: spec.chunk_sectors,
            raid_disk_count: spec.raid_disk_count,
            bitmap_offset_sectors: 0,
            new_level: 0,
            reshape_position_sectors: 0,
            raid_disk_delta: 0,
            new_layout: 0,
            new_chunk_sectors: 0,
            new_offset_sectors: 0,
            data_offset_sectors: spec.data_offset_sectors,
            data_size_sectors: usable_data_sectors(member_sectors, spec.data_offset_sectors),
            super_offset_sectors: SUPER_OFFSET_SECTORS_V1_2,
            recovery_offset_sectors: 0,
            dev_number,
            corrected_read_count: 0,
            device_uuid,
            dev_flags: 0,
            bblog_shift: 0,
            bblog_size_sectors,
            bblog_offset_sectors,
            utime: time,
            events: 0,
            resync_offset_sectors: if clean { RESYNC_COMPLETE } else { 0 },
            dev_roles,
        };
        sb.validate().map_err(CreateError::Invalid)?;
        Ok(sb)
    }
}
