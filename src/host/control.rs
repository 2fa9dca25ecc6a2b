//! The control socket: the storage-service side of the driver's IPC on the host. Clients
//! send the same `ManagementRequest` frames an Orion storage service would; the socket is
//! created with mode 0600.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use orion_driver::{Frame, FrameError, ManagementRequest, Message, decode, encode};

/// Frames from control clients to the engine, tagged with the connection.
pub enum ControlEvent {
    Frame { conn: u64, frame: Frame },
    Closed { conn: u64 },
}

/// Largest amount of undecoded input a client may leave pending.
const MAX_PENDING_BYTES: usize = 1 << 20;

/// Binds `path` with mode 0600 (no window in which another user could connect).
#[allow(unsafe_code)]
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        // A socket left by a server that died: connecting tells whether one still listens.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running server", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only changes the process file-creation mask; it cannot fail. It is set
    // back right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    listener
}

/// The listening control socket and its connection threads.
pub struct ControlServer {
    path: PathBuf,
    writers: Arc<Mutex<HashMap<u64, UnixStream>>>,
    accept: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ControlServer {
    /// Starts accepting on `path`; every decoded frame goes to `events`, and `wake` is called
    /// after each so the engine loop notices.
    pub fn start(
        path: &Path,
        events: Sender<ControlEvent>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let listener = bind_private(path)?;
        listener.set_nonblocking(true)?;
        let writers: Arc<Mutex<HashMap<u64, UnixStream>>> = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = writers.clone();
        let s = stop.clone();
        let accept = std::thread::Builder::new()
            .name("raid-control".into())
            .spawn(move || {
                let mut next_conn = 0u64;
                while !s.load(std::sync::atomic::Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            next_conn += 1;
                            let conn = next_conn;
                            let _ = stream.set_nonblocking(false);
                            if let Ok(clone) = stream.try_clone() {
                                w.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(conn, clone);
                            }
                            let events = events.clone();
                            let wake = wake.clone();
                            let _ = std::thread::Builder::new()
                                .name(format!("raid-control-{conn}"))
                                .spawn(move || read_client(conn, stream, events, wake));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            log::warn!("control socket accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            writers,
            accept: Some(accept),
            stop,
        })
    }

    /// Sends a reply frame to connection `conn` (dropped if it is gone).
    pub fn send(&self, conn: u64, frame: &Frame) {
        let Ok(bytes) = encode(frame) else {
            log::error!("control reply could not be encoded");
            return;
        };
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = writers.get_mut(&conn) {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            if stream.write_all(&bytes).is_err() {
                writers.remove(&conn);
            }
        }
    }

    pub fn forget(&self, conn: u64) {
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }

    /// Stops accepting and removes the socket file.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for (_, s) in self
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_client(
    conn: u64,
    mut stream: UnixStream,
    events: Sender<ControlEvent>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            match decode(&pending) {
                Ok((frame, used)) => {
                    pending.drain(..used);
                    if events.send(ControlEvent::Frame { conn, frame }).is_err() {
                        return;
                    }
                    wake();
                }
                Err(FrameError::NeedMore { .. }) => break,
                Err(e) => {
                    // A client that sends garbage is cut off; the server goes on.
                    log::warn!("control client {conn}: {e}; disconnecting");
                    let _ = events.send(ControlEvent::Closed { conn });
                    wake();
                    return;
                }
            }
        }
        if pending.len() > MAX_PENDING_BYTES {
            break;
        }
    }
    let _ = events.send(ControlEvent::Closed { conn });
    wake();
}

/// Why a control request failed, for the command line.
#[derive(Debug)]
pub enum ControlError {
    /// No server at that path.
    Connect(PathBuf, std::io::Error),
    Io(std::io::Error),
    Protocol(String),
    /// The server answered with an error.
    Refused(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Connect(p, e) => write!(
                f,
                "cannot reach a running `raid serve` at {}: {e}",
                p.display()
            ),
            ControlError::Io(e) => write!(f, "control socket: {e}"),
            ControlError::Protocol(m) => write!(f, "control protocol: {m}"),
            ControlError::Refused(m) => f.write_str(m),
        }
    }
}

/// Sends one management request and waits for its answer's payload.
pub fn call(path: &Path, opcode: u16, payload: Vec<u8>) -> Result<Vec<u8>, ControlError> {
    let mut stream =
        UnixStream::connect(path).map_err(|e| ControlError::Connect(path.to_path_buf(), e))?;
    let frame = Frame {
        sequence: 1,
        message: Message::ManagementRequest(ManagementRequest { opcode, payload }),
    };
    let bytes = encode(&frame).map_err(|e| ControlError::Protocol(format!("{e:?}")))?;
    stream.write_all(&bytes).map_err(ControlError::Io)?;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decode(&pending) {
            Ok((reply, _)) => {
                return match reply.message {
                    Message::ManagementResponse(r) => match r.status {
                        Ok(()) => Ok(r.payload),
                        Err(e) => Err(ControlError::Refused(format!(
                            "{}: {e}",
                            String::from_utf8_lossy(&r.payload)
                        ))),
                    },
                    Message::Error(e) => Err(ControlError::Refused(format!("{}", e.error))),
                    other => Err(ControlError::Protocol(format!(
                        "unexpected reply {other:?}"
                    ))),
                };
            }
            Err(FrameError::NeedMore { .. }) => {}
            Err(e) => return Err(ControlError::Protocol(e.to_string())),
        }
        let n = stream.read(&mut buf).map_err(ControlError::Io)?;
        if n == 0 {
            return Err(ControlError::Protocol(
                "server closed the connection".into(),
            ));
        }
        pending.extend_from_slice(&buf[..n]);
    }
}
