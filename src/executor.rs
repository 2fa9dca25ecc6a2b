//! The single-threaded deterministic executor that drives every task of the driver.
//!
//! Tasks are polled in the order they became ready; timers fire in deadline order (ties in
//! the order they were set). Time never comes from the OS: the platform moves the clock
//! (`advance_to`), and a simulation jumps straight to the next deadline (`run_until_idle`),
//! so a whole run is a function of its seed. A platform with a fine monotonic clock may
//! install it as the clock source (`set_clock_source`): `now_ns` then reads it, so latency
//! measurements see real time between the platform's turns; simulations install none. Wakers are `Send + Sync`: a completion that
//! arrives on another thread (a host worker) queues the task and calls the notifier, which
//! wakes the platform's main loop.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

type Task = Pin<Box<dyn Future<Output = ()>>>;
type Notifier = Arc<dyn Fn() + Send + Sync>;
/// A monotonic clock in nanoseconds, read on the executor's thread.
pub type ClockSource = Box<dyn Fn() -> u64>;

struct ReadyQueue {
    ids: spin::Mutex<VecDeque<usize>>,
    notifier: spin::Mutex<Option<Notifier>>,
}

impl ReadyQueue {
    fn push(&self, id: usize) {
        self.ids.lock().push_back(id);
        let notifier = self.notifier.lock().clone();
        if let Some(notify) = notifier {
            notify();
        }
    }
}

struct TaskWaker {
    id: usize,
    queue: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.queue.push(self.id);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.push(self.id);
    }
}

struct Slot {
    /// `None` while the task is being polled.
    task: Option<Task>,
    waker: Waker,
}

struct Inner {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    ready: Arc<ReadyQueue>,
    timers: RefCell<BTreeMap<(u64, u64), Waker>>,
    timer_seq: Cell<u64>,
    now_ns: Cell<u64>,
    clock_source: RefCell<Option<ClockSource>>,
    live_tasks: Cell<usize>,
}

/// A handle to the executor; clones share it.
#[derive(Clone)]
pub struct Executor {
    inner: Rc<Inner>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// A new executor whose clock reads zero.
    pub fn new() -> Self {
        Executor {
            inner: Rc::new(Inner {
                slots: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
                ready: Arc::new(ReadyQueue {
                    ids: spin::Mutex::new(VecDeque::new()),
                    notifier: spin::Mutex::new(None),
                }),
                timers: RefCell::new(BTreeMap::new()),
                timer_seq: Cell::new(0),
                now_ns: Cell::new(0),
                clock_source: RefCell::new(None),
                live_tasks: Cell::new(0),
            }),
        }
    }

    /// Calls `notify` (from any thread) whenever a task becomes ready.
    pub fn set_notifier(&self, notify: Arc<dyn Fn() + Send + Sync>) {
        *self.inner.ready.notifier.lock() = Some(notify);
    }

