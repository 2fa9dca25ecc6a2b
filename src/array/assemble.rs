//! Creating arrays (superblocks onto members) and assembling them from what members hold.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::{Array, Member, MemberState, SUPERBLOCK_SECTOR};
use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES};
use crate::executor::{Executor, join_all};
use crate::layout::{
    ArrayLayout, LayoutError, ParityAlgorithm, ParityLevel, Raid0Layout, Raid0ZoneLayout,
    Raid1Layout, Raid5Layout, Raid10Layout, Raid10LayoutBits,
};
use crate::metadata::{
    self, AssemblyOptions, AssemblyPlan, Candidate, CreateSpec, DeviceRole, FeatureMap, Level,
    MemberStatus, SUPERBLOCK_BYTES, SlotState, Superblock, SuperblockError,
    default_component_sectors, default_data_offset_sectors_for_chunk, format_uuid,
    group_candidates, plan_assembly, usable_data_sectors,
};
use crate::rng::SplitMix64;

/// A member device and the name it is shown under (path, `mem:` spec).
pub type NamedDevice = (String, Rc<dyn BlockDevice>);

/// What `create` needs to know.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub level: Level,
    /// mdadm's layout name or number (`n2`, `far2`, `o2`, `original`, `1`…); `None` for the
    /// level's default.
    pub layout: Option<String>,
    /// Chunk size for striped levels (ignored for RAID1).
    pub chunk_sectors: u32,
    pub name: String,
    pub uuid: [u8; 16],
    /// Creation time, seconds since the Unix epoch.
    pub time_s: u64,
    /// Seed for the device UUIDs (the core has no random source).
    pub entropy: u64,
    /// The members are known to hold identical content (fresh zeroed images), so the copies
    /// need no initial resync.
    pub assume_clean: bool,
}

