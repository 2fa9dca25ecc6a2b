//! How the simulator reaches the driver it plays the kernel for: the freestanding driver as
//! a child process over pipes (frames on its stdin and stdout, its log on stderr), or a
//! `RaidDriver` in this process on simulated time (a run replays bit for bit from its seed).
//! Both start, take bytes, give frames, die (kill -9 / drop) and start again.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orion_driver::{Frame, FrameError, decode};

use crate::driver::RaidDriver;
use crate::executor::Executor;

/// The exit status of the freestanding driver after a panic (its panic handler's).
pub const PANIC_STATUS: i32 = 101;

/// Why the driver stopped serving the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverFault {
    /// It panicked (the message, or the log around it).
    Panicked(String),
    /// It closed its channel or exited without being asked to (status, log).
    Exited(String),
    /// It sent bytes that are not a frame.
    BadFrame(String),
    /// The process could not be started or reached.
    Io(String),
}

impl core::fmt::Display for DriverFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DriverFault::Panicked(why) => write!(f, "the driver panicked: {why}"),
            DriverFault::Exited(why) => write!(f, "the driver exited: {why}"),
            DriverFault::BadFrame(why) => write!(f, "the driver sent a bad frame: {why}"),
            DriverFault::Io(why) => write!(f, "the driver channel failed: {why}"),
        }
    }
}

/// The driver under simulation, however it runs.
pub trait Transport {
    /// Starts a fresh driver (the first boot, or a restart after a crash) whose clock reads
    /// `now_ns` (where the transport's clock is simulated).
    fn start(&mut self, now_ns: u64) -> Result<(), DriverFault>;
    /// Delivers encoded frames.
    fn send(&mut self, bytes: &[u8]) -> Result<(), DriverFault>;
    /// Lets the driver run at simulated time `now_ns` and returns the frames it sent. With
    /// `expect`, something is owed to the simulator and a process is given a moment for it.
    fn exchange(&mut self, now_ns: u64, expect: bool) -> Result<Vec<Frame>, DriverFault>;
    /// Kills the driver at once (kill -9): nothing it has not sent is sent.
    fn kill(&mut self);
    /// After the reply to `Shutdown`: the driver ends on its own, with success.
    fn wait_exit(&mut self) -> Result<(), DriverFault>;
    /// The earliest the simulated clock may read (a process's real clock keeps running; 0
    /// where the clock is simulated). A new process's clock starts here: the simulated
    /// clock goes back to it at a restart, or its first `Timer` would age everything the
    /// new driver starts by the lead the old one's clock had.
    fn clock_floor_ns(&self) -> u64;
    /// The end of the driver's log, for a failure report.
    fn log_tail(&self) -> String;
}

/// A `RaidDriver` in this process on simulated time.
#[derive(Default)]
pub struct InProcess {
    driver: Option<RaidDriver>,
}

impl InProcess {
    fn guarded<T>(&mut self, f: impl FnOnce(&mut RaidDriver) -> T) -> Result<T, DriverFault> {
        let Some(driver) = self.driver.as_mut() else {
            return Err(DriverFault::Exited("not running".into()));
        };
        catch_unwind(AssertUnwindSafe(|| f(driver))).map_err(|panic| {
            self.driver = None;
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            DriverFault::Panicked(text)
        })
    }
}

impl Transport for InProcess {
    fn start(&mut self, now_ns: u64) -> Result<(), DriverFault> {
        let exec = Executor::new();
        exec.advance_to(now_ns);
        self.driver = Some(RaidDriver::with_executor(exec));
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), DriverFault> {
        let used = self.guarded(|d| d.handle_bytes(bytes))?;
        if used != bytes.len() {
            return Err(DriverFault::Io(format!(
                "{} of {} bytes taken",
                used,
                bytes.len()
            )));
        }
        Ok(())
    }

    fn exchange(&mut self, now_ns: u64, _expect: bool) -> Result<Vec<Frame>, DriverFault> {
        self.guarded(|d| {
            d.executor().advance_to(now_ns);
            d.poll();
            d.take_outgoing()
        })
    }

    fn kill(&mut self) {
        // Dropping the driver drops its tasks mid-await, as a killed process loses them.
        if let Some(driver) = self.driver.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(driver)));
        }
    }

    fn wait_exit(&mut self) -> Result<(), DriverFault> {
        let done = self.guarded(|d| d.is_shut_down())?;
        self.driver = None;
        if done {
            Ok(())
        } else {
            Err(DriverFault::Exited(
                "acknowledged Shutdown but is not shut down".into(),
            ))
        }
    }

    fn clock_floor_ns(&self) -> u64 {
        0
    }

    fn log_tail(&self) -> String {
        String::new()
    }
}

