//! The freestanding Orion driver (`cargo build --release --bin raid --no-default-features
//! --target-dir target/orion`) as a child process, with this test as its kernel: frames on
//! its stdin and stdout, RAM disks that answer its member requests, the storage service's
//! requests. The binary must be statically linked with no undefined symbol, boot, assemble
//! an array from hotplugged disks, serve I/O, answer a malformed frame with an error, and
//! stop cleanly on `Shutdown`.
//!
//! Without the binary the tests skip with a notice, except under CI (`CI=true`), where
//! `.ci/run` builds it first and its absence is a failure. `ORION_DRIVER` names another
//! binary.

#[path = "common/kernel.rs"]
mod kernel;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;

use kernel::{RamDriver, make_members};
use orion_driver::{
    DeviceInfo, DriverError, Frame, FrameError, HotplugEvent, IoFlags, IoRequest, IoResponse,
    ManagementRequest, Message, ShutdownReason, decode, encode, serve_io,
};
use orion_raid::block::BlockDevice;
use orion_raid::driver::ARRAY_ID_BASE;
use orion_raid::manage;
use orion_raid::metadata::Level;
use orion_raid::platform::memory::MemoryDisk;

fn driver_binary() -> Option<PathBuf> {
    let path = std::env::var_os("ORION_DRIVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/orion/release/raid"),
        PathBuf::from,
    );
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing; .ci/run must build the freestanding driver first",
        path.display()
    );
    eprintln!(
        "notice: {} not built (cargo build --release --bin raid --no-default-features \
         --target-dir target/orion); skipping",
        path.display()
    );
    None
}

/// The kernel side of the frame channel to a driver process.
struct ChildKernel {
    child: Child,
    to_driver: ChildStdin,
    from_driver: ChildStdout,
    received: Vec<u8>,
    disks: BTreeMap<u32, RamDriver>,
    next_sequence: u64,
}

