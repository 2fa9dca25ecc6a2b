//! The driver traits (`OrionDriver`, `BlockDriver`) and the glue from messages to trait calls.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::DeviceInfo;
use crate::error::{DriverError, ProtocolError};
use crate::frame::Frame;
use crate::message::{
    IoFlags, IoOp, IoRequest, IoResponse, ManagementResponse, Message, SECTOR_BYTES, ShutdownReason,
};

/// A userspace driver as the kernel sees it.
///
/// The life cycle is `probe` (once per offered device) → `init` → any number of interrupts and
/// messages → `shutdown`. [`dispatch`] turns incoming frames into these calls and their results
/// into reply frames, so a driver's message loop is "receive, dispatch, send the reply if any".
pub trait OrionDriver {
    /// Whether this driver takes `device`. `Err(NotFound)` means "not mine", any other error
    /// means "mine, but it cannot be driven".
    fn probe(&mut self, device: &DeviceInfo) -> Result<(), DriverError>;

    /// Starts the driver after its devices have been probed.
    fn init(&mut self) -> Result<(), DriverError>;

    /// Services interrupt line `irq`. The kernel keeps the line masked until the reply, so a
    /// driver that returns must have quietened the device.
    fn handle_irq(&mut self, irq: u32) -> Result<(), DriverError> {
        let _ = irq;
        Err(DriverError::Unsupported)
    }

    /// Stops the driver; returns once everything acknowledged is durable.
    fn shutdown(&mut self, reason: ShutdownReason) -> Result<(), DriverError>;

    /// Handles every message that is not a life-cycle call above: I/O and management requests,
    /// timers, hotplug events, and replies from drivers this one talks to (a RAID driver's member
    /// disks).
    ///
    /// Takes the message by value so the data of a write moves into the driver without a copy.
    /// Returns `Some(reply)` to answer at once, or `None` when there is nothing to answer
    /// (timers, replies) or the answer comes later: the driver then keeps `sequence` and sends
    /// a frame with that sequence when the I/O completes.
    ///
    /// The default refuses requests with `Unsupported` and ignores everything else.
    fn handle_message(&mut self, sequence: u64, message: Message) -> Option<Message> {
        let _ = sequence;
        default_reply(&message)
    }
}

/// The reply a driver that does not handle `message` gives: `Unsupported` for requests (their
/// sender waits for an answer), nothing for timers and replies.
pub fn default_reply(message: &Message) -> Option<Message> {
    match message {
        Message::Timer { .. } | Message::ArmTimer { .. } => None,
        Message::IoRequest(_) => Some(Message::IoResponse(IoResponse::err(
            DriverError::Unsupported,
        ))),
        Message::ManagementRequest(r) => Some(Message::ManagementResponse(ManagementResponse {
            opcode: r.opcode,
            status: Err(DriverError::Unsupported),
            payload: Vec::new(),
        })),
        m if m.is_reply() => None,
        _ => Some(Message::error(DriverError::Unsupported, "")),
    }
}

fn ack_or_error(result: Result<(), DriverError>) -> Message {
    match result {
        Ok(()) => Message::Ack,
        Err(e) => Message::error(e, ""),
    }
}

/// Routes one received frame to `driver` and returns the reply frame to send, if any.
///
/// `Probe`, `Init`, `Interrupt` and `Shutdown` become trait calls answered with `Ack` or
/// `Error`; everything else goes to [`OrionDriver::handle_message`]. The reply carries the
/// request's sequence number.
pub fn dispatch<D: OrionDriver + ?Sized>(driver: &mut D, frame: Frame) -> Option<Frame> {
    let sequence = frame.sequence;
    let reply = match frame.message {
        Message::Probe(device) => Some(ack_or_error(driver.probe(&device))),
        Message::Init => Some(ack_or_error(driver.init())),
        Message::Interrupt { irq, .. } => Some(ack_or_error(driver.handle_irq(irq))),
        Message::Shutdown { reason } => Some(ack_or_error(driver.shutdown(reason))),
        message => driver.handle_message(sequence, message),
    };
    reply.map(|message| Frame { sequence, message })
}

/// The error reply for a frame that failed to decode, to send when its sequence is known (see
/// `decode_header`).
pub fn bad_frame_reply(sequence: u64, detail: &str) -> Frame {
    Frame {
        sequence,
        message: Message::error(DriverError::Protocol(ProtocolError::BadFrame), detail),
    }
}

