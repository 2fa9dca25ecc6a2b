//! The driver as Orion runs it: a simulated kernel offers member disks (RAM-disk drivers that
//! answer over IPC frames), the RAID driver discovers the array on them, and the storage
//! service's encoded `IoRequest` frames are served and answered.

use std::rc::Rc;

use orion_driver::{DriverError, Frame, IoFlags, IoOp, IoRequest, Message, encode};
use orion_raid::array::Health;
use orion_raid::block::BlockDevice;
use orion_raid::driver::{ARRAY_ID_BASE, DriverState};
use orion_raid::metadata::Level;
use orion_raid::platform::memory::MemoryDisk;

#[path = "common/kernel.rs"]
mod kernel;
use kernel::{Kernel, make_members, status_ok};

#[test]
fn discovers_array_on_hotplugged_disks_and_serves_io() {
    let disks = make_members(Level::Raid10, Some("n2"), 4);
    let mut k = Kernel::boot(&disks);
    // All four members arrived: the array starts without waiting for Init.
    assert_eq!(k.driver.arrays().len(), 1);
    let array_id = ARRAY_ID_BASE;
    assert!(k.member_requests >= 4, "superblocks were read over IPC");

    let data: Vec<u8> = (0..64 * 512).map(|i| (i * 7 % 251) as u8).collect();
    let w = k.io(IoRequest::write(array_id, 1000, data.clone(), IoFlags::FUA));
    assert_eq!(w.status, Ok(()));
    let r = k.io(IoRequest::read(array_id, 1000, 64));
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data, data);

    // Both copies of the chunk hold the data on the member disks themselves.
    let sb_offset = {
        let arrays = k.driver.arrays();
        let array = arrays.get(array_id).unwrap();
        array.superblock().unwrap().data_offset_sectors
    };
    let mut a = vec![0u8; 512];
    let mut b = vec![0u8; 512];
    // Array sector 1000 is in chunk 7 (128-sector chunks): near2 over 4 puts it on
    // members 2 and 3 at member chunk 3.
    disks[2]
        .read_at(sb_offset + 3 * 128 + 1000 % 128, &mut a)
        .unwrap();
    disks[3]
        .read_at(sb_offset + 3 * 128 + 1000 % 128, &mut b)
        .unwrap();
    assert_eq!(a, data[..512]);
    assert_eq!(b, data[..512]);

    // Flush, discard and write-zeroes are served.
    assert_eq!(k.io(IoRequest::flush(array_id)).status, Ok(()));
    let zero = IoRequest {
        device_id: array_id,
        op: IoOp::WriteZeroes,
        flags: IoFlags::empty(),
        sector: 1008,
        sector_count: 8,
        data: Vec::new(),
    };
    assert_eq!(k.io(zero).status, Ok(()));
    let r = k.io(IoRequest::read(array_id, 1000, 16));
    assert_eq!(&r.data[..8 * 512], &data[..8 * 512]);
    assert!(r.data[8 * 512..].iter().all(|&x| x == 0));
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::boot(&disks);
    let array_id = ARRAY_ID_BASE;
    let cap = k.driver.arrays().get(array_id).unwrap().capacity_sectors();

    let before: Vec<u8> = {
        let mut b = vec![0u8; 4096];
        disks[0].read_at(0, &mut b).unwrap();
        b
    };
    // Unknown device.
    let r = k.io(IoRequest::read(array_id + 5, 0, 1));
    assert_eq!(r.status, Err(DriverError::NotFound));
    // Past the end.
    let r = k.io(IoRequest::read(array_id, cap - 1, 2));
    assert_eq!(r.status, Err(DriverError::OutOfRange));
    let r = k.io(IoRequest::write(
        array_id,
        cap,
        vec![1u8; 512],
        IoFlags::empty(),
    ));
    assert_eq!(r.status, Err(DriverError::OutOfRange));
    // A corrupted frame: answered with an error, the stream continues.
    let (bad_seq, good_seq) = (k.sequence(), k.sequence());
    let mut bytes = encode(&Frame {
        sequence: bad_seq,
        message: Message::IoRequest(IoRequest::write(
            array_id,
            0,
            vec![9u8; 512],
            IoFlags::empty(),
        )),
    })
    .unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let good = encode(&Frame {
        sequence: good_seq,
        message: Message::IoRequest(IoRequest::read(array_id, 0, 1)),
    })
    .unwrap();
    bytes.extend_from_slice(&good);
    assert_eq!(k.driver.handle_bytes(&bytes), bytes.len());
    k.pump();
    assert!(matches!(
        k.replies.remove(&bad_seq),
        Some(Message::Error(_))
    ));
    match k.replies.remove(&good_seq) {
        Some(Message::IoResponse(r)) => assert_eq!(r.data, vec![0u8; 512]),
        other => panic!("expected the read to be served, got {other:?}"),
    }
    // Garbage that is not a frame at all.
    assert_eq!(
        k.driver
            .handle_bytes(b"not a frame at all, just noise......"),
        36
    );
    let mut after = vec![0u8; 4096];
    disks[0].read_at(0, &mut after).unwrap();
    assert_eq!(before, after, "superblock area untouched");
}

