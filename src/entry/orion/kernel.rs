//! Everything the driver asks of the kernel: receive a message, send a message, read the
//! clock, exit. Frames arrive on one inherited descriptor and leave on another; the log has
//! its own. On this machine these are raw Linux system calls (x86-64), which is also the
//! channel `orion-sim` gives the driver, so the same binary runs under it unchanged.

use core::arch::asm;

/// Frames from the kernel and the storage service.
const FRAMES_IN: i32 = 0;
/// Frames to them.
const FRAMES_OUT: i32 = 1;
/// The kernel's log channel.
const LOG: i32 = 2;

const SYS_READ: usize = 0;
const SYS_WRITE: usize = 1;
const SYS_POLL: usize = 7;
const SYS_CLOCK_GETTIME: usize = 228;
const SYS_EXIT_GROUP: usize = 231;
const CLOCK_MONOTONIC: usize = 1;
const POLLIN: i16 = 1;
const EINTR: isize = -4;
const EAGAIN: isize = -11;

/// A raw system call with up to three arguments; the kernel's return value (negative errno
/// on failure).
fn syscall3(number: usize, a: usize, b: usize, c: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 Linux system call convention: number in rax, arguments in rdi,
    // rsi, rdx; the kernel clobbers rcx and r11 and returns in rax. Every caller passes
    // pointers to memory it owns for the lengths it passes.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// What a wait for frames gave.
pub enum Received {
    /// Bytes were read into the buffer.
    Bytes(usize),
    /// The timeout passed with nothing to read.
    Timeout,
    /// The channel is closed: the kernel is gone.
    Closed,
}

/// Waits up to `timeout_ms` (forever when `None`) for frame bytes and reads what is there
/// into `buf`.
pub fn receive(buf: &mut [u8], timeout_ms: Option<u64>) -> Received {
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    let timeout = timeout_ms.map_or(-1, |ms| ms.min(i32::MAX as u64) as i32);
    loop {
        let mut pfd = PollFd {
            fd: FRAMES_IN,
            events: POLLIN,
            revents: 0,
        };
        let n = syscall3(
            SYS_POLL,
            &mut pfd as *mut PollFd as usize,
            1,
            timeout as isize as usize,
        );
        match n {
            0 => return Received::Timeout,
            EINTR => continue,
            n if n < 0 => return Received::Closed,
            _ => {}
        }
        let r = syscall3(
            SYS_READ,
            FRAMES_IN as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
        );
        return match r {
            0 => Received::Closed,
            EINTR | EAGAIN => continue,
            r if r < 0 => Received::Closed,
            r => Received::Bytes(r as usize),
        };
    }
}

fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let n = syscall3(SYS_WRITE, fd as usize, bytes.as_ptr() as usize, bytes.len());
        match n {
            EINTR | EAGAIN => continue,
            n if n <= 0 => return false,
            n => bytes = &bytes[n as usize..],
        }
    }
    true
}

/// Sends encoded frames; false when the channel is closed.
pub fn send(frames: &[u8]) -> bool {
    write_all(FRAMES_OUT, frames)
}

/// Writes one line to the kernel's log (best effort).
pub fn log(line: &[u8]) {
    let _ = write_all(LOG, line);
}

/// The monotonic clock, in nanoseconds.
pub fn now_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    let r = syscall3(
        SYS_CLOCK_GETTIME,
        CLOCK_MONOTONIC,
        &mut ts as *mut Timespec as usize,
        0,
    );
    if r < 0 {
        return 0;
    }
    (ts.sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.nsec as u64)
}

/// Ends the driver process with `status`.
pub fn exit(status: i32) -> ! {
    loop {
        syscall3(SYS_EXIT_GROUP, status as usize, 0, 0);
    }
}
