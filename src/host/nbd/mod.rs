//! The NBD server of the host tool: the interface an engine implements to be exported
//! (`Backend`), the wire codec (`proto`) and the socket server (`server`).
//!
//! The server speaks fixed newstyle negotiation with simple replies only, which every
//! client in use (qemu, libnbd's nbdinfo/nbdcopy, fio's nbd engine, the Linux kernel
//! client) falls back to. Requests of one connection run concurrently: the reactor
//! (`reactor`) checks and submits them without waiting and sends replies in completion
//! order.

pub mod proto;
pub mod reactor;
pub mod server;
#[cfg(test)]
mod tests;

pub use crate::block::Bytes;
pub use proto::NbdErrno;
pub use reactor::{BufferPool, PayloadNotice, Reactor, ReplyToken};
pub use server::{Server, ServerConfig, ServerHandle};

/// One export as the backend describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo {
    /// What clients ask for; the first export is also reachable by the empty name.
    pub name: String,
    /// Free text shown by `nbdinfo --list` and in `NBD_INFO_DESCRIPTION`.
    pub description: String,
    pub size_bytes: u64,
    /// Advertised as the preferred block size: a power of two, at least 512 (another value
    /// is replaced by 4096).
    pub preferred_block_bytes: u32,
    pub read_only: bool,
    /// Advertise `NBD_FLAG_CAN_MULTI_CONN`: a flush or FUA on one connection covers writes
    /// completed on every connection.
    pub multi_conn: bool,
    /// Advertise `NBD_FLAG_SEND_TRIM`.
    pub can_trim: bool,
}

/// One I/O the server hands to the backend, already checked: inside the export, aligned to
/// 512 bytes, not longer than the maximum payload (reads and writes), not zero-length, and
/// no write to a read-only export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NbdIo {
    Read {
        offset: u64,
        length: u32,
    },
    /// `fua`: durable before completion. The payload buffer returns to the reactor's pool
    /// when the last clone of `data` is dropped (a memory member may keep it as its pages).
    Write {
        offset: u64,
        data: Bytes,
        fua: bool,
    },
    /// Every write completed before this flush was submitted, on any connection, is durable
    /// when it completes.
    Flush,
    /// A hint: the range may be discarded; its contents are undefined until rewritten.
    Trim {
        offset: u64,
        length: u32,
        fua: bool,
    },
    /// The range must read back as zeroes afterwards.
    WriteZeroes {
        offset: u64,
        length: u32,
        fua: bool,
    },
}

/// How an I/O ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoOutcome {
    /// For a read, exactly `length` bytes of data; for anything else, empty.
    Ok(Vec<u8>),
    Err(NbdErrno),
}

/// Called once when the I/O ends, from any thread. Dropping it uncalled answers the
/// client with `EIO`.
pub type Completion = Box<dyn FnOnce(IoOutcome) + Send>;

/// What the NBD server exports: the RAID engine on the host, a memory export in tests.
pub trait Backend: Send + Sync + 'static {
    /// The exports; the default (empty-name) export is the first. An index handed to
    /// `submit` stays valid for as long as a client is connected to it.
    fn exports(&self) -> Vec<ExportInfo>;
    /// Starts `io` on export `export_index`. Must not block for the I/O: the connection
    /// keeps reading and submitting while earlier requests run.
    fn submit(&self, export_index: usize, io: NbdIo, done: Completion);
}

impl NbdErrno {
    /// The NBD error for a host I/O error, as proto.md asks: out of space, quota and
    /// file-too-big become `ENOSPC`, permission and read-only file system `EPERM`, the rest
    /// `EIO` (a host `EINVAL` is the server's fault, not the client's request).
    pub fn from_io_error(error: &std::io::Error) -> NbdErrno {
        match error.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => NbdErrno::ENOSPC,
            Some(libc::EPERM | libc::EACCES | libc::EROFS) => NbdErrno::EPERM,
            _ => NbdErrno::EIO,
        }
    }
}
