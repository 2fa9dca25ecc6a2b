//! The driver as a library (the Orion README's API): build arrays on any block devices, read
//! and write them, add and remove disks, rebuild, and ask for status, without frames. The
//! storage service embeds the driver this way, and tests drive it with RAM disks.
//!
//! ```
//! use orion_raid::prelude::*;
//!
//! # fn main() -> Result<(), RaidError> {
//! let mut driver = RaidDriver::new();
//! let disk1 = Disk::memory(64 << 20);
//! let disk2 = Disk::memory(64 << 20);
//! let raid_config = RaidConfig {
//!     level: RaidLevel::RAID1,
//!     disks: vec![disk1, disk2],
//!     stripe_size: 64,
//!     ..Default::default()
//! };
//! let raid = driver.create_array(raid_config)?;
//! let buffer = vec![0x5a; 4096];
//! driver.write_blocks(raid, 0, &buffer)?;
//! let mut back = vec![0; 4096];
//! driver.read_blocks(raid, 0, &mut back)?;
//! assert_eq!(back, buffer);
//!
//! let new_disk = Disk::memory(64 << 20);
//! let spare = driver.add_disk(raid, new_disk)?; // joins as a spare
//! let first = driver.disks(raid)?[0].id;
//! driver.remove_disk(raid, first)?; // hot removal: the array degrades
//! driver.start_rebuild(raid)?;
//! driver.run_until_idle();
//! assert_eq!(driver.status(raid)?.health, Health::Optimal);
//! assert!(driver.disks(raid)?.iter().any(|d| d.id == spare && d.state == DiskState::Active));
//! driver.read_blocks(raid, 0, &mut back)?;
//! assert_eq!(back, buffer);
//! # Ok(())
//! # }
//! ```

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::array::assemble::{CreateError, CreateOptions, create};
use crate::array::members::MemberError;
use crate::array::nested::{NestedSpec, create_nested};
use crate::array::{Array, HealthState, MemberState};
use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES};
use crate::driver::RaidDriver;
use crate::metadata::Level;
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

pub use crate::array::HealthState as Health;

/// An array served by the driver (its device id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArrayId(pub u32);

/// A disk given to the driver through this API: the driver's one disk id type.
pub use crate::driver::DiskId;

impl fmt::Display for ArrayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "array {:#x}", self.0)
    }
}

/// A cheap, clonable handle to any block device.
#[derive(Clone)]
pub struct Disk {
    device: Rc<dyn BlockDevice>,
}

impl Disk {
    /// A RAM disk of `bytes` (rounded down to whole sectors): the mock block device.
    pub fn memory(bytes: u64) -> Disk {
        Disk::new(Rc::new(MemoryDisk::new(bytes / SECTOR_BYTES as u64)))
    }

    /// Any block device.
    pub fn new(device: Rc<dyn BlockDevice>) -> Disk {
        Disk { device }
    }

    /// The device behind the handle.
    pub fn device(&self) -> &Rc<dyn BlockDevice> {
        &self.device
    }
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Disk({} sectors)", self.device.capacity_sectors())
    }
}

/// The RAID levels the driver builds.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaidLevel {
    RAID0,
    #[default]
    RAID1,
    RAID4,
    RAID5,
    RAID6,
    RAID10,
    /// RAID 0 over RAID 5 groups ([`RaidConfig::groups`]).
    RAID50,
    /// RAID 0 over RAID 6 groups.
    RAID60,
}

impl RaidLevel {
    fn md_level(self) -> Level {
        match self {
            RaidLevel::RAID0 | RaidLevel::RAID50 | RaidLevel::RAID60 => Level::Raid0,
            RaidLevel::RAID1 => Level::Raid1,
            RaidLevel::RAID4 => Level::Raid4,
            RaidLevel::RAID5 => Level::Raid5,
            RaidLevel::RAID6 => Level::Raid6,
            RaidLevel::RAID10 => Level::Raid10,
        }
    }

