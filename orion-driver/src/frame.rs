//! The versioned binary frame codec: header layout, checksums, payload encodings, frame errors.
//!
//! The layout is documented byte by byte in the crate docs (`lib.rs`); this file is the one
//! implementation of it.
//!
//! Two CRC-32s, one over the header and one over the payload, and why:
//! * The header CRC lets a stream reader reject a desynchronised or corrupted header as soon as
//!   its 32 bytes are in, before it trusts `payload_len`. Without it a flipped bit in the length
//!   would make the reader wait for (and buffer) up to 16 MiB that never come.
//! * The payload CRC guards the data of block writes and reads in transit. A payload corrupted by
//!   a buffer-reuse or mapping bug would otherwise be written to every member with valid parity
//!   and become undetectable silent corruption; the RAID layer cannot catch it afterwards.
//! * CRC-32 (the IEEE/zlib polynomial, as `crc32fast` computes it) because every language's
//!   standard library has it (zlib `crc32`, Python `binascii.crc32`, Go `hash/crc32`), so the
//!   storage-service side needs no special code, and `crc32fast` runs at memory speed with
//!   PCLMULQDQ, a small cost next to the copy every frame already pays.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::device::{BoundedString, DeviceClass, DeviceFlags, DeviceInfo};
use crate::error::{DriverError, ProtocolError, status_from_code, status_to_code};
use crate::message::{
    ErrorReply, HotplugEvent, IoFlags, IoOp, IoRequest, IoResponse, ManagementRequest,
    ManagementResponse, Message, MessageType, ShutdownReason,
};

/// Frame magic: the bytes `O R I F` ("Orion IPC frame") at offset 0.
pub const MAGIC: u32 = u32::from_le_bytes(*b"ORIF");
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Header length in bytes; the payload starts here.
pub const HEADER_LEN: usize = 32;
/// Largest payload accepted or produced: 16 MiB. Room for an 8 MiB I/O plus its fields, and a
/// bound on what a malicious `payload_len` can make a reader buffer.
pub const MAX_PAYLOAD_BYTES: u32 = 16 * 1024 * 1024;

/// Byte offset of the magic (`u32`).
pub const OFFSET_MAGIC: usize = 0;
/// Byte offset of the version (`u16`).
pub const OFFSET_VERSION: usize = 4;
/// Byte offset of the message type (`u16`).
pub const OFFSET_TYPE: usize = 6;
/// Byte offset of the sequence number (`u64`).
pub const OFFSET_SEQUENCE: usize = 8;
/// Byte offset of the payload length (`u32`).
pub const OFFSET_PAYLOAD_LEN: usize = 16;
/// Byte offset of the payload CRC-32 (`u32`).
pub const OFFSET_PAYLOAD_CRC: usize = 20;
/// Byte offset of the reserved word (`u32`, must be zero).
pub const OFFSET_RESERVED: usize = 24;
/// Byte offset of the header CRC-32 (`u32`) over bytes `0..28`.
pub const OFFSET_HEADER_CRC: usize = 28;

/// One message with its sequence number: the unit the codec encodes and decodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Chosen by the sender of a request (unique among its requests in flight); a reply carries
    /// the sequence of the request it answers.
    pub sequence: u64,
    /// The message.
    pub message: Message,
}

/// A decoded and verified header. Once a header decodes, the frame's length is trustworthy: a
/// stream reader that then fails on the payload can skip `frame_len()` bytes and stay in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version (always [`VERSION`] once decoded).
    pub version: u16,
    /// Raw message type; may be one this version does not know.
    pub message_type: u16,
    /// Sequence number.
    pub sequence: u64,
    /// Payload length in bytes, at most [`MAX_PAYLOAD_BYTES`].
    pub payload_len: u32,
    /// CRC-32 of the payload as sent.
    pub payload_crc: u32,
}

impl FrameHeader {
    /// Whole frame length in bytes, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }
}

/// Which checksum failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumRegion {
    /// The header CRC (bytes 28..32) over bytes 0..28.
    Header,
    /// The payload CRC (bytes 20..24) over the payload.
    Payload,
}

