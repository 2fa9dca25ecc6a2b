//! The NBD socket server: listeners on a Unix socket and/or TCP, the handshake, then per
//! connection a reader (this connection's thread) that checks and submits requests without
//! waiting and a writer thread that sends each reply as its I/O completes.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::proto::{self, ClientOption, Command, ExportLimits, InfoItem, RequestPlan};
use super::{Backend, ExportInfo, IoOutcome, NbdErrno, NbdIo};

/// Offsets and lengths must be multiples of this; advertised as the minimum block size.
pub const MINIMUM_BLOCK_BYTES: u32 = 512;
/// Largest read or write unless configured otherwise (proto.md's portable maximum).
pub const DEFAULT_MAXIMUM_PAYLOAD_BYTES: u32 = 32 << 20;
/// Used when the backend's preferred block size is not a power of two of at least 512.
const FALLBACK_PREFERRED_BLOCK_BYTES: u32 = 4096;
/// Option data beyond this is read and thrown away, not buffered (names are ≤ 4 KiB).
const MAX_OPTION_DATA_BYTES: u32 = 64 << 10;
const READ_BUFFER_BYTES: usize = 128 << 10;
const WRITE_BUFFER_BYTES: usize = 256 << 10;
/// Replies up to this size are sent straight from the completion when the socket takes them.
const DIRECT_REPLY_MAX_BYTES: usize = 128 << 10;

/// Where to listen and how much one connection may have in flight.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// A Unix socket path; a stale socket file left by a dead server is replaced.
    pub unix_socket: Option<PathBuf>,
    /// A TCP address, normally `127.0.0.1:PORT` (port 0 picks a free one).
    pub tcp: Option<SocketAddr>,
    /// Largest read or write payload, advertised in `NBD_INFO_BLOCK_SIZE`.
    pub maximum_payload_bytes: u32,
    /// Requests of one connection submitted and not yet answered, at most.
    pub max_in_flight_requests: usize,
    /// Read and write payload bytes of one connection in flight, at most (one request of
    /// any allowed size always gets through).
    pub max_in_flight_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            unix_socket: None,
            tcp: None,
            maximum_payload_bytes: DEFAULT_MAXIMUM_PAYLOAD_BYTES,
            max_in_flight_requests: 64,
            max_in_flight_bytes: 64 << 20,
        }
    }
}

/// Starts NBD servers.
pub struct Server;

impl Server {
    /// Binds the configured listeners and starts accepting clients for `backend`'s exports.
    pub fn start(backend: Arc<dyn Backend>, config: ServerConfig) -> io::Result<ServerHandle> {
        if config.unix_socket.is_none() && config.tcp.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NBD server: no Unix socket and no TCP address to listen on",
            ));
        }
        if config.maximum_payload_bytes < MINIMUM_BLOCK_BYTES || config.max_in_flight_requests == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NBD server: maximum payload below 512 bytes or no request allowed in flight",
            ));
        }
        let mut listeners = Vec::new();
        let mut unix_socket = None;
        let mut tcp = None;
        if let Some(path) = &config.unix_socket {
            listeners.push(Listener::Unix(bind_unix(path)?));
            unix_socket = Some(path.clone());
        }
        if let Some(addr) = config.tcp {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    if let Some(path) = &unix_socket {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e);
                }
            };
            tcp = Some(listener.local_addr()?);
            listeners.push(Listener::Tcp(listener));
        }
        let shared = Arc::new(Shared {
            backend,
            config,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
        });
        let mut acceptors = Vec::new();
        for listener in listeners {
            let shared = shared.clone();
            let thread = thread::Builder::new()
                .name("nbd-accept".into())
                .spawn(move || accept_loop(&shared, listener))?;
            acceptors.push(thread);
        }
        if let Some(path) = &unix_socket {
            log::info!("NBD server listening on unix:{}", path.display());
        }
        if let Some(addr) = tcp {
            log::info!("NBD server listening on tcp:{addr}");
        }
        Ok(ServerHandle {
            shared,
            acceptors,
            unix_socket,
            tcp,
            stopped: false,
        })
    }
}

/// A running server. Dropping it shuts it down as [`ServerHandle::shutdown`] does.
pub struct ServerHandle {
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
    unix_socket: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    stopped: bool,
}

