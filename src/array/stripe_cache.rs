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
//!
//! Copies: a page that one put covers whole shares that put's buffer (`Bytes`, a reference
//! count, no copy), and a get whose pages all share one buffer contiguously is a slice of it;
//! only partly covered pages are copied. The budget counts pages; a shared buffer stays alive
//! while any of its pages is held, so resident memory can exceed the budget by the unheld
//! rest of such buffers (at most one client request each).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use crate::block::{Bytes, SECTOR_BYTES};

/// Default budget: 16 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Sectors per cached page (4 KiB).
const PAGE_SECTORS: u64 = 8;
const PAGE_BYTES: usize = PAGE_SECTORS as usize * SECTOR_BYTES;

type Key = (u64, usize, u64);

/// One cached page of a member cell.
struct Entry {
    /// The page is `src[at..at + PAGE_BYTES]` (sectors outside `valid` are meaningless).
    src: Bytes,
    at: usize,
    /// Bit `i` set: sector `i` of the page is held.
    valid: u8,
    /// The entry's position in the LRU order.
    last_use: u64,
}

/// The held pages, by cell and then by page: a cell's pages sit in one sorted vector, so
/// walking the pages of a cell range costs one search of the (small) cell map.
#[derive(Default)]
struct Pages {
    cells: BTreeMap<(u64, usize), Vec<(u64, Entry)>>,
    len: usize,
}

impl Pages {
    fn slot(pages: &[(u64, Entry)], page: u64) -> Result<usize, usize> {
        pages.binary_search_by_key(&page, |(p, _)| *p)
    }

    fn get(&self, &(stripe, disk, page): &Key) -> Option<&Entry> {
        let pages = self.cells.get(&(stripe, disk))?;
        Self::slot(pages, page).ok().map(|i| &pages[i].1)
    }

    fn get_mut(&mut self, &(stripe, disk, page): &Key) -> Option<&mut Entry> {
        let pages = self.cells.get_mut(&(stripe, disk))?;
        Self::slot(pages, page).ok().map(move |i| &mut pages[i].1)
    }

    /// Adds a page not held yet.
    fn insert(&mut self, (stripe, disk, page): Key, e: Entry) {
        let pages = self.cells.entry((stripe, disk)).or_default();
        let i = Self::slot(pages, page).expect_err("a page is inserted once");
        pages.insert(i, (page, e));
        self.len += 1;
    }

    /// Removes the page if its last use is `tick` (one search: eviction's hot path).
    fn remove_if_used_at(&mut self, &(stripe, disk, page): &Key, tick: u64) {
        let Some(pages) = self.cells.get_mut(&(stripe, disk)) else {
            return;
        };
        if let Ok(i) = Self::slot(pages, page)
            && pages[i].1.last_use == tick
        {
            pages.remove(i);
            self.len -= 1;
            if pages.is_empty() {
                self.cells.remove(&(stripe, disk));
            }
        }
    }

