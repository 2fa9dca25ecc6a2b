//! The asynchronous block device contract every member disk and every array implements.
//!
//! A device accepts many requests at once and answers each through a future: an IPC reply on
//! Orion, a worker thread on the host, a timer in simulation. Buffers are owned (a read takes
//! a `Vec` and gives it back filled; a write takes shared `Bytes`) so that a completion may
//! arrive from another thread and one payload can go to several mirrors without a copy.

use alloc::boxed::Box;
use alloc::rc::Weak;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;

pub use bytes::Bytes;

use crate::parity::ParityEngine;

/// The unit of every address in the engine, as in Linux md.
pub const SECTOR_BYTES: usize = 512;
/// `SECTOR_BYTES` as a shift.
pub const SECTOR_SHIFT: u32 = 9;

/// Why a block request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoError {
    /// The medium or transport failed for a range starting at `sector`.
    Media { sector: u64 },
    /// The request does not fit inside the device.
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity_sectors: u64,
    },
    /// A buffer length that is not a whole number of sectors.
    Misaligned { bytes: usize },
    /// The device is gone or was failed: nothing it holds can be reached.
    DeviceFailed,
    /// The device did not answer in time.
    Timeout,
    /// The array lost every copy of the data at `sector` (more failures than the level
    /// tolerates).
    DataLost { sector: u64 },
    /// The device takes no writes.
    ReadOnly,
    /// The operation is not offered by this device.
    Unsupported,
    /// The device has no room for the write (a full or over-quota host file system under
    /// an image file, a thin pool out of space). Nothing is wrong with the medium: the
    /// array passes it up and keeps the member.
    NoSpace,
}

impl IoError {
    /// Whether a member that answered a write with this error is failed for it. No space
    /// says nothing about the medium: failing members for it would turn a full host file
    /// system into an array that lost every member, and data written before unreadable.
    pub fn fails_member(&self) -> bool {
        !matches!(self, IoError::NoSpace)
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Media { sector } => write!(f, "media error at sector {sector}"),
            IoError::OutOfRange {
                sector,
                sectors,
                capacity_sectors,
            } => write!(
                f,
                "request of {sectors} sectors at sector {sector} is past the end ({capacity_sectors} sectors)"
            ),
            IoError::Misaligned { bytes } => {
                write!(
                    f,
                    "buffer of {bytes} bytes is not a whole number of sectors"
                )
            }
            IoError::DeviceFailed => f.write_str("device failed"),
            IoError::Timeout => f.write_str("device timed out"),
            IoError::DataLost { sector } => {
                write!(f, "data lost at sector {sector}: too many failed members")
            }
            IoError::ReadOnly => f.write_str("device is read-only"),
            IoError::Unsupported => f.write_str("operation not supported"),
            IoError::NoSpace => f.write_str("no space left on the device"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IoError {}

/// What makes a device the device it is, whatever name or path reached it: one device
/// never fills two roles (two slots, a slot and a spare, two arrays, an array and the
/// spare pool), and this is how the core tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceIdentity {
    /// A regular file: the device number of its file system and its inode (every path,
    /// symlink and hard link to it has the same).
    File { dev: u64, ino: u64 },
    /// A block device: its device number.
    Block { rdev: u64 },
    /// A disk the Orion kernel offered, by its device id.
    Kernel { device_id: u32 },
    /// A device that exists only in this process (a memory disk): a number no other
    /// device of the process has.
    Instance(u64),
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Linux's encoding of a dev_t (glibc's gnu_dev_major / gnu_dev_minor).
        let split = |d: u64| {
            (
                ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0xfff),
                ((d >> 12) & 0xffff_ff00) | (d & 0xff),
            )
        };
        match *self {
            DeviceIdentity::File { dev, ino } => {
                let (major, minor) = split(dev);
                write!(f, "inode {ino} on device {major}:{minor}")
            }
            DeviceIdentity::Block { rdev } => {
                let (major, minor) = split(rdev);
                write!(f, "block device {major}:{minor}")
            }
            DeviceIdentity::Kernel { device_id } => write!(f, "kernel disk {device_id}"),
            DeviceIdentity::Instance(n) => write!(f, "in-memory device #{n}"),
        }
    }
}

