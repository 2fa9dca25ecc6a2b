//! What an array keeps across a restart besides md's superblock: its `raid set` policies,
//! its stripe cache size and an interrupted scrub's position, in the Orion extension record
//! of every member (`metadata::extension`); and the pool label of a shared-pool spare.
//! Written in the superblock update pass, read at assembly.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::settings::Setting;
use super::{Array, ArrayError, Member, MemberState, SUPERBLOCK_SECTOR};
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

impl Array {
    /// The settings as the extension record stores them: every value, set or default.
    pub fn stored_settings(&self) -> StoredSettings {
        let mut s = StoredSettings {
            checkpoint_regions: Some(self.policy.get().checkpoint_regions),
            ..StoredSettings::default()
        };
        for setting in self.current_settings() {
            setting.store(&mut s);
        }
        s
    }

    /// Applies stored settings. A value outside its key's bounds (written by an older
    /// version, or by hand) keeps the default, logged: a record must never wedge an array.
    pub fn apply_stored_settings(&self, s: &StoredSettings) {
        let name = self.name();
        for stored in Setting::from_stored(s) {
            match stored {
                Ok(setting) => {
                    self.set_value(setting);
                }
                Err((key, raw)) => log::warn!(
                    "{name}: stored {key} ({raw}) is out of range; the default applies \
                     (raid set {name} {key}=VALUE records a new one)"
                ),
            }
        }
        match s.checkpoint_regions {
            Some(0) => log::warn!("{name}: stored checkpoint_regions is 0; default kept"),
            Some(v) => {
                let mut p = self.policy.get();
                p.checkpoint_regions = v;
                self.set_policy(p);
            }
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
                        self.name(),
                        m.name,
                        format_uuid(&array_uuid)
                    );
                }
                Ok(ExtensionRecord::PoolLabel) => {}
                Err(ReadExtensionError::Invalid(ExtensionError::NoMagic)) => {}
                Err(ReadExtensionError::NoRoom) => log::info!(
                    "{}: {}: md uses the space of the extension record: settings not kept",
                    self.name(),
                    m.name
                ),
                Err(e) => {
                    corrupt += 1;
                    log::warn!("{}: {}: {e}", self.name(), m.name);
                }
            }
        }
        match freshest {
            Some((events, settings, scrub, regions)) => {
                log::info!(
                    "{}: settings restored (record of events {events})",
                    self.name()
                );
                self.apply_stored_settings(&settings);
                self.set_scrub_checkpoint(scrub, regions);
            }
            None if corrupt > 0 => log::warn!(
                "{}: no valid Orion extension record on any member: default settings",
                self.name()
            ),
            None => {}
        }
    }

    /// Drops the checkpoint of an interrupted check or repair that has not resumed (a user's
    /// cancel) and records that on the members at once, so it does not come back at the next
    /// start. Whether there was one; a running scrub is left alone (`jobs::scrub::cancel`).
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
        // Not in a partial parity log's area, recorded in the superblock or not right now.
        if !self.ppl_features.is_empty() {
            return;
        }
        let Some(at) = extension_sector(sb) else {
            return;
        };
        if let Err(e) = member
            .within_timeout(member.dev.write(at, record.clone(), true))
            .await
        {
            log::warn!(
                "{}: extension record write failed on {}: {e}",
                self.name(),
                member.name
            );
        }
    }
}

/// Why `raid set --members` was refused or stopped. Nothing is written when it is refused;
/// only `Write` can leave some members with the new record and others with the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfflineSetError {
    /// A member without a readable md superblock.
    NotAMember {
        member: String,
        reason: String,
    },
    /// md keeps a bitmap, a partial parity log or a journal where the record goes.
    NoRoom {
        member: String,
        array: String,
    },
    /// In-sync members of the array were not named: their older record could be the one
    /// assembly picks.
    MissingMembers {
        array: String,
        /// md device numbers of the in-sync members not given.
        dev_numbers: Vec<u32>,
    },
    Write {
        member: String,
        error: IoError,
    },
}

impl core::fmt::Display for OfflineSetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OfflineSetError::NotAMember { member, reason } => {
                write!(f, "{member}: not a member of an md array ({reason})")
            }
            OfflineSetError::NoRoom { member, array } => write!(
                f,
                "{member}: md keeps a bitmap, log or journal where Orion records settings: \
                 array {array} keeps none to reset"
            ),
            OfflineSetError::MissingMembers { array, dev_numbers } => {
                let list: Vec<String> = dev_numbers.iter().map(|d| d.to_string()).collect();
                write!(
                    f,
                    "array {array}: name every in-sync member (md device numbers {} are \
                     missing), or the old settings could win at assembly",
                    list.join(", ")
                )
            }
            OfflineSetError::Write { member, error } => {
                write!(f, "{member}: record not written: {error}")
            }
        }
    }
}

