//! What may be a member, through the `raid` binary (issue 17): one device fills one role
//! (`add`, `replace`, `create`, the pool, by any path), members are held exclusively (a
//! second server, `create --force` over a served array), members shorter than their
//! superblock or deleted or truncated while served, and paths that are not files or
//! block devices (a FIFO never hangs a command).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{
    Server, array_status, ok, qemu_io, qemu_io_output, raid, status_json, superblock_of, test_dir,
    text_of, tool,
};

/// Runs `raid ARGS` in `dir`, killed after `secs` seconds (a command that should fail at
/// once must not hang the test if it does not): its output, and whether it had to be
/// killed.
fn raid_within(args: &[&str], dir: &Path, secs: u64) -> (Output, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raid"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raid");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), killed)
}

/// As [`raid_within`], for a command that must end by itself.
fn raid_ends(args: &[&str], dir: &Path, secs: u64) -> Output {
    let (out, killed) = raid_within(args, dir, secs);
    assert!(!killed, "raid {args:?} hung: {}", text_of(&out));
    out
}

/// A command that must fail (status 1 or 2) with a message containing every piece.
fn refused(out: &Output, pieces: &[&str]) -> String {
    let text = text_of(out);
    assert!(!out.status.success(), "accepted: {text}");
    for p in pieces {
        assert!(text.contains(p), "no '{p}' in: {text}");
    }
    text
}

fn ctl<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--control", "ctl.sock"]);
    v
}

/// Every member path of every array, and the pool's: none twice.
fn assert_no_device_twice(dir: &Path) {
    let status = status_json(dir);
    let mut paths: Vec<String> = Vec::new();
    for a in status["arrays"].as_array().unwrap() {
        for m in a["members"].as_array().unwrap() {
            paths.push(m["path"].as_str().unwrap().to_string());
        }
    }
    for p in status["pool"].as_array().unwrap() {
        paths.push(p["path"].as_str().unwrap().to_string());
    }
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a device twice: {paths:?}");
}

