//! The MonitoringSystem: per-array and per-member I/O counters, latency histograms and rate
//! windows, cache hit counters, health tracking and the event log.
//!
//! Recording on the I/O path is a clock read, a few integer updates and no allocation; the
//! documents (`ArrayMetrics`) are built only when somebody asks. Rates come from a window
//! that the monitor task (`RaidDriver::start_monitor`) ticks every interval.

pub mod events;
pub mod histogram;
pub mod prometheus;
pub mod rate;

use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;

use serde::{Deserialize, Serialize};

use crate::array::{Array, Health, Member};
use crate::block::IoError;
use crate::executor::Executor;
use crate::manage::JobStatus;
pub use events::{DEFAULT_EVENT_CAPACITY, Event, EventBatch, EventLog, EventRecord};
use histogram::Histogram;
use rate::{IoRates, IoTotals, RateWindow};

/// How often the monitor ticks and what it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Time between two monitoring ticks (rate window samples, health checks).
    pub tick_interval_ns: u64,
    /// Ticks a rate (MB/s, IOPS) is averaged over.
    pub rate_window_ticks: u32,
    /// Events kept in the ring.
    pub event_capacity: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            tick_interval_ns: 1_000_000_000,
            rate_window_ticks: 1,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

/// The kind of a timed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Flush,
    Discard,
}

/// Counters and latencies of one direction (reads or writes).
#[derive(Debug, Default)]
struct Direction {
    ops: u64,
    bytes: u64,
    errors: u64,
    /// Every request since start.
    latency: Histogram,
    /// Requests since the last tick.
    recent: Histogram,
    /// `recent` as it was at the last tick.
    last_tick: LatencySummary,
}

fn summary(h: &Histogram) -> LatencySummary {
    LatencySummary {
        sum_ns: u64::try_from(h.sum()).unwrap_or(u64::MAX),
        avg_ns: h.mean(),
        p50_ns: h.percentile(50.0),
        p90_ns: h.percentile(90.0),
        p99_ns: h.percentile(99.0),
        p999_ns: h.percentile(99.9),
        max_ns: h.max(),
    }
}

impl Direction {
    fn record(&mut self, bytes: u64, latency_ns: u64, ok: bool) {
        self.ops += 1;
        self.bytes += bytes;
        if !ok {
            self.errors += 1;
        }
        self.latency.record(latency_ns);
        self.recent.record(latency_ns);
    }

    fn tick(&mut self) {
        self.last_tick = summary(&self.recent);
        self.recent.clear();
    }

    fn metrics(&self, ops_per_s: f64, bytes_per_s: f64, interval_avg_ns: u64) -> IoMetrics {
        IoMetrics {
            ops: self.ops,
            bytes: self.bytes,
            errors: self.errors,
            ops_per_s,
            bytes_per_s,
            interval_latency_avg_ns: interval_avg_ns,
            latency: summary(&self.latency),
            recent_latency: self.last_tick.clone(),
        }
    }
}

/// Reads and writes of one device.
#[derive(Debug, Default)]
struct IoState {
    read: Direction,
    write: Direction,
}

impl IoState {
    /// Closes the recent latency histograms and samples the totals.
    fn tick(&mut self) -> IoTotals {
        self.read.tick();
        self.write.tick();
        self.totals()
    }

    fn totals(&self) -> IoTotals {
        let sum = |d: &Direction| u64::try_from(d.latency.sum()).unwrap_or(u64::MAX);
        IoTotals {
            read_ops: self.read.ops,
            read_bytes: self.read.bytes,
            read_latency_sum_ns: sum(&self.read),
            write_ops: self.write.ops,
            write_bytes: self.write.bytes,
            write_latency_sum_ns: sum(&self.write),
        }
    }

    fn metrics(&self, rates: &IoRates) -> (IoMetrics, IoMetrics) {
        (
            self.read.metrics(
                rates.read_ops_per_s,
                rates.read_bytes_per_s,
                rates.read_latency_avg_ns,
            ),
            self.write.metrics(
                rates.write_ops_per_s,
                rates.write_bytes_per_s,
                rates.write_latency_avg_ns,
            ),
        )
    }
}

/// Count and errors of an operation without a payload (flush, discard).
#[derive(Clone, Copy, Debug, Default)]
struct OpCount {
    ops: u64,
    errors: u64,
}

/// The monitor of one array: every request through its `BlockDevice` entry points.
pub struct ArrayMonitor {
    clock: Executor,
    io: RefCell<IoState>,
    flushes: Cell<OpCount>,
    discards: Cell<OpCount>,
    window: RefCell<RateWindow>,
    cache_hits: Cell<u64>,
    cache_misses: Cell<u64>,
    events: RefCell<Rc<EventLog>>,
    /// Health at the last check (`None`: never checked).
    last_health: Cell<Option<Health>>,
}

