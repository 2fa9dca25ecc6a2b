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

/// The export names `nbdinfo --list` shows for the server in `dir`, sorted.
fn listed_exports(dir: &std::path::Path) -> Vec<String> {
    let uri = common::nbd_uri(dir, "");
    let out = Command::new("nbdinfo")
        .args(["--list", "--json", &uri])
        .output()
        .unwrap();
    assert!(out.status.success(), "nbdinfo: {}", text_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn served_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = common::status_json(dir)["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Issue 17, item 7: every `create` without `-N` was named `orion`, `serve --scan` exported
/// them all under that one name (only the first reachable), and a stopped array stayed in
/// the export list. Now `create` numbers arrays as mdadm does (0, 1, …), a server serves a
/// second array of a name it has under `NAME-UUID8`, and `raid stop` withdraws the export.
#[test]
fn every_array_gets_its_own_name_and_a_stopped_one_is_no_longer_exported() {
    let dir = common::test_dir("serve-names");
    for (pair, expect) in [(["a0.img", "a1.img"], "'0'"), (["b0.img", "b1.img"], "'1'")] {
        let mut args = vec!["create", "--level", "1", "--size", "16M"];
        args.extend(pair);
        let text = ok(&raid(&args, &dir));
        assert!(text.contains(&format!("raid1 array {expect}")), "{text}");
    }
    // Two arrays of one name, as earlier versions named every array.
    for pair in [["c0.img", "c1.img"], ["d0.img", "d1.img"]] {
        let mut args = vec!["create", "--level", "1", "--size", "16M", "-N", "orion"];
        args.extend(pair);
        ok(&raid(&args, &dir));
    }
    let server = Server::start(&dir, &["--scan", "."]);
    let names = served_names(&dir);
    let status = common::status_json(&dir);
    let twin = names
        .iter()
        .find(|n| n.starts_with("orion-"))
        .unwrap_or_else(|| panic!("no qualified name in {names:?}"))
        .clone();
    let twin_uuid = common::array_in(&status, &twin)["uuid"]
        .as_str()
        .unwrap()
        .replace(':', "");
    assert_eq!(twin, format!("orion-{}", &twin_uuid[..8]));
    assert_eq!(names, ["0", "1", "orion", twin.as_str()]);
    if tool("nbdinfo").is_some() {
        assert_eq!(listed_exports(&dir), names, "every array is exported");
    }
    if tool("qemu-io").is_some() {
        // Two arrays, two exports: what is written to one is not in the other.
        qemu_io(&server.uri("orion"), &["write -P 0x11 0 64k"]);
        qemu_io(&server.uri(&twin), &["write -P 0x22 0 64k"]);
        qemu_io(&server.uri("orion"), &["read -P 0x11 0 64k"]);
        qemu_io(&server.uri(&twin), &["read -P 0x22 0 64k"]);
    }
    ok(&raid(&["stop", &twin, "--control", "ctl.sock"], &dir));
    ok(&raid(&["stop", "0", "--control", "ctl.sock"], &dir));
    let left = ["1", "orion"];
    assert_eq!(served_names(&dir), left);
    if tool("nbdinfo").is_some() {
        assert_eq!(listed_exports(&dir), left, "stopped arrays are not listed");
    }
    if tool("qemu-io").is_some() {
        let gone = qemu_io_output(&server.uri(&twin), &["read 0 4k"]);
        assert!(!gone.status.success(), "{}", text_of(&gone));
        // The default export is the first one still served.
        qemu_io(&server.uri(""), &["read 0 4k"]);
    }
    server.stop();
    // The names are the superblocks' own: the twin is still `orion` there.
    let examined = ok(&raid(&["examine", "d0.img"], &dir));
    assert!(examined.contains("orion"), "{examined}");
    let _ = std::fs::remove_dir_all(&dir);
}