    fn nested(self, groups: usize) -> Option<NestedSpec> {
        match self {
            RaidLevel::RAID50 => NestedSpec::for_level(50, groups),
            RaidLevel::RAID60 => NestedSpec::for_level(60, groups),
            _ => None,
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self {
            RaidLevel::RAID0 => 0,
            RaidLevel::RAID1 => 1,
            RaidLevel::RAID4 => 4,
            RaidLevel::RAID5 => 5,
            RaidLevel::RAID6 => 6,
            RaidLevel::RAID10 => 10,
            RaidLevel::RAID50 => 50,
            RaidLevel::RAID60 => 60,
        };
        write!(f, "raid{n}")
    }
}

/// What `create_array` builds.
#[derive(Debug, Clone)]
pub struct RaidConfig {
    pub level: RaidLevel,
    /// The members, in slot order (for RAID 50 / 60: group after group).
    pub disks: Vec<Disk>,
    /// md's chunk, in KiB (a power of two, at least 4; ignored by RAID1).
    pub stripe_size: u32,
    /// The array's name; empty: `array{N}`.
    pub name: String,
    /// mdadm's layout name (`n2`, `f2`, `left-symmetric`, …); `None` for the level's default.
    pub layout: Option<String>,
    /// RAID 50 / 60: how many groups the disks are split into (at least 2).
    pub groups: usize,
    /// The disks are known to hold the same content already (new, zeroed): no initial
    /// resync (mdadm's `--assume-clean`).
    pub assume_clean: bool,
}

impl Default for RaidConfig {
    fn default() -> Self {
        RaidConfig {
            level: RaidLevel::RAID1,
            disks: Vec::new(),
            stripe_size: 512,
            name: String::new(),
            layout: None,
            groups: 2,
            assume_clean: false,
        }
    }
}

/// What a disk does in its array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// In sync and serving.
    Active,
    /// Being rebuilt in a slot.
    Rebuilding,
    /// Waiting to take the place of a failed disk.
    Spare,
    /// Failed.
    Faulty,
}

/// One disk of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub id: DiskId,
    pub state: DiskState,
    /// Its slot, while it holds one.
    pub slot: Option<u32>,
    pub capacity_sectors: u64,
}

/// An array's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayStatus {
    pub name: String,
    pub level: RaidLevel,
    pub health: Health,
    pub capacity_sectors: u64,
    /// Slots holding an in-sync disk, of all slots (for RAID 50 / 60: over every group).
    pub active_disks: usize,
    pub slots: usize,
    /// Progress of a rebuild, resync or check running now, 0.0 ..= 1.0.
    pub job_progress: Option<f64>,
}

/// Why an API call failed. Nothing is changed by a call that fails its checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RaidError {
    /// The configuration cannot make an array.
    InvalidConfig(String),
    UnknownArray(ArrayId),
    UnknownDisk(DiskId),
    /// The buffer is not a whole number of 512-byte sectors.
    Misaligned {
        bytes: usize,
    },
    /// The request reaches past the end of the array.
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity_sectors: u64,
    },
    /// A member operation was refused (in use, too small, would fail the array, …).
    Member(String),
    /// The array failed the I/O.
    Io(IoError),
}

impl fmt::Display for RaidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaidError::InvalidConfig(why) => write!(f, "invalid array configuration: {why}"),
            RaidError::UnknownArray(id) => write!(f, "no {id}"),
            RaidError::UnknownDisk(id) => write!(f, "no {id} in this array"),
            RaidError::Misaligned { bytes } => {
                write!(f, "a buffer of {bytes} bytes is not whole 512-byte sectors")
            }
            RaidError::OutOfRange {
                sector,
                sectors,
                capacity_sectors,
            } => write!(
                f,
                "sectors {sector}..{} are past the end of the array ({capacity_sectors} \
                 sectors)",
                sector.saturating_add(*sectors)
            ),
            RaidError::Member(why) => f.write_str(why),
            RaidError::Io(e) => write!(f, "I/O failed: {e}"),
        }
    }
}

impl core::error::Error for RaidError {}

impl From<CreateError> for RaidError {
    fn from(e: CreateError) -> Self {
        RaidError::InvalidConfig(e.to_string())
    }
}