/// The issue's reproduction: `raid add s6 s6-1.img` of an active member, `raid replace s6
/// s6-2.img --with s6-2.img`, then `raid fail s6 s6-0.img`. Both are refused naming the
/// role; so are a member of another array (by a hard link) and the pool's spare (by a
/// hard link), and the array keeps one device per slot.
#[test]
fn a_member_never_fills_two_roles() {
    let dir = test_dir("members-roles");
    let s6 = ["s6-0.img", "s6-1.img", "s6-2.img", "s6-3.img"];
    let mut args = vec![
        "create", "--level", "6", "--chunk", "64K", "--size", "32M", "--name", "s6",
    ];
    args.extend(s6);
    ok(&raid(&args, &dir));
    ok(&raid(
        &[
            "create", "--level", "1", "--size", "32M", "--name", "r1", "r1-0.img", "r1-1.img",
        ],
        &dir,
    ));
    std::fs::File::create(dir.join("p.img"))
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    std::fs::hard_link(dir.join("r1-1.img"), dir.join("hard-r1.img")).unwrap();
    std::fs::hard_link(dir.join("p.img"), dir.join("hard-p.img")).unwrap();
    let mut members: Vec<&str> = s6.to_vec();
    members.extend(["r1-0.img", "r1-1.img"]);
    let server = Server::start(&dir, &members);

    refused(
        &raid(&ctl(&["add", "s6", "s6-1.img"]), &dir),
        &["is already the active member in slot 1 of array s6 (as s6-1.img)"],
    );
    refused(
        &raid(
            &ctl(&["replace", "s6", "s6-2.img", "--with", "s6-2.img"]),
            &dir,
        ),
        &["is already the active member in slot 2 of array s6"],
    );
    refused(
        &raid(&ctl(&["add", "s6", "hard-r1.img"]), &dir),
        &["hard-r1.img is already the active member in slot 1 of array r1 (as r1-1.img)"],
    );
    ok(&raid(&ctl(&["add", "--pool", "p.img"]), &dir));
    refused(
        &raid(&ctl(&["add", "s6", "hard-p.img"]), &dir),
        &["hard-p.img is already in the shared spare pool (as "],
    );
    refused(
        &raid(&ctl(&["add", "--pool", "hard-p.img"]), &dir),
        &["already in the shared spare pool"],
    );
    let a = array_status(&dir, "s6");
    assert_eq!(a["state"], "optimal", "{a}");
    assert_eq!(a["members"].as_array().unwrap().len(), 4, "{a}");
    assert_eq!(status_json(&dir)["pool"].as_array().unwrap().len(), 1);
    assert_no_device_twice(&dir);

    // The issue's last step: with nothing wrongly added, failing a member leaves the array
    // degraded, not "optimal with one device in two slots".
    ok(&raid(&ctl(&["fail", "s6", "s6-0.img"]), &dir));
    let a = array_status(&dir, "s6");
    assert_eq!(a["state"], "degraded", "{a}");
    assert_no_device_twice(&dir);
    if tool("qemu-io").is_some() {
        let uri = server.uri("s6");
        qemu_io(&uri, &["write -P 0x61 1M 256k"]);
        qemu_io(&uri, &["read -P 0x61 1M 256k"]);
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `raid create` given one file twice, by the same name, `./name`, a symlink or a hard
/// link, is refused before anything is written.
#[test]
fn create_refuses_one_file_under_two_names() {
    let dir = test_dir("members-create-twice");
    refused(
        &raid(
            &["create", "--level", "1", "--size", "8M", "a.img", "./a.img"],
            &dir,
        ),
        &["the same file"],
    );
    assert!(!dir.join("a.img").exists(), "nothing created");
    std::fs::File::create(dir.join("a.img"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    std::os::unix::fs::symlink("a.img", dir.join("link.img")).unwrap();
    std::fs::hard_link(dir.join("a.img"), dir.join("hard.img")).unwrap();
    for other in ["link.img", "hard.img"] {
        let out = raid(&["create", "--level", "1", "a.img", other], &dir);
        refused(&out, &["a.img and ", other, "are the same file"]);
        assert_eq!(out.status.code(), Some(2));
    }
    let out = raid(&["examine", "a.img"], &dir);
    refused(&out, &["no valid md superblock"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Members are held exclusively: a second `raid serve` over a served array's members, and
/// `raid create --force` over them, are refused naming the holder; the served array's
/// superblocks are untouched. `raid examine` still reads a served member. Once the server
/// stops, the members are free again.
#[test]
fn a_served_member_is_busy_for_other_processes() {
    let dir = test_dir("members-busy");
    ok(&raid(
        &[
            "create", "--level", "1", "--size", "16M", "--name", "r1", "r1-0.img", "r1-1.img",
        ],
        &dir,
    ));
    let uuid = superblock_of(&dir.join("r1-0.img")).array_uuid;
    let server = Server::start(&dir, &["r1-0.img", "r1-1.img"]);
    let pid = server.child.id().to_string();
    let out = raid_ends(
        &[
            "serve",
            "--nbd-socket",
            "nbd2.sock",
            "--control",
            "ctl2.sock",
            "r1-0.img",
            "r1-1.img",
        ],
        &dir,
        30,
    );
    refused(&out, &["r1-0.img is in use by process", &pid, "(raid)"]);
    let out = raid(
        &[
            "create", "--force", "--level", "1", "--name", "new", "r1-0.img", "r1-1.img",
        ],
        &dir,
    );
    refused(&out, &["is in use by process", &pid]);
    assert_eq!(superblock_of(&dir.join("r1-0.img")).array_uuid, uuid);
    assert_eq!(superblock_of(&dir.join("r1-1.img")).array_uuid, uuid);
    let text = ok(&raid(&["examine", "r1-0.img", "r1-1.img"], &dir));
    assert!(text.contains("Raid Level : raid1"), "{text}");
    assert_eq!(array_status(&dir, "r1")["state"], "optimal");
    server.stop();
    // Released with the server: serving again works.
    let server = Server::start(&dir, &["r1-0.img", "r1-1.img"]);
    assert_eq!(array_status(&dir, "r1")["state"], "optimal");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls the server's status until `cond` holds (up to 20 s).
fn wait_for(dir: &Path, name: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = array_status(dir, name);
        if cond(&a) {
            return;
        }
        assert!(Instant::now() < deadline, "never reached: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn member_state(a: &serde_json::Value, file: &str) -> String {
    a["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"].as_str().unwrap().ends_with(file))
        .map(|m| m["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

/// A member truncated before serving is left out ("device too small"): the array runs
/// degraded, not optimal. A member file deleted while served, and one truncated while
/// served, are failed (the monitor's probe, or the first short I/O) and their copy
/// serves every byte: never the zeros of a hole.
#[test]
fn short_and_deleted_members_are_left_out_or_failed() {
    let dir = test_dir("members-short");
    for name in ["a", "d", "t"] {
        let (m0, m1) = (format!("{name}-0.img"), format!("{name}-1.img"));
        ok(&raid(
            &[
                "create", "--level", "1", "--size", "32M", "--name", name, &m0, &m1,
            ],
            &dir,
        ));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("a-1.img"))
        .unwrap()
        .set_len(10_000_000)
        .unwrap();
    // It serves (degraded) until killed; what it said about a-1 is in its output.
    let (out, killed) = raid_within(
        &[
            "serve",
            "--nbd-socket",
            "x.sock",
            "--control",
            "x-ctl.sock",
            "a-0.img",
            "a-1.img",
        ],
        &dir,
        5,
    );
    let text = text_of(&out);
    assert!(killed, "serve of a degraded array exited: {text}");
    assert!(
        text.contains("a-1.img: device too small: 19531 sectors"),
        "{text}"
    );
    let members = [
        "a-0.img", "a-1.img", "d-0.img", "d-1.img", "t-0.img", "t-1.img",
    ];
    let server = Server::start(&dir, &members);
    let a = array_status(&dir, "a");
    assert_eq!(a["state"], "degraded", "{a}");
    assert_eq!(member_state(&a, "a-1.img"), "absent", "{a}");
    assert_eq!(array_status(&dir, "d")["state"], "optimal");
    assert_eq!(array_status(&dir, "t")["state"], "optimal");

    std::fs::remove_file(dir.join("d-1.img")).unwrap();
    wait_for(&dir, "d", |a| {
        a["state"] == "degraded" && member_state(a, "d-1.img") == "faulty"
    });

    if tool("qemu-io").is_some() {
        let uri = server.uri("t");
        qemu_io(&uri, &["write -P 0xab 8M 1M", "write -P 0xab 20M 1M"]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("t-0.img"))
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        // A write past the new end, then reads of what lies between: a hole of zeros on
        // t-0 if that write had extended it silently.
        qemu_io(&uri, &["write -P 0xcd 24M 64k"]);
        let reads: Vec<String> = (0..8)
            .flat_map(|_| {
                [
                    "read -P 0xab 8M 64k".to_string(),
                    "read -P 0xab 20M 1M".into(),
                ]
            })
            .collect();
        let out = qemu_io_output(&uri, &reads);
        let text = text_of(&out);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("verification failed"), "{text}");
        assert!(!text.contains("error"), "{text}");
        qemu_io(&uri, &["read -P 0xcd 24M 64k"]);
        wait_for(&dir, "t", |a| {
            a["state"] == "degraded" && member_state(a, "t-0.img") == "faulty"
        });
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A FIFO (or a directory) is never opened as a member: `examine`, `create`, `serve` and
/// `add` refuse it at once, naming the file and what it is.
#[test]
fn a_fifo_is_refused_by_every_command_without_hanging() {
    let dir = test_dir("members-fifo");
    assert!(
        Command::new("mkfifo")
            .arg(dir.join("pipe"))
            .status()
            .unwrap()
            .success()
    );
    std::fs::create_dir(dir.join("sub")).unwrap();
    let out = raid_ends(&["examine", "pipe"], &dir, 20);
    refused(&out, &["pipe is a FIFO (named pipe)"]);
    let out = raid_ends(&["examine", "sub"], &dir, 20);
    refused(&out, &["sub is a directory"]);
    let out = raid_ends(
        &["create", "--level", "1", "--size", "8M", "pipe", "x.img"],
        &dir,
        20,
    );
    refused(&out, &["pipe is a FIFO"]);
    assert!(!dir.join("x.img").exists(), "nothing created");
    let out = raid_ends(
        &[
            "serve",
            "--nbd-socket",
            "n.sock",
            "--control",
            "c.sock",
            "pipe",
        ],
        &dir,
        20,
    );
    refused(&out, &["pipe is a FIFO"]);

    ok(&raid(
        &[
            "create", "--level", "1", "--size", "8M", "--name", "r", "r-0.img", "r-1.img",
        ],
        &dir,
    ));
    let server = Server::start(&dir, &["r-0.img", "r-1.img"]);
    let out = raid_ends(&ctl(&["add", "r", "pipe"]), &dir, 20);
    refused(&out, &["pipe is a FIFO"]);
    assert!(array_status(&dir, "r")["job"].is_null());
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
