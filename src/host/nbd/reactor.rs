//! The NBD transmission phase as a reactor: one thread owns every negotiated connection
//! (non-blocking sockets under one epoll), parses requests straight from each connection's
//! read buffer, hands them to a submit function, and writes the replies with `sendmsg` from
//! the completion queue, keeping what the socket does not take for `EPOLLOUT`.
//!
//! The thread is the RAID engine's own (`raid serve`: requests become executor tasks with no
//! thread hop, the reply often leaves in the same loop turn) or, for a thread-safe `Backend`,
//! the server's reactor thread. Completions may come from any thread: they queue their reply
//! and raise the loop's `Signal`, whose eventfd sits in the same epoll set.
//!
//! Large write payloads are received by a payload thread, which then takes the headers of
//! the large writes that follow itself (within the connection's credit), so a stream of
//! them is received back to back while the engine writes the earlier ones.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::proto::{self, Command, ExportLimits, RequestPlan};
use super::server::Stream;
use super::{Bytes, IoOutcome, NbdErrno, NbdIo};
use crate::host::runtime::Signal;

/// Bytes one `recv` may bring into a connection's read buffer: room for a queue of small
/// requests, small enough that little of a large write's payload is copied out of it.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Write payloads at least this long are received straight into their own buffer.
const DIRECT_PAYLOAD_BYTES: usize = 64 << 10;
/// A write payload with at least this much still to arrive is received by the payload
/// thread: the engine meanwhile copies the previous write into the members (on two cores
/// the two copies overlap, as a threaded server's would).
const OFFLOAD_PAYLOAD_BYTES: usize = 256 << 10;
/// How often the payload thread looks at the stop flag while a client is silent.
const OFFLOAD_POLL_MS: libc::c_int = 100;
/// Replies gathered into one `sendmsg`.
const REPLIES_PER_SEND: usize = 32;
/// Epoll events taken per wait.
const EVENTS_PER_WAIT: usize = 64;
/// The epoll token of the wake-up eventfd (connection ids start at 1 and never reach it).
const SIGNAL_TOKEN: u64 = u64::MAX;
/// Socket buffer asked for on each connection: a 1 MiB read reply then leaves in one or two
/// `sendmsg` calls instead of waiting for `EPOLLOUT` several times.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;
/// Payload buffers kept for reuse, at most (count and bytes).
const POOL_BUFFERS: usize = 64;
const POOL_BYTES: usize = 64 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-reply buffers returned once sent, handed out again for reads of the same length:
/// no page faults and no zero-fill for a buffer the array overwrites anyway.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl BufferPool {
    /// A buffer of exactly `len` bytes; its contents are whatever it held before (the
    /// caller overwrites all of it).
    pub fn take(&self, len: usize) -> Vec<u8> {
        {
            let mut free = lock(&self.free);
            if let Some(i) = free.0.iter().rposition(|b| b.len() == len) {
                let buf = free.0.swap_remove(i);
                free.1 -= buf.capacity();
                return buf;
            }
        }
        vec![0u8; len]
    }

    /// An empty buffer with room for `len` bytes, to receive into (no zero-fill).
    pub fn take_empty(&self, len: usize) -> Vec<u8> {
        {
            let mut free = lock(&self.free);
            if let Some(i) = free.0.iter().rposition(|b| b.capacity() == len) {
                let mut buf = free.0.swap_remove(i);
                free.1 -= buf.capacity();
                buf.clear();
                return buf;
            }
        }
        Vec::with_capacity(len)
    }

    /// Keeps `buf` for a later `take`, unless the pool is full.
    pub fn put(&self, buf: Vec<u8>) {
        if buf.capacity() < 4096 {
            return;
        }
        let mut free = lock(&self.free);
        if free.0.len() < POOL_BUFFERS && free.1 + buf.capacity() <= POOL_BYTES {
            free.1 += buf.capacity();
            free.0.push(buf);
        }
    }
}

/// A write payload as `Bytes` that gives its buffer back to the pool once the last clone is
/// dropped: its pages are then reused warm instead of faulted in again.
struct PooledPayload {
    data: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for PooledPayload {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PooledPayload {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.data));
    }
}

fn pooled_bytes(data: Vec<u8>, pool: &Arc<BufferPool>) -> Bytes {
    Bytes::from_owner(PooledPayload {
        data,
        pool: pool.clone(),
    })
}

/// A connection that finished its handshake, for the reactor to adopt.
pub(super) struct NewConnection {
    pub id: u64,
    pub stream: Stream,
    pub export_index: usize,
    pub limits: ExportLimits,
    /// Bytes the handshake read past its last option (requests sent early).
    pub buffered: Vec<u8>,
}

/// Where handshake threads leave their connections.
pub(super) struct Inbox {
    connections: Mutex<Vec<NewConnection>>,
    signal: Arc<Signal>,
}

impl Inbox {
    pub fn new(signal: Arc<Signal>) -> Self {
        Inbox {
            connections: Mutex::new(Vec::new()),
            signal,
        }
    }

    pub fn push(&self, connection: NewConnection) {
        lock(&self.connections).push(connection);
        self.signal.raise();
    }
}

struct Done {
    connection: u64,
    cookie: u64,
    result: Result<Vec<u8>, NbdErrno>,
    credit_bytes: usize,
}

struct DoneQueue {
    items: Mutex<Vec<Done>>,
    signal: Arc<Signal>,
}

/// The promise of exactly one reply to one request: [`ReplyToken::complete`] queues it;
/// dropping the token uncompleted answers `EIO`. May move to any thread.
pub struct ReplyToken {
    connection: u64,
    cookie: u64,
    /// `Some(length)` for a read: the data must be exactly that long.
    read_length: Option<u32>,
    credit_bytes: usize,
    queue: Option<Arc<DoneQueue>>,
}

