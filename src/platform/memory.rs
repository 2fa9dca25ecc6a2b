//! `MemoryDisk`: a sparse, volatile block device in memory (tests, demos, benchmarks).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::block::{
    BlockDevice, Bytes, IoError, IoFuture, SECTOR_BYTES, check_range, check_sectors,
};

const PAGE_BYTES: usize = 64 * 1024;
const PAGE_SECTORS: u64 = (PAGE_BYTES / SECTOR_BYTES) as u64;

/// A memory disk whose pages are allocated on first write; unwritten sectors read as zeroes.
pub struct MemoryDisk {
    capacity_sectors: u64,
    pages: RefCell<BTreeMap<u64, Box<[u8]>>>,
}

impl MemoryDisk {
    /// A zero-filled disk of `capacity_sectors` sectors.
    pub fn new(capacity_sectors: u64) -> Self {
        MemoryDisk {
            capacity_sectors,
            pages: RefCell::new(BTreeMap::new()),
        }
    }

    /// Bytes of memory held by written pages.
    pub fn resident_bytes(&self) -> usize {
        self.pages.borrow().len() * PAGE_BYTES
    }

    /// Synchronous read, for tests and for the async path.
    pub fn read_at(&self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(sector, buf.len(), self.capacity_sectors)?;
        let pages = self.pages.borrow();
        let mut offset = 0;
        let mut byte_pos = sector * SECTOR_BYTES as u64;
        while offset < buf.len() {
            let page = byte_pos / PAGE_BYTES as u64;
            let in_page = (byte_pos % PAGE_BYTES as u64) as usize;
            let n = (PAGE_BYTES - in_page).min(buf.len() - offset);
            match pages.get(&page) {
                Some(data) => buf[offset..offset + n].copy_from_slice(&data[in_page..in_page + n]),
                None => buf[offset..offset + n].fill(0),
            }
            offset += n;
            byte_pos += n as u64;
        }
        Ok(())
    }

    /// Synchronous write, for tests and for the async path.
    pub fn write_at(&self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        check_range(sector, data.len(), self.capacity_sectors)?;
        let mut pages = self.pages.borrow_mut();
        let mut offset = 0;
        let mut byte_pos = sector * SECTOR_BYTES as u64;
        while offset < data.len() {
            let page = byte_pos / PAGE_BYTES as u64;
            let in_page = (byte_pos % PAGE_BYTES as u64) as usize;
            let n = (PAGE_BYTES - in_page).min(data.len() - offset);
            let target = pages
                .entry(page)
                .or_insert_with(|| alloc::vec![0u8; PAGE_BYTES].into_boxed_slice());
            target[in_page..in_page + n].copy_from_slice(&data[offset..offset + n]);
            offset += n;
            byte_pos += n as u64;
        }
        Ok(())
    }

    /// Zeroes a range, freeing whole pages.
    pub fn discard_at(&self, sector: u64, sectors: u64) -> Result<(), IoError> {
        check_sectors(sector, sectors, self.capacity_sectors)?;
        let end = sector + sectors;
        let mut s = sector;
        while s < end {
            let page = s / PAGE_SECTORS;
            let page_end = ((page + 1) * PAGE_SECTORS).min(end);
            if s.is_multiple_of(PAGE_SECTORS) && page_end == (page + 1) * PAGE_SECTORS {
                self.pages.borrow_mut().remove(&page);
            } else if self.pages.borrow().contains_key(&page) {
                let zeros = alloc::vec![0u8; ((page_end - s) as usize) * SECTOR_BYTES];
                self.write_at(s, &zeros)?;
            }
            s = page_end;
        }
        Ok(())
    }
}

impl BlockDevice for MemoryDisk {
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
        Box::pin(core::future::ready(self.discard_at(sector, sectors)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn read_back_across_pages_and_discard() {
        let disk = MemoryDisk::new(1024);
        let data: Vec<u8> = (0..(300 * 512)).map(|i| (i % 251) as u8).collect();
        disk.write_at(100, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read_at(100, &mut back).unwrap();
        assert_eq!(back, data);
        disk.discard_at(110, 200).unwrap();
        disk.read_at(100, &mut back).unwrap();
        assert_eq!(&back[..10 * 512], &data[..10 * 512]);
        assert!(back[10 * 512..210 * 512].iter().all(|&b| b == 0));
        assert_eq!(&back[210 * 512..], &data[210 * 512..]);
        assert!(disk.read_at(1000, &mut back).is_err());
    }
}
