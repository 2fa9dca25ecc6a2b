//! `DeviceInfo`, the description of a device the kernel hands a driver, and its bounded strings.

use alloc::string::String;
use core::fmt;
use core::ops::Deref;

use crate::error::DriverError;

/// Longest device name in bytes (`sda`, `nvme0n1`, `md127`).
pub const NAME_MAX_BYTES: usize = 32;
/// Longest vendor string in bytes.
pub const VENDOR_MAX_BYTES: usize = 32;
/// Longest model string in bytes.
pub const MODEL_MAX_BYTES: usize = 64;
/// Longest serial number in bytes.
pub const SERIAL_MAX_BYTES: usize = 64;

/// Smallest logical block size a block device may report.
pub const MIN_BLOCK_SIZE_BYTES: u32 = 512;
/// Largest logical block size a block device may report.
pub const MAX_BLOCK_SIZE_BYTES: u32 = 64 * 1024;

/// A UTF-8 string of at most `MAX` bytes.
///
/// The bound is part of the type so a decoder never allocates more than `MAX` bytes for it and a
/// fixed-size record on the other side of the IPC boundary can always hold it.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct BoundedString<const MAX: usize>(String);

/// A string longer than its [`BoundedString`] bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringTooLong {
    /// Length of the rejected string in bytes.
    pub len_bytes: usize,
    /// The bound it exceeded.
    pub max_bytes: usize,
}

impl<const MAX: usize> BoundedString<MAX> {
    /// The bound in bytes.
    pub const MAX_BYTES: usize = MAX;

    /// The empty string.
    pub const fn empty() -> Self {
        BoundedString(String::new())
    }

    /// Copies `s`, refusing it if longer than `MAX` bytes.
    pub fn new(s: &str) -> Result<Self, StringTooLong> {
        if s.len() > MAX {
            return Err(StringTooLong {
                len_bytes: s.len(),
                max_bytes: MAX,
            });
        }
        Ok(BoundedString(String::from(s)))
    }

