//! The driver as Orion runs it: a simulated kernel offers member disks (RAM-disk drivers that
//! answer over IPC frames), the RAID driver discovers the array on them, and the storage
//! service's encoded `IoRequest` frames are served and answered.

use std::collections::BTreeMap;
use std::rc::Rc;

use orion_driver::{
    BlockDriver, DeviceInfo, DriverError, Frame, HotplugEvent, IoFlags, IoOp, IoRequest,
    IoResponse, Message, ShutdownReason, encode, serve_io,
};
use orion_raid::array::Health;
use orion_raid::array::assemble::{CreateOptions, create};
use orion_raid::block::BlockDevice;
use orion_raid::driver::{ARRAY_ID_BASE, RaidDriver};
use orion_raid::executor::Executor;
use orion_raid::metadata::Level;
use orion_raid::platform::memory::MemoryDisk;

/// A disk driver over a memory disk, as the kernel's block driver would serve it.
struct RamDriver(Rc<MemoryDisk>);

impl BlockDriver for RamDriver {
    fn block_size(&self) -> u32 {
        512
    }
    fn capacity_blocks(&self) -> u64 {
        self.0.capacity_sectors()
    }
    fn read_blocks(&mut self, lba: u64, _count: u32, buf: &mut [u8]) -> Result<(), DriverError> {
        self.0.read_at(lba, buf).map_err(|_| DriverError::Io)
    }
    fn write_blocks(
        &mut self,
        lba: u64,
        _count: u32,
        buf: &[u8],
        _fua: bool,
    ) -> Result<(), DriverError> {
        self.0.write_at(lba, buf).map_err(|_| DriverError::Io)
    }
    fn flush(&mut self) -> Result<(), DriverError> {
        Ok(())
    }
}

struct Kernel {
    driver: RaidDriver,
    disks: BTreeMap<u32, RamDriver>,
    /// Replies the driver sent to requests of the storage service, by sequence.
    replies: BTreeMap<u64, Message>,
    /// Member requests answered so far.
    member_requests: usize,
}

impl Kernel {
    /// Delivers frames until the driver is quiet: member requests are served by the RAM
    /// drivers, replies are collected.
    fn pump(&mut self) {
        loop {
            self.driver.poll();
            let out = self.driver.take_outgoing();
            if out.is_empty() {
                break;
            }
            for frame in out {
                match frame.message {
                    Message::IoRequest(req) => {
                        self.member_requests += 1;
                        let response = match self.disks.get_mut(&req.device_id) {
                            Some(disk) => serve_io(disk, &req),
                            None => IoResponse::err(DriverError::NotFound),
                        };
                        // Through the codec both ways, as over a real channel.
                        let bytes = encode(&Frame {
                            sequence: frame.sequence,
                            message: Message::IoResponse(response),
                        })
                        .unwrap();
                        assert_eq!(self.driver.handle_bytes(&bytes), bytes.len());
                    }
                    other => {
                        self.replies.insert(frame.sequence, other);
                    }
                }
            }
        }
    }

    fn send(&mut self, sequence: u64, message: Message) -> Message {
        let bytes = encode(&Frame { sequence, message }).unwrap();
        assert_eq!(self.driver.handle_bytes(&bytes), bytes.len());
        self.pump();
        self.replies
            .remove(&sequence)
            .unwrap_or_else(|| panic!("no reply to request {sequence}"))
    }

    fn io(&mut self, sequence: u64, request: IoRequest) -> IoResponse {
        match self.send(sequence, Message::IoRequest(request)) {
            Message::IoResponse(r) => r,
            other => panic!("expected an IoResponse, got {other:?}"),
        }
    }
}

