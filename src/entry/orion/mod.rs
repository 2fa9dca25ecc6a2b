//! The freestanding Orion driver: the `raid` bin built without the `std` feature. No std, no
//! libc: its own entry point (`rt`), a bounded heap (`heap`), and every request to the kernel
//! through one module (`kernel`). The loop: frames in are handed to [`RaidDriver`], the
//! executor runs what they started, frames out are sent, and the wait for the next frame
//! ends at the executor's next timer. It ends when the kernel closes the channel or after
//! the reply to `Shutdown`.

mod heap;
mod kernel;
mod rt;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use orion_driver::{DriverError, Frame, Message, encode};
use orion_raid::driver::RaidDriver;
use orion_raid::executor::Executor;

extern crate alloc;

#[global_allocator]
static HEAP: heap::CountingHeap = heap::CountingHeap::new();

/// Routes `log` to the kernel's log channel, one line per record.
struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = alloc::string::String::new();
        let _ = writeln!(
            line,
            "raid: {} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
        kernel::log(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: KernelLog = KernelLog;

/// Bytes read from the channel at a time.
const READ_CHUNK: usize = 1 << 20;

/// The driver process; its exit status.
fn run() -> i32 {
    HEAP.init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    let exec = Executor::new();
    exec.set_clock_source(Box::new(kernel::now_ns));
    let mut driver = RaidDriver::with_executor(exec.clone());
    driver.set_heap_probe(Box::new(|| HEAP.peak_bytes() as u64));
    driver.cache_manager().set_budget_bytes(heap::CACHE_BYTES);
    log::info!(
        "Orion RAID driver up: heap {} MiB, cache {} MiB",
        heap::HEAP_BYTES >> 20,
        heap::CACHE_BYTES >> 20
    );
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        exec.advance_to(kernel::now_ns());
        driver.poll();
        let out = driver.take_outgoing();
        if !out.is_empty() {
            let mut wire = Vec::new();
            for frame in &out {
                match encode(frame) {
                    Ok(bytes) => wire.extend_from_slice(&bytes),
                    Err(e) => log::error!("frame {} not sent: {e}", frame.sequence),
                }
            }
            if !kernel::send(&wire) {
                log::warn!("the frame channel is closed");
                return 1;
            }
        }
        if driver.is_shut_down() {
            log::info!("shut down; heap peak {} bytes", HEAP.peak_bytes());
            return 0;
        }
        let timeout_ms = exec.next_deadline_ns().map(|deadline| {
            deadline
                .saturating_sub(kernel::now_ns())
                .div_ceil(1_000_000)
        });
        match kernel::receive(&mut chunk, timeout_ms) {
            kernel::Received::Bytes(n) => {
                pending.extend_from_slice(&chunk[..n]);
                let used = driver.handle_bytes(&pending);
                pending.drain(..used);
            }
            kernel::Received::Timeout => {}
            kernel::Received::Closed => {
                log::info!("the kernel closed the channel");
                return 0;
            }
        }
    }
}

/// Sends the panic message as an `Error` frame (sequence 0), if memory allows.
fn report_panic(text: &[u8]) {
    let text = core::str::from_utf8(text).unwrap_or("panic");
    let detail = &text[..text.floor_char_boundary(250)];
    if let Ok(bytes) = encode(&Frame {
        sequence: 0,
        message: Message::error(DriverError::Aborted, detail),
    }) {
        kernel::send(&bytes);
    }
}
