//! The latency histogram: log-linear buckets in fixed memory, so recording a sample is a few
//! integer operations and never allocates.
//!
//! Values below `2 * SUB_BUCKETS` have a bucket each; above, every power of two is split into
//! `SUB_BUCKETS` equal buckets (as HdrHistogram does), so a bucket is at most 1/32 of its
//! lower bound wide and a percentile read back is within about 1.6 % of the exact sample.

use alloc::boxed::Box;
use alloc::vec;

/// Buckets per power of two (2^SUB_BITS).
const SUB_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Largest value kept apart: 2^37 ns is over two minutes; slower samples share the top bucket.
const MAX_VALUE_BITS: u32 = 37;
/// Largest value recorded as itself.
pub const MAX_TRACKABLE: u64 = (1 << MAX_VALUE_BITS) - 1;
/// Number of buckets: one per value below 2*SUB_BUCKETS, then SUB_BUCKETS per power of two.
const BUCKETS: usize = ((MAX_VALUE_BITS - SUB_BITS + 1) as usize) * SUB_BUCKETS as usize;

/// The bucket of `value` (clamped to `MAX_TRACKABLE`).
fn bucket_of(value: u64) -> usize {
    let v = value.min(MAX_TRACKABLE);
    if v < 2 * SUB_BUCKETS {
        return v as usize;
    }
    let magnitude = 63 - v.leading_zeros();
    let shift = magnitude - SUB_BITS;
    let top = v >> shift;
    (u64::from(shift) * SUB_BUCKETS + top) as usize
}

/// The lowest value of bucket `index`, and its width.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < 2 * SUB_BUCKETS {
        return (i, 1);
    }
    let shift = i / SUB_BUCKETS - 1;
    let top = i % SUB_BUCKETS + SUB_BUCKETS;
    (top << shift, 1 << shift)
}

/// A histogram of non-negative integer samples (nanoseconds here).
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0u64; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Bytes of bucket memory one histogram holds.
    pub const fn bucket_bytes() -> usize {
        BUCKETS * core::mem::size_of::<u64>()
    }

    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.count += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Forgets every sample (keeps the memory).
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of every sample (exact).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Mean of the samples, 0 when there are none.
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }

    /// The value at `percentile` (0..=100) by the nearest-rank rule: the smallest sample with
    /// at least that share of samples at or below it, to within one bucket. 0 when empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let p = percentile.clamp(0.0, 100.0);
        // Nearest rank, 1-based; computed in integers where possible to avoid float edge cases.
        let rank = libm_ceil(p / 100.0 * self.count as f64).max(1.0) as u64;
        let rank = rank.min(self.count);
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_bounds(index);
                // The middle of the bucket, kept inside what was actually seen.
                return (low + (width - 1) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// `f64::ceil` is not in `core`; samples counts fit a u64 so this is exact enough.
fn libm_ceil(x: f64) -> f64 {
    let t = x as u64 as f64;
    if t < x { t + 1.0 } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut expected_low = 0u64;
        for index in 0..BUCKETS {
            let (low, width) = bucket_bounds(index);
            assert_eq!(
                low, expected_low,
                "bucket {index} starts where the last ended"
            );
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(low + width - 1), index);
            assert!(
                width == 1 || width * SUB_BUCKETS <= low,
                "bucket {index} too wide"
            );
            expected_low = low + width;
        }
        assert_eq!(expected_low, MAX_TRACKABLE + 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    fn exact_percentile(sorted: &[u64], p: f64) -> u64 {
        let rank = libm_ceil(p / 100.0 * sorted.len() as f64).max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1]
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 25);
        assert_eq!(h.percentile(100.0), 50);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.mean(), 25);
        assert_eq!(h.min(), Some(1));
        h.clear();
        assert_eq!((h.count(), h.percentile(50.0), h.min()), (0, 0, None));
        h.record(7);
        assert_eq!((h.percentile(99.0), h.max()), (7, 7));
    }

    proptest! {
        #[test]
        fn percentiles_are_within_a_bucket_of_the_exact_ones(
            samples in prop::collection::vec(
                prop_oneof![0u64..200, 0u64..100_000, 0u64..50_000_000_000],
                1..400,
            ),
            p in prop_oneof![Just(50.0), Just(90.0), Just(99.0), Just(99.9), 0.0f64..100.0],
        ) {
            let mut h = Histogram::new();
            for &s in &samples {
                h.record(s);
            }
            let mut sorted: Vec<u64> = samples.clone();
            sorted.sort_unstable();
            let exact = exact_percentile(&sorted, p);
            let got = h.percentile(p);
            let error = got.abs_diff(exact);
            // Half a bucket of 1/32 of the value, plus rounding.
            prop_assert!(
                error <= exact / 64 + 1,
                "p{p}: histogram {got}, exact {exact}, samples {}", samples.len()
            );
            prop_assert_eq!(h.count(), samples.len() as u64);
            prop_assert_eq!(h.sum(), samples.iter().map(|&s| u128::from(s)).sum::<u128>());
            prop_assert_eq!(h.max(), *sorted.last().unwrap());
        }
    }
}
