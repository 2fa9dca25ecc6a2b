//! md's partial parity log (PPL, RAID5): where a member's log area is and what an empty log
//! header looks like. The driver does not keep a PPL yet; when it writes an array that has
//! one, it empties every member's log first, as md does each time it starts such an array,
//! so that Linux never replays partial parity logged before our writes over data we changed.
//!
//! The format is `struct ppl_header` from the kernel's `include/uapi/linux/raid/md_p.h`:
//! 4 KiB, `reserved[512]` (0xff), then `signature` le32, `padding` le32, `generation` le64,
//! `entries_count` le32, `checksum` le32 and the entries. Checksums are CRC-32C as md writes
//! them (`~crc32c_le(~0, …)`: the standard CRC-32C); the header's is taken with its checksum
//! field zero, and a native (non-external) array's signature is the CRC-32C of its UUID.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::superblock::Superblock;

/// Bytes of a PPL header (`PPL_HEADER_SIZE`).
pub const PPL_HEADER_BYTES: usize = 4096;
/// Sectors of a PPL header.
pub const PPL_HEADER_SECTORS: u64 = (PPL_HEADER_BYTES / 512) as u64;

const OFF_RESERVED_END: usize = 512;
const OFF_SIGNATURE: usize = 512;
const OFF_GENERATION: usize = 520;
const OFF_ENTRIES_COUNT: usize = 528;
const OFF_CHECKSUM: usize = 532;
/// Entries that fit in a header (`PPL_HDR_MAX_ENTRIES`): 24 bytes each after the fields.
pub const PPL_MAX_ENTRIES: u32 = ((PPL_HEADER_BYTES - 536) / 24) as u32;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC-32C as md's PPL uses it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// The signature of a native md array's PPL headers.
pub fn signature(array_uuid: &[u8; 16]) -> u32 {
    crc32c(array_uuid)
}

/// The checksum of a header block: CRC-32C of the block with its checksum field zero.
pub fn header_checksum(block: &[u8]) -> u32 {
    let mut digest = CRC32C.digest();
    digest.update(&block[..OFF_CHECKSUM]);
    digest.update(&[0; 4]);
    digest.update(&block[OFF_CHECKSUM + 4..PPL_HEADER_BYTES]);
    digest.finalize()
}

/// An empty header for the array `array_uuid` (no entries, generation 0), as md writes one
/// when it starts an array with a PPL.
pub fn empty_header(array_uuid: &[u8; 16]) -> Vec<u8> {
    let mut block = vec![0u8; PPL_HEADER_BYTES];
    block[..OFF_RESERVED_END].fill(0xff);
    block[OFF_SIGNATURE..OFF_SIGNATURE + 4].copy_from_slice(&signature(array_uuid).to_le_bytes());
    let csum = header_checksum(&block);
    block[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&csum.to_le_bytes());
    block
}

/// What a valid header says (checksum and signature right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PplHeader {
    pub generation: u64,
    pub entries: u32,
}

/// Reads a header block of the array `array_uuid`: `None` when its checksum or signature is
/// wrong (md then treats the log as holding nothing from that point on).
pub fn decode_header(block: &[u8], array_uuid: &[u8; 16]) -> Option<PplHeader> {
    if block.len() < PPL_HEADER_BYTES {
        return None;
    }
    let le32 =
        |at: usize| u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
    if le32(OFF_CHECKSUM) != header_checksum(block) || le32(OFF_SIGNATURE) != signature(array_uuid)
    {
        return None;
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&block[OFF_GENERATION..OFF_GENERATION + 8]);
    Some(PplHeader {
        generation: u64::from_le_bytes(g),
        entries: le32(OFF_ENTRIES_COUNT),
    })
}

/// Why a member's PPL area cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PplAreaError {
    pub offset_sectors: i16,
    pub size_sectors: u16,
    pub reason: &'static str,
}

impl fmt::Display for PplAreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partial parity log at ppl.offset {} size {} sectors: {}",
            self.offset_sectors, self.size_sectors, self.reason
        )
    }
}

/// The member sectors `[start, start + len)` of the PPL area `sb` records, for a superblock
/// at `superblock_sector` on a device of `device_sectors`; `None` without a PPL. The area
/// must hold a header and some partial parity, lie on the device and overlap neither the
/// superblock nor the data (md's `ppl_validate_rdev`).
pub fn area(
    sb: &Superblock,
    superblock_sector: u64,
    superblock_sectors: u64,
    device_sectors: u64,
) -> Result<Option<(u64, u64)>, PplAreaError> {
    let Some((offset, size)) = sb.ppl() else {
        return Ok(None);
    };
    let err = |reason| PplAreaError {
        offset_sectors: offset,
        size_sectors: size,
        reason,
    };
    let len = u64::from(size);
    if len <= PPL_HEADER_SECTORS {
        return Err(err("too small for a header and partial parity"));
    }
    let start = superblock_sector
        .checked_add_signed(i64::from(offset))
        .ok_or(err("before the start of the device"))?;
    let end = start + len;
    if end > device_sectors {
        return Err(err("past the end of the device"));
    }
    if start < superblock_sector + superblock_sectors && end > superblock_sector {
        return Err(err("overlaps the superblock"));
    }
    let data_start = sb.data_offset_sectors;
    let data_end = data_start.saturating_add(sb.data_size_sectors);
    if start < data_end && end > data_start {
        return Err(err("overlaps the data"));
    }
    Ok(Some((start, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // The CRC-32C check value (RFC 3720, "123456789").
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn empty_header_decodes_and_a_changed_byte_does_not() {
        let uuid = [7u8; 16];
        let block = empty_header(&uuid);
        assert_eq!(
            decode_header(&block, &uuid),
            Some(PplHeader {
                generation: 0,
                entries: 0
            })
        );
        assert!(block[..512].iter().all(|&b| b == 0xff));
        assert_eq!(decode_header(&block, &[8u8; 16]), None, "another array's");
        let mut bad = block.clone();
        bad[2000] ^= 1;
        assert_eq!(decode_header(&bad, &uuid), None);
        assert_eq!(decode_header(&vec![0u8; PPL_HEADER_BYTES], &uuid), None);
        assert_eq!(decode_header(&block[..100], &uuid), None);
    }
}