fn make_members(level: Level, layout: Option<&str>, count: usize) -> Vec<Rc<MemoryDisk>> {
    let exec = Executor::new();
    let disks: Vec<Rc<MemoryDisk>> = (0..count)
        .map(|_| Rc::new(MemoryDisk::new(32 * 2048)))
        .collect();
    let members: Vec<(String, Rc<dyn BlockDevice>)> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("d{i}"), d.clone() as Rc<dyn BlockDevice>))
        .collect();
    let opts = CreateOptions {
        level,
        layout: layout.map(str::to_string),
        chunk_sectors: 128,
        name: "boot".into(),
        uuid: [7; 16],
        time_s: 1_700_000_000,
        entropy: 1,
        assume_clean: true,
    };
    let e = exec.clone();
    exec.block_on(async move {
        let array = create(&e, members, &opts).await.unwrap();
        array.mark_clean().await.unwrap();
    })
    .unwrap();
    disks
}

fn boot(disks: &[Rc<MemoryDisk>]) -> Kernel {
    let mut k = Kernel {
        driver: RaidDriver::new(Executor::new()),
        disks: BTreeMap::new(),
        replies: BTreeMap::new(),
        member_requests: 0,
    };
    for (i, d) in disks.iter().enumerate() {
        let id = 100 + i as u32;
        k.disks.insert(id, RamDriver(d.clone()));
        let info = DeviceInfo::block(id, &format!("ram{i}"), 512, d.capacity_sectors()).unwrap();
        let reply = k.send(
            i as u64 + 1,
            Message::Hotplug {
                event: HotplugEvent::Added,
                device: info,
            },
        );
        assert_eq!(reply, Message::Ack);
    }
    k
}

