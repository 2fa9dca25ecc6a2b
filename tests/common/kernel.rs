//! A simulated Orion kernel for the driver tests (`tests/driver_ipc.rs`,
//! `tests/driver_nested.rs`, `tests/persist.rs`): RAM-disk block drivers that answer the RAID
//! driver's member requests over encoded IPC frames, hotplug, and the storage service's side
//! (requests in, replies collected by sequence).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::rc::Rc;

use orion_driver::{
    BlockDriver, DeviceInfo, DriverError, Frame, HotplugEvent, IoRequest, IoResponse,
    ManagementRequest, Message, ShutdownReason, encode, serve_io,
};
use orion_raid::array::assemble::{CreateOptions, create};
use orion_raid::block::BlockDevice;
use orion_raid::driver::RaidDriver;
use orion_raid::executor::Executor;
use orion_raid::manage;
use orion_raid::metadata::Level;
use orion_raid::platform::memory::MemoryDisk;

/// A disk driver over a memory disk, as the kernel's block driver would serve it.
pub struct RamDriver(pub Rc<MemoryDisk>);

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

pub struct Kernel {
    pub driver: RaidDriver,
    pub disks: BTreeMap<u32, RamDriver>,
    /// Replies the driver sent to requests of the storage service, by sequence.
    pub replies: BTreeMap<u64, Message>,
    /// Member requests answered so far.
    pub member_requests: usize,
    /// Whether a request to a device that is not plugged gets an answer (`NotFound`); a
    /// pulled disk's driver is gone and answers nothing.
    pub answer_unplugged: bool,
    next_sequence: u64,
}

impl Default for Kernel {
    fn default() -> Self {
        Self::new()
    }
}

impl Kernel {
    /// A kernel with a freshly loaded RAID driver and no disks yet.
    pub fn new() -> Self {
        Kernel {
            driver: RaidDriver::with_executor(Executor::new()),
            disks: BTreeMap::new(),
            replies: BTreeMap::new(),
            member_requests: 0,
            answer_unplugged: true,
            next_sequence: 1,
        }
    }

    /// The driver booting with `disks` already present: disk `i` is device `100 + i`.
    pub fn boot(disks: &[Rc<MemoryDisk>]) -> Self {
        let mut k = Kernel::new();
        for (i, d) in disks.iter().enumerate() {
            k.plug(100 + i as u32, d);
        }
        k
    }

    /// A sequence number no request has used yet.
    pub fn sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// Delivers frames until the driver is quiet: member requests are served by the RAM
    /// drivers through the codec both ways, as over a real channel; replies are collected.
    pub fn pump(&mut self) {
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
                            None if self.answer_unplugged => IoResponse::err(DriverError::NotFound),
                            None => continue,
                        };
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

    /// Sends one message from the storage service and returns the driver's reply.
    pub fn send(&mut self, message: Message) -> Message {
        let sequence = self.sequence();
        let bytes = encode(&Frame { sequence, message }).unwrap();
        assert_eq!(self.driver.handle_bytes(&bytes), bytes.len());
        self.pump();
        self.replies
            .remove(&sequence)
            .unwrap_or_else(|| panic!("no reply to request {sequence}"))
    }

    /// `message` encoded as a frame with a fresh sequence, not delivered: a test sends
    /// several at once through `driver.handle_bytes`.
    pub fn encoded(&mut self, message: Message) -> (u64, Vec<u8>) {
        let sequence = self.sequence();
        (sequence, encode(&Frame { sequence, message }).unwrap())
    }

    /// The hotplug frames offering `disks` as devices 100, 101, …, not delivered (their
    /// drivers are registered, so the driver's reads of them are answered once pumped).
    pub fn plug_frames(&mut self, disks: &[Rc<MemoryDisk>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let id = 100 + i as u32;
            self.disks.insert(id, RamDriver(d.clone()));
            let device =
                DeviceInfo::block(id, &format!("ram{id}"), 512, d.capacity_sectors()).unwrap();
            wire.extend(
                self.encoded(Message::Hotplug {
                    event: HotplugEvent::Added,
                    device,
                })
                .1,
            );
        }
        wire
    }