/// Why a byte string is not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes so far are a valid frame prefix; at least `bytes` more are needed (exactly
    /// `bytes` once the header is complete). Returned only by [`decode`] and [`decode_header`].
    NeedMore {
        /// Bytes still missing.
        bytes: usize,
    },
    /// [`decode_exact`] was given only part of a frame; at least `missing_bytes` are missing.
    Truncated {
        /// Bytes missing.
        missing_bytes: usize,
    },
    /// [`decode_exact`] was given a whole frame followed by more bytes.
    TrailingBytes {
        /// Bytes after the frame.
        count: usize,
    },
    /// The first bytes are not the frame magic: not a frame, or a stream out of sync.
    BadMagic,
    /// A protocol version this crate does not speak.
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// A message type this version does not define.
    UnknownType {
        /// The type code found.
        message_type: u16,
    },
    /// `payload_len` exceeds [`MAX_PAYLOAD_BYTES`].
    LengthTooLarge {
        /// The length found.
        payload_len: u32,
        /// The limit.
        max: u32,
    },
    /// A CRC does not match.
    BadChecksum {
        /// Which one.
        region: ChecksumRegion,
        /// CRC stored in the frame.
        stored: u32,
        /// CRC computed over the bytes received.
        computed: u32,
    },
    /// The frame is intact but its contents break the protocol.
    Malformed {
        /// What is wrong.
        reason: MalformedReason,
    },
}

/// What is wrong inside an intact frame (or a message handed to the encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedReason {
    /// The reserved header word is not zero.
    ReservedNotZero,
    /// The payload ends in the middle of a field.
    PayloadTooShort,
    /// The payload has bytes after its last field.
    PayloadTooLong,
    /// A string length exceeds the bound of its field.
    StringTooLong,
    /// A string is not UTF-8.
    InvalidUtf8,
    /// An enumerated field holds a value this version does not define.
    UnknownCode {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A flag is set on an operation it does not apply to (FUA on a read or flush).
    FlagNotAllowed,
    /// A flush with a non-zero sector or sector count.
    FlushWithRange,
    /// A read, write, discard or write-zeroes of zero sectors.
    ZeroLength,
    /// A read or write above `MAX_IO_SECTORS`, or read data above `MAX_IO_BYTES`.
    IoTooLarge,
    /// `sector + sector_count` overflows.
    SectorOverflow,
    /// The data length does not match the operation (write ≠ `sector_count * 512`, data on a
    /// non-write, read data not a whole number of sectors).
    DataLengthMismatch,
    /// A failed I/O response carries data.
    DataWithError,
    /// A device description breaks its rules (block size, capacity).
    BadDeviceInfo,
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload would exceed [`MAX_PAYLOAD_BYTES`].
    PayloadTooLarge {
        /// The payload length it would have.
        len: usize,
    },
    /// The message breaks a protocol rule; a peer would reject it.
    Invalid {
        /// Which rule.
        reason: MalformedReason,
    },
}

/// CRC-32 (IEEE) of the header's first 28 bytes, as stored at [`OFFSET_HEADER_CRC`].
pub fn header_checksum(header: &[u8; HEADER_LEN]) -> u32 {
    crc32fast::hash(&header[..OFFSET_HEADER_CRC])
}

