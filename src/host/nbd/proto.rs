//! The NBD wire codec: handshake, option, request and reply messages encoded and decoded
//! without I/O, and the pure check that turns a request header into what the server does.
//!
//! Written from the NBD project's `doc/proto.md`. Only what this server speaks is modelled:
//! fixed newstyle negotiation and simple replies. Structured replies, extended headers,
//! metadata contexts and TLS are recognised as option numbers and refused by the server.
//! Every integer on the wire is big-endian.

use core::fmt;

/// `NBDMAGIC`: first word the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second word of the greeting and the magic of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a compact (non-extended) transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

pub const GREETING_BYTES: usize = 18;
pub const CLIENT_FLAGS_BYTES: usize = 4;
pub const OPTION_HEADER_BYTES: usize = 16;
pub const OPTION_REPLY_HEADER_BYTES: usize = 20;
pub const REQUEST_HEADER_BYTES: usize = 28;
pub const SIMPLE_REPLY_HEADER_BYTES: usize = 16;
/// Size, flags and the reserved zeroes answering `NBD_OPT_EXPORT_NAME`.
pub const EXPORT_NAME_REPLY_BYTES: usize = 8 + 2 + EXPORT_NAME_ZEROES_BYTES;
pub const EXPORT_NAME_ZEROES_BYTES: usize = 124;
/// Longest string (export name, description) the protocol allows.
pub const MAX_STRING_BYTES: usize = 4096;

// Handshake flags (server, 16 bits).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// The handshake flags this server sends.
pub const SERVER_HANDSHAKE_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

// Client flags (32 bits).
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags (16 bits).
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const FLAG_SEND_RESIZE: u16 = 1 << 9;
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// Option types.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_PEEK_EXPORT: u32 = 4;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types; errors have bit 31 set.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_FLAG_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

// Information types inside `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Command types.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

/// The error values a reply may carry (proto.md restricts them to this set).
#[allow(clippy::upper_case_acronyms)] // the protocol's own names
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NbdErrno {
    EPERM,
    EIO,
    ENOMEM,
    EINVAL,
    ENOSPC,
    EOVERFLOW,
    ENOTSUP,
    ESHUTDOWN,
}

impl NbdErrno {
    pub const ALL: [NbdErrno; 8] = [
        NbdErrno::EPERM,
        NbdErrno::EIO,
        NbdErrno::ENOMEM,
        NbdErrno::EINVAL,
        NbdErrno::ENOSPC,
        NbdErrno::EOVERFLOW,
        NbdErrno::ENOTSUP,
        NbdErrno::ESHUTDOWN,
    ];

    /// The value in a reply's error field.
    pub const fn code(self) -> u32 {
        match self {
            NbdErrno::EPERM => 1,
            NbdErrno::EIO => 5,
            NbdErrno::ENOMEM => 12,
            NbdErrno::EINVAL => 22,
            NbdErrno::ENOSPC => 28,
            NbdErrno::EOVERFLOW => 75,
            NbdErrno::ENOTSUP => 95,
            NbdErrno::ESHUTDOWN => 108,
        }
    }

    pub fn from_code(code: u32) -> Option<NbdErrno> {
        NbdErrno::ALL.into_iter().find(|e| e.code() == code)
    }
}

impl fmt::Display for NbdErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            NbdErrno::EPERM => "operation not permitted",
            NbdErrno::EIO => "input/output error",
            NbdErrno::ENOMEM => "cannot allocate memory",
            NbdErrno::EINVAL => "invalid argument",
            NbdErrno::ENOSPC => "no space left on device",
            NbdErrno::EOVERFLOW => "value too large",
            NbdErrno::ENOTSUP => "operation not supported",
            NbdErrno::ESHUTDOWN => "server is shutting down",
        };
        write!(f, "{text} ({self:?})")
    }
}

