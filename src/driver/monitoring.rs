//! The MonitoringSystem: the periodic work of every array, driven by one task at the
//! configured interval — the per-array monitor tick (rates, latency windows, health events)
//! and the probe that notices a member deleted or truncated under us — plus the figures
//! and the event log the front ends read. It observes arrays; it owns none: each array
//! keeps its counters in its [`crate::monitor::ArrayMonitor`], and the figures, rates and
//! ticks are computed here from them.

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use super::ArrayManager;
use crate::array::Array;
use crate::executor::Executor;
use crate::manage::{self, Refusal};
use crate::monitor::{ArrayMetrics, Event, EventBatch, EventLog, MemberMetrics, MonitorConfig};

/// Reads the process's heap high-water mark, in bytes.
pub type HeapProbe = alloc::boxed::Box<dyn Fn() -> u64>;

#[derive(Default)]
pub struct MonitoringSystem {
    /// Bumped to retire the running monitor task.
    generation: Rc<Cell<u64>>,
    /// Where the platform counts its heap, how to read its peak (metrics report it).
    heap_probe: RefCell<Option<HeapProbe>>,
}

impl MonitoringSystem {
    /// Starts (or restarts, with a new configuration) the periodic task over `arrays`.
    pub fn start(
        &self,
        exec: &Executor,
        arrays: &Rc<RefCell<ArrayManager>>,
        config: MonitorConfig,
    ) {
        {
            let mut a = arrays.borrow_mut();
            a.monitor_config = config;
            a.events.set_capacity(config.event_capacity);
        }
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let current = self.generation.clone();
        let arrays = arrays.clone();
        let clock = exec.clone();
        let interval_ns = config.tick_interval_ns.max(1_000_000);
        exec.spawn_detached(async move {
            let mut next_ns = clock.now_ns();
            while current.get() == generation {
                let list: Vec<Rc<Array>> = arrays.borrow().iter().map(|(_, a)| a.clone()).collect();
                for array in list {
                    tick(&array, Some(&config));
                    // A member file deleted or truncated under us is noticed here.
                    array.probe_members();
                }
                // A late tick does not cause a burst of catch-up ticks.
                next_ns = (next_ns + interval_ns).max(clock.now_ns());
                clock.sleep_until(next_ns).await;
            }
        });
    }

    /// Stops the periodic task at its next tick.
    pub fn stop(&self) {
        self.generation.set(self.generation.get() + 1);
    }

    /// The figures of every array.
    pub fn metrics(&self, arrays: &ArrayManager) -> Vec<ArrayMetrics> {
        arrays.iter().map(|(_, a)| array_metrics(a)).collect()
    }

    /// Reports the heap peak `probe` reads in the metrics from now on.
    pub fn set_heap_probe(&self, probe: HeapProbe) {
        *self.heap_probe.borrow_mut() = Some(probe);
    }

    /// The heap high-water mark, where the platform counts it.
    pub fn heap_peak_bytes(&self) -> Option<u64> {
        self.heap_probe.borrow().as_ref().map(|probe| probe())
    }

    /// The event log every served array writes to.
    pub fn events(&self, arrays: &ArrayManager) -> Rc<EventLog> {
        arrays.events.clone()
    }

    /// `raid metrics [NAME]`.
    pub fn metrics_report(
        &self,
        arrays: &ArrayManager,
        name: Option<&str>,
    ) -> Result<manage::MetricsReport, Refusal> {
        let arrays_figures = match name {
            None => self.metrics(arrays),
            Some(name) => vec![array_metrics(&arrays.named(name)?.1)],
        };
        Ok(manage::MetricsReport {
            arrays: arrays_figures,
            tick_interval_ns: arrays.monitor_config.tick_interval_ns,
            heap_peak_bytes: self.heap_peak_bytes(),
        })
    }

    /// `raid events`: what the log holds after a sequence number.
    pub fn events_after(&self, arrays: &ArrayManager, req: &manage::EventsRequest) -> EventBatch {
        let max = req.max_events.map_or(usize::MAX, |m| m as usize);
        self.events(arrays).after(req.after_seq, max)
    }

    /// Every array's figures in the Prometheus text format.
    pub fn prometheus(&self, arrays: &ArrayManager) -> alloc::string::String {
        crate::monitor::prometheus::render(&self.metrics(arrays))
    }
}

/// Records `event` of `array` in its event log; returns its sequence number.
pub fn emit(array: &Array, event: Event) -> u64 {
    array
        .monitor()
        .emit(array.name(), array.wall_clock_base_s(), event)
}

/// One monitoring tick of `array`: samples the rate windows of the array and its members
/// (with `config`'s span, when given) and checks the health.
pub fn tick(array: &Array, config: Option<&MonitorConfig>) {
    let now_ns = array.executor().now_ns();
    let monitor = array.monitor();
    if let Some(c) = config {
        monitor.configure(c);
    }
    monitor.tick(now_ns);
    for member in array.slots().iter().flatten() {
        // A member added after assembly (a spare) gets the array's clock here.
        if !member.monitor().has_clock() {
            member.monitor().set_clock(array.executor().clone());
        }
        member.monitor().tick(now_ns, config);
    }
    array.check_health();
}

/// The figures of `array` and its members.
pub fn array_metrics(array: &Array) -> ArrayMetrics {
    let monitor = array.monitor();
    let (read, write, interval_ns) = monitor.io_metrics();
    let (hits, misses) = (monitor.cache_hits(), monitor.cache_misses());
    let (flushes, flush_errors) = monitor.flush_counts();
    let (discards, discard_errors) = monitor.discard_counts();
    let members = array
        .slots()
        .iter()
        .enumerate()
        .filter_map(|(slot, m)| m.as_ref().map(|m| (slot, m)))
        .map(|(slot, m)| {
            let (read, write) = m.monitor().io_metrics();
            MemberMetrics {
                slot: slot as u32,
                member: m.name.clone(),
                state: m.state().to_string(),
                read,
                write,
                corrected_sectors: m.counters().corrected_sectors,
                in_flight: m.inflight(),
            }
        })
        .collect();
    ArrayMetrics {
        name: array.name().to_string(),
        health: array.health_state().to_string(),
        interval_ns,
        read,
        write,
        flushes,
        flush_errors,
        discards,
        discard_errors,
        cache_hits: hits,
        cache_misses: misses,
        cache_hit_ratio: if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        },
        job: array.job().as_ref().map(manage::job_status),
        members,
    }
}

#[cfg(test)]
#[path = "monitoring_tests.rs"]
mod tests;
