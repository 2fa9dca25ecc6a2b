//! Orion driver framework: the interface between the microkernel and a userspace driver.
//!
//! A driver implements [`OrionDriver`] (and [`BlockDriver`] if it drives a disk), receives
//! [`Frame`]s from the kernel and the storage service, hands them to [`dispatch`], and sends
//! back the reply frame it returns. This crate is `no_std` + `alloc`; the `std` feature only
//! adds `std::error::Error` impls.
//!
//! # Frame format (protocol version 1)
//!
//! Every message travels as one frame: a 32-byte header then the payload. All integers are
//! little-endian. Checksums are CRC-32 with the IEEE polynomial as zlib's `crc32()` computes it
//! (reflected 0xEDB88320, initial value and final xor 0xFFFFFFFF; `crc32(b"123456789") ==
//! 0xCBF43926`).
//!
//! | Offset | Size | Field         | Meaning                                                    |
//! |-------:|-----:|---------------|------------------------------------------------------------|
//! | 0      | 4    | `magic`       | the bytes `4F 52 49 46` ("ORIF"), i.e. `0x4649524F` as u32  |
//! | 4      | 2    | `version`     | `1`                                                        |
//! | 6      | 2    | `type`        | message type, table below                                  |
//! | 8      | 8    | `sequence`    | request: chosen by its sender; reply: the request's         |
//! | 16     | 4    | `payload_len` | payload bytes, at most 16 MiB (16 777 216)                 |
//! | 20     | 4    | `payload_crc` | CRC-32 of the payload (0 when empty)                       |
//! | 24     | 4    | `reserved`    | must be 0                                                  |
//! | 28     | 4    | `header_crc`  | CRC-32 of bytes 0..28                                      |
//! | 32     | n    | payload       | `payload_len` bytes, layout by type below                  |
//!
//! A receiver checks, in order: magic, version, header completeness, `header_crc`, `reserved`,
//! `payload_len`, `type`, payload completeness, `payload_crc`, then the payload layout and
//! rules. Once the header has passed, the frame length is trustworthy: a stream reader that
//! meets a bad payload can skip the frame, answer an `Error` with its sequence, and go on.
//! Before that, the stream is out of sync and the connection should be dropped.
//!
//! ## Message types and payloads
//!
//! Payload fields follow each other without padding. `str` is a u16 byte length then that many
//! UTF-8 bytes (bound in brackets); `rest` is all remaining payload bytes; `status` is a u32
//! status code (0 = success, table below). A payload with bytes after its last field is
//! malformed, and so is any unknown enum code or flag bit.
//!
//! | Type     | Name                | Payload                                                  |
//! |----------|---------------------|----------------------------------------------------------|
//! | `0x0001` | Probe               | DeviceInfo                                               |
//! | `0x0002` | Init                | empty                                                    |
//! | `0x0003` | Shutdown            | u8 reason (1 power-off, 2 reboot, 3 unload)              |
//! | `0x0004` | Interrupt           | u32 irq, u64 timestamp_ns                                |
//! | `0x0005` | Timer               | u32 timer_id, u64 now_ns                                 |
//! | `0x0006` | Hotplug             | u8 event (1 added, 2 removed), DeviceInfo                |
//! | `0x0007` | ArmTimer            | u32 timer_id, u64 deadline_ns (driver → kernel)          |
//! | `0x0010` | IoRequest           | u32 device_id, u16 op, u16 flags, u64 sector, u32 sector_count, rest data |
//! | `0x0020` | ManagementRequest   | u16 opcode, rest payload                                 |
//! | `0x8001` | Ack                 | empty                                                    |
//! | `0x8010` | IoResponse          | status, rest data                                        |
//! | `0x8020` | ManagementResponse  | u16 opcode, status, rest payload                         |
//! | `0x80FF` | Error               | status (non-zero), str detail [256]                      |
//!
//! Replies have bit 15 of the type set. `DeviceInfo` is: u32 id, u16 class (1 block,
//! 2 storage controller, 3 char, 4 network, 0xFFFF other), u16 flags (bit 0 read-only,
//! 1 removable, 2 rotational, 3 volatile write cache, 4 discard), u32 block_size_bytes (0, or a
//! power of two 512..=65536; 0 requires capacity 0), u64 capacity_blocks, u8 irq_present (0/1),
//! u32 irq (0 when absent), str name [32], str vendor [32], str model [64], str serial [64].
//!
//! `IoRequest`: `op` is 1 read, 2 write, 3 flush, 4 discard, 5 write-zeroes; `flags` bit 0 is
//! FUA (write, discard, write-zeroes only). `sector` and `sector_count` are in 512-byte units.
//! Flush has sector and count 0; every other op has a count of at least 1; reads and writes at
//! most 16384 sectors (8 MiB); `sector + sector_count` must not overflow u64. Only a write has
//! data, exactly `sector_count * 512` bytes. An `IoResponse` carries data only on success, a
//! multiple of 512 bytes, at most 8 MiB.
//!
//! ## Status codes
//!
//! | Code | Meaning         | Code | Meaning          | Code    | Meaning                        |
//! |-----:|-----------------|-----:|------------------|--------:|--------------------------------|
//! | 0    | success         | 6    | unsupported      | 12      | not ready                      |
//! | 1    | not found       | 7    | out of range     | 13      | aborted                        |
//! | 2    | invalid argument| 8    | no memory        | 14      | corrupted                      |
//! | 3    | I/O error       | 9    | timeout          | `0x101` | protocol: bad frame            |
//! | 4    | no space        | 10   | read-only        | `0x102` | protocol: unexpected message   |
//! | 5    | busy            | 11   | already exists   | `0x103`/`0x104` | protocol: unknown opcode / bad payload |
//!
//! A new message type, enum value, flag or status code needs a new protocol version: receivers
//! reject what they do not know rather than guess.
//!
//! # Example: a stream reader
//!
//! ```
//! use orion_driver::{decode, encode, Frame, FrameError, Message};
//!
//! let wire = encode(&Frame { sequence: 1, message: Message::Init }).unwrap();
//! let mut buffer = Vec::new();
//! let mut received = Vec::new();
//! for chunk in wire.chunks(5) {
//!     buffer.extend_from_slice(chunk);
//!     match decode(&buffer) {
//!         Ok((frame, used)) => {
//!             received.push(frame);
//!             buffer.drain(..used);
//!         }
//!         Err(FrameError::NeedMore { bytes }) => assert!(bytes > 0), // read more
//!         Err(e) => panic!("drop the connection: {e}"),
//!     }
//! }
//! assert_eq!(received, [Frame { sequence: 1, message: Message::Init }]);
//! ```
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod device;
pub mod driver;
pub mod error;
pub mod frame;
pub mod message;

pub use device::{
    BoundedString, DeviceClass, DeviceFlags, DeviceInfo, DeviceInfoError, StringTooLong,
};
pub use driver::{
    BlockDriver, OrionDriver, bad_frame_reply, check_block_range, default_reply, dispatch, serve_io,
};
pub use error::{DriverError, ProtocolError, STATUS_OK, status_from_code, status_to_code};
pub use frame::{
    ChecksumRegion, EncodeError, Frame, FrameError, FrameHeader, HEADER_LEN, MAX_PAYLOAD_BYTES,
    MalformedReason, VERSION, decode, decode_exact, decode_header, encode, encode_into,
};
pub use message::{
    ErrorReply, HotplugEvent, IoFlags, IoOp, IoRequest, IoResponse, MAX_IO_SECTORS,
    ManagementRequest, ManagementResponse, Message, MessageType, SECTOR_BYTES, ShutdownReason,
};
