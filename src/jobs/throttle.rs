//! How a background job shares the members with foreground I/O: before each region it waits
//! as the array's rebuild priority asks, and as long as its rate limit asks.

use crate::array::{Array, RebuildPriority};
use crate::block::SECTOR_BYTES;

/// How long a low-priority job waits for foreground I/O to drain before going anyway.
const LOW_PRIORITY_MAX_WAIT_NS: u64 = 200_000_000;
/// The nap of a job yielding to foreground I/O.
const YIELD_NS: u64 = 1_000_000;

/// Waits as the priority and rate limit of `array` ask before the next region;
/// `moved_sectors` is what the job did since `started_ns`.
pub async fn throttle(array: &Array, moved_sectors: u64, started_ns: u64) {
    let p = array.policy();
    let exec = array.executor();
    match p.rebuild_priority {
        RebuildPriority::High => {}
        RebuildPriority::Normal => {
            if array.foreground_requests() > 0 {
                exec.sleep(YIELD_NS / 10).await;
            }
        }
        RebuildPriority::Low => {
            // Goes when foreground I/O has been quiet for a whole nap (none in flight, none
            // started meanwhile), not at the first instant nothing is in flight: a busy
            // client's queue empties for a moment between its batches.
            let started = || {
                let c = array.counters();
                c.reads.wrapping_add(c.writes)
            };
            let seen = &array.jobs().foreground_seen;
            // No foreground request since the last region: go at once.
            let quiet = array.foreground_requests() == 0 && started() == seen.get();
            let until = exec.now_ns() + LOW_PRIORITY_MAX_WAIT_NS;
            while !quiet && exec.now_ns() < until {
                let before = started();
                let idle_before = array.foreground_requests() == 0;
                exec.sleep(YIELD_NS).await;
                if idle_before && array.foreground_requests() == 0 && started() == before {
                    break;
                }
            }
            seen.set(started());
        }
    }
    let rate = p.rebuild_rate_bytes_per_s;
    if rate > 0 {
        let bytes = moved_sectors as u128 * SECTOR_BYTES as u128;
        let due_ns = started_ns as u128 + bytes * 1_000_000_000 / rate as u128;
        if due_ns > exec.now_ns() as u128 {
            exec.sleep_until(due_ns.min(u64::MAX as u128) as u64).await;
        }
    }
}