    /// Copies at most `MAX` bytes of `s`, cutting at a character boundary. For messages built
    /// from text of unknown length (error details), where losing the tail is better than failing.
    pub fn truncating(s: &str) -> Self {
        let mut end = s.len().min(MAX);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        BoundedString(String::from(&s[..end]))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<&str> for BoundedString<MAX> {
    type Error = StringTooLong;
    fn try_from(s: &str) -> Result<Self, StringTooLong> {
        Self::new(s)
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedString<MAX> {
    type Error = StringTooLong;
    fn try_from(s: String) -> Result<Self, StringTooLong> {
        if s.len() > MAX {
            return Err(StringTooLong {
                len_bytes: s.len(),
                max_bytes: MAX,
            });
        }
        Ok(BoundedString(s))
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for StringTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "string of {} bytes exceeds the limit of {} bytes",
            self.len_bytes, self.max_bytes
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StringTooLong {}

impl From<StringTooLong> for DriverError {
    fn from(_: StringTooLong) -> Self {
        DriverError::InvalidArgument
    }
}

/// What kind of device this is. The wire code is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    /// A block device: disk, partition, NVMe namespace, or a RAID array.
    Block,
    /// A storage controller (AHCI, NVMe, virtio-blk) whose driver exposes block devices.
    StorageController,
    /// A character device.
    Char,
    /// A network interface.
    Network,
    /// Anything else the kernel enumerates.
    Other,
}

impl DeviceClass {
    /// Every class, for exhaustive mapping and tests.
    pub const ALL: [DeviceClass; 5] = [
        DeviceClass::Block,
        DeviceClass::StorageController,
        DeviceClass::Char,
        DeviceClass::Network,
        DeviceClass::Other,
    ];

    /// Stable wire code.
    pub const fn code(self) -> u16 {
        match self {
            DeviceClass::Block => 1,
            DeviceClass::StorageController => 2,
            DeviceClass::Char => 3,
            DeviceClass::Network => 4,
            DeviceClass::Other => 0xffff,
        }
    }

    /// Inverse of [`DeviceClass::code`].
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Device properties a RAID layer must know about its members. A bit set, stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceFlags(u16);

impl DeviceFlags {
    /// Writes are refused.
    pub const READ_ONLY: DeviceFlags = DeviceFlags(1 << 0);
    /// The device can disappear at run time (USB, hot-swap bay).
    pub const REMOVABLE: DeviceFlags = DeviceFlags(1 << 1);
    /// Seek cost matters (spinning disk): prefer sequential member I/O.
    pub const ROTATIONAL: DeviceFlags = DeviceFlags(1 << 2);
    /// A volatile write cache: acknowledged writes are durable only after a flush or with FUA.
    pub const WRITE_CACHE: DeviceFlags = DeviceFlags(1 << 3);
    /// The device implements discard (TRIM/UNMAP).
    pub const DISCARD: DeviceFlags = DeviceFlags(1 << 4);
    /// Every bit this protocol version defines.
    pub const ALL: DeviceFlags = DeviceFlags(0b1_1111);

    /// No flag.
    pub const fn empty() -> Self {
        DeviceFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The flags of `bits`, or `None` if a bit this version does not define is set: an unknown
    /// property could change how the device must be driven, so it is not silently dropped.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(DeviceFlags(bits))
        } else {
            None
        }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: DeviceFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    pub const fn union(self, other: DeviceFlags) -> Self {
        DeviceFlags(self.0 | other.0)
    }
}

impl core::ops::BitOr for DeviceFlags {
    type Output = DeviceFlags;
    fn bitor(self, rhs: DeviceFlags) -> DeviceFlags {
        self.union(rhs)
    }
}

/// A device as the kernel describes it to a driver (in `Probe` and `Hotplug`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceInfo {
    /// Kernel-assigned device id, unique while the device exists.
    pub id: u32,
    /// What kind of device.
    pub class: DeviceClass,
    /// Properties.
    pub flags: DeviceFlags,
    /// Logical block size in bytes: 0 for a device without blocks, otherwise a power of two in
    /// [`MIN_BLOCK_SIZE_BYTES`]`..=`[`MAX_BLOCK_SIZE_BYTES`].
    pub block_size_bytes: u32,
    /// Capacity in logical blocks of `block_size_bytes`.
    pub capacity_blocks: u64,
    /// The interrupt line the driver handles for this device, if any.
    pub irq: Option<u32>,
    /// Kernel name of the device.
    pub name: BoundedString<NAME_MAX_BYTES>,
    /// Vendor string as reported by the hardware (may be empty).
    pub vendor: BoundedString<VENDOR_MAX_BYTES>,
    /// Model string as reported by the hardware (may be empty).
    pub model: BoundedString<MODEL_MAX_BYTES>,
    /// Serial number (may be empty); lets the RAID layer tell members apart across reboots.
    pub serial: BoundedString<SERIAL_MAX_BYTES>,
}

/// Why a `DeviceInfo` is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceInfoError {
    /// The block size is not 0 nor a power of two in the allowed range.
    BadBlockSize,
    /// The device has no blocks but claims a capacity.
    CapacityWithoutBlocks,
    /// Capacity in bytes does not fit in 64 bits.
    CapacityOverflow,
}

impl fmt::Display for DeviceInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceInfoError::BadBlockSize => {
                "block size is not a power of two between 512 and 65536 bytes"
            }
            DeviceInfoError::CapacityWithoutBlocks => "capacity given with a block size of 0",
            DeviceInfoError::CapacityOverflow => "capacity in bytes overflows 64 bits",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DeviceInfoError {}

impl DeviceInfo {
    /// A block device description with empty vendor, model and serial and no IRQ.
    pub fn block(
        id: u32,
        name: &str,
        block_size_bytes: u32,
        capacity_blocks: u64,
    ) -> Result<Self, DriverError> {
        let info = DeviceInfo {
            id,
            class: DeviceClass::Block,
            flags: DeviceFlags::empty(),
            block_size_bytes,
            capacity_blocks,
            irq: None,
            name: BoundedString::new(name)?,
            vendor: BoundedString::empty(),
            model: BoundedString::empty(),
            serial: BoundedString::empty(),
        };
        info.validate().map_err(|_| DriverError::InvalidArgument)?;
        Ok(info)
    }

    /// Checks the rules the field types cannot express.
    pub fn validate(&self) -> Result<(), DeviceInfoError> {
        if self.block_size_bytes == 0 {
            if self.capacity_blocks != 0 {
                return Err(DeviceInfoError::CapacityWithoutBlocks);
            }
            return Ok(());
        }
        if !self.block_size_bytes.is_power_of_two()
            || !(MIN_BLOCK_SIZE_BYTES..=MAX_BLOCK_SIZE_BYTES).contains(&self.block_size_bytes)
        {
            return Err(DeviceInfoError::BadBlockSize);
        }
        if self.capacity_bytes().is_none() {
            return Err(DeviceInfoError::CapacityOverflow);
        }
        Ok(())
    }

    /// Capacity in bytes, `None` if it overflows.
    pub fn capacity_bytes(&self) -> Option<u64> {
        self.capacity_blocks
            .checked_mul(u64::from(self.block_size_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_string_enforces_its_bound() {
        assert!(BoundedString::<4>::new("abcd").is_ok());
        assert_eq!(
            BoundedString::<4>::new("abcde"),
            Err(StringTooLong {
                len_bytes: 5,
                max_bytes: 4
            })
        );
        assert_eq!(
            BoundedString::<4>::try_from(String::from("12345")).map(|s| s.len()),
            Err(StringTooLong {
                len_bytes: 5,
                max_bytes: 4
            })
        );
    }

    #[test]
    fn truncating_cuts_at_a_char_boundary() {
        // "é" is two bytes; a cut in its middle must back off to before it.
        assert_eq!(BoundedString::<4>::truncating("abcé").as_str(), "abc");
        assert_eq!(BoundedString::<5>::truncating("abcé").as_str(), "abcé");
        assert_eq!(BoundedString::<0>::truncating("x").as_str(), "");
    }

    #[test]
    fn device_flags_reject_unknown_bits() {
        assert_eq!(DeviceFlags::from_bits(0b1_1111), Some(DeviceFlags::ALL));
        assert_eq!(DeviceFlags::from_bits(1 << 5), None);
        let f = DeviceFlags::READ_ONLY | DeviceFlags::WRITE_CACHE;
        assert!(f.contains(DeviceFlags::WRITE_CACHE));
        assert!(!f.contains(DeviceFlags::DISCARD));
    }

    #[test]
    fn device_class_codes_round_trip() {
        for c in DeviceClass::ALL {
            assert_eq!(DeviceClass::from_code(c.code()), Some(c));
        }
        assert_eq!(DeviceClass::from_code(0), None);
    }

    #[test]
    fn device_info_validation() {
        let ok = DeviceInfo::block(7, "sda", 4096, 1 << 20).unwrap();
        assert_eq!(ok.capacity_bytes(), Some(4096 << 20));
        assert_eq!(
            DeviceInfo::block(1, "sda", 1000, 1),
            Err(DriverError::InvalidArgument)
        );
        assert_eq!(
            DeviceInfo::block(1, "sda", 256, 1),
            Err(DriverError::InvalidArgument)
        );
        assert_eq!(
            DeviceInfo::block(1, &"x".repeat(NAME_MAX_BYTES + 1), 512, 1),
            Err(DriverError::InvalidArgument)
        );
        let mut info = ok.clone();
        info.block_size_bytes = 0;
        assert_eq!(info.validate(), Err(DeviceInfoError::CapacityWithoutBlocks));
        info.capacity_blocks = 0;
        assert_eq!(info.validate(), Ok(()));
        info.block_size_bytes = 65536;
        info.capacity_blocks = u64::MAX;
        assert_eq!(info.validate(), Err(DeviceInfoError::CapacityOverflow));
        info.block_size_bytes = 131072;
        info.capacity_blocks = 1;
        assert_eq!(info.validate(), Err(DeviceInfoError::BadBlockSize));
    }
}
