//! Helpers shared by the integration tests that drive a live `raid serve` on image files: run
//! the binary, start and stop a server, talk to it with qemu-io.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `raid ARGS` in `dir`.
pub fn raid(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raid"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run raid")
}

/// Whether a client program is installed; under CI a missing one is a failure.
pub fn have(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found && std::env::var_os("CI").is_some() {
        panic!("{name} is not installed; .ci/run must install it");
    }
    found
}

/// A `raid serve` listening on `nbd.sock` and `ctl.sock` in its directory.
pub struct Server {
    child: Child,
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
        format!(
            "nbd+unix:///{export}?socket={}",
            self.dir.join("nbd.sock").display()
        )
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

/// Runs qemu-io commands against `uri`; any failed pattern or error fails the test.
pub fn qemu_io(uri: &str, cmds: &[String]) -> String {
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    for c in cmds {
        args.push("-c".into());
        args.push(c.clone());
    }
    args.push(uri.into());
    let out = Command::new("qemu-io").args(&args).output().unwrap();
    let text = ok(&out);
    assert!(
        !text.contains("Pattern verification failed") && !text.contains("error"),
        "qemu-io: {text}"
    );
    text
}
