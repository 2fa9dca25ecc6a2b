//! Range locks: overlapping requests take effect in arrival order, disjoint ones run at once.
//!
//! A request takes a ticket when it arrives; it is granted once no earlier ticket overlaps
//! its range. So two writes to the same blocks reach every member in the same order (mirrors
//! never disagree, parity never matches neither), while unrelated requests never wait.

use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::poll_fn;
use core::task::{Poll, Waker};

struct Entry {
    ticket: u64,
    start: u64,
    end: u64,
    exclusive: bool,
    waker: Option<Waker>,
}

impl Entry {
    fn conflicts(&self, start: u64, end: u64, exclusive: bool) -> bool {
        (self.exclusive || exclusive) && self.start < end && start < self.end
    }
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    /// Ordered by ticket.
    entries: Vec<Entry>,
}

/// A lock over half-open ranges `[start, end)` of some address space.
#[derive(Default)]
pub struct RangeLock {
    state: RefCell<State>,
}

/// Holds a range until dropped.
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    ticket: u64,
}

impl RangeLock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until `[start, end)` is free of every earlier request, then holds it alone.
    pub async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        self.acquire(start, end, true).await
    }

    /// Like `lock`, but other shared holders of overlapping ranges may hold at the same time.
    pub async fn lock_shared(&self, start: u64, end: u64) -> RangeGuard<'_> {
        self.acquire(start, end, false).await
    }

    async fn acquire(&self, start: u64, end: u64, exclusive: bool) -> RangeGuard<'_> {
        assert!(start < end, "empty range lock");
        let ticket = {
            let mut st = self.state.borrow_mut();
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.entries.push(Entry {
                ticket,
                start,
                end,
                exclusive,
                waker: None,
            });
            ticket
        };
        // Built before the wait, so that a cancelled wait still removes its entry.
        let guard = RangeGuard { lock: self, ticket };
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let pos = st
                .entries
                .iter()
                .position(|e| e.ticket == ticket)
                .expect("a waiting range lock entry is present");
            let blocked = st.entries[..pos]
                .iter()
                .any(|e| e.conflicts(start, end, exclusive));
            if blocked {
                st.entries[pos].waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        guard
    }

    /// Number of held or waiting ranges.
    pub fn len(&self) -> usize {
        self.state.borrow().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let wakers: Vec<Waker> = {
            let mut st = self.lock.state.borrow_mut();
            let Some(pos) = st.entries.iter().position(|e| e.ticket == self.ticket) else {
                return;
            };
            let gone = st.entries.remove(pos);
            st.entries[pos..]
                .iter_mut()
                .filter(|e| e.conflicts(gone.start, gone.end, gone.exclusive))
                .filter_map(|e| e.waker.take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;
    use alloc::rc::Rc;
    use core::future::Future;

    #[test]
    fn overlapping_in_order_disjoint_concurrent() {
        let exec = Executor::new();
        let lock = Rc::new(RangeLock::new());
        let log = Rc::new(RefCell::new(Vec::new()));
        // (id, start, end, hold time)
        let reqs = [
            (0, 0, 10, 50),
            (1, 5, 15, 10),
            (2, 20, 30, 5),
            (3, 0, 30, 1),
        ];
        for (id, s, e, hold) in reqs {
            let lock = lock.clone();
            let log = log.clone();
            let ex = exec.clone();
            exec.spawn_detached(async move {
                let _g = lock.lock(s, e).await;
                log.borrow_mut().push((id, "in", ex.now_ns()));
                ex.sleep(hold).await;
                log.borrow_mut().push((id, "out", ex.now_ns()));
            });
        }
        exec.run_until_idle();
        let log = log.borrow();
        let t = |id, what| log.iter().find(|x| x.0 == id && x.1 == what).unwrap().2;
        // 2 is disjoint from 0 and 1: runs at once.
        assert_eq!(t(2, "in"), 0);
        // 1 waits for 0; 3 waits for all three earlier ones.
        assert_eq!(t(1, "in"), t(0, "out"));
        assert_eq!(t(3, "in"), t(1, "out").max(t(2, "out")));
        assert!(lock.is_empty());
    }

    #[test]
    fn shared_holders_overlap_exclusive_waits() {
        let exec = Executor::new();
        let lock = Rc::new(RangeLock::new());
        let log = Rc::new(RefCell::new(Vec::new()));
        for (id, exclusive) in [(0, false), (1, false), (2, true), (3, false)] {
            let lock = lock.clone();
            let log = log.clone();
            let ex = exec.clone();
            exec.spawn_detached(async move {
                let _g = if exclusive {
                    lock.lock(0, 8).await
                } else {
                    lock.lock_shared(4, 12).await
                };
                log.borrow_mut().push((id, ex.now_ns()));
                ex.sleep(10).await;
            });
        }
        exec.run_until_idle();
        assert_eq!(*log.borrow(), alloc::vec![(0, 0), (1, 0), (2, 10), (3, 20)]);
    }

    #[test]
    fn cancelled_waiter_releases_its_place() {
        let exec = Executor::new();
        let lock = Rc::new(RangeLock::new());
        let l2 = lock.clone();
        let ex = exec.clone();
        let got = exec.block_on(async move {
            let g = l2.lock(0, 8).await;
            {
                // A waiter that queued, then is dropped before it is granted.
                let mut waiting = alloc::boxed::Box::pin(l2.lock(0, 8));
                core::future::poll_fn(|cx| {
                    assert!(waiting.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                assert_eq!(l2.len(), 2);
            }
            assert_eq!(l2.len(), 1);
            drop(g);
            ex.sleep(1).await;
            let _g = l2.lock(0, 8).await;
            l2.len()
        });
        assert_eq!(got, Some(1));
    }
}
