//! The CacheManager: one memory budget (the driver's "cache size") shared by the stripe
//! caches of every parity array. Each array asks for a budget (its `stripe_cache` setting);
//! while the asks fit in the cache size every array gets what it asked, and when they do
//! not, each gets a share of the cache size in proportion to its ask. It also reports the
//! cache-hit ratio over every array. Write-through is the only write policy so far: a write
//! is acknowledged once the members have it (write-back arrives with the journal).

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::array::Array;

/// The driver's cache size by default: 256 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

pub struct CacheManager {
    budget_bytes: Cell<usize>,
    arrays: RefCell<Vec<Weak<Array>>>,
}

impl Default for CacheManager {
    fn default() -> Self {
        CacheManager {
            budget_bytes: Cell::new(DEFAULT_CACHE_BYTES),
            arrays: RefCell::new(Vec::new()),
        }
    }
}

impl CacheManager {
    /// Takes an array's stripe cache into the shared budget.
    pub fn adopt(&self, array: &Rc<Array>) {
        if array.has_stripe_cache() {
            self.arrays.borrow_mut().push(Rc::downgrade(array));
            self.rebalance();
        }
    }

    /// The cache size every array's stripe cache shares.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes.get()
    }

    pub fn set_budget_bytes(&self, bytes: usize) {
        self.budget_bytes.set(bytes);
        self.rebalance();
    }

    /// Shares the budget out again (after an array came or went, or changed its ask).
    pub fn rebalance(&self) {
        let arrays: Vec<Rc<Array>> = {
            let mut list = self.arrays.borrow_mut();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let asked: u128 = arrays.iter().map(|a| a.stripe_cache_bytes() as u128).sum();
        let budget = self.budget_bytes.get() as u128;
        for array in &arrays {
            let cap = if asked <= budget {
                usize::MAX
            } else {
                (budget * array.stripe_cache_bytes() as u128 / asked) as usize
            };
            array.set_stripe_cache_cap(cap);
        }
    }

    /// Bytes the stripe caches may hold now, together.
    pub fn granted_bytes(&self) -> usize {
        self.live()
            .iter()
            .map(|a| a.stripe_cache_effective_bytes())
            .sum()
    }

    /// Cache hits over every array's stripe cache lookups, if there were any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let (hits, misses) = self.live().iter().fold((0u64, 0u64), |(h, m), a| {
            let c = a.counters();
            (h + c.cache_hits, m + c.cache_misses)
        });
        (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
    }

    fn live(&self) -> Vec<Rc<Array>> {
        self.arrays
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}