/// Bytes of the driver's log kept for a failure report.
const LOG_TAIL_BYTES: usize = 16 << 10;

/// The freestanding driver as a child process: the kernel side of its frame channel.
pub struct ChildProcess {
    binary: PathBuf,
    child: Option<Child>,
    to_driver: Option<ChildStdin>,
    frames: Option<Receiver<Result<Frame, String>>>,
    log: Arc<Mutex<String>>,
    /// How long `exchange` waits for a frame that is owed.
    pub patience: Duration,
}

impl ChildProcess {
    pub fn new(binary: &Path) -> Self {
        ChildProcess {
            binary: binary.to_path_buf(),
            child: None,
            to_driver: None,
            frames: None,
            log: Arc::new(Mutex::new(String::new())),
            patience: Duration::from_millis(5),
        }
    }

    /// The driver's whole exit: its status, after its channel closed.
    fn reap(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + wait;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn exit_fault(&mut self) -> DriverFault {
        self.to_driver = None;
        let status = self.reap(Duration::from_secs(5));
        // Give the log reader a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(20));
        let log = self.log_tail();
        match status.and_then(|s| s.code()) {
            Some(PANIC_STATUS) => DriverFault::Panicked(log),
            code => DriverFault::Exited(format!("status {code:?}: {log}")),
        }
    }
}

/// CLOCK_MONOTONIC, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given, which is valid.
    #[allow(unsafe_code)]
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn keep_tail(log: &Mutex<String>, text: &str) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    log.push_str(text);
    if log.len() > 2 * LOG_TAIL_BYTES {
        let cut = log.len() - LOG_TAIL_BYTES;
        let cut = log.ceil_char_boundary(cut);
        log.drain(..cut);
    }
}

impl Transport for ChildProcess {
    fn start(&mut self, _now_ns: u64) -> Result<(), DriverFault> {
        self.kill();
        let mut child = Command::new(&self.binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DriverFault::Io(format!("{}: {e}", self.binary.display())))?;
        let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(DriverFault::Io("no pipes".into()));
        };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                loop {
                    match decode(&received) {
                        Ok((frame, used)) => {
                            received.drain(..used);
                            if tx.send(Ok(frame)).is_err() {
                                return;
                            }
                        }
                        Err(FrameError::NeedMore { .. }) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                }
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                }
            }
        });
        self.log = Arc::new(Mutex::new(String::new()));
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 1 << 14];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => keep_tail(&log, &String::from_utf8_lossy(&chunk[..n])),
                }
            }
        });
        self.child = Some(child);
        self.to_driver = Some(stdin);
        self.frames = Some(rx);
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), DriverFault> {
        let Some(pipe) = self.to_driver.as_mut() else {
            return Err(DriverFault::Exited("not running".into()));
        };
        if pipe.write_all(bytes).and_then(|()| pipe.flush()).is_err() {
            return Err(self.exit_fault());
        }
        Ok(())
    }

    fn exchange(&mut self, _now_ns: u64, expect: bool) -> Result<Vec<Frame>, DriverFault> {
        let Some(rx) = self.frames.as_ref() else {
            return Err(DriverFault::Exited("not running".into()));
        };
        let mut frames = Vec::new();
        let mut closed = false;
        if expect {
            match rx.recv_timeout(self.patience) {
                Ok(Ok(frame)) => frames.push(frame),
                Ok(Err(e)) => return Err(DriverFault::BadFrame(e)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        if !closed {
            loop {
                match rx.try_recv() {
                    Ok(Ok(frame)) => frames.push(frame),
                    Ok(Err(e)) => return Err(DriverFault::BadFrame(e)),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if closed && frames.is_empty() {
            return Err(self.exit_fault());
        }
        Ok(frames)
    }

    fn kill(&mut self) {
        self.to_driver = None;
        self.frames = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_exit(&mut self) -> Result<(), DriverFault> {
        self.to_driver = None;
        let status = self.reap(Duration::from_secs(30));
        self.frames = None;
        self.child = None;
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) if s.code() == Some(PANIC_STATUS) => {
                Err(DriverFault::Panicked(self.log_tail()))
            }
            Some(s) => Err(DriverFault::Exited(format!("{s}: {}", self.log_tail()))),
            None => Err(DriverFault::Exited(format!(
                "did not exit after Shutdown: {}",
                self.log_tail()
            ))),
        }
    }

    fn clock_floor_ns(&self) -> u64 {
        // The child's executor reads CLOCK_MONOTONIC: the simulated clock runs in the same
        // domain, so its `Timer`s move the child's clock (which never goes backwards).
        monotonic_ns()
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let from = log.len().saturating_sub(LOG_TAIL_BYTES);
        log[log.ceil_char_boundary(from)..].to_string()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