impl ChildKernel {
    fn start(binary: &PathBuf) -> ChildKernel {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the driver");
        ChildKernel {
            to_driver: child.stdin.take().unwrap(),
            from_driver: child.stdout.take().unwrap(),
            child,
            received: Vec::new(),
            disks: BTreeMap::new(),
            next_sequence: 1,
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.to_driver.write_all(bytes).unwrap();
        self.to_driver.flush().unwrap();
    }

    /// The next frame from the driver (blocking).
    fn next_frame(&mut self) -> Frame {
        loop {
            match decode(&self.received) {
                Ok((frame, used)) => {
                    self.received.drain(..used);
                    return frame;
                }
                Err(FrameError::NeedMore { .. }) => {}
                Err(e) => panic!("the driver sent a bad frame: {e}"),
            }
            let mut chunk = vec![0u8; 1 << 16];
            let n = self.from_driver.read(&mut chunk).unwrap();
            assert!(
                n > 0,
                "the driver closed its channel: {}",
                self.stderr_now()
            );
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    fn stderr_now(&mut self) -> String {
        let _ = self.child.kill();
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }

    /// Sends `message` and returns the driver's reply, answering its member requests
    /// meanwhile as the disks' drivers would.
    fn send(&mut self, message: Message) -> Message {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.send_bytes(&encode(&Frame { sequence, message }).unwrap());
        self.reply_to(sequence)
    }

    fn reply_to(&mut self, sequence: u64) -> Message {
        loop {
            let frame = self.next_frame();
            match frame.message {
                Message::IoRequest(req) => {
                    let response = match self.disks.get_mut(&req.device_id) {
                        Some(disk) => serve_io(disk, &req),
                        None => IoResponse::err(DriverError::NotFound),
                    };
                    let bytes = encode(&Frame {
                        sequence: frame.sequence,
                        message: Message::IoResponse(response),
                    })
                    .unwrap();
                    self.send_bytes(&bytes);
                }
                other if frame.sequence == sequence => return other,
                other => panic!("unexpected frame {}: {other:?}", frame.sequence),
            }
        }
    }

    fn plug(&mut self, id: u32, disk: &Rc<MemoryDisk>) {
        self.disks.insert(id, RamDriver(disk.clone()));
        let info =
            DeviceInfo::block(id, &format!("ram{id}"), 512, disk.capacity_sectors()).unwrap();
        let reply = self.send(Message::Hotplug {
            event: HotplugEvent::Added,
            device: info,
        });
        assert_eq!(reply, Message::Ack);
    }

    fn status(&mut self) -> manage::StatusReport {
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

    fn io(&mut self, request: IoRequest) -> IoResponse {
        match self.send(Message::IoRequest(request)) {
            Message::IoResponse(r) => r,
            other => panic!("expected an IoResponse, got {other:?}"),
        }
    }

    /// `Shutdown`, then the process must end on its own with status 0; its log.
    fn shutdown(mut self) -> String {
        let reply = self.send(Message::Shutdown {
            reason: ShutdownReason::PowerOff,
        });
        assert_eq!(reply, Message::Ack);
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(status.success(), "the driver exited with {status}: {log}");
        log
    }
}

#[test]
fn the_binary_links_nothing_and_has_no_undefined_symbols() {
    let Some(binary) = driver_binary() else {
        return;
    };
    let elf = std::fs::read(&binary).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let tool = |name: &str| match Command::new(name)
        .arg(if name == "nm" { "-u" } else { "-d" })
        .arg(&binary)
        .output()
    {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name} is missing (binutils)"
            );
            eprintln!("notice: no {name}; not checked");
            None
        }
    };
    if let Some(text) = tool("readelf") {
        assert!(
            text.contains("There is no dynamic section"),
            "readelf -d: {text}"
        );
    }
    if let Some(text) = tool("nm") {
        assert!(text.trim().is_empty(), "undefined symbols: {text}");
    }
}

#[test]
fn boots_assembles_serves_io_and_shuts_down() {
    let Some(binary) = driver_binary() else {
        return;
    };
    let disks = make_members(Level::Raid5, None, 4);
    let mut k = ChildKernel::start(&binary);
    let info = DeviceInfo::block(1, "raid", 512, 0).unwrap();
    assert!(matches!(k.send(Message::Probe(info)), Message::Ack));
    for (i, d) in disks.iter().enumerate() {
        k.plug(100 + i as u32, d);
    }
    assert_eq!(k.send(Message::Init), Message::Ack);
    // Assembly reads the members over the channel after the hotplug is acknowledged: ask
    // until the array is up.
    let mut status = k.status();
    for _ in 0..500 {
        if !status.arrays.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        status = k.status();
    }
    assert_eq!(status.arrays.len(), 1, "{status:?}");
    assert_eq!(status.arrays[0].state, "optimal");
    // Writes and reads across stripes, then one past the end.
    let mut expect = Vec::new();
    for (n, sector) in [(64u32, 0u64), (200, 1000), (8, 77)] {
        let data: Vec<u8> = (0..n as usize * 512)
            .map(|i| (i as u64 * 31 + sector) as u8)
            .collect();
        let r = k.io(IoRequest::write(
            ARRAY_ID_BASE,
            sector,
            data.clone(),
            IoFlags::empty(),
        ));
        assert_eq!(r.status, Ok(()));
        expect.push((sector, data));
    }
    for (sector, data) in &expect {
        let r = k.io(IoRequest::read(
            ARRAY_ID_BASE,
            *sector,
            (data.len() / 512) as u32,
        ));
        assert_eq!(r.status, Ok(()));
        assert!(r.data == *data, "sector {sector} read back other data");
    }
    let capacity = status.arrays[0].size_bytes / 512;
    let r = k.io(IoRequest::read(ARRAY_ID_BASE, capacity, 1));
    assert_eq!(r.status, Err(DriverError::OutOfRange));
    // A frame with a bad checksum: answered with an error, and the driver goes on.
    let mut bad = encode(&Frame {
        sequence: 999,
        message: Message::Init,
    })
    .unwrap();
    bad[28] ^= 1;
    k.send_bytes(&bad);
    let good = k.send(Message::Init);
    assert_eq!(good, Message::Ack);
    let log = k.shutdown();
    assert!(log.contains("heap peak"), "{log}");
    // Stopped cleanly: every member says so.
    for d in &disks {
        let mut block = vec![0u8; 4096];
        d.read_at(8, &mut block).unwrap();
        let sb = orion_raid::metadata::Superblock::decode(&block).unwrap();
        assert!(sb.is_clean());
    }
}