/// One array whose record `set_offline` rewrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineSetReport {
    pub array: String,
    pub members: Vec<String>,
    /// The record's settings after the change.
    pub settings: StoredSettings,
}

/// `raid set --members`: applies `changes` to the Orion extension record of the members of
/// arrays that are not running (the caller holds the members exclusively), the way back from
/// a setting that keeps an array from working. Members are grouped by array UUID; each
/// array's freshest valid record is the base (scrub position included), and the new record is
/// written with the freshest superblock's `events` on every member given. md's superblocks
/// are not touched. Every check runs before the first write.
pub async fn set_offline(
    members: &[super::assemble::NamedDevice],
    changes: &[Setting],
) -> Result<Vec<OfflineSetReport>, OfflineSetError> {
    struct Found<'a> {
        name: &'a str,
        dev: &'a dyn BlockDevice,
        sb: Superblock,
        at: u64,
    }
    let mut arrays: Vec<([u8; 16], Vec<Found<'_>>)> = Vec::new();
    for (name, dev) in members {
        let sb = super::assemble::read_superblock(dev.as_ref())
            .await
            .map_err(|reason| OfflineSetError::NotAMember {
                member: name.clone(),
                reason,
            })?;
        let at = extension_sector(&sb).ok_or_else(|| OfflineSetError::NoRoom {
            member: name.clone(),
            array: sb.name().into_owned(),
        })?;
        let found = Found {
            name,
            dev: dev.as_ref(),
            sb,
            at,
        };
        match arrays.iter_mut().find(|(u, _)| *u == found.sb.array_uuid) {
            Some((_, list)) => list.push(found),
            None => arrays.push((found.sb.array_uuid, vec![found])),
        }
    }
    let mut plans = Vec::new();
    for (uuid, list) in &arrays {
        let freshest = list
            .iter()
            .max_by_key(|m| m.sb.events)
            .map(|m| &m.sb)
            .expect("an array is listed with its first member");
        let array = freshest.name().into_owned();
        let given: Vec<u32> = list.iter().map(|m| m.sb.dev_number).collect();
        let missing: Vec<u32> = (0..freshest.max_dev())
            .filter(|&d| matches!(freshest.role_of(d), crate::metadata::DeviceRole::Active(_)))
            .filter(|d| !given.contains(d))
            .collect();
        if !missing.is_empty() {
            return Err(OfflineSetError::MissingMembers {
                array,
                dev_numbers: missing,
            });
        }
        // The record assembly would have applied: the freshest valid one of this array.
        let mut base: Option<(u64, StoredSettings, Option<ScrubCheckpoint>, StoredRegions)> = None;
        for m in list {
            if let Ok(ExtensionRecord::Array {
                array_uuid,
                events,
                settings,
                scrub,
                scrub_regions,
            }) = read_extension(m.dev, &m.sb).await
                && array_uuid == *uuid
                && base.as_ref().is_none_or(|b| events > b.0)
            {
                base = Some((events, settings, scrub, scrub_regions));
            }
        }
        let (_, mut settings, scrub, scrub_regions) = base.unwrap_or_default();
        for change in changes {
            change.store(&mut settings);
        }
        let record = ExtensionRecord::Array {
            array_uuid: *uuid,
            events: freshest.events,
            settings,
            scrub,
            scrub_regions,
        };
        plans.push((array, Bytes::from(record.encode()), settings, list));
    }
    let mut reports = Vec::new();
    for (array, record, settings, list) in plans {
        for m in list.iter() {
            let written = m.dev.write(m.at, record.clone(), true).await;
            let flushed = match written {
                Ok(()) => m.dev.flush().await,
                Err(e) => Err(e),
            };
            flushed.map_err(|error| OfflineSetError::Write {
                member: m.name.to_string(),
                error,
            })?;
        }
        log::info!(
            "{array}: settings rewritten on {} stopped members",
            list.len()
        );
        reports.push(OfflineSetReport {
            array,
            members: list.iter().map(|m| m.name.to_string()).collect(),
            settings,
        });
    }
    Ok(reports)
}