impl From<MemberError> for RaidError {
    fn from(e: MemberError) -> Self {
        RaidError::Member(e.to_string())
    }
}

/// The disks given through this API, by id: the array each belongs to and the name its
/// array knows it by.
#[derive(Default)]
pub(crate) struct EmbeddedDisks {
    disks: BTreeMap<DiskId, (ArrayId, String, Rc<dyn BlockDevice>)>,
    next: u32,
    arrays: u32,
}

impl EmbeddedDisks {
    /// The member name the disk registered `ahead` places from now will have.
    fn name_ahead(&self, ahead: u32) -> String {
        format!("vdisk{}", self.next + ahead)
    }

    fn register(&mut self, array: ArrayId, device: Rc<dyn BlockDevice>) -> DiskId {
        let id = DiskId(self.next);
        let name = self.name_ahead(0);
        self.next += 1;
        self.disks.insert(id, (array, name, device));
        id
    }
}

impl Default for RaidDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl RaidDriver {
    /// A driver with its own executor (simulated time: background work runs in
    /// [`RaidDriver::run_until_idle`] and while calls wait).
    pub fn new() -> Self {
        RaidDriver::with_executor(crate::executor::Executor::new())
    }

    fn array_of(&self, id: ArrayId) -> Result<Rc<Array>, RaidError> {
        self.arrays()
            .get(id.0)
            .cloned()
            .ok_or(RaidError::UnknownArray(id))
    }

