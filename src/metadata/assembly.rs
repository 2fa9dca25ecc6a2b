//! The assembly planner: which candidate device fills which slot of an array, decided from
//! the superblocks found on them, the way md and mdadm decide it. Pure: no I/O.
//!
//! Rules (from md's `super_1_load`/`super_1_validate` and mdadm's assemble):
//! * Candidates are grouped by array UUID; others are foreign, undecodable ones corrupt.
//! * The reference superblock is the one with the most `events` among devices whose own role
//!   is active or journal: spares are not written on every update, so md never lets a spare
//!   decide. Its role table is the truth.
//! * Every superblock of the array, whatever its events or role, must describe the same
//!   geometry: creation time, level, layout, size, chunk and raid_disks (mdadm's
//!   `compare_super`: "superblock on ... doesn't match others - assembly aborted"). A member
//!   that disagrees is never re-added with a geometry it did not have: the planner refuses,
//!   naming the field.
//! * Superblocks with the reference's `events` must describe the same array state (md writes
//!   the same table to all); if they do not, the members were assembled apart (split brain)
//!   and the planner refuses rather than guess.
//! * A device the truth marks faulty is faulty. A device with fewer events is stale unless it
//!   and the truth both call it a spare. A device that is fresh takes the role the truth gives
//!   it: a slot (in sync, or recovering with `recovery_offset`), a replacement, a spare or the
//!   journal. Two fresh devices with equal events claiming one slot are a conflict.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::superblock::{
    DeviceRole, FeatureMap, Level, MdTime, Superblock, SuperblockError, UuidDisplay,
};

/// One device examined for assembly: the caller's identifier for it and what decoding its
/// superblock gave.
pub type Candidate = (usize, Result<Superblock, SuperblockError>);

/// Candidates sorted by array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateGroups {
    /// Each array UUID seen, in order of first appearance, with its candidates' ids.
    pub arrays: Vec<([u8; 16], Vec<usize>)>,
    /// Candidates whose superblock did not decode.
    pub corrupt: Vec<(usize, SuperblockError)>,
}

/// Groups candidates by array UUID (what `mdadm --assemble --scan` does first).
pub fn group_candidates(candidates: &[Candidate]) -> CandidateGroups {
    let mut groups = CandidateGroups {
        arrays: Vec::new(),
        corrupt: Vec::new(),
    };
    for (member_id, result) in candidates {
        match result {
            Err(e) => groups.corrupt.push((*member_id, e.clone())),
            Ok(sb) => match groups
                .arrays
                .iter_mut()
                .find(|(uuid, _)| *uuid == sb.array_uuid)
            {
                Some((_, members)) => members.push(*member_id),
                None => groups.arrays.push((sb.array_uuid, vec![*member_id])),
            },
        }
    }
    groups
}

/// Knobs of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AssemblyOptions {
    /// How many events a device may lag the reference and still count as fresh. 0 is the
    /// strict rule. The kernel and mdadm accept a device one event behind (md may step
    /// `events` back on a clean/dirty transition it did not write to every device); set 1
    /// to match them for arrays Linux wrote.
    pub event_tolerance: u64,
}

/// What fills one slot of the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// A fresh, fully synchronised member.
    InSync { member_id: usize },
    /// A fresh member part-way through a rebuild: data below `recovery_offset_sectors`
    /// (from `data_offset`) is valid, the rest must be rebuilt.
    Recovering {
        member_id: usize,
        recovery_offset_sectors: u64,
    },
    /// No usable candidate. `expected_dev_number` is the device the reference table puts
    /// there, if any.
    Missing { expected_dev_number: Option<u32> },
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberStatus {
    InSync {
        slot: u16,
    },
    Recovering {
        slot: u16,
        recovery_offset_sectors: u64,
    },
    /// Fresh, replacing the member in `slot` (md's replacement feature).
    Replacement {
        slot: u16,
    },
    Spare,
    Journal,
    /// Older than the reference; needs re-adding with a rebuild. `role` is what its own
    /// superblock says it was.
    Stale {
        events: u64,
        role: DeviceRole,
    },
    Faulty,
    Corrupt(SuperblockError),
    Foreign {
        array_uuid: [u8; 16],
    },
}