/// CRC-32 (IEEE) of a payload, as stored at [`OFFSET_PAYLOAD_CRC`].
pub fn payload_checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// Encodes a frame into a new buffer.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(frame, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `frame` to `out` and returns its length; on error `out` is unchanged.
/// Lets a sender reuse one buffer for every frame on the I/O path.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    frame
        .message
        .validate()
        .map_err(|reason| EncodeError::Invalid { reason })?;
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    encode_payload(&frame.message, out);
    let payload_len = out.len() - start - HEADER_LEN;
    let Some(payload_len_u32) = u32::try_from(payload_len)
        .ok()
        .filter(|&len| len <= MAX_PAYLOAD_BYTES)
    else {
        out.truncate(start);
        return Err(EncodeError::PayloadTooLarge { len: payload_len });
    };
    let crc = payload_checksum(&out[start + HEADER_LEN..]);
    let mut header = [0u8; HEADER_LEN];
    put(&mut header, OFFSET_MAGIC, &MAGIC.to_le_bytes());
    put(&mut header, OFFSET_VERSION, &VERSION.to_le_bytes());
    put(
        &mut header,
        OFFSET_TYPE,
        &frame.message.message_type().code().to_le_bytes(),
    );
    put(&mut header, OFFSET_SEQUENCE, &frame.sequence.to_le_bytes());
    put(
        &mut header,
        OFFSET_PAYLOAD_LEN,
        &payload_len_u32.to_le_bytes(),
    );
    put(&mut header, OFFSET_PAYLOAD_CRC, &crc.to_le_bytes());
    let header_crc = header_checksum(&header);
    put(&mut header, OFFSET_HEADER_CRC, &header_crc.to_le_bytes());
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Ok(HEADER_LEN + payload_len)
}

fn put(header: &mut [u8; HEADER_LEN], offset: usize, bytes: &[u8]) {
    header[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn field<const N: usize>(header: &[u8; HEADER_LEN], offset: usize) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&header[offset..offset + N]);
    bytes
}

/// Decodes and verifies the header at the start of `buf`.
///
/// Checks, in this order: magic (on however many of its bytes are present, so a desynchronised
/// stream fails at once), version (before the header CRC, because a future version may lay the
/// header out differently and must get `UnsupportedVersion`, not `BadChecksum`), completeness,
/// header CRC, reserved word, payload length. The message type is not checked here.
pub fn decode_header(buf: &[u8]) -> Result<FrameHeader, FrameError> {
    let magic = MAGIC.to_le_bytes();
    let present = buf.len().min(magic.len());
    if buf[..present] != magic[..present] {
        return Err(FrameError::BadMagic);
    }
    if let Some(&[lo, hi]) = buf.get(OFFSET_VERSION..OFFSET_VERSION + 2) {
        let version = u16::from_le_bytes([lo, hi]);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { version });
        }
    }
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::NeedMore {
            bytes: HEADER_LEN - buf.len(),
        });
    };
    let stored = u32::from_le_bytes(field(header, OFFSET_HEADER_CRC));
    let computed = header_checksum(header);
    if stored != computed {
        return Err(FrameError::BadChecksum {
            region: ChecksumRegion::Header,
            stored,
            computed,
        });
    }
    if u32::from_le_bytes(field(header, OFFSET_RESERVED)) != 0 {
        return Err(FrameError::Malformed {
            reason: MalformedReason::ReservedNotZero,
        });
    }
    let payload_len = u32::from_le_bytes(field(header, OFFSET_PAYLOAD_LEN));
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(FrameError::LengthTooLarge {
            payload_len,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(FrameHeader {
        version: VERSION,
        message_type: u16::from_le_bytes(field(header, OFFSET_TYPE)),
        sequence: u64::from_le_bytes(field(header, OFFSET_SEQUENCE)),
        payload_len,
        payload_crc: u32::from_le_bytes(field(header, OFFSET_PAYLOAD_CRC)),
    })
}

/// Decodes the frame at the start of `buf`; returns it and the number of bytes it occupied.
///
/// For a stream: append received bytes to a buffer, call `decode`, on `NeedMore { bytes }` read
/// at least `bytes` more, on success drop the consumed bytes and repeat. Bytes after the frame
/// are left alone. Any input yields a frame or an error, never a panic, and nothing is allocated
/// beyond the bytes actually present in `buf`.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
    let header = decode_header(buf)?;
    let message_type =
        MessageType::from_code(header.message_type).ok_or(FrameError::UnknownType {
            message_type: header.message_type,
        })?;
    let frame_len = header.frame_len();
    let Some(payload) = buf.get(HEADER_LEN..frame_len) else {
        return Err(FrameError::NeedMore {
            bytes: frame_len - buf.len(),
        });
    };
    let computed = payload_checksum(payload);
    if computed != header.payload_crc {
        return Err(FrameError::BadChecksum {
            region: ChecksumRegion::Payload,
            stored: header.payload_crc,
            computed,
        });
    }
    let message = decode_payload(message_type, payload)
        .and_then(|m| m.validate().map(|()| m))
        .map_err(|reason| FrameError::Malformed { reason })?;
    Ok((
        Frame {
            sequence: header.sequence,
            message,
        },
        frame_len,
    ))
}

