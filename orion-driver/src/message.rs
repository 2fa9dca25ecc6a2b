//! The typed IPC messages between the kernel, the storage service and a driver, and their rules.

use alloc::vec::Vec;

use crate::device::{BoundedString, DeviceInfo};
use crate::error::DriverError;
use crate::frame::MalformedReason;

/// Bytes per sector: the unit of every `sector` and `sector_count` in the protocol, whatever the
/// device's own logical block size (as in Linux's block layer and md).
pub const SECTOR_BYTES: u32 = 512;

/// Largest `sector_count` of a read or write: 8 MiB of data. It keeps a write request and a read
/// response well inside [`crate::frame::MAX_PAYLOAD_BYTES`] and bounds a driver's buffers.
/// Discard and write-zeroes carry no data and are limited only by the `u32` field.
pub const MAX_IO_SECTORS: u32 = 16 * 1024;

/// [`MAX_IO_SECTORS`] in bytes.
pub const MAX_IO_BYTES: usize = MAX_IO_SECTORS as usize * SECTOR_BYTES as usize;

/// Longest human-readable detail in an [`ErrorReply`], in bytes.
pub const ERROR_DETAIL_MAX_BYTES: usize = 256;

/// A block operation. The wire code is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// Read `sector_count` sectors; the response carries the data.
    Read,
    /// Write the request's data.
    Write,
    /// Make every acknowledged write durable. Carries no range.
    Flush,
    /// The range's contents are no longer needed (TRIM); later reads return unspecified data.
    Discard,
    /// Write zeroes over the range without sending them.
    WriteZeroes,
}

impl IoOp {
    /// Every operation, for exhaustive mapping and tests.
    pub const ALL: [IoOp; 5] = [
        IoOp::Read,
        IoOp::Write,
        IoOp::Flush,
        IoOp::Discard,
        IoOp::WriteZeroes,
    ];

    /// Stable wire code.
    pub const fn code(self) -> u16 {
        match self {
            IoOp::Read => 1,
            IoOp::Write => 2,
            IoOp::Flush => 3,
            IoOp::Discard => 4,
            IoOp::WriteZeroes => 5,
        }
    }

    /// Inverse of [`IoOp::code`].
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.code() == code)
    }

    /// Whether FUA means something for this operation (it modifies the medium).
    pub const fn accepts_fua(self) -> bool {
        matches!(self, IoOp::Write | IoOp::Discard | IoOp::WriteZeroes)
    }
}

/// Request modifiers. A bit set, stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IoFlags(u16);

impl IoFlags {
    /// Force unit access: acknowledge only once this request's data is durable.
    pub const FUA: IoFlags = IoFlags(1 << 0);
    /// Every bit this protocol version defines.
    pub const ALL: IoFlags = IoFlags(1);

    /// No flag.
    pub const fn empty() -> Self {
        IoFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The flags of `bits`, or `None` if an undefined bit is set: an unknown modifier may be a
    /// durability promise, and ignoring one would break it silently.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(IoFlags(bits))
        } else {
            None
        }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: IoFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A block request to a device or array.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IoRequest {
    /// The device or array addressed.
    pub device_id: u32,
    /// What to do.
    pub op: IoOp,
    /// Modifiers.
    pub flags: IoFlags,
    /// First sector, in 512-byte units. 0 for a flush.
    pub sector: u64,
    /// Number of sectors. 0 for a flush, at least 1 otherwise.
    pub sector_count: u32,
    /// The data of a write (exactly `sector_count * 512` bytes); empty for every other op.
    pub data: Vec<u8>,
}

impl IoRequest {
    /// A read request.
    pub fn read(device_id: u32, sector: u64, sector_count: u32) -> Self {
        IoRequest {
            device_id,
            op: IoOp::Read,
            flags: IoFlags::empty(),
            sector,
            sector_count,
            data: Vec::new(),
        }
    }

