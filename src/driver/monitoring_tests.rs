//! The MonitoringSystem through a real array on memory disks with simulated latency:
//! counters at both levels, latencies from the executor's clock, rates from ticks, events
//! from failures.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::array::Array;
use crate::array::assemble::{CreateOptions, create};
use crate::array::test_rig::named_members;
use crate::block::{BlockDevice, Bytes, SECTOR_BYTES};
use crate::executor::Executor;
use crate::metadata::Level;
use crate::monitor::{Event, LatencySummary, MonitorConfig};
use crate::platform::faulty::{FaultConfig, FaultyDisk};
use crate::platform::memory::MemoryDisk;

struct Rig {
    exec: Executor,
    disks: Vec<Rc<FaultyDisk>>,
    array: Rc<Array>,
}

/// A RAID1 of `count` members whose every request takes exactly `latency_ns`.
fn rig(level: Level, count: usize, latency_ns: u64) -> Rig {
    let exec = Executor::new();
    let config = FaultConfig {
        min_latency_ns: latency_ns,
        max_latency_ns: latency_ns,
        ..FaultConfig::default()
    };
    let disks: Vec<Rc<FaultyDisk>> = (0..count)
        .map(|i| {
            Rc::new(FaultyDisk::new(
                Rc::new(MemoryDisk::new(8 * 2048)),
                exec.clone(),
                i as u64,
                config.clone(),
            ))
        })
        .collect();
    let members = named_members(&disks);
    let opts = CreateOptions {
        level,
        layout: None,
        chunk_sectors: 64,
        name: "mon".into(),
        uuid: [5; 16],
        time_s: 1_000,
        entropy: 1,
        assume_clean: true,
    };
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .expect("create finishes")
        .expect("create succeeds");
    Rig { exec, disks, array }
}

impl Rig {
    fn write(&self, sector: u64, bytes: usize) -> bool {
        let a = self.array.clone();
        self.exec
            .block_on(async move { a.write(sector, Bytes::from(vec![7u8; bytes]), false).await })
            .expect("write finishes")
            .is_ok()
    }

    fn read(&self, sector: u64, bytes: usize) -> bool {
        let a = self.array.clone();
        self.exec
            .block_on(async move { a.read(sector, vec![0u8; bytes]).await })
            .expect("read finishes")
            .is_ok()
    }

    fn events(&self) -> Vec<Event> {
        let log = self.array.monitor().events();
        log.after(0, usize::MAX)
            .events
            .into_iter()
            .map(|r| r.event)
            .collect()
    }
}

#[test]
fn array_and_member_counters_and_latency() {
    let r = rig(Level::Raid1, 2, 1_000);
    // Create wrote superblocks through the members, not through the array.
    let before: Vec<u64> = array_metrics(&r.array)
        .members
        .iter()
        .map(|m| m.write.ops)
        .collect();
    assert!(r.write(0, 8 * SECTOR_BYTES));
    assert!(r.write(64, 2 * SECTOR_BYTES));
    for _ in 0..3 {
        assert!(r.read(0, 4 * SECTOR_BYTES));
    }
    let m = array_metrics(&r.array);
    assert_eq!((m.write.ops, m.write.bytes), (2, 10 * 512));
    assert_eq!(
        (m.read.ops, m.read.bytes, m.read.errors),
        (3, 3 * 4 * 512, 0)
    );
    // A mirrored write is one member write per copy; each takes the disk's latency.
    for (mm, b) in m.members.iter().zip(&before) {
        assert_eq!(mm.write.ops - b, 2, "{mm:?}");
        assert!(mm.write.latency.max_ns >= 1_000, "{mm:?}");
    }
    let member_reads: u64 = m.members.iter().map(|x| x.read.ops).sum();
    let member_read_bytes: u64 = m.members.iter().map(|x| x.read.bytes).sum();
    assert_eq!((member_reads, member_read_bytes), (3, 3 * 4 * 512));
    // Simulated time: every request took exactly the disk latency (writes may also mark the
    // array dirty first, which takes longer).
    assert_eq!(m.read.latency.p50_ns, 1_000);
    assert_eq!(m.read.latency.max_ns, 1_000);
    assert!(m.write.latency.p99_ns >= 1_000);
    assert_eq!(m.health, "optimal");
    assert_eq!(m.interval_ns, 0, "no tick yet");
}

