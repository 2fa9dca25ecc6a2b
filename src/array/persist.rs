//! What an array keeps across a restart besides md's superblock: its `raid set` policies,
//! its stripe cache size and an interrupted scrub's position, in the Orion extension record
//! of every member (`metadata::extension`); and the pool label of a shared-pool spare.
//! Written in the superblock update pass, read at assembly.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::rebuild::{ArrayPolicy, RebuildPriority, SparePolicy};
use super::{Array, ArrayError, Member, MemberState, ReadPolicy, SUPERBLOCK_SECTOR};
use crate::block::{BlockDevice, Bytes, IoError};
use crate::metadata::extension::{
    EXTENSION_BYTES, ExtensionError, ExtensionRecord, POOL_LABEL_SECTOR, ScrubCheckpoint,
    StoredRegions, StoredSettings, extension_sector,
};
use crate::metadata::{SUPERBLOCK_BYTES, Superblock, format_uuid};

/// The smallest stripe cache `raid set stripe_cache=` takes besides 0 (off): one page.
const MIN_STRIPE_CACHE_BYTES: u64 = 4096;
/// The largest: 4 GiB, far beyond what a stripe cache gains from.
const MAX_STRIPE_CACHE_BYTES: u64 = 4 << 30;

/// Parses a size as the CLI spells them: a number with an optional binary suffix
/// (`K`, `M`, `G`, `T`, optionally followed by `iB` or `B`), e.g. `64M`, `512KiB`, `4096`.
pub fn parse_size_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| t.strip_suffix('B').or_else(|| t.strip_suffix('b')))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// A size in the largest binary unit that divides it (`16M`, `1536K`, `100`).
pub fn format_size_bytes(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Checks a `stripe_cache` value: 0 (off) or a whole number of pages within the limits.
pub fn valid_stripe_cache_bytes(bytes: u64) -> bool {
    bytes == 0
        || ((MIN_STRIPE_CACHE_BYTES..=MAX_STRIPE_CACHE_BYTES).contains(&bytes)
            && bytes.is_multiple_of(MIN_STRIPE_CACHE_BYTES))
}

/// Why a member's extension record could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadExtensionError {
    /// md uses the space, or there is none (see `extension_sector`).
    NoRoom,
    Io(IoError),
    Invalid(ExtensionError),
}

impl core::fmt::Display for ReadExtensionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReadExtensionError::NoRoom => f.write_str("no room for an extension record"),
            ReadExtensionError::Io(e) => write!(f, "cannot read the extension record: {e}"),
            ReadExtensionError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// Reads and decodes the extension record of a member with superblock `sb`.
pub async fn read_extension(
    dev: &dyn BlockDevice,
    sb: &Superblock,
) -> Result<ExtensionRecord, ReadExtensionError> {
    let at = extension_sector(sb).ok_or(ReadExtensionError::NoRoom)?;
    let block = dev
        .read(at, vec![0u8; EXTENSION_BYTES])
        .await
        .map_err(ReadExtensionError::Io)?;
    ExtensionRecord::decode(&block).map_err(ReadExtensionError::Invalid)
}

/// Whether `dev` is a shared-pool spare: no md superblock, and a valid pool label.
pub async fn has_pool_label(dev: &dyn BlockDevice) -> bool {
    let Ok(sb) = dev
        .read(SUPERBLOCK_SECTOR, vec![0u8; SUPERBLOCK_BYTES])
        .await
    else {
        return false;
    };
    if Superblock::decode(&sb).is_ok() {
        return false;
    }
    match dev
        .read(POOL_LABEL_SECTOR, vec![0u8; EXTENSION_BYTES])
        .await
    {
        Ok(block) => ExtensionRecord::decode(&block) == Ok(ExtensionRecord::PoolLabel),
        Err(_) => false,
    }
}

