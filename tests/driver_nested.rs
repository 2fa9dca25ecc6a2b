//! The driver discovering RAID 50 / RAID 60 stacks on hotplugged disks: group arrays start
//! from their members, then the outer array from the superblocks in the groups' data; only
//! the outer array takes block requests, and shutdown leaves every layer clean.

use std::rc::Rc;

use orion_driver::{DriverError, IoFlags, IoRequest, Message};
use orion_raid::array::Health;
use orion_raid::array::assemble::CreateOptions;
use orion_raid::array::nested::{NestedSpec, create_nested};
use orion_raid::executor::Executor;
use orion_raid::manage;
use orion_raid::metadata::{Level, Superblock};
use orion_raid::monitor::Event;
use orion_raid::platform::memory::MemoryDisk;

#[path = "common/kernel.rs"]
mod kernel;
use kernel::Kernel;

/// Member disks holding a clean nested array named `stack`.
fn make_stack(level: u32, groups: usize, per_group: usize) -> Vec<Rc<MemoryDisk>> {
    let exec = Executor::new();
    let disks: Vec<Rc<MemoryDisk>> = (0..groups * per_group)
        .map(|_| Rc::new(MemoryDisk::new(16 * 2048)))
        .collect();
    let members = kernel::named_members(&disks);
    let opts = CreateOptions {
        level: Level::Raid0,
        layout: None,
        chunk_sectors: 64,
        name: "stack".into(),
        uuid: [9; 16],
        time_s: 1_700_000_000,
        entropy: 3,
        assume_clean: true,
    };
    let spec = NestedSpec::for_level(level, groups).unwrap();
    let e = exec.clone();
    exec.block_on(async move {
        let stack = create_nested(&e, members, &opts, spec).await.unwrap();
        stack.mark_clean().await.unwrap();
    })
    .unwrap();
    disks
}