#[test]
fn rates_come_from_ticks_on_the_executor_clock() {
    let r = rig(Level::Raid1, 2, 1_000);
    let config = MonitorConfig {
        tick_interval_ns: 1_000_000_000,
        rate_window_ticks: 2,
        event_capacity: 16,
    };
    // Creating the array took a little simulated time: tick on whole seconds from here.
    r.exec.advance_to(1_000_000_000);
    tick(&r.array, Some(&config));
    for i in 0..10 {
        assert!(r.write(i * 8, 4096));
    }
    r.exec.advance_to(2_000_000_000);
    tick(&r.array, Some(&config));
    let m = array_metrics(&r.array);
    assert_eq!(m.interval_ns, 1_000_000_000);
    assert_eq!(m.write.recent_latency.max_ns, m.write.latency.max_ns);
    assert!(m.write.recent_latency.p50_ns >= 1_000, "{m:?}");
    assert_eq!(m.write.ops_per_s, 10.0);
    assert_eq!(m.write.bytes_per_s, 40960.0);
    let member_write_rate: f64 = m.members.iter().map(|x| x.write.bytes_per_s).sum();
    assert!(member_write_rate >= 2.0 * 40960.0, "{member_write_rate}");
    // One idle second later the two-tick window spans the busy second and the idle one.
    r.exec.advance_to(3_000_000_000);
    tick(&r.array, Some(&config));
    assert_eq!(array_metrics(&r.array).write.ops_per_s, 5.0);
    assert_eq!(
        array_metrics(&r.array).write.recent_latency,
        LatencySummary::default(),
        "no write in the last tick"
    );
    r.exec.advance_to(4_000_000_000);
    tick(&r.array, Some(&config));
    assert_eq!(array_metrics(&r.array).write.ops_per_s, 0.0);
    assert_eq!(array_metrics(&r.array).write.ops, 10, "totals stay");
}

#[test]
fn failures_emit_member_and_health_events() {
    let r = rig(Level::Raid1, 3, 0);
    r.array.check_health();
    assert!(r.events().is_empty(), "an optimal start is no event");
    r.disks[1].fail();
    assert!(r.write(0, 4096));
    let events = r.events();
    assert_eq!(
        events,
        [
            Event::MemberFailed {
                slot: 1,
                member: "d1".into()
            },
            Event::ArrayDegraded
        ]
    );
    // A second failure leaves it degraded (RAID1 of three): no new health event.
    r.disks[2].fail();
    assert!(r.write(0, 4096));
    let events = r.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(array_metrics(&r.array).health, "degraded");
    let log = r.array.monitor().events();
    let last = log.after(0, 10).events.pop().unwrap();
    assert_eq!(last.array, "mon");
    assert_eq!(
        last.wall_time_ms, 1_000_000,
        "wall-clock base of the superblocks"
    );
    assert_eq!(
        array_metrics(&r.array)
            .members
            .iter()
            .map(|m| m.state.as_str())
            .collect::<Vec<_>>(),
        ["active", "faulty", "faulty"]
    );
}

#[test]
fn a_degraded_start_and_an_attached_log() {
    let r = rig(Level::Raid1, 2, 0);
    r.disks[0].fail();
    assert!(r.read(0, 4096));
    let shared = Rc::new(EventLog::new(8));
    shared.push("other", 0, 0, Event::ArrayStarted);
    r.array.monitor().attach_events(shared.clone());
    emit(&r.array, Event::ArrayStopped);
    let names: Vec<&str> = shared
        .after(0, 10)
        .events
        .iter()
        .map(|e| e.event.name())
        .collect();
    assert_eq!(
        names,
        [
            "array_started",
            "member_failed",
            "array_degraded",
            "array_stopped"
        ]
    );
}

#[test]
fn cache_counters_and_flush_discard_counts() {
    let r = rig(Level::Raid1, 2, 0);
    let mon = r.array.monitor();
    for _ in 0..3 {
        mon.record_cache_hit();
    }
    mon.record_cache_miss();
    let a = r.array.clone();
    r.exec
        .block_on(async move {
            a.flush().await.unwrap();
            a.discard(0, 8).await.unwrap();
            // Past the end: counted as an error.
            assert!(a.read(u64::MAX / 1024, vec![0u8; 512]).await.is_err());
        })
        .unwrap();
    let m = array_metrics(&r.array);
    assert_eq!((m.cache_hits, m.cache_misses), (3, 1));
    assert_eq!(m.cache_hit_ratio, 0.75);
    assert_eq!((m.flushes, m.discards), (1, 1));
    assert_eq!((m.read.ops, m.read.errors), (1, 1));
    let json = serde_json::to_string(&m).unwrap();
    let back: ArrayMetrics = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}