    /// A write request; `sector_count` is taken from the data length.
    pub fn write(device_id: u32, sector: u64, data: Vec<u8>, flags: IoFlags) -> Self {
        let sector_count = u32::try_from(data.len() / SECTOR_BYTES as usize).unwrap_or(u32::MAX);
        IoRequest {
            device_id,
            op: IoOp::Write,
            flags,
            sector,
            sector_count,
            data,
        }
    }

    /// A flush request.
    pub fn flush(device_id: u32) -> Self {
        IoRequest {
            device_id,
            op: IoOp::Flush,
            flags: IoFlags::empty(),
            sector: 0,
            sector_count: 0,
            data: Vec::new(),
        }
    }

    /// Data length in bytes the request moves (`sector_count * 512`), read or written.
    pub fn len_bytes(&self) -> u64 {
        u64::from(self.sector_count) * u64::from(SECTOR_BYTES)
    }

    /// Checks the rules the field types cannot express.
    pub fn validate(&self) -> Result<(), MalformedReason> {
        if !self.flags.is_empty() && !self.op.accepts_fua() {
            return Err(MalformedReason::FlagNotAllowed);
        }
        if self.op == IoOp::Flush {
            if self.sector != 0 || self.sector_count != 0 {
                return Err(MalformedReason::FlushWithRange);
            }
        } else if self.sector_count == 0 {
            return Err(MalformedReason::ZeroLength);
        }
        if matches!(self.op, IoOp::Read | IoOp::Write) && self.sector_count > MAX_IO_SECTORS {
            return Err(MalformedReason::IoTooLarge);
        }
        if self
            .sector
            .checked_add(u64::from(self.sector_count))
            .is_none()
        {
            return Err(MalformedReason::SectorOverflow);
        }
        let expected_data_bytes = if self.op == IoOp::Write {
            self.len_bytes()
        } else {
            0
        };
        if self.data.len() as u64 != expected_data_bytes {
            return Err(MalformedReason::DataLengthMismatch);
        }
        Ok(())
    }
}

/// The answer to an [`IoRequest`]; its frame carries the request's sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IoResponse {
    /// Outcome.
    pub status: Result<(), DriverError>,
    /// The data of a successful read; empty otherwise.
    pub data: Vec<u8>,
}

impl IoResponse {
    /// A successful response carrying `data` (empty for anything but a read).
    pub fn ok(data: Vec<u8>) -> Self {
        IoResponse {
            status: Ok(()),
            data,
        }
    }

    /// A failed response.
    pub fn err(error: DriverError) -> Self {
        IoResponse {
            status: Err(error),
            data: Vec::new(),
        }
    }

    /// Checks the rules the field types cannot express.
    pub fn validate(&self) -> Result<(), MalformedReason> {
        if self.status.is_err() && !self.data.is_empty() {
            return Err(MalformedReason::DataWithError);
        }
        if self.data.len() > MAX_IO_BYTES {
            return Err(MalformedReason::IoTooLarge);
        }
        if !self.data.len().is_multiple_of(SECTOR_BYTES as usize) {
            return Err(MalformedReason::DataLengthMismatch);
        }
        Ok(())
    }
}

/// Whether a hotplugged device arrived or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HotplugEvent {
    /// A device appeared.
    Added,
    /// A device disappeared; in-flight I/O to it will fail.
    Removed,
}

impl HotplugEvent {
    /// Stable wire code.
    pub const fn code(self) -> u8 {
        match self {
            HotplugEvent::Added => 1,
            HotplugEvent::Removed => 2,
        }
    }

    /// Inverse of [`HotplugEvent::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        [HotplugEvent::Added, HotplugEvent::Removed]
            .into_iter()
            .find(|e| e.code() == code)
    }
}