/// A synchronous block device driver.
///
/// Addresses are logical blocks of [`BlockDriver::block_size`] bytes. Implementations may assume
/// the arguments passed the checks of [`check_block_range`]; [`serve_io`] makes those checks.
pub trait BlockDriver {
    /// Logical block size in bytes: a power of two, at least 512.
    fn block_size(&self) -> u32;

    /// Capacity in logical blocks.
    fn capacity_blocks(&self) -> u64;

    /// Reads `count` blocks from `lba` into `buf` (`count * block_size` bytes).
    fn read_blocks(&mut self, lba: u64, count: u32, buf: &mut [u8]) -> Result<(), DriverError>;

    /// Writes `count` blocks from `buf` (`count * block_size` bytes) at `lba`. With `fua` the
    /// call returns only once the data is durable.
    fn write_blocks(
        &mut self,
        lba: u64,
        count: u32,
        buf: &[u8],
        fua: bool,
    ) -> Result<(), DriverError>;

    /// Makes every completed write durable. The default suits devices without a volatile cache.
    fn flush(&mut self) -> Result<(), DriverError> {
        Ok(())
    }

    /// Drops the contents of `count` blocks at `lba`. The default refuses.
    fn discard_blocks(&mut self, lba: u64, count: u64) -> Result<(), DriverError> {
        let _ = (lba, count);
        Err(DriverError::Unsupported)
    }

    /// Writes zeroes over `count` blocks at `lba`. The default writes a zeroed buffer, at most
    /// [`ZERO_CHUNK_BYTES`] at a time, so memory stays bounded however large the range.
    fn write_zeroes_blocks(&mut self, lba: u64, count: u64, fua: bool) -> Result<(), DriverError> {
        let block_bytes = u64::from(self.block_size().max(1));
        let chunk_blocks = (ZERO_CHUNK_BYTES as u64 / block_bytes).max(1);
        let zeroes = vec![0u8; (chunk_blocks.min(count) * block_bytes) as usize];
        let mut done = 0u64;
        while done < count {
            let n = chunk_blocks.min(count - done);
            let len = (n * block_bytes) as usize;
            // n ≤ chunk_blocks, which fits in u32 because ZERO_CHUNK_BYTES does.
            let n32 = u32::try_from(n).map_err(|_| DriverError::InvalidArgument)?;
            self.write_blocks(lba + done, n32, &zeroes[..len], fua)?;
            done += n;
        }
        Ok(())
    }
}

/// Largest buffer the default [`BlockDriver::write_zeroes_blocks`] allocates.
pub const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

/// Checks a block range against a device: `count` blocks at `lba` must lie inside the device and
/// `buf_len_bytes` must equal `count * block_size`. Returns the byte length.
pub fn check_block_range<B: BlockDriver + ?Sized>(
    device: &B,
    lba: u64,
    count: u64,
    buf_len_bytes: usize,
) -> Result<usize, DriverError> {
    let end = lba.checked_add(count).ok_or(DriverError::OutOfRange)?;
    if end > device.capacity_blocks() {
        return Err(DriverError::OutOfRange);
    }
    let len = count
        .checked_mul(u64::from(device.block_size()))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(DriverError::InvalidArgument)?;
    if len != buf_len_bytes {
        return Err(DriverError::InvalidArgument);
    }
    Ok(len)
}

/// Converts a 512-byte sector range into the device's logical blocks. The range must be aligned
/// to the block size: a partial block would need a read-modify-write the caller did not ask for.
fn sectors_to_blocks(
    block_size: u32,
    sector: u64,
    sector_count: u64,
) -> Result<(u64, u64), DriverError> {
    if block_size < SECTOR_BYTES || !block_size.is_power_of_two() {
        return Err(DriverError::NotReady);
    }
    let sectors_per_block = u64::from(block_size / SECTOR_BYTES);
    if !sector.is_multiple_of(sectors_per_block) || !sector_count.is_multiple_of(sectors_per_block)
    {
        return Err(DriverError::InvalidArgument);
    }
    Ok((sector / sectors_per_block, sector_count / sectors_per_block))
}

/// Serves one I/O request on a synchronous block driver and builds its response: the bridge a
/// simple disk driver puts in its `handle_message`. The request is assumed to have passed
/// `IoRequest::validate` (the decoder guarantees it).
pub fn serve_io<B: BlockDriver + ?Sized>(device: &mut B, request: &IoRequest) -> IoResponse {
    match serve_io_inner(device, request) {
        Ok(data) => IoResponse::ok(data),
        Err(e) => IoResponse::err(e),
    }
}