impl ReplyToken {
    pub fn complete(mut self, outcome: IoOutcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: IoOutcome) {
        let Some(queue) = self.queue.take() else {
            return;
        };
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
        lock(&queue.items).push(Done {
            connection: self.connection,
            cookie: self.cookie,
            result,
            credit_bytes: self.credit_bytes,
        });
        queue.signal.raise();
    }
}

impl Drop for ReplyToken {
    fn drop(&mut self) {
        self.finish(IoOutcome::Err(NbdErrno::EIO));
    }
}

/// What the reactor hands its owner: start `io` on export `export_index` and complete the
/// token when it ends (now or later, on any thread).
pub type Submit<'a> = dyn FnMut(usize, NbdIo, ReplyToken) + 'a;

/// One reply on its way out.
struct OutChunk {
    header: [u8; proto::SIMPLE_REPLY_HEADER_BYTES],
    data: Vec<u8>,
    /// Bytes of header + data already sent.
    sent: usize,
    /// The in-flight credit this reply returns once sent.
    credit_bytes: usize,
}

impl OutChunk {
    fn len(&self) -> usize {
        self.header.len() + self.data.len()
    }
}

/// A write whose payload is still arriving.
struct Payload {
    cookie: u64,
    offset: u64,
    fua: bool,
    data: Vec<u8>,
    length: usize,
}

/// A large write payload for the payload thread to receive.
struct RecvJob {
    connection: u64,
    fd: RawFd,
    data: Vec<u8>,
    length: usize,
    /// For taking the large writes that follow this one straight away (see
    /// `take_next_write`): the export's limits and the credit the connection has left once
    /// this write is counted. The engine starts nothing else on the connection meanwhile,
    /// so this is never more than it would allow.
    limits: ExportLimits,
    spare_requests: usize,
    spare_bytes: usize,
}

/// Its outcome: the full payload, or `None` (end of stream, error, shutdown).
struct RecvDone {
    connection: u64,
    data: Option<Vec<u8>>,
    /// The write whose header followed this payload: the payload thread took that header
    /// and now receives its payload (a later `RecvDone` of the connection brings it).
    next: Option<Offloaded>,
}

/// The thread that receives large write payloads (started on first use).
struct PayloadThread {
    jobs: std::sync::mpsc::Sender<RecvJob>,
    done: Arc<Mutex<Vec<RecvDone>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl PayloadThread {
    fn start(signal: Arc<Signal>, pool: Arc<BufferPool>) -> io::Result<PayloadThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<RecvJob>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, st) = (done.clone(), stop.clone());
        std::thread::Builder::new()
            .name("nbd-payload".into())
            .spawn(move || {
                for mut job in rx {
                    // Back-to-back large writes are received one after the other here, with
                    // no round trip through the engine between them: the socket never waits
                    // for the engine, and a stripe's writes arrive while it writes the last.
                    loop {
                        let ok = receive_all(job.fd, &mut job.data, job.length, &st);
                        let next = if ok && !st.load(Ordering::SeqCst) {
                            take_next_write(&job, &st)
                        } else {
                            None
                        };
                        let data = std::mem::take(&mut job.data);
                        lock(&d).push(RecvDone {
                            connection: job.connection,
                            data: ok.then_some(data),
                            next,
                        });
                        signal.raise();
                        let Some(n) = next else {
                            break;
                        };
                        job.data = pool.take_empty(n.length);
                        job.length = n.length;
                        job.spare_requests -= 1;
                        job.spare_bytes -= n.length;
                    }
                }
            })?;
        Ok(PayloadThread { jobs, done, stop })
    }
}

/// After a payload: if the connection's next request is already here and is a large write
/// its credit allows, takes its header off the socket and returns it (the caller receives
/// its payload next). Anything else stays unread, for the engine.
#[allow(unsafe_code)]
fn take_next_write(job: &RecvJob, stop: &std::sync::atomic::AtomicBool) -> Option<Offloaded> {
    if job.spare_requests == 0 {
        return None;
    }
    let mut header = [0u8; proto::REQUEST_HEADER_BYTES];
    // SAFETY: `job.fd` is the connection's open socket (the engine keeps it open while this
    // thread owns its read side); recv writes at most `header.len()` bytes into `header`.
    let n = unsafe {
        libc::recv(
            job.fd,
            header.as_mut_ptr().cast(),
            header.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n != header.len() as isize {
        return None;
    }
    let h = proto::decode_request_header(&header).ok()?;
    let RequestPlan::Execute(Command::Write {
        offset,
        length,
        fua,
    }) = proto::plan_request(&h, &job.limits)
    else {
        return None;
    };
    let length = length as usize;
    if length < OFFLOAD_PAYLOAD_BYTES || length > job.spare_bytes {
        return None;
    }
    // The peeked bytes are queued on the socket and nobody else reads it: this takes them.
    let mut taken = Vec::with_capacity(header.len());
    if !receive_all(job.fd, &mut taken, header.len(), stop) {
        return None;
    }
    assert_eq!(taken[..], header[..], "the peeked header is the one taken");
    Some(Offloaded {
        cookie: h.cookie,
        offset,
        fua,
        length,
    })
}

impl Drop for PayloadThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Receives until `data` holds `length` bytes; `false` on end of stream, error or `stop`.
#[allow(unsafe_code)]
fn receive_all(
    fd: RawFd,
    data: &mut Vec<u8>,
    length: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> bool {
    while data.len() < length {
        let want = length - data.len();
        match recv_into(fd, data, want) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd on the stack, count 1.
                unsafe { libc::poll(&mut pfd, 1, OFFLOAD_POLL_MS) };
            }
            Err(_) => return false,
        }
    }
    true
}

/// A write whose payload the payload thread is receiving.
#[derive(Clone, Copy, Debug)]
struct Offloaded {
    cookie: u64,
    offset: u64,
    fua: bool,
    length: usize,
}

struct Conn {
    stream: Stream,
    fd: RawFd,
    export_index: usize,
    limits: ExportLimits,
    /// Received bytes `[read_pos, len)` not yet parsed.
    rbuf: Vec<u8>,
    read_pos: usize,
    payload: Option<Payload>,
    /// While set, the payload thread owns the socket's read side (the connection stays open
    /// until it answers: its credit is held).
    offloaded: Option<Offloaded>,
    /// Payload bytes of a rejected write still to skip.
    discard: u64,
    /// Requests submitted or answered whose reply is not yet sent, and their payload bytes.
    in_flight: usize,
    in_flight_bytes: usize,
    max_requests: usize,
    max_bytes: usize,
    /// Parsing waits for credit (a request header is buffered but not consumed).
    blocked: bool,
    /// False after end of stream, `NBD_CMD_DISC`, a protocol error or shutdown.
    reading: bool,
    /// The client is gone: replies are dropped.
    broken: bool,
    out: VecDeque<OutChunk>,
    /// The epoll interest set now registered (0: not registered).
    interest: u32,
}

/// Per-connection limits from the server configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub max_in_flight_requests: usize,
    pub max_in_flight_bytes: usize,
}

