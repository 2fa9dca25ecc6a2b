//! Nested arrays (RAID 50, RAID 60): a RAID 0 whose members are RAID 5 or RAID 6 group
//! arrays, each group with its own superblocks, stacked as Linux md stacks `/dev/mdX`
//! devices — the outer superblock sits 4 KiB into each group's data.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::assemble::{
    CreateError, CreateOptions, NamedDevice, Problem, assemble, create, parse_layout,
};
use super::{Array, ArrayError, SUPERBLOCK_SECTOR};
use crate::block::BlockDevice;
use crate::executor::Executor;
use crate::metadata::{Level, SUPERBLOCK_BYTES, Superblock};
use crate::rng::SplitMix64;

/// md keeps a terminating NUL in the 32-byte `set_name`.
const MAX_NAME_BYTES: usize = 31;

/// An array together with the group arrays that are its members (empty for a plain array).
#[derive(Clone)]
pub struct Stack {
    pub array: Rc<Array>,
    /// By the outer array's slot order; a missing group leaves no entry.
    pub groups: Vec<Rc<Array>>,
}

impl Stack {
    /// An array that is not built on other arrays.
    pub fn plain(array: Rc<Array>) -> Self {
        Stack {
            array,
            groups: Vec::new(),
        }
    }

    /// The outer array first, then its groups: the order in which to mark them clean.
    pub fn layers(&self) -> impl Iterator<Item = &Rc<Array>> {
        core::iter::once(&self.array).chain(self.groups.iter())
    }

    /// `raid50`, `raid60`, or the plain level name.
    pub fn level_name(&self) -> String {
        let groups: Vec<&Array> = self.groups.iter().map(|g| g.as_ref()).collect();
        level_name(&self.array, &groups)
    }

    /// Flushes and marks every layer clean. The outer array goes first: its superblock
    /// update is a write into the groups, which marks them dirty until they are cleaned.
    pub async fn mark_clean(&self) -> Result<(), ArrayError> {
        let mut result = Ok(());
        for layer in self.layers() {
            if let Err(e) = layer.mark_clean().await {
                log::error!("{}: not marked clean: {e}", layer.name());
                result = result.and(Err(e));
            }
        }
        result
    }
}

/// The level users know a stack by: an outer RAID 0 over groups of one level N is `raidN0`
/// (md itself records level 0 in the outer superblock); anything else its own level.
pub fn level_name(outer: &Array, groups: &[&Array]) -> String {
    let outer_level = outer.superblock().map(|sb| sb.level);
    let group_levels: Vec<Option<Level>> = groups
        .iter()
        .map(|g| g.superblock().map(|sb| sb.level))
        .collect();
    match (outer_level, group_levels.first()) {
        (Some(Level::Raid0), Some(&Some(first)))
            if group_levels.iter().all(|l| *l == Some(first)) =>
        {
            let inner = first.name().trim_start_matches("raid");
            format!("raid{inner}0")
        }
        (Some(level), _) => level.name().to_string(),
        (None, _) => "unknown".to_string(),
    }
}

/// What a nested create adds to [`CreateOptions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedSpec {
    /// RAID5 for RAID 50, RAID6 for RAID 60.
    pub group_level: Level,
    pub group_count: usize,
}

impl NestedSpec {
    /// The spec for a user-facing level number 50 or 60.
    pub fn for_level(level: u32, group_count: usize) -> Option<Self> {
        let group_level = match level {
            50 => Level::Raid5,
            60 => Level::Raid6,
            _ => return None,
        };
        Some(NestedSpec {
            group_level,
            group_count,
        })
    }

    /// The user-facing level name (`raid50`, `raid60`).
    pub fn name(&self) -> String {
        format!(
            "raid{}0",
            self.group_level.name().trim_start_matches("raid")
        )
    }
}

/// The name of group `index` of the array `name`.
pub fn group_name(name: &str, index: usize) -> String {
    format!("{name}-g{index}")
}

/// The array UUID of group `index`, derived from the outer UUID so that a stack created
/// twice with the same UUID is the same stack.
pub fn group_uuid(outer_uuid: &[u8; 16], index: usize) -> [u8; 16] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&outer_uuid[..8]);
    hi.copy_from_slice(&outer_uuid[8..]);
    let seed = u64::from_le_bytes(lo)
        ^ u64::from_le_bytes(hi).rotate_left(17)
        ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut uuid = [0u8; 16];
    SplitMix64::new(seed).fill(&mut uuid);
    uuid
}

/// Checks a nested geometry before anything is written.
pub fn check_nested(
    spec: NestedSpec,
    member_count: usize,
    name: &str,
    layout: Option<&str>,
) -> Result<(), CreateError> {
    let bad = |msg: String| Err(CreateError::Nesting(msg));
    let level = spec.name();
    let need_per_group = match spec.group_level {
        Level::Raid5 => 3,
        Level::Raid6 => 4,
        other => {
            return bad(format!(
                "groups of {other} cannot be nested (raid5 or raid6)"
            ));
        }
    };
    if spec.group_count < 2 {
        return bad(format!(
            "{level} needs at least 2 groups, {} given",
            spec.group_count
        ));
    }
    if !member_count.is_multiple_of(spec.group_count) {
        return bad(format!(
            "{member_count} members cannot be split into {} equal groups",
            spec.group_count
        ));
    }
    let per_group = member_count / spec.group_count;
    if per_group < need_per_group {
        return bad(format!(
            "{level} needs at least {need_per_group} members per group, {per_group} given \
             ({member_count} members in {} groups)",
            spec.group_count
        ));
    }
    let longest = group_name(name, spec.group_count - 1);
    if longest.len() > MAX_NAME_BYTES {
        return bad(format!(
            "array name '{name}' is too long for its group names ('{longest}' is over \
             {MAX_NAME_BYTES} bytes)"
        ));
    }
    parse_layout(spec.group_level, layout)?;
    Ok(())
}

