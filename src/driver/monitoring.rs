//! The MonitoringSystem: the periodic work of every array, driven by one task at the
//! configured interval — the per-array monitor tick (rates, latency windows, health events)
//! and the probe that notices a member deleted or truncated under us — plus the figures
//! and the event log the front ends read. It observes arrays; it owns none.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use super::ArrayManager;
use crate::array::Array;
use crate::executor::Executor;
use crate::manage::{self, Refusal};
use crate::monitor::{ArrayMetrics, EventBatch, EventLog, MonitorConfig};

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
                    array.monitor_tick(Some(&config));
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
        arrays.iter().map(|(_, a)| a.metrics()).collect()
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
            Some(name) => vec![arrays.named(name)?.1.metrics()],
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