/// Sends one management request to `driver` and returns its (status, payload).
fn manage(
    driver: &mut crate::driver::RaidDriver,
    opcode: u16,
    payload: Vec<u8>,
) -> (Result<(), orion_driver::DriverError>, Vec<u8>) {
    use orion_driver::{Frame, ManagementRequest, Message};
    driver.handle_frame(Frame {
        sequence: 42,
        message: Message::ManagementRequest(ManagementRequest { opcode, payload }),
    });
    driver.executor().run_until_stalled();
    let mut out = driver.take_outgoing();
    assert_eq!(out.len(), 1, "one reply");
    match out.pop().map(|f| f.message) {
        Some(Message::ManagementResponse(r)) => (r.status, r.payload),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn driver_serves_metrics_events_and_ticks_the_monitor() {
    use crate::manage::{EventsRequest, MetricsReport, NameRequest, OP_EVENTS, OP_METRICS};
    let r = rig(Level::Raid1, 2, 0);
    let mut driver = crate::driver::RaidDriver::with_executor(r.exec.clone());
    driver.add_array(r.array.clone());
    driver.start_monitor(MonitorConfig {
        tick_interval_ns: 1_000_000_000,
        rate_window_ticks: 1,
        event_capacity: 3,
    });
    driver.executor().run_until_stalled();
    for i in 0..4 {
        assert!(r.write(i * 8, 4096));
    }
    // The monitor task ticks on the executor clock.
    r.exec.advance_to(1_000_000_000);
    r.exec.run_until_stalled();
    let (status, payload) = manage(&mut driver, OP_METRICS, Vec::new());
    assert_eq!(status, Ok(()));
    let report: MetricsReport = serde_json::from_slice(&payload).unwrap();
    assert_eq!(report.tick_interval_ns, 1_000_000_000);
    assert_eq!(report.arrays[0].write.ops, 4);
    assert_eq!(report.arrays[0].write.ops_per_s, 4.0);
    let name = serde_json::to_vec(&NameRequest {
        name: "nosuch".into(),
    })
    .unwrap();
    assert!(manage(&mut driver, OP_METRICS, name).0.is_err());

    let events = |driver: &mut crate::driver::RaidDriver, after_seq| {
        let req = serde_json::to_vec(&EventsRequest {
            after_seq,
            max_events: None,
        })
        .unwrap();
        let (status, payload) = manage(driver, OP_EVENTS, req);
        assert_eq!(status, Ok(()));
        serde_json::from_slice::<EventBatch>(&payload).unwrap()
    };
    let batch = events(&mut driver, 0);
    assert_eq!(batch.events[0].event, Event::ArrayStarted);
    assert_eq!(batch.latest_seq, 1);
    assert_eq!(
        manage(&mut driver, OP_EVENTS, b"{".to_vec()).0,
        Err(orion_driver::DriverError::InvalidArgument)
    );
    // A failure seen by the health check of the tick, even without a request.
    r.disks[0].fail();
    assert!(r.write(0, 4096));
    let batch = events(&mut driver, 1);
    let names: Vec<&str> = batch.events.iter().map(|e| e.event.name()).collect();
    assert_eq!(names, ["member_failed", "array_degraded"]);
    // Stopping: the event outlives the array.
    let stop = serde_json::to_vec(&NameRequest { name: "mon".into() }).unwrap();
    assert_eq!(manage(&mut driver, crate::manage::OP_STOP, stop).0, Ok(()));
    let batch = events(&mut driver, 3);
    assert_eq!(batch.events.last().unwrap().event, Event::ArrayStopped);
    // The ring holds 3: a reader from the start missed one.
    assert_eq!(events(&mut driver, 0).missed, 1);
    let (_, text) = manage(&mut driver, crate::manage::OP_PROMETHEUS, Vec::new());
    assert!(
        String::from_utf8(text)
            .unwrap()
            .contains("# TYPE orion_raid_read_ops_total counter")
    );
    // A stopped monitor lets a simulation run idle.
    driver.stop_monitor();
    r.exec.run_until_idle();
}

#[test]
fn resync_emits_start_and_finish_and_shows_as_a_job() {
    let r = rig(Level::Raid1, 2, 0);
    let a = r.array.clone();
    r.exec
        .block_on(async move { crate::jobs::resync(&a).await })
        .unwrap()
        .unwrap();
    assert_eq!(
        r.events(),
        [
            Event::ResyncStarted,
            Event::ResyncFinished {
                unreadable_extents: 0
            }
        ]
    );
    assert_eq!(array_metrics(&r.array).job, None, "no job once finished");
}
