//! The bounded stripe cache of the parity levels: recently read or written member cells
//! (data, P and Q) of a stripe, kept in least-recently-used order under a byte budget.
//!
//! What it may hold: only content that is on the member right now. The engine puts cells in
//! after a member read succeeded or after a member write succeeded (write-through: nothing
//! is acknowledged from the cache alone), under the stripe lock, and drops a stripe's cells
//! whenever something else may change them (read or write errors, repair, resync) and
//! everything when a member fails. Any new code that writes member cells of a parity array
//! (scrub repair, rebuild) must call `Array::stripe_cache_invalidate` for the stripe first.
//!
//! Granularity: entries are 4 KiB pages of a member cell (md's own stripe-cache unit; a
//! parity chunk is a whole number of them), keyed by (stripe, member, page), each with a
//! per-sector validity mask so partial pages can be cached; the budget counts whole pages.
//! A small write to an array with large chunks therefore costs a few pages, not chunks.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::block::SECTOR_BYTES;

/// Default budget: 16 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Sectors per cached page (4 KiB).
const PAGE_SECTORS: u64 = 8;
const PAGE_BYTES: usize = PAGE_SECTORS as usize * SECTOR_BYTES;

type Key = (u64, usize, u64);

/// One cached page of a member cell.
struct Entry {
    data: Vec<u8>,
    /// Bit `i` set: sector `i` of the page is held.
    valid: u8,
    /// The entry's position in the LRU order.
    last_use: u64,
}

/// An LRU of stripe cells under a byte budget.
pub struct StripeCache {
    budget_bytes: usize,
    cell_sectors: u64,
    entries: BTreeMap<Key, Entry>,
    /// LRU order: use tick -> key. The smallest tick is evicted first.
    order: BTreeMap<u64, Key>,
    tick: u64,
}

