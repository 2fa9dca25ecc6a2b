//! `SimDisk`: the simulator's RAM disk — sparse (never-written and zero-written pages hold no
//! memory, so a 4 TiB member costs what was written to it), with per-sector writes for tearing
//! a write at a crash, served to the driver as a block driver (`orion_driver::BlockDriver`)
//! and to array creation as a `BlockDevice`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use orion_driver::{BlockDriver, DriverError};

use crate::block::{
    BlockDevice, Bytes, IoError, IoFuture, SECTOR_BYTES, check_range, check_sectors,
};

const PAGE_BYTES: usize = 4096;
const PAGE_SECTORS: u64 = (PAGE_BYTES / SECTOR_BYTES) as u64;

/// A sparse memory disk; unwritten sectors read as zeroes.
pub struct SimDisk {
    capacity_sectors: u64,
    pages: RefCell<BTreeMap<u64, Box<[u8; PAGE_BYTES]>>>,
}

impl SimDisk {
    pub fn new(capacity_sectors: u64) -> Self {
        SimDisk {
            capacity_sectors,
            pages: RefCell::new(BTreeMap::new()),
        }
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Bytes of memory the written, non-zero pages hold.
    pub fn resident_bytes(&self) -> usize {
        self.pages.borrow().len() * PAGE_BYTES
    }

    pub fn read_at(&self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(sector, buf.len(), self.capacity_sectors)?;
        let pages = self.pages.borrow();
        let mut pos = sector * SECTOR_BYTES as u64;
        let mut done = 0;
        while done < buf.len() {
            let index = pos / PAGE_BYTES as u64;
            let within = (pos % PAGE_BYTES as u64) as usize;
            let n = (PAGE_BYTES - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match pages.get(&index) {
                Some(page) => out.copy_from_slice(&page[within..within + n]),
                None => out.fill(0),
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }

    pub fn write_at(&self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        check_range(sector, data.len(), self.capacity_sectors)?;
        let mut pages = self.pages.borrow_mut();
        let mut pos = sector * SECTOR_BYTES as u64;
        let mut done = 0;
        while done < data.len() {
            let index = pos / PAGE_BYTES as u64;
            let within = (pos % PAGE_BYTES as u64) as usize;
            let n = (PAGE_BYTES - within).min(data.len() - done);
            let src = &data[done..done + n];
            let zero = src.iter().all(|&b| b == 0);
            match pages.get_mut(&index) {
                Some(page) => {
                    page[within..within + n].copy_from_slice(src);
                    if zero && page.iter().all(|&b| b == 0) {
                        pages.remove(&index);
                    }
                }
                None if zero => {}
                None => {
                    let mut page = Box::new([0u8; PAGE_BYTES]);
                    page[within..within + n].copy_from_slice(src);
                    pages.insert(index, page);
                }
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }

    /// Zeroes `sectors` sectors from `sector`, freeing whole pages.
    pub fn zero_range(&self, sector: u64, sectors: u64) -> Result<(), IoError> {
        check_sectors(sector, sectors, self.capacity_sectors)?;
        let end = sector + sectors;
        let mut s = sector;
        while s < end {
            let index = s / PAGE_SECTORS;
            let page_end = ((index + 1) * PAGE_SECTORS).min(end);
            if s.is_multiple_of(PAGE_SECTORS) && page_end == (index + 1) * PAGE_SECTORS {
                self.pages.borrow_mut().remove(&index);
            } else {
                let zeros = vec![0u8; ((page_end - s) as usize) * SECTOR_BYTES];
                self.write_at(s, &zeros)?;
            }
            s = page_end;
        }
        Ok(())
    }

    /// Applies only the sectors of a write that `keep` selects (a write torn by a crash).
    pub fn write_torn(&self, sector: u64, data: &[u8], mut keep: impl FnMut(usize) -> bool) {
        for (i, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
            if keep(i) {
                let _ = self.write_at(sector + i as u64, chunk);
            }
        }
    }
}

/// The member-disk driver the simulated kernel runs for a `SimDisk` (through `serve_io`).
pub struct SimDiskDriver<'a>(pub &'a SimDisk);

impl BlockDriver for SimDiskDriver<'_> {
    fn block_size(&self) -> u32 {
        SECTOR_BYTES as u32
    }
    fn capacity_blocks(&self) -> u64 {
        self.0.capacity_sectors
    }
    fn read_blocks(&mut self, lba: u64, _count: u32, buf: &mut [u8]) -> Result<(), DriverError> {
        self.0.read_at(lba, buf).map_err(|_| DriverError::Io)
    }
    fn write_blocks(
        &mut self,
        lba: u64,
        _count: u32,
        buf: &[u8],
        _fua: bool,
    ) -> Result<(), DriverError> {
        self.0.write_at(lba, buf).map_err(|_| DriverError::Io)
    }
    fn flush(&mut self) -> Result<(), DriverError> {
        Ok(())
    }
    fn discard_blocks(&mut self, lba: u64, count: u64) -> Result<(), DriverError> {
        self.0.zero_range(lba, count).map_err(|_| DriverError::Io)
    }
}

impl BlockDevice for SimDisk {
    fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    fn read(&self, sector: u64, mut buf: Vec<u8>) -> IoFuture<'_, Vec<u8>> {
        let result = self.read_at(sector, &mut buf).map(|()| buf);
        Box::pin(core::future::ready(result))
    }

    fn write(&self, sector: u64, data: Bytes, _fua: bool) -> IoFuture<'_, ()> {
        Box::pin(core::future::ready(self.write_at(sector, &data)))
    }

    fn flush(&self) -> IoFuture<'_, ()> {
        Box::pin(core::future::ready(Ok(())))
    }

    fn discard(&self, sector: u64, sectors: u64) -> IoFuture<'_, ()> {
        Box::pin(core::future::ready(self.zero_range(sector, sectors)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_writes_and_discards_hold_no_memory() {
        let disk = SimDisk::new(1 << 33); // 4 TiB
        disk.write_at(1 << 32, &[0u8; 8192]).unwrap();
        assert_eq!(disk.resident_bytes(), 0);
        disk.write_at(9, &[7u8; 512]).unwrap();
        assert_eq!(disk.resident_bytes(), PAGE_BYTES);
        let mut buf = [1u8; 1024];
        disk.read_at(8, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0) && buf[512..].iter().all(|&b| b == 7));
        disk.write_at(9, &[0u8; 512]).unwrap();
        assert_eq!(disk.resident_bytes(), 0);
        disk.write_at(0, &[3u8; 8192]).unwrap();
        disk.zero_range(1, 15).unwrap();
        assert_eq!(disk.resident_bytes(), PAGE_BYTES);
        assert!(disk.read_at(1 << 33, &mut [0u8; 512]).is_err());
    }

    #[test]
    fn a_torn_write_applies_the_sectors_kept() {
        let disk = SimDisk::new(64);
        let data: Vec<u8> = (0..4 * 512).map(|i| (i / 512 + 1) as u8).collect();
        disk.write_torn(4, &data, |i| i % 2 == 1);
        let mut buf = [0u8; 4 * 512];
        disk.read_at(4, &mut buf).unwrap();
        let firsts: Vec<u8> = buf.chunks(512).map(|c| c[0]).collect();
        assert_eq!(firsts, [0, 2, 0, 4]);
    }
}