/// Why an array could not be created.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateError {
    UnsupportedLevel(Level),
    TooFewMembers {
        level: Level,
        have: usize,
        need: usize,
    },
    BadLayout(String),
    Layout(LayoutError),
    Metadata(metadata::CreateError),
    Io {
        member: String,
        error: IoError,
    },
    /// A nested geometry (RAID 50/60 groups) that does not work out.
    Nesting(String),
    /// Two members are one device (by identity: two paths, a symlink, a hard link).
    SameDevice {
        first: String,
        second: String,
    },
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::UnsupportedLevel(l) => write!(f, "{l} is not supported yet"),
            CreateError::TooFewMembers { level, have, need } => {
                write!(f, "{level} needs at least {need} members, {have} given")
            }
            CreateError::BadLayout(msg) => f.write_str(msg),
            CreateError::Layout(e) => write!(f, "bad geometry: {e}"),
            CreateError::Metadata(e) => write!(f, "{e}"),
            CreateError::Io { member, error } => write!(f, "{member}: {error}"),
            CreateError::Nesting(msg) => f.write_str(msg),
            CreateError::SameDevice { first, second } => write!(
                f,
                "members {first} and {second} are the same device: one device fills one role"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CreateError {}

/// The md layout word for a level from a user's layout name.
pub fn parse_layout(level: Level, text: Option<&str>) -> Result<u32, CreateError> {
    let bad = |t: &str| CreateError::BadLayout(format!("unknown {level} layout '{t}'"));
    match level {
        Level::Raid10 => match text {
            None => Ok(Raid10LayoutBits::NEAR2.bits()),
            Some(t) => match t.parse::<u32>() {
                Ok(raw) => Raid10LayoutBits::from_bits(raw)
                    .map(|b| b.bits())
                    .map_err(CreateError::Layout),
                Err(_) => t
                    .parse::<Raid10LayoutBits>()
                    .map(|b| b.bits())
                    .map_err(|_| bad(t)),
            },
        },
        Level::Raid0 => match text.map(|t| t.to_ascii_lowercase()) {
            None => Ok(Raid0ZoneLayout::Original.md_layout()),
            Some(t) => match t.as_str() {
                "original" | "o" | "1" => Ok(Raid0ZoneLayout::Original.md_layout()),
                "alternate" | "a" | "2" => Ok(Raid0ZoneLayout::Alternate.md_layout()),
                _ => Err(bad(&t)),
            },
        },
        Level::Raid1 => match text {
            None => Ok(0),
            Some(t) => Err(CreateError::BadLayout(format!(
                "raid1 has no layouts (got '{t}')"
            ))),
        },
        Level::Raid4 | Level::Raid5 | Level::Raid6 => {
            let parity = parity_level(level).ok_or(CreateError::UnsupportedLevel(level))?;
            let algorithm = match text {
                None => return Ok(parity.default_layout_number()),
                // RAID4's layout word is meaningless; mdadm writes 0.
                Some("0") if parity == ParityLevel::Raid4 => ParityAlgorithm::ParityLast,
                Some(t) => match t.parse::<u32>() {
                    Ok(raw) => ParityAlgorithm::from_md_number(raw)
                        .filter(|a| a.valid_for(parity))
                        .ok_or_else(|| bad(t))?,
                    Err(_) => ParityAlgorithm::parse_for_level(parity, &t.to_ascii_lowercase())
                        .map_err(|_| bad(t))?,
                },
            };
            // md ignores a RAID4 array's layout and mdadm writes 0.
            Ok(match parity {
                ParityLevel::Raid4 => parity.default_layout_number(),
                _ => algorithm.md_number(),
            })
        }
        other => Err(CreateError::UnsupportedLevel(other)),
    }
}

/// The parity level of an md level, if it is one.
fn parity_level(level: Level) -> Option<ParityLevel> {
    match level {
        Level::Raid4 => Some(ParityLevel::Raid4),
        Level::Raid5 => Some(ParityLevel::Raid5),
        Level::Raid6 => Some(ParityLevel::Raid6),
        _ => None,
    }
}

fn parity_layout(sb: &Superblock) -> Option<Result<Raid5Layout, LayoutError>> {
    parity_level(sb.level).map(|level| {
        Raid5Layout::new(
            level,
            sb.raid_disk_count as usize,
            sb.layout,
            sb.chunk_sectors,
            sb.size_sectors,
        )
    })
}

/// Why an array whose superblocks decode cannot be served.
#[derive(Debug, Clone, PartialEq)]
pub enum GeometryError {
    /// A level md knows that this driver does not serve (linear).
    UnsupportedLevel(Level),
    /// RAID0 with members of unequal size whose superblock records no zone layout
    /// (`feature_map` without `RAID0_LAYOUT`): md refuses to guess the mapping of the later
    /// zones, and so do we.
    Raid0LayoutNotRecorded,
    /// The address map refuses the geometry.
    Layout(LayoutError),
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::UnsupportedLevel(level) => write!(
                f,
                "level {} ({level}) is not served by this driver (raid0, raid1, raid4, raid5, \
                 raid6 and raid10 are)",
                level.to_md()
            ),
            GeometryError::Raid0LayoutNotRecorded => f.write_str(
                "raid0 with members of unequal size needs its zone layout recorded \
                 (feature_map bit 12, RAID0_LAYOUT, with layout 1 or 2); this superblock \
                 records none, and the later zones cannot be mapped without it",
            ),
            GeometryError::Layout(e) => write!(f, "unsupported geometry: {e}"),
        }
    }
}

/// The address map for an array described by `sb` whose members have these usable data
/// sizes (md's `data_size`), by slot; missing slots are `None`.
pub fn layout_for(
    sb: &Superblock,
    data_sectors: &[Option<u64>],
) -> Result<ArrayLayout, GeometryError> {
    let disks = sb.raid_disk_count as usize;
    match sb.level {
        Level::Raid0 => {
            // md's RAID0 takes every member's own size; a missing member cannot be replaced,
            // so its size is not needed (the array cannot run anyway): use the array's size.
            let sizes: Vec<u64> = data_sectors
                .iter()
                .map(|s| s.unwrap_or(sb.size_sectors))
                .collect();
            // Without the feature bit the kernel ignores the layout word (it may be
            // anything an old mdadm left there); only a single-zone array then runs.
            let recorded = sb.features.contains(FeatureMap::RAID0_LAYOUT);
            let word = if recorded { sb.layout } else { 0 };
            match Raid0Layout::from_md(&sizes, sb.chunk_sectors, word) {
                Err(LayoutError::UnknownRaid0ZoneLayout { .. }) if !recorded => {
                    Err(GeometryError::Raid0LayoutNotRecorded)
                }
                r => r.map(ArrayLayout::Raid0).map_err(GeometryError::Layout),
            }
        }
        Level::Raid1 => Raid1Layout::new(disks, sb.size_sectors)
            .map(ArrayLayout::Raid1)
            .map_err(GeometryError::Layout),
        Level::Raid10 => Raid10Layout::new(disks, sb.layout, sb.chunk_sectors, sb.size_sectors)
            .map(ArrayLayout::Raid10)
            .map_err(GeometryError::Layout),
        Level::Raid4 | Level::Raid5 | Level::Raid6 => match parity_layout(sb) {
            Some(l) => l.map(ArrayLayout::Raid5).map_err(GeometryError::Layout),
            None => Err(GeometryError::UnsupportedLevel(sb.level)),
        },
        Level::Linear => Err(GeometryError::UnsupportedLevel(sb.level)),
    }
}