/// Decodes a buffer that must hold exactly one frame (a kernel IPC message, a datagram).
pub fn decode_exact(buf: &[u8]) -> Result<Frame, FrameError> {
    match decode(buf) {
        Ok((frame, used)) if used == buf.len() => Ok(frame),
        Ok((_, used)) => Err(FrameError::TrailingBytes {
            count: buf.len() - used,
        }),
        Err(FrameError::NeedMore { bytes }) => Err(FrameError::Truncated {
            missing_bytes: bytes,
        }),
        Err(e) => Err(e),
    }
}

// ---- payload encodings ---------------------------------------------------------------------
//
// Integers little-endian; strings as a u16 byte length then UTF-8 bytes; the variable-length data
// of I/O and management messages is "the rest of the payload", so it costs no length field and
// cannot disagree with one.

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_str<const MAX: usize>(out: &mut Vec<u8>, s: &BoundedString<MAX>) {
    // A BoundedString longer than u16::MAX cannot be built with a bound this protocol uses.
    let len = u16::try_from(s.len()).expect("protocol string bounds fit in u16");
    put_u16(out, len);
    out.extend_from_slice(s.as_bytes());
}

fn encode_device_info(out: &mut Vec<u8>, d: &DeviceInfo) {
    put_u32(out, d.id);
    put_u16(out, d.class.code());
    put_u16(out, d.flags.bits());
    put_u32(out, d.block_size_bytes);
    put_u64(out, d.capacity_blocks);
    put_u8(out, u8::from(d.irq.is_some()));
    put_u32(out, d.irq.unwrap_or(0));
    put_str(out, &d.name);
    put_str(out, &d.vendor);
    put_str(out, &d.model);
    put_str(out, &d.serial);
}

fn encode_payload(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Probe(device) => encode_device_info(out, device),
        Message::Init | Message::Ack => {}
        Message::Shutdown { reason } => put_u8(out, reason.code()),
        Message::Interrupt { irq, timestamp_ns } => {
            put_u32(out, *irq);
            put_u64(out, *timestamp_ns);
        }
        Message::Timer { timer_id, now_ns } => {
            put_u32(out, *timer_id);
            put_u64(out, *now_ns);
        }
        Message::ArmTimer {
            timer_id,
            deadline_ns,
        } => {
            put_u32(out, *timer_id);
            put_u64(out, *deadline_ns);
        }
        Message::Hotplug { event, device } => {
            put_u8(out, event.code());
            encode_device_info(out, device);
        }
        Message::IoRequest(r) => {
            put_u32(out, r.device_id);
            put_u16(out, r.op.code());
            put_u16(out, r.flags.bits());
            put_u64(out, r.sector);
            put_u32(out, r.sector_count);
            out.extend_from_slice(&r.data);
        }
        Message::ManagementRequest(r) => {
            put_u16(out, r.opcode);
            out.extend_from_slice(&r.payload);
        }
        Message::IoResponse(r) => {
            put_u32(out, status_to_code(r.status));
            out.extend_from_slice(&r.data);
        }
        Message::ManagementResponse(r) => {
            put_u16(out, r.opcode);
            put_u32(out, status_to_code(r.status));
            out.extend_from_slice(&r.payload);
        }
        Message::Error(e) => {
            put_u32(out, e.error.status_code());
            put_str(out, &e.detail);
        }
    }
}

