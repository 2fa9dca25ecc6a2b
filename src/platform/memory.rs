//! `MemoryDisk`: a sparse, volatile block device in memory (tests, demos, benchmarks).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::block::{
    BlockDevice, Bytes, DeviceIdentity, IoError, IoFuture, SECTOR_BYTES, check_range, check_sectors,
};

/// The unit of storage. Large: the block table of a written disk stays small enough for
/// the CPU cache, and after a large sequential write the first small overwrites of each
/// block copy it out early, in a few big steps (4 KiB blocks spread that cost over many
/// more small steps and measured slower under fio's random writes).
const BLOCK_BYTES: usize = 64 * 1024;
const BLOCK_SECTORS: u64 = (BLOCK_BYTES / SECTOR_BYTES) as u64;
/// Blocks per leaf of the block table (4 MiB of disk): leaves are allocated on first write,
/// so a large, mostly unwritten disk costs one pointer per 4 MiB.
const LEAF_BLOCKS: usize = 64;

/// One written block.
enum Block {
    /// The disk's own copy (written in parts, or through `write_at`).
    Owned(Box<[u8; BLOCK_BYTES]>),
    /// A whole block of a write's payload, kept without copying it: a write through
    /// `BlockDevice::write` costs no memory copy on the I/O path. `piece` names the write
    /// whose payload it shares.
    Shared { data: Bytes, piece: u32 },
}

impl Block {
    fn bytes(&self) -> &[u8] {
        match self {
            Block::Owned(b) => &b[..],
            Block::Shared { data, .. } => data,
        }
    }

    fn owned_copy(data: &[u8]) -> Block {
        let boxed: Box<[u8]> = data.into();
        Block::Owned(boxed.try_into().expect("a block copy is one block long"))
    }
}

/// The whole blocks one write stored as `Block::Shared`: `[first_block, first_block +
/// block_count)`, of which `live_blocks` still hold it. Once half of them are overwritten
/// the rest are copied out, so a payload buffer never stays alive for more than twice the
/// bytes it still provides. A free slot has `block_count == 0`.
#[derive(Clone, Copy)]
struct Piece {
    first_block: u64,
    block_count: u64,
    live_blocks: u64,
}

impl Piece {
    const FREE: Piece = Piece {
        first_block: 0,
        block_count: 0,
        live_blocks: 0,
    };
}

/// `LEAF_BLOCKS` slots of the block table and how many of them hold a block.
struct Leaf {
    blocks: Box<[Option<Block>]>,
    used: usize,
}

struct Store {
    /// Block table: `leaves[block / LEAF_BLOCKS].blocks[block % LEAF_BLOCKS]`.
    leaves: Vec<Option<Leaf>>,
    /// Pieces by id; ids of dead pieces are on `free_pieces` for reuse.
    pieces: Vec<Piece>,
    free_pieces: Vec<u32>,
    resident_blocks: usize,
    /// Pieces that lost a block during the current operation (may repeat).
    released: Vec<u32>,
}

impl Store {
    fn new(capacity_sectors: u64) -> Self {
        let blocks = capacity_sectors.div_ceil(BLOCK_SECTORS) as usize;
        let mut leaves = Vec::new();
        leaves.resize_with(blocks.div_ceil(LEAF_BLOCKS), || None);
        Store {
            leaves,
            pieces: Vec::new(),
            free_pieces: Vec::new(),
            resident_blocks: 0,
            released: Vec::new(),
        }
    }

