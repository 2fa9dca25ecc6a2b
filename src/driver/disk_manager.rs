//! The DiskManager: the member disks the kernel offered (and what their superblocks said),
//! which array each serves, the shared spare pool, how a device named in a request is
//! opened, and the member requests of the storage service (`fail`, `remove`, `add`,
//! `replace`, `pool`). Discovery — which arrays the offered disks make — is here too: it
//! runs as the disks arrive.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use orion_driver::{DeviceInfo, DriverError};

use super::ipc_member::IpcMember;
use super::{Answer, ArrayManager, DeviceOpener};
use crate::array::Array;
use crate::array::assemble::{ASSEMBLY_OPTIONS, assemble, read_superblock};
use crate::array::members::MemberError;
use crate::array::persist::write_pool_label;
use crate::block::BlockDevice;
use crate::executor::Executor;
use crate::jobs::{self, SpareProvider};
use crate::manage::{self, Refusal};
use crate::metadata::{Candidate, SlotState, Superblock, group_candidates, plan_assembly};

/// A disk the driver knows: a kernel block device (its device id) or one given through the
/// embedding API. Its member name — what superblock problems, events and `raid add` use —
/// is `disk<N>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiskId(pub u32);

impl DiskId {
    /// The disk a member name (`disk<N>`) stands for, if it is one.
    pub fn parse(name: &str) -> Option<DiskId> {
        let digits = name.strip_prefix("disk")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(DiskId)
    }

    /// The member name of the disk.
    pub fn name(self) -> String {
        alloc::format!("{self}")
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "disk{}", self.0)
    }
}

/// What a kernel disk is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskUse {
    /// Nothing yet: discovery or `raid add` may take it.
    Free,
    /// A member or spare of the array served under this device id.
    Array(u32),
    /// Held by the shared spare pool.
    Pool,
}

pub struct DiskEntry {
    pub info: DeviceInfo,
    pub device: Rc<IpcMember>,
    /// `None` while its superblock is being read.
    pub superblock: Option<Result<Superblock, String>>,
    pub used_by: DiskUse,
}

#[derive(Default)]
pub struct DiskManager {
    disks: BTreeMap<DiskId, DiskEntry>,
    spare_pool: Vec<(String, Rc<dyn BlockDevice>)>,
    /// Opens a member named in a request that is not a free kernel disk: on the host a path.
    opener: Option<DeviceOpener>,
}

impl DiskManager {
    pub fn add_pool_spare(&mut self, name: String, dev: Rc<dyn BlockDevice>) -> Result<(), String> {
        if let Some(role) = self.pool_role_of(&name, dev.as_ref()) {
            return Err(alloc::format!("{name} is already {role}"));
        }
        log::info!("{name} added to the shared spare pool");
        // A kernel disk in the pool is no longer free for `raid add NAME diskN`.
        if let Some(entry) = DiskId::parse(&name).and_then(|id| self.disks.get_mut(&id)) {
            entry.used_by = DiskUse::Pool;
        }
        self.spare_pool.push((name, dev));
        Ok(())
    }

    pub fn pool_role_of(&self, name: &str, dev: &dyn BlockDevice) -> Option<String> {
        let id = dev.identity();
        let (held_as, _) = self.spare_pool.iter().find(|(n, d)| match id {
            Some(id) => d.identity() == Some(id),
            None => n == name,
        })?;
        Some(if held_as == name {
            "in the shared spare pool".into()
        } else {
            alloc::format!("in the shared spare pool (as {held_as})")
        })
    }

    pub fn take_pool_spare(&mut self, min_sectors: u64) -> Option<(String, Rc<dyn BlockDevice>)> {
        let i = self
            .spare_pool
            .iter()
            .enumerate()
            .filter(|(_, (_, d))| d.capacity_sectors() >= min_sectors)
            .min_by_key(|(_, (_, d))| d.capacity_sectors())
            .map(|(i, _)| i)?;
        Some(self.spare_pool.remove(i))
    }

