//! The background jobs of every array, as the RebuildManager runs them: resync after an
//! unclean shutdown, the rebuild of each member being rebuilt (a spare in a failed member's
//! slot, a stale member re-added, a replacement), spare activation for empty or failed
//! slots, and scrub (check and repair).
//!
//! A job walks its array with a cursor, region by region, paced by the array's priority and
//! rate limit ([`throttle`]), and records its position in the superblocks so that a restart
//! resumes. It reaches the array only through the operations the array keeps for it: read
//! or rebuild a stripe, read and write a member range, update the superblocks, put a
//! member in or out of a slot. A spare comes from the array's own spares or, for a `shared`
//! array, from the [`SpareProvider`] (the DiskManager's pool): job → provider → member.
//!
//! Every state change is written to the superblocks (events bumped) before it is acted on:
//! a spare is recorded in its slot before the rebuild writes to it, a finished rebuild is
//! recorded before the member serves reads above its old cursor.

mod rebuild;
#[cfg(test)]
mod rebuild_tests;
mod resync;
pub mod scrub;
#[cfg(test)]
mod scrub_tests;
mod throttle;

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use core::future::Future;
use core::pin::Pin;

use crate::array::{Array, Health, JobKind, JobRunner, Member, MemberState, SparePolicy};
use crate::block::BlockDevice;
use crate::executor::{Semaphore, SemaphorePermit};
use crate::monitor::Event;
pub use resync::resync;
pub use throttle::throttle;

/// Where a `shared` array takes a spare from when it has none of its own: a device of at
/// least `min_sectors`, and the name it goes by, handed over (it leaves the provider).
pub trait SpareProvider {
    fn take_spare(&self, min_sectors: u64) -> Option<(String, Rc<dyn BlockDevice>)>;
}

/// Runs the background jobs of the arrays given to it ([`Runner::adopt`]). The
/// RebuildManager has one for all its arrays, which share its limit on arrays running jobs
/// at once and its spare provider; an array no manager runs (a test, a tool) gets one of
/// its own from [`start`].
#[derive(Default)]
pub struct Runner {
    /// At most this many arrays run jobs at once (none: no limit).
    permits: Option<Rc<Semaphore>>,
    spares: Option<Rc<dyn SpareProvider>>,
}

impl Runner {
    pub fn new(permits: Option<Rc<Semaphore>>, spares: Option<Rc<dyn SpareProvider>>) -> Self {
        Runner { permits, spares }
    }

    /// Runs `array`'s jobs from now on (a run already going on keeps the runner it started
    /// with): they start when one is due, or at [`start`].
    pub fn adopt(self: &Rc<Self>, array: &Array) {
        array.jobs().set_runner(self.clone());
    }

    /// Takes a permit for background work into `held` (waiting while the limit is reached)
    /// unless one is held already; false when a stop came first.
    async fn permit(&self, array: &Array, held: &mut Option<SemaphorePermit>) -> bool {
        if held.is_some() {
            return true;
        }
        let Some(permits) = &self.permits else {
            return true;
        };
        *held = permits.acquire_unless(|| array.jobs().stop.get()).await;
        held.is_some()
    }