    fn get(&self, index: u64) -> Option<&Block> {
        let (leaf, slot) = split(index);
        self.leaves[leaf].as_ref()?.blocks[slot].as_ref()
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut Block> {
        let (leaf, slot) = split(index);
        self.leaves[leaf].as_mut()?.blocks[slot].as_mut()
    }

    /// Stores `block` at `index`; a shared block it replaces is released from its piece.
    fn put(&mut self, index: u64, block: Block) {
        let (leaf, slot) = split(index);
        let leaf = self.leaves[leaf].get_or_insert_with(|| {
            let mut blocks = Vec::new();
            blocks.resize_with(LEAF_BLOCKS, || None);
            Leaf {
                blocks: blocks.into_boxed_slice(),
                used: 0,
            }
        });
        match leaf.blocks[slot].replace(block) {
            None => {
                leaf.used += 1;
                self.resident_blocks += 1;
            }
            Some(Block::Shared { piece, .. }) => self.release(piece),
            Some(Block::Owned(_)) => {}
        }
    }

    fn remove(&mut self, index: u64) {
        let (leaf_index, slot) = split(index);
        let Some(leaf) = self.leaves[leaf_index].as_mut() else {
            return;
        };
        let Some(old) = leaf.blocks[slot].take() else {
            return;
        };
        leaf.used -= 1;
        if leaf.used == 0 {
            self.leaves[leaf_index] = None;
        }
        self.resident_blocks -= 1;
        if let Block::Shared { piece, .. } = old {
            self.release(piece);
        }
    }

    fn release(&mut self, piece: u32) {
        let p = &mut self.pieces[piece as usize];
        assert!(
            p.block_count > 0 && p.live_blocks > 0,
            "a shared block belongs to a live piece"
        );
        p.live_blocks -= 1;
        if self.released.last() != Some(&piece) {
            self.released.push(piece);
        }
    }

    fn new_piece(&mut self, first_block: u64, block_count: u64) -> u32 {
        let piece = Piece {
            first_block,
            block_count,
            live_blocks: block_count,
        };
        match self.free_pieces.pop() {
            Some(id) => {
                self.pieces[id as usize] = piece;
                id
            }
            None => {
                let id = u32::try_from(self.pieces.len()).expect("fewer than 2^32 pieces");
                self.pieces.push(piece);
                id
            }
        }
    }

    /// After a write or discard: frees pieces no block holds and copies out the blocks of
    /// pieces that are mostly overwritten.
    fn settle(&mut self) {
        let mut released = core::mem::take(&mut self.released);
        for &id in &released {
            let p = self.pieces[id as usize];
            if p.block_count == 0 || (p.live_blocks > 0 && p.live_blocks * 2 > p.block_count) {
                continue;
            }
            if p.live_blocks > 0 {
                for index in p.first_block..p.first_block + p.block_count {
                    if let Some(block) = self.get_mut(index)
                        && matches!(block, Block::Shared { piece, .. } if *piece == id)
                    {
                        *block = Block::owned_copy(block.bytes());
                    }
                }
            }
            self.pieces[id as usize] = Piece::FREE;
            self.free_pieces.push(id);
        }
        released.clear();
        self.released = released;
    }

    /// Copies `data` into block `index` at `in_block`, keeping the rest of the block.
    fn copy_in(&mut self, index: u64, in_block: usize, data: &[u8]) {
        if let Some(Block::Owned(target)) = self.get_mut(index) {
            target[in_block..in_block + data.len()].copy_from_slice(data);
            return;
        }
        let block = if data.len() == BLOCK_BYTES {
            Block::owned_copy(data)
        } else {
            let mut target = match self.get(index) {
                Some(block) => Block::owned_copy(block.bytes()),
                None => Block::Owned(
                    alloc::vec![0u8; BLOCK_BYTES]
                        .into_boxed_slice()
                        .try_into()
                        .expect("a zeroed block is one block long"),
                ),
            };
            if let Block::Owned(t) = &mut target {
                t[in_block..in_block + data.len()].copy_from_slice(data);
            }
            target
        };
        self.put(index, block);
    }
}

/// Leaf and slot of block `index`.
fn split(index: u64) -> (usize, usize) {
    let index = index as usize;
    (index / LEAF_BLOCKS, index % LEAF_BLOCKS)
}

/// A memory disk whose blocks are allocated on first write; unwritten sectors read as zeroes.
pub struct MemoryDisk {
    capacity_sectors: u64,
    /// Its [`DeviceIdentity::Instance`] number.
    instance: u64,
    store: RefCell<Store>,
}

impl MemoryDisk {
    /// A zero-filled disk of `capacity_sectors` sectors.
    pub fn new(capacity_sectors: u64) -> Self {
        // Process-wide, so no two memory disks ever compare as one device.
        static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);
        MemoryDisk {
            capacity_sectors,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            store: RefCell::new(Store::new(capacity_sectors)),
        }
    }