fn pattern(len_sectors: usize, seed: u8) -> Vec<u8> {
    (0..len_sectors * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn superblock_at(disk: &MemoryDisk, sector: u64) -> Superblock {
    let mut block = vec![0u8; 4096];
    disk.read_at(sector, &mut block).unwrap();
    Superblock::decode(&block).unwrap()
}

#[test]
fn raid50_discovered_from_hotplugged_disks_serves_only_the_outer_array() {
    let disks = make_stack(50, 2, 3);
    let mut k = Kernel::new();
    // Interleaved arrival: the groups complete one after the other, the outer array last.
    for (n, i) in [0usize, 3, 1, 4, 2, 5].into_iter().enumerate() {
        k.plug(100 + i as u32, &disks[i]);
        let expected = match n {
            0..=3 => 0,
            4 => 1,
            _ => 3,
        };
        assert_eq!(k.driver.arrays().len(), expected, "after {} disks", n + 1);
    }
    let outer = k.id_of("stack");
    let g0 = k.id_of("stack-g0");
    let report = k.status();
    let names: Vec<(&str, &str, Option<&str>)> = report
        .arrays
        .iter()
        .map(|a| (a.name.as_str(), a.level.as_str(), a.parent.as_deref()))
        .collect();
    assert!(names.contains(&("stack", "raid50", None)), "{names:?}");
    assert!(
        names.contains(&("stack-g0", "raid5", Some("stack"))),
        "{names:?}"
    );
    assert!(
        names.contains(&("stack-g1", "raid5", Some("stack"))),
        "{names:?}"
    );

    let data = pattern(300, 1);
    let w = k.io(IoRequest::write(outer, 100, data.clone(), IoFlags::FUA));
    assert_eq!(w.status, Ok(()));
    let r = k.io(IoRequest::read(outer, 100, 300));
    assert_eq!(r.status, Ok(()));
    assert!(r.data == data);
    // A group is internal: no block requests.
    let r = k.io(IoRequest::read(g0, 0, 1));
    assert_eq!(r.status, Err(DriverError::NotFound));

    k.shutdown();
    for (i, d) in disks.iter().enumerate() {
        let sb = superblock_at(d, 8);
        assert!(sb.is_clean(), "member {i} clean");
        if i % 3 == 0 {
            let outer_sb = superblock_at(d, sb.data_offset_sectors + 8);
            assert_eq!(outer_sb.level, Level::Raid0);
            assert!(
                outer_sb.is_clean(),
                "outer superblock in group {} clean",
                i / 3
            );
        }
    }

    // After a reboot, the data is still there.
    let mut k = Kernel::new();
    for (i, d) in disks.iter().enumerate() {
        k.plug(200 + i as u32, d);
    }
    let outer = k.id_of("stack");
    let r = k.io(IoRequest::read(outer, 100, 300));
    assert!(r.data == data);
}

#[test]
fn raid60_with_two_members_missing_per_group_starts_at_init() {
    let disks = make_stack(60, 2, 4);
    // A first boot writes data with everything present.
    let mut k = Kernel::new();
    for (i, d) in disks.iter().enumerate() {
        k.plug(100 + i as u32, d);
    }
    let outer = k.id_of("stack");
    let data = pattern(200, 7);
    assert_eq!(
        k.io(IoRequest::write(outer, 5000, data.clone(), IoFlags::FUA))
            .status,
        Ok(())
    );
    k.shutdown();

    // Second boot: members 1, 2 of group 0 and 4, 7 of group 1 are gone.
    let mut k = Kernel::new();
    for i in [0usize, 3, 5, 6] {
        k.plug(100 + i as u32, &disks[i]);
    }
    assert_eq!(k.driver.arrays().len(), 0, "degraded groups wait for Init");
    assert_eq!(k.send(Message::Init), Message::Ack);
    assert_eq!(k.driver.arrays().len(), 3);
    let outer = k.id_of("stack");
    let report = k.status();
    let top = report.arrays.iter().find(|a| a.name == "stack").unwrap();
    assert_eq!(top.level, "raid60");
    assert_eq!(top.state, "degraded");
    for g in ["stack-g0", "stack-g1"] {
        let id = k.id_of(g);
        assert_eq!(
            k.driver.arrays().get(id).unwrap().health(),
            Health::Degraded
        );
    }
    let r = k.io(IoRequest::read(outer, 5000, 200));
    assert_eq!(r.status, Ok(()));
    assert!(r.data == data);
}

/// A management request with an empty payload (every array); the reply's payload.
fn manage_all(k: &mut Kernel, opcode: u16) -> Vec<u8> {
    match k.send(Message::ManagementRequest(
        orion_driver::ManagementRequest {
            opcode,
            payload: Vec::new(),
        },
    )) {
        Message::ManagementResponse(r) => {
            assert_eq!(r.status, Ok(()));
            r.payload
        }
        other => panic!("expected a ManagementResponse, got {other:?}"),
    }
}

/// What every view says of array `name`: status, stats (metrics), the Prometheus health
/// label, and the last health event.
fn views(k: &mut Kernel, name: &str) -> [String; 4] {
    let status = k.status();
    let state = status
        .arrays
        .iter()
        .find(|a| a.name == name)
        .unwrap()
        .state
        .clone();
    let metrics: manage::MetricsReport =
        serde_json::from_slice(&manage_all(k, manage::OP_METRICS)).unwrap();
    let stats = metrics
        .arrays
        .iter()
        .find(|a| a.name == name)
        .unwrap()
        .health
        .clone();
    let text = String::from_utf8(manage_all(k, manage::OP_PROMETHEUS)).unwrap();
    let prefix = format!("orion_raid_health{{array=\"{name}\",health=\"");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no health line for {name} in {text}"));
    let prometheus = line[prefix.len()..].split('"').next().unwrap().to_string();
    let batch = k
        .driver
        .events()
        .after(0, usize::MAX)
        .events
        .into_iter()
        .rev()
        .filter(|e| e.array == name)
        .find_map(|e| match e.event {
            Event::ArrayDegraded => Some("degraded"),
            Event::ArrayFailed => Some("failed"),
            Event::ArrayOptimal => Some("optimal"),
            _ => None,
        })
        .unwrap_or("optimal");
    [state, stats, prometheus, batch.to_string()]
}

/// Issue 17, item 6: a RAID60 with three failed members was `degraded` in `raid status`
/// while `raid stats` and the Prometheus text said `optimal`. Health is computed once, on
/// the array with its groups, and every view says the same.
#[test]
fn raid60_health_agrees_in_status_stats_prometheus_and_events() {
    let disks = make_stack(60, 2, 4);
    let mut k = Kernel::boot(&disks);
    assert_eq!(views(&mut k, "stack"), ["optimal"; 4].map(String::from));
    // Two members of group 0 and one of group 1 fail: both groups degraded, data intact.
    for id in [100, 101, 104] {
        k.unplug(id);
    }
    for name in ["stack", "stack-g0", "stack-g1"] {
        assert_eq!(
            views(&mut k, name),
            ["degraded"; 4].map(String::from),
            "{name}"
        );
    }
    let outer = k.id_of("stack");
    assert_eq!(k.io(IoRequest::read(outer, 0, 64)).status, Ok(()));
    // A third member of group 0: that group fails, and with it the RAID 0 over the groups.
    k.unplug(102);
    assert_eq!(views(&mut k, "stack-g0"), ["failed"; 4].map(String::from));
    assert_eq!(views(&mut k, "stack-g1"), ["degraded"; 4].map(String::from));
    assert_eq!(views(&mut k, "stack"), ["failed"; 4].map(String::from));
}
