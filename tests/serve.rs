//! `raid serve` with a RAID10 of image files, driven by real NBD clients (qemu-io, nbdinfo,
//! nbdcopy, fio) and by the control commands; stopped with SIGTERM and served again.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{Server, ok, qemu_io, qemu_io_output, raid, text_of, tool};

#[test]
fn raid10_over_nbd_with_real_clients() {
    let dir = std::env::temp_dir().join(format!("orion-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = raid(
        &[
            "create", "--level", "10", "--chunk", "64K", "--size", "64M", "--name", "r10",
            "m0.img", "m1.img", "m2.img", "m3.img",
        ],
        &dir,
    );
    ok(&out);
    let members = ["m0.img", "m1.img", "m2.img", "m3.img"];
    let server = Server::start(&dir, &members);
    let uri = server.uri("");

    // Control commands.
    let status = ok(&raid(&["status", "--json", "--control", "ctl.sock"], &dir));
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    let a = &v["arrays"][0];
    assert_eq!(a["name"], "r10");
    assert_eq!(a["level"], "raid10");
    assert_eq!(a["state"], "optimal");
    assert_eq!(a["members"].as_array().unwrap().len(), 4);
    assert_eq!(a["members"][2]["state"], "active");
    assert!(a["job"].is_null());
    let size = a["size_bytes"].as_u64().unwrap();
    let text = ok(&raid(&["status", "--control", "ctl.sock"], &dir));
    assert!(text.contains("[UUUU]"), "{text}");
    let detail = ok(&raid(&["detail", "r10", "--control", "ctl.sock"], &dir));
    assert!(detail.contains("near=2"), "{detail}");
    let missing = raid(&["detail", "nope", "--control", "ctl.sock"], &dir);
    assert_eq!(missing.status.code(), Some(1));

    if let Some(_q) = tool("qemu-io") {
        qemu_io(
            &uri,
            &[
                "write -P 0xab 40M 1M",
                "write -P 0xcd 43M 192k",
                "write -z 48M 64k",
                "discard 52M 1M",
                "flush",
            ],
        );
        qemu_io(
            &uri,
            &[
                "read -P 0xab 40M 1M",
                "read -P 0xcd 43M 192k",
                "read -P 0 48M 64k",
            ],
        );
        let wrong = qemu_io_output(&uri, &["read -P 0x11 40M 4k"]);
        let text = text_of(&wrong);
        assert!(text.contains("Pattern verification failed"), "{text}");
    }
    if let Some(_n) = tool("nbdinfo") {
        let out = Command::new("nbdinfo")
            .args(["--json", &uri])
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let export = &info["exports"][0];
        assert_eq!(export["export-size"].as_u64(), Some(size));
        assert_eq!(export["block_size_minimum"].as_u64(), Some(512));
        assert_eq!(export["block_size_preferred"].as_u64(), Some(65536));
    }
    if let Some(_c) = tool("nbdcopy") {
        let src = dir.join("random.bin");
        let mut data = vec![0u8; 8 << 20];
        let mut x = 0x1234_5678_9abc_def0u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(&src, &data).unwrap();
        let back = dir.join("back.bin");
        ok(&Command::new("nbdcopy")
            .args([src.to_str().unwrap(), &uri])
            .output()
            .unwrap());
        ok(&Command::new("nbdcopy")
            .args([&uri, back.to_str().unwrap()])
            .output()
            .unwrap());
        let whole = std::fs::read(&back).unwrap();
        assert_eq!(whole.len() as u64, size);
        assert!(whole[..data.len()] == data[..], "nbdcopy round trip");
    }
    if let Some(_f) = tool("fio") {
        let out = Command::new("fio")
            .args([
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--size=16M",
                "--offset=16M",
                "--iodepth=16",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",
            ])
            .output()
            .unwrap();
        let text = ok(&out);
        assert!(!text.contains("verify: bad"), "{text}");
    }
    server.stop();

    // The data survives a stop and a new serve.
    let server = Server::start(&dir, &members);
    if tool("qemu-io").is_some() {
        qemu_io(
            &server.uri(""),
            &["read -P 0xab 40M 1M", "read -P 0xcd 43M 192k"],
        );
    }
    // `raid stop` through the control socket.
    ok(&raid(&["stop", "r10", "--control", "ctl.sock"], &dir));
    let status = ok(&raid(&["status", "--json", "--control", "ctl.sock"], &dir));
    assert!(status.contains("\"arrays\":[]"), "{status}");
    server.stop();
    // Stopped clean: every superblock says so.
    let ex = ok(&raid(
        &["examine", "m0.img", "m1.img", "m2.img", "m3.img"],
        &dir,
    ));
    assert_eq!(ex.matches("State : clean").count(), 4, "{ex}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_rejects_bad_arguments() {
    let dir = std::env::temp_dir().join(format!("orion-serve-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        vec!["serve", "--nbd-socket", "x.sock"],
        vec!["serve", "mem:64M"],
        vec!["serve", "--nbd-socket", "x.sock", "mem:64M"],
        vec![
            "serve",
            "--nbd-socket",
            "x.sock",
            "--create",
            "mem:64M",
            "mem:64M",
        ],
        vec!["serve", "--nbd-socket", "x.sock", "mem:lots"],
    ] {
        let out = raid(&args, &dir);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // No server: status says so and fails.
    let out = raid(&["status", "--control", "none.sock"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 16 TiB array (sparse image files) is served in little memory: nothing in the engine
/// grows with the array's size.
#[test]
fn sixteen_tib_array_stays_small() {
    let dir = std::env::temp_dir().join(format!("orion-serve-16t-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let members = ["b0.img", "b1.img", "b2.img", "b3.img"];
    let mut args = vec!["create", "--level", "10", "--size", "8T", "--name", "big"];
    args.extend(members);
    ok(&raid(&args, &dir));
    let server = Server::start(&dir, &members);
    let status = ok(&raid(&["status", "--json", "--control", "ctl.sock"], &dir));
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    let size = v["arrays"][0]["size_bytes"].as_u64().unwrap();
    assert!(size >= (16u64 << 40) - (1 << 30), "size {size}");
    if tool("qemu-io").is_some() {
        let last = format!("write -P 0x77 {} 64k", size - (1 << 20));
        qemu_io(
            &server.uri(""),
            &["write -P 0x55 0 1M", "write -P 0x66 8T 1M", &last, "flush"],
        );
        let last = format!("read -P 0x77 {} 64k", size - (1 << 20));
        qemu_io(&server.uri(""), &["read -P 0x66 8T 1M", &last]);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(peak_kib < 256 * 1024, "peak resident memory {peak_kib} KiB");
    server.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A server killed outright (no clean stop): flushed data survives, and the array comes
/// back marked as needing a resync (the superblocks say it was dirty).
#[test]
fn killed_server_keeps_flushed_data_and_reports_unclean_shutdown() {
    if tool("qemu-io").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("orion-serve-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ok(&raid(
        &[
            "create", "--level", "1", "--size", "32M", "--name", "m", "a.img", "b.img",
        ],
        &dir,
    ));
    let mut server = Server::start(&dir, &["a.img", "b.img"]);
    qemu_io(&server.uri(""), &["write -P 0x3c 1M 256k", "flush"]);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let ex = ok(&raid(&["examine", "a.img"], &dir));
    assert!(ex.contains("State : active"), "dirty on disk: {ex}");
    let server = Server::start(&dir, &["a.img", "b.img"]);
    qemu_io(&server.uri(""), &["read -P 0x3c 1M 256k"]);
    // The resync runs in the background and finishes; a clean stop then records the array
    // as clean.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = ok(&raid(&["status", "--json", "--control", "ctl.sock"], &dir));
        let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
        if v["arrays"][0]["needs_resync"] == false && v["arrays"][0]["job"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "resync did not finish: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    qemu_io(&server.uri(""), &["read -P 0x3c 1M 256k"]);
    server.stop();
    let ex = ok(&raid(&["examine", "a.img", "b.img"], &dir));
    assert_eq!(ex.matches("State : clean").count(), 2, "{ex}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A parity array advertises its full stripe as the preferred NBD block size (a write of it
/// needs no reads) when that is a power of two, else the chunk.
#[test]
fn parity_export_prefers_the_full_stripe() {
    if tool("nbdinfo").is_none() {
        return;
    }
    for (members, preferred) in [(5usize, 4 * 65536u64), (4, 65536)] {
        let dir = std::env::temp_dir().join(format!(
            "orion-serve-stripe-{}-{members}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["--create", "--level", "5", "--chunk", "64K", "--name", "p"];
        args.extend(std::iter::repeat_n("mem:16M", members));
        let server = Server::start(&dir, &args);
        let out = Command::new("nbdinfo")
            .args(["--json", &server.uri("")])
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            info["exports"][0]["block_size_preferred"].as_u64(),
            Some(preferred),
            "{members} members"
        );
        server.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