enum Fill {
    /// Bytes arrived; `true` if the space offered was filled (more may be waiting).
    Data(bool),
    WouldBlock,
    End,
}

/// The reactor; see the module documentation.
pub struct Reactor {
    epoll: OwnedFd,
    signal: Arc<Signal>,
    inbox: Arc<Inbox>,
    done: Arc<DoneQueue>,
    pool: Arc<BufferPool>,
    conns: HashMap<u64, Conn>,
    limits: Limits,
    /// Connections open now, for `ServerHandle::connection_count`.
    live: Arc<AtomicUsize>,
    stopping: bool,
    events: Vec<libc::epoll_event>,
    payload_thread: Option<PayloadThread>,
    done_scratch: Vec<Done>,
    /// Connections with replies to send or a state change to look at.
    touched: Vec<u64>,
    /// Writes whose payload the payload thread receives, for an owner that asked
    /// (`enable_payload_notices`): an engine may gather them with writes already running.
    payload_notices: Option<Vec<PayloadNotice>>,
}

/// A write's payload began or stopped arriving on the payload thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadNotice {
    /// The header of a write of `length` bytes at `offset` arrived; its payload follows.
    Arriving {
        connection: u64,
        export_index: usize,
        offset: u64,
        length: u64,
    },
    /// That write was submitted, or never will be (one write per connection is arriving).
    Arrived { connection: u64 },
}

#[allow(unsafe_code)]
fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `epoll` and `fd` are open descriptors we own; the event is a live local.
    let r = unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[allow(unsafe_code)]
fn enlarge_socket_buffers(fd: RawFd) {
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        let value = SOCKET_BUFFER_BYTES;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let ptr = (&value as *const libc::c_int).cast();
        // SAFETY: `fd` is an open socket; the option value is a live c_int of `len` bytes.
        // The forced variant needs CAP_NET_ADMIN; without it the plain one is capped by the
        // system's maximum, which is fine too.
        unsafe {
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, ptr, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, ptr, len);
            }
        }
    }
}

