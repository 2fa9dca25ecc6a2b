//! Full-stripe gathering of the parity levels: the registry of writes waiting for their
//! stripes, and the notices of writes whose payload is still arriving.
//!
//! Every parity write registers one `Piece` per stripe it touches before it queues on the
//! stripe lock. The writer that holds a stripe's lock writes every piece registered there
//! (its own and those of later writers queued behind it) as one band set: when together
//! they cover the stripe, parity comes from the new data alone, with no member reads. The
//! owners of the gathered pieces find them done when their turn comes.
//!
//! Order: a piece is registered in the same poll as its owner's lock ticket, so registry
//! order is lock order. Whoever holds a stripe's lock is ahead of every registered piece of
//! that stripe (an earlier writer would still hold the lock, or has written or withdrawn its
//! piece), and overlapping pieces are applied oldest first: the result is the one the lock
//! order would give.
//!
//! Notices: a front end that has read a write's header while its payload is still arriving
//! (the NBD server's payload thread) announces it. A partial-stripe writer whose stripe the
//! announced writes would complete waits for them to be submitted (or withdrawn): an event,
//! not a timer, and only for writes the client has already sent.

use alloc::collections::BTreeMap;
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::{Poll, Waker};

use super::Array;
use crate::block::{Bytes, IoError};

/// The part of a request that falls in one data chunk of one stripe.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub data_index: usize,
    pub offset_sectors: u64,
    pub sectors: u64,
    /// Where the segment's bytes start in the request buffer.
    pub buf_offset: usize,
}

/// Where a piece is in its life.
#[derive(Clone, Debug)]
pub(super) enum PieceState {
    /// Registered, written by nobody yet.
    Pending,
    /// Taken by the writer holding the stripe; being written.
    Claimed,
    /// Written (or failed): the outcome for the piece's owner.
    Done(Result<(), IoError>),
}

/// One write's share of one stripe.
pub(super) struct Piece {
    /// Registration order (= lock order).
    pub seq: u64,
    pub stripe: u64,
    pub segs: Vec<Segment>,
    /// The whole request buffer; `segs` index into it.
    pub data: Bytes,
    pub fua: bool,
    pub state: RefCell<PieceState>,
}

impl Piece {
    pub fn is_pending(&self) -> bool {
        matches!(*self.state.borrow(), PieceState::Pending)
    }
}

/// The longest a partial-stripe writer waits for announced writes to arrive.
const GATHER_WAIT_MAX_NS: u64 = 20_000_000;

/// An announced write: array sectors `[start, end)`.
struct Notice {
    id: u64,
    start: u64,
    end: u64,
}

/// Scratch buffers (parity, read segments) kept for reuse, at most.
const SPARE_PARITY_BUFFERS: usize = 8;

/// Per-array gathering state.
#[derive(Default)]
pub(super) struct Gather {
    /// Buffers whose I/O completed (no zero-fill and page faults for the next).
    spare_parity: Vec<Vec<u8>>,
    next_seq: u64,
    next_notice: u64,
    pending: BTreeMap<u64, Vec<Rc<Piece>>>,
    notices: Vec<Notice>,
    /// Bumped whenever a notice ends; waiters look for a change.
    notice_epoch: u64,
    waiters: Vec<Waker>,
}

/// A write announced to an array before its data arrived; dropping it (when the write is
/// submitted, or will never be) ends the announcement and wakes the writers that waited.
pub struct WriteNotice {
    array: Weak<Array>,
    id: u64,
}

impl Drop for WriteNotice {
    fn drop(&mut self) {
        if let Some(array) = self.array.upgrade() {
            array.end_notice(self.id);
        }
    }
}

/// Withdraws the still-pending pieces of a write that stops (error or cancellation).
pub(super) struct Registration<'a> {
    pub array: &'a Array,
    pub pieces: Vec<Rc<Piece>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut g = self.array.gather.borrow_mut();
        for p in &self.pieces {
            if !p.is_pending() {
                continue;
            }
            if let Some(list) = g.pending.get_mut(&p.stripe) {
                list.retain(|q| !Rc::ptr_eq(q, p));
                if list.is_empty() {
                    g.pending.remove(&p.stripe);
                }
            }
        }
    }
}

/// Returns `Pending` once after waking itself: the tasks already queued on the executor
/// run before the caller continues.
pub(super) async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Merges `[start, end)` intervals and says whether they cover `[lo, hi)`.
fn covers(mut ranges: Vec<(u64, u64)>, lo: u64, hi: u64) -> bool {
    ranges.sort_unstable();
    let mut reach = lo;
    for (s, e) in ranges {
        if s > reach {
            break;
        }
        reach = reach.max(e);
        if reach >= hi {
            return true;
        }
    }
    reach >= hi
}

impl Array {
    /// Announces a write of `[sector, sector + sectors)` whose data is still arriving (only
    /// the parity levels use it). Keep the notice until the write is submitted.
    pub fn expect_write(self: &Rc<Self>, sector: u64, sectors: u64) -> WriteNotice {
        let mut g = self.gather.borrow_mut();
        let id = g.next_notice;
        g.next_notice += 1;
        if sectors > 0 && matches!(self.layout, crate::layout::ArrayLayout::Raid5(_)) {
            g.notices.push(Notice {
                id,
                start: sector,
                end: sector.saturating_add(sectors),
            });
        }
        WriteNotice {
            array: Rc::downgrade(self),
            id,
        }
    }