    /// The shared pool: (name, size in sectors).
    pub fn pool(&self) -> Vec<(String, u64)> {
        self.spare_pool
            .iter()
            .map(|(n, d)| (n.clone(), d.capacity_sectors()))
            .collect()
    }

    pub fn get(&self, id: DiskId) -> Option<&DiskEntry> {
        self.disks.get(&id)
    }

    pub fn contains(&self, id: DiskId) -> bool {
        self.disks.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (DiskId, &DiskEntry)> {
        self.disks.iter().map(|(&id, d)| (id, d))
    }

    pub fn len(&self) -> usize {
        self.disks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    pub(super) fn set_opener(&mut self, opener: DeviceOpener) {
        self.opener = Some(opener);
    }

    /// A disk the kernel offered, its superblock not read yet.
    pub(super) fn insert(&mut self, id: DiskId, info: DeviceInfo, device: Rc<IpcMember>) {
        self.disks.insert(
            id,
            DiskEntry {
                info,
                device,
                superblock: None,
                used_by: DiskUse::Free,
            },
        );
    }

    /// The disk the kernel took away; a pool spare it was leaves the pool.
    pub(super) fn remove(&mut self, id: DiskId) -> Option<DiskEntry> {
        let entry = self.disks.remove(&id)?;
        if entry.used_by == DiskUse::Pool {
            let name = id.name();
            self.spare_pool.retain(|(n, _)| *n != name);
        }
        Some(entry)
    }

    /// Records what probing the disk found (it now counts for a degraded start).
    pub(super) fn probed(&mut self, id: DiskId, sb: Result<Superblock, String>) {
        if let Some(entry) = self.disks.get_mut(&id) {
            entry.superblock = Some(sb);
        }
    }

    /// Whether a disk offered is still being probed.
    pub fn probing(&self) -> bool {
        self.disks.values().any(|d| d.superblock.is_none())
    }

    /// Records that the kernel disk `name` (if it is one) now serves array `array_id`.
    pub(super) fn claim(&mut self, name: &str, array_id: Option<u32>) {
        if let Some(entry) = DiskId::parse(name).and_then(|id| self.disks.get_mut(&id)) {
            entry.used_by = array_id.map_or(DiskUse::Free, DiskUse::Array);
        }
    }

    /// Records that the kernel disk behind `dev` serves array `array_id`.
    pub(super) fn claim_device(&mut self, dev: &Rc<dyn BlockDevice>, array_id: u32) {
        if let Some(entry) = self
            .disks
            .values_mut()
            .find(|e| Rc::ptr_eq(&(e.device.clone() as Rc<dyn BlockDevice>), dev))
        {
            entry.used_by = DiskUse::Array(array_id);
        }
    }

    /// The disks of a stopped array are free again.
    pub(super) fn release_array(&mut self, array_id: u32) {
        for entry in self.disks.values_mut() {
            if entry.used_by == DiskUse::Array(array_id) {
                entry.used_by = DiskUse::Free;
            }
        }
    }

    /// The disks behind interrupt line `irq`: (id, device, array it serves).
    pub(super) fn on_irq(&self, irq: u32) -> Vec<(DiskId, Rc<IpcMember>, Option<u32>)> {
        self.disks
            .iter()
            .filter(|(_, d)| d.info.irq == Some(irq))
            .map(|(&id, d)| {
                let array = match d.used_by {
                    DiskUse::Array(a) => Some(a),
                    _ => None,
                };
                (id, d.device.clone(), array)
            })
            .collect()
    }

    /// Opens `name`: a free disk the kernel offered (`diskN`), else through the opener.
    pub(super) fn open(&self, name: &str) -> Result<Rc<dyn BlockDevice>, Refusal> {
        let free = DiskId::parse(name)
            .and_then(|id| self.disks.get(&id))
            .filter(|d| d.used_by == DiskUse::Free)
            .map(|d| d.device.clone() as Rc<dyn BlockDevice>);
        if let Some(dev) = free {
            return Ok(dev);
        }
        match &self.opener {
            Some(open) => open(name).map_err(Refusal::not_found),
            None => Err(Refusal::not_found(alloc::format!(
                "no free device named '{name}'"
            ))),
        }
    }
}

/// The shared pool is where the RebuildManager's jobs take a spare for a `shared` array
/// that has none of its own.
impl SpareProvider for RefCell<DiskManager> {
    fn take_spare(&self, min_sectors: u64) -> Option<(String, Rc<dyn BlockDevice>)> {
        self.borrow_mut().take_pool_spare(min_sectors)
    }
}

/// Opens the device a request names (`raid add`, `raid replace --with`), refused when it
/// already has a role in this driver.
fn open_unused(
    disks: &Rc<RefCell<DiskManager>>,
    arrays: &Rc<RefCell<ArrayManager>>,
    name: &str,
) -> Result<Rc<dyn BlockDevice>, Refusal> {
    let dev = disks.borrow().open(name)?;
    refuse_if_in_use(&arrays.borrow(), &disks.borrow(), name, dev.as_ref())?;
    Ok(dev)
}

/// The role `dev` (offered as `name`) already has anywhere in this driver: a member of a
/// served array (groups of a RAID 50/60 included) or a shared-pool spare.
fn refuse_if_in_use(
    arrays: &ArrayManager,
    disks: &DiskManager,
    name: &str,
    dev: &dyn BlockDevice,
) -> Result<(), Refusal> {
    let role = arrays
        .iter()
        .find_map(|(_, a)| a.role_of_device(name, dev))
        .or_else(|| disks.pool_role_of(name, dev));
    match role {
        Some(role) => Err(Refusal::new(
            DriverError::AlreadyExists,
            alloc::format!("{name} is already {role}; refused"),
        )),
        None => Ok(()),
    }
}

fn member_result(r: Result<(), MemberError>) -> Result<Vec<u8>, Refusal> {
    r.map(|()| Vec::new()).map_err(|e| {
        let code = match &e {
            MemberError::NoSuchMember(_) => DriverError::NotFound,
            MemberError::Io(_) => DriverError::Io,
            MemberError::InUse(_) | MemberError::WouldFail(_) => DriverError::Busy,
            MemberError::AlreadyMember { .. } => DriverError::AlreadyExists,
            _ => DriverError::InvalidArgument,
        };
        Refusal::new(code, alloc::format!("{e}"))
    })
}

/// `raid fail` / `raid remove`: answered once the superblocks record it.
pub(super) fn fail_or_remove(
    arrays: &Rc<RefCell<ArrayManager>>,
    req: manage::MemberRequest,
    fail: bool,
) -> Answer {
    let array = match arrays.borrow().member_target(&req.name, &req.member) {
        Ok(a) => a,
        Err(e) => return Answer::Now(Err(e)),
    };
    Answer::later(async move {
        member_result(if fail {
            array.fail_named(&req.member).await
        } else {
            array.remove_named(&req.member).await
        })
    })
}

/// `raid add`: a spare of an array (of the group of a RAID 50/60 that misses one), or of
/// the shared pool when no array is named.
pub(super) fn add(
    disks: &Rc<RefCell<DiskManager>>,
    arrays: &Rc<RefCell<ArrayManager>>,
    req: manage::AddRequest,
) -> Answer {
    let target = req.name.as_deref().map(|n| arrays.borrow().add_target(n));
    let array = match target.transpose() {
        Ok(a) => a,
        Err(e) => return Answer::Now(Err(e)),
    };
    let dev = match open_unused(disks, arrays, &req.member) {
        Ok(d) => d,
        Err(e) => return Answer::Now(Err(e)),
    };
    let Some(array) = array else {
        let (disks, arrays) = (disks.clone(), arrays.clone());
        return Answer::later(async move {
            label_pool_spare(&arrays, &req.member, dev.as_ref()).await?;
            disks
                .borrow_mut()
                .add_pool_spare(req.member.clone(), dev)
                .map_err(|e| Refusal::new(DriverError::AlreadyExists, e))?;
            // A shared array may be waiting for a spare.
            for (_, a) in arrays.borrow().iter() {
                jobs::start(a);
            }
            Ok(Vec::new())
        });
    };
    let id = arrays.borrow().id_of(&array);
    disks.borrow_mut().claim(&req.member, id);
    Answer::later(async move { member_result(array.add_device(req.member, dev).await) })
}

/// `raid replace NAME MEMBER --with NEW`.
pub(super) fn replace(
    disks: &Rc<RefCell<DiskManager>>,
    arrays: &Rc<RefCell<ArrayManager>>,
    req: manage::ReplaceRequest,
) -> Answer {
    let array = match arrays.borrow().member_target(&req.name, &req.member) {
        Ok(a) => a,
        Err(e) => return Answer::Now(Err(e)),
    };
    let dev = match open_unused(disks, arrays, &req.with) {
        Ok(d) => d,
        Err(e) => return Answer::Now(Err(e)),
    };
    let id = arrays.borrow().id_of(&array);
    disks.borrow_mut().claim(&req.with, id);
    Answer::later(
        async move { member_result(array.replace_named(&req.member, req.with, dev).await) },
    )
}

/// `raid pool`.
pub(super) fn pool_report(disks: &DiskManager) -> manage::PoolReport {
    manage::PoolReport {
        spares: disks
            .pool()
            .into_iter()
            .map(|(n, s)| (n, s * crate::block::SECTOR_BYTES as u64))
            .collect(),
    }
}

/// Writes the pool label on a device given to the shared pool, unless it is a member of a
/// running array (then nothing is written).
async fn label_pool_spare(
    arrays: &Rc<RefCell<ArrayManager>>,
    name: &str,
    dev: &dyn BlockDevice,
) -> Result<(), Refusal> {
    if let Ok(sb) = read_superblock(dev).await {
        let running = arrays
            .borrow()
            .iter()
            .find(|(_, a)| {
                a.superblock()
                    .is_some_and(|s| s.array_uuid == sb.array_uuid)
            })
            .map(|(_, a)| String::from(a.name()));
        if let Some(array) = running {
            return Err(Refusal::new(
                DriverError::AlreadyExists,
                alloc::format!("{name} is a member of running array {array}"),
            ));
        }
        log::info!(
            "{name}: md superblock of array {} wiped: it joins the spare pool",
            sb.name()
        );
    }
    write_pool_label(dev).await.map_err(|e| {
        Refusal::new(
            DriverError::Io,
            alloc::format!("{name}: pool label not written: {e}"),
        )
    })
}

/// The member sets to assemble now, as indexes into `superblocks`: per array, its members
/// when all of them are present and in sync, or, with `degraded_ok`, whatever it has.
pub(super) fn ready_member_sets(
    superblocks: Vec<Superblock>,
    degraded_ok: bool,
) -> Vec<Vec<usize>> {
    let candidates: Vec<Candidate> = superblocks
        .into_iter()
        .enumerate()
        .map(|(i, sb)| (i, Ok(sb)))
        .collect();
    group_candidates(&candidates)
        .arrays
        .into_iter()
        .filter(|(uuid, _)| {
            degraded_ok
                || plan_assembly(uuid, &candidates, ASSEMBLY_OPTIONS, |p| {
                    p.iter().all(|&x| x)
                })
                .is_ok_and(|plan| {
                    plan.slots
                        .iter()
                        .all(|s| matches!(s, SlotState::InSync { .. }))
                })
        })
        .map(|(_, ids)| ids)
        .collect()
}

/// Starts every array whose members are all present (or, once the boot's disks were all
/// offered, every array that can run degraded) from the disks not yet in an array.
///
/// Callers hold the driver's discovery lock: the disks found free here are marked used
/// only once their assembly is done, after member I/O, and a second discovery running
/// meanwhile (another probe finishing) would assemble the same disks again.
pub(super) async fn discover(
    exec: &Executor,
    disks: &Rc<RefCell<DiskManager>>,
    arrays: &Rc<RefCell<ArrayManager>>,
    degraded_ok: bool,
) {
    // A disk whose superblock is still being read may be the member that makes an array
    // whole: no array starts degraded until every offered disk has been probed (the last
    // probe to finish runs this again).
    let degraded_ok = degraded_ok && !disks.borrow().probing();
    // A disk of an array that runs without it (pulled and plugged in again, or late at
    // boot) is a stale member of that array, not the start of a second copy of it: as md's
    // incremental assembly, it is left for `raid add`.
    let running: Vec<([u8; 16], String)> = arrays
        .borrow()
        .iter()
        .filter_map(|(_, a)| {
            a.superblock()
                .map(|sb| (sb.array_uuid, String::from(a.name())))
        })
        .collect();
    let free: Vec<(DiskId, Rc<IpcMember>, Superblock)> = disks
        .borrow()
        .disks
        .iter()
        .filter(|(_, d)| d.used_by == DiskUse::Free)
        .filter_map(|(&id, d)| match &d.superblock {
            Some(Ok(sb)) => match running.iter().find(|(uuid, _)| *uuid == sb.array_uuid) {
                Some((_, name)) => {
                    log::info!(
                        "{id}: a member of running array {name} that runs without it; not \
                         started again (`raid add` puts it back)"
                    );
                    None
                }
                None => Some((id, d.device.clone(), sb.clone())),
            },
            _ => None,
        })
        .collect();
    let superblocks = free.iter().map(|(_, _, sb)| sb.clone()).collect();
    for ids in ready_member_sets(superblocks, degraded_ok) {
        let members: Vec<(String, Rc<dyn BlockDevice>)> = ids
            .iter()
            .map(|&i| {
                let (id, dev, _) = &free[i];
                (id.name(), dev.clone() as Rc<dyn BlockDevice>)
            })
            .collect();
        log::debug!(
            "discovery: assembling {} (degraded start allowed: {degraded_ok})",
            members
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let result = assemble(exec, members).await;
        for problem in &result.problems {
            log::warn!("{}: {}", problem.member, problem.reason);
        }
        for array in result.arrays {
            let array_id = arrays.borrow_mut().add(array.clone());
            log::info!("array {} started as device {array_id:#x}", array.name());
            // Resync after an unclean shutdown, rebuilds to resume, spares to activate.
            jobs::start(&array);
            for member in array.slots().iter().flatten() {
                if member.state() == crate::array::MemberState::Active {
                    disks.borrow_mut().claim_device(&member.dev, array_id);
                }
            }
        }
    }
    ArrayManager::discover_nested(exec, arrays, degraded_ok).await;
}

/// The slot of `array` the device `dev` fills, if any.
pub(super) fn slot_of(array: &Array, dev: &Rc<dyn BlockDevice>) -> Option<usize> {
    array
        .slots()
        .iter()
        .position(|m| m.as_ref().is_some_and(|m| Rc::ptr_eq(&m.dev, dev)))
}

#[cfg(test)]
mod tests {
    use super::DiskId;

    #[test]
    fn disk_ids_name_and_parse_both_ways() {
        assert_eq!(DiskId(7).name(), "disk7");
        assert_eq!(DiskId::parse("disk7"), Some(DiskId(7)));
        assert_eq!(DiskId::parse("disk0"), Some(DiskId(0)));
        for bad in [
            "disk",
            "disk-1",
            "disk7a",
            "vdisk7",
            "disk 7",
            "",
            "disk99999999999",
        ] {
            assert_eq!(DiskId::parse(bad), None, "{bad:?}");
        }
    }
}
