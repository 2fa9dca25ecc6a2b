//! Chunk buffers the background jobs reuse.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::block::Bytes;

/// Whole-chunk buffers a background job (a parity rebuild, a scrub) reuses from one stripe
/// to the next, so it neither zero-fills nor faults in fresh memory per chunk: a fresh
/// multi-page allocation per cell costs more than the work done on it. Keeps at most
/// `max_bytes` of capacity between uses; what comes back beyond that is freed.
pub(crate) struct ChunkBuffers {
    free: RefCell<Vec<Vec<u8>>>,
    kept_bytes: Cell<usize>,
    max_bytes: usize,
}

impl ChunkBuffers {
    pub(crate) fn new(max_bytes: usize) -> Self {
        ChunkBuffers {
            free: RefCell::new(Vec::new()),
            kept_bytes: Cell::new(0),
            max_bytes,
        }
    }

    /// A buffer of `len` bytes; its content is whatever it held last (zeroes where it is
    /// new).
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let kept = self.free.borrow_mut().pop();
        match kept {
            Some(mut buf) => {
                self.kept_bytes.set(self.kept_bytes.get() - buf.capacity());
                buf.resize(len, 0);
                buf
            }
            None => vec![0u8; len],
        }
    }

    /// Keeps `buf` for a later [`Self::take`], unless that would exceed the limit.
    pub(crate) fn give(&self, buf: Vec<u8>) {
        let bytes = buf.capacity();
        if bytes > 0 && self.kept_bytes.get() + bytes <= self.max_bytes {
            self.kept_bytes.set(self.kept_bytes.get() + bytes);
            self.free.borrow_mut().push(buf);
        }
    }

    /// Takes back a buffer that went out in a write, if nobody else holds it any more.
    pub(crate) fn give_back(&self, data: Bytes) {
        if let Ok(buf) = data.try_into_mut() {
            self.give(Vec::from(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_up_to_the_limit() {
        let pool = ChunkBuffers::new(2 * 4096);
        let (a, b, c) = (pool.take(4096), pool.take(4096), pool.take(4096));
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        pool.give(a);
        pool.give(b);
        // The third would pass the limit: freed.
        pool.give(c);
        let again = [pool.take(4096), pool.take(4096)];
        let mut ptrs: Vec<_> = again.iter().map(|b| b.as_ptr()).collect();
        ptrs.sort();
        let mut want = vec![pa, pb];
        want.sort();
        assert_eq!(ptrs, want, "the two kept buffers are handed out again");
        assert!(again.iter().all(|b| b.len() == 4096));
        // Nothing is kept now: a new buffer is zeroed.
        assert!(pool.take(100).iter().all(|&x| x == 0));
    }

    #[test]
    fn a_kept_buffer_takes_the_length_asked_for() {
        let pool = ChunkBuffers::new(1 << 20);
        let mut buf = pool.take(8);
        buf.fill(7);
        pool.give(buf);
        let longer = pool.take(12);
        assert_eq!(longer, [7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0]);
        pool.give(longer);
        assert_eq!(pool.take(3), [7, 7, 7]);
        // An empty buffer is not kept.
        pool.give(Vec::new());
        assert_eq!(pool.free.borrow().len(), 0);
    }

    #[test]
    fn a_written_buffer_comes_back_only_when_nobody_holds_it() {
        let pool = ChunkBuffers::new(1 << 20);
        let data = Bytes::from(pool.take(4096));
        let other = data.clone();
        pool.give_back(data);
        assert_eq!(pool.free.borrow().len(), 0, "still held");
        pool.give_back(other);
        assert_eq!(pool.free.borrow().len(), 1);
    }
}