fn serve_io_inner<B: BlockDriver + ?Sized>(
    device: &mut B,
    request: &IoRequest,
) -> Result<Vec<u8>, DriverError> {
    let fua = request.flags.contains(IoFlags::FUA);
    if request.op == IoOp::Flush {
        device.flush()?;
        return Ok(Vec::new());
    }
    let (lba, count) = sectors_to_blocks(
        device.block_size(),
        request.sector,
        u64::from(request.sector_count),
    )?;
    match request.op {
        IoOp::Read => {
            let len = check_block_range(device, lba, count, request.len_bytes() as usize)?;
            let count32 = u32::try_from(count).map_err(|_| DriverError::InvalidArgument)?;
            let mut data = vec![0u8; len];
            device.read_blocks(lba, count32, &mut data)?;
            Ok(data)
        }
        IoOp::Write => {
            check_block_range(device, lba, count, request.data.len())?;
            let count32 = u32::try_from(count).map_err(|_| DriverError::InvalidArgument)?;
            device.write_blocks(lba, count32, &request.data, fua)?;
            Ok(Vec::new())
        }
        IoOp::Discard => {
            check_range_only(device, lba, count)?;
            device.discard_blocks(lba, count)?;
            Ok(Vec::new())
        }
        IoOp::WriteZeroes => {
            check_range_only(device, lba, count)?;
            device.write_zeroes_blocks(lba, count, fua)?;
            Ok(Vec::new())
        }
        IoOp::Flush => Ok(Vec::new()),
    }
}

