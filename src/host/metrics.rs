//! Prometheus exposition on the host: a tiny HTTP/1.1 responder for GET /metrics and a file
//! rewritten atomically (write, then rename) for node_exporter's textfile collector.
//!
//! Both get their text from the engine thread through `Fetch`: the engine owns the arrays,
//! these threads never touch them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::monitor::prometheus::CONTENT_TYPE;

/// Asks the engine for the current text; `None` if it did not answer in time.
pub type Fetch = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Largest request head read (a GET with a few headers is far below it).
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The HTTP responder: one thread, one connection at a time (scrapes are rare and small).
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves GET /metrics with `fetch`'s text.
    pub fn start(addr: SocketAddr, fetch: Fetch) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("raid-metrics-http".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = answer(stream, &fetch) {
                                log::debug!("metrics client: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            log::warn!("metrics listener: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request head and answers it; the connection is closed afterwards.
fn answer(mut stream: TcpStream, fetch: &Fetch) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            );
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => match fetch() {
            Some(body) => {
                let body = if method == "HEAD" { "" } else { body.as_str() };
                respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes())
            }
            None => respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                b"the engine did not answer\n",
            ),
        },
        ("GET" | "HEAD", _) => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"only /metrics is served here\n",
        ),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET /metrics\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Writes `text` to `path` atomically: a reader sees the old file or the new one, whole.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// A thread that writes the texts it is handed to a file, so a slow disk never stalls the
/// engine; a text that arrives while one is being written replaces nothing and is dropped
/// (the next interval brings a fresher one).
pub struct MetricsFileWriter {
    tx: Option<SyncSender<String>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsFileWriter {
    pub fn start(path: PathBuf) -> std::io::Result<Self> {
        let (tx, rx): (SyncSender<String>, Receiver<String>) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("raid-metrics-file".into())
            .spawn(move || {
                for text in rx {
                    if let Err(e) = write_atomically(&path, &text) {
                        log::warn!("metrics file {}: {e}", path.display());
                    }
                }
            })?;
        Ok(MetricsFileWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `text` unless a write is still pending.
    pub fn offer(&self, text: String) {
        if let Some(tx) = &self.tx {
            match tx.try_send(text) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => log::warn!("metrics file writer stopped"),
            }
        }
    }

    /// Writes `text` as the final content (waiting for a pending write first) and stops.
    pub fn finish_with(&mut self, text: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(text);
        }
        self.finish();
    }

    /// Writes what is queued and stops.
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsFileWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let fetch: Fetch = Arc::new(|| Some("orion_raid_x 1\n".to_string()));
        let mut server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), fetch).unwrap();
        let addr = server.local_addr();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 15\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\norion_raid_x 1\n"), "{ok}");
        assert!(get(addr, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 405"));
        server.stop();
    }

    #[test]
    fn file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("orion-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("raid.prom");
        let mut w = MetricsFileWriter::start(path.clone()).unwrap();
        w.offer("a 1\n".into());
        w.finish_with("a 3\n".into());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 3\n");
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        assert!(!dir.join("raid.prom.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
