//! Linux md version-1.2 metadata: the superblock codec, mdadm's create-time defaults and the
//! assembly planner. Pure: bytes and values in, values out; no I/O, no clock, no randomness.
//!
//! The on-disk format is `struct mdp_superblock_1` from the kernel's
//! `include/uapi/linux/raid/md_p.h`, checksummed as `calc_sb_1_csum` in `drivers/md/md.c`.
//! Version 1.2 puts the superblock 4 KiB from the start of every member
//! ([`SUPERBLOCK_OFFSET_BYTES`]); the block is [`SUPERBLOCK_BYTES`] long, of which the first
//! 256 bytes plus two bytes per `max_dev` entry are meaningful and checksummed.
//!
//! * [`Superblock::decode`] validates everything it can without knowing the member device and
//!   returns a typed [`SuperblockError`] for anything it does not trust.
//! * [`Superblock::encode`] writes the 4 KiB block and computes the checksum.
//! * [`Superblock::new_for_create`] fills a fresh superblock the way `mdadm --create` does.
//! * [`plan_assembly`] decides, from the superblocks found on a set of candidate devices, which
//!   member fills which slot of an array, which are spares, stale, faulty, corrupt or foreign,
//!   and whether the array can start.

mod assembly;
mod create;
pub mod extension;
pub mod ppl;
mod superblock;

#[cfg(test)]
mod tests;

pub use assembly::{
    AssemblyOptions, AssemblyPlan, Candidate, CandidateGroups, GeometryDifference, MemberStatus,
    PlanError, SlotState, geometry_difference, group_candidates, plan_assembly,
};
pub use create::{
    CreateError, CreateSpec, bad_block_log_placement, default_bitmap_space_sectors,
    default_component_sectors, default_data_offset_sectors, default_data_offset_sectors_for_chunk,
    default_max_dev, usable_data_sectors,
};
pub use superblock::{
    DeviceRole, FeatureMap, Level, MdTime, Raid0Layout, Raid10Layout, Reshape, RoleError,
    Superblock, SuperblockError, UuidDisplay, checksum, format_uuid, md_level_name, parse_uuid,
};

/// Byte offset of the version-1.2 superblock from the start of a member device.
pub const SUPERBLOCK_OFFSET_BYTES: u64 = 4096;
/// Size in bytes of the superblock block as it is read and written.
pub const SUPERBLOCK_BYTES: usize = 4096;
/// Size of a sector in the units md uses for every `*_sectors` field.
pub const SECTOR_BYTES: u64 = 512;
/// `super_offset` of a version-1.2 superblock, in sectors (4 KiB from the start).
pub const SUPER_OFFSET_SECTORS_V1_2: u64 = SUPERBLOCK_OFFSET_BYTES / SECTOR_BYTES;
/// Sectors the superblock itself occupies; data must start at or after
/// `super_offset + SUPERBLOCK_SECTORS`.
pub const SUPERBLOCK_SECTORS: u64 = SUPERBLOCK_BYTES as u64 / SECTOR_BYTES;
/// `MD_SB_MAGIC`, stored little-endian in the first four bytes.
pub const MD_SB_MAGIC: u32 = 0xa92b_4efc;
/// Length of the fixed part of `mdp_superblock_1`, before `dev_roles[]`.
pub const SUPERBLOCK_FIXED_BYTES: usize = 256;
/// Largest `max_dev` whose role table fits in the 4 KiB block: (4096 - 256) / 2. The kernel
/// refuses larger values, and so do we.
pub const MAX_DEV_LIMIT: u32 = ((SUPERBLOCK_BYTES - SUPERBLOCK_FIXED_BYTES) / 2) as u32;
/// The `feature_map` bit Orion sets when an array uses Orion-only extensions (per-block
/// checksums, encryption, audit trail). Linux defines bits 0..=12 (`MD_FEATURE_ALL`) and
/// refuses any superblock with another bit set, so such an array is refused by Linux rather
/// than misread. Bit 31 keeps as far as possible from the bits Linux allocates upwards.
pub const ORION_FEATURE: u32 = 1 << 31;
/// `resync_offset` (and md's `MaxSector`) meaning "fully in sync".
pub const RESYNC_COMPLETE: u64 = u64::MAX;