    /// Starts `future` as a task and returns a handle that resolves to its output.
    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
        let shared = Rc::new(JoinShared {
            output: RefCell::new(None),
            waiter: RefCell::new(None),
        });
        let completion = shared.clone();
        self.spawn_detached(async move {
            let value = future.await;
            *completion.output.borrow_mut() = Some(value);
            if let Some(waker) = completion.waiter.borrow_mut().take() {
                waker.wake();
            }
        });
        JoinHandle { shared }
    }

    /// Starts `future` as a task whose result nobody waits for.
    pub fn spawn_detached(&self, future: impl Future<Output = ()> + 'static) {
        let id = match self.inner.free.borrow_mut().pop() {
            Some(id) => id,
            None => {
                let mut slots = self.inner.slots.borrow_mut();
                slots.push(None);
                slots.len() - 1
            }
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            queue: self.inner.ready.clone(),
        }));
        self.inner.slots.borrow_mut()[id] = Some(Slot {
            task: Some(Box::pin(future)),
            waker,
        });
        self.inner.live_tasks.set(self.inner.live_tasks.get() + 1);
        self.inner.ready.push(id);
    }

    /// Number of tasks that have not finished.
    pub fn task_count(&self) -> usize {
        self.inner.live_tasks.get()
    }

    /// Reads `now_ns` from `source` from now on (the platform's monotonic clock). The clock
    /// still never goes backwards, and timers still fire only in `advance_to`.
    pub fn set_clock_source(&self, source: ClockSource) {
        *self.inner.clock_source.borrow_mut() = Some(source);
    }

    /// Current time in nanoseconds: the clock source if one is set, else the injected clock.
    pub fn now_ns(&self) -> u64 {
        if let Some(source) = self.inner.clock_source.borrow().as_ref() {
            let t = source();
            if t > self.inner.now_ns.get() {
                self.inner.now_ns.set(t);
            }
        }
        self.inner.now_ns.get()
    }

    /// Moves the clock forward to `now_ns` (never backwards) and wakes due timers.
    pub fn advance_to(&self, now_ns: u64) {
        if now_ns > self.now_ns() {
            self.inner.now_ns.set(now_ns);
        }
        self.fire_due_timers();
    }

    /// Earliest pending timer deadline, if any.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.inner.timers.borrow().keys().next().map(|&(t, _)| t)
    }

    /// A future that completes once the clock reaches `deadline_ns`.
    pub fn sleep_until(&self, deadline_ns: u64) -> Sleep {
        Sleep {
            exec: self.clone(),
            deadline_ns,
            key: None,
        }
    }

    /// A future that completes `duration_ns` after now.
    pub fn sleep(&self, duration_ns: u64) -> Sleep {
        self.sleep_until(self.now_ns().saturating_add(duration_ns))
    }

    fn fire_due_timers(&self) {
        let now = self.now_ns();
        loop {
            let due = {
                let mut timers = self.inner.timers.borrow_mut();
                match timers.keys().next().copied() {
                    Some(key) if key.0 <= now => timers.remove(&key),
                    _ => None,
                }
            };
            match due {
                Some(waker) => waker.wake(),
                None => break,
            }
        }
    }

    /// Polls ready tasks until none is ready. Returns how many polls ran.
    pub fn run_until_stalled(&self) -> usize {
        let mut polls = 0;
        loop {
            let next = self.inner.ready.ids.lock().pop_front();
            let Some(id) = next else { break };
            let taken = {
                let mut slots = self.inner.slots.borrow_mut();
                match slots.get_mut(id).and_then(Option::as_mut) {
                    Some(slot) => slot.task.take().map(|t| (t, slot.waker.clone())),
                    _ => None,
                }
            };
            // A wake for a task that is running (re-entrant) or already finished is spurious.
            let Some((mut task, waker)) = taken else {
                continue;
            };
            polls += 1;
            let mut cx = Context::from_waker(&waker);
            let done = task.as_mut().poll(&mut cx).is_ready();
            let mut slots = self.inner.slots.borrow_mut();
            if done {
                slots[id] = None;
                drop(slots);
                self.inner.free.borrow_mut().push(id);
                self.inner.live_tasks.set(self.inner.live_tasks.get() - 1);
            } else if let Some(slot) = slots[id].as_mut() {
                slot.task = Some(task);
            }
        }
        polls
    }

    /// Simulation: runs until no task can progress, jumping the clock to each next timer.
    /// Returns when nothing is ready and no timer is pending.
    pub fn run_until_idle(&self) {
        loop {
            self.run_until_stalled();
            match self.next_deadline_ns() {
                Some(deadline) => self.advance_to(deadline),
                None => break,
            }
        }
    }

    /// Simulation: drives the executor until `future` completes; `None` if it can never
    /// complete (every task is blocked and no timer is pending).
    pub fn block_on<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Option<T> {
        let handle = self.spawn(future);
        loop {
            self.run_until_stalled();
            if let Some(value) = handle.try_take() {
                return Some(value);
            }
            match self.next_deadline_ns() {
                Some(deadline) => self.advance_to(deadline),
                None => return None,
            }
        }
    }
}

struct JoinShared<T> {
    output: RefCell<Option<T>>,
    waiter: RefCell<Option<Waker>>,
}

/// Resolves to the output of a spawned task.
pub struct JoinHandle<T> {
    shared: Rc<JoinShared<T>>,
}

