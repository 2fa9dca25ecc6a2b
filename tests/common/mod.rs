//! Helpers shared by the integration tests that drive the `raid` binary and a live
//! `raid serve` on image files: run the binary, start and stop a server, talk to it with
//! qemu-io, read its status and the members' superblocks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use orion_raid::metadata::Superblock;

/// Runs `raid ARGS` in `dir`.
pub fn raid(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raid"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run raid")
}

/// A fresh, empty directory for one test: `orion-NAME-PID` in the temporary directory.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orion-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether a client program is installed; under CI a missing one is a failure, elsewhere
/// the caller skips (with a notice).
pub fn have(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed; .ci/run must install it");
        }
        eprintln!("notice: {name} not installed, skipping its part of the test");
    }
    found
}

/// A client program, or `None` (skip) outside CI when it is not installed.
pub fn tool(name: &str) -> Option<&str> {
    have(name).then_some(name)
}

/// The NBD URI of `export` ("" for the default) of a server listening on `nbd.sock` in `dir`.
pub fn nbd_uri(dir: &Path, export: &str) -> String {
    format!(
        "nbd+unix:///{export}?socket={}",
        dir.join("nbd.sock").display()
    )
}

/// A `raid serve` listening on `nbd.sock` and `ctl.sock` in its directory.
pub struct Server {
    pub child: Child,
    dir: PathBuf,
}

impl Server {
    pub fn start<S: AsRef<str>>(dir: &Path, members: &[S]) -> Server {
        let mut args = vec!["serve", "--nbd-socket", "nbd.sock", "--control", "ctl.sock"];
        args.extend(members.iter().map(AsRef::as_ref));
        let _ = std::fs::remove_file(dir.join("nbd.sock"));
        let _ = std::fs::remove_file(dir.join("ctl.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_raid"))
            .args(&args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start raid serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(dir.join("nbd.sock").exists() && dir.join("ctl.sock").exists()) {
            assert!(Instant::now() < deadline, "raid serve did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// The NBD URI of `export` ("" for the default export).
    pub fn uri(&self, export: &str) -> String {
        nbd_uri(&self.dir, export)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "raid serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "raid serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard output then standard error, as text.
pub fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The text of a command that must have succeeded.
pub fn ok(out: &Output) -> String {
    let text = text_of(out);
    assert!(out.status.success(), "failed: {text}");
    text
}

/// The standard output of a command that must have succeeded (for JSON answers).
pub fn stdout_ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", text_of(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs qemu-io commands against `uri`, whatever they do.
pub fn qemu_io_output<S: AsRef<str>>(uri: &str, cmds: &[S]) -> Output {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.push("-c");
        args.push(c.as_ref());
    }
    args.push(uri);
    Command::new("qemu-io").args(&args).output().unwrap()
}

/// Runs qemu-io commands against `uri`; any failed pattern or error fails the test.
pub fn qemu_io<S: AsRef<str>>(uri: &str, cmds: &[S]) -> String {
    let text = ok(&qemu_io_output(uri, cmds));
    assert!(
        !text.contains("verification failed") && !text.contains("error"),
        "qemu-io: {text}"
    );
    text
}

/// Writes each (offset, length, pattern byte) piece with qemu-io.
pub fn write_pieces(uri: &str, pieces: &[(u64, u64, u8)]) {
    let cmds: Vec<String> = pieces
        .iter()
        .map(|(o, l, p)| format!("write -P {p:#x} {o} {l}"))
        .collect();
    qemu_io(uri, &cmds);
}

/// Reads each (offset, length, pattern byte) piece back; a wrong byte fails the test.
pub fn verify_pieces(uri: &str, pieces: &[(u64, u64, u8)]) {
    let cmds: Vec<String> = pieces
        .iter()
        .map(|(o, l, p)| format!("read -P {p:#x} {o} {l}"))
        .collect();
    qemu_io(uri, &cmds);
}

/// `raid status --json` of the server whose control socket is `ctl.sock` in `dir`.
pub fn status_json(dir: &Path) -> serde_json::Value {
    let text = ok(&raid(&["status", "--json", "--control", "ctl.sock"], dir));
    serde_json::from_str(text.trim()).unwrap()
}

/// The entry of the array named `name` in a `raid status --json` document.
pub fn array_in<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no array {name} in {status}"))
}

/// The status entry of the array named `name` of the server in `dir`.
pub fn array_status(dir: &Path, name: &str) -> serde_json::Value {
    array_in(&status_json(dir), name).clone()
}

/// The status entry of the first (or only) array of the server in `dir`.
pub fn first_array_status(dir: &Path) -> serde_json::Value {
    status_json(dir)["arrays"][0].clone()
}

/// `raid CMD NAME MEMBER` (fail, remove, add) against the server in `dir`.
pub fn member_cmd(dir: &Path, cmd: &str, name: &str, member: &str) {
    ok(&raid(&[cmd, name, member, "--control", "ctl.sock"], dir));
}

/// The md superblock of a member image (v1.2: 4 KiB from the start).
pub fn superblock_of(path: &Path) -> Superblock {
    let bytes = std::fs::read(path).unwrap();
    Superblock::decode(&bytes[4096..8192]).unwrap()
}