fn min_members(level: Level) -> usize {
    match level {
        Level::Raid0 | Level::Raid1 | Level::Raid10 => 2,
        _ => parity_level(level).map_or(usize::MAX, ParityLevel::min_disk_count),
    }
}

/// Writes fresh superblocks onto `members` (in role order) and returns the running array.
/// Nothing is written unless the whole geometry checks out first.
pub async fn create(
    exec: &Executor,
    members: Vec<NamedDevice>,
    opts: &CreateOptions,
) -> Result<Rc<Array>, CreateError> {
    let level = opts.level;
    if !matches!(level, Level::Raid0 | Level::Raid1 | Level::Raid10)
        && parity_level(level).is_none()
    {
        return Err(CreateError::UnsupportedLevel(level));
    }
    check_distinct(&members)?;
    if members.len() < min_members(level) {
        return Err(CreateError::TooFewMembers {
            level,
            have: members.len(),
            need: min_members(level),
        });
    }
    let layout_word = parse_layout(level, opts.layout.as_deref())?;
    let chunk_sectors = if level == Level::Raid1 {
        0
    } else {
        opts.chunk_sectors
    };
    let smallest = members
        .iter()
        .map(|(_, d)| d.capacity_sectors())
        .min()
        .unwrap_or(0);
    let data_offset = default_data_offset_sectors_for_chunk(smallest, chunk_sectors);
    let data_sizes: Vec<u64> = members
        .iter()
        .map(|(_, d)| usable_data_sectors(d.capacity_sectors(), data_offset))
        .collect();
    let smallest_data = data_sizes.iter().copied().min().unwrap_or(0);
    let size_sectors = default_component_sectors(level, chunk_sectors, smallest_data);
    let roles: Vec<DeviceRole> = (0..members.len())
        .map(|i| DeviceRole::Active(i as u16))
        .collect();
    let spec = CreateSpec {
        level,
        layout: layout_word,
        chunk_sectors,
        raid_disk_count: members.len() as u32,
        array_uuid: opts.uuid,
        name: opts.name.as_bytes(),
        size_sectors,
        data_offset_sectors: data_offset,
        time_seconds: opts.time_s,
        assume_clean: opts.assume_clean,
        roles: &roles,
    };
    let mut rng = SplitMix64::new(opts.entropy);
    let mut superblocks = Vec::new();
    for (i, (_, dev)) in members.iter().enumerate() {
        let mut device_uuid = [0u8; 16];
        rng.fill(&mut device_uuid);
        let sb = Superblock::new_for_create(&spec, i as u32, dev.capacity_sectors(), device_uuid)
            .map_err(CreateError::Metadata)?;
        superblocks.push(sb);
    }
    let sizes: Vec<Option<u64>> = data_sizes.iter().map(|&s| Some(s)).collect();
    let layout = layout_for(&superblocks[0], &sizes).map_err(|e| match e {
        GeometryError::Layout(e) => CreateError::Layout(e),
        GeometryError::UnsupportedLevel(level) => CreateError::UnsupportedLevel(level),
        GeometryError::Raid0LayoutNotRecorded => CreateError::BadLayout(e.to_string()),
    })?;

    let writes: Vec<_> = members
        .iter()
        .zip(&superblocks)
        .map(|((name, dev), sb)| {
            let bytes = Bytes::from(sb.encode());
            let dev = dev.clone();
            let name = name.clone();
            async move {
                let r = match dev.write(SUPERBLOCK_SECTOR, bytes, true).await {
                    Ok(()) => dev.flush().await,
                    Err(e) => Err(e),
                };
                r.map_err(|error| CreateError::Io {
                    member: name,
                    error,
                })
            }
        })
        .collect();
    for r in join_all(writes).await {
        r?;
    }
    let slots = members
        .into_iter()
        .zip(superblocks)
        .map(|((name, dev), sb)| Some(Rc::new(Member::new(name, dev, sb))))
        .collect();
    let array = Array::new_rc(exec.clone(), opts.name.clone(), layout, slots, Vec::new());
    array.set_wall_clock_base(opts.time_s);
    Ok(array)
}