    /// Runs `future` on the driver's executor to its end.
    fn wait<T: 'static>(&self, future: impl core::future::Future<Output = T> + 'static) -> T {
        self.executor()
            .block_on(future)
            .expect("the driver's own tasks always complete in simulated time")
    }

    /// Builds an array on `config.disks` (each gets an md superblock) and serves it.
    pub fn create_array(&mut self, config: RaidConfig) -> Result<ArrayId, RaidError> {
        if config.disks.is_empty() {
            return Err(RaidError::InvalidConfig("no disks".into()));
        }
        let kib = config.stripe_size;
        if kib < 4 || !kib.is_power_of_two() {
            return Err(RaidError::InvalidConfig(format!(
                "stripe_size {kib} KiB: a power of two of at least 4 KiB"
            )));
        }
        let nested = config.level.nested(config.groups);
        if nested.is_some() && config.groups < 2 {
            return Err(RaidError::InvalidConfig(format!(
                "{} needs at least 2 groups, not {}",
                config.level, config.groups
            )));
        }
        let embedded = self.embedded();
        let number = embedded.borrow().arrays;
        let name = if config.name.is_empty() {
            format!("array{number}")
        } else {
            config.name.clone()
        };
        // No random source in the core: the UUID comes from the driver's count and clock.
        let mut rng = SplitMix64::new(
            self.executor().now_ns() ^ u64::from(number).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let mut uuid = [0u8; 16];
        rng.fill(&mut uuid);
        let opts = CreateOptions {
            level: config.level.md_level(),
            layout: config.layout.clone(),
            chunk_sectors: kib * 2,
            name,
            uuid,
            time_s: self.executor().now_ns() / 1_000_000_000,
            entropy: rng.next_u64(),
            assume_clean: config.assume_clean,
        };
        // Names first: the array knows its members by them. Registered only once created.
        let members: Vec<(String, Rc<dyn BlockDevice>)> = config
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (embedded.borrow().name_ahead(i as u32), d.device.clone()))
            .collect();
        let exec = self.executor().clone();
        let id = match nested {
            Some(spec) => {
                let stack =
                    self.wait(async move { create_nested(&exec, members, &opts, spec).await })?;
                // Served first: the RebuildManager runs their jobs.
                let id = self.add_stack(&stack);
                for layer in stack.layers() {
                    crate::jobs::start(layer);
                }
                id
            }
            None => {
                let array = self.wait(async move { create(&exec, members, &opts).await })?;
                let id = self.add_array(array.clone());
                crate::jobs::start(&array);
                id
            }
        };
        let id = ArrayId(id);
        let mut e = embedded.borrow_mut();
        e.arrays += 1;
        for d in &config.disks {
            e.register(id, d.device.clone());
        }
        Ok(id)
    }

    fn check_range(array: &Array, sector: u64, bytes: usize) -> Result<u64, RaidError> {
        if !bytes.is_multiple_of(SECTOR_BYTES) {
            return Err(RaidError::Misaligned { bytes });
        }
        let sectors = (bytes / SECTOR_BYTES) as u64;
        let capacity_sectors = array.capacity_sectors();
        if sector
            .checked_add(sectors)
            .is_none_or(|end| end > capacity_sectors)
        {
            return Err(RaidError::OutOfRange {
                sector,
                sectors,
                capacity_sectors,
            });
        }
        Ok(sectors)
    }

    /// Writes `buffer` (whole sectors) at array sector `offset`; done once every member
    /// that takes it has it (write-through).
    pub fn write_blocks(
        &mut self,
        id: ArrayId,
        offset: u64,
        buffer: &[u8],
    ) -> Result<(), RaidError> {
        let array = self.array_of(id)?;
        Self::check_range(&array, offset, buffer.len())?;
        let data = Bytes::from(buffer.to_vec());
        self.wait(async move { array.write(offset, data, false).await })
            .map_err(RaidError::Io)
    }

    /// Reads whole sectors at array sector `offset` into `buffer`.
    pub fn read_blocks(
        &mut self,
        id: ArrayId,
        offset: u64,
        buffer: &mut [u8],
    ) -> Result<(), RaidError> {
        let array = self.array_of(id)?;
        Self::check_range(&array, offset, buffer.len())?;
        let len = buffer.len();
        let data = self
            .wait(async move { array.read(offset, vec![0u8; len]).await })
            .map_err(RaidError::Io)?;
        buffer.copy_from_slice(&data);
        Ok(())
    }

    /// Adds `disk` to the array as a spare (for RAID 50 / 60, to one of its groups); if a
    /// slot is empty, it takes it and is rebuilt.
    pub fn add_disk(&mut self, id: ArrayId, disk: Disk) -> Result<DiskId, RaidError> {
        let array = self.array_of(id)?;
        let embedded = self.embedded();
        let name = embedded.borrow().name_ahead(0);
        // A RAID 50 / 60 spare joins one group: a degraded one if there is, else the one
        // with the fewest spares (each group is an md array with its own spares).
        let groups: Vec<Rc<Array>> = self
            .arrays()
            .groups_of(id.0)
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        let target = groups
            .iter()
            .find(|g| g.health_state() != HealthState::Optimal)
            .or_else(|| groups.iter().min_by_key(|g| g.spares().len()))
            .cloned()
            .unwrap_or(array);
        let (n, dev) = (name.clone(), disk.device.clone());
        self.wait(async move { target.add_device(n, dev).await })?;
        Ok(embedded.borrow_mut().register(id, disk.device.clone()))
    }

    /// The array (or group) holding the member named `name`.
    fn holder(&self, id: ArrayId, name: &str) -> Option<Rc<Array>> {
        let array = self.array_of(id).ok()?;
        if array.find_member(name).is_some() {
            return Some(array);
        }
        self.arrays()
            .groups_of(id.0)
            .into_iter()
            .map(|(_, g)| g)
            .find(|g| g.find_member(name).is_some())
    }

    /// Hot removal: the disk leaves the array (failed first if it was serving; the array
    /// degrades, and a spare takes its place if there is one). Refused when the array could
    /// not survive it.
    pub fn remove_disk(&mut self, id: ArrayId, disk: DiskId) -> Result<(), RaidError> {
        self.array_of(id)?;
        let name = match self.embedded().borrow().disks.get(&disk) {
            Some((owner, name, _)) if *owner == id => name.clone(),
            _ => return Err(RaidError::UnknownDisk(disk)),
        };
        let Some(holder) = self.holder(id, &name) else {
            return Err(RaidError::UnknownDisk(disk));
        };
        let n = name.clone();
        let h = holder.clone();
        self.wait(async move {
            let member = h.find_member(&n);
            if member.is_some_and(|m| m.state() != MemberState::Faulty) {
                h.fail_named(&n).await?;
            }
            h.remove_named(&n).await
        })?;
        self.embedded().borrow_mut().disks.remove(&disk);
        Ok(())
    }

    /// Starts the background jobs an array needs (a rebuild onto a spare, a resync); Ok if
    /// one is already running or there is nothing to do.
    pub fn start_rebuild(&mut self, id: ArrayId) -> Result<(), RaidError> {
        let array = self.array_of(id)?;
        crate::jobs::start(&array);
        for (_, g) in self.arrays().groups_of(id.0) {
            crate::jobs::start(&g);
        }
        Ok(())
    }

    /// Runs every background job to its end (simulated time jumps to each timer).
    pub fn run_until_idle(&mut self) {
        self.executor().run_until_idle();
    }

    /// The disks of an array given through this API, with their state.
    pub fn disks(&self, id: ArrayId) -> Result<Vec<DiskInfo>, RaidError> {
        self.array_of(id)?;
        let embedded = self.embedded();
        let e = embedded.borrow();
        let mut out = Vec::new();
        for (&disk_id, (owner, name, dev)) in &e.disks {
            if *owner != id {
                continue;
            }
            let (state, slot) = match self.holder(id, name) {
                Some(holder) => {
                    let member = holder.find_member(name).expect("holder has it");
                    let slot = holder
                        .slots()
                        .iter()
                        .position(|s| s.as_ref().is_some_and(|m| Rc::ptr_eq(m, &member)))
                        .map(|s| s as u32);
                    let state = match member.state() {
                        MemberState::Active => DiskState::Active,
                        MemberState::Rebuilding => DiskState::Rebuilding,
                        MemberState::Spare => DiskState::Spare,
                        MemberState::Faulty => DiskState::Faulty,
                    };
                    (state, slot)
                }
                None => (DiskState::Spare, None),
            };
            out.push(DiskInfo {
                id: disk_id,
                state,
                slot,
                capacity_sectors: dev.capacity_sectors(),
            });
        }
        Ok(out)
    }

    /// An array's health, size and progress.
    pub fn status(&self, id: ArrayId) -> Result<ArrayStatus, RaidError> {
        let array = self.array_of(id)?;
        let groups = self.arrays().groups_of(id.0);
        let nested = !groups.is_empty();
        let layers: Vec<Rc<Array>> = if groups.is_empty() {
            vec![array.clone()]
        } else {
            groups.into_iter().map(|(_, g)| g).collect()
        };
        // An outer array's health already takes in its groups'.
        let health = array.health_state();
        let (mut active, mut slots) = (0, 0);
        let mut job_progress = None;
        for layer in &layers {
            let s = layer.slots();
            slots += s.len();
            active += s
                .iter()
                .flatten()
                .filter(|m| m.state() == MemberState::Active)
                .count();
            if let Some(job) = layer.job() {
                job_progress = Some(job.fraction());
            }
        }
        let level = level_of(&array, nested.then(|| layers[0].as_ref()));
        Ok(ArrayStatus {
            name: array.name().to_string(),
            level,
            health,
            capacity_sectors: array.capacity_sectors(),
            active_disks: active,
            slots,
            job_progress,
        })
    }
}

/// The level of `array`; `group` is one of its groups when it is nested.
fn level_of(array: &Array, group: Option<&Array>) -> RaidLevel {
    let md = |a: &Array| a.superblock().map(|sb| sb.level);
    if let Some(group) = group {
        return match md(group) {
            Some(Level::Raid6) => RaidLevel::RAID60,
            _ => RaidLevel::RAID50,
        };
    }
    match md(array) {
        Some(Level::Raid0) => RaidLevel::RAID0,
        Some(Level::Raid4) => RaidLevel::RAID4,
        Some(Level::Raid5) => RaidLevel::RAID5,
        Some(Level::Raid6) => RaidLevel::RAID6,
        Some(Level::Raid10) => RaidLevel::RAID10,
        _ => RaidLevel::RAID1,
    }
}