/// Why the kernel shuts the driver down; it decides how much work is worth finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownReason {
    /// The machine powers off: flush caches, mark arrays clean.
    PowerOff,
    /// The machine reboots: as for power-off.
    Reboot,
    /// Only the driver stops (upgrade, restart); the devices stay powered.
    Unload,
}

impl ShutdownReason {
    /// Stable wire code.
    pub const fn code(self) -> u8 {
        match self {
            ShutdownReason::PowerOff => 1,
            ShutdownReason::Reboot => 2,
            ShutdownReason::Unload => 3,
        }
    }

    /// Inverse of [`ShutdownReason::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        [
            ShutdownReason::PowerOff,
            ShutdownReason::Reboot,
            ShutdownReason::Unload,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// A management request; the driver that receives it defines the opcodes and payloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManagementRequest {
    /// Driver-defined operation (for RAID: status, detail, create, fail, add …).
    pub opcode: u16,
    /// Driver-defined arguments.
    pub payload: Vec<u8>,
}

/// The answer to a [`ManagementRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManagementResponse {
    /// The opcode of the request answered.
    pub opcode: u16,
    /// Outcome.
    pub status: Result<(), DriverError>,
    /// Driver-defined result (may also describe a failure).
    pub payload: Vec<u8>,
}

/// A failure reply to any request that has no reply of its own type, or to one that could not be
/// understood at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: DriverError,
    /// Human-readable detail for logs (may be empty).
    pub detail: BoundedString<ERROR_DETAIL_MAX_BYTES>,
}

impl ErrorReply {
    /// An error reply with a detail text, cut to [`ERROR_DETAIL_MAX_BYTES`] if longer.
    pub fn new(error: DriverError, detail: &str) -> Self {
        ErrorReply {
            error,
            detail: BoundedString::truncating(detail),
        }
    }
}

/// Every message of the protocol.
///
/// Requests flow towards a driver (from the kernel or the storage service, or from the RAID
/// driver to a member-disk driver); replies flow back and carry the sequence number of the
/// request they answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Kernel → driver: would you drive this device? Reply: `Ack` (yes) or `Error` (`NotFound`
    /// for "not mine").
    Probe(DeviceInfo),
    /// Kernel → driver: start. Reply: `Ack` or `Error`.
    Init,
    /// Kernel → driver: stop. Reply: `Ack` once everything is durable, or `Error`.
    Shutdown {
        /// Why.
        reason: ShutdownReason,
    },
    /// Kernel → driver: an interrupt line fired. Reply: `Ack`, which tells the kernel to unmask
    /// the line (it stays masked until then, so a level-triggered line cannot storm).
    Interrupt {
        /// The line.
        irq: u32,
        /// Kernel monotonic time the interrupt was taken, in nanoseconds.
        timestamp_ns: u64,
    },
    /// Kernel → driver: a timer the driver armed expired. No reply. The core never reads a
    /// clock itself: this is how time advances for it.
    Timer {
        /// Driver-chosen timer id.
        timer_id: u32,
        /// Kernel monotonic time now, in nanoseconds.
        now_ns: u64,
    },
    /// Driver → kernel: send `Timer { timer_id, .. }` once the kernel's monotonic clock reaches
    /// `deadline_ns` (at once if it already has). No reply. A new `ArmTimer` with the same id
    /// replaces the earlier one; `deadline_ns == u64::MAX` cancels it. This is how a driver
    /// that blocks for its next message is woken for work it scheduled (a rebuild's rate
    /// limit, the monitor's tick, a member timeout).
    ArmTimer {
        /// Driver-chosen timer id, echoed in the `Timer`.
        timer_id: u32,
        /// Kernel monotonic time to fire at, in nanoseconds.
        deadline_ns: u64,
    },
    /// Kernel → driver: a device arrived or left. Reply: `Ack` or `Error`.
    Hotplug {
        /// Arrived or left.
        event: HotplugEvent,
        /// The device.
        device: DeviceInfo,
    },
    /// Storage service (or RAID driver) → driver: block I/O. Reply: `IoResponse`.
    IoRequest(IoRequest),
    /// Storage service → driver: management. Reply: `ManagementResponse`.
    ManagementRequest(ManagementRequest),
    /// Reply: the request succeeded and has nothing to return.
    Ack,
    /// Reply to `IoRequest`.
    IoResponse(IoResponse),
    /// Reply to `ManagementRequest`.
    ManagementResponse(ManagementResponse),
    /// Reply: the request failed, or could not be understood.
    Error(ErrorReply),
}

