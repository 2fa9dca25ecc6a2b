//! The driver's heap: one bounded region (no `brk`, no `mmap`), managed by
//! `linked_list_allocator`, with the high-water mark counted. Its size is fixed at build
//! time: `ORION_RAID_HEAP_MIB` (default 64 MiB) for the driver's own state and requests, plus
//! `ORION_RAID_CACHE_MIB` (default 16 MiB), the cache size the CacheManager shares among the
//! stripe caches. The region sits in `.bss`, so pages the driver never touches cost nothing.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use linked_list_allocator::Heap;
use spin::Mutex;

/// The driver's own heap bytes: `ORION_RAID_HEAP_MIB` at build time, else 64 MiB.
pub const HEAP_BYTES: usize = parse_mib(option_env!("ORION_RAID_HEAP_MIB"), 64) << 20;
/// The cache size (every stripe cache together): `ORION_RAID_CACHE_MIB`, else 16 MiB.
pub const CACHE_BYTES: usize = parse_mib(option_env!("ORION_RAID_CACHE_MIB"), 16) << 20;
/// The whole region: the heap and the cache it holds.
pub const REGION_BYTES: usize = HEAP_BYTES + CACHE_BYTES;

const fn parse_mib(text: Option<&str>, default: usize) -> usize {
    let Some(text) = text else {
        return default;
    };
    let bytes = text.as_bytes();
    let mut value = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let d = bytes[i];
        assert!(
            d.is_ascii_digit(),
            "ORION_RAID_HEAP_MIB and ORION_RAID_CACHE_MIB are numbers of MiB"
        );
        value = value * 10 + (d - b'0') as usize;
        i += 1;
    }
    assert!(
        value > 0,
        "ORION_RAID_HEAP_MIB and ORION_RAID_CACHE_MIB are at least 1"
    );
    value
}

struct Region(UnsafeCell<MaybeUninit<[u8; REGION_BYTES]>>);

// SAFETY: the region is handed to the allocator once, in `init`, and touched only through
// it afterwards; the driver is single-threaded.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new(MaybeUninit::uninit()));

/// The allocator with its use and high-water mark counted.
pub struct CountingHeap {
    heap: Mutex<Heap>,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingHeap {
    pub const fn new() -> Self {
        CountingHeap {
            heap: Mutex::new(Heap::empty()),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Gives the region to the allocator; called once, first thing.
    pub fn init(&self) {
        // SAFETY: the region is static, REGION_BYTES long, and given to the allocator exactly
        // once (the entry point calls this once before any allocation).
        unsafe {
            self.heap
                .lock()
                .init(REGION.0.get().cast::<u8>(), REGION_BYTES);
        }
    }

    /// The most heap bytes in use at once so far.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is forwarded to `linked_list_allocator`'s `Heap` under a lock; the
// counters only observe sizes.
unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self
            .heap
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr());
        if !p.is_null() {
            let now = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout, so from this heap.
        unsafe {
            self.heap
                .lock()
                .deallocate(core::ptr::NonNull::new_unchecked(ptr), layout)
        };
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