impl ArrayMonitor {
    /// A monitor timing with `clock`, with its own event log until the driver attaches the
    /// shared one.
    pub fn new(clock: Executor) -> Self {
        ArrayMonitor {
            clock,
            io: RefCell::new(IoState::default()),
            flushes: Cell::new(OpCount::default()),
            discards: Cell::new(OpCount::default()),
            window: RefCell::new(RateWindow::new(MonitorConfig::default().rate_window_ticks)),
            cache_hits: Cell::new(0),
            cache_misses: Cell::new(0),
            events: RefCell::new(Rc::new(EventLog::default())),
            last_health: Cell::new(None),
        }
    }

    /// Runs `request` and records its kind, size, latency and outcome.
    pub async fn timed<T>(
        &self,
        op: OpKind,
        bytes: u64,
        request: impl Future<Output = Result<T, IoError>>,
    ) -> Result<T, IoError> {
        let started_ns = self.clock.now_ns();
        let result = request.await;
        self.record(op, bytes, started_ns, result.is_ok());
        result
    }

    /// Records a request of `op` that started at `started_ns` and ends now.
    pub fn record(&self, op: OpKind, bytes: u64, started_ns: u64, ok: bool) {
        let latency_ns = self.clock.now_ns().saturating_sub(started_ns);
        let count = |c: &Cell<OpCount>| {
            let mut v = c.get();
            v.ops += 1;
            v.errors += u64::from(!ok);
            c.set(v);
        };
        match op {
            OpKind::Read => self.io.borrow_mut().read.record(bytes, latency_ns, ok),
            OpKind::Write => self.io.borrow_mut().write.record(bytes, latency_ns, ok),
            OpKind::Flush => count(&self.flushes),
            OpKind::Discard => count(&self.discards),
        }
    }

    /// A read served from the stripe cache.
    pub fn record_cache_hit(&self) {
        self.cache_hits.set(self.cache_hits.get() + 1);
    }

    /// A read the stripe cache had to fetch from the members.
    pub fn record_cache_miss(&self) {
        self.cache_misses.set(self.cache_misses.get() + 1);
    }

    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.get()
    }

    pub fn cache_misses(&self) -> u64 {
        self.cache_misses.get()
    }

    /// Applies a configuration (window span); the tick interval is the monitor task's.
    pub fn configure(&self, config: &MonitorConfig) {
        self.window
            .borrow_mut()
            .set_window_ticks(config.rate_window_ticks);
    }

    /// The event log this array writes to.
    pub fn events(&self) -> Rc<EventLog> {
        self.events.borrow().clone()
    }

    /// Makes the array write to `log` from now on; events recorded so far move into it, and
    /// its previous log forwards there (a nested group may still hold it). A RAID 50/60 group
    /// joins its parent with `group.monitor().attach_events(parent.monitor().events())`.
    pub fn attach_events(&self, log: Rc<EventLog>) {
        let old = self.events.replace(log.clone());
        old.forward_to(&log);
    }

    fn tick(&self, now_ns: u64) {
        let totals = self.io.borrow_mut().tick();
        self.window.borrow_mut().tick(now_ns, totals);
    }
}

/// The monitor of one member: every request the array sends it.
pub struct MemberMonitor {
    /// The array's executor, set when the member joins an array.
    clock: RefCell<Option<Executor>>,
    io: RefCell<IoState>,
    window: RefCell<RateWindow>,
}

impl Default for MemberMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl MemberMonitor {
    pub fn new() -> Self {
        MemberMonitor {
            clock: RefCell::new(None),
            io: RefCell::new(IoState::default()),
            window: RefCell::new(RateWindow::new(MonitorConfig::default().rate_window_ticks)),
        }
    }

    /// The clock latencies are measured with (the array's executor).
    pub fn set_clock(&self, clock: Executor) {
        *self.clock.borrow_mut() = Some(clock);
    }

    fn has_clock(&self) -> bool {
        self.clock.borrow().is_some()
    }

    /// Now, for a request about to start (0 before the member has a clock).
    pub fn start(&self) -> u64 {
        self.clock.borrow().as_ref().map_or(0, Executor::now_ns)
    }

    /// Records a read (`write == false`) or write of `bytes` started at `started_ns`.
    pub fn finish(&self, write: bool, bytes: u64, started_ns: u64, ok: bool) {
        let latency_ns = self.start().saturating_sub(started_ns);
        let mut io = self.io.borrow_mut();
        let direction = if write { &mut io.write } else { &mut io.read };
        direction.record(bytes, latency_ns, ok);
    }

    fn tick(&self, now_ns: u64, config: Option<&MonitorConfig>) {
        let totals = self.io.borrow_mut().tick();
        let mut window = self.window.borrow_mut();
        if let Some(c) = config {
            window.set_window_ticks(c.rate_window_ticks);
        }
        window.tick(now_ns, totals);
    }
}

/// Latency of completed requests since the device started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub sum_ns: u64,
    pub avg_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// Reads or writes of one device: totals since start, rates over the last window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IoMetrics {
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    /// IOPS over the last rate window.
    pub ops_per_s: f64,
    pub bytes_per_s: f64,
    /// Mean latency of the requests completed in the last rate window.
    pub interval_latency_avg_ns: u64,
    /// Every request since the device started.
    pub latency: LatencySummary,
    /// The requests completed between the last two monitoring ticks.
    pub recent_latency: LatencySummary,
}

