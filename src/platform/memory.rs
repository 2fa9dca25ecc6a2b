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

/// One written page.
enum Page {
    /// The disk's own copy (written in parts, or through `write_at`).
    Owned(Box<[u8]>),
    /// A whole page of a write's payload, kept without copying it: a large write through
    /// `BlockDevice::write` costs no memory copy on the I/O path. `piece` names the write
    /// whose payload it shares.
    Shared { data: Bytes, piece: u64 },
}

impl Page {
    fn bytes(&self) -> &[u8] {
        match self {
            Page::Owned(b) => b,
            Page::Shared { data, .. } => data,
        }
    }
}

/// The whole pages one write stored as `Page::Shared`: `[first_page, first_page +
/// page_count)`, of which `live_pages` still hold it. Once half of them are overwritten the
/// rest are copied out, so a payload buffer never stays alive for more than twice the
/// bytes it still provides.
struct Piece {
    first_page: u64,
    page_count: u64,
    live_pages: u64,
}

#[derive(Default)]
struct Pages {
    map: BTreeMap<u64, Page>,
    pieces: BTreeMap<u64, Piece>,
    next_piece: u64,
}

impl Pages {
    /// Stores `page` at `index`; a shared page it replaces is released from its piece.
    fn put(&mut self, index: u64, page: Page, released: &mut Vec<u64>) {
        if let Some(Page::Shared { piece, .. }) = self.map.insert(index, page) {
            self.release(piece, released);
        }
    }

    fn remove(&mut self, index: u64, released: &mut Vec<u64>) {
        if let Some(Page::Shared { piece, .. }) = self.map.remove(&index) {
            self.release(piece, released);
        }
    }

    fn release(&mut self, piece: u64, released: &mut Vec<u64>) {
        let p = self
            .pieces
            .get_mut(&piece)
            .expect("a shared page belongs to a live piece");
        assert!(p.live_pages > 0, "piece page count underflow");
        p.live_pages -= 1;
        if !released.contains(&piece) {
            released.push(piece);
        }
    }

    /// After a write or discard: forgets pieces no page holds and copies out the pages of
    /// pieces that are mostly overwritten.
    fn settle(&mut self, released: &[u64]) {
        for &piece in released {
            let Some(p) = self.pieces.get(&piece) else {
                continue;
            };
            if p.live_pages > 0 && p.live_pages * 2 > p.page_count {
                continue;
            }
            let (first, count) = (p.first_page, p.page_count);
            self.pieces.remove(&piece);
            for index in first..first + count {
                if let Some(page) = self.map.get_mut(&index)
                    && matches!(page, Page::Shared { piece: q, .. } if *q == piece)
                {
                    *page = Page::Owned(page.bytes().into());
                }
            }
        }
    }

    /// Copies `data` into page `index` at `in_page`, keeping the rest of the page.
    fn copy_in(&mut self, index: u64, in_page: usize, data: &[u8], released: &mut Vec<u64>) {
        if let Some(Page::Owned(target)) = self.map.get_mut(&index) {
            target[in_page..in_page + data.len()].copy_from_slice(data);
            return;
        }
        let mut target: Box<[u8]> = if data.len() == PAGE_BYTES {
            data.into()
        } else {
            match self.map.get(&index) {
                Some(page) => page.bytes().into(),
                None => alloc::vec![0u8; PAGE_BYTES].into_boxed_slice(),
            }
        };
        target[in_page..in_page + data.len()].copy_from_slice(data);
        self.put(index, Page::Owned(target), released);
    }
}

/// A memory disk whose pages are allocated on first write; unwritten sectors read as zeroes.
pub struct MemoryDisk {
    capacity_sectors: u64,
    pages: RefCell<Pages>,
}

impl MemoryDisk {
    /// A zero-filled disk of `capacity_sectors` sectors.
    pub fn new(capacity_sectors: u64) -> Self {
        MemoryDisk {
            capacity_sectors,
            pages: RefCell::new(Pages::default()),
        }
    }