/// A message that cannot be decoded at all: the connection cannot continue in step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// Fewer bytes than the fixed part of the message.
    Truncated {
        needed_bytes: usize,
        got_bytes: usize,
    },
    /// A magic number that is not the one this message starts with.
    BadMagic { expected: u64, found: u64 },
    /// Client flags with bits this server does not know or did not offer.
    UnknownClientFlags { flags: u32 },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Truncated {
                needed_bytes,
                got_bytes,
            } => write!(f, "message truncated: {got_bytes} of {needed_bytes} bytes"),
            ProtoError::BadMagic { expected, found } => {
                write!(f, "bad magic {found:#x}, expected {expected:#x}")
            }
            ProtoError::UnknownClientFlags { flags } => {
                write!(f, "unknown client flags {flags:#x}")
            }
        }
    }
}

/// Option data the server understands the option of but cannot accept (`NBD_REP_ERR_INVALID`,
/// or a hard disconnect for `NBD_OPT_EXPORT_NAME`, which cannot be answered with an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// The data ends inside a field.
    Truncated,
    /// Bytes left over after the last field.
    TrailingBytes { extra_bytes: usize },
    /// An option that takes no data came with some.
    UnexpectedData { data_bytes: usize },
    /// A string longer than the protocol allows.
    StringTooLong { bytes: usize },
    /// A string that is not UTF-8 or contains NUL.
    BadString,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Truncated => write!(f, "option data truncated"),
            OptionError::TrailingBytes { extra_bytes } => {
                write!(f, "{extra_bytes} unexpected bytes after the option data")
            }
            OptionError::UnexpectedData { data_bytes } => {
                write!(f, "option takes no data but {data_bytes} bytes were sent")
            }
            OptionError::StringTooLong { bytes } => {
                write!(f, "string of {bytes} bytes exceeds {MAX_STRING_BYTES}")
            }
            OptionError::BadString => write!(f, "string is not UTF-8 or contains NUL"),
        }
    }
}

fn need(bytes: &[u8], needed_bytes: usize) -> Result<(), ProtoError> {
    if bytes.len() < needed_bytes {
        Err(ProtoError::Truncated {
            needed_bytes,
            got_bytes: bytes.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

fn check_string(bytes: &[u8]) -> Result<String, OptionError> {
    if bytes.len() > MAX_STRING_BYTES {
        return Err(OptionError::StringTooLong { bytes: bytes.len() });
    }
    if bytes.contains(&0) {
        return Err(OptionError::BadString);
    }
    core::str::from_utf8(bytes)
        .map(String::from)
        .map_err(|_| OptionError::BadString)
}

// ---------------------------------------------------------------------------------------
// Handshake

/// The server's opening: `NBDMAGIC`, `IHAVEOPT` and the handshake flags.
pub fn encode_greeting(handshake_flags: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&NBDMAGIC.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&handshake_flags.to_be_bytes());
}

/// Client side of [`encode_greeting`]: the handshake flags.
pub fn decode_greeting(bytes: &[u8]) -> Result<u16, ProtoError> {
    need(bytes, GREETING_BYTES)?;
    let magic = be64(bytes, 0);
    if magic != NBDMAGIC {
        return Err(ProtoError::BadMagic {
            expected: NBDMAGIC,
            found: magic,
        });
    }
    let newstyle = be64(bytes, 8);
    if newstyle != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            expected: IHAVEOPT,
            found: newstyle,
        });
    }
    Ok(be16(bytes, 16))
}

/// What the client answered to the greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientFlags {
    pub fixed_newstyle: bool,
    pub no_zeroes: bool,
}

impl ClientFlags {
    pub fn bits(self) -> u32 {
        let mut bits = 0;
        if self.fixed_newstyle {
            bits |= FLAG_C_FIXED_NEWSTYLE;
        }
        if self.no_zeroes {
            bits |= FLAG_C_NO_ZEROES;
        }
        bits
    }
}

pub fn encode_client_flags(flags: ClientFlags, out: &mut Vec<u8>) {
    out.extend_from_slice(&flags.bits().to_be_bytes());
}