/// `recv` into the spare capacity of `buf`, at most `max` bytes.
#[allow(unsafe_code)]
fn recv_into(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let room = (buf.capacity() - buf.len()).min(max);
    if room == 0 {
        return Ok(0);
    }
    loop {
        // SAFETY: the pointer and `room` lie inside `buf`'s allocation past its length;
        // recv writes at most `room` bytes there.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().add(buf.len()).cast(),
                room,
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            // SAFETY: recv initialised exactly `n` bytes past the old length.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl Reactor {
    pub(super) fn new(
        signal: Arc<Signal>,
        inbox: Arc<Inbox>,
        limits: Limits,
        live: Arc<AtomicUsize>,
    ) -> io::Result<Reactor> {
        #[allow(unsafe_code)]
        // SAFETY: no pointers; a non-negative result is a new descriptor owned by nobody.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(unsafe_code)]
        // SAFETY: `fd` was just created and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            signal.fd(),
            libc::EPOLLIN as u32,
            SIGNAL_TOKEN,
        )?;
        Ok(Reactor {
            epoll,
            done: Arc::new(DoneQueue {
                items: Mutex::new(Vec::new()),
                signal: signal.clone(),
            }),
            signal,
            inbox,
            pool: Arc::new(BufferPool::default()),
            conns: HashMap::new(),
            limits,
            live,
            stopping: false,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT],
            payload_thread: None,
            done_scratch: Vec::new(),
            touched: Vec::new(),
            payload_notices: None,
        })
    }

    /// From now on, record a `PayloadNotice` for each write the payload thread receives;
    /// the owner must `take_payload_notices` after every `poll`.
    pub fn enable_payload_notices(&mut self) {
        self.payload_notices.get_or_insert_with(Vec::new);
    }

    /// The notices recorded since the last call, in order.
    pub fn take_payload_notices(&mut self) -> Vec<PayloadNotice> {
        self.payload_notices
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Buffers for read replies: sent ones come back here.
    pub fn pool(&self) -> Arc<BufferPool> {
        self.pool.clone()
    }

    /// Connections still open.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Stops reading requests; connections close once their replies are out.
    pub fn begin_stop(&mut self) {
        self.stopping = true;
        if let Some(t) = &self.payload_thread {
            t.stop.store(true, Ordering::SeqCst);
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.stop_reading();
            }
            self.settle(id);
        }
    }

    /// After `begin_stop`: every connection is closed (no reply is owed).
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
    }

    /// One turn: sends the replies completed since the last turn, waits (up to `max_wait`,
    /// not at all when the signal is pending) for sockets or the signal, reads and submits
    /// the requests that arrived, and sends the replies that completed meanwhile.
    pub fn poll(&mut self, max_wait: Duration, submit: &mut Submit<'_>) {
        self.complete(submit);
        let sleeping = !max_wait.is_zero() && self.signal.begin_sleep();
        let timeout_ms = if sleeping {
            max_wait.as_millis().clamp(1, i32::MAX as u128) as i32
        } else {
            0
        };
        #[allow(unsafe_code)]
        // SAFETY: `events` is a live buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let n = n.max(0) as usize;
        let mut signal_seen = false;
        for i in 0..n {
            let event = self.events[i];
            let token = event.u64;
            if token == SIGNAL_TOKEN {
                signal_seen = true;
                continue;
            }
            let flags = event.events;
            if flags & (libc::EPOLLOUT as u32) != 0 {
                self.flush(token);
            }
            if flags & ((libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32) != 0 {
                self.on_readable(token, submit);
            }
            self.settle(token);
        }
        if sleeping {
            self.signal.end_sleep(signal_seen);
        } else if signal_seen {
            self.signal.drain_event();
        }
        self.payloads_received(submit);
        self.adopt(submit);
        self.complete(submit);
    }

    /// Submits the writes whose payload the payload thread received.
    fn payloads_received(&mut self, submit: &mut Submit<'_>) {
        let Some(t) = &self.payload_thread else {
            return;
        };
        let received: Vec<RecvDone> = std::mem::take(&mut *lock(&t.done));
        for r in received {
            let id = r.connection;
            if let Some(n) = &mut self.payload_notices {
                n.push(PayloadNotice::Arrived { connection: id });
            }
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let o = c
                .offloaded
                .take()
                .expect("a received payload was offloaded");
            if let Some(next) = r.next {
                // The payload thread took the next write's header: it counts from now on.
                assert!(r.data.is_some(), "a write follows only a received payload");
                c.in_flight += 1;
                c.in_flight_bytes += next.length;
                c.offloaded = Some(next);
                if let Some(n) = &mut self.payload_notices {
                    n.push(PayloadNotice::Arriving {
                        connection: id,
                        export_index: c.export_index,
                        offset: next.offset,
                        length: next.length as u64,
                    });
                }
            }
            match r.data {
                Some(data) if c.reading => {
                    let token = c.token(id, o.cookie, None, o.length, &self.done);
                    submit(
                        c.export_index,
                        NbdIo::Write {
                            offset: o.offset,
                            data: pooled_bytes(data, &self.pool),
                            fua: o.fua,
                        },
                        token,
                    );
                    if c.offloaded.is_none() {
                        self.process(id, submit);
                        self.on_readable(id, submit);
                    }
                }
                other => {
                    // A partial write reaches no backend; its credit comes back.
                    c.in_flight -= 1;
                    c.in_flight_bytes -= o.length;
                    if other.is_none() {
                        c.stop_reading();
                    }
                }
            }
            self.settle(id);
        }
    }

    fn adopt(&mut self, submit: &mut Submit<'_>) {
        let new: Vec<NewConnection> = std::mem::take(&mut *lock(&self.inbox.connections));
        for nc in new {
            if self.stopping {
                let _ = nc.stream.shutdown(std::net::Shutdown::Both);
                continue;
            }
            if let Err(e) = nc.stream.set_nonblocking(true) {
                log::info!("NBD connection {}: closed: {e}", nc.id);
                continue;
            }
            let fd = nc.stream.as_raw_fd();
            enlarge_socket_buffers(fd);
            let mut rbuf = Vec::with_capacity(READ_BUFFER_BYTES.max(nc.buffered.len()));
            rbuf.extend_from_slice(&nc.buffered);
            self.conns.insert(
                nc.id,
                Conn {
                    stream: nc.stream,
                    fd,
                    export_index: nc.export_index,
                    limits: nc.limits,
                    rbuf,
                    read_pos: 0,
                    payload: None,
                    offloaded: None,
                    discard: 0,
                    in_flight: 0,
                    in_flight_bytes: 0,
                    max_requests: self.limits.max_in_flight_requests,
                    max_bytes: self.limits.max_in_flight_bytes,
                    blocked: false,
                    reading: true,
                    broken: false,
                    out: VecDeque::new(),
                    interest: 0,
                },
            );
            self.live.fetch_add(1, Ordering::SeqCst);
            self.process(nc.id, submit);
            self.on_readable(nc.id, submit);
            self.settle(nc.id);
        }
    }

    /// Queues the completed replies and sends them.
    fn complete(&mut self, submit: &mut Submit<'_>) {
        let mut done = std::mem::take(&mut self.done_scratch);
        std::mem::swap(&mut done, &mut *lock(&self.done.items));
        for d in done.drain(..) {
            let Some(c) = self.conns.get_mut(&d.connection) else {
                continue;
            };
            if c.broken {
                // Nobody to answer: the credit comes back at once.
                c.in_flight -= 1;
                c.in_flight_bytes -= d.credit_bytes;
                self.touched.push(d.connection);
                continue;
            }
            let header = proto::encode_simple_reply_header(&proto::SimpleReplyHeader::new(
                d.cookie,
                d.result.as_ref().map(|_| ()).map_err(|e| *e),
            ));
            c.out.push_back(OutChunk {
                header,
                data: d.result.unwrap_or_default(),
                sent: 0,
                credit_bytes: d.credit_bytes,
            });
            if c.out.len() == 1 {
                self.touched.push(d.connection);
            }
        }
        self.done_scratch = done;
        while let Some(id) = self.touched.pop() {
            self.flush(id);
            let unblocked = match self.conns.get_mut(&id) {
                Some(c) if c.blocked => {
                    c.blocked = false;
                    true
                }
                _ => false,
            };
            if unblocked {
                self.process(id, submit);
                self.on_readable(id, submit);
            }
            self.settle(id);
        }
    }

    /// Reads what the socket has and submits every complete request.
    fn on_readable(&mut self, id: u64, submit: &mut Submit<'_>) {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if !c.reading || c.blocked || c.offloaded.is_some() {
                return;
            }
            match c.fill() {
                Fill::Data(full) => {
                    self.process(id, submit);
                    if !full {
                        return;
                    }
                }
                Fill::WouldBlock => return,
                Fill::End => {
                    c.stop_reading();
                    return;
                }
            }
        }
    }

    /// Parses and submits what the read buffer holds.
    fn process(&mut self, id: u64, submit: &mut Submit<'_>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let queue = &self.done;
        let pool = &self.pool;
        let mut replied = false;
        while c.reading {
            let avail = c.rbuf.len() - c.read_pos;
            if c.discard > 0 {
                let n = (c.discard.min(avail as u64)) as usize;
                c.read_pos += n;
                c.discard -= n as u64;
                if c.discard > 0 {
                    break;
                }
                continue;
            }
            if let Some(p) = &mut c.payload {
                let n = (p.length - p.data.len()).min(avail);
                p.data
                    .extend_from_slice(&c.rbuf[c.read_pos..c.read_pos + n]);
                c.read_pos += n;
                if p.data.len() < p.length {
                    if p.length - p.data.len() >= OFFLOAD_PAYLOAD_BYTES {
                        if self.payload_thread.is_none() {
                            match PayloadThread::start(self.signal.clone(), pool.clone()) {
                                Ok(t) => self.payload_thread = Some(t),
                                Err(e) => log::warn!("NBD: no payload thread: {e}"),
                            }
                        }
                        if let Some(t) = &self.payload_thread {
                            let p = c.payload.take().expect("checked above");
                            let (p_offset, p_length) = (p.offset, p.length);
                            c.offloaded = Some(Offloaded {
                                cookie: p.cookie,
                                offset: p.offset,
                                fua: p.fua,
                                length: p.length,
                            });
                            let job = RecvJob {
                                connection: id,
                                fd: c.fd,
                                data: p.data,
                                length: p.length,
                                limits: c.limits,
                                spare_requests: c.max_requests.saturating_sub(c.in_flight),
                                spare_bytes: c.max_bytes.saturating_sub(c.in_flight_bytes),
                            };
                            let sent = t.jobs.send(job);
                            if sent.is_ok()
                                && let Some(n) = &mut self.payload_notices
                            {
                                n.push(PayloadNotice::Arriving {
                                    connection: id,
                                    export_index: c.export_index,
                                    offset: p_offset,
                                    length: p_length as u64,
                                });
                            }
                            if let Err(e) = sent {
                                // The thread is gone: receive here after all.
                                let job = e.0;
                                let o = c.offloaded.take().expect("just set");
                                c.payload = Some(Payload {
                                    cookie: o.cookie,
                                    offset: o.offset,
                                    fua: o.fua,
                                    data: job.data,
                                    length: o.length,
                                });
                            }
                        }
                    }
                    break;
                }
                let p = c.payload.take().expect("checked above");
                let token = c.token(id, p.cookie, None, p.length, queue);
                submit(
                    c.export_index,
                    NbdIo::Write {
                        offset: p.offset,
                        data: pooled_bytes(p.data, pool),
                        fua: p.fua,
                    },
                    token,
                );
                continue;
            }
            if avail < proto::REQUEST_HEADER_BYTES {
                break;
            }
            let bytes = &c.rbuf[c.read_pos..c.read_pos + proto::REQUEST_HEADER_BYTES];
            let header = match proto::decode_request_header(bytes) {
                Ok(h) => h,
                Err(e) => {
                    log::info!("NBD connection {id}: closed: protocol error: {e}");
                    c.reading = false;
                    break;
                }
            };
            let cookie = header.cookie;
            let plan = proto::plan_request(&header, &c.limits);
            let payload_bytes = match plan {
                RequestPlan::Execute(Command::Read { length, .. })
                | RequestPlan::Execute(Command::Write { length, .. }) => length as usize,
                _ => 0,
            };
            // Every answer holds a credit until it is sent, so a client that does not read
            // its replies stops being read.
            if plan != RequestPlan::Disconnect && !c.may_start(payload_bytes) {
                c.blocked = true;
                break;
            }
            let command = match plan {
                RequestPlan::Disconnect => {
                    c.read_pos += proto::REQUEST_HEADER_BYTES;
                    c.reading = false;
                    break;
                }
                RequestPlan::Nothing => {
                    c.read_pos += proto::REQUEST_HEADER_BYTES;
                    c.answer_now(cookie, Ok(()));
                    replied = true;
                    continue;
                }
                RequestPlan::Reject {
                    errno,
                    payload_bytes,
                } => {
                    c.read_pos += proto::REQUEST_HEADER_BYTES;
                    c.discard = u64::from(payload_bytes);
                    c.answer_now(cookie, Err(errno));
                    replied = true;
                    continue;
                }
                RequestPlan::RejectAndClose(errno) => {
                    c.read_pos += proto::REQUEST_HEADER_BYTES;
                    log::info!(
                        "NBD connection {id}: closed: write of {} bytes exceeds the maximum payload",
                        header.length
                    );
                    c.answer_now(cookie, Err(errno));
                    replied = true;
                    c.reading = false;
                    break;
                }
                RequestPlan::Execute(command) => command,
            };
            c.read_pos += proto::REQUEST_HEADER_BYTES;
            c.in_flight += 1;
            c.in_flight_bytes += payload_bytes;
            let (io, read_length) = match command {
                Command::Read { offset, length } => (NbdIo::Read { offset, length }, Some(length)),
                Command::Write {
                    offset,
                    length,
                    fua,
                } => {
                    c.payload = Some(Payload {
                        cookie,
                        offset,
                        fua,
                        data: pool.take_empty(length as usize),
                        length: length as usize,
                    });
                    continue;
                }
                Command::Flush => (NbdIo::Flush, None),
                Command::Trim {
                    offset,
                    length,
                    fua,
                } => (
                    NbdIo::Trim {
                        offset,
                        length,
                        fua,
                    },
                    None,
                ),
                // NO_HOLE needs nothing: the backend writes zeroes, it never punches holes.
                Command::WriteZeroes {
                    offset,
                    length,
                    fua,
                    no_hole: _,
                } => (
                    NbdIo::WriteZeroes {
                        offset,
                        length,
                        fua,
                    },
                    None,
                ),
            };
            let token = c.token(id, cookie, read_length, payload_bytes, queue);
            submit(c.export_index, io, token);
        }
        if c.read_pos == c.rbuf.len() {
            c.read_pos = 0;
            c.rbuf.clear();
        }
        if replied {
            self.touched.push(id);
        }
    }

    /// Sends as much of the connection's replies as the socket takes.
    #[allow(unsafe_code)]
    fn flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        while !c.out.is_empty() && !c.broken {
            let mut iov: [libc::iovec; 2 * REPLIES_PER_SEND] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 2 * REPLIES_PER_SEND];
            let mut count = 0;
            for chunk in c.out.iter().take(REPLIES_PER_SEND) {
                let header_len = chunk.header.len();
                if chunk.sent < header_len {
                    iov[count] = libc::iovec {
                        iov_base: chunk.header[chunk.sent..].as_ptr() as *mut libc::c_void,
                        iov_len: header_len - chunk.sent,
                    };
                    count += 1;
                }
                let data_sent = chunk.sent.saturating_sub(header_len);
                if data_sent < chunk.data.len() {
                    iov[count] = libc::iovec {
                        iov_base: chunk.data[data_sent..].as_ptr() as *mut libc::c_void,
                        iov_len: chunk.data.len() - data_sent,
                    };
                    count += 1;
                }
            }
            // SAFETY: an all-zero msghdr is valid (no name, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = count as _;
            // SAFETY: `c.fd` is the open socket `c.stream` owns; the iovecs point into
            // buffers of `c.out`, which are not touched during the call; sendmsg only reads.
            let n = unsafe { libc::sendmsg(c.fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        log::debug!("NBD connection {id}: reply not sent: {err}");
                        c.fail();
                        break;
                    }
                }
            }
            let mut n = n as usize;
            while n > 0 {
                let chunk = c
                    .out
                    .front_mut()
                    .expect("sent bytes belong to a queued reply");
                let rest = chunk.len() - chunk.sent;
                if n < rest {
                    chunk.sent += n;
                    break;
                }
                n -= rest;
                let chunk = c.out.pop_front().expect("checked above");
                c.in_flight -= 1;
                c.in_flight_bytes -= chunk.credit_bytes;
                self.pool.put(chunk.data);
                if c.blocked {
                    self.touched.push(id);
                }
            }
        }
    }

    /// Updates the epoll interest of a connection, or closes it when it is finished.
    fn settle(&mut self, id: u64) {
        let epoll = self.epoll.as_raw_fd();
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.broken || !c.reading {
            c.stop_reading();
        }
        if !c.reading && c.in_flight == 0 && (c.out.is_empty() || c.broken) {
            if c.interest != 0 {
                let _ = epoll_ctl(epoll, libc::EPOLL_CTL_DEL, c.fd, 0, id);
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            self.conns.remove(&id);
            self.live.fetch_sub(1, Ordering::SeqCst);
            log::debug!("NBD connection {id}: closed");
            return;
        }
        let mut want = 0u32;
        if c.reading && !c.blocked && c.offloaded.is_none() {
            want |= libc::EPOLLIN as u32;
        }
        if !c.out.is_empty() && !c.broken {
            want |= libc::EPOLLOUT as u32;
        }
        if want == c.interest {
            return;
        }
        let op = match (c.interest, want) {
            (0, _) => libc::EPOLL_CTL_ADD,
            (_, 0) => libc::EPOLL_CTL_DEL,
            _ => libc::EPOLL_CTL_MOD,
        };
        match epoll_ctl(epoll, op, c.fd, want, id) {
            Ok(()) => c.interest = want,
            Err(e) => {
                log::info!("NBD connection {id}: closed: epoll: {e}");
                c.fail();
                c.interest = 0;
                let _ = epoll_ctl(epoll, libc::EPOLL_CTL_DEL, c.fd, 0, id);
            }
        }
    }
}