impl ServerHandle {
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    /// The bound TCP address (with the real port when 0 was asked for).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Clients connected now (handshaking or transmitting).
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.connections)
            .values()
            .filter(|c| !c.thread.is_finished())
            .count()
    }

    /// Stops accepting, stops reading new requests, lets the requests in flight complete
    /// and their replies go out, closes every connection and joins every thread. Returns
    /// once the backend holds no completion of this server (a backend that never
    /// completes an I/O keeps it waiting).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        {
            // Under the lock, so no connection is registered after the sweep below.
            let _connections = lock(&self.shared.connections);
            self.shared.stopping.store(true, Ordering::SeqCst);
        }
        // A blocked accept() only returns for a connection: make one to each listener.
        let mut woken = Vec::new();
        if let Some(path) = &self.unix_socket {
            woken.push(UnixStream::connect(path).is_ok());
        }
        if let Some(addr) = self.tcp {
            woken.push(TcpStream::connect(addr).is_ok());
        }
        for (thread, woke) in self.acceptors.drain(..).zip(woken) {
            if woke {
                let _ = thread.join();
            } else {
                log::warn!("NBD server: could not wake a listener; leaving its thread");
            }
        }
        let connections: Vec<Connection> = lock(&self.shared.connections)
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in &connections {
            if let Some(stream) = lock(&c.control).as_ref() {
                // Ends the reader's blocking read; replies still go out on the write side.
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
        for c in connections {
            let _ = c.thread.join();
        }
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        log::info!("NBD server stopped");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // A live server accepts a connection; a socket file left by a dead one refuses.
            let stale = UnixStream::connect(path).is_err()
                && std::fs::symlink_metadata(path)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false);
            if !stale {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Replies are small and latency-bound; no Nagle delay.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }
}

/// A client connection, Unix or TCP.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Shared {
    backend: Arc<dyn Backend>,
    config: ServerConfig,
    stopping: AtomicBool,
    connections: Mutex<HashMap<u64, Connection>>,
    next_connection_id: AtomicU64,
}

struct Connection {
    /// A handle on the socket for shutdown; the connection clears it when it closes, so a
    /// finished connection holds no descriptor until it is reaped.
    control: Arc<Mutex<Option<Stream>>>,
    thread: JoinHandle<()>,
}

fn accept_loop(shared: &Arc<Shared>, listener: Listener) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok(stream) => spawn_connection(shared, stream),
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                log::warn!("NBD server: accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: Stream) {
    let control = match stream.try_clone() {
        Ok(s) => Arc::new(Mutex::new(Some(s))),
        Err(e) => {
            log::warn!("NBD server: cannot duplicate a client socket: {e}");
            return;
        }
    };
    let mut connections = lock(&shared.connections);
    let finished: Vec<u64> = connections
        .iter()
        .filter(|(_, c)| c.thread.is_finished())
        .map(|(id, _)| *id)
        .collect();
    for id in finished {
        if let Some(c) = connections.remove(&id) {
            let _ = c.thread.join();
        }
    }
    if shared.stopping.load(Ordering::SeqCst) {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let thread = {
        let shared = shared.clone();
        let control = control.clone();
        thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                log::debug!("NBD connection {id}: open");
                match run_connection(&shared, stream, id) {
                    Ok(()) => log::debug!("NBD connection {id}: closed"),
                    Err(e) => log::info!("NBD connection {id}: closed: {e}"),
                }
                if let Some(s) = lock(&control).take() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })
    };
    match thread {
        Ok(thread) => {
            connections.insert(id, Connection { control, thread });
        }
        Err(e) => log::warn!("NBD server: cannot start a connection thread: {e}"),
    }
}

/// Why a connection ended other than by the client's choice.
#[derive(Debug)]
enum ConnectionError {
    Io(io::Error),
    Proto(proto::ProtoError),
    /// `NBD_OPT_EXPORT_NAME` cannot be refused with an error reply: the session ends.
    ExportName(String),
    /// A write longer than the maximum payload: its data cannot be skipped safely.
    OversizedWrite {
        length: u32,
    },
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Io(e) => write!(f, "{e}"),
            ConnectionError::Proto(e) => write!(f, "protocol error: {e}"),
            ConnectionError::ExportName(why) => write!(f, "NBD_OPT_EXPORT_NAME refused: {why}"),
            ConnectionError::OversizedWrite { length } => {
                write!(f, "write of {length} bytes exceeds the maximum payload")
            }
        }
    }
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e)
    }
}