/// Why a device that still answers requests can no longer be trusted to keep data: what
/// [`BlockDevice::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProblem {
    /// The image file was deleted: it lives on only while open, and is lost at exit.
    Deleted,
    /// The device is now smaller than it was when opened: sectors past its end are gone.
    Shrunk {
        capacity_sectors: u64,
        now_sectors: u64,
    },
}

impl fmt::Display for DeviceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceProblem::Deleted => {
                f.write_str("its file was deleted (it is gone once the server exits)")
            }
            DeviceProblem::Shrunk {
                capacity_sectors,
                now_sectors,
            } => write!(
                f,
                "it shrank from {capacity_sectors} to {now_sectors} sectors (truncated?)"
            ),
        }
    }
}

/// Array health as users see it (an array's members only; [`HealthState`] refines it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Optimal,
    Degraded,
    Failed,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Optimal => "optimal",
            Health::Degraded => "degraded",
            Health::Failed => "failed",
        })
    }
}

/// The state every view reports (`raid status`, `raid stats`, the Prometheus
/// `orion_raid_health` label) of an array: its `Health`, with a degraded array whose every lost
/// redundancy is being rebuilt told apart. Computed only by `Array::health_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    Optimal,
    Degraded,
    Rebuilding,
    Failed,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Optimal => "optimal",
            HealthState::Degraded => "degraded",
            HealthState::Rebuilding => "rebuilding",
            HealthState::Failed => "failed",
        })
    }
}

/// A future a block device hands back for one request.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, IoError>> + 'a>>;

/// A device's sectors as a worker thread of the platform reads them itself, blocking and
/// off the engine: how an [`Offload`] job of another device reads its sources.
pub trait OffloadSource: Send + Sync {
    /// Fills `buf` from byte `offset` of the device; an error names the sector it hit.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError>;
}

/// Work a device's platform runs off the engine thread, offered through
/// [`BlockDevice::offload`] (the host's image files and block devices): a parity rebuild's
/// "read these cells, xor them, write the result" as one job, so that the engine neither
/// copies nor wakes up per cell.
pub trait Offload {
    /// The handle through which another device's job reads this device's sectors.
    fn source(&self) -> Arc<dyn OffloadSource>;

    /// Writes at `sector` of this device the xor of `bytes` read at each `(device, sector)`
    /// of `sources`, as one job. `None` when a source offers no [`Offload`]: the caller then
    /// reads, xors and writes itself. Nothing is retried: on an error part of the range
    /// may be written, and the caller redoes it its own way.
    fn write_xor_of<'a>(
        &'a self,
        sector: u64,
        sources: &[(&dyn BlockDevice, u64)],
        bytes: usize,
        engine: ParityEngine,
    ) -> Option<IoFuture<'a, ()>>;
}

/// An asynchronous block device addressed in 512-byte sectors.
///
/// Requests may be issued concurrently; completions may come back in any order. A write is
/// durable once it completes with `fua` set, or after a later `flush` completes.
pub trait BlockDevice {
    /// Size in sectors.
    fn capacity_sectors(&self) -> u64;

    /// Reads `buf.len()` bytes starting at `sector` into `buf` and gives it back.
    fn read(&self, sector: u64, buf: Vec<u8>) -> IoFuture<'_, Vec<u8>>;

