//! What an array keeps of its background jobs (resync, rebuild, scrub): the progress of the
//! one running, for status, and the runner's state that outlives one run of them. The jobs
//! themselves are the RebuildManager's (`crate::jobs`): the array only tells its runner
//! when one may be due, and stops them before it is marked clean.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;

use super::Array;
use crate::block::SECTOR_BYTES;
use crate::executor::AsyncMutex;

/// A background job's progress, as `raid status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub kind: JobKind,
    pub done_sectors: u64,
    pub total_sectors: u64,
    /// Executor time the job started, and now.
    pub started_ns: u64,
    pub now_ns: u64,
    /// Where the job started (resumed from a checkpoint), for the rate.
    pub resumed_sectors: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobKind {
    #[default]
    Resync,
    /// Scrub that counts mismatches (`raid check`).
    Check,
    /// Scrub that fixes mismatches (`raid repair`).
    Repair,
    /// A member being rebuilt onto (a spare, a re-added stale member).
    Rebuild,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Resync => "resync",
            JobKind::Check => "check",
            JobKind::Repair => "repair",
            JobKind::Rebuild => "recovery",
        }
    }
}

impl JobProgress {
    /// 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.total_sectors == 0 {
            1.0
        } else {
            self.done_sectors as f64 / self.total_sectors as f64
        }
    }

    pub fn rate_bytes_per_s(&self) -> u64 {
        let elapsed_ns = self.now_ns.saturating_sub(self.started_ns);
        if elapsed_ns == 0 {
            return 0;
        }
        let moved = self.done_sectors.saturating_sub(self.resumed_sectors);
        ((moved as u128 * SECTOR_BYTES as u128 * 1_000_000_000) / elapsed_ns as u128) as u64
    }

    pub fn eta_s(&self) -> u64 {
        let rate = self.rate_bytes_per_s();
        if rate == 0 {
            return 0;
        }
        self.total_sectors.saturating_sub(self.done_sectors) * SECTOR_BYTES as u64 / rate
    }
}

/// Whoever runs an array's background jobs, as the array sees it: `crate::jobs::Runner`, the
/// RebuildManager's (one for all its arrays) or one of an array's own. An array without one
/// runs no background job.
pub trait JobRunner {
    /// Runs what is due on `array` until nothing is, or until it is stopped; the array
    /// marks its jobs running before, and the run marks them done at its end.
    fn run(self: Rc<Self>, array: Rc<Array>) -> Pin<Box<dyn Future<Output = ()>>>;

    /// A stop came: a run waiting for its turn gives up.
    fn stop_requested(&self);
}

/// The state of an array's background jobs, kept with the array and moved by its runner.
pub struct JobControl {
    /// A run is on (or spawned): a kick does not start a second one.
    pub(crate) running: Cell<bool>,
    /// Set by a stop, cleared by a start: no run starts, the one on ends at its next region.
    pub(crate) stop: Cell<bool>,
    /// Held by a run while it runs: a stop waits on it.
    pub(crate) done: AsyncMutex<()>,
    /// A rebuild hit data it could not read: not retried until a device joins.
    pub(crate) blocked: Cell<bool>,
    /// Foreground requests started, as a low-priority job last looked (`jobs::throttle`).
    pub(crate) foreground_seen: Cell<u64>,
    runner: RefCell<Option<Rc<dyn JobRunner>>>,
}

impl Default for JobControl {
    fn default() -> Self {
        JobControl {
            running: Cell::new(false),
            stop: Cell::new(false),
            done: AsyncMutex::new(()),
            blocked: Cell::new(false),
            foreground_seen: Cell::new(0),
            runner: RefCell::new(None),
        }
    }
}

impl JobControl {
    /// Who runs the jobs, if anyone.
    pub fn runner(&self) -> Option<Rc<dyn JobRunner>> {
        self.runner.borrow().clone()
    }

    /// Gives the jobs a runner. A run already going on keeps the runner it started with.
    pub fn set_runner(&self, runner: Rc<dyn JobRunner>) {
        *self.runner.borrow_mut() = Some(runner);
    }

    /// Whether a run is on.
    pub fn running(&self) -> bool {
        self.running.get()
    }
}