impl From<proto::ProtoError> for ConnectionError {
    fn from(e: proto::ProtoError) -> Self {
        ConnectionError::Proto(e)
    }
}

/// The export a client chose and the rules its requests are held to.
struct Selected {
    export_index: usize,
    limits: ExportLimits,
}

fn run_connection(shared: &Shared, stream: Stream, id: u64) -> Result<(), ConnectionError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream.try_clone()?);
    let mut writer = stream;
    let Some(selected) = handshake(shared, &mut reader, &mut writer)? else {
        return Ok(());
    };
    transmission(shared, reader, writer, &selected, id)
}

/// The export `name` selects: its own name, or the empty name for the first export.
fn find_export(exports: &[ExportInfo], name: &str) -> Option<usize> {
    if name.is_empty() && !exports.is_empty() {
        return Some(0);
    }
    exports.iter().position(|e| e.name == name)
}

fn transmission_flags(export: &ExportInfo) -> u16 {
    let mut flags = proto::FLAG_HAS_FLAGS | proto::FLAG_SEND_FLUSH | proto::FLAG_SEND_FUA;
    if export.read_only {
        flags |= proto::FLAG_READ_ONLY;
    } else {
        flags |= proto::FLAG_SEND_WRITE_ZEROES;
        if export.can_trim {
            flags |= proto::FLAG_SEND_TRIM;
        }
    }
    if export.multi_conn {
        flags |= proto::FLAG_CAN_MULTI_CONN;
    }
    flags
}

/// (minimum, preferred, maximum payload) as advertised and enforced.
fn block_sizes(export: &ExportInfo, config: &ServerConfig) -> (u32, u32, u32) {
    let preferred = export.preferred_block_bytes;
    let preferred = if preferred.is_power_of_two() && preferred >= MINIMUM_BLOCK_BYTES {
        preferred
    } else {
        FALLBACK_PREFERRED_BLOCK_BYTES
    };
    // proto.md: the maximum payload is at least the preferred block size.
    let maximum = config.maximum_payload_bytes.max(preferred);
    (MINIMUM_BLOCK_BYTES, preferred, maximum)
}

fn select(export_index: usize, export: &ExportInfo, config: &ServerConfig) -> Selected {
    let (minimum_block_bytes, _, maximum_payload_bytes) = block_sizes(export, config);
    Selected {
        export_index,
        limits: ExportLimits {
            size_bytes: export.size_bytes,
            minimum_block_bytes,
            maximum_payload_bytes,
            read_only: export.read_only,
            can_trim: export.can_trim,
        },
    }
}