    /// Resync, then the rebuild of each member being rebuilt, then spare activation, until
    /// nothing is due or a stop came.
    async fn run_jobs(&self, array: &Rc<Array>) {
        let jobs = array.jobs();
        let _g = jobs.done.lock().await;
        let mut permit = None;
        loop {
            if jobs.stop.get() || array.health() == Health::Failed {
                break;
            }
            let slots = array.slots();
            let work = array.needs_resync()
                || slots.iter().flatten().any(|m| {
                    m.state() == MemberState::Rebuilding
                        || m.replacement()
                            .is_some_and(|r| r.state() == MemberState::Rebuilding)
                });
            if work && !self.permit(array, &mut permit).await {
                break;
            }
            if array.needs_resync() {
                match resync(array).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        log::error!("{}: resync stopped: {e}", array.name());
                        break;
                    }
                }
            }
            let rebuilding = array.slots().into_iter().enumerate().find_map(|(slot, m)| {
                m.filter(|m| m.state() == MemberState::Rebuilding)
                    .map(|m| (slot, m))
            });
            if let Some((slot, target)) = rebuilding {
                if jobs.blocked.get() {
                    break;
                }
                match rebuild::rebuild_member(array, slot, &target, None).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        if target.state() == MemberState::Faulty {
                            rebuild_failed(array, slot, &target, "the member failed");
                            continue;
                        }
                        break;
                    }
                    Err(e) => {
                        log::error!("{}: rebuild of {} stopped: {e}", array.name(), target.name);
                        rebuild_failed(array, slot, &target, &e.to_string());
                        jobs.blocked.set(true);
                        break;
                    }
                }
            }
            let replacing = array.slots().into_iter().enumerate().find_map(|(slot, m)| {
                let m = m?;
                let rep = m.replacement()?;
                (m.state() == MemberState::Active && rep.state() == MemberState::Rebuilding)
                    .then_some((slot, m, rep))
            });
            if let Some((slot, old, rep)) = replacing {
                if jobs.blocked.get() {
                    break;
                }
                match rebuild::rebuild_member(array, slot, &rep, Some(&old)).await {
                    Ok(true) => continue,
                    Ok(false) if rep.state() == MemberState::Faulty => {
                        rebuild_failed(array, slot, &rep, "the replacement failed");
                        array.record_failed_replacements().await;
                        continue;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        log::error!("{}: replacement by {} stopped: {e}", array.name(), rep.name);
                        rebuild_failed(array, slot, &rep, &e.to_string());
                        jobs.blocked.set(true);
                        break;
                    }
                }
            }
            if !self.activate_spare(array).await {
                break;
            }
        }
        // A scrub running beside this runner keeps its progress.
        if !array
            .job()
            .is_some_and(|j| matches!(j.kind, JobKind::Check | JobKind::Repair))
        {
            array.set_job(None);
        }
        jobs.running.set(false);
        // A check or repair interrupted by a stop or crash goes on after the recovery (see
        // `persist.rs`).
        if !jobs.stop.get() {
            scrub::resume(array);
        }
    }

    /// Puts a spare into the first slot that is empty or failed (dedicated spares first,
    /// smallest sufficient first; then the provider's). Recorded before the rebuild.
    async fn activate_spare(&self, array: &Array) -> bool {
        let policy = array.policy().spare_policy;
        if policy == SparePolicy::None || !array.is_redundant() {
            return false;
        }
        let slot = array
            .slots()
            .iter()
            .position(|m| m.as_ref().is_none_or(|m| m.state() == MemberState::Faulty));
        let Some(slot) = slot else {
            return false;
        };
        let need = array.member_min_sectors();
        let spare = array
            .spares()
            .into_iter()
            .filter(|m| m.state() == MemberState::Spare && m.dev.capacity_sectors() >= need)
            .min_by_key(|m| m.dev.capacity_sectors());
        let spare = match spare {
            Some(s) => s,
            None if policy == SparePolicy::Shared => {
                let offered = self.spares.as_ref().and_then(|p| p.take_spare(need));
                let Some((name, dev)) = offered else {
                    return false;
                };
                match array.prepare_spare(name.clone(), dev).await {
                    Ok(m) => {
                        log::info!("{}: took {name} from the shared spare pool", array.name());
                        m
                    }
                    Err(e) => {
                        log::error!("{}: pool spare {name} unusable: {e}", array.name());
                        return false;
                    }
                }
            }
            None => return false,
        };
        if let Err(e) = array.install_spare(slot, &spare).await {
            log::error!("{}: spare activation not recorded: {e}", array.name());
            return false;
        }
        log::info!(
            "{}: spare {} activated in slot {slot}; rebuild starts",
            array.name(),
            spare.name
        );
        emit(
            array,
            Event::SpareActivated {
                slot: slot as u32,
                member: spare.name.clone(),
            },
        );
        array.check_health();
        true
    }
}

impl JobRunner for Runner {
    fn run(self: Rc<Self>, array: Rc<Array>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move { self.run_jobs(&array).await })
    }

    fn stop_requested(&self) {
        // A run waiting for a permit gives up.
        if let Some(p) = &self.permits {
            p.wake_all();
        }
    }
}

/// Gives `array` a runner of its own (no limit on arrays running jobs, no spare provider)
/// unless it has one: its jobs then run whenever one is due, as under a RebuildManager. For
/// an array that a test or a tool runs by itself.
pub fn attach(array: &Array) {
    if array.jobs().runner().is_none() {
        Rc::new(Runner::default()).adopt(array);
    }
}

/// Starts `array`'s background jobs if any is due (resync, rebuild, spare activation),
/// and from now on whenever one is; an array no runner runs yet gets one of its own.
pub fn start(array: &Array) {
    attach(array);
    array.jobs().stop.set(false);
    array.kick_jobs();
}

/// Whether `array`'s background-job runner is active.
pub fn running(array: &Array) -> bool {
    array.jobs().running()
}

fn rebuild_failed(array: &Array, slot: usize, target: &Member, reason: &str) {
    emit(
        array,
        Event::RebuildFailed {
            slot: slot as u32,
            member: target.name.clone(),
            reason: reason.to_string(),
        },
    );
    array.check_health();
}

/// Records `event` of `array` in its event log.
fn emit(array: &Array, event: Event) {
    array
        .monitor()
        .emit(array.name(), array.wall_clock_base_s(), event);
}

/// Moves the progress of the job running on `array` to `done_sectors`.
fn set_job_done(array: &Array, done_sectors: u64) {
    if let Some(mut j) = array.job() {
        j.done_sectors = done_sectors;
        array.set_job(Some(j));
    }
}
