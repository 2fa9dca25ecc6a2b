//! Rate windows: cumulative I/O totals sampled on each monitoring tick, turned into MB/s,
//! IOPS and mean latency over the last few ticks.

use alloc::collections::VecDeque;

/// Most ticks a window may span (bounds its memory).
pub const MAX_WINDOW_TICKS: u32 = 64;

/// Cumulative totals of one device since it started, as sampled at a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub read_latency_sum_ns: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub write_latency_sum_ns: u64,
}

/// Rates over a window; zero until two ticks were seen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IoRates {
    /// Length of the window the rates cover.
    pub interval_ns: u64,
    pub read_ops_per_s: f64,
    pub read_bytes_per_s: f64,
    pub write_ops_per_s: f64,
    pub write_bytes_per_s: f64,
    /// Mean latency of the requests that completed inside the window.
    pub read_latency_avg_ns: u64,
    pub write_latency_avg_ns: u64,
}

/// The last `window_ticks + 1` samples.
#[derive(Clone, Debug)]
pub struct RateWindow {
    samples: VecDeque<(u64, IoTotals)>,
    window_ticks: u32,
}

impl RateWindow {
    /// A window over `window_ticks` ticks (clamped to 1..=`MAX_WINDOW_TICKS`).
    pub fn new(window_ticks: u32) -> Self {
        let window_ticks = window_ticks.clamp(1, MAX_WINDOW_TICKS);
        RateWindow {
            samples: VecDeque::with_capacity(window_ticks as usize + 1),
            window_ticks,
        }
    }

    pub fn window_ticks(&self) -> u32 {
        self.window_ticks
    }

    /// Changes the span; keeps the newest samples that still fit.
    pub fn set_window_ticks(&mut self, window_ticks: u32) {
        self.window_ticks = window_ticks.clamp(1, MAX_WINDOW_TICKS);
        self.trim();
    }

    fn trim(&mut self) {
        while self.samples.len() > self.window_ticks as usize + 1 {
            self.samples.pop_front();
        }
    }

    /// Records the totals seen at `now_ns`. A sample not later than the newest is ignored
    /// (a tick that found the clock unmoved).
    pub fn tick(&mut self, now_ns: u64, totals: IoTotals) {
        if let Some(&(last, _)) = self.samples.back()
            && now_ns <= last
        {
            return;
        }
        self.samples.push_back((now_ns, totals));
        self.trim();
    }

    /// Rates between the oldest and newest sample of the window.
    pub fn rates(&self) -> IoRates {
        let (Some(&(t0, a)), Some(&(t1, b))) = (self.samples.front(), self.samples.back()) else {
            return IoRates::default();
        };
        let interval_ns = t1.saturating_sub(t0);
        if interval_ns == 0 {
            return IoRates::default();
        }
        let per_s = |d: u64| d as f64 * 1e9 / interval_ns as f64;
        let avg = |sum: u64, ops: u64| sum.checked_div(ops).unwrap_or(0);
        let read_ops = b.read_ops.saturating_sub(a.read_ops);
        let write_ops = b.write_ops.saturating_sub(a.write_ops);
        IoRates {
            interval_ns,
            read_ops_per_s: per_s(read_ops),
            read_bytes_per_s: per_s(b.read_bytes.saturating_sub(a.read_bytes)),
            write_ops_per_s: per_s(write_ops),
            write_bytes_per_s: per_s(b.write_bytes.saturating_sub(a.write_bytes)),
            read_latency_avg_ns: avg(
                b.read_latency_sum_ns.saturating_sub(a.read_latency_sum_ns),
                read_ops,
            ),
            write_latency_avg_ns: avg(
                b.write_latency_sum_ns
                    .saturating_sub(a.write_latency_sum_ns),
                write_ops,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(read_ops: u64, read_bytes: u64, write_ops: u64, write_bytes: u64) -> IoTotals {
        IoTotals {
            read_ops,
            read_bytes,
            read_latency_sum_ns: read_ops * 1_000,
            write_ops,
            write_bytes,
            write_latency_sum_ns: write_ops * 3_000,
        }
    }

    #[test]
    fn empty_and_single_sample_windows_have_no_rate() {
        let mut w = RateWindow::new(1);
        assert_eq!(w.rates(), IoRates::default());
        w.tick(1_000_000_000, totals(10, 10, 0, 0));
        assert_eq!(w.rates(), IoRates::default());
    }

    #[test]
    fn one_tick_window_covers_the_last_interval_only() {
        let mut w = RateWindow::new(1);
        let s = 1_000_000_000;
        w.tick(0, totals(0, 0, 0, 0));
        w.tick(s, totals(100, 100 << 20, 10, 1 << 20));
        let r = w.rates();
        assert_eq!(r.interval_ns, s);
        assert_eq!(r.read_ops_per_s, 100.0);
        assert_eq!(r.read_bytes_per_s, (100 << 20) as f64);
        assert_eq!(r.write_ops_per_s, 10.0);
        assert_eq!(r.read_latency_avg_ns, 1_000);
        assert_eq!(r.write_latency_avg_ns, 3_000);
        // Half a second with no I/O: the rate drops to zero, not to an average since start.
        w.tick(s + s / 2, totals(100, 100 << 20, 10, 1 << 20));
        let r = w.rates();
        assert_eq!(r.interval_ns, s / 2);
        assert_eq!(r.read_ops_per_s, 0.0);
        assert_eq!(r.read_latency_avg_ns, 0);
    }

    #[test]
    fn wider_window_averages_over_its_ticks_and_forgets_older_ones() {
        let mut w = RateWindow::new(4);
        let s = 1_000_000_000u64;
        for i in 0..=10u64 {
            // 50 reads a second for the first 6 seconds, then 10 a second.
            let ops = if i <= 6 { 50 * i } else { 300 + 10 * (i - 6) };
            w.tick(i * s, totals(ops, ops * 4096, 0, 0));
        }
        let r = w.rates();
        assert_eq!(r.interval_ns, 4 * s);
        assert_eq!(r.read_ops_per_s, 10.0);
        assert_eq!(r.read_bytes_per_s, 40960.0);
        w.set_window_ticks(2);
        assert_eq!(w.rates().interval_ns, 2 * s);
    }

    #[test]
    fn a_tick_at_the_same_time_is_ignored_and_window_is_bounded() {
        let mut w = RateWindow::new(1000);
        assert_eq!(w.window_ticks(), MAX_WINDOW_TICKS);
        w.tick(5, totals(1, 1, 1, 1));
        w.tick(5, totals(9, 9, 9, 9));
        w.tick(4, totals(9, 9, 9, 9));
        assert_eq!(w.samples.len(), 1);
        for t in 6..1000 {
            w.tick(t, totals(t, t, t, t));
        }
        assert_eq!(w.samples.len(), MAX_WINDOW_TICKS as usize + 1);
    }
}