/// How to assemble one array from the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssemblyPlan {
    pub array_uuid: [u8; 16],
    /// The candidate whose superblock is the truth.
    pub reference_member: usize,
    pub reference: Superblock,
    /// One entry per slot ([`Superblock::slot_count`] of the reference).
    pub slots: Vec<SlotState>,
    /// Every candidate with its verdict, in input order.
    pub members: Vec<(usize, MemberStatus)>,
    pub spares: Vec<usize>,
    /// (slot, member) for fresh replacements.
    pub replacements: Vec<(u16, usize)>,
    pub journals: Vec<usize>,
    pub stale: Vec<usize>,
    pub faulty: Vec<usize>,
    pub corrupt: Vec<(usize, SuperblockError)>,
    pub foreign: Vec<usize>,
    /// What the caller's `can_run` said about the in-sync slots.
    pub can_start: bool,
}

impl AssemblyPlan {
    /// Per slot, whether an in-sync member fills it (what `can_run` was given).
    pub fn in_sync_slots(&self) -> Vec<bool> {
        self.slots
            .iter()
            .map(|s| matches!(s, SlotState::InSync { .. }))
            .collect()
    }

    /// Whether some slot lacks an in-sync member.
    pub fn is_degraded(&self) -> bool {
        self.slots
            .iter()
            .any(|s| !matches!(s, SlotState::InSync { .. }))
    }

    /// Whether the array was not shut down cleanly and needs a resync from
    /// `reference.resync_offset_sectors`.
    pub fn needs_resync(&self) -> bool {
        !self.reference.is_clean()
    }
}

/// The first geometry field two superblocks of one array disagree on, with both values
/// (the reference's first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryDifference {
    Ctime(MdTime, MdTime),
    Level(Level, Level),
    Layout(u32, u32),
    SizeSectors(u64, u64),
    ChunkSectors(u32, u32),
    RaidDisks(u32, u32),
}

impl GeometryDifference {
    /// The superblock field, as md_p.h names it.
    pub const fn field(&self) -> &'static str {
        match self {
            GeometryDifference::Ctime(..) => "ctime",
            GeometryDifference::Level(..) => "level",
            GeometryDifference::Layout(..) => "layout",
            GeometryDifference::SizeSectors(..) => "size",
            GeometryDifference::ChunkSectors(..) => "chunksize",
            GeometryDifference::RaidDisks(..) => "raid_disks",
        }
    }
}

impl fmt::Display for GeometryDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.field();
        match self {
            GeometryDifference::Ctime(a, b) => {
                write!(f, "{field} ({} vs {} s)", a.seconds(), b.seconds())
            }
            GeometryDifference::Level(a, b) => write!(f, "{field} ({a} vs {b})"),
            GeometryDifference::Layout(a, b) => write!(f, "{field} ({a:#x} vs {b:#x})"),
            GeometryDifference::SizeSectors(a, b) => write!(f, "{field} ({a} vs {b} sectors)"),
            GeometryDifference::ChunkSectors(a, b) => {
                write!(f, "{field} ({a} vs {b} sectors)")
            }
            GeometryDifference::RaidDisks(a, b) => write!(f, "{field} ({a} vs {b})"),
        }
    }
}

/// The first geometry field (in md_p.h order) on which `a` and `b` disagree, if any: what
/// mdadm's `compare_super` compares besides the UUID.
pub fn geometry_difference(a: &Superblock, b: &Superblock) -> Option<GeometryDifference> {
    use GeometryDifference as G;
    if a.ctime != b.ctime {
        return Some(G::Ctime(a.ctime, b.ctime));
    }
    if a.level != b.level {
        return Some(G::Level(a.level, b.level));
    }
    if a.layout != b.layout {
        return Some(G::Layout(a.layout, b.layout));
    }
    if a.size_sectors != b.size_sectors {
        return Some(G::SizeSectors(a.size_sectors, b.size_sectors));
    }
    if a.chunk_sectors != b.chunk_sectors {
        return Some(G::ChunkSectors(a.chunk_sectors, b.chunk_sectors));
    }
    if a.raid_disk_count != b.raid_disk_count {
        return Some(G::RaidDisks(a.raid_disk_count, b.raid_disk_count));
    }
    None
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// No candidate carries this array's UUID.
    NoMembers { array_uuid: [u8; 16] },
    /// Two fresh devices with the same events claim the same slot.
    Conflict {
        slot: u16,
        first_member: usize,
        second_member: usize,
        events: u64,
    },
    /// Two superblocks with the reference's events describe different array states;
    /// `field` names the first difference.
    DivergentFreshest {
        first_member: usize,
        second_member: usize,
        events: u64,
        field: &'static str,
    },
    /// A superblock of the array (any events, any role) describes another geometry than the
    /// reference's.
    GeometryMismatch {
        first_member: usize,
        second_member: usize,
        difference: GeometryDifference,
    },
}

