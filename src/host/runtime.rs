//! Drives the core executor on the host: a monotonic clock, and a wake-up signal (an
//! eventfd) that worker threads, the NBD handshake threads and the control socket raise when
//! they hand the engine work. The engine sleeps in `epoll_wait` with that eventfd among the
//! NBD sockets (`nbd::reactor`), or in `poll` on the eventfd alone (`HostRuntime::turn`).

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::executor::Executor;

/// Raised from any thread; the engine thread sleeps on it. Raising it costs an atomic store
/// unless the engine is actually asleep: most wake-ups happen while the engine is busy, and a
/// system call for each would dominate a 4 KiB request.
pub struct Signal {
    pending: AtomicBool,
    sleeping: AtomicBool,
    event_fd: OwnedFd,
}

impl Signal {
    /// Fails only when the process is out of file descriptors.
    pub fn new() -> std::io::Result<Self> {
        #[allow(unsafe_code)]
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[allow(unsafe_code)]
        // SAFETY: `fd` was just created and is owned by nobody else.
        let event_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Signal {
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            event_fd,
        })
    }

    /// Wakes the engine (or makes its next sleep return at once).
    pub fn raise(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.write_event();
        }
    }

    #[allow(unsafe_code)]
    fn write_event(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our own eventfd. A full counter
        // (EAGAIN) already means "wake up".
        let _ = unsafe {
            libc::write(
                self.event_fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// The descriptor a sleeper polls for readability.
    pub fn fd(&self) -> RawFd {
        self.event_fd.as_raw_fd()
    }

    /// Call before sleeping: `false` means a wake-up is already pending (do not sleep; it
    /// is consumed). After the sleep call [`Signal::end_sleep`].
    pub fn begin_sleep(&self) -> bool {
        if self.pending.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.sleeping.store(true, Ordering::SeqCst);
        // `raise` stores `pending` before it reads `sleeping`; this reads `pending` after
        // storing `sleeping`: one of the two sees the other (no lost wake-up).
        if self.pending.swap(false, Ordering::SeqCst) {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Ends a sleep begun by [`Signal::begin_sleep`]; `event_seen`: the eventfd was readable.
    pub fn end_sleep(&self, event_seen: bool) {
        self.sleeping.store(false, Ordering::SeqCst);
        self.pending.store(false, Ordering::SeqCst);
        if event_seen {
            self.drain_event();
        }
    }

    /// Resets the eventfd after it was seen readable (a late write from a `raise` that saw
    /// the loop asleep), leaving `pending` alone.
    #[allow(unsafe_code)]
    pub fn drain_event(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from our own non-blocking eventfd.
        let _ = unsafe {
            libc::read(
                self.event_fd.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Waits until raised or `timeout`; clears the signal.
    #[allow(unsafe_code)]
    fn wait(&self, timeout: Duration) {
        if timeout.is_zero() || !self.begin_sleep() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd on the stack, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        self.end_sleep(n > 0);
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
        let signal = Arc::new(Signal::new().expect("an eventfd for the engine's wake-ups"));
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
        self.run_ready();
        self.signal.wait(self.sleep_limit(max_wait));
    }

    /// Moves the clock and runs every task that can progress.
    pub fn run_ready(&self) {
        self.exec.advance_to(self.now_ns());
        self.exec.run_until_stalled();
    }

    /// How long the loop may sleep: `max_wait`, or less when a timer is due sooner.
    pub fn sleep_limit(&self, max_wait: Duration) -> Duration {
        match self.exec.next_deadline_ns() {
            Some(deadline) => {
                max_wait.min(Duration::from_nanos(deadline.saturating_sub(self.now_ns())))
            }
            None => max_wait,
        }
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
