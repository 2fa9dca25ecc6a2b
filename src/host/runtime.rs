//! Drives the core executor on the host: a monotonic clock and a condition variable that
//! worker threads signal when they complete a request.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::executor::Executor;

/// The executor plus what the host needs to sleep until there is work.
pub struct HostRuntime {
    pub exec: Executor,
    wakeup: Arc<(Mutex<bool>, Condvar)>,
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
        let wakeup = Arc::new((Mutex::new(false), Condvar::new()));
        let w = wakeup.clone();
        exec.set_notifier(Arc::new(move || {
            let (flag, cv) = &*w;
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_one();
        }));
        HostRuntime {
            exec,
            wakeup,
            start: Instant::now(),
        }
    }

    /// A handle other threads can use to wake the main loop.
    pub fn waker(&self) -> Arc<(Mutex<bool>, Condvar)> {
        self.wakeup.clone()
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
        let (flag, cv) = &*self.wakeup;
        let mut ready = flag.lock().unwrap_or_else(|e| e.into_inner());
        if !*ready && !wait.is_zero() {
            ready = cv
                .wait_timeout(ready, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *ready = false;
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