    /// Bytes of memory held by written pages.
    pub fn resident_bytes(&self) -> usize {
        self.pages.borrow().map.len() * PAGE_BYTES
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
            match pages.map.get(&page) {
                Some(data) => {
                    buf[offset..offset + n].copy_from_slice(&data.bytes()[in_page..in_page + n])
                }
                None => buf[offset..offset + n].fill(0),
            }
            offset += n;
            byte_pos += n as u64;
        }
        Ok(())
    }

    /// Synchronous write, for tests and for the async path: the data is copied.
    pub fn write_at(&self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        check_range(sector, data.len(), self.capacity_sectors)?;
        let mut pages = self.pages.borrow_mut();
        let mut released = Vec::new();
        let mut offset = 0;
        let mut byte_pos = sector * SECTOR_BYTES as u64;
        while offset < data.len() {
            let page = byte_pos / PAGE_BYTES as u64;
            let in_page = (byte_pos % PAGE_BYTES as u64) as usize;
            let n = (PAGE_BYTES - in_page).min(data.len() - offset);
            pages.copy_in(page, in_page, &data[offset..offset + n], &mut released);
            offset += n;
            byte_pos += n as u64;
        }
        pages.settle(&released);
        Ok(())
    }

    /// A write that keeps the whole pages it covers as slices of `data` (no copy); only
    /// partly covered pages at either end are copied.
    pub fn write_shared(&self, sector: u64, data: Bytes) -> Result<(), IoError> {
        check_range(sector, data.len(), self.capacity_sectors)?;
        let start = sector * SECTOR_BYTES as u64;
        let end = start + data.len() as u64;
        let first_whole = start.div_ceil(PAGE_BYTES as u64);
        let end_whole = end / PAGE_BYTES as u64;
        if first_whole >= end_whole {
            return self.write_at(sector, &data);
        }
        let head_bytes = (first_whole * PAGE_BYTES as u64 - start) as usize;
        let whole_bytes = ((end_whole - first_whole) as usize) * PAGE_BYTES;
        if head_bytes > 0 {
            self.write_at(sector, &data[..head_bytes])?;
        }
        let tail = head_bytes + whole_bytes;
        if tail < data.len() {
            let tail_sector = end_whole * PAGE_SECTORS;
            self.write_at(tail_sector, &data[tail..])?;
        }
        let mut pages = self.pages.borrow_mut();
        let mut released = Vec::new();
        let piece = pages.next_piece;
        pages.next_piece += 1;
        pages.pieces.insert(
            piece,
            Piece {
                first_page: first_whole,
                page_count: end_whole - first_whole,
                live_pages: end_whole - first_whole,
            },
        );
        for (i, index) in (first_whole..end_whole).enumerate() {
            let at = head_bytes + i * PAGE_BYTES;
            let page = Page::Shared {
                data: data.slice(at..at + PAGE_BYTES),
                piece,
            };
            pages.put(index, page, &mut released);
        }
        pages.settle(&released);
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
                let mut pages = self.pages.borrow_mut();
                let mut released = Vec::new();
                pages.remove(page, &mut released);
                pages.settle(&released);
            } else if self.pages.borrow().map.contains_key(&page) {
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
        Box::pin(core::future::ready(self.write_shared(sector, data)))
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

    #[test]
    fn shared_write_keeps_whole_pages_and_copies_the_ends() {
        let disk = MemoryDisk::new(2048);
        let data: Vec<u8> = (0..(400 * 512)).map(|i| (i % 253) as u8).collect();
        // Sector 100 is not page-aligned: a head and a tail are copied, two pages shared.
        disk.write_shared(100, Bytes::from(data.clone())).unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read_at(100, &mut back).unwrap();
        assert_eq!(back, data);
        let pages = disk.pages.borrow();
        let shared = pages
            .map
            .values()
            .filter(|p| matches!(p, Page::Shared { .. }))
            .count();
        assert_eq!(shared, 2);
        assert_eq!(pages.pieces.len(), 1);
    }

    #[test]
    fn mostly_overwritten_piece_is_copied_out() {
        let disk = MemoryDisk::new(4096);
        let page_sectors = PAGE_SECTORS;
        let first = vec![0x11u8; 8 * PAGE_BYTES];
        disk.write_shared(0, Bytes::from(first)).unwrap();
        // Overwrite 3 of 8 pages: the piece stays shared.
        disk.write_at(0, &vec![0x22u8; 3 * PAGE_BYTES]).unwrap();
        assert_eq!(disk.pages.borrow().pieces.len(), 1);
        // A fourth: half the piece is gone, its other pages become the disk's own.
        disk.write_at(3 * page_sectors + 1, &[0x33u8; 512]).unwrap();
        assert!(disk.pages.borrow().pieces.is_empty());
        assert!(
            disk.pages
                .borrow()
                .map
                .values()
                .all(|p| matches!(p, Page::Owned(_)))
        );
        let mut back = vec![0u8; 8 * PAGE_BYTES];
        disk.read_at(0, &mut back).unwrap();
        assert!(back[..3 * PAGE_BYTES].iter().all(|&b| b == 0x22));
        let p3 = 3 * PAGE_BYTES;
        assert!(back[p3..p3 + 512].iter().all(|&b| b == 0x11));
        assert!(back[p3 + 512..p3 + 1024].iter().all(|&b| b == 0x33));
        assert!(back[p3 + 1024..].iter().all(|&b| b == 0x11));
        // A shared write over the whole range frees the rest without copying.
        disk.write_shared(0, Bytes::from(vec![0x44u8; 8 * PAGE_BYTES]))
            .unwrap();
        disk.write_shared(0, Bytes::from(vec![0x55u8; 8 * PAGE_BYTES]))
            .unwrap();
        assert_eq!(disk.pages.borrow().pieces.len(), 1);
        disk.discard_at(0, 8 * page_sectors).unwrap();
        assert!(disk.pages.borrow().pieces.is_empty());
        assert_eq!(disk.resident_bytes(), 0);
    }

    /// Random copied writes, shared writes and discards against a flat model.
    #[test]
    fn random_mix_matches_a_flat_model() {
        let seed: u64 = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_0004);
        let result = std::panic::catch_unwind(|| {
            let sectors = 8 * PAGE_SECTORS;
            let disk = MemoryDisk::new(sectors);
            let mut model = vec![0u8; sectors as usize * SECTOR_BYTES];
            let mut rng = crate::rng::SplitMix64::new(seed);
            for _ in 0..400 {
                let at = rng.below(sectors);
                let len = rng.range_inclusive(1, (sectors - at).min(3 * PAGE_SECTORS));
                let range = at as usize * SECTOR_BYTES..(at + len) as usize * SECTOR_BYTES;
                match rng.below(4) {
                    0 => {
                        let mut data = vec![0u8; range.len()];
                        rng.fill(&mut data);
                        disk.write_at(at, &data).unwrap();
                        model[range].copy_from_slice(&data);
                    }
                    1 => {
                        disk.discard_at(at, len).unwrap();
                        model[range].fill(0);
                    }
                    _ => {
                        let mut data = vec![0u8; range.len()];
                        rng.fill(&mut data);
                        model[range].copy_from_slice(&data);
                        disk.write_shared(at, Bytes::from(data)).unwrap();
                    }
                }
                let mut back = vec![0u8; model.len()];
                disk.read_at(0, &mut back).unwrap();
                assert!(back == model, "contents differ from the model");
                let pages = disk.pages.borrow();
                for (id, piece) in &pages.pieces {
                    let live = pages
                        .map
                        .values()
                        .filter(|p| matches!(p, Page::Shared { piece: q, .. } if q == id))
                        .count() as u64;
                    assert_eq!(live, piece.live_pages, "live page count of piece {id}");
                    assert!(
                        live * 2 > piece.page_count,
                        "piece {id} should be copied out"
                    );
                }
            }
        });
        if let Err(e) = result {
            eprintln!("memory disk model test failed: SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
