//! The NBD socket server: listeners on a Unix socket and/or TCP and the handshake (a thread
//! per connection while it negotiates); then the connection moves to the reactor
//! (`reactor.rs`), which runs on the server's own thread for a `Backend`, or on the caller's
//! (the RAID engine's) thread for [`Server::start_owned`].

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::proto::{self, ClientOption, ExportLimits, InfoItem};
use super::reactor::{Inbox, Limits, NewConnection, Reactor};
use super::{Backend, ExportInfo};
use crate::host::runtime::Signal;

/// Offsets and lengths must be multiples of this; advertised as the minimum block size.
pub const MINIMUM_BLOCK_BYTES: u32 = 512;
/// Largest read or write unless configured otherwise (proto.md's portable maximum).
pub const DEFAULT_MAXIMUM_PAYLOAD_BYTES: u32 = 32 << 20;
/// Used when the backend's preferred block size is not a power of two of at least 512.
const FALLBACK_PREFERRED_BLOCK_BYTES: u32 = 4096;
/// Option data beyond this is read and thrown away, not buffered (names are ≤ 4 KiB).
const MAX_OPTION_DATA_BYTES: u32 = 64 << 10;
/// The handshake's read buffer (what it reads past the last option goes to the reactor).
const HANDSHAKE_BUFFER_BYTES: usize = 16 << 10;
/// The server reactor thread's longest sleep (it is woken for everything else).
const REACTOR_IDLE_WAIT: Duration = Duration::from_millis(500);

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
    /// Binds the configured listeners and starts accepting clients for `backend`'s exports;
    /// the server's reactor thread submits their requests to `backend`.
    pub fn start(backend: Arc<dyn Backend>, config: ServerConfig) -> io::Result<ServerHandle> {
        let signal = Arc::new(Signal::new()?);
        let exports_of = backend.clone();
        let (mut handle, mut reactor) = Self::start_inner(
            Box::new(move || exports_of.exports().into_iter().map(Some).collect()),
            config,
            signal.clone(),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let thread = thread::Builder::new()
            .name("nbd-reactor".into())
            .spawn(move || {
                let mut submit = |export: usize, io, token: super::reactor::ReplyToken| {
                    backend.submit(export, io, Box::new(move |outcome| token.complete(outcome)))
                };
                loop {
                    if stop_seen.load(Ordering::SeqCst) {
                        reactor.begin_stop();
                        if reactor.is_idle() {
                            return;
                        }
                    }
                    reactor.poll(REACTOR_IDLE_WAIT, &mut submit);
                }
            })?;
        handle.reactor = Some((thread, stop, signal));
        Ok(handle)
    }

    /// Binds the listeners and negotiates with clients on threads, but leaves their requests
    /// to the returned [`Reactor`], which the caller polls on its own thread (the RAID engine
    /// does, so a request becomes a task without a thread hop). `signal` is the caller's
    /// wake-up: the reactor sleeps on it and raises it for new connections and completions.
    /// Shutting down the handle stops accepting; then [`Reactor::begin_stop`] drains.
    /// [`ServerHandle::withdraw_export`] takes an export out of the list (a stopped array).
    pub fn start_owned(
        exports: Vec<ExportInfo>,
        config: ServerConfig,
        signal: Arc<Signal>,
    ) -> io::Result<(ServerHandle, Reactor)> {
        let table: ExportTable = Arc::new(Mutex::new(exports.into_iter().map(Some).collect()));
        let listed = table.clone();
        let (mut handle, reactor) =
            Self::start_inner(Box::new(move || lock(&listed).clone()), config, signal)?;
        handle.owned_exports = Some(table);
        Ok((handle, reactor))
    }

    fn start_inner(
        exports: ExportsFn,
        config: ServerConfig,
        signal: Arc<Signal>,
    ) -> io::Result<(ServerHandle, Reactor)> {
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
        let inbox = Arc::new(Inbox::new(signal.clone()));
        let live = Arc::new(AtomicUsize::new(0));
        let reactor = Reactor::new(
            signal,
            inbox.clone(),
            Limits {
                max_in_flight_requests: config.max_in_flight_requests,
                max_in_flight_bytes: config.max_in_flight_bytes,
            },
            live.clone(),
        )?;
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
            exports,
            config,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
            inbox,
            live,
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
        Ok((
            ServerHandle {
                shared,
                acceptors,
                unix_socket,
                tcp,
                stopped: false,
                reactor: None,
                owned_exports: None,
            },
            reactor,
        ))
    }
}

/// The exports by index; a withdrawn one is `None` (indexes stay, connections name them).
type ExportsFn = Box<dyn Fn() -> Vec<Option<ExportInfo>> + Send + Sync>;
type ExportTable = Arc<Mutex<Vec<Option<ExportInfo>>>>;

/// A running server. Dropping it shuts it down as [`ServerHandle::shutdown`] does.
pub struct ServerHandle {
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
    unix_socket: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    stopped: bool,
    /// The server's own reactor thread, its stop flag and wake-up (not for `start_owned`).
    reactor: Option<(JoinHandle<()>, Arc<AtomicBool>, Arc<Signal>)>,
    /// The export list of a `start_owned` server, which the owner may shrink.
    owned_exports: Option<ExportTable>,
}