#[test]
fn member_removed_degrades_and_shutdown_marks_clean() {
    let disks = make_members(Level::Raid1, None, 3);
    let mut k = Kernel::boot(&disks);
    let array_id = ARRAY_ID_BASE;
    let data = vec![0x5au8; 8 * 512];
    assert_eq!(
        k.io(IoRequest::write(
            array_id,
            64,
            data.clone(),
            IoFlags::empty()
        ))
        .status,
        Ok(())
    );
    k.unplug(101);
    assert_eq!(
        k.driver.arrays().get(array_id).unwrap().health(),
        Health::Degraded
    );
    let r = k.io(IoRequest::read(array_id, 64, 8));
    assert_eq!(r.data, data);
    k.shutdown();
    assert_eq!(k.driver.state(), DriverState::Stopped);
    assert!(k.driver.stats().frames_in > 0);
    // Clean on the surviving members, and member 1 recorded as faulty there.
    for i in [0usize, 2] {
        let mut block = vec![0u8; 4096];
        disks[i].read_at(8, &mut block).unwrap();
        let sb = orion_raid::metadata::Superblock::decode(&block).unwrap();
        assert!(sb.is_clean(), "member {i} clean");
        assert_eq!(sb.role_of(1), orion_raid::metadata::DeviceRole::Faulty);
    }
}

#[test]
fn degraded_array_waits_for_init() {
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::boot(&disks[..1]);
    assert_eq!(k.driver.state(), DriverState::Loaded);
    assert_eq!(
        k.driver.arrays().len(),
        0,
        "one of two members: wait for the rest"
    );
    assert_eq!(k.send(Message::Init), Message::Ack);
    assert_eq!(k.driver.state(), DriverState::Running);
    assert_eq!(k.driver.arrays().len(), 1, "after Init it starts degraded");
    let arrays = k.driver.arrays();
    assert_eq!(
        arrays.get(ARRAY_ID_BASE).unwrap().health(),
        Health::Degraded
    );
}

