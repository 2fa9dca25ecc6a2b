//! Drives the core executor on the host: a monotonic clock, and a wake-up signal that worker
//! threads, NBD connections and the control socket raise when they hand the engine work.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::executor::Executor;

/// Spin iterations before sleeping (a few microseconds).
const SPIN_ITERATIONS: u32 = 2_000;

/// Raised from any thread; the engine thread sleeps on it. Raising it costs an atomic store
/// unless the engine is actually asleep: most wake-ups happen while the engine is busy, and a
/// futex call for each would dominate a 4 KiB request.
pub struct Signal {
    pending: AtomicBool,
    sleeping: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Signal {
    fn new() -> Self {
        Signal {
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Wakes the engine (or makes its next wait return at once).
    pub fn raise(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            // Taking the lock orders this notify after the sleeper's check of `pending`.
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cv.notify_one();
        }
    }

    /// Waits until raised or `timeout`; clears the signal.
    fn wait(&self, timeout: Duration) {
        if self.pending.swap(false, Ordering::SeqCst) || timeout.is_zero() {
            return;
        }
        // A short spin catches a request that is already on its way without a sleep/wake
        // pair. Bounded by iterations, not the clock: reading the clock in the loop cost more
        // than the work it waited for, and on two cores a long spin starves the clients.
        for _ in 0..SPIN_ITERATIONS {
            if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::SeqCst) {
                return;
            }
            std::hint::spin_loop();
        }
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleeping.store(true, Ordering::SeqCst);
        // `raise` stores `pending` before it reads `sleeping`; this reads `pending` after
        // storing `sleeping`: one of the two sees the other (no lost wake-up).
        if !self.pending.load(Ordering::SeqCst) {
            let _unused = self
                .cv
                .wait_timeout(guard, timeout)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.sleeping.store(false, Ordering::SeqCst);
        self.pending.store(false, Ordering::SeqCst);
    }
}

/// The executor plus what the host needs to sleep until there is work.
pub struct HostRuntime {
    pub exec: Executor,
    signal: Arc<Signal>,
    start: Instant,
}

impl Default for HostRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl HostRuntime {
    pub fn new() -> Self {
        let exec = Executor::new();
        let start = Instant::now();
        // Latency figures need the time inside a turn, not only at its start.
        exec.set_clock_source(Box::new(move || start.elapsed().as_nanos() as u64));
        let signal = Arc::new(Signal::new());
        let s = signal.clone();
        exec.set_notifier(Arc::new(move || s.raise()));
        HostRuntime {
            exec,
            signal,
            start,
        }
    }

    /// A handle other threads use to wake the main loop.
    pub fn signal(&self) -> Arc<Signal> {
        self.signal.clone()
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// One turn of the main loop: run what is ready, then sleep until a completion, a
    /// wake-up from another thread, the next timer, or `max_wait`.
    pub fn turn(&self, max_wait: Duration) {
        self.exec.advance_to(self.now_ns());
        self.exec.run_until_stalled();
        let mut wait = max_wait;
        if let Some(deadline) = self.exec.next_deadline_ns() {
            wait = wait.min(Duration::from_nanos(deadline.saturating_sub(self.now_ns())));
        }
        self.signal.wait(wait);
    }

    /// Runs `future` to completion, driving every other task meanwhile.
    pub fn block_on<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> T {
        let handle = self.exec.spawn(future);
        loop {
            self.turn(Duration::from_millis(100));
            if let Some(value) = handle.try_take() {
                return value;
            }
        }
    }
}