impl<T> JoinHandle<T> {
    /// The output, if the task has finished and it was not taken yet.
    pub fn try_take(&self) -> Option<T> {
        self.shared.output.borrow_mut().take()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.shared.output.borrow_mut().take() {
            Some(value) => Poll::Ready(value),
            None => {
                *self.shared.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Completes when the executor's clock reaches its deadline.
pub struct Sleep {
    exec: Executor,
    deadline_ns: u64,
    key: Option<(u64, u64)>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.exec.now_ns() >= self.deadline_ns {
            if let Some(key) = self.key.take() {
                self.exec.inner.timers.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let seq = self.exec.inner.timer_seq.get();
                self.exec.inner.timer_seq.set(seq + 1);
                let key = (self.deadline_ns, seq);
                self.key = Some(key);
                key
            }
        };
        self.exec
            .inner
            .timers
            .borrow_mut()
            .insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.exec.inner.timers.borrow_mut().remove(&key);
        }
    }
}

/// Runs every future concurrently and returns their outputs in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let outputs = core::iter::repeat_with(|| None)
        .take(futures.len())
        .collect();
    JoinAll {
        futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        outputs,
    }
    .await
}

struct JoinAll<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut pending = false;
        for (slot, out) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *out = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(
            this.outputs
                .iter_mut()
                .map(|o| o.take().expect("every future completed"))
                .collect(),
        )
    }
}

/// An async mutex for the single-threaded executor: waiters are served in arrival order.
pub struct AsyncMutex<T> {
    value: RefCell<T>,
    locked: Cell<bool>,
    waiters: RefCell<VecDeque<Waker>>,
}

impl<T> AsyncMutex<T> {
    pub fn new(value: T) -> Self {
        AsyncMutex {
            value: RefCell::new(value),
            locked: Cell::new(false),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    pub async fn lock(&self) -> AsyncMutexGuard<'_, T> {
        core::future::poll_fn(|cx| {
            if self.locked.get() {
                self.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            } else {
                self.locked.set(true);
                Poll::Ready(())
            }
        })
        .await;
        AsyncMutexGuard { mutex: self }
    }
}

/// Holds an [`AsyncMutex`]; unlocks on drop.
pub struct AsyncMutexGuard<'a, T> {
    mutex: &'a AsyncMutex<T>,
}

impl<T> AsyncMutexGuard<'_, T> {
    /// Runs `f` on the protected value. Not held across an await.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.mutex.value.borrow_mut())
    }
}

impl<T> Drop for AsyncMutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.locked.set(false);
        // Wake every waiter: each re-checks; a stale waker costs one spurious poll.
        let waiters: Vec<Waker> = self.mutex.waiters.borrow_mut().drain(..).collect();
        for waker in waiters {
            waker.wake();
        }
    }
}

/// A counting semaphore for the single-threaded executor: at most `limit` holders at once
/// (0 means no limit). Shared by `Rc`; a permit gives its place back when dropped.
///
/// Fair and quiet: waiters queue in arrival order, each once; a freed place wakes only the
/// first waiter (never every waiter, which with many waiters and many releases is a storm of
/// polls), and a newcomer does not take a place ahead of the queue. A waiter that stops
/// waiting (its give-up condition, or its future dropped) leaves the queue and passes a
/// free place on.
pub struct Semaphore {
    limit: Cell<usize>,
    held: Cell<usize>,
    /// Waiters, first come first: (ticket, waker).
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
}

