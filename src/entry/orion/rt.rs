//! What the precompiled `core` and the compiler expect from a program without a C runtime:
//! the entry point, the memory functions, a panic handler and the unwinder's symbols (never
//! used: a panic ends the process before anything unwinds).

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use super::kernel;

/// The exit status of a driver that panicked (or ran out of memory).
pub const PANIC_STATUS: i32 = 101;

// The process entry: the kernel starts `_start` with the stack pointer 16-byte aligned (at
// argc) and no return address; `entry` is an ordinary function, so it gets called with the
// alignment the ABI promises.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

extern "C" fn entry() -> ! {
    kernel::exit(super::run())
}

#[unsafe(no_mangle)]
/// # Safety
/// `dest` and `src` are valid for `n` bytes and do not overlap (the C contract).
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: `rep movsb` copies rcx bytes from rsi to rdi forwards (the direction flag is
    // clear, as the ABI guarantees between calls); the caller vouches for both ranges.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
    dest
}

#[unsafe(no_mangle)]
/// # Safety
/// `dest` and `src` are valid for `n` bytes; they may overlap.
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // The destination starts before the source or past its end: a forward copy never
        // overwrites a byte before reading it.
        // SAFETY: as for `memcpy`; forward order is safe for this overlap.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copies backwards from the last byte (direction flag set, then cleared again as
    // the ABI requires); both ranges are valid for `n` bytes, as the caller vouches.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack),
        );
    }
    dest
}

#[unsafe(no_mangle)]
/// # Safety
/// `dest` is valid for `n` bytes.
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: `rep stosb` stores al into rcx bytes from rdi forwards; the caller vouches for
    // the range.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c as u8,
            options(nostack, preserves_flags),
        );
    }
    dest
}

#[unsafe(no_mangle)]
/// # Safety
/// `a` and `b` are valid for `n` bytes.
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, and both are valid for n bytes (the caller's contract). The crate is
        // `no_builtins`, so this loop is not turned back into a call to `memcmp`.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[unsafe(no_mangle)]
/// # Safety
/// `a` and `b` are valid for `n` bytes.
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}

/// Named by code built to unwind; a panic here never unwinds.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Named by the landing pads of code built to unwind; never reached, as nothing unwinds.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    kernel::exit(PANIC_STATUS)
}

/// A fixed-size line buffer for the panic message: a panic may come from a full heap.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if PANICKING.swap(true, Ordering::Relaxed) {
        // A panic while reporting one (say, no memory for the report): just end.
        kernel::exit(PANIC_STATUS);
    }
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    let _ = write!(line, "raid: panic: {info}");
    let end = line.len.min(line.buf.len() - 1);
    line.buf[end] = b'\n';
    kernel::log(&line.buf[..=end]);
    // Then over the frame channel, if memory allows: the kernel learns why the driver died.
    super::report_panic(&line.buf[..end]);
    kernel::exit(PANIC_STATUS)
}