impl PlanError {
    /// The message with the members named by `name_of` (the caller's names for its
    /// candidate ids) instead of their ids.
    pub fn describe(&self, name_of: impl Fn(usize) -> String) -> String {
        let mut out = String::new();
        let _ = self.write_with(&mut out, &name_of);
        out
    }

    fn write_with(&self, f: &mut dyn fmt::Write, name_of: &dyn Fn(usize) -> String) -> fmt::Result {
        match self {
            PlanError::NoMembers { array_uuid } => {
                write!(
                    f,
                    "no member of array {} was found",
                    UuidDisplay(array_uuid)
                )
            }
            PlanError::Conflict {
                slot,
                first_member,
                second_member,
                events,
            } => write!(
                f,
                "members {} and {} both claim slot {slot} with events {events}",
                name_of(*first_member),
                name_of(*second_member)
            ),
            PlanError::DivergentFreshest {
                first_member,
                second_member,
                events,
                field,
            } => write!(
                f,
                "members {} and {} both have events {events} but disagree on {field} \
                 (assembled separately?)",
                name_of(*first_member),
                name_of(*second_member)
            ),
            PlanError::GeometryMismatch {
                first_member,
                second_member,
                difference,
            } => write!(
                f,
                "the superblocks of {} and {} disagree on {difference}: not members of one \
                 array",
                name_of(*first_member),
                name_of(*second_member)
            ),
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_with(f, &|id| id.to_string())
    }
}

impl core::error::Error for PlanError {}

/// The first part of the array state on which two superblocks with equal events differ, if
/// any (the geometry is compared apart, for every member). Per-device fields (offsets,
/// device UUID, recovery progress) may differ.
fn array_state_difference(a: &Superblock, b: &Superblock) -> Option<&'static str> {
    let per_device = FeatureMap::RECOVERY_OFFSET
        | FeatureMap::REPLACEMENT
        | FeatureMap::BAD_BLOCKS
        | FeatureMap::NEW_OFFSET
        | FeatureMap::RECOVERY_BITMAP;
    let reshape_of = |sb: &Superblock| {
        sb.reshape().map(|r| {
            (
                r.position_sectors,
                r.new_level,
                r.new_layout,
                r.new_chunk_sectors,
            )
        })
    };
    let table_len = a.dev_roles.len().max(b.dev_roles.len()) as u32;
    if a.features.difference(per_device) != b.features.difference(per_device) {
        return Some("feature_map");
    }
    if a.raid_disk_delta != b.raid_disk_delta {
        return Some("delta_disks");
    }
    if reshape_of(a) != reshape_of(b) {
        return Some("the reshape record");
    }
    if !(0..table_len).all(|d| a.role_of(d) == b.role_of(d)) {
        return Some("dev_roles");
    }
    None
}