    /// Bytes of memory held by written blocks.
    pub fn resident_bytes(&self) -> usize {
        self.store.borrow().resident_blocks * BLOCK_BYTES
    }

    /// Synchronous read, for tests and for the async path.
    pub fn read_at(&self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(sector, buf.len(), self.capacity_sectors)?;
        let store = self.store.borrow();
        let mut byte_pos = sector * SECTOR_BYTES as u64;
        let mut offset = 0;
        while offset < buf.len() {
            let index = byte_pos / BLOCK_BYTES as u64;
            let in_block = (byte_pos % BLOCK_BYTES as u64) as usize;
            let n = (BLOCK_BYTES - in_block).min(buf.len() - offset);
            let out = &mut buf[offset..offset + n];
            match store.get(index) {
                Some(block) => out.copy_from_slice(&block.bytes()[in_block..in_block + n]),
                None => out.fill(0),
            }
            offset += n;
            byte_pos += n as u64;
        }
        Ok(())
    }

    /// Synchronous write, for tests and for the async path: the data is copied.
    pub fn write_at(&self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        check_range(sector, data.len(), self.capacity_sectors)?;
        let mut store = self.store.borrow_mut();
        copy_range(&mut store, sector, data);
        store.settle();
        Ok(())
    }

    /// A write that keeps the whole blocks it covers as slices of `data` (no copy); only
    /// partly covered blocks at either end are copied.
    pub fn write_shared(&self, sector: u64, data: Bytes) -> Result<(), IoError> {
        check_range(sector, data.len(), self.capacity_sectors)?;
        let start = sector * SECTOR_BYTES as u64;
        let end = start + data.len() as u64;
        let first_whole = start.div_ceil(BLOCK_BYTES as u64);
        let end_whole = end / BLOCK_BYTES as u64;
        let mut store = self.store.borrow_mut();
        if first_whole >= end_whole {
            copy_range(&mut store, sector, &data);
            store.settle();
            return Ok(());
        }
        let head_bytes = (first_whole * BLOCK_BYTES as u64 - start) as usize;
        let tail = head_bytes + ((end_whole - first_whole) as usize) * BLOCK_BYTES;
        if head_bytes > 0 {
            copy_range(&mut store, sector, &data[..head_bytes]);
        }
        if tail < data.len() {
            copy_range(&mut store, end_whole * BLOCK_SECTORS, &data[tail..]);
        }
        let piece = store.new_piece(first_whole, end_whole - first_whole);
        for (i, index) in (first_whole..end_whole).enumerate() {
            let at = head_bytes + i * BLOCK_BYTES;
            let block = Block::Shared {
                data: data.slice(at..at + BLOCK_BYTES),
                piece,
            };
            store.put(index, block);
        }
        store.settle();
        Ok(())
    }

    /// Zeroes a range, freeing whole blocks.
    pub fn discard_at(&self, sector: u64, sectors: u64) -> Result<(), IoError> {
        check_sectors(sector, sectors, self.capacity_sectors)?;
        let end = sector + sectors;
        let mut store = self.store.borrow_mut();
        let mut s = sector;
        while s < end {
            let index = s / BLOCK_SECTORS;
            let block_end = ((index + 1) * BLOCK_SECTORS).min(end);
            if s.is_multiple_of(BLOCK_SECTORS) && block_end == (index + 1) * BLOCK_SECTORS {
                store.remove(index);
            } else if store.get(index).is_some() {
                let zeros = [0u8; BLOCK_BYTES];
                let bytes = ((block_end - s) as usize) * SECTOR_BYTES;
                copy_range(&mut store, s, &zeros[..bytes]);
            }
            s = block_end;
        }
        store.settle();
        Ok(())
    }
}