/// What was found on one candidate device that is not part of a running array.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub member: String,
    pub reason: String,
}

/// The arrays that could start, and everything that was left out and why.
#[derive(Default)]
pub struct AssembleResult {
    pub arrays: Vec<Rc<Array>>,
    pub problems: Vec<Problem>,
}

impl fmt::Debug for AssembleResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssembleResult")
            .field(
                "arrays",
                &self
                    .arrays
                    .iter()
                    .map(|a| a.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("problems", &self.problems)
            .finish()
    }
}

/// Reads the superblock of one device: decoded, and its data area within the device.
pub async fn read_superblock(dev: &dyn BlockDevice) -> Result<Superblock, String> {
    let block = dev
        .read(SUPERBLOCK_SECTOR, alloc::vec![0u8; SUPERBLOCK_BYTES])
        .await
        .map_err(|e| format!("cannot read superblock: {e}"))?;
    decode_for_device(&block, dev.capacity_sectors()).map_err(|e| e.to_string())
}

/// Decodes a superblock read from a device of `device_sectors` and checks what only the
/// device can tell: that the data area it describes lies on the device.
fn decode_for_device(block: &[u8], device_sectors: u64) -> Result<Superblock, SuperblockError> {
    let sb = Superblock::decode(block)?;
    sb.check_device_size(device_sectors)?;
    Ok(sb)
}

/// md's rule: a member one event behind the freshest is still fresh. A crash can interrupt
/// a superblock update after some members got it; every update that changes who is in the
/// array records the excluded devices as faulty, so the one-event grace never readmits a
/// member that missed data.
pub const ASSEMBLY_OPTIONS: AssemblyOptions = AssemblyOptions { event_tolerance: 1 };

/// Why a degraded parity array that was not shut down cleanly does not start.
pub const DIRTY_DEGRADED_REASON: &str = "degraded and not shut down cleanly: parity may not \
    match the data (the write hole), so the missing member cannot be rebuilt safely; not started";

