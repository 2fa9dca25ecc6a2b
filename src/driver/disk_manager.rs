//! The DiskManager: the member disks the kernel offered (and what their superblocks said),
//! which array each serves, and the shared spare pool.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use orion_driver::DeviceInfo;

use super::ipc_member::IpcMember;
use crate::block::BlockDevice;
use crate::metadata::Superblock;

/// What the driver knows of one member disk.
pub struct DiskEntry {
    pub info: DeviceInfo,
    pub device: Rc<IpcMember>,
    /// `None` until its superblock was read.
    pub superblock: Option<Result<Superblock, String>>,
    /// The array it serves in, if any.
    pub array_id: Option<u32>,
}

/// Member disks offered by the kernel, and the shared spare pool.
#[derive(Default)]
pub struct DiskManager {
    pub(super) disks: BTreeMap<u32, DiskEntry>,
    /// Spares any array with the `shared` spare policy may draw from.
    pub(super) spare_pool: Vec<(String, Rc<dyn BlockDevice>)>,
}

impl DiskManager {
    /// Adds a device to the shared spare pool; refused if the pool holds it already, by
    /// any name.
    pub fn add_pool_spare(&mut self, name: String, dev: Rc<dyn BlockDevice>) -> Result<(), String> {
        if let Some(role) = self.pool_role_of(&name, dev.as_ref()) {
            return Err(alloc::format!("{name} is already {role}"));
        }
        log::info!("{name} added to the shared spare pool");
        self.spare_pool.push((name, dev));
        Ok(())
    }

    /// "in the shared spare pool (as NAME)" if the pool holds `dev`: by its identity, or
    /// by its name for a device that cannot tell its identity.
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

    /// Takes the smallest pool spare of at least `min_sectors`.
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

    /// The pool: (name, capacity in sectors).
    pub fn pool(&self) -> Vec<(String, u64)> {
        self.spare_pool
            .iter()
            .map(|(n, d)| (n.clone(), d.capacity_sectors()))
            .collect()
    }

    pub fn get(&self, id: u32) -> Option<&DiskEntry> {
        self.disks.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &DiskEntry)> {
        self.disks.iter().map(|(&id, d)| (id, d))
    }

    pub fn len(&self) -> usize {
        self.disks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }
}