/// Fixed newstyle negotiation. `None`: the client left (NBD_OPT_ABORT) without choosing.
fn handshake(
    shared: &Shared,
    reader: &mut BufReader<Stream>,
    writer: &mut Stream,
) -> Result<Option<Selected>, ConnectionError> {
    let mut out = Vec::with_capacity(256);
    proto::encode_greeting(proto::SERVER_HANDSHAKE_FLAGS, &mut out);
    writer.write_all(&out)?;
    let mut flag_bytes = [0u8; proto::CLIENT_FLAGS_BYTES];
    reader.read_exact(&mut flag_bytes)?;
    let client = proto::decode_client_flags(&flag_bytes, proto::SERVER_HANDSHAKE_FLAGS)?;

    loop {
        let mut header_bytes = [0u8; proto::OPTION_HEADER_BYTES];
        reader.read_exact(&mut header_bytes)?;
        let header = proto::decode_option_header(&header_bytes)?;
        out.clear();

        if header.data_bytes > MAX_OPTION_DATA_BYTES {
            discard(reader, u64::from(header.data_bytes))?;
            let reply = match header.option {
                proto::OPT_EXPORT_NAME => {
                    return Err(ConnectionError::ExportName("name too long".into()));
                }
                proto::OPT_ABORT => {
                    proto::encode_option_reply(header.option, proto::REP_ACK, &[], &mut out);
                    let _ = writer.write_all(&out);
                    return Ok(None);
                }
                proto::OPT_LIST | proto::OPT_INFO | proto::OPT_GO => proto::REP_ERR_TOO_BIG,
                _ => proto::REP_ERR_UNSUP,
            };
            proto::encode_option_reply(header.option, reply, &[], &mut out);
            writer.write_all(&out)?;
            continue;
        }

        let mut data = vec![0u8; header.data_bytes as usize];
        reader.read_exact(&mut data)?;
        let option = match proto::parse_option(header.option, &data) {
            Ok(option) => option,
            Err(e) if header.option == proto::OPT_EXPORT_NAME => {
                return Err(ConnectionError::ExportName(e.to_string()));
            }
            Err(e) => {
                let message = e.to_string();
                proto::encode_option_reply(
                    header.option,
                    proto::REP_ERR_INVALID,
                    message.as_bytes(),
                    &mut out,
                );
                writer.write_all(&out)?;
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            match option {
                ClientOption::Abort => {}
                ClientOption::ExportName(_) => {
                    return Err(ConnectionError::ExportName("server shutting down".into()));
                }
                _ => {
                    proto::encode_option_reply(
                        header.option,
                        proto::REP_ERR_SHUTDOWN,
                        &[],
                        &mut out,
                    );
                    writer.write_all(&out)?;
                    continue;
                }
            }
        }

        match option {
            ClientOption::ExportName(name) => {
                let exports = shared.backend.exports();
                let Some(index) = find_export(&exports, &name) else {
                    return Err(ConnectionError::ExportName(format!("no export {name:?}")));
                };
                let export = &exports[index];
                proto::encode_export_name_reply(
                    export.size_bytes,
                    transmission_flags(export),
                    client.no_zeroes,
                    &mut out,
                );
                writer.write_all(&out)?;
                return Ok(Some(select(index, export, &shared.config)));
            }
            ClientOption::Abort => {
                proto::encode_option_reply(header.option, proto::REP_ACK, &[], &mut out);
                // The client may already have closed; that is fine.
                let _ = writer.write_all(&out);
                return Ok(None);
            }
            ClientOption::List => {
                let mut data = Vec::new();
                for export in shared.backend.exports() {
                    data.clear();
                    proto::encode_rep_server(&export.name, &export.description, &mut data);
                    proto::encode_option_reply(header.option, proto::REP_SERVER, &data, &mut out);
                }
                proto::encode_option_reply(header.option, proto::REP_ACK, &[], &mut out);
                writer.write_all(&out)?;
            }
            ClientOption::Info(query) | ClientOption::Go(query) => {
                let going = header.option == proto::OPT_GO;
                let exports = shared.backend.exports();
                let Some(index) = find_export(&exports, &query.name) else {
                    let message = format!("no export named {:?}", query.name);
                    proto::encode_option_reply(
                        header.option,
                        proto::REP_ERR_UNKNOWN,
                        message.as_bytes(),
                        &mut out,
                    );
                    writer.write_all(&out)?;
                    continue;
                };
                let export = &exports[index];
                let (minimum_bytes, preferred_bytes, maximum_payload_bytes) =
                    block_sizes(export, &shared.config);
                let mut items = vec![
                    InfoItem::Export {
                        size_bytes: export.size_bytes,
                        transmission_flags: transmission_flags(export),
                    },
                    // Sent even unasked: the constraints hold either way.
                    InfoItem::BlockSize {
                        minimum_bytes,
                        preferred_bytes,
                        maximum_payload_bytes,
                    },
                ];
                if query.requests(proto::INFO_NAME) {
                    items.push(InfoItem::Name(export.name.clone()));
                }
                if query.requests(proto::INFO_DESCRIPTION) && !export.description.is_empty() {
                    items.push(InfoItem::Description(export.description.clone()));
                }
                let mut data = Vec::new();
                for item in &items {
                    data.clear();
                    proto::encode_info(item, &mut data);
                    proto::encode_option_reply(header.option, proto::REP_INFO, &data, &mut out);
                }
                proto::encode_option_reply(header.option, proto::REP_ACK, &[], &mut out);
                writer.write_all(&out)?;
                if going {
                    return Ok(Some(select(index, export, &shared.config)));
                }
            }
            ClientOption::Unsupported(_) => {
                // STARTTLS, STRUCTURED_REPLY, EXTENDED_HEADERS, META_CONTEXT and unknown
                // options: refused, and the client carries on with simple replies.
                proto::encode_option_reply(header.option, proto::REP_ERR_UNSUP, &[], &mut out);
                writer.write_all(&out)?;
            }
        }
    }
}

/// Reads and drops `bytes` from the client.
fn discard(reader: &mut impl Read, bytes: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(bytes), &mut io::sink())?;
    if copied < bytes {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Fills `buf`; `false` if the stream ended cleanly before its first byte.
fn read_message(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Bounds what one connection has submitted and not yet answered.
struct Credits {
    state: Mutex<(usize, usize)>,
    freed: Condvar,
    max_requests: usize,
    max_bytes: usize,
}

impl Credits {
    fn acquire(&self, bytes: usize) {
        let mut state = lock(&self.state);
        while state.0 > 0 && (state.0 >= self.max_requests || state.1 + bytes > self.max_bytes) {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.0 += 1;
        state.1 += bytes;
    }

    fn release(&self, bytes: usize) {
        let mut state = lock(&self.state);
        assert!(state.0 > 0 && state.1 >= bytes, "credit released twice");
        state.0 -= 1;
        state.1 -= bytes;
        self.freed.notify_one();
    }
}

/// One reply for the writer thread.
struct Reply {
    cookie: u64,
    result: Result<Vec<u8>, NbdErrno>,
    credit_bytes: usize,
}

/// The connection's write side, shared by the writer thread and by completions that send
/// their reply at once (saving a thread hand-off per request).
struct ReplyPath {
    out: Mutex<Outgoing>,
    credits: Arc<Credits>,
}

struct Outgoing {
    stream: Stream,
    /// What a non-blocking send left unsent of a reply: the writer sends it before anything
    /// else, so replies never interleave.
    tail: Vec<u8>,
    broken: bool,
}

enum DirectSend {
    All,
    Partial(usize),
    WouldBlock,
    Failed,
}

/// One `sendmsg` of header and data without blocking (and without SIGPIPE).
#[allow(unsafe_code)]
fn send_nonblocking(stream: &Stream, header: &[u8], data: &[u8]) -> DirectSend {
    use std::os::unix::io::AsRawFd;
    let fd = match stream {
        Stream::Unix(s) => s.as_raw_fd(),
        Stream::Tcp(s) => s.as_raw_fd(),
    };
    let mut iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if data.is_empty() { 1 } else { 2 };
    // SAFETY: `fd` is the open socket `stream` owns; the iovecs point into `header` and
    // `data`, which outlive the call; sendmsg only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    let total = header.len() + data.len();
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => DirectSend::WouldBlock,
            _ => DirectSend::Failed,
        };
    }
    let n = n as usize;
    if n == total {
        DirectSend::All
    } else if n == 0 {
        DirectSend::WouldBlock
    } else {
        DirectSend::Partial(n)
    }
}

/// The promise of exactly one reply: sent on completion, or `EIO` if the completion is
/// dropped uncalled, so every request is answered and its credit returned.
struct PendingReply {
    sender: Option<Sender<Option<Reply>>>,
    path: Arc<ReplyPath>,
    cookie: u64,
    /// `Some(length)` for a read: the data must be exactly that long.
    read_length: Option<u32>,
    credit_bytes: usize,
}

impl PendingReply {
    fn complete(mut self, outcome: IoOutcome) {
        let result = match (outcome, self.read_length) {
            (IoOutcome::Ok(data), Some(length)) if data.len() == length as usize => Ok(data),
            (IoOutcome::Ok(data), Some(length)) => {
                log::error!(
                    "NBD backend returned {} bytes for a read of {length}",
                    data.len()
                );
                Err(NbdErrno::EIO)
            }
            (IoOutcome::Ok(_), None) => Ok(Vec::new()),
            (IoOutcome::Err(errno), _) => Err(errno),
        };
        self.send(result);
    }

    /// Sends at once when the socket takes the whole reply without blocking; otherwise
    /// hands it to the writer thread.
    fn try_direct(&self, result: &Result<Vec<u8>, NbdErrno>) -> bool {
        // Large replies rarely fit the socket buffer at once: the writer sends them without
        // copying.
        if matches!(result, Ok(d) if d.len() > DIRECT_REPLY_MAX_BYTES) {
            return false;
        }
        let Ok(mut out) = self.path.out.try_lock() else {
            return false;
        };
        if out.broken || !out.tail.is_empty() {
            return false;
        }
        let header = proto::encode_simple_reply_header(&proto::SimpleReplyHeader::new(
            self.cookie,
            result.as_ref().map(|_| ()).map_err(|e| *e),
        ));
        let data: &[u8] = match result {
            Ok(d) => d,
            Err(_) => &[],
        };
        match send_nonblocking(&out.stream, &header, data) {
            DirectSend::All => true,
            DirectSend::Partial(n) => {
                let mut tail = Vec::with_capacity(header.len() + data.len() - n);
                if n < header.len() {
                    tail.extend_from_slice(&header[n..]);
                    tail.extend_from_slice(data);
                } else {
                    tail.extend_from_slice(&data[n - header.len()..]);
                }
                out.tail = tail;
                if let Some(sender) = &self.sender {
                    // Wake the writer to send the rest.
                    let _ = sender.send(None);
                }
                true
            }
            DirectSend::WouldBlock => false,
            DirectSend::Failed => {
                out.broken = true;
                let _ = out.stream.shutdown(Shutdown::Both);
                // The writer still takes the reply, to return its credit.
                false
            }
        }
    }

    fn send(&mut self, result: Result<Vec<u8>, NbdErrno>) {
        if self.sender.is_none() {
            return;
        }
        if self.try_direct(&result) {
            self.sender = None;
            self.path.credits.release(self.credit_bytes);
            return;
        }
        if let Some(sender) = self.sender.take() {
            // Fails only if the writer thread is gone, which waits for every sender.
            let _ = sender.send(Some(Reply {
                cookie: self.cookie,
                result,
                credit_bytes: self.credit_bytes,
            }));
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.send(Err(NbdErrno::EIO));
    }
}

fn transmission(
    shared: &Shared,
    mut reader: BufReader<Stream>,
    writer: Stream,
    selected: &Selected,
    id: u64,
) -> Result<(), ConnectionError> {
    let credits = Arc::new(Credits {
        state: Mutex::new((0, 0)),
        freed: Condvar::new(),
        max_requests: shared.config.max_in_flight_requests,
        max_bytes: shared.config.max_in_flight_bytes,
    });
    let (sender, receiver) = mpsc::channel();
    let path = Arc::new(ReplyPath {
        out: Mutex::new(Outgoing {
            stream: writer,
            tail: Vec::new(),
            broken: false,
        }),
        credits: credits.clone(),
    });
    let writer_thread = {
        let path = path.clone();
        thread::Builder::new()
            .name(format!("nbd-reply-{id}"))
            .spawn(move || write_replies(&path, receiver))?
    };
    let result = read_requests(shared, &mut reader, &sender, &path, selected);
    // The writer ends once every in-flight completion has sent its reply.
    drop(sender);
    let _ = writer_thread.join();
    result
}

fn read_requests(
    shared: &Shared,
    reader: &mut BufReader<Stream>,
    sender: &Sender<Option<Reply>>,
    path: &Arc<ReplyPath>,
    selected: &Selected,
) -> Result<(), ConnectionError> {
    let credits = &*path.credits;
    let reply_now = |cookie: u64, result: Result<Vec<u8>, NbdErrno>| {
        credits.acquire(0);
        let _ = sender.send(Some(Reply {
            cookie,
            result,
            credit_bytes: 0,
        }));
    };
    let mut header_bytes = [0u8; proto::REQUEST_HEADER_BYTES];
    loop {
        if !read_message(reader, &mut header_bytes)? {
            return Ok(());
        }
        let header = proto::decode_request_header(&header_bytes)?;
        let cookie = header.cookie;
        let command = match proto::plan_request(&header, &selected.limits) {
            RequestPlan::Disconnect => return Ok(()),
            RequestPlan::Nothing => {
                reply_now(cookie, Ok(Vec::new()));
                continue;
            }
            RequestPlan::Reject {
                errno,
                payload_bytes,
            } => {
                discard(reader, u64::from(payload_bytes))?;
                reply_now(cookie, Err(errno));
                continue;
            }
            RequestPlan::RejectAndClose(errno) => {
                reply_now(cookie, Err(errno));
                return Err(ConnectionError::OversizedWrite {
                    length: header.length,
                });
            }
            RequestPlan::Execute(command) => command,
        };
        let (io, read_length, credit_bytes) = match command {
            Command::Read { offset, length } => {
                credits.acquire(length as usize);
                (
                    NbdIo::Read { offset, length },
                    Some(length),
                    length as usize,
                )
            }
            Command::Write {
                offset,
                length,
                fua,
            } => {
                // Credit first: the payload buffer is what the credit bounds.
                credits.acquire(length as usize);
                let mut data = vec![0u8; length as usize];
                if let Err(e) = reader.read_exact(&mut data) {
                    credits.release(length as usize);
                    return Err(e.into());
                }
                (NbdIo::Write { offset, data, fua }, None, length as usize)
            }
            Command::Flush => {
                credits.acquire(0);
                (NbdIo::Flush, None, 0)
            }
            Command::Trim {
                offset,
                length,
                fua,
            } => {
                credits.acquire(0);
                (
                    NbdIo::Trim {
                        offset,
                        length,
                        fua,
                    },
                    None,
                    0,
                )
            }
            Command::WriteZeroes {
                offset,
                length,
                fua,
                no_hole: _,
            } => {
                // NO_HOLE needs nothing: the backend writes zeroes, it never punches holes.
                credits.acquire(0);
                (
                    NbdIo::WriteZeroes {
                        offset,
                        length,
                        fua,
                    },
                    None,
                    0,
                )
            }
        };
        let pending = PendingReply {
            sender: Some(sender.clone()),
            path: path.clone(),
            cookie,
            read_length,
            credit_bytes,
        };
        shared.backend.submit(
            selected.export_index,
            io,
            Box::new(move |outcome| pending.complete(outcome)),
        );
    }
}

/// Sends the replies completions could not send at once: small ones batched into few
/// writes, large read data written from its own buffer.
fn write_replies(path: &ReplyPath, receiver: Receiver<Option<Reply>>) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BUFFER_BYTES);
    let mut large: Vec<Reply> = Vec::new();
    let mut credit_bytes: Vec<usize> = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            if let Some(reply) = msg {
                credit_bytes.push(reply.credit_bytes);
                match &reply.result {
                    Ok(data) if data.len() > DIRECT_REPLY_MAX_BYTES => large.push(reply),
                    _ => encode_reply(&mut batch, &reply),
                }
            }
            if batch.len() >= WRITE_BUFFER_BYTES || !large.is_empty() {
                break;
            }
            next = match receiver.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
            };
        }
        {
            let mut out = lock(&path.out);
            if !out.broken {
                let tail = std::mem::take(&mut out.tail);
                let mut ok =
                    out.stream.write_all(&tail).is_ok() && out.stream.write_all(&batch).is_ok();
                for reply in &large {
                    let header = proto::encode_simple_reply_header(&proto::SimpleReplyHeader::new(
                        reply.cookie,
                        Ok(()),
                    ));
                    let data = reply.result.as_deref().unwrap_or(&[]);
                    ok = ok
                        && out.stream.write_all(&header).is_ok()
                        && out.stream.write_all(data).is_ok();
                }
                if !ok {
                    // The client is gone: wake the reader too, keep draining to return credits.
                    out.broken = true;
                    let _ = out.stream.shutdown(Shutdown::Both);
                }
            }
        }
        batch.clear();
        large.clear();
        for bytes in credit_bytes.drain(..) {
            path.credits.release(bytes);
        }
    }
}

fn encode_reply(out: &mut Vec<u8>, reply: &Reply) {
    let header = proto::SimpleReplyHeader::new(
        reply.cookie,
        reply.result.as_ref().map(|_| ()).map_err(|e| *e),
    );
    out.extend_from_slice(&proto::encode_simple_reply_header(&header));
    if let Ok(data) = &reply.result {
        out.extend_from_slice(data);
    }
}