/// A cursor over an untrusted payload: every read is bounds-checked into a `MalformedReason`.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], MalformedReason> {
        let Some((head, tail)) = self.rest.split_at_checked(len) else {
            return Err(MalformedReason::PayloadTooShort);
        };
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MalformedReason> {
        let Some((head, tail)) = self.rest.split_first_chunk::<N>() else {
            return Err(MalformedReason::PayloadTooShort);
        };
        self.rest = tail;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, MalformedReason> {
        self.array::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Result<u16, MalformedReason> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, MalformedReason> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, MalformedReason> {
        self.array().map(u64::from_le_bytes)
    }
    fn string<const MAX: usize>(&mut self) -> Result<BoundedString<MAX>, MalformedReason> {
        let len = usize::from(self.u16()?);
        if len > MAX {
            return Err(MalformedReason::StringTooLong);
        }
        let bytes = self.take(len)?;
        let s = core::str::from_utf8(bytes).map_err(|_| MalformedReason::InvalidUtf8)?;
        BoundedString::try_from(String::from(s)).map_err(|_| MalformedReason::StringTooLong)
    }
    /// The rest of the payload as owned data; bounded by the bytes actually received.
    fn remainder(&mut self) -> Vec<u8> {
        let rest = core::mem::take(&mut self.rest);
        rest.to_vec()
    }
    fn finish(&self) -> Result<(), MalformedReason> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(MalformedReason::PayloadTooLong)
        }
    }
}

fn unknown(field: &'static str, value: impl Into<u32>) -> MalformedReason {
    MalformedReason::UnknownCode {
        field,
        value: value.into(),
    }
}

fn decode_status(r: &mut Reader<'_>) -> Result<Result<(), DriverError>, MalformedReason> {
    let code = r.u32()?;
    status_from_code(code).ok_or(unknown("status", code))
}

fn decode_device_info(r: &mut Reader<'_>) -> Result<DeviceInfo, MalformedReason> {
    let id = r.u32()?;
    let class_code = r.u16()?;
    let class = DeviceClass::from_code(class_code).ok_or(unknown("device class", class_code))?;
    let flag_bits = r.u16()?;
    let flags = DeviceFlags::from_bits(flag_bits).ok_or(unknown("device flags", flag_bits))?;
    let block_size_bytes = r.u32()?;
    let capacity_blocks = r.u64()?;
    let irq_present = r.u8()?;
    let irq_value = r.u32()?;
    // Absent means the value is 0, so each DeviceInfo has exactly one encoding.
    let irq = match (irq_present, irq_value) {
        (0, 0) => None,
        (1, irq) => Some(irq),
        (0, v) => return Err(unknown("absent irq", v)),
        (p, _) => return Err(unknown("irq present", p)),
    };
    Ok(DeviceInfo {
        id,
        class,
        flags,
        block_size_bytes,
        capacity_blocks,
        irq,
        name: r.string()?,
        vendor: r.string()?,
        model: r.string()?,
        serial: r.string()?,
    })
}

fn decode_payload(message_type: MessageType, payload: &[u8]) -> Result<Message, MalformedReason> {
    let mut r = Reader { rest: payload };
    let message = match message_type {
        MessageType::Probe => Message::Probe(decode_device_info(&mut r)?),
        MessageType::Init => Message::Init,
        MessageType::Ack => Message::Ack,
        MessageType::Shutdown => {
            let code = r.u8()?;
            Message::Shutdown {
                reason: ShutdownReason::from_code(code).ok_or(unknown("shutdown reason", code))?,
            }
        }
        MessageType::Interrupt => Message::Interrupt {
            irq: r.u32()?,
            timestamp_ns: r.u64()?,
        },
        MessageType::Timer => Message::Timer {
            timer_id: r.u32()?,
            now_ns: r.u64()?,
        },
        MessageType::ArmTimer => Message::ArmTimer {
            timer_id: r.u32()?,
            deadline_ns: r.u64()?,
        },
        MessageType::Hotplug => {
            let code = r.u8()?;
            let event = HotplugEvent::from_code(code).ok_or(unknown("hotplug event", code))?;
            Message::Hotplug {
                event,
                device: decode_device_info(&mut r)?,
            }
        }
        MessageType::IoRequest => {
            let device_id = r.u32()?;
            let op_code = r.u16()?;
            let op = IoOp::from_code(op_code).ok_or(unknown("io op", op_code))?;
            let flag_bits = r.u16()?;
            let flags = IoFlags::from_bits(flag_bits).ok_or(unknown("io flags", flag_bits))?;
            Message::IoRequest(IoRequest {
                device_id,
                op,
                flags,
                sector: r.u64()?,
                sector_count: r.u32()?,
                data: r.remainder(),
            })
        }
        MessageType::ManagementRequest => Message::ManagementRequest(ManagementRequest {
            opcode: r.u16()?,
            payload: r.remainder(),
        }),
        MessageType::IoResponse => Message::IoResponse(IoResponse {
            status: decode_status(&mut r)?,
            data: r.remainder(),
        }),
        MessageType::ManagementResponse => Message::ManagementResponse(ManagementResponse {
            opcode: r.u16()?,
            status: decode_status(&mut r)?,
            payload: r.remainder(),
        }),
        MessageType::Error => {
            let code = r.u32()?;
            let error = DriverError::from_status_code(code).ok_or(unknown("error status", code))?;
            Message::Error(ErrorReply {
                error,
                detail: r.string()?,
            })
        }
    };
    r.finish()?;
    Ok(message)
}