fn check_range_only<B: BlockDriver + ?Sized>(
    device: &B,
    lba: u64,
    count: u64,
) -> Result<(), DriverError> {
    match lba.checked_add(count) {
        Some(end) if end <= device.capacity_blocks() => Ok(()),
        _ => Err(DriverError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ManagementRequest;

    /// A RAM disk with 4 KiB blocks that records flushes and write FUA bits.
    struct RamDisk {
        blocks: Vec<u8>,
        flushes: u32,
        last_fua: bool,
    }

    const BS: u32 = 4096;

    impl RamDisk {
        fn new(capacity_blocks: usize) -> Self {
            RamDisk {
                blocks: vec![0xAA; capacity_blocks * BS as usize],
                flushes: 0,
                last_fua: false,
            }
        }
    }

    impl BlockDriver for RamDisk {
        fn block_size(&self) -> u32 {
            BS
        }
        fn capacity_blocks(&self) -> u64 {
            (self.blocks.len() / BS as usize) as u64
        }
        fn read_blocks(&mut self, lba: u64, count: u32, buf: &mut [u8]) -> Result<(), DriverError> {
            let len = check_block_range(self, lba, u64::from(count), buf.len())?;
            let start = lba as usize * BS as usize;
            buf.copy_from_slice(&self.blocks[start..start + len]);
            Ok(())
        }
        fn write_blocks(
            &mut self,
            lba: u64,
            count: u32,
            buf: &[u8],
            fua: bool,
        ) -> Result<(), DriverError> {
            let len = check_block_range(self, lba, u64::from(count), buf.len())?;
            let start = lba as usize * BS as usize;
            self.blocks[start..start + len].copy_from_slice(buf);
            self.last_fua = fua;
            Ok(())
        }
        fn flush(&mut self) -> Result<(), DriverError> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn serve_io_writes_reads_and_zeroes() {
        let mut disk = RamDisk::new(16);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        let w = IoRequest::write(0, 8, data.clone(), IoFlags::FUA);
        assert_eq!(serve_io(&mut disk, &w), IoResponse::ok(Vec::new()));
        assert!(disk.last_fua);
        assert_eq!(
            serve_io(&mut disk, &IoRequest::read(0, 8, 16)),
            IoResponse::ok(data)
        );

        let wz = IoRequest {
            device_id: 0,
            op: IoOp::WriteZeroes,
            flags: IoFlags::empty(),
            sector: 8,
            sector_count: 8,
            data: Vec::new(),
        };
        assert_eq!(serve_io(&mut disk, &wz), IoResponse::ok(Vec::new()));
        let read_back = serve_io(&mut disk, &IoRequest::read(0, 8, 16)).data;
        assert!(read_back[..4096].iter().all(|&b| b == 0));
        assert!(read_back[4096..].iter().any(|&b| b != 0));

        assert_eq!(
            serve_io(&mut disk, &IoRequest::flush(0)),
            IoResponse::ok(Vec::new())
        );
        assert_eq!(disk.flushes, 1);
    }

    #[test]
    fn serve_io_rejects_bad_ranges() {
        let mut disk = RamDisk::new(16);
        // Misaligned to the 4 KiB block.
        assert_eq!(
            serve_io(&mut disk, &IoRequest::read(0, 1, 8)),
            IoResponse::err(DriverError::InvalidArgument)
        );
        // Past the end: 16 blocks = 128 sectors.
        assert_eq!(
            serve_io(&mut disk, &IoRequest::read(0, 128, 8)),
            IoResponse::err(DriverError::OutOfRange)
        );
        let discard = IoRequest {
            device_id: 0,
            op: IoOp::Discard,
            flags: IoFlags::empty(),
            sector: 0,
            sector_count: 8,
            data: Vec::new(),
        };
        assert_eq!(
            serve_io(&mut disk, &discard),
            IoResponse::err(DriverError::Unsupported)
        );
        let huge_zeroes = IoRequest {
            op: IoOp::WriteZeroes,
            sector_count: u32::MAX - 7,
            ..discard
        };
        assert_eq!(
            serve_io(&mut disk, &huge_zeroes),
            IoResponse::err(DriverError::OutOfRange)
        );
    }

    /// Records the life-cycle calls; claims only device 7; handles no messages itself.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<&'static str>,
    }

    impl OrionDriver for Recorder {
        fn probe(&mut self, device: &DeviceInfo) -> Result<(), DriverError> {
            self.calls.push("probe");
            if device.id == 7 {
                Ok(())
            } else {
                Err(DriverError::NotFound)
            }
        }
        fn init(&mut self) -> Result<(), DriverError> {
            self.calls.push("init");
            Ok(())
        }
        fn shutdown(&mut self, _reason: ShutdownReason) -> Result<(), DriverError> {
            self.calls.push("shutdown");
            Ok(())
        }
    }

    fn frame(sequence: u64, message: Message) -> Frame {
        Frame { sequence, message }
    }

    #[test]
    fn dispatch_routes_life_cycle_and_echoes_sequence() {
        let mut d = Recorder::default();
        let mine = DeviceInfo::block(7, "sda", 512, 100).unwrap();
        let other = DeviceInfo::block(8, "sdb", 512, 100).unwrap();
        assert_eq!(
            dispatch(&mut d, frame(1, Message::Probe(mine))),
            Some(frame(1, Message::Ack))
        );
        assert_eq!(
            dispatch(&mut d, frame(2, Message::Probe(other))),
            Some(frame(2, Message::error(DriverError::NotFound, "")))
        );
        assert_eq!(
            dispatch(&mut d, frame(3, Message::Init)),
            Some(frame(3, Message::Ack))
        );
        // The default handle_irq refuses, and the kernel hears about it.
        assert_eq!(
            dispatch(
                &mut d,
                frame(
                    4,
                    Message::Interrupt {
                        irq: 5,
                        timestamp_ns: 9
                    }
                )
            ),
            Some(frame(4, Message::error(DriverError::Unsupported, "")))
        );
        assert_eq!(
            dispatch(
                &mut d,
                frame(
                    5,
                    Message::Shutdown {
                        reason: ShutdownReason::PowerOff
                    }
                )
            ),
            Some(frame(5, Message::Ack))
        );
        assert_eq!(d.calls, ["probe", "probe", "init", "shutdown"]);
    }

    #[test]
    fn default_handle_message_answers_requests_only() {
        let mut d = Recorder::default();
        assert_eq!(
            dispatch(
                &mut d,
                frame(9, Message::IoRequest(IoRequest::read(0, 0, 1)))
            ),
            Some(frame(
                9,
                Message::IoResponse(IoResponse::err(DriverError::Unsupported))
            ))
        );
        assert_eq!(
            dispatch(
                &mut d,
                frame(
                    10,
                    Message::ManagementRequest(ManagementRequest {
                        opcode: 1,
                        payload: vec![1, 2]
                    })
                )
            ),
            Some(frame(
                10,
                Message::ManagementResponse(ManagementResponse {
                    opcode: 1,
                    status: Err(DriverError::Unsupported),
                    payload: Vec::new()
                })
            ))
        );
        assert_eq!(
            dispatch(
                &mut d,
                frame(
                    11,
                    Message::Timer {
                        timer_id: 1,
                        now_ns: 2
                    }
                )
            ),
            None
        );
        assert_eq!(dispatch(&mut d, frame(12, Message::Ack)), None);
    }
}