/// The wire type code of each message; the values are stable. Replies have bit 15 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageType {
    /// [`Message::Probe`].
    Probe = 0x0001,
    /// [`Message::Init`].
    Init = 0x0002,
    /// [`Message::Shutdown`].
    Shutdown = 0x0003,
    /// [`Message::Interrupt`].
    Interrupt = 0x0004,
    /// [`Message::Timer`].
    Timer = 0x0005,
    /// [`Message::Hotplug`].
    Hotplug = 0x0006,
    /// [`Message::ArmTimer`].
    ArmTimer = 0x0007,
    /// [`Message::IoRequest`].
    IoRequest = 0x0010,
    /// [`Message::ManagementRequest`].
    ManagementRequest = 0x0020,
    /// [`Message::Ack`].
    Ack = 0x8001,
    /// [`Message::IoResponse`].
    IoResponse = 0x8010,
    /// [`Message::ManagementResponse`].
    ManagementResponse = 0x8020,
    /// [`Message::Error`].
    Error = 0x80ff,
}

impl MessageType {
    /// Every type, for exhaustive mapping and tests.
    pub const ALL: [MessageType; 13] = [
        MessageType::Probe,
        MessageType::Init,
        MessageType::Shutdown,
        MessageType::Interrupt,
        MessageType::Timer,
        MessageType::Hotplug,
        MessageType::ArmTimer,
        MessageType::IoRequest,
        MessageType::ManagementRequest,
        MessageType::Ack,
        MessageType::IoResponse,
        MessageType::ManagementResponse,
        MessageType::Error,
    ];

    /// Stable wire code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Inverse of [`MessageType::code`].
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether messages of this type answer a request.
    pub const fn is_reply(self) -> bool {
        self.code() & 0x8000 != 0
    }
}