    /// Reads `buf.len()` bytes starting at `sector` into a slice of a larger buffer, so that
    /// a request split across members lands in one reply buffer without a copy. The
    /// default reads into a buffer of its own and copies; devices that can fill the slice
    /// directly (the memory disk) override it.
    fn read_into<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> IoFuture<'a, ()> {
        let own = alloc::vec![0u8; buf.len()];
        let read = self.read(sector, own);
        Box::pin(async move {
            buf.copy_from_slice(&read.await?);
            Ok(())
        })
    }

    /// Writes `data` starting at `sector`; with `fua` the data is durable on completion.
    fn write(&self, sector: u64, data: Bytes, fua: bool) -> IoFuture<'_, ()>;

    /// Makes every completed write durable.
    fn flush(&self) -> IoFuture<'_, ()>;

    /// Tells the device a range is unused. Its content afterwards is unspecified.
    fn discard(&self, sector: u64, sectors: u64) -> IoFuture<'_, ()>;

    /// Largest request in bytes the device takes in one call; larger ones are split by callers
    /// that care (the engine splits by chunk anyway).
    fn max_io_bytes(&self) -> usize {
        1 << 20
    }

    /// The jobs this device's platform runs off the engine (see [`Offload`]); `None` by
    /// default: the device is reached only through its requests.
    fn offload(&self) -> Option<&dyn Offload> {
        None
    }

    /// For a device that is itself an array (a group of a RAID 50/60): its health, which
    /// the array built on it counts into its own. `None` by default: a disk's trouble shows
    /// in its answers.
    fn array_health(&self) -> Option<HealthState> {
        None
    }

    /// Tells a device that is itself an array the device built on it (its outer array),
    /// which it then tells of its health changes ([`Self::lower_health_changed`]); nothing
    /// by default.
    fn stack_under(&self, _upper: Weak<dyn BlockDevice>) {}

    /// A device this one is built on (see [`Self::stack_under`]) changed its health;
    /// nothing by default.
    fn lower_health_changed(&self) {}

    /// What makes this device itself (see [`DeviceIdentity`]); `None` for a device that
    /// cannot say (an array used as a member), which is then compared by nothing.
    fn identity(&self) -> Option<DeviceIdentity> {
        None
    }

    /// A cheap, synchronous look at whether the device is still what it was when opened
    /// (the host's image files: not deleted, not truncated), for the monitor's tick.
    /// `None`: nothing wrong that it can see.
    fn probe(&self) -> Option<DeviceProblem> {
        None
    }
}

/// Implements [`BlockDevice`] for a type whose logic lives in inherent `async fn`s named
/// `do_read`, `do_write`, `do_flush` and `do_discard`, with `$capacity` giving its size,
/// and optionally a block of further trait methods it overrides.
#[macro_export]
macro_rules! block_device_via_async_fns {
    ($ty:ty, |$this:ident| $capacity:expr) => {
        $crate::block_device_via_async_fns!($ty, |$this| $capacity, {});
    };
    // `{ ... }`: further methods of the trait (identity, probe) the type overrides.
    ($ty:ty, |$this:ident| $capacity:expr, { $($extra:tt)* }) => {
        impl $crate::block::BlockDevice for $ty {
            $($extra)*

            fn capacity_sectors(&self) -> u64 {
                let $this = self;
                $capacity
            }

            fn read(
                &self,
                sector: u64,
                buf: alloc::vec::Vec<u8>,
            ) -> $crate::block::IoFuture<'_, alloc::vec::Vec<u8>> {
                alloc::boxed::Box::pin(self.do_read(sector, buf))
            }

            fn write(
                &self,
                sector: u64,
                data: $crate::block::Bytes,
                fua: bool,
            ) -> $crate::block::IoFuture<'_, ()> {
                alloc::boxed::Box::pin(self.do_write(sector, data, fua))
            }

            fn flush(&self) -> $crate::block::IoFuture<'_, ()> {
                alloc::boxed::Box::pin(self.do_flush())
            }

            fn discard(&self, sector: u64, sectors: u64) -> $crate::block::IoFuture<'_, ()> {
                alloc::boxed::Box::pin(self.do_discard(sector, sectors))
            }
        }
    };
}

/// Checks that a request of `bytes` at `sector` is whole sectors and inside `capacity_sectors`,
/// returning its length in sectors.
pub fn check_range(sector: u64, bytes: usize, capacity_sectors: u64) -> Result<u64, IoError> {
    if !bytes.is_multiple_of(SECTOR_BYTES) {
        return Err(IoError::Misaligned { bytes });
    }
    let sectors = (bytes / SECTOR_BYTES) as u64;
    check_sectors(sector, sectors, capacity_sectors)?;
    Ok(sectors)
}

/// Checks that `sectors` sectors at `sector` lie inside `capacity_sectors`.
pub fn check_sectors(sector: u64, sectors: u64, capacity_sectors: u64) -> Result<(), IoError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity_sectors => Ok(()),
        _ => Err(IoError::OutOfRange {
            sector,
            sectors,
            capacity_sectors,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks() {
        assert_eq!(check_range(0, 1024, 2), Ok(2));
        assert_eq!(check_range(1, 512, 2), Ok(1));
        assert!(matches!(
            check_range(2, 512, 2),
            Err(IoError::OutOfRange { .. })
        ));
        assert_eq!(
            check_range(0, 100, 2),
            Err(IoError::Misaligned { bytes: 100 })
        );
        assert!(matches!(
            check_sectors(u64::MAX, 2, u64::MAX),
            Err(IoError::OutOfRange { .. })
        ));
    }
}