/// One member's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberMetrics {
    pub slot: u32,
    pub member: String,
    pub state: String,
    pub read: IoMetrics,
    pub write: IoMetrics,
    pub corrected_sectors: u64,
    pub in_flight: u32,
}

/// One array's figures: `raid stats --json`, and the source of the Prometheus text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArrayMetrics {
    pub name: String,
    /// `optimal`, `degraded`, … as `raid status` says.
    pub health: String,
    /// Length of the window the rates cover (0: not two ticks yet).
    pub interval_ns: u64,
    pub read: IoMetrics,
    pub write: IoMetrics,
    pub flushes: u64,
    pub flush_errors: u64,
    pub discards: u64,
    pub discard_errors: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// hits / (hits + misses); 0 when the cache saw no read.
    pub cache_hit_ratio: f64,
    pub job: Option<JobStatus>,
    pub members: Vec<MemberMetrics>,
}

impl Array {
    /// Records `event` for this array in the event log; returns its sequence number.
    pub fn emit(&self, event: Event) -> u64 {
        let now_ns = self.executor().now_ns();
        let wall_time_ms = self
            .wall_clock_base_s()
            .saturating_mul(1000)
            .saturating_add(now_ns / 1_000_000);
        log::info!("{}: {event}", self.name());
        self.monitor()
            .events()
            .push(self.name(), now_ns, wall_time_ms, event)
    }

    /// Records an event about `member`: `make` gets its slot and name. For example
    /// `array.member_event(&m, |slot, member| Event::SpareActivated { slot, member })`.
    pub fn member_event(&self, member: &Member, make: impl FnOnce(u32, String) -> Event) -> u64 {
        let slot = self.slot_of(member).unwrap_or(u32::MAX);
        self.emit(make(slot, member.name.clone()))
    }

    /// The slot `member` holds in this array.
    pub fn slot_of(&self, member: &Member) -> Option<u32> {
        self.slots()
            .iter()
            .position(|s| {
                s.as_ref()
                    .is_some_and(|m| core::ptr::eq(m.as_ref(), member))
            })
            .map(|p| p as u32)
    }

    /// Emits `ArrayDegraded`, `ArrayFailed` or `ArrayOptimal` when the health changed since
    /// the last check. Cheap: call it after anything that changes member states.
    pub fn check_health(&self) {
        let health = self.health();
        let monitor = self.monitor();
        let last = monitor.last_health.replace(Some(health));
        if last == Some(health) || (last.is_none() && health == Health::Optimal) {
            return;
        }
        if health == Health::Optimal {
            self.emit(Event::ArrayOptimal);
        } else if health == Health::Degraded {
            self.emit(Event::ArrayDegraded);
        } else if health == Health::Failed {
            self.emit(Event::ArrayFailed);
        }
        // A group's health is part of its outer array's.
        if let Some(parent) = self.parent() {
            parent.lower_health_changed();
        }
    }

    /// One monitoring tick: samples the rate windows and checks the health.
    pub fn monitor_tick(&self, config: Option<&MonitorConfig>) {
        let now_ns = self.executor().now_ns();
        let monitor = self.monitor();
        if let Some(c) = config {
            monitor.configure(c);
        }
        monitor.tick(now_ns);
        for member in self.slots().iter().flatten() {
            // A member added after assembly (a spare) gets the array's clock here.
            if !member.monitor().has_clock() {
                member.monitor().set_clock(self.executor().clone());
            }
            member.monitor().tick(now_ns, config);
        }
        self.check_health();
    }

    /// The figures of this array and its members.
    pub fn metrics(&self) -> ArrayMetrics {
        let monitor = self.monitor();
        let rates = monitor.window.borrow().rates();
        let (read, write) = monitor.io.borrow().metrics(&rates);
        let (hits, misses) = (monitor.cache_hits.get(), monitor.cache_misses.get());
        let members = self
            .slots()
            .iter()
            .enumerate()
            .filter_map(|(slot, m)| m.as_ref().map(|m| (slot, m)))
            .map(|(slot, m)| {
                let mm = m.monitor();
                let rates = mm.window.borrow().rates();
                let (read, write) = mm.io.borrow().metrics(&rates);
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
            name: self.name().to_string(),
            health: self.health_state().to_string(),
            interval_ns: rates.interval_ns,
            read,
            write,
            flushes: monitor.flushes.get().ops,
            flush_errors: monitor.flushes.get().errors,
            discards: monitor.discards.get().ops,
            discard_errors: monitor.discards.get().errors,
            cache_hits: hits,
            cache_misses: misses,
            cache_hit_ratio: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            job: self.job().map(|j| JobStatus {
                kind: j.kind.name().into(),
                progress: j.fraction(),
                rate_bytes_per_s: j.rate_bytes_per_s(),
                eta_s: j.eta_s(),
            }),
            members,
        }
    }
}

#[cfg(test)]
mod tests;