impl Semaphore {
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new(Semaphore {
            limit: Cell::new(limit),
            held: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(0),
        })
    }

    /// Changes the limit; holders beyond a lower one keep their permits.
    pub fn set_limit(&self, limit: usize) {
        self.limit.set(limit);
        self.wake_all();
    }

    pub fn limit(&self) -> usize {
        self.limit.get()
    }

    /// Permits held now.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Tasks waiting for a permit.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn has_room(&self) -> bool {
        let limit = self.limit.get();
        limit == 0 || self.held.get() < limit
    }

    /// Wakes the first waiter if a place is free (it takes the place when it runs).
    fn wake_first(&self) {
        if self.has_room()
            && let Some((_, waker)) = self.waiters.borrow().front()
        {
            waker.wake_by_ref();
        }
    }

    /// Waits for a permit, or until `give_up()` says to stop waiting (then `None`); it is
    /// asked again at every wake-up (a caller that changes its answer calls
    /// [`Semaphore::wake_all`]).
    pub async fn acquire_unless(
        self: &Rc<Self>,
        give_up: impl Fn() -> bool,
    ) -> Option<SemaphorePermit> {
        let mut waiter = Waiter {
            semaphore: self,
            ticket: None,
        };
        core::future::poll_fn(|cx| {
            if give_up() {
                waiter.leave();
                return Poll::Ready(None);
            }
            let first = match waiter.ticket {
                None => self.waiters.borrow().is_empty(),
                Some(t) => self.waiters.borrow().front().is_some_and(|(f, _)| *f == t),
            };
            if first && self.has_room() {
                if let Some(t) = waiter.ticket.take() {
                    self.waiters.borrow_mut().retain(|(w, _)| *w != t);
                }
                self.held.set(self.held.get() + 1);
                // More room (a raised limit, several releases): the next one goes too.
                self.wake_first();
                return Poll::Ready(Some(SemaphorePermit {
                    semaphore: self.clone(),
                }));
            }
            let mut waiters = self.waiters.borrow_mut();
            match waiter.ticket {
                Some(t) => {
                    if let Some(entry) = waiters.iter_mut().find(|(w, _)| *w == t) {
                        entry.1.clone_from(cx.waker());
                    }
                }
                None => {
                    let t = self.next_ticket.get();
                    self.next_ticket.set(t + 1);
                    waiters.push_back((t, cx.waker().clone()));
                    waiter.ticket = Some(t);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes every waiter: each re-checks its give-up condition.
    pub fn wake_all(&self) {
        for (_, waker) in self.waiters.borrow().iter() {
            waker.wake_by_ref();
        }
    }
}

/// A task's place in a semaphore's queue, left when it stops waiting.
struct Waiter<'a> {
    semaphore: &'a Semaphore,
    ticket: Option<u64>,
}

impl Waiter<'_> {
    fn leave(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.semaphore.waiters.borrow_mut().retain(|(w, _)| *w != t);
            // It may have been woken for a place it no longer takes.
            self.semaphore.wake_first();
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A place in a [`Semaphore`]; given back on drop.
pub struct SemaphorePermit {
    semaphore: Rc<Semaphore>,
}

impl Drop for SemaphorePermit {
    fn drop(&mut self) {
        self.semaphore.held.set(self.semaphore.held.get() - 1);
        self.semaphore.wake_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Takes one of `sem`'s places at once.
    fn hold_one(exec: &Executor, sem: &Rc<Semaphore>) -> SemaphorePermit {
        let s = sem.clone();
        exec.block_on(async move { s.acquire_unless(|| false).await })
            .unwrap()
            .expect("a free place")
    }

    /// Waiters take places in arrival order, and a release wakes one waiter, not all of
    /// them: 200 waiters through one place cost a few polls each, not one per release each.
    #[test]
    fn a_semaphore_serves_waiters_in_order_and_wakes_one_per_release() {
        let exec = Executor::new();
        let sem = Semaphore::new(1);
        let first = hold_one(&exec, &sem);
        let order = Rc::new(RefCell::new(Vec::new()));
        for i in 0..200 {
            let (s, order) = (sem.clone(), order.clone());
            exec.spawn_detached(async move {
                let _p = s.acquire_unless(|| false).await.unwrap();
                order.borrow_mut().push(i);
            });
        }
        exec.run_until_stalled();
        assert_eq!(sem.waiting(), 200);
        drop(first);
        let polls = exec.run_until_stalled();
        assert_eq!(*order.borrow(), (0..200).collect::<Vec<_>>());
        assert!(polls <= 3 * 200, "{polls} polls for 200 waiters");
        assert_eq!((sem.held(), sem.waiting(), exec.task_count()), (0, 0, 0));
    }

    /// A newcomer does not take a free place ahead of a waiter already queued.
    #[test]
    fn a_semaphore_newcomer_queues_behind_the_waiters() {
        let exec = Executor::new();
        let sem = Semaphore::new(1);
        let held = hold_one(&exec, &sem);
        let order = Rc::new(RefCell::new(Vec::new()));
        let (s, o) = (sem.clone(), order.clone());
        exec.spawn_detached(async move {
            let _p = s.acquire_unless(|| false).await.unwrap();
            o.borrow_mut().push("queued");
        });
        exec.run_until_stalled();
        drop(held);
        // The queued waiter is woken but has not run yet; a newcomer arrives first.
        let (s, o) = (sem.clone(), order.clone());
        exec.spawn_detached(async move {
            let _p = s.acquire_unless(|| false).await.unwrap();
            o.borrow_mut().push("newcomer");
        });
        exec.run_until_stalled();
        assert_eq!(*order.borrow(), ["queued", "newcomer"]);
    }

    /// A waiter that gives up, or whose future is dropped, leaves the queue and passes the
    /// free place to the next.
    #[test]
    fn a_semaphore_waiter_that_leaves_passes_the_place_on() {
        let exec = Executor::new();
        let sem = Semaphore::new(1);
        let held = hold_one(&exec, &sem);
        // A future polled once (queued) and then dropped.
        {
            let mut dropped = Box::pin(sem.acquire_unless(|| false));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(dropped.as_mut().poll(&mut cx).is_pending());
            assert_eq!(sem.waiting(), 1);
        }
        assert_eq!(sem.waiting(), 0);
        let stop = Rc::new(Cell::new(false));
        let got = Rc::new(RefCell::new(Vec::new()));
        for name in ["gives up", "next"] {
            let (s, stop, got) = (sem.clone(), stop.clone(), got.clone());
            exec.spawn_detached(async move {
                let give_up = || name == "gives up" && stop.get();
                let p = s.acquire_unless(give_up).await;
                got.borrow_mut().push((name, p.is_some()));
            });
        }
        exec.run_until_stalled();
        assert_eq!(sem.waiting(), 2);
        drop(held);
        stop.set(true);
        sem.wake_all();
        exec.run_until_stalled();
        assert_eq!(*got.borrow(), [("gives up", false), ("next", true)]);
        assert_eq!((sem.held(), sem.waiting()), (0, 0));
    }

    #[test]
    fn tasks_run_and_join() {
        let exec = Executor::new();
        let e2 = exec.clone();
        let out = exec.block_on(async move {
            let a = e2.spawn(async { 2 });
            let b = e2.spawn(async { 3 });
            a.await * b.await
        });
        assert_eq!(out, Some(6));
        assert_eq!(exec.task_count(), 0);
    }

    #[test]
    fn timers_fire_in_deadline_order_and_clock_jumps() {
        let exec = Executor::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        for (i, delay) in [30u64, 10, 20, 10].into_iter().enumerate() {
            let e = exec.clone();
            let order = order.clone();
            exec.spawn_detached(async move {
                e.sleep(delay).await;
                order.borrow_mut().push((i, e.now_ns()));
            });
        }
        exec.run_until_idle();
        assert_eq!(*order.borrow(), vec![(1, 10), (3, 10), (2, 20), (0, 30)]);
    }

    #[test]
    fn clock_source_is_read_and_never_goes_backwards() {
        let exec = Executor::new();
        let t = Rc::new(Cell::new(100u64));
        let src = t.clone();
        exec.set_clock_source(Box::new(move || src.get()));
        assert_eq!(exec.now_ns(), 100);
        t.set(250);
        assert_eq!(exec.now_ns(), 250);
        t.set(200);
        assert_eq!(
            exec.now_ns(),
            250,
            "a clock source that steps back is ignored"
        );
        // A timer due by the source's time fires on the next advance without a jump.
        let fired = Rc::new(Cell::new(false));
        let (e, f) = (exec.clone(), fired.clone());
        exec.spawn_detached(async move {
            e.sleep_until(300).await;
            f.set(true);
        });
        exec.run_until_stalled();
        t.set(301);
        exec.advance_to(0);
        exec.run_until_stalled();
        assert!(fired.get());
        assert_eq!(exec.now_ns(), 301);
    }

    #[test]
    fn block_on_reports_deadlock() {
        let exec = Executor::new();
        let out = exec.block_on(core::future::pending::<()>());
        assert_eq!(out, None);
    }

    #[test]
    fn join_all_keeps_order() {
        let exec = Executor::new();
        let e = exec.clone();
        let out = exec.block_on(async move {
            let futs: Vec<_> = (0..5u64)
                .map(|i| {
                    let e = e.clone();
                    async move {
                        e.sleep(100 - i * 10).await;
                        i
                    }
                })
                .collect();
            join_all(futs).await
        });
        assert_eq!(out, Some(vec![0, 1, 2, 3, 4]));
    }

    #[test]
    fn async_mutex_serializes() {
        let exec = Executor::new();
        let m = Rc::new(AsyncMutex::new(Vec::new()));
        for i in 0..3u64 {
            let m = m.clone();
            let e = exec.clone();
            exec.spawn_detached(async move {
                let g = m.lock().await;
                g.with(|v| v.push((i, 'a')));
                e.sleep(10).await;
                g.with(|v| v.push((i, 'b')));
            });
        }
        exec.run_until_idle();
        let v = m.value.borrow();
        for pair in v.chunks(2) {
            assert_eq!(pair[0].0, pair[1].0);
        }
        assert_eq!(v.len(), 6);
    }
}