/// What an array with an interrupted reshape says when it is refused: the reshape, its
/// position and what the user can do.
fn reshape_refusal(sb: &Superblock) -> String {
    let target = match sb.reshape() {
        Some(r) => {
            // md records the new member count in `raid_disks` while a reshape runs.
            let old_members = i64::from(sb.raid_disk_count) - i64::from(r.raid_disk_delta);
            let mut parts = Vec::new();
            if r.new_level != sb.level {
                parts.push(format!("{} -> {}", sb.level, r.new_level));
            }
            if r.raid_disk_delta != 0 {
                parts.push(format!("{old_members} -> {} members", sb.raid_disk_count));
            }
            if r.new_chunk_sectors != sb.chunk_sectors {
                parts.push(format!(
                    "chunk {}K -> {}K",
                    sb.chunk_sectors / 2,
                    r.new_chunk_sectors / 2
                ));
            }
            if r.new_layout != sb.layout {
                parts.push(format!("layout {} -> {}", sb.layout, r.new_layout));
            }
            if r.backwards {
                parts.push("backwards".to_string());
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        }
        None => format!(" (unknown new level {})", sb.new_level),
    };
    format!(
        "a reshape{target} was interrupted at array sector {}: reshape is not supported \
         yet, so the array is not started and nothing was written; finish the reshape with \
         Linux md (mdadm --assemble continues it)",
        sb.reshape_position_sectors
    )
}

/// md's bitmap superblock magic ("bitm", `bitmap_super_t.magic`).
const BITMAP_MAGIC: u32 = 0x6d74_6962;
/// `bitmap_super_t.state` and its `BITMAP_STALE` bit.
const BITMAP_STATE_OFFSET: usize = 48;
const BITMAP_STALE: u32 = 1 << 1;

/// The write-intent bitmap is not maintained here: our writes set no bits. Before anything
/// is written, its superblock is marked stale, so Linux md does a full resync (or recovery)
/// instead of trusting bits we did not keep — whatever the event counts say. md clears the
/// mark itself once it has loaded the bitmap. A member whose bitmap does not carry md's
/// magic is left as it is.
async fn mark_bitmap_stale(member: &Member) -> Result<(), IoError> {
    let msb = member.superblock();
    let Some(sector) = SUPERBLOCK_SECTOR.checked_add_signed(i64::from(msb.bitmap_offset_sectors))
    else {
        return Ok(());
    };
    let block = member
        .dev
        .read(sector, alloc::vec![0u8; SUPERBLOCK_BYTES])
        .await?;
    let state = le32_at(&block, BITMAP_STATE_OFFSET);
    if le32_at(&block, 0) != BITMAP_MAGIC || state & BITMAP_STALE != 0 {
        return Ok(());
    }
    let mut block = block;
    block[BITMAP_STATE_OFFSET..BITMAP_STATE_OFFSET + 4]
        .copy_from_slice(&(state | BITMAP_STALE).to_le_bytes());
    member.dev.write(sector, Bytes::from(block), true).await?;
    Ok(())
}

/// The partial parity log is not kept here (RAID5 PPL): before anything is written, each
/// member's log area is zeroed and an empty header written, as md does whenever it starts
/// such an array. Otherwise, after a crash of ours, Linux would replay partial parity
/// logged before our writes (computed from data we have changed since) and, having
/// recovered entries, mark the array clean without a resync. With an empty log it recovers
/// nothing and resyncs the dirty array.
async fn empty_ppl(member: &Member) -> Result<(), String> {
    let msb = member.superblock();
    let area = metadata::ppl::area(
        &msb,
        SUPERBLOCK_SECTOR,
        (SUPERBLOCK_BYTES / SECTOR_BYTES) as u64,
        member.dev.capacity_sectors(),
    )
    .map_err(|e| format!("{e}; not started"))?;
    let Some((start, len)) = area else {
        return Ok(());
    };
    let header = metadata::ppl::empty_header(&msb.array_uuid);
    let fail = |e: IoError| format!("cannot empty the partial parity log: {e}");
    let rest = start + metadata::ppl::PPL_HEADER_SECTORS;
    let rest_len = len - metadata::ppl::PPL_HEADER_SECTORS;
    // Later headers of a ring first, so that no moment leaves one valid after an empty first.
    member
        .dev
        .write(
            rest,
            Bytes::from(alloc::vec![0u8; rest_len as usize * SECTOR_BYTES]),
            true,
        )
        .await
        .map_err(fail)?;
    member
        .dev
        .write(start, Bytes::from(header), true)
        .await
        .map_err(fail)?;
    Ok(())
}

fn le32_at(block: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
}

/// Whether an array of this geometry can run with the slots marked present.
fn can_run(sb: &Superblock, present: &[bool]) -> bool {
    match sb.level {
        Level::Raid0 => present.iter().all(|&p| p),
        Level::Raid1 => present.iter().any(|&p| p),
        Level::Raid10 => match Raid10Layout::new(
            sb.raid_disk_count as usize,
            sb.layout,
            sb.chunk_sectors,
            sb.size_sectors,
        ) {
            Ok(l) => present.len() == l.disk_count() && l.survives(present),
            Err(_) => false,
        },
        // A parity array shut down uncleanly may hold stripes whose parity does not match
        // their data; rebuilding a missing member from them would return wrong data, so a
        // dirty degraded array does not start (md refuses it too).
        _ => match parity_layout(sb) {
            Some(Ok(l)) => {
                let complete = present.iter().all(|&p| p);
                present.len() == l.disk_count()
                    && l.survives(present)
                    && (complete || sb.resync_offset_sectors == super::RESYNC_DONE)
            }
            _ => false,
        },
    }
}

/// Reads every candidate's superblock, groups them by array, and starts each array that
/// can run. Members left out (stale, faulty, corrupt, foreign, spare, unreadable) are
/// reported with the reason.
pub async fn assemble(exec: &Executor, candidates: Vec<NamedDevice>) -> AssembleResult {
    let mut result = AssembleResult::default();
    let reads = join_all(
        candidates
            .iter()
            .map(|(_, dev)| async move {
                dev.read(SUPERBLOCK_SECTOR, alloc::vec![0u8; SUPERBLOCK_BYTES])
                    .await
            })
            .collect(),
    )
    .await;
    let mut decoded: Vec<Candidate> = Vec::new();
    for (id, read) in reads.into_iter().enumerate() {
        // The same device twice (two paths, a symlink): the first one is used.
        let (name, dev) = &candidates[id];
        if let Some(first) = first_with_identity(&candidates[..id], dev.as_ref()) {
            result.problems.push(Problem {
                member: name.clone(),
                reason: format!(
                    "the same device as {first} ({}): used once",
                    dev.identity().map(|i| i.to_string()).unwrap_or_default()
                ),
            });
            continue;
        }
        match read {
            Ok(block) => {
                let sb = Superblock::decode(&block);
                // As md's "device too small": a member whose data area runs past its end
                // (truncated) is left out, and the array starts without it if it can.
                if let Ok(sb) = &sb
                    && let Err(e) = sb.check_device_size(dev.capacity_sectors())
                {
                    result.problems.push(Problem {
                        member: name.clone(),
                        reason: format!(
                            "device too small: {} sectors ({e}); left out",
                            dev.capacity_sectors()
                        ),
                    });
                    continue;
                }
                decoded.push((id, sb));
            }
            Err(e) => result.problems.push(Problem {
                member: name.clone(),
                reason: format!("cannot read superblock: {e}"),
            }),
        }
    }
    let groups = group_candidates(&decoded);
    for (id, err) in &groups.corrupt {
        result.problems.push(Problem {
            member: candidates[*id].0.clone(),
            reason: format!("no valid md superblock: {err}"),
        });
    }
    for (uuid, ids) in &groups.arrays {
        let mut plan = match plan_assembly(uuid, &decoded, ASSEMBLY_OPTIONS, |_| false) {
            Ok(plan) => plan,
            Err(e) => {
                let why = e.describe(|id| {
                    candidates
                        .get(id)
                        .map_or_else(|| format!("candidate {id}"), |(name, _)| name.clone())
                });
                for id in ids {
                    result.problems.push(Problem {
                        member: candidates[*id].0.clone(),
                        reason: format!("array {} not assembled: {why}", format_uuid(uuid)),
                    });
                }
                continue;
            }
        };
        // Judged on the plan's reference: the superblock whose role table is the truth (a
        // spare with more events never decides).
        plan.can_start = can_run(&plan.reference, &plan.in_sync_slots());
        match start(exec, &candidates, &decoded, &plan, &mut result.problems).await {
            Some(array) => result.arrays.push(array),
            None => continue,
        }
    }
    result
}

/// The name of the first of `earlier` that is the same device as `dev` (by identity).
fn first_with_identity<'a>(earlier: &'a [NamedDevice], dev: &dyn BlockDevice) -> Option<&'a str> {
    let id = dev.identity()?;
    earlier
        .iter()
        .find(|(_, d)| d.identity() == Some(id))
        .map(|(n, _)| n.as_str())
}