impl StripeCache {
    /// A cache of cells of `cell_sectors` sectors (the chunk) holding at most `budget_bytes`.
    /// A budget smaller than one page disables the cache.
    pub fn new(budget_bytes: usize, cell_sectors: u64) -> Self {
        StripeCache {
            budget_bytes,
            cell_sectors,
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// Bytes held (whole pages).
    pub fn bytes(&self) -> usize {
        self.entries.len() * PAGE_BYTES
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Number of pages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changes the budget, evicting what no longer fits.
    pub fn set_budget_bytes(&mut self, budget_bytes: usize) {
        self.budget_bytes = budget_bytes;
        self.evict_to(budget_bytes);
    }

    fn in_cell(&self, offset_sectors: u64, sectors: u64) -> bool {
        sectors > 0
            && offset_sectors
                .checked_add(sectors)
                .is_some_and(|end| end <= self.cell_sectors)
    }

    fn touch(&mut self, key: Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(&key) {
            self.order.remove(&e.last_use);
            e.last_use = tick;
            self.order.insert(tick, key);
        }
    }

    fn held(&self, stripe: u64, disk: usize, sector: u64) -> bool {
        self.entries
            .get(&(stripe, disk, sector / PAGE_SECTORS))
            .is_some_and(|e| e.valid >> (sector % PAGE_SECTORS) & 1 == 1)
    }

    /// Whether every sector of `[offset, offset + sectors)` of the cell is cached (a peek:
    /// neither a use for the LRU order nor a hit).
    pub fn contains(&self, stripe: u64, disk: usize, offset_sectors: u64, sectors: u64) -> bool {
        self.in_cell(offset_sectors, sectors)
            && (offset_sectors..offset_sectors + sectors).all(|s| self.held(stripe, disk, s))
    }

    /// The sectors `[offset, offset + sectors)` of the cell of `disk` in `stripe`, if every
    /// one of them is cached.
    pub fn get(
        &mut self,
        stripe: u64,
        disk: usize,
        offset_sectors: u64,
        sectors: u64,
    ) -> Option<Vec<u8>> {
        if !self.contains(stripe, disk, offset_sectors, sectors) {
            return None;
        }
        let mut out = vec![0u8; sectors as usize * SECTOR_BYTES];
        let end = offset_sectors + sectors;
        let mut s = offset_sectors;
        while s < end {
            let page = s / PAGE_SECTORS;
            let n = (PAGE_SECTORS - s % PAGE_SECTORS).min(end - s);
            let key = (stripe, disk, page);
            let e = self.entries.get(&key).expect("contains checked it");
            let from = (s % PAGE_SECTORS) as usize * SECTOR_BYTES;
            let to = (s - offset_sectors) as usize * SECTOR_BYTES;
            let len = n as usize * SECTOR_BYTES;
            out[to..to + len].copy_from_slice(&e.data[from..from + len]);
            self.touch(key);
            s += n;
        }
        Some(out)
    }

    /// Records that the member holds `data` at `offset_sectors` of its cell in `stripe`.
    pub fn put(&mut self, stripe: u64, disk: usize, offset_sectors: u64, data: &[u8]) {
        assert_eq!(data.len() % SECTOR_BYTES, 0, "cache puts whole sectors");
        let sectors = (data.len() / SECTOR_BYTES) as u64;
        if !self.in_cell(offset_sectors, sectors) || PAGE_BYTES > self.budget_bytes {
            return;
        }
        let end = offset_sectors + sectors;
        let mut s = offset_sectors;
        while s < end {
            let page = s / PAGE_SECTORS;
            let n = (PAGE_SECTORS - s % PAGE_SECTORS).min(end - s);
            let key = (stripe, disk, page);
            if !self.entries.contains_key(&key) {
                // Room for the new page first, so the budget holds at every moment.
                self.evict_to(self.budget_bytes - PAGE_BYTES);
                self.entries.insert(
                    key,
                    Entry {
                        data: vec![0u8; PAGE_BYTES],
                        valid: 0,
                        last_use: 0,
                    },
                );
            }
            let e = self
                .entries
                .get_mut(&key)
                .expect("present or just inserted");
            let at = (s % PAGE_SECTORS) as usize * SECTOR_BYTES;
            let from = (s - offset_sectors) as usize * SECTOR_BYTES;
            let len = n as usize * SECTOR_BYTES;
            e.data[at..at + len].copy_from_slice(&data[from..from + len]);
            for i in s % PAGE_SECTORS..s % PAGE_SECTORS + n {
                e.valid |= 1 << i;
            }
            self.touch(key);
            s += n;
        }
        assert!(
            self.bytes() <= self.budget_bytes,
            "stripe cache over budget"
        );
    }

    fn remove_range(&mut self, from: Key, to: Key) {
        let keys: Vec<Key> = self.entries.range(from..=to).map(|(k, _)| *k).collect();
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                self.order.remove(&e.last_use);
            }
        }
    }

    /// Forgets every cell of `stripe`.
    pub fn invalidate_stripe(&mut self, stripe: u64) {
        self.remove_range((stripe, 0, 0), (stripe, usize::MAX, u64::MAX));
    }

    /// Forgets one member's cell of `stripe`.
    pub fn invalidate_cell(&mut self, stripe: u64, disk: usize) {
        self.remove_range((stripe, disk, 0), (stripe, disk, u64::MAX));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn evict_to(&mut self, bytes: usize) {
        while self.bytes() > bytes {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn sectors(n: usize, fill: u8) -> Vec<u8> {
        vec![fill; n * SECTOR_BYTES]
    }

    #[test]
    fn hit_needs_every_sector() {
        let mut c = StripeCache::new(1 << 20, 8);
        assert_eq!(c.get(0, 0, 0, 1), None);
        c.put(0, 0, 2, &sectors(3, 7));
        assert!(c.contains(0, 0, 2, 3) && !c.contains(0, 0, 1, 3));
        assert_eq!(c.get(0, 0, 2, 3), Some(sectors(3, 7)));
        assert_eq!(c.get(0, 0, 3, 1), Some(sectors(1, 7)));
        assert_eq!(c.get(0, 0, 1, 2), None, "sector 1 never cached");
        assert_eq!(c.get(0, 1, 2, 1), None, "another member");
        assert_eq!(c.get(1, 0, 2, 1), None, "another stripe");
        assert_eq!(c.get(0, 0, 7, 2), None, "past the cell");
        c.put(0, 0, 2, &sectors(1, 9));
        assert_eq!(c.get(0, 0, 2, 1), Some(sectors(1, 9)), "an update replaces");
    }

    #[test]
    fn least_recently_used_goes_first() {
        let page = 8 * SECTOR_BYTES;
        let mut c = StripeCache::new(3 * page, 8);
        for s in 0..3 {
            c.put(s, 0, 0, &sectors(8, s as u8));
        }
        assert!(c.get(0, 0, 0, 8).is_some());
        c.put(3, 0, 0, &sectors(8, 3));
        assert_eq!(c.len(), 3);
        assert!(
            c.get(1, 0, 0, 1).is_none(),
            "stripe 1 was least recently used"
        );
        assert!(c.get(0, 0, 0, 1).is_some());
        assert!(c.get(2, 0, 0, 1).is_some());
        assert!(c.get(3, 0, 0, 1).is_some());
    }

    #[test]
    fn invalidation_and_tiny_budget() {
        let mut c = StripeCache::new(1 << 20, 8);
        for d in 0..4 {
            c.put(5, d, 0, &sectors(8, 1));
            c.put(6, d, 0, &sectors(8, 1));
        }
        c.invalidate_stripe(5);
        assert!((0..4).all(|d| c.get(5, d, 0, 1).is_none()));
        assert!((0..4).all(|d| c.get(6, d, 0, 1).is_some()));
        c.invalidate_cell(6, 2);
        assert!(c.get(6, 2, 0, 1).is_none() && c.get(6, 1, 0, 1).is_some());
        c.clear();
        assert!(c.is_empty() && c.bytes() == 0);
        let mut off = StripeCache::new(SECTOR_BYTES, 8);
        off.put(0, 0, 0, &sectors(1, 1));
        assert!(off.is_empty(), "a budget below one page caches nothing");
        // A cell of several pages: a range across a page boundary.
        let mut big = StripeCache::new(2 * PAGE_BYTES, 64);
        let mut data = sectors(4, 0);
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i / SECTOR_BYTES) as u8;
        }
        big.put(1, 2, 6, &data);
        assert_eq!(big.len(), 2);
        assert_eq!(big.get(1, 2, 6, 4), Some(data.clone()));
        assert_eq!(big.get(1, 2, 8, 2), Some(data[2 * SECTOR_BYTES..].to_vec()));
        big.put(1, 2, 40, &sectors(1, 5));
        assert_eq!(big.len(), 2, "the least recently used page made room");
        assert_eq!(big.get(1, 2, 6, 2), None);
    }

    #[test]
    fn budget_is_never_exceeded() {
        let mut rng = SplitMix64::new(0x5eed);
        for budget_cells in [1usize, 2, 5, 17] {
            let cell_sectors = 16;
            let budget = budget_cells * PAGE_BYTES + 100;
            let mut c = StripeCache::new(budget, cell_sectors);
            for step in 0..2000 {
                let stripe = rng.below(40);
                let disk = rng.below(6) as usize;
                match rng.below(10) {
                    0 => c.invalidate_stripe(stripe),
                    1 if step % 7 == 0 => {
                        c.set_budget_bytes(budget / 2 + rng.below(budget as u64) as usize)
                    }
                    2..=5 => {
                        let off = rng.below(cell_sectors);
                        let n = 1 + rng.below(cell_sectors - off);
                        let fill = (stripe as u8) ^ (disk as u8) << 4;
                        c.put(stripe, disk, off, &sectors(n as usize, fill));
                    }
                    _ => {
                        let off = rng.below(cell_sectors);
                        if let Some(d) = c.get(stripe, disk, off, 1) {
                            assert!(d.iter().all(|&b| b == (stripe as u8) ^ (disk as u8) << 4));
                        }
                    }
                }
                assert!(c.bytes() <= c.budget_bytes(), "budget {budget_cells} cells");
                assert_eq!(c.order.len(), c.entries.len());
            }
        }
    }
}