/// The client's flags; a bit this server did not offer means the client speaks something
/// else, and the protocol says to drop the connection.
pub fn decode_client_flags(bytes: &[u8], server_flags: u16) -> Result<ClientFlags, ProtoError> {
    need(bytes, CLIENT_FLAGS_BYTES)?;
    let flags = be32(bytes, 0);
    let mut allowed = FLAG_C_FIXED_NEWSTYLE;
    if server_flags & FLAG_NO_ZEROES != 0 {
        allowed |= FLAG_C_NO_ZEROES;
    }
    if flags & !allowed != 0 {
        return Err(ProtoError::UnknownClientFlags { flags });
    }
    Ok(ClientFlags {
        fixed_newstyle: flags & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: flags & FLAG_C_NO_ZEROES != 0,
    })
}

/// The fixed part of a client option; `data_bytes` of data follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub data_bytes: u32,
}

pub fn encode_option_header(header: OptionHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&header.option.to_be_bytes());
    out.extend_from_slice(&header.data_bytes.to_be_bytes());
}

pub fn decode_option_header(bytes: &[u8]) -> Result<OptionHeader, ProtoError> {
    need(bytes, OPTION_HEADER_BYTES)?;
    let magic = be64(bytes, 0);
    if magic != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            expected: IHAVEOPT,
            found: magic,
        });
    }
    Ok(OptionHeader {
        option: be32(bytes, 8),
        data_bytes: be32(bytes, 12),
    })
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`: an export name and the information the
/// client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExportQuery {
    pub name: String,
    pub info_requests: Vec<u16>,
}

impl ExportQuery {
    pub fn requests(&self, info_type: u16) -> bool {
        self.info_requests.contains(&info_type)
    }
}

/// A client option, parsed. Options the server does not implement stay as their number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOption {
    ExportName(String),
    Abort,
    List,
    Info(ExportQuery),
    Go(ExportQuery),
    /// Any other option number (STARTTLS, STRUCTURED_REPLY, META_CONTEXT, EXTENDED_HEADERS,
    /// unknown ones): the server answers `NBD_REP_ERR_UNSUP` whatever the data.
    Unsupported(u32),
}

impl ClientOption {
    pub fn number(&self) -> u32 {
        match self {
            ClientOption::ExportName(_) => OPT_EXPORT_NAME,
            ClientOption::Abort => OPT_ABORT,
            ClientOption::List => OPT_LIST,
            ClientOption::Info(_) => OPT_INFO,
            ClientOption::Go(_) => OPT_GO,
            ClientOption::Unsupported(n) => *n,
        }
    }
}

fn parse_export_query(data: &[u8]) -> Result<ExportQuery, OptionError> {
    if data.len() < 4 {
        return Err(OptionError::Truncated);
    }
    let name_bytes = be32(data, 0) as usize;
    // The name is followed by at least the 16-bit request count.
    let name_end = 4usize
        .checked_add(name_bytes)
        .filter(|end| end.checked_add(2).is_some_and(|e| e <= data.len()))
        .ok_or(OptionError::Truncated)?;
    let name = check_string(&data[4..name_end])?;
    let count = be16(data, name_end) as usize;
    let list = &data[name_end + 2..];
    let list_bytes = count * 2;
    if list.len() < list_bytes {
        return Err(OptionError::Truncated);
    }
    if list.len() > list_bytes {
        return Err(OptionError::TrailingBytes {
            extra_bytes: list.len() - list_bytes,
        });
    }
    let info_requests = list.chunks_exact(2).map(|c| be16(c, 0)).collect();
    Ok(ExportQuery {
        name,
        info_requests,
    })
}

/// Parses the data of option `option`. Errors mean the option is known but malformed.
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption, OptionError> {
    match option {
        OPT_EXPORT_NAME => check_string(data).map(ClientOption::ExportName),
        // The protocol asks servers to ignore stray data on ABORT.
        OPT_ABORT => Ok(ClientOption::Abort),
        OPT_LIST if data.is_empty() => Ok(ClientOption::List),
        OPT_LIST => Err(OptionError::UnexpectedData {
            data_bytes: data.len(),
        }),
        OPT_INFO => parse_export_query(data).map(ClientOption::Info),
        OPT_GO => parse_export_query(data).map(ClientOption::Go),
        other => Ok(ClientOption::Unsupported(other)),
    }
}

/// Client side: the option's header and data. `Unsupported(n)` is sent with no data.
pub fn encode_option(option: &ClientOption, out: &mut Vec<u8>) {
    let mut data = Vec::new();
    match option {
        ClientOption::ExportName(name) => data.extend_from_slice(name.as_bytes()),
        ClientOption::Abort | ClientOption::List | ClientOption::Unsupported(_) => {}
        ClientOption::Info(q) | ClientOption::Go(q) => {
            data.extend_from_slice(&(q.name.len() as u32).to_be_bytes());
            data.extend_from_slice(q.name.as_bytes());
            data.extend_from_slice(&(q.info_requests.len() as u16).to_be_bytes());
            for r in &q.info_requests {
                data.extend_from_slice(&r.to_be_bytes());
            }
        }
    }
    encode_option_header(
        OptionHeader {
            option: option.number(),
            data_bytes: data.len() as u32,
        },
        out,
    );
    out.extend_from_slice(&data);
}

/// The fixed part of an option reply; `data_bytes` of data follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply_type: u32,
    pub data_bytes: u32,
}

/// A whole option reply.
pub fn encode_option_reply(option: u32, reply_type: u32, data: &[u8], out: &mut Vec<u8>) {
    assert!(
        data.len() <= u32::MAX as usize,
        "option reply data fits 32 bits"
    );
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Client side: the header of an option reply.
pub fn decode_option_reply_header(bytes: &[u8]) -> Result<OptionReplyHeader, ProtoError> {
    need(bytes, OPTION_REPLY_HEADER_BYTES)?;
    let magic = be64(bytes, 0);
    if magic != OPTION_REPLY_MAGIC {
        return Err(ProtoError::BadMagic {
            expected: OPTION_REPLY_MAGIC,
            found: magic,
        });
    }
    Ok(OptionReplyHeader {
        option: be32(bytes, 8),
        reply_type: be32(bytes, 12),
        data_bytes: be32(bytes, 16),
    })
}

/// The data of an `NBD_REP_SERVER` reply: name length, name, then a free-text description.
pub fn encode_rep_server(name: &str, description: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(description.as_bytes());
}

/// Client side of [`encode_rep_server`]: (name, description).
pub fn decode_rep_server(data: &[u8]) -> Result<(String, String), OptionError> {
    if data.len() < 4 {
        return Err(OptionError::Truncated);
    }
    let name_bytes = be32(data, 0) as usize;
    if name_bytes > data.len() - 4 {
        return Err(OptionError::Truncated);
    }
    let name = check_string(&data[4..4 + name_bytes])?;
    let description = check_string(&data[4 + name_bytes..])?;
    Ok((name, description))
}

/// One `NBD_REP_INFO` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoItem {
    Export {
        size_bytes: u64,
        transmission_flags: u16,
    },
    Name(String),
    Description(String),
    BlockSize {
        minimum_bytes: u32,
        preferred_bytes: u32,
        maximum_payload_bytes: u32,
    },
    /// An information type this codec does not know (the client must ignore it).
    Other {
        info_type: u16,
        data: Vec<u8>,
    },
}

/// The data of an `NBD_REP_INFO` reply.
pub fn encode_info(item: &InfoItem, out: &mut Vec<u8>) {
    match item {
        InfoItem::Export {
            size_bytes,
            transmission_flags,
        } => {
            out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
            out.extend_from_slice(&size_bytes.to_be_bytes());
            out.extend_from_slice(&transmission_flags.to_be_bytes());
        }
        InfoItem::Name(name) => {
            out.extend_from_slice(&INFO_NAME.to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        InfoItem::Description(text) => {
            out.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        InfoItem::BlockSize {
            minimum_bytes,
            preferred_bytes,
            maximum_payload_bytes,
        } => {
            out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
            out.extend_from_slice(&minimum_bytes.to_be_bytes());
            out.extend_from_slice(&preferred_bytes.to_be_bytes());
            out.extend_from_slice(&maximum_payload_bytes.to_be_bytes());
        }
        InfoItem::Other { info_type, data } => {
            out.extend_from_slice(&info_type.to_be_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// Client side of [`encode_info`].
pub fn decode_info(data: &[u8]) -> Result<InfoItem, OptionError> {
    if data.len() < 2 {
        return Err(OptionError::Truncated);
    }
    let info_type = be16(data, 0);
    let body = &data[2..];
    let exact = |bytes: usize| -> Result<(), OptionError> {
        match body.len() {
            n if n < bytes => Err(OptionError::Truncated),
            n if n > bytes => Err(OptionError::TrailingBytes {
                extra_bytes: n - bytes,
            }),
            _ => Ok(()),
        }
    };
    Ok(match info_type {
        INFO_EXPORT => {
            exact(10)?;
            InfoItem::Export {
                size_bytes: be64(body, 0),
                transmission_flags: be16(body, 8),
            }
        }
        INFO_NAME => InfoItem::Name(check_string(body)?),
        INFO_DESCRIPTION => InfoItem::Description(check_string(body)?),
        INFO_BLOCK_SIZE => {
            exact(12)?;
            InfoItem::BlockSize {
                minimum_bytes: be32(body, 0),
                preferred_bytes: be32(body, 4),
                maximum_payload_bytes: be32(body, 8),
            }
        }
        other => InfoItem::Other {
            info_type: other,
            data: body.to_vec(),
        },
    })
}

/// The answer to `NBD_OPT_EXPORT_NAME`: size, transmission flags and, unless the client
/// negotiated `NBD_FLAG_C_NO_ZEROES`, 124 reserved zero bytes.
pub fn encode_export_name_reply(
    size_bytes: u64,
    transmission_flags: u16,
    no_zeroes: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&size_bytes.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; EXPORT_NAME_ZEROES_BYTES]);
    }
}

// ---------------------------------------------------------------------------------------
// Transmission

/// A request header as sent; `length` bytes of payload follow it for `NBD_CMD_WRITE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub command: u16,
    /// The client's handle, echoed in the reply.
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub fn encode_request_header(header: &RequestHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out.extend_from_slice(&header.flags.to_be_bytes());
    out.extend_from_slice(&header.command.to_be_bytes());
    out.extend_from_slice(&header.cookie.to_be_bytes());
    out.extend_from_slice(&header.offset.to_be_bytes());
    out.extend_from_slice(&header.length.to_be_bytes());
}

