//! `DriverError`, the error every driver operation returns, and its stable wire status codes.

use core::fmt;

/// Status code meaning success in every status field of a frame.
pub const STATUS_OK: u32 = 0;

/// First status code of the protocol-error block; `STATUS_PROTOCOL_BASE + ProtocolError code`.
pub const STATUS_PROTOCOL_BASE: u32 = 0x100;

/// Why a driver operation failed.
///
/// Each variant has a stable numeric status code ([`DriverError::status_code`]) that travels in
/// response frames; the codes are part of the wire protocol and never change meaning. A new
/// variant gets a new code and a protocol version bump, because an older peer rejects a frame
/// carrying a code it does not know rather than guess what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverError {
    /// No such device, array, member or object. Also a probe's answer for "not my device".
    NotFound,
    /// A request argument is invalid (misaligned sector, bad length, bad option).
    InvalidArgument,
    /// The device failed the I/O, or the data is lost beyond what redundancy can repair.
    Io,
    /// No space left: no spare, no free slot, the device is too small.
    NoSpace,
    /// The object is in use or an operation on it is already running; retry later.
    Busy,
    /// The driver does not implement this operation.
    Unsupported,
    /// The request reaches past the end of the device.
    OutOfRange,
    /// A bounded resource (buffer pool, queue, heap) is exhausted; retry later.
    NoMemory,
    /// The device or a peer did not answer in time.
    Timeout,
    /// The device or array is read-only and the request would modify it.
    ReadOnly,
    /// The object to create already exists (array name in use, member already present).
    AlreadyExists,
    /// The driver or the device is not initialised or not running yet.
    NotReady,
    /// The request was cancelled before completion (shutdown, device removal).
    Aborted,
    /// Data failed an integrity check (per-block checksum) and could not be repaired.
    Corrupted,
    /// The peer broke the protocol: this is bad client input, not a device fault.
    Protocol(ProtocolError),
}

/// How a peer broke the protocol; carried by [`DriverError::Protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolError {
    /// A frame could not be decoded (see `FrameError` on the receiving side).
    BadFrame,
    /// A well-formed message the receiver does not accept in this direction or state.
    UnexpectedMessage,
    /// A management opcode the driver does not know.
    UnknownOpcode,
    /// A management payload the driver could not parse.
    BadPayload,
}

impl ProtocolError {
    const ALL: [ProtocolError; 4] = [
        ProtocolError::BadFrame,
        ProtocolError::UnexpectedMessage,
        ProtocolError::UnknownOpcode,
        ProtocolError::BadPayload,
    ];

    /// The code inside the protocol block (added to [`STATUS_PROTOCOL_BASE`]).
    pub const fn code(self) -> u32 {
        match self {
            ProtocolError::BadFrame => 1,
            ProtocolError::UnexpectedMessage => 2,
            ProtocolError::UnknownOpcode => 3,
            ProtocolError::BadPayload => 4,
        }
    }

    /// Inverse of [`ProtocolError::code`].
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

impl DriverError {
    /// Every error that is not a protocol error, for exhaustive mapping and tests.
    const SIMPLE: [DriverError; 14] = [
        DriverError::NotFound,
        DriverError::InvalidArgument,
        DriverError::Io,
        DriverError::NoSpace,
        DriverError::Busy,
        DriverError::Unsupported,
        DriverError::OutOfRange,
        DriverError::NoMemory,
        DriverError::Timeout,
        DriverError::ReadOnly,
        DriverError::AlreadyExists,
        DriverError::NotReady,
        DriverError::Aborted,
        DriverError::Corrupted,
    ];

    /// Every error value, protocol errors included (the list is small and finite).
    pub fn all() -> impl Iterator<Item = DriverError> {
        Self::SIMPLE
            .into_iter()
            .chain(ProtocolError::ALL.into_iter().map(DriverError::Protocol))
    }

    /// The stable, non-zero wire status code of this error.
    pub const fn status_code(self) -> u32 {
        match self {
            DriverError::NotFound => 1,
            DriverError::InvalidArgument => 2,
            DriverError::Io => 3,
            DriverError::NoSpace => 4,
            DriverError::Busy => 5,
            DriverError::Unsupported => 6,
            DriverError::OutOfRange => 7,
            DriverError::NoMemory => 8,
            DriverError::Timeout => 9,
            DriverError::ReadOnly => 10,
            DriverError::AlreadyExists => 11,
            DriverError::NotReady => 12,
            DriverError::Aborted => 13,
            DriverError::Corrupted => 14,
            DriverError::Protocol(p) => STATUS_PROTOCOL_BASE + p.code(),
        }
    }

