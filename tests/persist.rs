//! What a user sets survives a restart of `raid serve`: `raid set` policies (and the stripe
//! cache size), shared-pool spares, and a check stopped in the middle, which resumes from its
//! checkpoint. A corrupted extension record gives the defaults, never a failed start. The
//! members stay valid md members for `mdadm --examine`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use orion_raid::metadata::extension::{EXTENSION_BYTES, extension_sector};

mod common;
#[path = "common/kernel.rs"]
mod kernel;
use common::{
    Server, first_array_status, have, ok, qemu_io, raid, status_json, superblock_of, test_dir,
    text_of, tool,
};

/// Paths of the shared spare pool, as `raid status --json` lists them.
fn pool_paths(dir: &Path) -> Vec<String> {
    status_json(dir)["pool"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect()
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
        let a = first_array_status(dir);
        if done(&a) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sparse(dir: &Path, name: &str, bytes: u64) {
    std::fs::File::create(dir.join(name))
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

#[test]
fn settings_and_pool_spares_survive_a_restart() {
    let dir = test_dir("persist-settings");
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
    assert_eq!(
        first_array_status(&dir)["members"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let pool = pool_paths(&dir);
    assert!(
        pool.len() == 1 && pool[0].ends_with("p.img"),
        "pool after restart: {pool:?}"
    );
    let text = ok(&raid(&["status", "--control", "ctl.sock"], &dir));
    assert!(text.contains("spare pool : "), "{text}");
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
    assert!(pool_paths(&dir).is_empty(), "the spare left the pool");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stopped_check_resumes_and_counts_right() {
    if !have("qemu-io") {
        eprintln!("notice: qemu-io not installed, skipping");
        return;
    }
    let dir = test_dir("persist-check");
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
    let a = first_array_status(&dir);
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
    assert!(first_array_status(&dir)["job"].is_null());
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_record_gives_defaults_and_the_array_starts() {
    let dir = test_dir("persist-corrupt");
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
    use std::rc::Rc;

    use orion_raid::array::Health;
    use orion_raid::driver::ARRAY_ID_BASE;
    use orion_raid::manage::{OP_ADD, OP_FAIL, OP_SET};
    use orion_raid::metadata::Level;
    use orion_raid::platform::memory::MemoryDisk;

    use crate::kernel::{Kernel, create_clean};

    #[test]
    fn settings_and_pool_survive_a_driver_restart() {
        let disks: Vec<Rc<MemoryDisk>> = (0..4)
            .map(|_| Rc::new(MemoryDisk::new(32 * 2048)))
            .collect();
        create_clean(Level::Raid5, None, &disks[..3]);

        // First boot: the blank fourth disk is free; give it to the pool, set policies.
        let mut k = Kernel::boot(&disks);
        k.manage_ok(OP_ADD, serde_json::json!({"member": "disk103"}));
        for (key, value) in [
            ("spare_policy", "shared"),
            ("rebuild_priority", "low"),
            ("stripe_cache", "4M"),
        ] {
            k.manage_ok(
                OP_SET,
                serde_json::json!({"name": "boot", "key": key, "value": value}),
            );
        }
        k.shutdown();

        // Second boot: the pool spare is recognised, the policies are back.
        let mut k = Kernel::boot(&disks);
        assert_eq!(
            k.driver.disk_manager().pool().len(),
            1,
            "the pool spare is back"
        );
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
        k.manage_ok(
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
        assert!(k.driver.disk_manager().pool().is_empty());
    }
}

/// `mem:` members serve with the stripe cache off (a cache of memory in memory only adds
/// copies), unless `--stripe-cache` asks for one or `raid set` turns it on; parity writes
/// stay correct without it.
#[test]
fn memory_members_serve_without_a_stripe_cache_unless_asked() {
    let dir = test_dir("persist-memcache");
    let create = ["--create", "--level", "5", "-N", "m", "--chunk", "64K"];
    let members = ["mem:16M", "mem:16M", "mem:16M", "mem:16M", "mem:16M"];
    let args: Vec<&str> = create.iter().chain(&members).copied().collect();
    let server = Server::start(&dir, &args);
    assert_eq!(setting(&detail(&dir, "m"), "stripe_cache"), "0");
    if tool("qemu-io").is_some() {
        // 4+1 with 64 KiB chunks: small writes are read-modify-writes (2 reads against 3);
        // the second and third cross a chunk boundary, the third in the second stripe.
        qemu_io(
            &server.uri(""),
            &[
                "write -P 0x41 0 4k",
                "write -P 0x42 60k 8k",
                "write -P 0x43 300k 40k",
                "write -P 0x44 4k 4k",
                "read -P 0x41 0 4k",
                "read -P 0x44 4k 4k",
                "read -P 0x42 60k 8k",
                "read -P 0x43 300k 40k",
            ],
        );
        // The parity those writes left agrees with the data.
        let out = ok(&raid(
            &["check", "m", "--wait", "--json", "--control", "ctl.sock"],
            &dir,
        ));
        let report: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(report["mismatched_sectors"], 0, "{report}");
    }
    ok(&raid(
        &["set", "m", "stripe_cache=16M", "--control", "ctl.sock"],
        &dir,
    ));
    assert_eq!(setting(&detail(&dir, "m"), "stripe_cache"), "16M");
    server.stop();

    let args: Vec<&str> = create
        .iter()
        .chain(&["--stripe-cache", "8M"])
        .chain(&members)
        .copied()
        .collect();
    let server = Server::start(&dir, &args);
    assert_eq!(setting(&detail(&dir, "m"), "stripe_cache"), "8M");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 17, item 4: `raid set a io_timeout_ms=1` used to be accepted and persisted, then the
/// next write failed every member and the array never assembled again. Now the value is
/// refused (nothing changes), a bad value found on disk keeps the default, and a stopped
/// array's settings can be reset with `raid set --members` (refused while it is served).
#[test]
fn settings_out_of_bounds_are_refused_and_stopped_members_can_be_reset() {
    use orion_raid::metadata::extension::{ExtensionRecord, StoredRegions, StoredSettings};
    use std::os::unix::fs::FileExt;
    let dir = test_dir("persist-bounds");
    let members = ["m0.img", "m1.img", "m2.img", "m3.img", "m4.img"];
    let mut args = vec![
        "create", "--level", "6", "--chunk", "64K", "--size", "16M", "--name", "s6",
    ];
    args.extend(members);
    ok(&raid(&args, &dir));
    let server = Server::start(&dir, &members);
    let before = detail(&dir, "s6")["settings"].clone();
    let refused = raid(
        &[
            "set",
            "s6",
            "rebuild_priority=low",
            "io_timeout_ms=1",
            "--control",
            "ctl.sock",
        ],
        &dir,
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text_of(&refused));
    let text = text_of(&refused);
    assert!(
        text.contains("io_timeout_ms=1 refused: io_timeout_ms takes 0 (off) or 1000 to 600000"),
        "{text}"
    );
    assert_eq!(
        detail(&dir, "s6")["settings"],
        before,
        "a refused pair changes nothing, not even the valid pair before it"
    );
    ok(&raid(
        &["set", "s6", "io_timeout_ms=2000", "--control", "ctl.sock"],
        &dir,
    ));
    ok(&raid(
        &[
            "set",
            "s6",
            "io_timeout_ms=default",
            "--control",
            "ctl.sock",
        ],
        &dir,
    ));
    assert_eq!(setting(&detail(&dir, "s6"), "io_timeout_ms"), "30000");
    // The members of a served array are not touched offline.
    let mut offline = vec!["set", "--members"];
    offline.extend(members);
    offline.push("io_timeout_ms=default");
    let busy = raid(&offline, &dir);
    assert_eq!(busy.status.code(), Some(1), "{}", text_of(&busy));
    assert!(text_of(&busy).contains("in use"), "{}", text_of(&busy));
    server.stop();

    // A record left with a 1 ms timeout (as the old version wrote it).
    for m in members {
        let path = dir.join(m);
        let sb = superblock_of(&path);
        let record = ExtensionRecord::Array {
            array_uuid: sb.array_uuid,
            events: sb.events,
            settings: StoredSettings {
                io_timeout_ns: Some(1_000_000),
                rebuild_priority: Some(2),
                ..StoredSettings::default()
            },
            scrub: None,
            scrub_regions: StoredRegions::default(),
        };
        let at = extension_sector(&sb).unwrap() * 512;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&record.encode(), at).unwrap();
    }
    // It assembles with the default timeout and serves writes with every member in.
    let server = Server::start(&dir, &members);
    let d = detail(&dir, "s6");
    assert_eq!(setting(&d, "io_timeout_ms"), "30000", "{d}");
    assert_eq!(setting(&d, "rebuild_priority"), "high", "{d}");
    if tool("qemu-io").is_some() {
        qemu_io(
            &server.uri(""),
            &["write -P 0x17 0 1M", "read -P 0x17 0 1M"],
        );
    }
    assert_eq!(first_array_status(&dir)["state"], "optimal");
    server.stop();

    // Offline: a member short is refused; all of them take the new record.
    let short = raid(
        &["set", "--members", "m0.img", "m1.img", "io_timeout_ms=5000"],
        &dir,
    );
    assert_eq!(short.status.code(), Some(1), "{}", text_of(&short));
    assert!(text_of(&short).contains("name every in-sync member"));
    let bad = raid(&["set", "--members", "m0.img", "io_timeout_ms=10"], &dir);
    assert_eq!(bad.status.code(), Some(2), "{}", text_of(&bad));
    offline.pop();
    offline.extend(["io_timeout_ms=5000", "rebuild_priority=default"]);
    let text = ok(&raid(&offline, &dir));
    assert!(
        text.contains("s6: recorded on 5 stopped member(s)"),
        "{text}"
    );
    let server = Server::start(&dir, &members);
    let d = detail(&dir, "s6");
    assert_eq!(setting(&d, "io_timeout_ms"), "5000", "{d}");
    assert_eq!(setting(&d, "rebuild_priority"), "normal", "{d}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