/// Decodes the first [`REQUEST_HEADER_BYTES`] of `bytes`. A bad magic (including the
/// extended-header magic, which was never negotiated) means the stream is out of step.
pub fn decode_request_header(bytes: &[u8]) -> Result<RequestHeader, ProtoError> {
    need(bytes, REQUEST_HEADER_BYTES)?;
    let magic = be32(bytes, 0);
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::BadMagic {
            expected: REQUEST_MAGIC as u64,
            found: magic as u64,
        });
    }
    Ok(RequestHeader {
        flags: be16(bytes, 4),
        command: be16(bytes, 6),
        cookie: be64(bytes, 8),
        offset: be64(bytes, 16),
        length: be32(bytes, 24),
    })
}

/// A simple reply header; for a successful read the data follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimpleReplyHeader {
    /// Zero for success, else an [`NbdErrno`] code.
    pub error: u32,
    pub cookie: u64,
}

impl SimpleReplyHeader {
    pub fn new(cookie: u64, result: Result<(), NbdErrno>) -> Self {
        SimpleReplyHeader {
            error: result.err().map_or(0, NbdErrno::code),
            cookie,
        }
    }
}

pub fn encode_simple_reply_header(header: &SimpleReplyHeader) -> [u8; SIMPLE_REPLY_HEADER_BYTES] {
    let mut b = [0u8; SIMPLE_REPLY_HEADER_BYTES];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&header.error.to_be_bytes());
    b[8..16].copy_from_slice(&header.cookie.to_be_bytes());
    b
}