#[test]
fn member_commands_fail_add_rebuild_and_set_over_ipc() {
    use orion_raid::manage::{OP_ADD, OP_FAIL, OP_REMOVE, OP_SET};
    let mut disks = make_members(Level::Raid1, None, 2);
    // A blank disk the kernel offers too: free, usable as a spare.
    disks.push(Rc::new(MemoryDisk::new(32 * 2048)));
    let mut k = Kernel::boot(&disks);
    let array_id = ARRAY_ID_BASE;
    let data = vec![0x6bu8; 64 * 512];
    assert_eq!(
        k.io(IoRequest::write(
            array_id,
            0,
            data.clone(),
            IoFlags::empty()
        ))
        .status,
        Ok(())
    );
    // Bad settings change nothing.
    let r = k.manage(
        OP_SET,
        serde_json::json!({"name": "boot", "key": "colour", "value": "red"}),
    );
    assert!(!status_ok(&r), "{r:?}");
    let r = k.manage(
        OP_SET,
        serde_json::json!({"name": "boot", "key": "rebuild_priority", "value": "high"}),
    );
    assert!(status_ok(&r), "{r:?}");
    // In use: not removable.
    let r = k.manage(
        OP_REMOVE,
        serde_json::json!({"name": "boot", "member": "disk100"}),
    );
    assert!(!status_ok(&r), "{r:?}");
    let r = k.manage(
        OP_FAIL,
        serde_json::json!({"name": "boot", "member": "disk101"}),
    );
    assert!(status_ok(&r), "{r:?}");
    assert_eq!(
        k.driver.arrays().get(array_id).unwrap().health(),
        Health::Degraded
    );
    let r = k.manage(
        OP_ADD,
        serde_json::json!({"name": "boot", "member": "nowhere"}),
    );
    assert!(!status_ok(&r), "{r:?}");
    let r = k.manage(
        OP_ADD,
        serde_json::json!({"name": "boot", "member": "disk102"}),
    );
    assert!(status_ok(&r), "{r:?}");
    k.pump();
    let array = k.driver.arrays().get(array_id).unwrap().clone();
    assert_eq!(array.health(), Health::Optimal);
    assert_eq!(array.slots()[1].as_ref().unwrap().name, "disk102");
    // The rebuilt copy alone serves the data.
    let a = array.clone();
    let exec = k.driver.executor().clone();
    exec.spawn_detached(async move {
        a.fail_member(0).await.unwrap();
    });
    k.pump();
    let r = k.io(IoRequest::read(array_id, 0, 64));
    assert_eq!(r.data, data);
}

/// `Init` may arrive while the superblocks of disks offered before it are still being read
/// (the member drivers answer later): the array must wait for them and start whole, not
/// degraded with the members read so far.
#[test]
fn init_before_the_probes_finish_does_not_start_an_array_degraded() {
    let disks = make_members(Level::Raid5, None, 4);
    let mut k = Kernel::new();
    let mut wire = k.plug_frames(&disks);
    wire.extend(k.encoded(Message::Init).1);
    // Every frame at once, before any member request is answered.
    assert_eq!(k.driver.handle_bytes(&wire), wire.len());
    k.pump();
    assert_eq!(k.driver.arrays().len(), 1);
    assert_eq!(
        k.driver.arrays().get(ARRAY_ID_BASE).unwrap().health(),
        Health::Optimal
    );
}

/// A disk pulled while the driver waits for its answers: its driver is gone and never
/// answers, so the requests in flight fail at once and the array goes on degraded; the
/// write in flight completes and reads back.
#[test]
fn requests_in_flight_to_a_pulled_disk_fail_at_once() {
    use orion_driver::{DeviceInfo, HotplugEvent};
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::boot(&disks);
    k.answer_unplugged = false;
    let data = vec![0x3cu8; 64 * 512];
    let (write_seq, mut wire) = k.encoded(Message::IoRequest(IoRequest::write(
        ARRAY_ID_BASE,
        8,
        data.clone(),
        IoFlags::empty(),
    )));
    // The write's member requests are out; the disk is pulled before any is answered.
    let capacity = disks[1].capacity_sectors();
    let device = DeviceInfo::block(101, "ram101", 512, capacity).unwrap();
    let (unplug_seq, unplug) = k.encoded(Message::Hotplug {
        event: HotplugEvent::Removed,
        device,
    });
    wire.extend(unplug);
    assert_eq!(k.driver.handle_bytes(&wire), wire.len());
    k.disks.remove(&101);
    k.pump();
    assert_eq!(k.replies.remove(&unplug_seq), Some(Message::Ack));
    match k.replies.remove(&write_seq) {
        Some(Message::IoResponse(r)) => assert_eq!(r.status, Ok(())),
        other => panic!("the write did not complete: {other:?}"),
    }
    let r = k.io(IoRequest::read(ARRAY_ID_BASE, 8, 64));
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data, data);
    assert_eq!(
        k.driver.arrays().get(ARRAY_ID_BASE).unwrap().health(),
        Health::Degraded
    );
}