    fn remove_cells(&mut self, from: (u64, usize), to: (u64, usize)) {
        let keys: Vec<(u64, usize)> = self.cells.range(from..=to).map(|(k, _)| *k).collect();
        for k in keys {
            if let Some(pages) = self.cells.remove(&k) {
                self.len -= pages.len();
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.cells.clear();
        self.len = 0;
    }
}

/// An LRU of stripe cells under a byte budget.
pub struct StripeCache {
    budget_bytes: usize,
    cell_sectors: u64,
    entries: Pages,
    /// LRU order: every use appends (tick, key); a record whose tick is no longer its
    /// entry's `last_use` is stale and skipped. Oldest first is evicted first. Appending
    /// instead of moving keeps a use O(1); stale records are compacted away when they
    /// outnumber the live ones.
    order: VecDeque<(u64, Key)>,
    tick: u64,
}

impl StripeCache {
    /// A cache of cells of `cell_sectors` sectors (the chunk) holding at most `budget_bytes`.
    /// A budget smaller than one page disables the cache.
    pub fn new(budget_bytes: usize, cell_sectors: u64) -> Self {
        StripeCache {
            budget_bytes,
            cell_sectors,
            entries: Pages::default(),
            order: VecDeque::new(),
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

    /// Records a use of `key`, whose entry the caller has just set `last_use` of to the
    /// returned tick (taken with `next_tick`).
    fn record_use(&mut self, tick: u64, key: Key) {
        self.order.push_back((tick, key));
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(t, k)| entries.get(k).is_some_and(|e| e.last_use == *t));
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Whether every sector of `[offset, offset + sectors)` of the cell is cached (a peek:
    /// neither a use for the LRU order nor a hit).
    pub fn contains(&self, stripe: u64, disk: usize, offset_sectors: u64, sectors: u64) -> bool {
        if !self.in_cell(offset_sectors, sectors) {
            return false;
        }
        let end = offset_sectors + sectors;
        let first_page = offset_sectors / PAGE_SECTORS;
        let last_page = (end - 1) / PAGE_SECTORS;
        // One search, then a walk over the pages in order: every page must be there.
        let Some(pages) = self.entries.cells.get(&(stripe, disk)) else {
            return false;
        };
        let start = Pages::slot(pages, first_page).unwrap_or_else(|i| i);
        let mut want = first_page;
        for (page, e) in pages[start..].iter().take_while(|(p, _)| *p <= last_page) {
            let page = *page;
            if page != want {
                return false;
            }
            let lo = (page * PAGE_SECTORS).max(offset_sectors);
            let hi = ((page + 1) * PAGE_SECTORS).min(end);
            let mask = (((1u16 << (hi - lo)) - 1) << (lo % PAGE_SECTORS)) as u8;
            if e.valid & mask != mask {
                return false;
            }
            want += 1;
        }
        want == last_page + 1
    }

    /// The sectors `[offset, offset + sectors)` of the cell of `disk` in `stripe`, if every
    /// one of them is cached: a slice of a put's buffer when they all come from one.
    pub fn get(
        &mut self,
        stripe: u64,
        disk: usize,
        offset_sectors: u64,
        sectors: u64,
    ) -> Option<Bytes> {
        if !self.contains(stripe, disk, offset_sectors, sectors) {
            return None;
        }
        let end = offset_sectors + sectors;
        let first_page = offset_sectors / PAGE_SECTORS;
        let last_page = (end - 1) / PAGE_SECTORS;
        let byte_in_page = |s: u64| (s % PAGE_SECTORS) as usize * SECTOR_BYTES;
        // Zero-copy when every page is the next stretch of one buffer.
        let shared = {
            let first = self
                .entries
                .get(&(stripe, disk, first_page))
                .expect("contains checked it");
            let (src, start) = (&first.src, first.at);
            let contiguous = (first_page..=last_page).all(|page| {
                let e = self
                    .entries
                    .get(&(stripe, disk, page))
                    .expect("contains checked it");
                e.src.as_ptr() == src.as_ptr()
                    && e.src.len() == src.len()
                    && e.at == start + (page - first_page) as usize * PAGE_BYTES
            });
            contiguous.then(|| {
                let from = start + byte_in_page(offset_sectors);
                src.slice(from..from + sectors as usize * SECTOR_BYTES)
            })
        };
        let out = match shared {
            Some(b) => b,
            None => {
                let mut out = Vec::with_capacity(sectors as usize * SECTOR_BYTES);
                let mut s = offset_sectors;
                while s < end {
                    let n = (PAGE_SECTORS - s % PAGE_SECTORS).min(end - s);
                    let e = self
                        .entries
                        .get(&(stripe, disk, s / PAGE_SECTORS))
                        .expect("contains checked it");
                    let from = e.at + byte_in_page(s);
                    out.extend_from_slice(&e.src[from..from + n as usize * SECTOR_BYTES]);
                    s += n;
                }
                Bytes::from(out)
            }
        };
        let first_tick = self.tick + 1;
        self.tick += last_page - first_page + 1;
        let pages = self
            .entries
            .cells
            .get_mut(&(stripe, disk))
            .expect("contains checked it");
        let start = Pages::slot(pages, first_page).expect("contains checked it");
        for (i, (page, e)) in pages[start..=start + (last_page - first_page) as usize]
            .iter_mut()
            .enumerate()
        {
            assert_eq!(*page, first_page + i as u64, "contains checked the pages");
            e.last_use = first_tick + i as u64;
        }
        for (i, page) in (first_page..=last_page).enumerate() {
            self.record_use(first_tick + i as u64, (stripe, disk, page));
        }
        Some(out)
    }

    /// Records that the member holds `data` at `offset_sectors` of its cell in `stripe`.
    /// Whole pages share `data`; partly covered pages are copied.
    pub fn put(&mut self, stripe: u64, disk: usize, offset_sectors: u64, data: &Bytes) {
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
            let from = (s - offset_sectors) as usize * SECTOR_BYTES;
            let (src, at, valid) = if n == PAGE_SECTORS {
                (data.clone(), from, u8::MAX)
            } else {
                // A partial page: the held sectors (if any) with the new ones over them.
                let mut page_bytes = vec![0u8; PAGE_BYTES];
                let mut valid = 0u8;
                if let Some(e) = self.entries.get(&key) {
                    page_bytes.copy_from_slice(&e.src[e.at..e.at + PAGE_BYTES]);
                    valid = e.valid;
                }
                let at = (s % PAGE_SECTORS) as usize * SECTOR_BYTES;
                let len = n as usize * SECTOR_BYTES;
                page_bytes[at..at + len].copy_from_slice(&data[from..from + len]);
                for i in s % PAGE_SECTORS..s % PAGE_SECTORS + n {
                    valid |= 1 << i;
                }
                (Bytes::from(page_bytes), 0, valid)
            };
            let tick = self.next_tick();
            match self.entries.get_mut(&key) {
                Some(e) => {
                    e.src = src;
                    e.at = at;
                    e.valid = valid;
                    e.last_use = tick;
                }
                None => {
                    // Room for the new page first, so the budget holds at every moment.
                    self.evict_to(self.budget_bytes - PAGE_BYTES);
                    self.entries.insert(
                        key,
                        Entry {
                            src,
                            at,
                            valid,
                            last_use: tick,
                        },
                    );
                }
            }
            self.record_use(tick, key);
            s += n;
        }
        assert!(
            self.bytes() <= self.budget_bytes,
            "stripe cache over budget"
        );
    }

    /// Forgets every cell of `stripe`. (The order records of its pages go stale and are
    /// skipped or compacted later.)
    pub fn invalidate_stripe(&mut self, stripe: u64) {
        self.entries.remove_cells((stripe, 0), (stripe, usize::MAX));
    }

    /// Forgets one member's cell of `stripe`.
    pub fn invalidate_cell(&mut self, stripe: u64, disk: usize) {
        self.entries.remove_cells((stripe, disk), (stripe, disk));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn evict_to(&mut self, bytes: usize) {
        while self.bytes() > bytes {
            let Some((tick, key)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove_if_used_at(&key, tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn sectors(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n * SECTOR_BYTES])
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
        let data: Bytes = (0..4 * SECTOR_BYTES)
            .map(|i| (i / SECTOR_BYTES) as u8)
            .collect::<Vec<u8>>()
            .into();
        big.put(1, 2, 6, &data);
        assert_eq!(big.len(), 2);
        assert_eq!(big.get(1, 2, 6, 4), Some(data.clone()));
        assert_eq!(big.get(1, 2, 8, 2), Some(data.slice(2 * SECTOR_BYTES..)));
        big.put(1, 2, 40, &sectors(1, 5));
        assert_eq!(big.len(), 2, "the least recently used page made room");
        assert_eq!(big.get(1, 2, 6, 2), None);
    }

    #[test]
    fn whole_pages_share_the_put_buffer() {
        let mut c = StripeCache::new(1 << 20, 64);
        let data: Bytes = (0..32 * SECTOR_BYTES)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        c.put(0, 1, 8, &data);
        let got = c.get(0, 1, 10, 20).expect("cached");
        assert_eq!(got, data.slice(2 * SECTOR_BYTES..22 * SECTOR_BYTES));
        assert_eq!(got.as_ptr(), data[2 * SECTOR_BYTES..].as_ptr(), "no copy");
        // A partial update copies its page; the rest still comes out right.
        c.put(0, 1, 12, &sectors(1, 0xee));
        let got = c.get(0, 1, 8, 32).expect("cached");
        assert_eq!(&got[..4 * SECTOR_BYTES], &data[..4 * SECTOR_BYTES]);
        assert!(
            got[4 * SECTOR_BYTES..5 * SECTOR_BYTES]
                .iter()
                .all(|&b| b == 0xee)
        );
        assert_eq!(&got[5 * SECTOR_BYTES..], &data[5 * SECTOR_BYTES..]);
    }

    #[test]
    fn agrees_with_a_byte_model() {
        let seed = 0xc0ffee;
        let mut rng = SplitMix64::new(seed);
        let cell_sectors = 40u64;
        let mut c = StripeCache::new(1 << 20, cell_sectors);
        // What each (stripe, disk) cell holds, and which sectors were put.
        let mut model = vec![vec![0u8; cell_sectors as usize * SECTOR_BYTES]; 4];
        let mut held = vec![vec![false; cell_sectors as usize]; 4];
        for step in 0..3000 {
            let cell = rng.below(4) as usize;
            let off = rng.below(cell_sectors);
            let n = 1 + rng.below(cell_sectors - off);
            let range = off as usize * SECTOR_BYTES..(off + n) as usize * SECTOR_BYTES;
            if rng.below(2) == 0 {
                let data: Bytes = (0..range.len())
                    .map(|_| rng.below(256) as u8)
                    .collect::<Vec<u8>>()
                    .into();
                model[cell][range].copy_from_slice(&data);
                held[cell][off as usize..(off + n) as usize].fill(true);
                c.put(cell as u64 / 2, cell % 2, off, &data);
            } else {
                let all = held[cell][off as usize..(off + n) as usize]
                    .iter()
                    .all(|&h| h);
                match c.get(cell as u64 / 2, cell % 2, off, n) {
                    Some(got) => {
                        assert_eq!(&got[..], &model[cell][range], "seed {seed} step {step}")
                    }
                    None => assert!(!all, "seed {seed} step {step}: held but missed"),
                }
            }
        }
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
                assert!(c.order.len() <= 2 * c.entries.len() + 64 + 1);
                let live = c
                    .order
                    .iter()
                    .filter(|(t, k)| c.entries.get(k).is_some_and(|e| e.last_use == *t))
                    .count();
                assert_eq!(live, c.entries.len(), "one live order record per entry");
            }
        }
    }
}