/// Makes `dev` a shared-pool spare on disk: wipes any md superblock (a pool spare belongs
/// to no array, and must not be assembled as a stale member of the one it left) and writes
/// the pool label. Linux sees a device without md metadata.
pub async fn write_pool_label(dev: &dyn BlockDevice) -> Result<(), IoError> {
    if dev.capacity_sectors() < POOL_LABEL_SECTOR + (EXTENSION_BYTES / 512) as u64 {
        return Err(IoError::OutOfRange {
            sector: POOL_LABEL_SECTOR,
            sectors: (EXTENSION_BYTES / 512) as u64,
            capacity_sectors: dev.capacity_sectors(),
        });
    }
    dev.write(
        SUPERBLOCK_SECTOR,
        Bytes::from(vec![0u8; SUPERBLOCK_BYTES]),
        false,
    )
    .await?;
    dev.write(
        POOL_LABEL_SECTOR,
        Bytes::from(ExtensionRecord::PoolLabel.encode()),
        true,
    )
    .await?;
    dev.flush().await
}

/// Removes the pool label (the device leaves the pool for an array or for good).
pub async fn clear_pool_label(dev: &dyn BlockDevice) -> Result<(), IoError> {
    if has_pool_label(dev).await {
        dev.write(
            POOL_LABEL_SECTOR,
            Bytes::from(vec![0u8; EXTENSION_BYTES]),
            true,
        )
        .await?;
    }
    Ok(())
}

fn priority_code(p: RebuildPriority) -> u8 {
    match p {
        RebuildPriority::Low => 0,
        RebuildPriority::Normal => 1,
        RebuildPriority::High => 2,
    }
}

fn spare_code(p: SparePolicy) -> u8 {
    match p {
        SparePolicy::Dedicated => 0,
        SparePolicy::Shared => 1,
        SparePolicy::None => 2,
    }
}

impl Array {
    /// The settings as the extension record stores them: every value, set or default.
    pub fn stored_settings(&self) -> StoredSettings {
        let p = self.policy.get();
        StoredSettings {
            rebuild_priority: Some(priority_code(p.rebuild_priority)),
            rebuild_rate_bytes_per_s: Some(p.rebuild_rate_bytes_per_s),
            spare_policy: Some(spare_code(p.spare_policy)),
            read_policy: Some(match self.read_policy() {
                ReadPolicy::RoundRobin => 0,
                ReadPolicy::LeastOutstanding => 1,
            }),
            read_error_limit: Some(p.failure.read_error_limit),
            read_error_window_ns: Some(p.failure.read_error_window_ns),
            io_timeout_ns: Some(p.failure.io_timeout_ns),
            checkpoint_regions: Some(p.checkpoint_regions),
            stripe_cache_bytes: Some(self.stripe_cache_bytes() as u64),
        }
    }

    /// Applies stored settings; a value out of range keeps the current one (logged).
    pub fn apply_stored_settings(&self, s: &StoredSettings) {
        let mut p: ArrayPolicy = self.policy.get();
        let name = &self.name;
        let odd = |what: &str| log::warn!("{name}: stored {what} is out of range; default kept");
        match s.rebuild_priority {
            Some(0) => p.rebuild_priority = RebuildPriority::Low,
            Some(1) => p.rebuild_priority = RebuildPriority::Normal,
            Some(2) => p.rebuild_priority = RebuildPriority::High,
            Some(_) => odd("rebuild priority"),
            None => {}
        }
        match s.spare_policy {
            Some(0) => p.spare_policy = SparePolicy::Dedicated,
            Some(1) => p.spare_policy = SparePolicy::Shared,
            Some(2) => p.spare_policy = SparePolicy::None,
            Some(_) => odd("spare policy"),
            None => {}
        }
        if let Some(v) = s.rebuild_rate_bytes_per_s {
            p.rebuild_rate_bytes_per_s = v;
        }
        if let Some(v) = s.read_error_limit {
            p.failure.read_error_limit = v;
        }
        if let Some(v) = s.read_error_window_ns {
            p.failure.read_error_window_ns = v;
        }
        if let Some(v) = s.io_timeout_ns {
            p.failure.io_timeout_ns = v;
        }
        match s.checkpoint_regions {
            Some(0) => odd("checkpoint_regions"),
            Some(v) => p.checkpoint_regions = v,
            None => {}
        }
        self.set_policy(p);
        match s.read_policy {
            Some(0) => self.set_read_policy(ReadPolicy::RoundRobin),
            Some(1) => self.set_read_policy(ReadPolicy::LeastOutstanding),
            Some(_) => odd("read policy"),
            None => {}
        }
        match s.stripe_cache_bytes {
            Some(v) if valid_stripe_cache_bytes(v) => self.set_stripe_cache_bytes(v as usize),
            Some(_) => odd("stripe cache size"),
            None => {}
        }
    }