/// Client side of [`encode_simple_reply_header`].
pub fn decode_simple_reply_header(bytes: &[u8]) -> Result<SimpleReplyHeader, ProtoError> {
    need(bytes, SIMPLE_REPLY_HEADER_BYTES)?;
    let magic = be32(bytes, 0);
    if magic != SIMPLE_REPLY_MAGIC {
        return Err(ProtoError::BadMagic {
            expected: SIMPLE_REPLY_MAGIC as u64,
            found: magic as u64,
        });
    }
    Ok(SimpleReplyHeader {
        error: be32(bytes, 4),
        cookie: be64(bytes, 8),
    })
}

/// What the server enforces on one export during transmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportLimits {
    pub size_bytes: u64,
    /// Offsets and lengths must be multiples of this (a power of two).
    pub minimum_block_bytes: u32,
    /// Largest read or write payload.
    pub maximum_payload_bytes: u32,
    pub read_only: bool,
    pub can_trim: bool,
}

/// A request that passed every check, ready for the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        length: u32,
    },
    /// `length` bytes of payload follow the header.
    Write {
        offset: u64,
        length: u32,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        length: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        length: u32,
        fua: bool,
        no_hole: bool,
    },
}

/// What the server does with a request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestPlan {
    /// Hand the command to the backend.
    Execute(Command),
    /// A well-formed request with nothing to do (zero length): reply success.
    Nothing,
    /// Reply with `errno` after reading and discarding `payload_bytes` of write payload.
    Reject { errno: NbdErrno, payload_bytes: u32 },
    /// Reply with `errno`, then close: the payload that follows cannot be trusted.
    RejectAndClose(NbdErrno),
    /// `NBD_CMD_DISC`: finish what is in flight and close.
    Disconnect,
}