/// Refuses a member list that holds one device twice (by identity): it cannot fill two
/// roles.
pub fn check_distinct(members: &[NamedDevice]) -> Result<(), CreateError> {
    for (i, (name, dev)) in members.iter().enumerate() {
        if let Some(first) = first_with_identity(&members[..i], dev.as_ref()) {
            return Err(CreateError::SameDevice {
                first: first.to_string(),
                second: name.clone(),
            });
        }
    }
    Ok(())
}

fn superblock_of(decoded: &[Candidate], id: usize) -> Option<&Superblock> {
    decoded
        .iter()
        .find(|(i, _)| *i == id)
        .and_then(|(_, r)| r.as_ref().ok())
}

/// Device numbers held by the members already placed.
fn taken_numbers(slots: &[Option<Rc<Member>>], spares: &[Rc<Member>]) -> Vec<u32> {
    slots
        .iter()
        .flatten()
        .chain(spares)
        .map(|m| m.superblock().dev_number)
        .collect()
}

/// Builds and starts the array a plan describes, or reports why it cannot start.
async fn start(
    exec: &Executor,
    candidates: &[NamedDevice],
    decoded: &[Candidate],
    plan: &AssemblyPlan,
    problems: &mut Vec<Problem>,
) -> Option<Rc<Array>> {
    let sb = &plan.reference;
    let label = format!("{} ({})", sb.name(), format_uuid(&plan.array_uuid));
    for (id, status) in &plan.members {
        let reason = match status {
            MemberStatus::InSync { .. } => continue,
            // Resumes its rebuild from `recovery_offset`.
            MemberStatus::Recovering { .. } => continue,
            // Attached to the member it replaces, below.
            MemberStatus::Replacement { .. } => continue,
            MemberStatus::Spare => continue,
            MemberStatus::Journal => format!("journal of {label}; journals are not supported"),
            // Re-added below: rebuilt in its slot if that is free, else kept as a spare.
            MemberStatus::Stale { .. } => continue,
            MemberStatus::Faulty => format!("marked faulty in {label}"),
            MemberStatus::Corrupt(e) => format!("no valid md superblock: {e}"),
            MemberStatus::Foreign { .. } => continue,
        };
        problems.push(Problem {
            member: candidates[*id].0.clone(),
            reason,
        });
    }
    // An interrupted reshape leaves the array in two geometries split at `reshape_position`;
    // reading it with either one returns other data, and writing it would leave Linux's view
    // of the reshape wrong. Until reshape is maintained here, such an array is not started
    // and nothing is written to its members.
    if sb.features.contains(FeatureMap::RESHAPE_ACTIVE) {
        problems.push(Problem {
            member: label,
            reason: reshape_refusal(sb),
        });
        return None;
    }
    // A write journal (md's raid5-cache) may hold writes newer than the members (write-back
    // mode acknowledges them once logged), and Linux replays it at its next start: serving
    // the members alone could return older data, and writing them would be undone by that
    // replay. Until the journal is kept here, such an array is not started.
    if sb.features.contains(FeatureMap::JOURNAL) {
        let journal = plan
            .journals
            .first()
            .and_then(|id| candidates.get(*id))
            .map_or_else(|| "missing".to_string(), |(name, _)| name.clone());
        problems.push(Problem {
            member: label,
            reason: format!(
                "the array has a write journal (journal device: {journal}), which this driver \
                 does not keep yet: the journal may hold writes newer than the members, so the \
                 array is not started and nothing was written; assemble it with Linux md"
            ),
        });
        return None;
    }
    // The geometry first: an array this driver cannot map is refused for that reason, not
    // as "too many members missing".
    let sizes: Vec<Option<u64>> = plan
        .slots
        .iter()
        .map(|slot| match slot {
            SlotState::InSync { member_id } | SlotState::Recovering { member_id, .. } => {
                superblock_of(decoded, *member_id).map(|m| m.data_size_sectors)
            }
            SlotState::Missing { .. } => None,
        })
        .collect();
    let layout = match layout_for(sb, &sizes) {
        Ok(l) => l,
        Err(e) => {
            problems.push(Problem {
                member: label,
                reason: format!("not started: {e}"),
            });
            return None;
        }
    };
    if !plan.can_start {
        let mut clean = sb.clone();
        clean.resync_offset_sectors = super::RESYNC_DONE;
        let write_hole = plan.needs_resync() && can_run(&clean, &plan.in_sync_slots());
        problems.push(Problem {
            member: label.clone(),
            reason: if write_hole {
                DIRTY_DEGRADED_REASON.to_string()
            } else {
                "too many members missing or failed to start the array".to_string()
            },
        });
        return None;
    }
    let mut slots: Vec<Option<Rc<Member>>> = Vec::new();
    for slot in &plan.slots {
        match slot {
            SlotState::InSync { member_id } => {
                let Some(member_sb) = superblock_of(decoded, *member_id) else {
                    slots.push(None);
                    continue;
                };
                let (name, dev) = &candidates[*member_id];
                slots.push(Some(Rc::new(Member::new(
                    name.clone(),
                    dev.clone(),
                    member_sb.clone(),
                ))));
            }
            SlotState::Recovering {
                member_id,
                recovery_offset_sectors,
            } => {
                let Some(member_sb) = superblock_of(decoded, *member_id) else {
                    slots.push(None);
                    continue;
                };
                let (name, dev) = &candidates[*member_id];
                log::info!(
                    "{}: {name} resumes its rebuild at member sector {recovery_offset_sectors}",
                    sb.name()
                );
                slots.push(Some(Rc::new(Member::with_state(
                    name.clone(),
                    dev.clone(),
                    member_sb.clone(),
                    MemberState::Rebuilding,
                    *recovery_offset_sectors,
                ))));
            }
            SlotState::Missing {
                expected_dev_number,
            } => {
                problems.push(Problem {
                    member: label.clone(),
                    reason: match expected_dev_number {
                        Some(d) => format!(
                            "slot {} is missing (device {d} of the array was not found)",
                            slots.len()
                        ),
                        None => format!("slot {} is missing", slots.len()),
                    },
                });
                slots.push(None);
            }
        }
    }
    if layout.disk_count() != slots.len() {
        problems.push(Problem {
            member: label,
            reason: "role table does not match the member count".to_string(),
        });
        return None;
    }
    // Stale members (older events) hold nothing trustworthy: each is rebuilt from zero in
    // its old slot if that is free, else kept as a spare. Spares join as spares.
    let mut slots = slots;
    let mut spares: Vec<Rc<Member>> = Vec::new();
    for (id, status) in &plan.members {
        let Some(member_sb) = superblock_of(decoded, *id) else {
            continue;
        };
        let (name, dev) = &candidates[*id];
        let fits = member_sb.data_size_sectors >= sb.size_sectors && sb.level != Level::Raid0;
        match status {
            MemberStatus::Spare => spares.push(Rc::new(Member::with_state(
                name.clone(),
                dev.clone(),
                member_sb.clone(),
                MemberState::Spare,
                0,
            ))),
            MemberStatus::Stale { events, role }
                if fits
                    && plan.can_start
                    && !taken_numbers(&slots, &spares).contains(&member_sb.dev_number) =>
            {
                let mut msb = member_sb.clone();
                // It takes the array's state; its own device identity stays.
                msb.events = sb.events;
                msb.dev_roles = sb.dev_roles.clone();
                let free_slot = match role {
                    DeviceRole::Active(s) => slots
                        .get(*s as usize)
                        .is_some_and(Option::is_none)
                        .then_some(*s as usize),
                    _ => None,
                };
                let state = if free_slot.is_some() {
                    MemberState::Rebuilding
                } else {
                    MemberState::Spare
                };
                log::info!(
                    "{}: stale member {name} (events {events}, array at {}) re-added as {state}",
                    sb.name(),
                    sb.events
                );
                let m = Rc::new(Member::with_state(name.clone(), dev.clone(), msb, state, 0));
                match free_slot {
                    Some(s) => slots[s] = Some(m),
                    None => spares.push(m),
                }
            }
            MemberStatus::Replacement { slot } => {
                let original = slots
                    .get(*slot as usize)
                    .and_then(Option::as_ref)
                    .filter(|m| m.state() == MemberState::Active);
                match original {
                    Some(original) => {
                        let offset = if member_sb.features.contains(FeatureMap::RECOVERY_OFFSET) {
                            member_sb.recovery_offset_sectors
                        } else {
                            0
                        };
                        let m = Rc::new(Member::with_state(
                            name.clone(),
                            dev.clone(),
                            member_sb.clone(),
                            MemberState::Rebuilding,
                            offset,
                        ));
                        m.is_replacement.set(true);
                        *original.replacement.borrow_mut() = Some(m);
                    }
                    None => problems.push(Problem {
                        member: name.clone(),
                        reason: format!("replacement for slot {slot} of {label}; left out"),
                    }),
                }
            }
            MemberStatus::Stale { events, .. } => problems.push(Problem {
                member: name.clone(),
                reason: format!(
                    "stale member of {label} (events {events}, array at {}); needs re-adding",
                    sb.events
                ),
            }),
            _ => {}
        }
    }
    if sb.features.contains(FeatureMap::BITMAP_OFFSET) {
        for m in slots.iter().flatten() {
            if let Err(e) = mark_bitmap_stale(m).await {
                problems.push(Problem {
                    member: m.name.clone(),
                    reason: format!("cannot mark the write-intent bitmap stale: {e}"),
                });
                return None;
            }
        }
    }
    if sb.ppl().is_some() {
        log::warn!(
            "{label}: its partial parity log is not kept by this driver: emptied, and recorded \
             only while the array is clean (after a crash, Linux sees a dirty array without one)"
        );
        for m in slots.iter().flatten() {
            if let Err(reason) = empty_ppl(m).await {
                problems.push(Problem {
                    member: m.name.clone(),
                    reason,
                });
                return None;
            }
        }
    }
    let array = Array::new_rc(exec.clone(), sb.name().to_string(), layout, slots, spares);
    // Orion's settings and scrub position, before the update below rewrites the record.
    array.load_extension().await;
    // As md does on start: a new event count, so that a member missing now is recognisably
    // older if it comes back.
    if let Err(e) = array.update_superblocks(|_| {}).await {
        problems.push(Problem {
            member: label,
            reason: format!("cannot update superblocks: {e}"),
        });
        return None;
    }
    Some(array)
}