    /// The record a superblock update with `events` writes on every member.
    pub(super) fn extension_record(&self, array_uuid: [u8; 16], events: u64) -> ExtensionRecord {
        ExtensionRecord::Array {
            array_uuid,
            events,
            settings: self.stored_settings(),
            scrub: self.scrub_checkpoint(),
            scrub_regions: self.scrub_checkpoint_regions(),
        }
    }

    /// Members whose records count at assembly: those in slots and the spares.
    fn record_members(&self) -> Vec<Rc<Member>> {
        let mut all: Vec<Rc<Member>> = self.slots.borrow().iter().flatten().cloned().collect();
        all.extend(self.spares.borrow().iter().cloned());
        all.retain(|m| m.state() != MemberState::Faulty);
        all
    }

    /// At assembly, before the first superblock update: applies the freshest valid record
    /// of this array found on the members. A member without a record, or with a corrupt
    /// one, is logged and skipped; with none at all the defaults stay. Never fails.
    pub async fn load_extension(&self) {
        let members = self.record_members();
        let Some(uuid) = members.first().map(|m| m.superblock().array_uuid) else {
            return;
        };
        type Fresh = (u64, StoredSettings, Option<ScrubCheckpoint>, StoredRegions);
        let mut freshest: Option<Fresh> = None;
        let mut corrupt = 0usize;
        for m in &members {
            let sb = m.superblock();
            match read_extension(m.dev.as_ref(), &sb).await {
                Ok(ExtensionRecord::Array {
                    array_uuid,
                    events,
                    settings,
                    scrub,
                    scrub_regions,
                }) if array_uuid == uuid => {
                    if freshest.as_ref().is_none_or(|f| events > f.0) {
                        freshest = Some((events, settings, scrub, scrub_regions));
                    }
                }
                Ok(ExtensionRecord::Array { array_uuid, .. }) => {
                    log::info!(
                        "{}: {}: extension record of another array ({}) ignored",
                        self.name,
                        m.name,
                        format_uuid(&array_uuid)
                    );
                }
                Ok(ExtensionRecord::PoolLabel) => {}
                Err(ReadExtensionError::Invalid(ExtensionError::NoMagic)) => {}
                Err(ReadExtensionError::NoRoom) => log::info!(
                    "{}: {}: md uses the space of the extension record: settings not kept",
                    self.name,
                    m.name
                ),
                Err(e) => {
                    corrupt += 1;
                    log::warn!("{}: {}: {e}", self.name, m.name);
                }
            }
        }
        match freshest {
            Some((events, settings, scrub, regions)) => {
                log::info!(
                    "{}: settings restored (record of events {events})",
                    self.name
                );
                self.apply_stored_settings(&settings);
                self.set_scrub_checkpoint(scrub, regions);
            }
            None if corrupt > 0 => log::warn!(
                "{}: no valid Orion extension record on any member: default settings",
                self.name
            ),
            None => {}
        }
    }

    /// Drops the checkpoint of an interrupted check or repair that has not resumed (a user's
    /// cancel) and records that on the members at once, so it does not come back at the next
    /// start. Whether there was one; a running scrub is left alone (`cancel_scrub`).
    pub async fn forget_scrub_checkpoint(&self) -> Result<bool, ArrayError> {
        if self.scrub_running() || self.scrub_checkpoint().is_none() {
            return Ok(false);
        }
        self.set_scrub_checkpoint(None, StoredRegions::default());
        self.persist_settings().await?;
        Ok(true)
    }

    /// Writes the extension record (and superblocks) now, e.g. after `raid set`.
    pub async fn persist_settings(&self) -> Result<(), ArrayError> {
        self.update_superblocks(|_| {}).await
    }

    /// Part of a superblock update: writes `record` at the member's extension block. A
    /// member with no room skips it; a failed write is logged, not fatal (the superblock
    /// is what md's semantics rest on).
    pub(super) async fn write_extension(&self, member: &Member, sb: &Superblock, record: &Bytes) {
        let Some(at) = extension_sector(sb) else {
            return;
        };
        if let Err(e) = member
            .within_timeout(member.dev.write(at, record.clone(), true))
            .await
        {
            log::warn!(
                "{}: extension record write failed on {}: {e}",
                self.name,
                member.name
            );
        }
    }
}