    /// The error with this status code; `None` for [`STATUS_OK`] and for unknown codes.
    pub fn from_status_code(code: u32) -> Option<Self> {
        if let Some(p) = code
            .checked_sub(STATUS_PROTOCOL_BASE)
            .and_then(ProtocolError::from_code)
        {
            return Some(DriverError::Protocol(p));
        }
        Self::SIMPLE.into_iter().find(|e| e.status_code() == code)
    }
}

/// Status code of an operation outcome: [`STATUS_OK`] or the error's code.
pub fn status_to_code(status: Result<(), DriverError>) -> u32 {
    match status {
        Ok(()) => STATUS_OK,
        Err(e) => e.status_code(),
    }
}

/// Inverse of [`status_to_code`]; `None` for a code this protocol version does not define.
pub fn status_from_code(code: u32) -> Option<Result<(), DriverError>> {
    if code == STATUS_OK {
        Some(Ok(()))
    } else {
        DriverError::from_status_code(code).map(Err)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolError::BadFrame => "undecodable frame",
            ProtocolError::UnexpectedMessage => "unexpected message",
            ProtocolError::UnknownOpcode => "unknown management opcode",
            ProtocolError::BadPayload => "malformed management payload",
        })
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::NotFound => f.write_str("not found"),
            DriverError::InvalidArgument => f.write_str("invalid argument"),
            DriverError::Io => f.write_str("I/O error"),
            DriverError::NoSpace => f.write_str("no space left"),
            DriverError::Busy => f.write_str("busy"),
            DriverError::Unsupported => f.write_str("operation not supported"),
            DriverError::OutOfRange => f.write_str("request beyond the end of the device"),
            DriverError::NoMemory => f.write_str("out of memory or buffers"),
            DriverError::Timeout => f.write_str("timed out"),
            DriverError::ReadOnly => f.write_str("read-only"),
            DriverError::AlreadyExists => f.write_str("already exists"),
            DriverError::NotReady => f.write_str("not ready"),
            DriverError::Aborted => f.write_str("aborted"),
            DriverError::Corrupted => f.write_str("data integrity check failed"),
            DriverError::Protocol(p) => write!(f, "protocol error: {p}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DriverError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::string::ToString;

    #[test]
    fn every_error_round_trips_through_its_code() {
        for e in DriverError::all() {
            let code = e.status_code();
            assert_ne!(code, STATUS_OK, "{e:?} must not map to OK");
            assert_eq!(DriverError::from_status_code(code), Some(e));
            assert_eq!(status_from_code(status_to_code(Err(e))), Some(Err(e)));
        }
        assert_eq!(status_from_code(STATUS_OK), Some(Ok(())));
    }

    #[test]
    fn codes_and_messages_are_distinct() {
        let codes: BTreeSet<u32> = DriverError::all().map(|e| e.status_code()).collect();
        let texts: BTreeSet<_> = DriverError::all().map(|e| e.to_string()).collect();
        assert_eq!(codes.len(), DriverError::all().count());
        assert_eq!(texts.len(), DriverError::all().count());
    }

    #[test]
    fn codes_are_stable() {
        // These numbers are on the wire; changing one breaks every peer.
        assert_eq!(DriverError::NotFound.status_code(), 1);
        assert_eq!(DriverError::Io.status_code(), 3);
        assert_eq!(DriverError::Corrupted.status_code(), 14);
        assert_eq!(
            DriverError::Protocol(ProtocolError::BadFrame).status_code(),
            0x101
        );
        assert_eq!(
            DriverError::Protocol(ProtocolError::BadPayload).status_code(),
            0x104
        );
    }

    #[test]
    fn unknown_codes_are_rejected() {
        for code in [15, 99, 0x100, 0x105, 0x200, u32::MAX] {
            assert_eq!(DriverError::from_status_code(code), None, "code {code:#x}");
            assert_eq!(status_from_code(code), None, "code {code:#x}");
        }
    }
}