/// Creates a nested array: `members` are split in order into `spec.group_count` equal
/// groups, each created as a `spec.group_level` array (`opts.layout` is the groups' layout,
/// `opts.chunk_sectors` every layer's chunk), then the outer array of level `opts.level`
/// (md's RAID 0) named `opts.name` is created over the groups.
pub async fn create_nested(
    exec: &Executor,
    members: Vec<NamedDevice>,
    opts: &CreateOptions,
    spec: NestedSpec,
) -> Result<Stack, CreateError> {
    if opts.level != Level::Raid0 {
        return Err(CreateError::Nesting(format!(
            "the outer array of a nested array is raid0, not {}",
            opts.level
        )));
    }
    check_nested(spec, members.len(), &opts.name, opts.layout.as_deref())?;
    // Each group checks its own members; one device in two groups is caught here.
    super::assemble::check_distinct(&members)?;
    let per_group = members.len() / spec.group_count;
    let mut groups: Vec<Rc<Array>> = Vec::new();
    let mut rest = members;
    for index in 0..spec.group_count {
        let tail = rest.split_off(per_group);
        let group_members = core::mem::replace(&mut rest, tail);
        let group_opts = CreateOptions {
            level: spec.group_level,
            layout: opts.layout.clone(),
            chunk_sectors: opts.chunk_sectors,
            name: group_name(&opts.name, index),
            uuid: group_uuid(&opts.uuid, index),
            time_s: opts.time_s,
            entropy: opts.entropy ^ (index as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03),
            assume_clean: opts.assume_clean,
        };
        groups.push(create(exec, group_members, &group_opts).await?);
    }
    let outer_members: Vec<NamedDevice> = groups
        .iter()
        .map(|g| (g.name().to_string(), g.clone() as Rc<dyn BlockDevice>))
        .collect();
    let outer_opts = CreateOptions {
        layout: None,
        ..opts.clone()
    };
    let array = create(exec, outer_members, &outer_opts).await?;
    Ok(Stack { array, groups })
}

/// The md superblock at the start of an array's data, if it holds one: then the array is a
/// member of another array.
pub async fn read_inner_superblock(array: &Array) -> Option<Superblock> {
    if array.capacity_sectors() < SUPERBLOCK_SECTOR + (SUPERBLOCK_BYTES / 512) as u64 {
        return None;
    }
    super::assemble::read_superblock(array).await.ok()
}

/// The arrays among `candidates` that are members of `outer`, in slot order.
pub fn groups_of(outer: &Array, candidates: &[Rc<Array>]) -> Vec<Rc<Array>> {
    outer
        .slots()
        .iter()
        .flatten()
        .filter_map(|m| {
            let dev = Rc::as_ptr(&m.dev) as *const ();
            candidates
                .iter()
                .find(|a| Rc::as_ptr(a) as *const () == dev)
                .cloned()
        })
        .collect()
}

/// Every stack that could start from the candidate devices, and why anything was left out.
#[derive(Default)]
pub struct StackAssembly {
    pub stacks: Vec<Stack>,
    pub problems: Vec<Problem>,
}

/// Assembles arrays from member devices, then the arrays whose members are those arrays
/// (one level of nesting, as md allows for RAID 50/60). Arrays holding a superblock whose
/// outer array cannot start are not returned: their data is only a part of the outer one.
pub async fn assemble_stacks(exec: &Executor, candidates: Vec<NamedDevice>) -> StackAssembly {
    let first = assemble(exec, candidates).await;
    let mut out = StackAssembly {
        stacks: Vec::new(),
        problems: first.problems,
    };
    let mut inner: Vec<Rc<Array>> = Vec::new();
    let mut plain: Vec<Rc<Array>> = Vec::new();
    for array in first.arrays {
        match read_inner_superblock(&array).await {
            Some(_) => inner.push(array),
            None => plain.push(array),
        }
    }
    if !inner.is_empty() {
        let named: Vec<NamedDevice> = inner
            .iter()
            .map(|a| (a.name().to_string(), a.clone() as Rc<dyn BlockDevice>))
            .collect();
        let second = assemble(exec, named).await;
        out.problems.extend(second.problems);
        let mut used: Vec<Rc<Array>> = Vec::new();
        for outer in second.arrays {
            let groups = groups_of(&outer, &inner);
            used.extend(groups.iter().cloned());
            out.stacks.push(Stack {
                array: outer,
                groups,
            });
        }
        for array in inner
            .iter()
            .filter(|a| !used.iter().any(|u| Rc::ptr_eq(u, a)))
        {
            out.problems.push(Problem {
                member: array.name().to_string(),
                reason: "member of an array that did not start; not served".to_string(),
            });
        }
    }
    out.stacks.extend(plain.into_iter().map(Stack::plain));
    out
}

#[cfg(test)]
mod tests;