/// More block requests at once than the driver takes: the excess is answered `Busy` at
/// once, every accepted one completes, and the driver takes requests again afterwards.
#[test]
fn a_flood_of_requests_is_answered_busy_beyond_the_cap() {
    use orion_raid::driver::MAX_CLIENT_REQUESTS;
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::boot(&disks);
    let total = MAX_CLIENT_REQUESTS as usize + 40;
    let sequences = send_writes(&mut k, total, 8, |i| i as u8);
    k.pump();
    let mut busy = Vec::new();
    for (i, s) in sequences.iter().enumerate() {
        match k.replies.remove(s) {
            Some(Message::IoResponse(r)) if r.status == Ok(()) => {}
            Some(Message::IoResponse(r)) if r.status == Err(DriverError::Busy) => busy.push(i),
            other => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(busy.len(), 40, "{busy:?}");
    assert_eq!(k.driver.stats().busy_replies, 40);
    // Accepted writes landed; refused ones changed nothing; new requests are taken.
    for i in [0usize, MAX_CLIENT_REQUESTS as usize - 1] {
        let r = k.io(IoRequest::read(ARRAY_ID_BASE, (i * 8) as u64, 8));
        assert_eq!(r.data, vec![i as u8; 4096]);
    }
    for &i in &busy {
        let r = k.io(IoRequest::read(ARRAY_ID_BASE, (i * 8) as u64, 8));
        assert_eq!(r.data, vec![0u8; 4096], "refused write {i} landed");
    }
}

/// A member disk's interrupt makes the driver check it: a disk that still reads is left
/// alone; one that no longer answers is failed in its array (which goes on degraded); an
/// irq no disk has is an error.
#[test]
fn an_attention_interrupt_checks_the_disk_and_fails_it_if_it_cannot_read() {
    use orion_driver::DeviceInfo;
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::new();
    for (i, d) in disks.iter().enumerate() {
        let id = 100 + i as u32;
        k.disks.insert(id, kernel::RamDriver(d.clone()));
        let mut info =
            DeviceInfo::block(id, &format!("ram{id}"), 512, d.capacity_sectors()).unwrap();
        info.irq = Some(40 + i as u32);
        let reply = k.send(Message::Hotplug {
            event: orion_driver::HotplugEvent::Added,
            device: info,
        });
        assert_eq!(reply, Message::Ack);
    }
    assert_eq!(k.send(Message::Init), Message::Ack);
    let health = |k: &Kernel| k.driver.arrays().get(ARRAY_ID_BASE).unwrap().health();
    assert_eq!(health(&k), Health::Optimal);
    let irq = |k: &mut Kernel, irq: u32| {
        k.send(Message::Interrupt {
            irq,
            timestamp_ns: 1,
        })
    };
    assert_eq!(irq(&mut k, 40), Message::Ack);
    assert_eq!(health(&k), Health::Optimal, "a disk that reads stays in");
    assert!(matches!(irq(&mut k, 99), Message::Error(_)));
    // Disk 101's unit stops answering reads, then raises its interrupt.
    k.disks.remove(&101);
    assert_eq!(irq(&mut k, 41), Message::Ack);
    assert_eq!(health(&k), Health::Degraded);
    let r = k.io(IoRequest::read(ARRAY_ID_BASE, 0, 8));
    assert_eq!(r.status, Ok(()));
}

/// Probes that finish while an earlier probe's discovery is still assembling the array must
/// not assemble the same disks again (found by `orion-sim`: three arrays were served from
/// one RAID1's members, each writing their superblocks, after the disks were probed without
/// waiting for each other).
#[test]
fn probes_finishing_during_an_assembly_do_not_start_the_array_twice() {
    let mut disks = make_members(Level::Raid1, None, 3);
    // Blank disks: their probes (superblock, then pool label) finish after the members'.
    disks.push(Rc::new(MemoryDisk::new(32 * 2048)));
    disks.push(Rc::new(MemoryDisk::new(32 * 2048)));
    let mut k = Kernel::new();
    let wire = k.plug_frames(&disks);
    assert_eq!(k.driver.handle_bytes(&wire), wire.len());
    k.pump();
    assert_eq!(k.send(Message::Init), Message::Ack);
    let names: Vec<String> = k.status().arrays.iter().map(|a| a.name.clone()).collect();
    assert_eq!(names, ["boot"], "one array from one set of members");
    assert_eq!(
        k.driver.arrays().get(ARRAY_ID_BASE).unwrap().health(),
        Health::Optimal
    );
}

/// A disk that comes back while its array runs without it (pulled and plugged in again, or
/// late at boot after the array started degraded) is a stale member of that array, not the
/// start of a second one: it stays free for `raid add` (found by `orion-sim`: a RAID1
/// member pulled and plugged back was served as a second, diverging copy of the array).
#[test]
fn a_returning_member_of_a_running_array_does_not_start_a_second_copy() {
    use orion_raid::manage::{OP_ADD, OP_REMOVE};
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::boot(&disks);
    // After Init an array may start degraded: a lone member of it could, too.
    assert_eq!(k.send(Message::Init), Message::Ack);
    assert_eq!(k.driver.arrays().len(), 1);
    let data = vec![0x3cu8; 16 * 512];
    let r = k.io(IoRequest::write(
        ARRAY_ID_BASE,
        8,
        data.clone(),
        IoFlags::empty(),
    ));
    assert_eq!(r.status, Ok(()));
    k.unplug(101);
    let r = k.io(IoRequest::write(
        ARRAY_ID_BASE,
        8,
        vec![0x4du8; 16 * 512],
        IoFlags::empty(),
    ));
    assert_eq!(r.status, Ok(()));
    // Back, as it was: it holds the data of before the second write.
    k.plug(102, &disks[1]);
    let names: Vec<String> = k.status().arrays.iter().map(|a| a.name.clone()).collect();
    assert_eq!(names, ["boot"]);
    // Free for the administrator to add back once the failed member is removed: it is
    // rebuilt.
    k.manage_ok(
        OP_REMOVE,
        serde_json::json!({"name": "boot", "member": "disk101"}),
    );
    k.manage_ok(
        OP_ADD,
        serde_json::json!({"name": "boot", "member": "disk102"}),
    );
    k.pump();
    assert_eq!(
        k.driver.arrays().get(ARRAY_ID_BASE).unwrap().health(),
        Health::Optimal
    );
    let a = k.driver.arrays().get(ARRAY_ID_BASE).unwrap().clone();
    let exec = k.driver.executor().clone();
    exec.spawn_detached(async move {
        a.fail_member(0).await.unwrap();
    });
    k.pump();
    let r = k.io(IoRequest::read(ARRAY_ID_BASE, 8, 16));
    assert!(r.data.iter().all(|&b| b == 0x4d), "the rebuilt copy serves");
}

/// A flood of writes spread over many members: the member requests in flight never pass
/// the port's cap (the rest wait for a place instead of failing), and every write lands.
#[test]
fn member_requests_in_flight_stay_within_the_cap_under_a_flood() {
    use orion_raid::driver::MAX_CLIENT_REQUESTS;
    use orion_raid::driver::ipc_member::{MAX_DEVICE_REQUESTS, MAX_MEMBER_REQUESTS};
    let members = 8;
    // Enough demand to fill every device's queue, and more than the port takes.
    assert!(members * MAX_DEVICE_REQUESTS > MAX_MEMBER_REQUESTS);
    let disks = make_members(Level::Raid0, None, members);
    let mut k = Kernel::boot(&disks);
    let total = MAX_CLIENT_REQUESTS as usize;
    // One 4 KiB write per 128-sector chunk: consecutive writes go to consecutive members.
    let sequences = send_writes(&mut k, total, 128, |i| i as u8 | 1);
    assert_eq!(k.driver.member_requests_in_flight(), MAX_MEMBER_REQUESTS);
    k.pump();
    assert_eq!(k.driver.member_requests_peak(), MAX_MEMBER_REQUESTS);
    assert_eq!(k.driver.member_requests_in_flight(), 0);
    for (i, s) in sequences.iter().enumerate() {
        match k.replies.remove(s) {
            Some(Message::IoResponse(r)) => assert_eq!(r.status, Ok(()), "write {i}"),
            other => panic!("write {i}: {other:?}"),
        }
    }
    assert_eq!(k.driver.stats().busy_replies, 0);
    for i in [0usize, 1, members, total - 1] {
        let r = k.io(IoRequest::read(ARRAY_ID_BASE, (i * 128) as u64, 8));
        assert_eq!(r.data, vec![i as u8 | 1; 4096], "write {i}");
    }
}

/// A disk pulled while more requests to it are queued than its driver may hold: the ones
/// sent and the ones still waiting for a place fail at once, the array goes on degraded,
/// and every write completes (nothing waits for answers that will never come).
#[test]
fn a_pulled_disk_fails_its_queued_requests_too_and_the_array_degrades() {
    use orion_driver::{DeviceInfo, HotplugEvent};
    use orion_raid::driver::ipc_member::MAX_DEVICE_REQUESTS;
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = Kernel::boot(&disks);
    k.answer_unplugged = false;
    let writes = MAX_DEVICE_REQUESTS * 3;
    let sequences = send_writes(&mut k, writes, 8, |i| i as u8 | 0x80);
    // Each member holds as many as it may; the rest of the writes wait for places.
    assert_eq!(
        k.driver.member_requests_in_flight(),
        2 * MAX_DEVICE_REQUESTS
    );
    let capacity = disks[1].capacity_sectors();
    let device = DeviceInfo::block(101, "ram101", 512, capacity).unwrap();
    let (unplug_seq, unplug) = k.encoded(Message::Hotplug {
        event: HotplugEvent::Removed,
        device,
    });
    k.disks.remove(&101);
    assert_eq!(k.driver.handle_bytes(&unplug), unplug.len());
    // At once: before any member answers, nothing of device 101 is pending any more.
    assert_eq!(k.driver.member_requests_in_flight(), MAX_DEVICE_REQUESTS);
    k.pump();
    assert_eq!(k.replies.remove(&unplug_seq), Some(Message::Ack));
    for (i, s) in sequences.iter().enumerate() {
        match k.replies.remove(s) {
            Some(Message::IoResponse(r)) => assert_eq!(r.status, Ok(()), "write {i}"),
            other => panic!("write {i} did not complete: {other:?}"),
        }
    }
    assert_eq!(k.driver.member_requests_in_flight(), 0);
    assert_eq!(
        k.driver.arrays().get(ARRAY_ID_BASE).unwrap().health(),
        Health::Degraded
    );
    for i in [0usize, writes - 1] {
        let r = k.io(IoRequest::read(ARRAY_ID_BASE, (i * 8) as u64, 8));
        assert_eq!(r.data, vec![i as u8 | 0x80; 4096], "write {i}");
    }
}

/// Sends `count` 4 KiB writes in one burst of frames (the driver reads them all before
/// anything is answered): write `i` at sector `i * stride`, every byte `fill(i)`. Returns
/// their sequences in order.
fn send_writes(
    k: &mut Kernel,
    count: usize,
    stride: usize,
    fill: impl Fn(usize) -> u8,
) -> Vec<u64> {
    let mut wire = Vec::new();
    let mut sequences = Vec::new();
    for i in 0..count {
        let (sequence, frame) = k.encoded(Message::IoRequest(IoRequest::write(
            ARRAY_ID_BASE,
            (i * stride) as u64,
            vec![fill(i); 4096],
            IoFlags::empty(),
        )));
        sequences.push(sequence);
        wire.extend(frame);
    }
    assert_eq!(k.driver.handle_bytes(&wire), wire.len());
    sequences
}
