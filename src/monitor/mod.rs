//! The MonitoringSystem: per-array and per-member I/O counters, latency histograms and rate
//! windows, cache hit counters, health tracking and the event log.
//!
//! Recording on the I/O path is a clock read, a few integer updates and no allocation; the
//! documents (`ArrayMetrics`) are built only when somebody asks. Rates come from a window
//! that the monitor task (`RaidDriver::start_monitor`) ticks every interval.
//!
//! Pure metrics: nothing here knows arrays or the management protocol. An array holds an
//! [`ArrayMonitor`] and tells it what happened; the MonitoringSystem
//! (`crate::driver::monitoring`) ticks it and builds the documents from it.

pub mod events;
pub mod histogram;
pub mod prometheus;
pub mod rate;

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;

use serde::{Deserialize, Serialize};

use crate::block::{Health, IoError};
use crate::executor::Executor;
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

    /// Records `event` of the array called `array` in the event log, stamped with executor
    /// time and with wall-clock time (`wall_clock_base_s`: the wall-clock seconds at executor
    /// time zero); returns its sequence number.
    pub fn emit(&self, array: &str, wall_clock_base_s: u64, event: Event) -> u64 {
        let now_ns = self.clock.now_ns();
        let wall_time_ms = wall_clock_base_s
            .saturating_mul(1000)
            .saturating_add(now_ns / 1_000_000);
        log::info!("{array}: {event}");
        self.events().push(array, now_ns, wall_time_ms, event)
    }

    /// Emits `ArrayDegraded`, `ArrayFailed` or `ArrayOptimal` when `health` differs from
    /// the last one seen (a first look that finds the array optimal says nothing). Returns
    /// whether it changed.
    pub fn observe_health(&self, array: &str, wall_clock_base_s: u64, health: Health) -> bool {
        let last = self.last_health.replace(Some(health));
        if last == Some(health) || (last.is_none() && health == Health::Optimal) {
            return false;
        }
        let event = match health {
            Health::Optimal => Event::ArrayOptimal,
            Health::Degraded => Event::ArrayDegraded,
            Health::Failed => Event::ArrayFailed,
        };
        self.emit(array, wall_clock_base_s, event);
        true
    }

    /// Closes the recent latency histograms and samples the rate window at `now_ns`.
    pub fn tick(&self, now_ns: u64) {
        let totals = self.io.borrow_mut().tick();
        self.window.borrow_mut().tick(now_ns, totals);
    }

    /// Reads and writes: totals, latencies, and rates over the last window, whose length
    /// is the third figure (0: not two ticks yet).
    pub fn io_metrics(&self) -> (IoMetrics, IoMetrics, u64) {
        let rates = self.window.borrow().rates();
        let (read, write) = self.io.borrow().metrics(&rates);
        (read, write, rates.interval_ns)
    }

    /// Flushes: (requests, errors).
    pub fn flush_counts(&self) -> (u64, u64) {
        let c = self.flushes.get();
        (c.ops, c.errors)
    }

    /// Discards: (requests, errors).
    pub fn discard_counts(&self) -> (u64, u64) {
        let c = self.discards.get();
        (c.ops, c.errors)
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

    /// Whether the member has its array's clock yet.
    pub fn has_clock(&self) -> bool {
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

    /// Closes the recent latency histograms and samples the rate window at `now_ns` (of
    /// `config`'s span, when given).
    pub fn tick(&self, now_ns: u64, config: Option<&MonitorConfig>) {
        let totals = self.io.borrow_mut().tick();
        let mut window = self.window.borrow_mut();
        if let Some(c) = config {
            window.set_window_ticks(c.rate_window_ticks);
        }
        window.tick(now_ns, totals);
    }

    /// Reads and writes: totals, latencies, and rates over the last window.
    pub fn io_metrics(&self) -> (IoMetrics, IoMetrics) {
        let rates = self.window.borrow().rates();
        self.io.borrow().metrics(&rates)
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

/// A background job (rebuild, resync, check) in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub kind: String,
    /// 0..1.
    pub progress: f64,
    pub rate_bytes_per_s: u64,
    pub eta_s: u64,
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