/// Plans the assembly of array `array_uuid` from `candidates`. `can_run` gets, per slot,
/// whether an in-sync member fills it, and says whether the level can run like that (raid0
/// needs every slot, raid1 one, raid10 one per mirror set...).
pub fn plan_assembly(
    array_uuid: &[u8; 16],
    candidates: &[Candidate],
    options: AssemblyOptions,
    can_run: impl Fn(&[bool]) -> bool,
) -> Result<AssemblyPlan, PlanError> {
    let ours: Vec<(usize, &Superblock)> = candidates
        .iter()
        .filter_map(|(id, r)| {
            r.as_ref()
                .ok()
                .filter(|sb| sb.array_uuid == *array_uuid)
                .map(|sb| (*id, sb))
        })
        .collect();

    let decides =
        |sb: &Superblock| matches!(sb.own_role(), DeviceRole::Active(_) | DeviceRole::Journal);
    let pool_has_deciders = ours.iter().any(|(_, sb)| decides(sb));
    let mut reference: Option<(usize, &Superblock)> = None;
    for &(id, sb) in &ours {
        if pool_has_deciders && !decides(sb) {
            continue;
        }
        if reference.is_none_or(|(_, best)| sb.events > best.events) {
            reference = Some((id, sb));
        }
    }
    let Some((reference_member, truth)) = reference else {
        return Err(PlanError::NoMembers {
            array_uuid: *array_uuid,
        });
    };
    let ref_events = truth.events;
    for &(id, sb) in &ours {
        if let Some(difference) = geometry_difference(truth, sb) {
            return Err(PlanError::GeometryMismatch {
                first_member: reference_member,
                second_member: id,
                difference,
            });
        }
    }
    for &(id, sb) in &ours {
        if id == reference_member || sb.events != ref_events {
            continue;
        }
        if let Some(field) = array_state_difference(truth, sb) {
            return Err(PlanError::DivergentFreshest {
                first_member: reference_member,
                second_member: id,
                events: ref_events,
                field,
            });
        }
    }

    let slot_count = truth.slot_count() as usize;
    // Per slot: the claiming candidate (its id, its superblock, its status).
    let mut claims: Vec<Option<(usize, u64, MemberStatus)>> = vec![None; slot_count];
    let mut replacement_claims: Vec<Option<(usize, u64)>> = vec![None; slot_count];
    let mut statuses: Vec<(usize, MemberStatus)> = Vec::with_capacity(candidates.len());

    for (id, result) in candidates {
        let id = *id;
        let sb = match result {
            Err(e) => {
                statuses.push((id, MemberStatus::Corrupt(e.clone())));
                continue;
            }
            Ok(sb) if sb.array_uuid != *array_uuid => {
                statuses.push((
                    id,
                    MemberStatus::Foreign {
                        array_uuid: sb.array_uuid,
                    },
                ));
                continue;
            }
            Ok(sb) => sb,
        };
        let own = sb.own_role();
        let told = truth.role_of(sb.dev_number);
        let fresh = sb.events.saturating_add(options.event_tolerance) >= ref_events;
        let stale = MemberStatus::Stale {
            events: sb.events,
            role: own,
        };
        let status = if told == DeviceRole::Faulty {
            MemberStatus::Faulty
        } else if !fresh {
            match (own, told) {
                (DeviceRole::Spare, DeviceRole::Spare) => MemberStatus::Spare,
                (DeviceRole::Faulty, _) => MemberStatus::Faulty,
                _ => stale.clone(),
            }
        } else if sb.events != ref_events && own != told {
            // Within the tolerance but its own record disagrees with the truth: trust neither.
            stale.clone()
        } else {
            match told {
                DeviceRole::Active(slot) if (slot as usize) < slot_count => {
                    if sb.features.contains(FeatureMap::REPLACEMENT) {
                        MemberStatus::Replacement { slot }
                    } else if sb.features.contains(FeatureMap::RECOVERY_OFFSET) {
                        MemberStatus::Recovering {
                            slot,
                            recovery_offset_sectors: sb.recovery_offset_sectors,
                        }
                    } else {
                        MemberStatus::InSync { slot }
                    }
                }
                // Only reachable with a reference edited in memory: decode refuses it.
                DeviceRole::Active(_) => stale.clone(),
                DeviceRole::Spare => MemberStatus::Spare,
                DeviceRole::Journal => MemberStatus::Journal,
                DeviceRole::Faulty => MemberStatus::Faulty,
            }
        };

        let index = statuses.len();
        statuses.push((id, status.clone()));
        let slot = match status {
            MemberStatus::InSync { slot } | MemberStatus::Recovering { slot, .. } => slot,
            MemberStatus::Replacement { slot } => {
                // Replacements are tracked apart so they never displace the member they copy.
                let entry = &mut replacement_claims[slot as usize];
                match entry {
                    Some((other, other_events)) if *other_events == sb.events => {
                        return Err(PlanError::Conflict {
                            slot,
                            first_member: *other,
                            second_member: id,
                            events: sb.events,
                        });
                    }
                    Some((_, other_events)) if *other_events > sb.events => {
                        statuses[index].1 = stale;
                    }
                    _ => *entry = Some((id, sb.events)),
                }
                continue;
            }
            _ => continue,
        };
        let entry = &mut claims[slot as usize];
        match entry {
            Some((other, other_events, _)) if *other_events == sb.events => {
                return Err(PlanError::Conflict {
                    slot,
                    first_member: *other,
                    second_member: id,
                    events: sb.events,
                });
            }
            Some((_, other_events, _)) if *other_events > sb.events => {
                statuses[index].1 = stale;
            }
            _ => *entry = Some((id, sb.events, status)),
        }
    }

    // A claim displaced by a fresher one (within the tolerance) becomes stale.
    let winners: Vec<Option<usize>> = claims
        .iter()
        .map(|c| c.as_ref().map(|(id, _, _)| *id))
        .collect();
    let replacement_winners: Vec<Option<usize>> = replacement_claims
        .iter()
        .map(|c| c.map(|(id, _)| id))
        .collect();
    for (id, status) in statuses.iter_mut() {
        let lost = match status {
            MemberStatus::InSync { slot } | MemberStatus::Recovering { slot, .. } => {
                winners[*slot as usize] != Some(*id)
            }
            MemberStatus::Replacement { slot } => replacement_winners[*slot as usize] != Some(*id),
            _ => false,
        };
        if lost {
            let own_record = ours
                .iter()
                .find(|(other, _)| other == id)
                .map(|(_, sb)| *sb);
            if let Some(sb) = own_record {
                *status = MemberStatus::Stale {
                    events: sb.events,
                    role: sb.own_role(),
                };
            }
        }
    }

    let slots: Vec<SlotState> = claims
        .iter()
        .enumerate()
        .map(|(slot, claim)| match claim {
            Some((
                member_id,
                _,
                MemberStatus::Recovering {
                    recovery_offset_sectors,
                    ..
                },
            )) => SlotState::Recovering {
                member_id: *member_id,
                recovery_offset_sectors: *recovery_offset_sectors,
            },
            Some((member_id, _, _)) => SlotState::InSync {
                member_id: *member_id,
            },
            None => SlotState::Missing {
                expected_dev_number: (0..truth.max_dev())
                    .find(|&d| truth.role_of(d) == DeviceRole::Active(slot as u16)),
            },
        })
        .collect();

    let mut plan = AssemblyPlan {
        array_uuid: *array_uuid,
        reference_member,
        reference: truth.clone(),
        slots,
        members: Vec::new(),
        spares: Vec::new(),
        replacements: Vec::new(),
        journals: Vec::new(),
        stale: Vec::new(),
        faulty: Vec::new(),
        corrupt: Vec::new(),
        foreign: Vec::new(),
        can_start: false,
    };
    for (id, status) in &statuses {
        match status {
            MemberStatus::InSync { .. } | MemberStatus::Recovering { .. } => {}
            MemberStatus::Replacement { slot } => plan.replacements.push((*slot, *id)),
            MemberStatus::Spare => plan.spares.push(*id),
            MemberStatus::Journal => plan.journals.push(*id),
            MemberStatus::Stale { .. } => plan.stale.push(*id),
            MemberStatus::Faulty => plan.faulty.push(*id),
            MemberStatus::Corrupt(e) => plan.corrupt.push((*id, e.clone())),
            MemberStatus::Foreign { .. } => plan.foreign.push(*id),
        }
    }
    plan.members = statuses;
    plan.can_start = can_run(&plan.in_sync_slots());
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{CreateSpec, Level, SuperblockError};
    use alloc::string::ToString;
    use proptest::prelude::*;

    const UUID: [u8; 16] = [7; 16];
    const OTHER_UUID: [u8; 16] = [9; 16];

    fn any_slot(present: &[bool]) -> bool {
        present.iter().any(|&p| p)
    }

    fn all_slots(present: &[bool]) -> bool {
        present.iter().all(|&p| p)
    }

    /// Superblocks of a fresh array: `roles[d]` for device d, all with `events`.
    fn array(level: Level, raid_disks: u32, roles: &[DeviceRole], events: u64) -> Vec<Superblock> {
        let spec = CreateSpec {
            level,
            layout: if level == Level::Raid10 { 0x102 } else { 0 },
            chunk_sectors: if level == Level::Raid1 { 0 } else { 1024 },
            raid_disk_count: raid_disks,
            array_uuid: UUID,
            name: b"plan",
            size_sectors: 100_000,
            data_offset_sectors: 4096,
            time_seconds: 1,
            assume_clean: true,
            roles,
        };
        (0..roles.len() as u32)
            .map(|d| {
                let mut sb = Superblock::new_for_create(&spec, d, 131_072, [d as u8; 16]).unwrap();
                sb.events = events;
                sb
            })
            .collect()
    }

    fn actives(n: u16) -> Vec<DeviceRole> {
        (0..n).map(DeviceRole::Active).collect()
    }

    fn candidates(sbs: &[Superblock]) -> Vec<Candidate> {
        sbs.iter()
            .cloned()
            .enumerate()
            .map(|(i, sb)| (100 + i, Ok(sb)))
            .collect()
    }

    fn plan(c: &[Candidate], can_run: fn(&[bool]) -> bool) -> Result<AssemblyPlan, PlanError> {
        plan_assembly(&UUID, c, AssemblyOptions::default(), can_run)
    }

    #[test]
    fn fresh_members_fill_every_slot() {
        let c = candidates(&array(Level::Raid1, 3, &actives(3), 10));
        let p = plan(&c, all_slots).unwrap();
        assert_eq!(
            p.slots,
            vec![
                SlotState::InSync { member_id: 100 },
                SlotState::InSync { member_id: 101 },
                SlotState::InSync { member_id: 102 },
            ]
        );
        assert_eq!(p.reference_member, 100);
        assert!(p.can_start && !p.is_degraded() && !p.needs_resync());
        assert!(p.spares.is_empty() && p.stale.is_empty() && p.faulty.is_empty());
        assert_eq!(p.members[2], (102, MemberStatus::InSync { slot: 2 }));
    }

    #[test]
    fn older_member_is_stale_and_its_slot_missing() {
        let mut sbs = array(Level::Raid1, 3, &actives(3), 10);
        sbs[2].events = 9;
        sbs[0].events = 11;
        sbs[1].events = 11;
        let p = plan(&candidates(&sbs), any_slot).unwrap();
        assert_eq!(p.stale, vec![102]);
        assert_eq!(
            p.members[2].1,
            MemberStatus::Stale {
                events: 9,
                role: DeviceRole::Active(2)
            }
        );
        assert_eq!(
            p.slots[2],
            SlotState::Missing {
                expected_dev_number: Some(2)
            }
        );
        assert!(p.can_start && p.is_degraded());
        assert_eq!(p.in_sync_slots(), vec![true, true, false]);
        // The same for raid0, which needs every slot.
        let mut sbs = array(Level::Raid0, 2, &actives(2), 10);
        sbs[1].events = 9;
        assert!(!plan(&candidates(&sbs), all_slots).unwrap().can_start);
    }

    #[test]
    fn absent_member_leaves_its_slot_missing() {
        let sbs = array(Level::Raid10, 4, &actives(4), 5);
        let c = candidates(&[sbs[0].clone(), sbs[1].clone(), sbs[3].clone()]);
        let p = plan(&c, any_slot).unwrap();
        assert_eq!(
            p.slots[2],
            SlotState::Missing {
                expected_dev_number: Some(2)
            }
        );
        assert_eq!(p.slots[3], SlotState::InSync { member_id: 102 });
        // A slot nobody ever held (created "missing") has no expected device.
        let roles = [DeviceRole::Active(0), DeviceRole::Spare];
        let p = plan(&candidates(&array(Level::Raid1, 2, &roles, 5)), any_slot).unwrap();
        assert_eq!(
            p.slots[1],
            SlotState::Missing {
                expected_dev_number: None
            }
        );
        assert_eq!(p.spares, vec![101]);
    }

    #[test]
    fn member_marked_faulty_by_the_freshest_is_faulty() {
        let mut sbs = array(Level::Raid1, 3, &actives(3), 10);
        for sb in &mut sbs[..2] {
            sb.mark_faulty(2).unwrap();
            sb.events = 12;
        }
        let p = plan(&candidates(&sbs), any_slot).unwrap();
        assert_eq!(p.faulty, vec![102]);
        assert!(p.stale.is_empty());
        assert_eq!(
            p.slots[2],
            SlotState::Missing {
                expected_dev_number: None
            }
        );
        // A device whose own record says faulty stays faulty even when the truth lost track.
        let mut sbs = array(
            Level::Raid1,
            2,
            &[
                DeviceRole::Active(0),
                DeviceRole::Active(1),
                DeviceRole::Spare,
            ],
            10,
        );
        sbs[2].mark_faulty(2).unwrap();
        sbs[2].events = 3;
        let p = plan(&candidates(&sbs), any_slot).unwrap();
        assert_eq!(p.faulty, vec![102]);
    }

    #[test]
    fn spares_ignore_events_and_never_decide() {
        let roles = [
            DeviceRole::Active(0),
            DeviceRole::Active(1),
            DeviceRole::Spare,
            DeviceRole::Spare,
        ];
        let mut sbs = array(Level::Raid1, 2, &roles, 20);
        sbs[2].events = 3; // spares are not written on every update
        sbs[3].events = 99; // and one with more events must not become the reference
        sbs[3].dev_roles[0] = DeviceRole::RAW_FAULTY;
        let p = plan(&candidates(&sbs), all_slots).unwrap();
        assert_eq!(p.reference_member, 100);
        assert_eq!(p.spares, vec![102, 103]);
        assert!(p.can_start);
        assert_eq!(p.slots[0], SlotState::InSync { member_id: 100 });
    }

    #[test]
    fn foreign_and_corrupt_candidates_are_reported() {
        let mut c = candidates(&array(Level::Raid1, 2, &actives(2), 4));
        let mut stranger = array(Level::Raid1, 2, &actives(2), 50).remove(0);
        stranger.array_uuid = OTHER_UUID;
        c.push((7, Ok(stranger)));
        c.push((8, Err(SuperblockError::BadMagic { found: 0 })));
        let p = plan(&c, all_slots).unwrap();
        assert_eq!(p.foreign, vec![7]);
        assert_eq!(p.corrupt, vec![(8, SuperblockError::BadMagic { found: 0 })]);
        assert!(p.can_start);
        assert_eq!(p.members.len(), 4);
        assert!(matches!(
            p.members[2].1,
            MemberStatus::Foreign {
                array_uuid: OTHER_UUID
            }
        ));
    }

    #[test]
    fn same_slot_same_events_is_a_conflict() {
        let sbs = array(Level::Raid1, 2, &actives(2), 4);
        let c = candidates(&[sbs[0].clone(), sbs[1].clone(), sbs[1].clone()]);
        let e = plan(&c, any_slot).unwrap_err();
        assert_eq!(
            e,
            PlanError::Conflict {
                slot: 1,
                first_member: 101,
                second_member: 102,
                events: 4
            }
        );
        assert!(e.to_string().contains("slot 1"));
    }

    #[test]
    fn same_events_different_tables_is_refused() {
        let mut sbs = array(Level::Raid1, 3, &actives(3), 4);
        sbs[2].mark_faulty(0).unwrap();
        let e = plan(&candidates(&sbs), any_slot).unwrap_err();
        assert_eq!(
            e,
            PlanError::DivergentFreshest {
                first_member: 100,
                second_member: 102,
                events: 4,
                field: "dev_roles"
            }
        );
    }

    #[test]
    fn members_disagreeing_on_geometry_are_refused_whatever_their_events_or_role() {
        type Edit = fn(&mut Superblock);
        let cases: [(Edit, GeometryDifference); 6] = [
            (
                |sb| sb.level = Level::Raid5,
                GeometryDifference::Level(Level::Raid1, Level::Raid5),
            ),
            (|sb| sb.layout = 2, GeometryDifference::Layout(0, 2)),
            (
                |sb| sb.chunk_sectors = 128,
                GeometryDifference::ChunkSectors(0, 128),
            ),
            (
                |sb| sb.raid_disk_count = 3,
                GeometryDifference::RaidDisks(2, 3),
            ),
            (
                |sb| sb.size_sectors = 99_000,
                GeometryDifference::SizeSectors(100_000, 99_000),
            ),
            (
                |sb| sb.ctime = MdTime::from_seconds(2),
                GeometryDifference::Ctime(MdTime::from_seconds(1), MdTime::from_seconds(2)),
            ),
        ];
        let roles = [
            DeviceRole::Active(0),
            DeviceRole::Active(1),
            DeviceRole::Spare,
        ];
        for (edit, difference) in cases {
            // The odd one: an in-sync member (same events), a stale one, a spare, and one
            // the truth records faulty.
            for (odd, events, faulty) in
                [(1, 10, false), (1, 9, false), (2, 3, false), (1, 9, true)]
            {
                let mut sbs = array(Level::Raid1, 2, &roles, 10);
                if faulty {
                    for sb in &mut sbs {
                        sb.mark_faulty(1).unwrap();
                    }
                }
                edit(&mut sbs[odd]);
                sbs[odd].events = events;
                let e = plan(&candidates(&sbs), any_slot).unwrap_err();
                assert_eq!(
                    e,
                    PlanError::GeometryMismatch {
                        first_member: 100,
                        second_member: 100 + odd,
                        difference,
                    }
                );
                let text = e.describe(|id| alloc::format!("m{id}.img"));
                assert!(
                    text.contains(difference.field())
                        && text.contains("m100.img")
                        && text.contains(&alloc::format!("m{}.img", 100 + odd)),
                    "{text}"
                );
            }
        }
        assert_eq!(
            GeometryDifference::ChunkSectors(64, 128).to_string(),
            "chunksize (64 vs 128 sectors)"
        );
    }

    #[test]
    fn recovering_and_replacement_members() {
        let roles = [
            DeviceRole::Active(0),
            DeviceRole::Active(1),
            DeviceRole::Active(1),
        ];
        let mut sbs = array(Level::Raid1, 2, &roles, 8);
        sbs[0].dev_roles[2] = 1;
        sbs[1].features |= FeatureMap::RECOVERY_OFFSET;
        sbs[1].recovery_offset_sectors = 4000;
        sbs[2].features |= FeatureMap::REPLACEMENT | FeatureMap::RECOVERY_OFFSET;
        let p = plan(&candidates(&sbs), all_slots).unwrap();
        assert_eq!(
            p.slots[1],
            SlotState::Recovering {
                member_id: 101,
                recovery_offset_sectors: 4000
            }
        );
        assert_eq!(p.replacements, vec![(1, 102)]);
        assert_eq!(p.in_sync_slots(), vec![true, false]);
        assert!(!p.can_start, "a recovering slot is not in sync");
    }

    #[test]
    fn event_tolerance_accepts_one_behind() {
        let mut sbs = array(Level::Raid1, 2, &actives(2), 8);
        sbs[1].events = 7;
        let c = candidates(&sbs);
        let strict = plan(&c, all_slots).unwrap();
        assert_eq!(strict.stale, vec![101]);
        let lenient =
            plan_assembly(&UUID, &c, AssemblyOptions { event_tolerance: 1 }, all_slots).unwrap();
        assert!(lenient.stale.is_empty());
        assert_eq!(lenient.slots[1], SlotState::InSync { member_id: 101 });
        // Within the tolerance two claims on a slot: the fresher wins, the other is stale.
        let c = candidates(&[sbs[0].clone(), sbs[1].clone(), {
            let mut s = sbs[1].clone();
            s.events = 8;
            s
        }]);
        let p =
            plan_assembly(&UUID, &c, AssemblyOptions { event_tolerance: 1 }, all_slots).unwrap();
        assert_eq!(p.slots[1], SlotState::InSync { member_id: 102 });
        assert_eq!(p.stale, vec![101]);
    }

    #[test]
    fn no_member_of_the_array() {
        let c: Vec<Candidate> = vec![(1, Err(SuperblockError::NonZeroPadding))];
        assert_eq!(
            plan(&c, any_slot),
            Err(PlanError::NoMembers { array_uuid: UUID })
        );
        assert!(
            PlanError::NoMembers { array_uuid: UUID }
                .to_string()
                .contains("07070707:")
        );
    }

    #[test]
    fn grouping_by_array() {
        let mut c = candidates(&array(Level::Raid1, 2, &actives(2), 4));
        let mut stranger = array(Level::Raid1, 2, &actives(2), 4).remove(1);
        stranger.array_uuid = OTHER_UUID;
        c.insert(1, (50, Ok(stranger)));
        c.push((60, Err(SuperblockError::NonZeroPadding)));
        let g = group_candidates(&c);
        assert_eq!(
            g.arrays,
            vec![(UUID, vec![100, 101]), (OTHER_UUID, vec![50])]
        );
        assert_eq!(g.corrupt, vec![(60, SuperblockError::NonZeroPadding)]);
    }

    proptest! {
        /// Random events and presence on a 4-member raid10 with a spare: every candidate
        /// gets one verdict, slots hold only freshest members, and `can_start` is what the
        /// predicate says of the in-sync slots.
        #[test]
        fn prop_plan_is_consistent(
            events in proptest::collection::vec(0u64..4, 5),
            present in proptest::collection::vec(any::<bool>(), 5),
        ) {
            let mut roles = actives(4);
            roles.push(DeviceRole::Spare);
            let mut sbs = array(Level::Raid10, 4, &roles, 0);
            for (sb, e) in sbs.iter_mut().zip(&events) {
                sb.events = *e;
            }
            let c: Vec<Candidate> = candidates(&sbs)
                .into_iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(c, _)| c)
                .collect();
            match plan(&c, any_slot) {
                Err(PlanError::NoMembers { .. }) => prop_assert!(c.is_empty()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
                Ok(p) => {
                    prop_assert_eq!(p.members.len(), c.len());
                    let best = c.iter()
                        .filter_map(|(_, r)| r.as_ref().ok())
                        .filter(|sb| sb.own_role() != DeviceRole::Spare)
                        .map(|sb| sb.events)
                        .max();
                    for slot in &p.slots {
                        if let SlotState::InSync { member_id } = slot {
                            let sb = sbs[member_id - 100].clone();
                            prop_assert_eq!(Some(sb.events), best);
                        }
                    }
                    let listed = p.spares.len() + p.stale.len() + p.faulty.len()
                        + p.slots.iter().filter(|s| !matches!(s, SlotState::Missing { .. })).count();
                    prop_assert_eq!(listed, c.len());
                    prop_assert_eq!(p.can_start, p.in_sync_slots().iter().any(|&x| x));
                }
            }
        }
    }
}
