//! What a user sets survives a restart of `raid serve`: `raid set` policies (and the stripe
//! cache size), shared-pool spares, and a check stopped in the middle, which resumes from its
//! checkpoint. A corrupted extension record gives the defaults, never a failed start. The
//! members stay valid md members for `mdadm --examine`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use orion_raid::metadata::Superblock;
use orion_raid::metadata::extension::{EXTENSION_BYTES, extension_sector};

mod common;
use common::{Server, have, ok, qemu_io, raid, text_of};

fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orion-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn status(dir: &Path) -> serde_json::Value {
    let text = ok(&raid(&["status", "--json", "--control", "ctl.sock"], dir));
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    v["arrays"][0].clone()
}

fn detail(dir: &Path, name: &str) -> serde_json::Value {
    let text = ok(&raid(
        &["detail", name, "--json", "--control", "ctl.sock"],
        dir,
    ));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn setting(d: &serde_json::Value, key: &str) -> String {
    d["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv[0] == key)
        .unwrap_or_else(|| panic!("no {key} in {d}"))[1]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_for(dir: &Path, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = status(dir);
        if done(&a) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn superblock_of(path: &Path) -> Superblock {
    let bytes = std::fs::read(path).unwrap();
    Superblock::decode(&bytes[4096..8192]).unwrap()
}

fn sparse(dir: &Path, name: &str, bytes: u64) {
    std::fs::File::create(dir.join(name))
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

#[test]
fn settings_and_pool_spares_survive_a_restart() {
    let dir = test_dir("settings");
    let members = ["m0.img", "m1.img", "m2.img", "m3.img"];
    let mut args = vec![
        "create", "--level", "5", "--chunk", "64K", "--size", "32M", "--name", "a",
    ];
    args.extend(members);
    ok(&raid(&args, &dir));
    sparse(&dir, "p.img", 32 << 20);

    let server = Server::start(&dir, &members);
    ok(&raid(
        &[
            "set",
            "a",
            "rebuild_priority=high",
            "spare_policy=shared",
            "read_error_limit=7",
            "io_timeout_ms=5000",
            "stripe_cache=32M",
            "--control",
            "ctl.sock",
        ],
        &dir,
    ));
    ok(&raid(
        &["add", "--pool", "p.img", "--control", "ctl.sock"],
        &dir,
    ));
    server.stop();

    // Linux still reads every member; the pool spare carries no md superblock.
    if have("mdadm") {
        for m in members {
            let out = Command::new("mdadm")
                .args(["--examine", m])
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mdadm --examine {m}: {}",
                text_of(&out)
            );
        }
        let out = Command::new("mdadm")
            .args(["--examine", "p.img"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", text_of(&out));
    }

    let mut all = members.to_vec();
    all.push("p.img");
    let server = Server::start(&dir, &all);
    let d = detail(&dir, "a");
    assert_eq!(setting(&d, "rebuild_priority"), "high", "{d}");
    assert_eq!(setting(&d, "spare_policy"), "shared", "{d}");
    assert_eq!(setting(&d, "read_error_limit"), "7", "{d}");
    assert_eq!(setting(&d, "io_timeout_ms"), "5000", "{d}");
    assert_eq!(setting(&d, "stripe_cache"), "32M", "{d}");
    // p.img came back as a pool spare, not as a member: a failure draws it.
    assert_eq!(status(&dir)["members"].as_array().unwrap().len(), 4);
    ok(&raid(
        &["fail", "a", "m1.img", "--control", "ctl.sock"],
        &dir,
    ));
    wait_for(&dir, "rebuild onto the pool spare", |a| {
        a["state"] == "optimal"
            && a["job"].is_null()
            && a["members"][1]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("p.img"))
    });
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stopped_check_resumes_and_counts_right() {
    if !have("qemu-io") {
        eprintln!("notice: qemu-io not installed, skipping");
        return;
    }
    let dir = test_dir("check");
    ok(&raid(
        &[
            "create", "--level", "1", "--size", "64M", "--name", "a", "m0.img", "m1.img",
        ],
        &dir,
    ));
    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    qemu_io(&server.uri(""), &["write -P 0x5a 0 60M".to_string()]);
    server.stop();
    // Four 4 KiB units of the second copy differ: two early, two late.
    let data_offset = superblock_of(&dir.join("m1.img")).data_offset_sectors * 512;
    let mut image = std::fs::read(dir.join("m1.img")).unwrap();
    for at in [1u64 << 20, 5 << 20, 50 << 20, 58 << 20] {
        image[(data_offset + at) as usize + 7] ^= 0xff;
    }
    std::fs::write(dir.join("m1.img"), &image).unwrap();

    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    // Slow enough to stop in the middle: 8 MB/s over 64 MiB.
    ok(&raid(
        &["set", "a", "rebuild_rate_mb_s=8", "--control", "ctl.sock"],
        &dir,
    ));
    ok(&raid(&["check", "a", "--control", "ctl.sock"], &dir));
    wait_for(&dir, "the check to pass a quarter", |a| {
        a["job"]["progress"].as_f64().unwrap_or(0.0) > 0.25
    });
    server.stop();

    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    let a = status(&dir);
    assert_eq!(a["job"]["kind"], "check", "resumed by itself: {a}");
    assert!(
        a["job"]["progress"].as_f64().unwrap() > 0.2,
        "not from zero: {a}"
    );
    ok(&raid(
        &["set", "a", "rebuild_rate_mb_s=0", "--control", "ctl.sock"],
        &dir,
    ));
    wait_for(&dir, "the check to finish", |a| a["job"].is_null());
    let d = detail(&dir, "a");
    assert_eq!(d["scrub"]["outcome"], "finished", "{d}");
    assert_eq!(d["scrub"]["mismatched_sectors"], 4 * 8, "{d}");
    server.stop();

    // A cancelled check does not come back.
    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    ok(&raid(
        &["set", "a", "rebuild_rate_mb_s=8", "--control", "ctl.sock"],
        &dir,
    ));
    ok(&raid(&["check", "a", "--control", "ctl.sock"], &dir));
    wait_for(&dir, "the check to start", |a| !a["job"].is_null());
    ok(&raid(
        &["check", "a", "--cancel", "--control", "ctl.sock"],
        &dir,
    ));
    wait_for(&dir, "the check to stop", |a| a["job"].is_null());
    server.stop();
    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(status(&dir)["job"].is_null());
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_record_gives_defaults_and_the_array_starts() {
    let dir = test_dir("corrupt");
    ok(&raid(
        &[
            "create",
            "--level",
            "1",
            "--size",
            "16M",
            "--name",
            "a",
            "--stripe-cache",
            "8M",
            "m0.img",
            "m1.img",
        ],
        &dir,
    ));
    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    assert_eq!(setting(&detail(&dir, "a"), "stripe_cache"), "8M");
    ok(&raid(
        &["set", "a", "rebuild_priority=low", "--control", "ctl.sock"],
        &dir,
    ));
    server.stop();
    for m in ["m0.img", "m1.img"] {
        let path = dir.join(m);
        let at = extension_sector(&superblock_of(&path)).unwrap() * 512;
        let mut image = std::fs::read(&path).unwrap();
        let record = &mut image[at as usize..at as usize + EXTENSION_BYTES];
        assert_eq!(&record[..8], b"ORIONEXT");
        record[60] ^= 0x10;
        std::fs::write(&path, &image).unwrap();
    }
    let server = Server::start(&dir, &["m0.img", "m1.img"]);
    let d = detail(&dir, "a");
    assert_eq!(d["state"], "optimal", "{d}");
    assert_eq!(setting(&d, "rebuild_priority"), "normal", "{d}");
    assert_eq!(setting(&d, "stripe_cache"), "16M", "{d}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

// The Orion driver: a simulated kernel offers RAM disks over IPC (as tests/driver_ipc.rs);
// after a driver restart (a new driver over the same disks) the settings and the pool are
// back.
mod driver {
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use orion_driver::{
        BlockDriver, DeviceInfo, DriverError, Frame, HotplugEvent, IoResponse, Message,
        ShutdownReason, encode, serve_io,
    };
    use orion_raid::array::Health;
    use orion_raid::array::assemble::{CreateOptions, create};
    use orion_raid::block::BlockDevice;
    use orion_raid::driver::{ARRAY_ID_BASE, RaidDriver};
    use orion_raid::executor::Executor;
    use orion_raid::manage::{OP_ADD, OP_FAIL, OP_SET};
    use orion_raid::metadata::Level;
    use orion_raid::platform::memory::MemoryDisk;

    struct RamDriver(Rc<MemoryDisk>);

    impl BlockDriver for RamDriver {
        fn block_size(&self) -> u32 {
            512
        }
        fn capacity_blocks(&self) -> u64 {
            self.0.capacity_sectors()
        }
        fn read_blocks(
            &mut self,
            lba: u64,
            _count: u32,
            buf: &mut [u8],
        ) -> Result<(), DriverError> {
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
        replies: BTreeMap<u64, Message>,
    }

    impl Kernel {
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
                            let response = match self.disks.get_mut(&req.device_id) {
                                Some(disk) => serve_io(disk, &req),
                                None => IoResponse::err(DriverError::NotFound),
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

        fn send(&mut self, sequence: u64, message: Message) -> Message {
            let bytes = encode(&Frame { sequence, message }).unwrap();
            assert_eq!(self.driver.handle_bytes(&bytes), bytes.len());
            self.pump();
            self.replies
                .remove(&sequence)
                .unwrap_or_else(|| panic!("no reply to request {sequence}"))
        }

        fn manage(&mut self, sequence: u64, opcode: u16, payload: serde_json::Value) {
            let reply = self.send(
                sequence,
                Message::ManagementRequest(orion_driver::ManagementRequest {
                    opcode,
                    payload: serde_json::to_vec(&payload).unwrap(),
                }),
            );
            assert!(
                matches!(&reply, Message::ManagementResponse(r) if r.status.is_ok()),
                "{reply:?}"
            );
        }
    }

    fn boot(disks: &[Rc<MemoryDisk>]) -> Kernel {
        let mut k = Kernel {
            driver: RaidDriver::new(Executor::new()),
            disks: BTreeMap::new(),
            replies: BTreeMap::new(),
        };
        for (i, d) in disks.iter().enumerate() {
            let id = 100 + i as u32;
            k.disks.insert(id, RamDriver(d.clone()));
            let info =
                DeviceInfo::block(id, &format!("ram{i}"), 512, d.capacity_sectors()).unwrap();
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

    fn shutdown(k: &mut Kernel) {
        let reply = k.send(
            999,
            Message::Shutdown {
                reason: ShutdownReason::PowerOff,
            },
        );
        assert_eq!(reply, Message::Ack);
    }

    #[test]
    fn settings_and_pool_survive_a_driver_restart() {
        let exec = Executor::new();
        let disks: Vec<Rc<MemoryDisk>> = (0..4)
            .map(|_| Rc::new(MemoryDisk::new(32 * 2048)))
            .collect();
        let members: Vec<(String, Rc<dyn BlockDevice>)> = disks[..3]
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("d{i}"), d.clone() as Rc<dyn BlockDevice>))
            .collect();
        let opts = CreateOptions {
            level: Level::Raid5,
            layout: None,
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

        // First boot: the blank fourth disk is free; give it to the pool, set policies.
        let mut k = boot(&disks);
        k.manage(10, OP_ADD, serde_json::json!({"member": "disk103"}));
        for (i, (key, value)) in [
            ("spare_policy", "shared"),
            ("rebuild_priority", "low"),
            ("stripe_cache", "4M"),
        ]
        .into_iter()
        .enumerate()
        {
            k.manage(
                11 + i as u64,
                OP_SET,
                serde_json::json!({"name": "boot", "key": key, "value": value}),
            );
        }
        shutdown(&mut k);

        // Second boot: the pool spare is recognised, the policies are back.
        let mut k = boot(&disks);
        assert_eq!(k.driver.disks().pool().len(), 1, "the pool spare is back");
        let array = k.driver.arrays().get(ARRAY_ID_BASE).unwrap().clone();
        assert_eq!(array.slots().len(), 3);
        let settings = array.settings();
        for (key, value) in [
            ("spare_policy", "shared"),
            ("rebuild_priority", "low"),
            ("stripe_cache", "4M"),
        ] {
            assert!(
                settings.iter().any(|(k, v)| k == key && v == value),
                "{key}: {settings:?}"
            );
        }
        k.manage(
            20,
            OP_FAIL,
            serde_json::json!({"name": "boot", "member": "disk101"}),
        );
        for _ in 0..1000 {
            if array.health() == Health::Optimal {
                break;
            }
            let deadline = k.driver.executor().next_deadline_ns();
            if let Some(d) = deadline {
                k.driver.executor().advance_to(d);
            }
            k.pump();
        }
        assert_eq!(array.health(), Health::Optimal);
        assert_eq!(array.slots()[1].as_ref().unwrap().name, "disk103");
        assert!(k.driver.disks().pool().is_empty());
    }
}