#[test]
fn discovers_array_on_hotplugged_disks_and_serves_io() {
    let disks = make_members(Level::Raid10, Some("n2"), 4);
    let mut k = boot(&disks);
    // All four members arrived: the array starts without waiting for Init.
    assert_eq!(k.driver.arrays().len(), 1);
    let array_id = ARRAY_ID_BASE;
    assert!(k.member_requests >= 4, "superblocks were read over IPC");

    let data: Vec<u8> = (0..64 * 512).map(|i| (i * 7 % 251) as u8).collect();
    let w = k.io(
        10,
        IoRequest::write(array_id, 1000, data.clone(), IoFlags::FUA),
    );
    assert_eq!(w.status, Ok(()));
    let r = k.io(11, IoRequest::read(array_id, 1000, 64));
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
    assert_eq!(k.io(12, IoRequest::flush(array_id)).status, Ok(()));
    let zero = IoRequest {
        device_id: array_id,
        op: IoOp::WriteZeroes,
        flags: IoFlags::empty(),
        sector: 1008,
        sector_count: 8,
        data: Vec::new(),
    };
    assert_eq!(k.io(13, zero).status, Ok(()));
    let r = k.io(14, IoRequest::read(array_id, 1000, 16));
    assert_eq!(&r.data[..8 * 512], &data[..8 * 512]);
    assert!(r.data[8 * 512..].iter().all(|&x| x == 0));
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let disks = make_members(Level::Raid1, None, 2);
    let mut k = boot(&disks);
    let array_id = ARRAY_ID_BASE;
    let cap = k.driver.arrays().get(array_id).unwrap().capacity_sectors();

    let before: Vec<u8> = {
        let mut b = vec![0u8; 4096];
        disks[0].read_at(0, &mut b).unwrap();
        b
    };
    // Unknown device.
    let r = k.io(20, IoRequest::read(array_id + 5, 0, 1));
    assert_eq!(r.status, Err(DriverError::NotFound));
    // Past the end.
    let r = k.io(21, IoRequest::read(array_id, cap - 1, 2));
    assert_eq!(r.status, Err(DriverError::OutOfRange));
    let r = k.io(
        22,
        IoRequest::write(array_id, cap, vec![1u8; 512], IoFlags::empty()),
    );
    assert_eq!(r.status, Err(DriverError::OutOfRange));
    // A corrupted frame: answered with an error, the stream continues.
    let mut bytes = encode(&Frame {
        sequence: 23,
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
        sequence: 24,
        message: Message::IoRequest(IoRequest::read(array_id, 0, 1)),
    })
    .unwrap();
    bytes.extend_from_slice(&good);
    assert_eq!(k.driver.handle_bytes(&bytes), bytes.len());
    k.pump();
    assert!(matches!(k.replies.remove(&23), Some(Message::Error(_))));
    match k.replies.remove(&24) {
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
    let mut k = boot(&disks);
    let array_id = ARRAY_ID_BASE;
    let data = vec![0x5au8; 8 * 512];
    assert_eq!(
        k.io(
            30,
            IoRequest::write(array_id, 64, data.clone(), IoFlags::empty())
        )
        .status,
        Ok(())
    );
    let info = DeviceInfo::block(101, "ram1", 512, disks[1].capacity_sectors()).unwrap();
    let reply = k.send(
        31,
        Message::Hotplug {
            event: HotplugEvent::Removed,
            device: info,
        },
    );
    assert_eq!(reply, Message::Ack);
    k.disks.remove(&101);
    assert_eq!(
        k.driver.arrays().get(array_id).unwrap().health(),
        Health::Degraded
    );
    let r = k.io(32, IoRequest::read(array_id, 64, 8));
    assert_eq!(r.data, data);
    let reply = k.send(
        33,
        Message::Shutdown {
            reason: ShutdownReason::PowerOff,
        },
    );
    assert_eq!(reply, Message::Ack);
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
    let mut k = boot(&disks[..1]);
    assert_eq!(
        k.driver.arrays().len(),
        0,
        "one of two members: wait for the rest"
    );
    assert_eq!(k.send(40, Message::Init), Message::Ack);
    assert_eq!(k.driver.arrays().len(), 1, "after Init it starts degraded");
    let arrays = k.driver.arrays();
    assert_eq!(
        arrays.get(ARRAY_ID_BASE).unwrap().health(),
        Health::Degraded
    );
}

fn manage(k: &mut Kernel, sequence: u64, opcode: u16, payload: serde_json::Value) -> Message {
    k.send(
        sequence,
        Message::ManagementRequest(orion_driver::ManagementRequest {
            opcode,
            payload: serde_json::to_vec(&payload).unwrap(),
        }),
    )
}

fn status_ok(reply: &Message) -> bool {
    matches!(reply, Message::ManagementResponse(r) if r.status.is_ok())
}

#[test]
fn member_commands_fail_add_rebuild_and_set_over_ipc() {
    use orion_raid::manage::{OP_ADD, OP_FAIL, OP_REMOVE, OP_SET};
    let mut disks = make_members(Level::Raid1, None, 2);
    // A blank disk the kernel offers too: free, usable as a spare.
    disks.push(Rc::new(MemoryDisk::new(32 * 2048)));
    let mut k = boot(&disks);
    let array_id = ARRAY_ID_BASE;
    let data = vec![0x6bu8; 64 * 512];
    assert_eq!(
        k.io(
            41,
            IoRequest::write(array_id, 0, data.clone(), IoFlags::empty())
        )
        .status,
        Ok(())
    );
    // Bad settings change nothing.
    let r = manage(
        &mut k,
        42,
        OP_SET,
        serde_json::json!({"name": "boot", "key": "colour", "value": "red"}),
    );
    assert!(!status_ok(&r), "{r:?}");
    let r = manage(
        &mut k,
        43,
        OP_SET,
        serde_json::json!({"name": "boot", "key": "rebuild_priority", "value": "high"}),
    );
    assert!(status_ok(&r), "{r:?}");
    // In use: not removable.
    let r = manage(
        &mut k,
        44,
        OP_REMOVE,
        serde_json::json!({"name": "boot", "member": "disk100"}),
    );
    assert!(!status_ok(&r), "{r:?}");
    let r = manage(
        &mut k,
        45,
        OP_FAIL,
        serde_json::json!({"name": "boot", "member": "disk101"}),
    );
    assert!(status_ok(&r), "{r:?}");
    assert_eq!(
        k.driver.arrays().get(array_id).unwrap().health(),
        Health::Degraded
    );
    let r = manage(
        &mut k,
        46,
        OP_ADD,
        serde_json::json!({"name": "boot", "member": "nowhere"}),
    );
    assert!(!status_ok(&r), "{r:?}");
    let r = manage(
        &mut k,
        47,
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
    let r = k.io(48, IoRequest::read(array_id, 0, 64));
    assert_eq!(r.data, data);
}