impl fmt::Display for ChecksumRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumRegion::Header => "header",
            ChecksumRegion::Payload => "payload",
        })
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MalformedReason::ReservedNotZero => f.write_str("reserved header field is not zero"),
            MalformedReason::PayloadTooShort => f.write_str("payload ends inside a field"),
            MalformedReason::PayloadTooLong => {
                f.write_str("payload has bytes after its last field")
            }
            MalformedReason::StringTooLong => f.write_str("string longer than its field allows"),
            MalformedReason::InvalidUtf8 => f.write_str("string is not UTF-8"),
            MalformedReason::UnknownCode { field, value } => {
                write!(f, "unknown {field} value {value:#x}")
            }
            MalformedReason::FlagNotAllowed => f.write_str("flag not allowed on this operation"),
            MalformedReason::FlushWithRange => f.write_str("flush with a sector range"),
            MalformedReason::ZeroLength => f.write_str("request of zero sectors"),
            MalformedReason::IoTooLarge => f.write_str("I/O larger than the protocol maximum"),
            MalformedReason::SectorOverflow => f.write_str("sector range overflows"),
            MalformedReason::DataLengthMismatch => {
                f.write_str("data length does not match the operation")
            }
            MalformedReason::DataWithError => f.write_str("failed I/O response carries data"),
            MalformedReason::BadDeviceInfo => f.write_str("invalid device description"),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NeedMore { bytes } => write!(f, "incomplete frame: {bytes} more bytes"),
            FrameError::Truncated { missing_bytes } => {
                write!(f, "truncated frame: {missing_bytes} bytes missing")
            }
            FrameError::TrailingBytes { count } => write!(f, "{count} bytes after the frame"),
            FrameError::BadMagic => f.write_str("bad frame magic"),
            FrameError::UnsupportedVersion { version } => {
                write!(f, "unsupported protocol version {version}")
            }
            FrameError::UnknownType { message_type } => {
                write!(f, "unknown message type {message_type:#06x}")
            }
            FrameError::LengthTooLarge { payload_len, max } => {
                write!(f, "payload length {payload_len} exceeds the maximum {max}")
            }
            FrameError::BadChecksum {
                region,
                stored,
                computed,
            } => write!(
                f,
                "{region} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            FrameError::Malformed { reason } => write!(f, "malformed frame: {reason}"),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::PayloadTooLarge { len } => write!(
                f,
                "payload of {len} bytes exceeds the maximum {MAX_PAYLOAD_BYTES}"
            ),
            EncodeError::Invalid { reason } => write!(f, "invalid message: {reason}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}
#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// A frame that cannot be decoded is the peer's fault: it maps to a protocol error, which is the
/// status the driver answers with.
impl From<FrameError> for DriverError {
    fn from(_: FrameError) -> Self {
        DriverError::Protocol(ProtocolError::BadFrame)
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