/// Copies `data` into the blocks from `sector` on (the caller settles the store).
fn copy_range(store: &mut Store, sector: u64, data: &[u8]) {
    let mut byte_pos = sector * SECTOR_BYTES as u64;
    let mut offset = 0;
    while offset < data.len() {
        let index = byte_pos / BLOCK_BYTES as u64;
        let in_block = (byte_pos % BLOCK_BYTES as u64) as usize;
        let n = (BLOCK_BYTES - in_block).min(data.len() - offset);
        store.copy_in(index, in_block, &data[offset..offset + n]);
        offset += n;
        byte_pos += n as u64;
    }
}

impl BlockDevice for MemoryDisk {
    fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    fn identity(&self) -> Option<DeviceIdentity> {
        Some(DeviceIdentity::Instance(self.instance))
    }

    fn read(&self, sector: u64, mut buf: Vec<u8>) -> IoFuture<'_, Vec<u8>> {
        let result = self.read_at(sector, &mut buf).map(|()| buf);
        Box::pin(core::future::ready(result))
    }

    fn read_into<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> IoFuture<'a, ()> {
        Box::pin(core::future::ready(self.read_at(sector, buf)))
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

    /// The memory disk answers at once: one poll completes a request.
    fn poll_ready<T>(mut fut: IoFuture<'_, T>) -> Result<T, IoError> {
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            core::task::Poll::Ready(r) => r,
            core::task::Poll::Pending => panic!("a memory disk request is pending"),
        }
    }

    fn shared_blocks(disk: &MemoryDisk) -> usize {
        let store = disk.store.borrow();
        store
            .leaves
            .iter()
            .flatten()
            .flat_map(|leaf| leaf.blocks.iter())
            .filter(|b| matches!(b, Some(Block::Shared { .. })))
            .count()
    }

    fn live_pieces(disk: &MemoryDisk) -> usize {
        let store = disk.store.borrow();
        store.pieces.iter().filter(|p| p.block_count > 0).count()
    }

    /// The bookkeeping agrees with the block table.
    fn check_invariants(disk: &MemoryDisk) {
        let store = disk.store.borrow();
        let mut resident = 0;
        let mut live = vec![0u64; store.pieces.len()];
        for leaf in store.leaves.iter().flatten() {
            assert_eq!(leaf.blocks.len(), LEAF_BLOCKS);
            let used = leaf.blocks.iter().filter(|b| b.is_some()).count();
            assert!(used > 0, "an empty leaf is freed");
            assert_eq!(used, leaf.used, "used count of a leaf");
            for block in leaf.blocks.iter().flatten() {
                resident += 1;
                if let Block::Shared { piece, data } = block {
                    assert_eq!(data.len(), BLOCK_BYTES);
                    live[*piece as usize] += 1;
                }
            }
        }
        assert_eq!(resident, store.resident_blocks, "resident block count");
        for (id, p) in store.pieces.iter().enumerate() {
            assert_eq!(live[id], p.live_blocks, "live block count of piece {id}");
            if p.block_count == 0 {
                assert!(
                    store.free_pieces.contains(&(id as u32)),
                    "dead piece {id} is free"
                );
                assert_eq!(live[id], 0, "dead piece {id} holds blocks");
            } else {
                assert!(
                    p.live_blocks * 2 > p.block_count,
                    "piece {id} should be copied out"
                );
            }
        }
        assert!(store.released.is_empty());
    }

    #[test]
    fn read_back_across_blocks_and_discard() {
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
        check_invariants(&disk);
    }

    #[test]
    fn shared_write_keeps_whole_blocks_and_copies_the_ends() {
        let disk = MemoryDisk::new(2048);
        let data: Vec<u8> = (0..(400 * 512)).map(|i| (i % 253) as u8).collect();
        // Sector 100 is not block-aligned: bytes [51200, 256000) hold whole blocks 1 and 2,
        // and a copied head and tail.
        disk.write_shared(100, Bytes::from(data.clone())).unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read_at(100, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(shared_blocks(&disk), 2);
        assert_eq!(live_pieces(&disk), 1);
        assert_eq!(disk.resident_bytes(), 4 * BLOCK_BYTES);
        check_invariants(&disk);
    }

    #[test]
    fn small_overwrites_copy_only_the_blocks_they_land_in() {
        let disk = MemoryDisk::new(16 * BLOCK_SECTORS);
        disk.write_shared(0, Bytes::from(vec![0x11u8; 16 * BLOCK_BYTES]))
            .unwrap();
        // A 4 KiB write and a 512-byte one: the blocks they land in become the disk's own,
        // the other blocks stay shared.
        disk.write_shared(BLOCK_SECTORS + 8, Bytes::from(vec![0x22u8; 4096]))
            .unwrap();
        disk.write_at(2 * BLOCK_SECTORS + 1, &[0x33u8; 512])
            .unwrap();
        assert_eq!(shared_blocks(&disk), 14);
        assert_eq!(live_pieces(&disk), 1);
        let mut back = vec![0u8; 3 * BLOCK_BYTES];
        disk.read_at(0, &mut back).unwrap();
        let b1 = BLOCK_BYTES;
        assert!(back[..b1 + 4096].iter().all(|&b| b == 0x11));
        assert!(back[b1 + 4096..b1 + 8192].iter().all(|&b| b == 0x22));
        let b2 = 2 * BLOCK_BYTES;
        assert!(back[b1 + 8192..b2 + 512].iter().all(|&b| b == 0x11));
        assert!(back[b2 + 512..b2 + 1024].iter().all(|&b| b == 0x33));
        assert!(back[b2 + 1024..].iter().all(|&b| b == 0x11));
        check_invariants(&disk);
    }

    #[test]
    fn mostly_overwritten_piece_is_copied_out() {
        let disk = MemoryDisk::new(4096);
        let blocks = 8;
        let first = vec![0x11u8; blocks * BLOCK_BYTES];
        disk.write_shared(0, Bytes::from(first)).unwrap();
        // Overwrite all but one of the first half: the piece stays shared.
        let half = blocks / 2;
        disk.write_at(0, &vec![0x22u8; (half - 1) * BLOCK_BYTES])
            .unwrap();
        assert_eq!(live_pieces(&disk), 1);
        // One more: half the piece is gone, its other blocks become the disk's own.
        let last = (half - 1) as u64 * BLOCK_SECTORS;
        disk.write_at(last + 1, &[0x33u8; 512]).unwrap();
        assert_eq!(live_pieces(&disk), 0);
        assert_eq!(shared_blocks(&disk), 0);
        let mut back = vec![0u8; blocks * BLOCK_BYTES];
        disk.read_at(0, &mut back).unwrap();
        let b = (half - 1) * BLOCK_BYTES;
        assert!(back[..b].iter().all(|&x| x == 0x22));
        assert!(back[b..b + 512].iter().all(|&x| x == 0x11));
        assert!(back[b + 512..b + 1024].iter().all(|&x| x == 0x33));
        assert!(back[b + 1024..].iter().all(|&x| x == 0x11));
        check_invariants(&disk);
        // A shared write over the whole range frees the previous one without copying.
        let all = blocks as u64 * BLOCK_SECTORS;
        disk.write_shared(0, Bytes::from(vec![0x44u8; blocks * BLOCK_BYTES]))
            .unwrap();
        disk.write_shared(0, Bytes::from(vec![0x55u8; blocks * BLOCK_BYTES]))
            .unwrap();
        assert_eq!(live_pieces(&disk), 1);
        assert_eq!(shared_blocks(&disk), blocks);
        check_invariants(&disk);
        disk.discard_at(0, all).unwrap();
        assert_eq!(live_pieces(&disk), 0);
        assert_eq!(disk.resident_bytes(), 0);
        assert!(disk.store.borrow().leaves.iter().all(Option::is_none));
        check_invariants(&disk);
    }

    #[test]
    fn read_into_fills_the_slice() {
        let disk = MemoryDisk::new(64);
        let data: Vec<u8> = (0..(20 * 512)).map(|i| (i % 241) as u8).collect();
        disk.write_at(3, &data).unwrap();
        let mut back = vec![0xffu8; 30 * 512];
        assert_eq!(poll_ready(disk.read_into(0, &mut back)), Ok(()));
        assert!(back[..3 * 512].iter().all(|&b| b == 0));
        assert_eq!(&back[3 * 512..23 * 512], &data[..]);
        assert!(back[23 * 512..].iter().all(|&b| b == 0));
        let mut past = vec![0u8; 512];
        assert!(poll_ready(disk.read_into(64, &mut past)).is_err());
    }

    /// Random copied writes, shared writes (block-aligned or not, 4 KiB ones often) and
    /// discards over three leaves of the block table, against a flat model.
    #[test]
    fn random_mix_matches_a_flat_model() {
        let seed: u64 = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_0004);
        let result = std::panic::catch_unwind(|| {
            let sectors = (2 * LEAF_BLOCKS as u64 + 5) * BLOCK_SECTORS;
            let disk = MemoryDisk::new(sectors);
            let mut model = vec![0u8; sectors as usize * SECTOR_BYTES];
            let mut rng = crate::rng::SplitMix64::new(seed);
            let disk_blocks = sectors / BLOCK_SECTORS;
            for step in 0..1500 {
                let (at, len) = match rng.below(4) {
                    // 4 KiB, 4 KiB-aligned: the random-write pattern.
                    0 => (rng.below(sectors / 8) * 8, 8),
                    // Whole blocks, as a large aligned write leaves them.
                    1 => {
                        let first = rng.below(disk_blocks);
                        let count = rng.range_inclusive(1, (disk_blocks - first).min(8));
                        (first * BLOCK_SECTORS, count * BLOCK_SECTORS)
                    }
                    // Anything up to three blocks long.
                    2 => {
                        let at = rng.below(sectors);
                        (
                            at,
                            rng.range_inclusive(1, (sectors - at).min(3 * BLOCK_SECTORS)),
                        )
                    }
                    // Short, sector-granular.
                    _ => {
                        let at = rng.below(sectors);
                        (at, rng.range_inclusive(1, (sectors - at).min(20)))
                    }
                };
                let range = at as usize * SECTOR_BYTES..(at + len) as usize * SECTOR_BYTES;
                match rng.below(5) {
                    0 => {
                        let mut data = vec![0u8; range.len()];
                        rng.fill(&mut data);
                        disk.write_at(at, &data).unwrap();
                        model[range.clone()].copy_from_slice(&data);
                    }
                    1 => {
                        disk.discard_at(at, len).unwrap();
                        model[range.clone()].fill(0);
                    }
                    _ => {
                        let mut data = vec![0u8; range.len()];
                        rng.fill(&mut data);
                        model[range.clone()].copy_from_slice(&data);
                        disk.write_shared(at, Bytes::from(data)).unwrap();
                    }
                }
                // The written range and a little around it; everything now and then.
                let lo = range.start.saturating_sub(BLOCK_BYTES);
                let hi = (range.end + BLOCK_BYTES).min(model.len());
                let mut back = vec![0u8; hi - lo];
                disk.read_at((lo / SECTOR_BYTES) as u64, &mut back).unwrap();
                assert!(back == model[lo..hi], "step {step}: contents differ");
                if step % 100 == 99 {
                    let mut all = vec![0u8; model.len()];
                    disk.read_at(0, &mut all).unwrap();
                    assert!(all == model, "step {step}: contents differ");
                    check_invariants(&disk);
                }
            }
            check_invariants(&disk);
        });
        if let Err(e) = result {
            eprintln!("memory disk model test failed: SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