impl Conn {
    fn token(
        &self,
        id: u64,
        cookie: u64,
        read_length: Option<u32>,
        credit_bytes: usize,
        queue: &Arc<DoneQueue>,
    ) -> ReplyToken {
        ReplyToken {
            connection: id,
            cookie,
            read_length,
            credit_bytes,
            queue: Some(queue.clone()),
        }
    }

    /// Whether a request with `payload_bytes` may start now (one always may).
    fn may_start(&self, payload_bytes: usize) -> bool {
        self.in_flight == 0
            || (self.in_flight < self.max_requests
                && self.in_flight_bytes + payload_bytes <= self.max_bytes)
    }

    fn answer_now(&mut self, cookie: u64, result: Result<(), NbdErrno>) {
        self.in_flight += 1;
        self.out.push_back(OutChunk {
            header: proto::encode_simple_reply_header(&proto::SimpleReplyHeader::new(
                cookie, result,
            )),
            data: Vec::new(),
            sent: 0,
            credit_bytes: 0,
        });
    }

    /// No more requests: a write whose payload never fully arrived is dropped with its
    /// credit (it reached no backend).
    fn stop_reading(&mut self) {
        self.reading = false;
        if let Some(p) = self.payload.take() {
            self.in_flight -= 1;
            self.in_flight_bytes -= p.length;
        }
    }