impl Message {
    /// The wire type of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Probe(_) => MessageType::Probe,
            Message::Init => MessageType::Init,
            Message::Shutdown { .. } => MessageType::Shutdown,
            Message::Interrupt { .. } => MessageType::Interrupt,
            Message::Timer { .. } => MessageType::Timer,
            Message::Hotplug { .. } => MessageType::Hotplug,
            Message::ArmTimer { .. } => MessageType::ArmTimer,
            Message::IoRequest(_) => MessageType::IoRequest,
            Message::ManagementRequest(_) => MessageType::ManagementRequest,
            Message::Ack => MessageType::Ack,
            Message::IoResponse(_) => MessageType::IoResponse,
            Message::ManagementResponse(_) => MessageType::ManagementResponse,
            Message::Error(_) => MessageType::Error,
        }
    }

    /// Whether this message answers a request.
    pub fn is_reply(&self) -> bool {
        self.message_type().is_reply()
    }

    /// An [`Message::Error`] reply.
    pub fn error(error: DriverError, detail: &str) -> Self {
        Message::Error(ErrorReply::new(error, detail))
    }

    /// Checks the rules the field types cannot express. The decoder applies it to every message
    /// and the encoder refuses a message that fails it, so a peer never sees one.
    pub fn validate(&self) -> Result<(), MalformedReason> {
        match self {
            Message::Probe(device) | Message::Hotplug { device, .. } => device
                .validate()
                .map_err(|_| MalformedReason::BadDeviceInfo),
            Message::IoRequest(req) => req.validate(),
            Message::IoResponse(resp) => resp.validate(),
            Message::Init
            | Message::Shutdown { .. }
            | Message::Interrupt { .. }
            | Message::Timer { .. }
            | Message::ArmTimer { .. }
            | Message::ManagementRequest(_)
            | Message::Ack
            | Message::ManagementResponse(_)
            | Message::Error(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn type_codes_round_trip_and_replies_have_bit_15() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_code(t.code()), Some(t));
        }
        assert!(MessageType::Error.is_reply());
        assert!(MessageType::Ack.is_reply());
        assert!(!MessageType::IoRequest.is_reply());
        assert_eq!(MessageType::from_code(0), None);
        assert_eq!(MessageType::from_code(0x8000), None);
    }

    #[test]
    fn io_request_rules() {
        let w = IoRequest::write(1, 8, vec![0; 1024], IoFlags::FUA);
        assert_eq!(w.sector_count, 2);
        assert_eq!(w.validate(), Ok(()));
        assert_eq!(IoRequest::read(1, 0, 8).validate(), Ok(()));
        assert_eq!(IoRequest::flush(1).validate(), Ok(()));

        let mut r = IoRequest::read(1, 0, 0);
        assert_eq!(r.validate(), Err(MalformedReason::ZeroLength));
        r.sector_count = MAX_IO_SECTORS + 1;
        assert_eq!(r.validate(), Err(MalformedReason::IoTooLarge));
        r.sector_count = 1;
        r.flags = IoFlags::FUA;
        assert_eq!(r.validate(), Err(MalformedReason::FlagNotAllowed));
        r.flags = IoFlags::empty();
        r.sector = u64::MAX;
        assert_eq!(r.validate(), Err(MalformedReason::SectorOverflow));
        r.sector = 0;
        r.data = vec![0; 512];
        assert_eq!(r.validate(), Err(MalformedReason::DataLengthMismatch));

        let mut f = IoRequest::flush(1);
        f.sector = 1;
        assert_eq!(f.validate(), Err(MalformedReason::FlushWithRange));

        let mut w = IoRequest::write(1, 0, vec![0; 512], IoFlags::empty());
        w.sector_count = 2;
        assert_eq!(w.validate(), Err(MalformedReason::DataLengthMismatch));

        // Discard and write-zeroes have no data, so they may be huge.
        let d = IoRequest {
            device_id: 1,
            op: IoOp::Discard,
            flags: IoFlags::FUA,
            sector: 0,
            sector_count: u32::MAX,
            data: vec![],
        };
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn io_response_rules() {
        assert_eq!(IoResponse::ok(vec![0; 512]).validate(), Ok(()));
        assert_eq!(IoResponse::err(DriverError::Io).validate(), Ok(()));
        assert_eq!(
            IoResponse::ok(vec![0; 100]).validate(),
            Err(MalformedReason::DataLengthMismatch)
        );
        let mut bad = IoResponse::err(DriverError::Io);
        bad.data = vec![0; 512];
        assert_eq!(bad.validate(), Err(MalformedReason::DataWithError));
    }

    #[test]
    fn flag_and_enum_codes() {
        assert_eq!(IoFlags::from_bits(1), Some(IoFlags::FUA));
        assert_eq!(IoFlags::from_bits(2), None);
        for op in IoOp::ALL {
            assert_eq!(IoOp::from_code(op.code()), Some(op));
        }
        assert_eq!(IoOp::from_code(0), None);
        assert_eq!(HotplugEvent::from_code(3), None);
        assert_eq!(ShutdownReason::from_code(0), None);
    }

    #[test]
    fn error_reply_detail_is_cut_not_refused() {
        let long = "e".repeat(1000);
        let Message::Error(reply) = Message::error(DriverError::Busy, &long) else {
            panic!("Message::error must build an Error reply");
        };
        assert_eq!(reply.detail.len(), ERROR_DETAIL_MAX_BYTES);
    }
}