    fn end_notice(&self, id: u64) {
        let wakers = {
            let mut g = self.gather.borrow_mut();
            let before = g.notices.len();
            g.notices.retain(|n| n.id != id);
            if g.notices.len() == before {
                return;
            }
            g.notice_epoch += 1;
            core::mem::take(&mut g.waiters)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A buffer of `bytes` bytes that the caller overwrites whole (parity, or a member read);
    /// its content is whatever an earlier use left.
    pub(super) fn parity_buffer(&self, bytes: usize) -> Vec<u8> {
        let mut g = self.gather.borrow_mut();
        match g.spare_parity.iter().position(|b| b.len() == bytes) {
            Some(i) => g.spare_parity.swap_remove(i),
            None => alloc::vec![0u8; bytes],
        }
    }

    /// Takes back a parity buffer once nothing else holds it (members and the stripe
    /// cache are done with it).
    pub(super) fn recycle_parity_buffer(&self, buf: Bytes) {
        if buf.is_empty() {
            return;
        }
        if let Ok(unique) = buf.try_into_mut() {
            self.recycle_buffer(Vec::from(unique));
        }
    }

    /// Keeps a buffer nothing else holds for a later `parity_buffer` (the read path's
    /// segment buffers, once copied into the reply, go here too).
    pub(super) fn recycle_buffer(&self, buf: Vec<u8>) {
        let mut g = self.gather.borrow_mut();
        if !buf.is_empty() && g.spare_parity.len() < SPARE_PARITY_BUFFERS {
            g.spare_parity.push(buf);
        }
    }

    /// Registers one write's share of `stripe` (see the module comment for the order).
    pub(super) fn register_piece(
        &self,
        stripe: u64,
        segs: Vec<Segment>,
        data: Bytes,
        fua: bool,
    ) -> Rc<Piece> {
        let mut g = self.gather.borrow_mut();
        let seq = g.next_seq;
        g.next_seq += 1;
        let piece = Rc::new(Piece {
            seq,
            stripe,
            segs,
            data,
            fua,
            state: RefCell::new(PieceState::Pending),
        });
        g.pending.entry(stripe).or_default().push(piece.clone());
        piece
    }

    /// Takes every pending piece of `stripe`, oldest first, for the writer holding it.
    pub(super) fn claim_pieces(&self, stripe: u64) -> Vec<Rc<Piece>> {
        let taken = self
            .gather
            .borrow_mut()
            .pending
            .remove(&stripe)
            .unwrap_or_default();
        for p in &taken {
            *p.state.borrow_mut() = PieceState::Claimed;
        }
        taken
    }

    /// Whether the pieces registered on `stripe` leave part of it unwritten that announced
    /// writes would fill (`sds`: data sectors per stripe).
    fn stripe_awaits_notice(&self, stripe: u64, sds: u64, chunk_sectors: u64) -> bool {
        let g = self.gather.borrow();
        let (lo, hi) = (stripe * sds, (stripe + 1) * sds);
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for p in g.pending.get(&stripe).into_iter().flatten() {
            for s in &p.segs {
                let at = lo + s.data_index as u64 * chunk_sectors + s.offset_sectors;
                ranges.push((at, at + s.sectors));
            }
        }
        if covers(ranges.clone(), lo, hi) {
            return false;
        }
        let mut announced = false;
        for n in &g.notices {
            if n.start < hi && lo < n.end {
                announced = true;
                ranges.push((n.start.max(lo), n.end.min(hi)));
            }
        }
        announced && covers(ranges, lo, hi)
    }

    /// Before writing its pending pieces (under their stripes' lock): lets already-queued
    /// writers register, and waits for announced writes that would complete a stripe.
    pub(super) async fn gather_wait(&self, sds: u64, chunk_sectors: u64, mine: &[Rc<Piece>]) {
        yield_now().await;
        // A client that announced a write and then stalls its payload must not hold the
        // stripe for long: past the deadline the writer goes on alone.
        let deadline_ns = self.exec.now_ns().saturating_add(GATHER_WAIT_MAX_NS);
        loop {
            let waiting = mine
                .iter()
                .any(|p| p.is_pending() && self.stripe_awaits_notice(p.stripe, sds, chunk_sectors));
            if !waiting || self.exec.now_ns() >= deadline_ns {
                return;
            }
            let epoch = self.gather.borrow().notice_epoch;
            let seen = Cell::new(false);
            let mut timer = self.exec.sleep_until(deadline_ns);
            poll_fn(|cx| {
                if core::pin::Pin::new(&mut timer).poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                let mut g = self.gather.borrow_mut();
                if g.notice_epoch != epoch || seen.get() {
                    Poll::Ready(())
                } else {
                    g.waiters.push(cx.waker().clone());
                    seen.set(true);
                    Poll::Pending
                }
            })
            .await;
            // The write that ended its notice was just spawned: let it register.
            yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;
    use alloc::vec;

    #[test]
    fn coverage_of_merged_ranges() {
        assert!(covers(vec![(0, 4), (4, 8)], 0, 8));
        assert!(covers(vec![(2, 8), (0, 3)], 0, 8));
        assert!(!covers(vec![(0, 4), (5, 8)], 0, 8));
        assert!(!covers(vec![], 0, 8));
        assert!(covers(vec![(0, 10)], 2, 8));
    }
}
