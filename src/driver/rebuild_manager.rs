//! The RebuildManager: every array's background jobs (resync, rebuild, replacement) share
//! one limit on how many arrays run them at once, so a shelf of arrays rebuilding after a
//! power cut does not take every member's bandwidth at the same moment. Each array's own
//! policy (priority, rate limit, checkpoints) still paces its job; this decides which jobs
//! run. Arrays past the limit wait in arrival order and start as others finish.

use alloc::rc::Rc;

use crate::array::Array;
use crate::executor::Semaphore;

/// Arrays running background jobs at once, by default.
pub const DEFAULT_MAX_CONCURRENT_JOBS: usize = 2;

pub struct RebuildManager {
    permits: Rc<Semaphore>,
}

impl Default for RebuildManager {
    fn default() -> Self {
        RebuildManager {
            permits: Semaphore::new(DEFAULT_MAX_CONCURRENT_JOBS),
        }
    }
}

impl RebuildManager {
    /// Takes charge of an array's jobs.
    pub fn adopt(&self, array: &Array) {
        array.set_job_permits(Some(self.permits.clone()));
    }

    /// At most `limit` arrays run jobs at once (0: no limit). Jobs running beyond a lower
    /// limit finish; no new one starts until the count is under it.
    pub fn set_max_concurrent(&self, limit: usize) {
        self.permits.set_limit(limit);
    }

    pub fn max_concurrent(&self) -> usize {
        self.permits.limit()
    }

    /// Arrays running a job now.
    pub fn running(&self) -> usize {
        self.permits.held()
    }
}