    /// The client is gone: drop its replies (returning their credit) and stop reading.
    fn fail(&mut self) {
        self.broken = true;
        self.stop_reading();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for chunk in self.out.drain(..) {
            self.in_flight -= 1;
            self.in_flight_bytes -= chunk.credit_bytes;
        }
    }

    fn fill(&mut self) -> Fill {
        let result = match &mut self.payload {
            Some(p)
                if self.read_pos == self.rbuf.len()
                    && p.length - p.data.len() >= DIRECT_PAYLOAD_BYTES =>
            {
                let want = p.length - p.data.len();
                recv_into(self.fd, &mut p.data, want).map(|n| (n, n == want))
            }
            _ => {
                if self.read_pos > 0
                    && self.rbuf.capacity() - self.rbuf.len() < proto::REQUEST_HEADER_BYTES * 4
                {
                    self.rbuf.drain(..self.read_pos);
                    self.read_pos = 0;
                }
                let want = self.rbuf.capacity() - self.rbuf.len();
                recv_into(self.fd, &mut self.rbuf, want).map(|n| (n, n == want))
            }
        };
        match result {
            Ok((0, _)) => Fill::End,
            Ok((_, full)) => Fill::Data(full),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Fill::WouldBlock,
            Err(e) => {
                log::info!("NBD connection: closed: {e}");
                Fill::End
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::host::nbd::tests::large_writes::{Memory, connect, temp_socket};
    use crate::host::nbd::{Server, ServerConfig};
    use crate::rng::SplitMix64;

    const MIB: usize = 1 << 20;

    fn header(command: u16, flags: u16, cookie: u64, offset: u64, length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        proto::encode_request_header(
            &proto::RequestHeader {
                flags,
                command,
                cookie,
                offset,
                length,
            },
            &mut out,
        );
        out
    }

    fn reply(s: &mut UnixStream, data_bytes: usize) -> (u64, u32, Vec<u8>) {
        reply_with(s, |_| data_bytes)
    }

    /// A reply whose data length depends on its cookie.
    fn reply_with(s: &mut UnixStream, data_bytes: impl Fn(u64) -> usize) -> (u64, u32, Vec<u8>) {
        let mut h = [0u8; proto::SIMPLE_REPLY_HEADER_BYTES];
        s.read_exact(&mut h).unwrap();
        let h = proto::decode_simple_reply_header(&h).unwrap();
        let mut data = vec![
            0u8;
            if h.error == 0 {
                data_bytes(h.cookie)
            } else {
                0
            }
        ];
        s.read_exact(&mut data).unwrap();
        (h.cookie, h.error, data)
    }

    /// Back-to-back large writes are received by the payload thread one after the other,
    /// with no engine turn between them (so their stripes fill while the engine is busy),
    /// and announced in order: each `Arriving` before its write is submitted.
    #[test]
    fn payload_thread_takes_back_to_back_writes_itself() {
        let signal = Arc::new(Signal::new().unwrap());
        let inbox = Arc::new(Inbox::new(signal.clone()));
        let limits = Limits {
            max_in_flight_requests: 64,
            max_in_flight_bytes: 64 << 20,
        };
        let mut r =
            Reactor::new(signal, inbox.clone(), limits, Arc::new(AtomicUsize::new(0))).unwrap();
        r.enable_payload_notices();
        let (ours, mut client) = UnixStream::pair().unwrap();
        inbox.push(NewConnection {
            id: 1,
            stream: Stream::Unix(ours),
            export_index: 0,
            limits: ExportLimits {
                size_bytes: 16 << 20,
                minimum_block_bytes: 512,
                maximum_payload_bytes: 32 << 20,
                read_only: false,
                can_trim: false,
            },
            buffered: Vec::new(),
        });
        let writes: [(u64, usize); 3] = [(0, MIB), (MIB as u64, MIB), (2 * MIB as u64, MIB / 2)];
        // One byte stream written by one `write_all`: the end of each payload and the next
        // header go into the socket together, so the next header is always there when the
        // payload thread looks for it (written separately, a descheduled feeder thread would
        // make the thread find no header yet and, rightly, leave it to the engine).
        let mut stream = Vec::new();
        for (i, &(offset, len)) in writes.iter().enumerate() {
            stream.extend(header(
                proto::CMD_WRITE,
                0,
                i as u64 + 1,
                offset,
                len as u32,
            ));
            stream.extend(vec![i as u8 + 1; len]);
        }
        stream.extend(header(proto::CMD_READ, 0, 9, 0, 4096));
        let mut sender = client.try_clone().unwrap();
        let feeder = std::thread::spawn(move || sender.write_all(&stream).unwrap());
        let mut submitted: Vec<(NbdIo, ReplyToken)> = Vec::new();
        let mut notices = Vec::new();
        // Turn the loop until the first payload is on the payload thread...
        while r.conns.get(&1).is_none_or(|c| c.offloaded.is_none()) {
            r.poll(Duration::from_millis(10), &mut |_, io, t| {
                submitted.push((io, t))
            });
            notices.extend(r.take_payload_notices());
        }
        assert!(submitted.is_empty());
        // ...then leave the engine alone: the thread must receive all three by itself.
        let t = r.payload_thread.as_ref().expect("started");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while lock(&t.done).len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the payload thread waited for the engine between writes"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        feeder.join().unwrap();
        r.poll(Duration::ZERO, &mut |_, io, t| submitted.push((io, t)));
        notices.extend(r.take_payload_notices());
        // (The read behind them may be submitted in the same turn, once the chain ends.)
        assert!(submitted.len() >= 3, "all three submitted in one turn");
        let mut expected = Vec::new();
        for (i, &(offset, len)) in writes.iter().enumerate() {
            expected.push(PayloadNotice::Arriving {
                connection: 1,
                export_index: 0,
                offset,
                length: len as u64,
            });
            expected.push(PayloadNotice::Arrived { connection: 1 });
            match &submitted[i].0 {
                NbdIo::Write {
                    offset: o, data, ..
                } => {
                    assert_eq!(*o, offset);
                    assert!(data.len() == len && data.iter().all(|&b| b == i as u8 + 1));
                }
                other => panic!("write {i} submitted as {other:?}"),
            }
        }
        assert_eq!(notices, expected);
        // The read after them is the engine's again.
        while submitted.len() < 4 {
            r.poll(Duration::from_millis(10), &mut |_, io, t| {
                submitted.push((io, t))
            });
        }
        assert!(matches!(
            submitted[3].0,
            NbdIo::Read {
                offset: 0,
                length: 4096
            }
        ));
        for (io, token) in submitted.drain(..) {
            let data = match io {
                NbdIo::Read { length, .. } => vec![7u8; length as usize],
                _ => Vec::new(),
            };
            token.complete(IoOutcome::Ok(data));
        }
        r.poll(Duration::ZERO, &mut |_, _, _| {
            panic!("nothing more was sent")
        });
        for cookie in 1..=3 {
            assert_eq!(reply(&mut client, 0), (cookie, 0, Vec::new()));
        }
        assert_eq!(reply(&mut client, 4096), (9, 0, vec![7u8; 4096]));
    }

    const SIZE: usize = 24 << 20;

    /// A pipelined random mix of large and small writes, reads, flushes and rejected
    /// requests (out of range, bad flags: their payload must be skipped, not taken as the
    /// next header), under a small in-flight credit: every reply is the one a sequential
    /// server would give.
    #[test]
    fn pipelined_mix_answers_as_in_order() {
        let seed = 0x5eed_c4a1;
        let (dir, socket) = temp_socket("chain");
        let backend = Arc::new(Memory::new(SIZE));
        let server = Server::start(
            backend.clone(),
            ServerConfig {
                unix_socket: Some(socket.clone()),
                max_in_flight_requests: 6,
                max_in_flight_bytes: 5 * MIB,
                ..ServerConfig::default()
            },
        )
        .unwrap();
        let mut rng = SplitMix64::new(seed);
        let mut model = vec![0u8; SIZE];
        // (cookie, error expected, read data expected)
        let mut expect: Vec<(u64, bool, Option<Vec<u8>>)> = Vec::new();
        let mut wire: Vec<u8> = Vec::new();
        for cookie in 0..120u64 {
            let block = 4096u64;
            let blocks = (SIZE as u64) / block;
            let kind = rng.below(10);
            let len_blocks = match kind {
                0..=4 => 64 + rng.below(512 - 64),
                _ => 1 + rng.below(8),
            };
            let len = (len_blocks * block) as usize;
            let offset = rng.below(blocks - len_blocks + 1) * block;
            match kind {
                0..=5 => {
                    let fill = (cookie % 251) as u8 + 1;
                    let data: Vec<u8> = (0..len).map(|i| fill ^ (i / 4096) as u8).collect();
                    wire.extend(header(proto::CMD_WRITE, 0, cookie, offset, len as u32));
                    wire.extend(&data);
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                    expect.push((cookie, false, None));
                }
                6 | 7 => {
                    let len = len.min(64 << 10);
                    wire.extend(header(proto::CMD_READ, 0, cookie, offset, len as u32));
                    let data = model[offset as usize..offset as usize + len].to_vec();
                    expect.push((cookie, false, Some(data)));
                }
                8 => {
                    wire.extend(header(proto::CMD_FLUSH, 0, cookie, 0, 0));
                    expect.push((cookie, false, None));
                }
                _ => {
                    // A large write the server refuses: past the end, or an unknown flag.
                    let (offset, flags) = if rng.below(2) == 0 {
                        (SIZE as u64 - block, 0)
                    } else {
                        (offset, 0x8000)
                    };
                    let len = 512 << 10;
                    wire.extend(header(proto::CMD_WRITE, flags, cookie, offset, len as u32));
                    wire.extend(vec![0xee; len]);
                    expect.push((cookie, true, None));
                }
            }
        }
        let mut c = connect(&socket);
        let mut sender = c.try_clone().unwrap();
        let feeder = std::thread::spawn(move || sender.write_all(&wire).unwrap());
        // Replies may come in any order (a refusal is answered at once); the backend
        // applies requests in submission order, which must be the order sent.
        let expect: HashMap<u64, (bool, Option<Vec<u8>>)> = expect
            .into_iter()
            .map(|(cookie, error, data)| (cookie, (error, data)))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..expect.len() {
            let (cookie, got_error, got) = reply_with(&mut c, |cookie| {
                expect
                    .get(&cookie)
                    .and_then(|(_, d)| d.as_ref())
                    .map_or(0, Vec::len)
            });
            assert!(
                seen.insert(cookie),
                "seed {seed:#x}: {cookie} answered twice"
            );
            let (error, data) = expect.get(&cookie).expect("a cookie we sent");
            assert_eq!(got_error != 0, *error, "seed {seed:#x}: request {cookie}");
            if let Some(data) = data {
                assert!(got == *data, "seed {seed:#x}: read {cookie} differs");
            }
        }
        feeder.join().unwrap();
        server.shutdown();
        assert!(*lock(&backend.0) == model, "seed {seed:#x}: final content");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