impl ServerHandle {
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    /// The bound TCP address (with the real port when 0 was asked for).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Takes export `index` out of what clients can list, query or select (`NBD_OPT_LIST`,
    /// `INFO`, `GO`, `EXPORT_NAME`); the empty name then selects the first export left. For
    /// a [`Server::start_owned`] server; whether there was such an export to withdraw.
    pub fn withdraw_export(&self, index: usize) -> bool {
        let Some(table) = &self.owned_exports else {
            return false;
        };
        match lock(table).get_mut(index) {
            Some(slot @ Some(_)) => {
                if let Some(e) = slot.take() {
                    log::info!("NBD export '{}' withdrawn", e.name);
                }
                true
            }
            _ => false,
        }
    }

    /// Clients connected now (handshaking or transmitting).
    pub fn connection_count(&self) -> usize {
        let handshaking = lock(&self.shared.connections)
            .values()
            .filter(|c| !c.thread.is_finished())
            .count();
        handshaking + self.shared.live.load(Ordering::SeqCst)
    }

    /// Stops accepting, stops reading new requests, lets the requests in flight complete
    /// and their replies go out, closes every connection and joins every thread. Returns
    /// once the backend holds no completion of this server (a backend that never
    /// completes an I/O keeps it waiting). For [`Server::start_owned`] this only stops
    /// accepting and negotiating; the caller drains its reactor.
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
                // Ends the handshake's blocking read.
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        for c in connections {
            let _ = c.thread.join();
        }
        if let Some((thread, stop, signal)) = self.reactor.take() {
            stop.store(true, Ordering::SeqCst);
            signal.raise();
            let _ = thread.join();
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
pub(super) enum Stream {
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

    pub(super) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    pub(super) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    pub(super) fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
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
    exports: ExportsFn,
    config: ServerConfig,
    stopping: AtomicBool,
    /// Connections still negotiating, each on its thread.
    connections: Mutex<HashMap<u64, Connection>>,
    next_connection_id: AtomicU64,
    /// Where negotiated connections go.
    inbox: Arc<Inbox>,
    /// Connections the reactor holds.
    live: Arc<AtomicUsize>,
}

struct Connection {
    /// A handle on the socket for shutdown; the thread clears it when the handshake ends
    /// (handing the socket to the reactor, or closing it), so a finished thread holds no
    /// descriptor until it is reaped.
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
                let outcome = negotiate(&shared, stream, id);
                // Taken under the lock `stop` sweeps with: either stop sees this socket and
                // shuts it, or this thread hands it over before stop drains the reactor.
                let control = lock(&control).take();
                match outcome {
                    Ok(Some(connection)) if !shared.stopping.load(Ordering::SeqCst) => {
                        // `control` is a duplicate: dropping it leaves the socket open.
                        shared.inbox.push(connection);
                        return;
                    }
                    Ok(_) => log::debug!("NBD connection {id}: closed"),
                    Err(e) => log::info!("NBD connection {id}: closed: {e}"),
                }
                if let Some(s) = control {
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
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Io(e) => write!(f, "{e}"),
            ConnectionError::Proto(e) => write!(f, "protocol error: {e}"),
            ConnectionError::ExportName(why) => write!(f, "NBD_OPT_EXPORT_NAME refused: {why}"),
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

/// The handshake; `Some` when the client entered transmission.
fn negotiate(
    shared: &Shared,
    stream: Stream,
    id: u64,
) -> Result<Option<NewConnection>, ConnectionError> {
    let mut reader = BufReader::with_capacity(HANDSHAKE_BUFFER_BYTES, stream.try_clone()?);
    let mut writer = stream;
    let Some(selected) = handshake(shared, &mut reader, &mut writer)? else {
        return Ok(None);
    };
    let buffered = reader.buffer().to_vec();
    reader.consume(buffered.len());
    Ok(Some(NewConnection {
        id,
        stream: writer,
        export_index: selected.export_index,
        limits: selected.limits,
        buffered,
    }))
}

/// The export `name` selects: its own name, or the empty name for the first export not
/// withdrawn.
fn find_export<'a>(
    exports: &'a [Option<ExportInfo>],
    name: &str,
) -> Option<(usize, &'a ExportInfo)> {
    exports
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
        .find(|(_, e)| name.is_empty() || e.name == name)
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
                let exports = (shared.exports)();
                let Some((index, export)) = find_export(&exports, &name) else {
                    return Err(ConnectionError::ExportName(format!("no export {name:?}")));
                };
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
                for export in (shared.exports)().into_iter().flatten() {
                    data.clear();
                    proto::encode_rep_server(&export.name, &export.description, &mut data);
                    proto::encode_option_reply(header.option, proto::REP_SERVER, &data, &mut out);
                }
                proto::encode_option_reply(header.option, proto::REP_ACK, &[], &mut out);
                writer.write_all(&out)?;
            }
            ClientOption::Info(query) | ClientOption::Go(query) => {
                let going = header.option == proto::OPT_GO;
                let exports = (shared.exports)();
                let Some((index, export)) = find_export(&exports, &query.name) else {
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