    /// Offers a disk to the driver as device `id`.
    pub fn plug(&mut self, id: u32, disk: &Rc<MemoryDisk>) {
        self.disks.insert(id, RamDriver(disk.clone()));
        let info =
            DeviceInfo::block(id, &format!("ram{id}"), 512, disk.capacity_sectors()).unwrap();
        let reply = self.send(Message::Hotplug {
            event: HotplugEvent::Added,
            device: info,
        });
        assert_eq!(reply, Message::Ack);
    }

    /// Takes device `id` away, as a pulled disk.
    pub fn unplug(&mut self, id: u32) {
        let capacity = self
            .disks
            .get(&id)
            .expect("a plugged disk")
            .0
            .capacity_sectors();
        let info = DeviceInfo::block(id, &format!("ram{id}"), 512, capacity).unwrap();
        let reply = self.send(Message::Hotplug {
            event: HotplugEvent::Removed,
            device: info,
        });
        assert_eq!(reply, Message::Ack);
        self.disks.remove(&id);
    }

    pub fn io(&mut self, request: IoRequest) -> IoResponse {
        match self.send(Message::IoRequest(request)) {
            Message::IoResponse(r) => r,
            other => panic!("expected an IoResponse, got {other:?}"),
        }
    }

    /// A management request with a JSON payload; the raw reply.
    pub fn manage(&mut self, opcode: u16, payload: serde_json::Value) -> Message {
        self.send(Message::ManagementRequest(ManagementRequest {
            opcode,
            payload: serde_json::to_vec(&payload).unwrap(),
        }))
    }

    /// A management request that must succeed.
    pub fn manage_ok(&mut self, opcode: u16, payload: serde_json::Value) {
        let reply = self.manage(opcode, payload);
        assert!(status_ok(&reply), "{reply:?}");
    }

    pub fn status(&mut self) -> manage::StatusReport {
        match self.send(Message::ManagementRequest(ManagementRequest {
            opcode: manage::OP_STATUS,
            payload: Vec::new(),
        })) {
            Message::ManagementResponse(r) => {
                assert_eq!(r.status, Ok(()));
                serde_json::from_slice(&r.payload).unwrap()
            }
            other => panic!("expected a ManagementResponse, got {other:?}"),
        }
    }

    pub fn shutdown(&mut self) {
        let reply = self.send(Message::Shutdown {
            reason: ShutdownReason::PowerOff,
        });
        assert_eq!(reply, Message::Ack);
    }

    pub fn id_of(&self, name: &str) -> u32 {
        self.driver
            .arrays()
            .find(name)
            .unwrap_or_else(|| panic!("no array {name}"))
            .0
    }
}

pub fn status_ok(reply: &Message) -> bool {
    matches!(reply, Message::ManagementResponse(r) if r.status.is_ok())
}

/// `count` 32 MiB memory disks holding a clean array named `boot` (128-sector chunks).
pub fn make_members(level: Level, layout: Option<&str>, count: usize) -> Vec<Rc<MemoryDisk>> {
    let disks: Vec<Rc<MemoryDisk>> = (0..count)
        .map(|_| Rc::new(MemoryDisk::new(32 * 2048)))
        .collect();
    create_clean(level, layout, &disks);
    disks
}

/// `disks` as the named members `d0`, `d1`, … that `create` takes.
pub fn named_members(disks: &[Rc<MemoryDisk>]) -> Vec<(String, Rc<dyn BlockDevice>)> {
    disks
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("d{i}"), d.clone() as Rc<dyn BlockDevice>))
        .collect()
}

/// Creates a clean array named `boot` (128-sector chunks) on `disks`.
pub fn create_clean(level: Level, layout: Option<&str>, disks: &[Rc<MemoryDisk>]) {
    let exec = Executor::new();
    let members = named_members(disks);
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
}
