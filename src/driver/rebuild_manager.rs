//! The RebuildManager: every array's background jobs (resync, rebuild, replacement) share
//! one limit on how many arrays run them at once, so a shelf of arrays rebuilding after a
//! power cut does not take every member's bandwidth at the same moment. Each array's own
//! policy (priority, rate limit, checkpoints) still paces its job; this decides which jobs
//! run. Arrays past the limit wait in arrival order and start as others finish. The
//! storage service's scrub requests (`check`, `repair`, their report and cancel) land here.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use orion_driver::DriverError;

use super::ArrayManager;
use crate::array::Array;
use crate::array::scrub::{ScrubError, ScrubMode, ScrubReport};
use crate::executor::{Executor, Semaphore};
use crate::jobs::{Runner, SpareProvider, scrub};
use crate::manage::Refusal;

/// Arrays running background jobs at once, by default.
pub const DEFAULT_MAX_CONCURRENT_JOBS: usize = 2;

/// Every array's background jobs, run by one [`Runner`]: the limit and the spare provider
/// they share live there.
pub struct RebuildManager {
    permits: Rc<Semaphore>,
    runner: Rc<Runner>,
}

impl Default for RebuildManager {
    fn default() -> Self {
        Self::new(None)
    }
}

impl RebuildManager {
    /// A manager whose `shared` arrays take their spares from `spares` (the DiskManager's
    /// pool) when they have none of their own.
    pub fn new(spares: Option<Rc<dyn SpareProvider>>) -> Self {
        let permits = Semaphore::new(DEFAULT_MAX_CONCURRENT_JOBS);
        RebuildManager {
            runner: Rc::new(Runner::new(Some(permits.clone()), spares)),
            permits,
        }
    }

    /// Takes charge of an array's jobs: they run (when due, or at [`crate::jobs::start`])
    /// under this manager's limit, with its spare provider.
    pub fn adopt(&self, array: &Array) {
        self.runner.adopt(array);
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

impl RebuildManager {
    /// `raid check` / `raid repair NAME`: a RAID 50/60 is checked group by group, all groups
    /// at once. Answers with the new report.
    pub fn start_scrub(
        &self,
        arrays: &ArrayManager,
        name: &str,
        mode: ScrubMode,
    ) -> Result<Option<ScrubReport>, Refusal> {
        let (id, array) = arrays.named(name)?;
        let groups = arrays.groups_of(id);
        let targets: Vec<Rc<Array>> = if groups.is_empty() {
            vec![array]
        } else {
            groups.into_iter().map(|(_, g)| g).collect()
        };
        let refusal = |t: &Array, e: ScrubError| {
            let status = match e {
                ScrubError::Busy(_) | ScrubError::ResyncPending => DriverError::Busy,
                ScrubError::NotRedundant | ScrubError::Degraded { .. } => DriverError::Unsupported,
            };
            Refusal::new(status, alloc::format!("{}: {e}", t.name()))
        };
        // Refused before any group starts where that can be told in advance.
        for t in &targets {
            if let Some(job) = t.job() {
                return Err(refusal(t, ScrubError::Busy(job.kind)));
            }
        }
        for (i, t) in targets.iter().enumerate() {
            if let Err(e) = scrub::start(t, mode) {
                for started in &targets[..i] {
                    scrub::cancel(started);
                }
                return Err(refusal(t, e));
            }
        }
        Ok(arrays.scrub_report(id))
    }

    /// The running or last scrub's report of `name` (`None`: none ran).
    pub fn scrub_report(
        &self,
        arrays: &ArrayManager,
        name: &str,
    ) -> Result<Option<ScrubReport>, Refusal> {
        let (id, _) = arrays.named(name)?;
        Ok(arrays.scrub_report(id))
    }

    /// `raid check --cancel NAME`: stops a running check or repair (of every group of a
    /// RAID 50/60), or drops the checkpoint of one interrupted that has not resumed yet.
    pub fn cancel_scrub(
        &self,
        exec: &Executor,
        arrays: &ArrayManager,
        name: &str,
    ) -> Result<Option<ScrubReport>, Refusal> {
        let (id, array) = arrays.named(name)?;
        let groups = arrays.groups_of(id);
        let cancelled = if groups.is_empty() {
            cancel_scrub_of(exec, &array)
        } else {
            // Every group, not just up to the first that runs.
            groups
                .iter()
                .fold(false, |any, (_, g)| cancel_scrub_of(exec, g) || any)
        };
        if !cancelled {
            return Err(Refusal::not_found(alloc::format!(
                "{}: no check or repair is running or pending",
                array.name()
            )));
        }
        Ok(arrays.scrub_report(id))
    }
}

/// Whether there was a scrub of `array` to cancel (running, or a checkpoint to forget).
fn cancel_scrub_of(exec: &Executor, array: &Rc<Array>) -> bool {
    if scrub::cancel(array) {
        return true;
    }
    if array.scrub_checkpoint().is_none() {
        return false;
    }
    let a = array.clone();
    exec.spawn_detached(async move {
        if let Err(e) = a.forget_scrub_checkpoint().await {
            log::warn!("{}: recording the cancelled check: {e}", a.name());
        }
    });
    true
}