/// Checks a request header against the export. Nothing here touches data: a request that is
/// not `Execute` reaches no backend.
pub fn plan_request(header: &RequestHeader, limits: &ExportLimits) -> RequestPlan {
    let RequestHeader {
        flags,
        command,
        offset,
        length,
        ..
    } = *header;
    if command == CMD_DISC {
        return RequestPlan::Disconnect;
    }
    let payload_bytes = if command == CMD_WRITE {
        if length > limits.maximum_payload_bytes {
            return RequestPlan::RejectAndClose(NbdErrno::EINVAL);
        }
        length
    } else {
        0
    };
    let reject = |errno| RequestPlan::Reject {
        errno,
        payload_bytes,
    };
    let known = matches!(
        command,
        CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES
    );
    if !known {
        return reject(NbdErrno::EINVAL);
    }
    // FUA is valid on every command once SEND_FUA is advertised; NO_HOLE only on zeroes.
    let mut allowed_flags = CMD_FLAG_FUA;
    if command == CMD_WRITE_ZEROES {
        allowed_flags |= CMD_FLAG_NO_HOLE;
    }
    if flags & !allowed_flags != 0 {
        return reject(NbdErrno::EINVAL);
    }
    let fua = flags & CMD_FLAG_FUA != 0;
    if command == CMD_FLUSH {
        // Offset and length are reserved for FLUSH; ignoring them harms nothing.
        return RequestPlan::Execute(Command::Flush);
    }
    let writes = command != CMD_READ;
    if writes && limits.read_only {
        return reject(NbdErrno::EPERM);
    }
    if command == CMD_TRIM && !limits.can_trim {
        return reject(NbdErrno::EINVAL);
    }
    if command == CMD_READ && length > limits.maximum_payload_bytes {
        return reject(NbdErrno::EINVAL);
    }
    let block = u64::from(limits.minimum_block_bytes.max(1));
    if offset % block != 0 || u64::from(length) % block != 0 {
        return reject(NbdErrno::EINVAL);
    }
    let in_bounds = offset
        .checked_add(u64::from(length))
        .is_some_and(|end| end <= limits.size_bytes);
    if !in_bounds {
        let errno = if matches!(command, CMD_WRITE | CMD_WRITE_ZEROES) {
            NbdErrno::ENOSPC
        } else {
            NbdErrno::EINVAL
        };
        return reject(errno);
    }
    if length == 0 {
        return RequestPlan::Nothing;
    }
    RequestPlan::Execute(match command {
        CMD_READ => Command::Read { offset, length },
        CMD_WRITE => Command::Write {
            offset,
            length,
            fua,
        },
        CMD_TRIM => Command::Trim {
            offset,
            length,
            fua,
        },
        _ => Command::WriteZeroes {
            offset,
            length,
            fua,
            no_hole: flags & CMD_FLAG_NO_HOLE != 0,
        },
    })
}
