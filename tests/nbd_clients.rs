//! The NBD server against real clients (qemu-io, nbdinfo, nbdcopy, fio) and against a raw
//! socket sending bad input, over a memory export whose I/O completes on a thread pool.
//!
//! A test whose client tool is missing fails when `CI` is set and is skipped otherwise.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use orion_raid::host::nbd::proto::*;
use orion_raid::host::nbd::{
    Backend, Completion, ExportInfo, IoOutcome, NbdErrno, NbdIo, Server, ServerConfig, ServerHandle,
};
use orion_raid::rng::SplitMix64;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// A memory backend

type Job = Box<dyn FnOnce() + Send>;

/// How the memory backend completes I/O.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// On the submitting thread, before `submit` returns.
    Inline,
    /// On a pool of worker threads.
    Pool,
    /// Held until the test releases them (`MemoryBackend::release`).
    Held,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    fua_writes: AtomicU64,
    flushes: AtomicU64,
    trims: AtomicU64,
    zeroes: AtomicU64,
}

struct MemoryBackend {
    exports: Vec<ExportInfo>,
    disks: Vec<Arc<Mutex<Vec<u8>>>>,
    mode: Mode,
    pool: Mutex<Option<Sender<Job>>>,
    held: Mutex<Vec<(NbdIo, Completion)>>,
    held_changed: Condvar,
    /// Reads that touch [start, end) of export 0 fail with EIO; reads at exactly
    /// `drop_at` have their completion dropped uncalled.
    bad_range: (u64, u64),
    drop_at: Option<u64>,
    counters: Arc<Counters>,
}

fn export(name: &str, size_bytes: u64) -> ExportInfo {
    ExportInfo {
        name: name.into(),
        description: format!("memory export {name}"),
        size_bytes,
        preferred_block_bytes: 4096,
        read_only: false,
        multi_conn: true,
        can_trim: true,
    }
}

impl MemoryBackend {
    fn new(exports: Vec<ExportInfo>, mode: Mode) -> Arc<Self> {
        Self::with_faults(exports, mode, (u64::MAX, u64::MAX), None)
    }

    fn with_faults(
        exports: Vec<ExportInfo>,
        mode: Mode,
        bad_range: (u64, u64),
        drop_at: Option<u64>,
    ) -> Arc<Self> {
        let disks = exports
            .iter()
            .map(|e| Arc::new(Mutex::new(vec![0u8; e.size_bytes as usize])))
            .collect();
        let pool = (mode == Mode::Pool).then(|| {
            let (sender, receiver) = channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..4 {
                let receiver = receiver.clone();
                thread::spawn(move || {
                    loop {
                        let job = receiver.lock().unwrap().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            }
            sender
        });
        Arc::new(MemoryBackend {
            exports,
            disks,
            mode,
            pool: Mutex::new(pool),
            held: Mutex::new(Vec::new()),
            held_changed: Condvar::new(),
            bad_range,
            drop_at,
            counters: Arc::default(),
        })
    }

    fn single(size_bytes: u64, mode: Mode) -> Arc<Self> {
        Self::new(vec![export("mem0", size_bytes)], mode)
    }

    fn snapshot(&self, index: usize) -> Vec<u8> {
        self.disks[index].lock().unwrap().clone()
    }

    fn fill(&self, index: usize, seed: u64) {
        SplitMix64::new(seed).fill(&mut self.disks[index].lock().unwrap());
    }

    /// Waits until `count` I/Os are held by the backend.
    fn wait_held(&self, count: usize) {
        let mut held = self.held.lock().unwrap();
        while held.len() < count {
            let (h, timeout) = self
                .held_changed
                .wait_timeout(held, Duration::from_secs(20))
                .unwrap();
            held = h;
            assert!(
                !timeout.timed_out(),
                "only {} I/Os reached the backend",
                held.len()
            );
        }
    }

    /// Completes every held I/O, in the order `order` gives (indices in submission order).
    fn release(&self, order: &[usize]) {
        let held: Vec<(NbdIo, Completion)> = std::mem::take(&mut *self.held.lock().unwrap());
        let mut held: Vec<Option<(NbdIo, Completion)>> = held.into_iter().map(Some).collect();
        for &i in order {
            let (io, done) = held[i].take().expect("released once");
            done(execute(&self.disks[0], &self.counters, io));
        }
        assert!(held.iter().all(Option::is_none), "every held I/O released");
    }
}

fn execute(disk: &Mutex<Vec<u8>>, counters: &Counters, io: NbdIo) -> IoOutcome {
    let mut disk = disk.lock().unwrap();
    let range = |offset: u64, length: usize| offset as usize..offset as usize + length;
    match io {
        NbdIo::Read { offset, length } => {
            counters.reads.fetch_add(1, Ordering::Relaxed);
            IoOutcome::Ok(disk[range(offset, length as usize)].to_vec())
        }
        NbdIo::Write { offset, data, fua } => {
            counters.writes.fetch_add(1, Ordering::Relaxed);
            if fua {
                counters.fua_writes.fetch_add(1, Ordering::Relaxed);
            }
            disk[range(offset, data.len())].copy_from_slice(&data);
            IoOutcome::Ok(Vec::new())
        }
        NbdIo::Flush => {
            counters.flushes.fetch_add(1, Ordering::Relaxed);
            IoOutcome::Ok(Vec::new())
        }
        NbdIo::Trim { offset, length, .. } => {
            counters.trims.fetch_add(1, Ordering::Relaxed);
            // Memory has nothing to give back; a trim is a hint. Scribble to prove clients
            // do not rely on the contents.
            disk[range(offset, length as usize)].fill(0xdd);
            IoOutcome::Ok(Vec::new())
        }
        NbdIo::WriteZeroes { offset, length, .. } => {
            counters.zeroes.fetch_add(1, Ordering::Relaxed);
            disk[range(offset, length as usize)].fill(0);
            IoOutcome::Ok(Vec::new())
        }
    }
}

impl Backend for MemoryBackend {
    fn exports(&self) -> Vec<ExportInfo> {
        self.exports.clone()
    }

    fn submit(&self, export_index: usize, io: NbdIo, done: Completion) {
        if let (NbdIo::Read { offset, length }, 0) = (&io, export_index) {
            let (offset, length) = (*offset, u64::from(*length));
            if Some(offset) == self.drop_at {
                drop(done);
                return;
            }
            if offset < self.bad_range.1 && offset + length > self.bad_range.0 {
                done(IoOutcome::Err(NbdErrno::EIO));
                return;
            }
        }
        match self.mode {
            Mode::Inline => done(execute(&self.disks[export_index], &self.counters, io)),
            Mode::Held => {
                assert_eq!(export_index, 0);
                self.held.lock().unwrap().push((io, done));
                self.held_changed.notify_all();
            }
            Mode::Pool => {
                let disk = self.disks[export_index].clone();
                let counters = self.counters.clone();
                let job: Job = Box::new(move || done(execute(&disk, &counters, io)));
                if let Some(pool) = &*self.pool.lock().unwrap() {
                    pool.send(job).expect("pool running");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Harness

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orion-nbd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Running {
    server: Option<ServerHandle>,
    socket: PathBuf,
    dir: PathBuf,
}

impl Running {
    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    fn uri_for(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    fn shutdown(mut self) {
        self.server.take().unwrap().shutdown();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(name: &str, backend: Arc<dyn Backend>) -> Running {
    serve_with(name, backend, ServerConfig::default())
}

fn serve_with(name: &str, backend: Arc<dyn Backend>, mut config: ServerConfig) -> Running {
    let dir = temp_dir(name);
    let socket = dir.join("nbd.sock");
    config.unix_socket = Some(socket.clone());
    let server = Server::start(backend, config).expect("start NBD server");
    Running {
        server: Some(server),
        socket,
        dir,
    }
}

/// Whether `tool` runs; in CI a missing tool is a failure.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is not installed; .ci/run must install it");
        }
        eprintln!("notice: {tool} not installed, skipping");
    }
    found
}

/// Runs a client with a time limit so a server bug fails the test instead of hanging it.
fn run(tool: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("120")
        .arg(tool)
        .args(args)
        .output()
        .expect("run client");
    eprintln!(
        "$ {tool} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------
// Real clients

/// Forwards one connection from `listen` to `target`, recording what the client sends.
fn recording_proxy(listen: &Path, target: &Path) -> thread::JoinHandle<Vec<u8>> {
    let listener = UnixListener::bind(listen).unwrap();
    let target = target.to_path_buf();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut server = UnixStream::connect(&target).unwrap();
        let mut client_read = client.try_clone().unwrap();
        let mut server_write = server.try_clone().unwrap();
        let upstream = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match client_read.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        if server_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = server_write.shutdown(std::net::Shutdown::Write);
            seen
        });
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
        upstream.join().unwrap()
    })
}

/// The option numbers in a recorded client handshake, up to the one entering transmission.
fn options_sent(recorded: &[u8]) -> Vec<u32> {
    let mut options = Vec::new();
    let mut at = CLIENT_FLAGS_BYTES;
    while let Ok(h) = decode_option_header(&recorded[at.min(recorded.len())..]) {
        options.push(h.option);
        at += OPTION_HEADER_BYTES + h.data_bytes as usize;
        if h.option == OPT_GO || h.option == OPT_EXPORT_NAME {
            break;
        }
    }
    options
}

#[test]
fn qemu_io_negotiates_and_does_io() {
    if !have("qemu-io") {
        return;
    }
    let backend = MemoryBackend::single(16 * MIB, Mode::Pool);
    let srv = serve("qemu-io", backend.clone());

    // Watch one qemu-io handshake: it offers extensions first and must still reach GO.
    let proxy_socket = srv.dir.join("proxy.sock");
    let proxy = recording_proxy(&proxy_socket, &srv.socket);
    let proxied = format!("nbd+unix:///?socket={}", proxy_socket.display());
    let out = run("qemu-io", &["-f", "raw", &proxied, "-c", "read -P 0 0 64k"]);
    assert!(out.status.success(), "qemu-io through the proxy failed");
    let options = options_sent(&proxy.join().unwrap());
    eprintln!("qemu options: {options:?}");
    assert_eq!(
        options.last(),
        Some(&OPT_GO),
        "qemu entered with NBD_OPT_GO"
    );
    assert!(
        options.contains(&OPT_STRUCTURED_REPLY) || options.contains(&OPT_EXTENDED_HEADERS),
        "qemu offered structured replies or extended headers (refused): {options:?}"
    );

    let uri = srv.uri();
    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "write -f -P 0x5c 1M 1M", // FUA
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "read -P 0x5c 1M 1M",
            "-c",
            "write -P 0x99 2M 2M",
            "-c",
            "write -z 2M 1M", // NO_HOLE
            "-c",
            "write -z -u 3M 1M", // may punch a hole
            "-c",
            "read -P 0 2M 2M",
            "-c",
            "discard 4M 1M",
            "-c",
            "flush",
            "-c",
            "aio_write -P 0x11 8M 64k",
            "-c",
            "aio_write -P 0x22 9M 64k",
            "-c",
            "aio_flush",
            "-c",
            "read -P 0x11 8M 64k",
            "-c",
            "read -P 0x22 9M 64k",
            "-c",
            "write -P 0x77 15M 1M", // the last MiB
            "-c",
            "read -P 0x77 15M 1M",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "qemu-io failed");
    assert!(!t.contains("Pattern verification failed"), "{t}");
    assert!(!t.contains("failed"), "{t}");
    let disk = backend.snapshot(0);
    assert!(disk[..MIB as usize].iter().all(|&b| b == 0xab));
    assert!(
        disk[MIB as usize..2 * MIB as usize]
            .iter()
            .all(|&b| b == 0x5c)
    );
    assert!(
        disk[2 * MIB as usize..4 * MIB as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(disk[15 * MIB as usize..].iter().all(|&b| b == 0x77));
    let c = &backend.counters;
    assert!(
        c.fua_writes.load(Ordering::Relaxed) >= 1,
        "FUA reached the backend"
    );
    assert!(
        c.zeroes.load(Ordering::Relaxed) >= 2,
        "write zeroes reached the backend"
    );
    assert!(
        c.trims.load(Ordering::Relaxed) >= 1,
        "discard reached the backend"
    );
    assert!(
        c.flushes.load(Ordering::Relaxed) >= 2,
        "flushes reached the backend"
    );

    // A wrong pattern is noticed: the data really travels.
    let out = run("qemu-io", &["-f", "raw", &uri, "-c", "read -P 0xcd 0 4k"]);
    assert!(
        text(&out).contains("Pattern verification failed"),
        "qemu-io did not notice a wrong pattern"
    );
    // Past the end: qemu refuses it itself, and the export is unharmed.
    let out = run("qemu-io", &["-f", "raw", &uri, "-c", "read 16M 4k"]);
    assert!(text(&out).contains("error") || text(&out).contains("Input/output"));
    srv.shutdown();
}

#[test]
fn nbdinfo_reports_size_block_sizes_and_exports() {
    if !have("nbdinfo") {
        return;
    }
    let mut ro = export("ro", 4 * MIB);
    ro.read_only = true;
    ro.multi_conn = false;
    ro.can_trim = false;
    ro.preferred_block_bytes = 65536;
    ro.description = String::new();
    let backend = MemoryBackend::new(vec![export("mem0", 48 * MIB), ro], Mode::Pool);
    let srv = serve("nbdinfo", backend);

    let out = run("nbdinfo", &[&srv.uri()]);
    assert!(out.status.success());
    let t = text(&out);
    for line in [
        "export-size: 50331648",
        "block_size_minimum: 512",
        "block_size_preferred: 4096",
        "block_size_maximum: 33554432",
        "is_read_only: false",
        "can_multi_conn: true",
        "can_trim: true",
        "can_zero: true",
        "can_flush: true",
        "can_fua: true",
        "description: memory export mem0",
        "export=\"mem0\"",
    ] {
        assert!(t.contains(line), "nbdinfo lacks {line:?}:\n{t}");
    }
    let out = run("nbdinfo", &[&srv.uri_for("ro")]);
    let t = text(&out);
    for line in [
        "export-size: 4194304",
        "block_size_preferred: 65536",
        "is_read_only: true",
        "can_multi_conn: false",
        "can_trim: false",
    ] {
        assert!(t.contains(line), "nbdinfo lacks {line:?}:\n{t}");
    }
    let out = run("nbdinfo", &["--size", &srv.uri()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "50331648");
    let out = run("nbdinfo", &["--list", &srv.uri()]);
    let t = text(&out);
    assert!(out.status.success());
    assert!(
        t.contains("export=\"mem0\"") && t.contains("export=\"ro\""),
        "{t}"
    );
    // An export that does not exist is refused with an error, not a hang-up.
    let out = run("nbdinfo", &[&srv.uri_for("nope")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nope"));
}

#[test]
fn nbdcopy_round_trip() {
    if !have("nbdcopy") {
        return;
    }
    let size = 16 * MIB;
    let backend = MemoryBackend::single(size, Mode::Pool);
    let srv = serve("nbdcopy", backend.clone());
    let mut original = vec![0u8; size as usize];
    let seed = 0x6e62_6463;
    SplitMix64::new(seed).fill(&mut original);
    // A zero stretch lets nbdcopy use write-zeroes.
    original[4 * MIB as usize..6 * MIB as usize].fill(0);
    let source = srv.dir.join("source.img");
    let back = srv.dir.join("back.img");
    std::fs::write(&source, &original).unwrap();

    let out = run("nbdcopy", &[source.to_str().unwrap(), &srv.uri()]);
    assert!(
        out.status.success(),
        "nbdcopy to the export failed (seed {seed:#x})"
    );
    assert!(
        backend.snapshot(0) == original,
        "export differs from the source"
    );
    let out = run("nbdcopy", &[&srv.uri(), back.to_str().unwrap()]);
    assert!(out.status.success(), "nbdcopy from the export failed");
    assert!(std::fs::read(&back).unwrap() == original, "copy differs");
}

#[test]
fn fio_verifies_what_it_writes() {
    if !have("fio") {
        return;
    }
    let backend = MemoryBackend::single(16 * MIB, Mode::Pool);
    let srv = serve("fio", backend);
    let uri = format!("--uri={}", srv.uri());
    let out = run(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &uri,
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--size=8M",
            "--iodepth=8",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--randseed=1234",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "fio failed:\n{t}");
    assert!(!t.contains("verify: bad"), "{t}");
    assert!(t.contains("err= 0"), "{t}");
}

#[test]
fn tcp_listener_serves_qemu() {
    if !have("qemu-io") {
        return;
    }
    let backend = MemoryBackend::single(4 * MIB, Mode::Pool);
    let config = ServerConfig {
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    };
    let srv = serve_with("tcp", backend.clone(), config);
    let addr = srv.server.as_ref().unwrap().tcp_address().unwrap();
    assert_ne!(addr.port(), 0);
    let uri = format!("nbd://127.0.0.1:{}", addr.port());
    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0x42 64k 64k",
            "-c",
            "read -P 0x42 64k 64k",
        ],
    );
    assert!(out.status.success());
    assert!(!text(&out).contains("failed"));
    assert!(
        backend.snapshot(0)[65536..131072]
            .iter()
            .all(|&b| b == 0x42)
    );
    // And the Unix socket at the same time.
    let out = run(
        "qemu-io",
        &["-f", "raw", &srv.uri(), "-c", "read -P 0x42 64k 64k"],
    );
    assert!(!text(&out).contains("failed"));
}

// ---------------------------------------------------------------------------------------
// A raw client: bad input the real clients never send

trait Socket: Read + Write + Send {}
impl<T: Read + Write + Send> Socket for T {}

struct Raw {
    s: Box<dyn Socket>,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw::greet(Box::new(s))
    }

    fn connect_tcp(addr: std::net::SocketAddr) -> Raw {
        let s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw::greet(Box::new(s))
    }

    fn greet(s: Box<dyn Socket>) -> Raw {
        let mut raw = Raw { s };
        let greeting = raw.read_exact(GREETING_BYTES);
        assert_eq!(
            decode_greeting(&greeting),
            Ok(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
        );
        raw
    }

    /// Connected to export `name` through NBD_OPT_GO; returns (size, transmission flags).
    fn go(path: &Path, name: &str) -> (Raw, u64, u16) {
        let mut raw = Raw::connect(path);
        raw.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        let (size, flags, _) = raw.query(OPT_GO, name, &[INFO_BLOCK_SIZE]);
        (raw, size, flags)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.s.read_exact(&mut buf).expect("read from server");
        buf
    }

    fn client_flags(&mut self, flags: u32) {
        self.send(&flags.to_be_bytes());
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let mut out = Vec::new();
        encode_option_header(
            OptionHeader {
                option,
                data_bytes: data.len() as u32,
            },
            &mut out,
        );
        out.extend_from_slice(data);
        self.send(&out);
    }

    fn option_reply(&mut self) -> (OptionReplyHeader, Vec<u8>) {
        let h = decode_option_reply_header(&self.read_exact(OPTION_REPLY_HEADER_BYTES)).unwrap();
        let data = self.read_exact(h.data_bytes as usize);
        (h, data)
    }

    /// Sends INFO or GO and collects the info items until ACK. Panics on an error reply.
    fn query(&mut self, option: u32, name: &str, requests: &[u16]) -> (u64, u16, Vec<InfoItem>) {
        let q = ExportQuery {
            name: name.into(),
            info_requests: requests.to_vec(),
        };
        let mut out = Vec::new();
        let opt = if option == OPT_GO {
            ClientOption::Go(q)
        } else {
            ClientOption::Info(q)
        };
        encode_option(&opt, &mut out);
        self.send(&out);
        let mut items = Vec::new();
        loop {
            let (h, data) = self.option_reply();
            assert_eq!(h.option, option);
            match h.reply_type {
                REP_INFO => items.push(decode_info(&data).unwrap()),
                REP_ACK => break,
                other => panic!(
                    "{name:?}: reply {other:#x} {:?}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
        let (size, flags) = items
            .iter()
            .find_map(|i| match i {
                InfoItem::Export {
                    size_bytes,
                    transmission_flags,
                } => Some((*size_bytes, *transmission_flags)),
                _ => None,
            })
            .expect("NBD_INFO_EXPORT before ACK");
        (size, flags, items)
    }

    fn request(&mut self, command: u16, flags: u16, cookie: u64, offset: u64, length: u32) {
        let mut out = Vec::new();
        encode_request_header(
            &RequestHeader {
                flags,
                command,
                cookie,
                offset,
                length,
            },
            &mut out,
        );
        self.send(&out);
    }

    fn reply(&mut self, data_bytes: usize) -> (u64, Option<NbdErrno>, Vec<u8>) {
        let h = decode_simple_reply_header(&self.read_exact(SIMPLE_REPLY_HEADER_BYTES)).unwrap();
        if h.error != 0 {
            return (
                h.cookie,
                Some(NbdErrno::from_code(h.error).expect("known errno")),
                vec![],
            );
        }
        (h.cookie, None, self.read_exact(data_bytes))
    }

    fn read(&mut self, offset: u64, length: u32) -> Vec<u8> {
        self.request(CMD_READ, 0, 0xfeed, offset, length);
        let (cookie, error, data) = self.reply(length as usize);
        assert_eq!((cookie, error), (0xfeed, None), "read at {offset}");
        data
    }

    fn write(&mut self, offset: u64, data: &[u8], flags: u16) {
        self.request(CMD_WRITE, flags, 0xbeef, offset, data.len() as u32);
        self.send(data);
        let (cookie, error, _) = self.reply(0);
        assert_eq!((cookie, error), (0xbeef, None), "write at {offset}");
    }

    /// Sends a request that must fail with `errno` (and carries `payload` if any).
    fn expect_error(&mut self, h: RequestHeader, payload: &[u8], errno: NbdErrno) {
        self.request(h.command, h.flags, h.cookie, h.offset, h.length);
        self.send(payload);
        let (cookie, error, _) = self.reply(0);
        assert_eq!((cookie, error), (h.cookie, Some(errno)), "{h:?}");
    }

    /// The server closed the connection (EOF or reset, nothing else sent).
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn header(command: u16, flags: u16, cookie: u64, offset: u64, length: u32) -> RequestHeader {
    RequestHeader {
        flags,
        command,
        cookie,
        offset,
        length,
    }
}

fn two_exports() -> Vec<ExportInfo> {
    let mut ro = export("ro", MIB);
    ro.read_only = true;
    ro.multi_conn = false;
    ro.can_trim = false;
    ro.preferred_block_bytes = 65536;
    vec![export("mem0", 4 * MIB), ro]
}

#[test]
fn options_refused_listed_and_answered() {
    let backend = MemoryBackend::new(two_exports(), Mode::Inline);
    let srv = serve("options", backend);
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);

    // What qemu and libnbd try first, TLS, and numbers nobody defined: all refused, and
    // the connection carries on.
    let meta_query = [0u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 16];
    for (option, data) in [
        (OPT_EXTENDED_HEADERS, &[][..]),
        (OPT_STRUCTURED_REPLY, &[][..]),
        (OPT_STARTTLS, &[][..]),
        (OPT_LIST_META_CONTEXT, &meta_query[..]),
        (OPT_SET_META_CONTEXT, &meta_query[..]),
        (OPT_PEEK_EXPORT, &[][..]),
        (0, &[][..]),
        (4242, &b"whatever"[..]),
    ] {
        c.option(option, data);
        let (h, _) = c.option_reply();
        assert_eq!((h.option, h.reply_type), (option, REP_ERR_UNSUP));
    }

    c.option(OPT_LIST, &[]);
    let mut listed = Vec::new();
    loop {
        let (h, data) = c.option_reply();
        assert_eq!(h.option, OPT_LIST);
        match h.reply_type {
            REP_SERVER => listed.push(decode_rep_server(&data).unwrap()),
            REP_ACK => break,
            other => panic!("LIST reply {other:#x}"),
        }
    }
    assert_eq!(
        listed,
        [
            ("mem0".to_string(), "memory export mem0".to_string()),
            ("ro".to_string(), "memory export ro".to_string())
        ]
    );

    // Malformed data for known options: NBD_REP_ERR_INVALID with a message.
    c.option(OPT_LIST, b"x");
    assert_eq!(c.option_reply().0.reply_type, REP_ERR_INVALID);
    c.option(OPT_INFO, &[0, 0, 0, 9, b'm']);
    let (h, message) = c.option_reply();
    assert_eq!(h.reply_type, REP_ERR_INVALID);
    assert!(!message.is_empty());
    c.option(OPT_GO, &[0, 0, 0, 0, 0, 1]);
    assert_eq!(c.option_reply().0.reply_type, REP_ERR_INVALID);

    // Unknown exports.
    for option in [OPT_INFO, OPT_GO] {
        let mut out = Vec::new();
        let q = ExportQuery {
            name: "nope".into(),
            info_requests: vec![],
        };
        let opt = if option == OPT_GO {
            ClientOption::Go(q)
        } else {
            ClientOption::Info(q)
        };
        encode_option(&opt, &mut out);
        c.send(&out);
        let (h, _) = c.option_reply();
        assert_eq!((h.option, h.reply_type), (option, REP_ERR_UNKNOWN));
    }

    // Oversized option data is skipped, not buffered.
    c.option(4243, &vec![7u8; 100_000]);
    assert_eq!(c.option_reply().0.reply_type, REP_ERR_UNSUP);
    c.option(OPT_INFO, &vec![0u8; 100_000]);
    assert_eq!(c.option_reply().0.reply_type, REP_ERR_TOO_BIG);

    // INFO on the default export, asking for everything.
    let (size, flags, items) = c.query(
        OPT_INFO,
        "",
        &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 999],
    );
    assert_eq!(size, 4 * MIB);
    assert_eq!(
        flags,
        FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_FUA
            | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES
            | FLAG_CAN_MULTI_CONN
    );
    assert!(items.contains(&InfoItem::Name("mem0".into())));
    assert!(items.contains(&InfoItem::Description("memory export mem0".into())));
    assert!(items.contains(&InfoItem::BlockSize {
        minimum_bytes: 512,
        preferred_bytes: 4096,
        maximum_payload_bytes: 32 << 20
    }));
    assert_eq!(items.len(), 4);

    // The read-only export: flags say so and no name is sent unasked.
    let (size, flags, items) = c.query(OPT_INFO, "ro", &[]);
    assert_eq!(size, MIB);
    assert_eq!(
        flags,
        FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH | FLAG_SEND_FUA
    );
    assert!(items.contains(&InfoItem::BlockSize {
        minimum_bytes: 512,
        preferred_bytes: 65536,
        maximum_payload_bytes: 32 << 20
    }));
    assert_eq!(items.len(), 2);

    // GO to it: reads work, writes are refused with EPERM and change nothing.
    c.query(OPT_GO, "ro", &[INFO_BLOCK_SIZE]);
    assert_eq!(c.read(0, 4096), vec![0u8; 4096]);
    c.expect_error(
        header(CMD_WRITE, 0, 1, 0, 512),
        &[1u8; 512],
        NbdErrno::EPERM,
    );
    c.expect_error(header(CMD_TRIM, 0, 2, 0, 512), &[], NbdErrno::EPERM);
    c.expect_error(header(CMD_WRITE_ZEROES, 0, 3, 0, 512), &[], NbdErrno::EPERM);
    assert_eq!(c.read(0, 512), vec![0u8; 512]);
}

#[test]
fn export_name_fallback_and_handshake_endings() {
    let backend = MemoryBackend::new(two_exports(), Mode::Inline);
    backend.fill(0, 3);
    let expect = backend.snapshot(0);
    let srv = serve("export-name", backend);

    // Without NO_ZEROES: size, flags, 124 zeroes, then transmission.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_EXPORT_NAME, b"");
    let reply = c.read_exact(EXPORT_NAME_REPLY_BYTES);
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 4 * MIB);
    assert!(u16::from_be_bytes([reply[8], reply[9]]) & FLAG_HAS_FLAGS != 0);
    assert!(reply[10..].iter().all(|&b| b == 0));
    assert_eq!(c.read(512, 512), expect[512..1024]);

    // With NO_ZEROES the reply to the first request follows the flags directly.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    c.option(OPT_EXPORT_NAME, b"ro");
    let reply = c.read_exact(10);
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), MIB);
    assert!(u16::from_be_bytes([reply[8], reply[9]]) & FLAG_READ_ONLY != 0);
    assert_eq!(c.read(0, 512), vec![0u8; 512]);

    // An old-style newstyle client (no FIXED_NEWSTYLE) is served too.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(0);
    c.option(OPT_EXPORT_NAME, b"mem0");
    c.read_exact(EXPORT_NAME_REPLY_BYTES);
    assert_eq!(c.read(0, 512), expect[..512]);

    // EXPORT_NAME cannot be refused with an error: an unknown name ends the session.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_EXPORT_NAME, b"nope");
    assert!(c.closed());

    // Unknown client flags end the session.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(0x80);
    assert!(c.closed());

    // ABORT is acknowledged, then the server closes.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_ABORT, &[]);
    let (h, _) = c.option_reply();
    assert_eq!((h.option, h.reply_type), (OPT_ABORT, REP_ACK));
    assert!(c.closed());

    // A bad option magic ends the session.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.send(&[0u8; OPTION_HEADER_BYTES]);
    assert!(c.closed());

    // After all that the server still serves.
    let (mut c, size, _) = Raw::go(&srv.socket, "");
    assert_eq!(size, 4 * MIB);
    assert_eq!(c.read(0, 4096), expect[..4096]);
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let backend = MemoryBackend::single(4 * MIB, Mode::Pool);
    backend.fill(0, 11);
    let expect = backend.snapshot(0);
    let srv = serve("bad-requests", backend.clone());
    let (mut other, _, _) = Raw::go(&srv.socket, "");
    let (mut c, size, _) = Raw::go(&srv.socket, "mem0");
    assert_eq!(size, 4 * MIB);
    let end = 4 * MIB;
    use NbdErrno::*;
    let cases: Vec<(RequestHeader, Vec<u8>, NbdErrno)> = vec![
        // Past the end.
        (header(CMD_READ, 0, 1, end, 512), vec![], EINVAL),
        (header(CMD_READ, 0, 2, end - 512, 1024), vec![], EINVAL),
        (header(CMD_READ, 0, 3, u64::MAX - 511, 512), vec![], EINVAL),
        (
            header(CMD_WRITE, 0, 4, end - 512, 1024),
            vec![0xee; 1024],
            ENOSPC,
        ),
        (header(CMD_WRITE, 0, 5, end, 512), vec![0xee; 512], ENOSPC),
        (header(CMD_WRITE_ZEROES, 0, 6, end, 512), vec![], ENOSPC),
        (header(CMD_TRIM, 0, 7, end - 512, 4096), vec![], EINVAL),
        // Not aligned to the advertised minimum block size.
        (header(CMD_READ, 0, 8, 100, 512), vec![], EINVAL),
        (header(CMD_WRITE, 0, 9, 0, 700), vec![0xee; 700], EINVAL),
        (header(CMD_TRIM, 0, 10, 512, 100), vec![], EINVAL),
        // Unknown or unadvertised commands.
        (header(CMD_CACHE, 0, 11, 0, 512), vec![], EINVAL),
        (header(CMD_BLOCK_STATUS, 0, 12, 0, 512), vec![], EINVAL),
        (header(77, 0, 13, 0, 512), vec![], EINVAL),
        // Flags the command does not take.
        (header(CMD_READ, CMD_FLAG_DF, 14, 0, 512), vec![], EINVAL),
        (
            header(CMD_WRITE, CMD_FLAG_NO_HOLE, 15, 0, 512),
            vec![0xee; 512],
            EINVAL,
        ),
        (
            header(CMD_WRITE, 0x100, 16, 0, 512),
            vec![0xee; 512],
            EINVAL,
        ),
        (
            header(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 17, 0, 512),
            vec![],
            EINVAL,
        ),
        // Longer than the maximum payload (a read; the write case closes, below).
        (header(CMD_READ, 0, 18, 0, (32 << 20) + 512), vec![], EINVAL),
    ];
    for (h, payload, errno) in cases {
        c.expect_error(h, &payload, errno);
        // Still in step: a good request right after works.
        assert_eq!(c.read(0, 512), expect[..512], "after {h:?}");
    }
    // Zero-length requests succeed without I/O.
    for command in [CMD_READ, CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
        c.request(command, 0, 99, 0, 0);
        assert_eq!(c.reply(0), (99, None, vec![]));
    }
    // Flush and FUA on a read are accepted.
    c.request(CMD_FLUSH, 0, 100, 0, 0);
    assert_eq!(c.reply(0), (100, None, vec![]));
    c.request(CMD_READ, CMD_FLAG_FUA, 101, 0, 512);
    assert_eq!(c.reply(512), (101, None, expect[..512].to_vec()));
    assert!(
        backend.snapshot(0) == expect,
        "a rejected request wrote something"
    );

    // A write longer than the maximum payload: EINVAL, then that client is dropped.
    c.request(CMD_WRITE, 0, 200, 0, 64 << 20);
    // The server may already have hung up on it.
    let _ = c.s.write_all(&[0xee; 4096]);
    assert_eq!(c.reply(0), (200, Some(EINVAL), vec![]));
    assert!(c.closed());
    assert!(backend.snapshot(0) == expect);
    assert_eq!(other.read(0, 4096), expect[..4096]);

    // A bad request magic drops that client only.
    let (mut c, _, _) = Raw::go(&srv.socket, "");
    c.send(&[0x11; REQUEST_HEADER_BYTES]);
    assert!(c.closed());
    assert_eq!(other.read(4096, 4096), expect[4096..8192]);
    assert!(backend.snapshot(0) == expect);
}

#[test]
fn hang_ups_mid_request_leave_the_server_serving() {
    let backend = MemoryBackend::single(4 * MIB, Mode::Pool);
    backend.fill(0, 5);
    let expect = backend.snapshot(0);
    let srv = serve("hang-up", backend.clone());

    // Mid-handshake.
    let mut c = Raw::connect(&srv.socket);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.send(&IHAVEOPT.to_be_bytes());
    drop(c);
    // Mid-header.
    let (mut c, _, _) = Raw::go(&srv.socket, "");
    c.send(&REQUEST_MAGIC.to_be_bytes());
    drop(c);
    // Mid-payload: the partial write must not reach the export.
    let (mut c, _, _) = Raw::go(&srv.socket, "");
    c.request(CMD_WRITE, 0, 1, 0, 65536);
    c.send(&[0xee; 1000]);
    drop(c);
    // Gone before its replies: the server's writes fail.
    let (mut c, _, _) = Raw::go(&srv.socket, "");
    for cookie in 0..32 {
        c.request(CMD_READ, 0, cookie, 0, 65536);
    }
    drop(c);

    let (mut c, _, _) = Raw::go(&srv.socket, "");
    assert_eq!(c.read(0, 65536), expect[..65536]);
    assert!(backend.snapshot(0) == expect);
    // Every dropped connection is wound down.
    let server = srv.server.as_ref().unwrap();
    for _ in 0..400 {
        if server.connection_count() == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(server.connection_count(), 1);
}

#[test]
fn requests_run_concurrently_and_replies_follow_completion() {
    let backend = MemoryBackend::single(MIB, Mode::Held);
    backend.fill(0, 21);
    let expect = backend.snapshot(0);
    let srv = serve("concurrent", backend.clone());
    let (mut c, _, _) = Raw::go(&srv.socket, "");
    // Four requests go in before any completes.
    c.request(CMD_READ, 0, 10, 0, 4096);
    c.request(CMD_READ, 0, 11, 8192, 512);
    c.request(CMD_WRITE, CMD_FLAG_FUA, 12, 65536, 1024);
    c.send(&[0x5a; 1024]);
    c.request(CMD_FLUSH, 0, 13, 0, 0);
    backend.wait_held(4);
    backend.release(&[2, 1, 3, 0]);
    assert_eq!(c.reply(0), (12, None, vec![]));
    assert_eq!(c.reply(512), (11, None, expect[8192..8704].to_vec()));
    assert_eq!(c.reply(0), (13, None, vec![]));
    assert_eq!(c.reply(4096), (10, None, expect[..4096].to_vec()));
    assert!(backend.snapshot(0)[65536..66560].iter().all(|&b| b == 0x5a));
    assert_eq!(backend.counters.fua_writes.load(Ordering::Relaxed), 1);
}

#[test]
fn backend_errors_reach_the_client() {
    let backend = MemoryBackend::with_faults(
        vec![export("mem0", MIB)],
        Mode::Pool,
        (65536, 131072),
        Some(4096),
    );
    let srv = serve("backend-errors", backend);
    let (mut c, _, _) = Raw::go(&srv.socket, "");
    c.expect_error(header(CMD_READ, 0, 1, 65536, 512), &[], NbdErrno::EIO);
    c.expect_error(header(CMD_READ, 0, 2, 61440, 8192), &[], NbdErrno::EIO);
    // A completion the backend dropped uncalled still gets an answer.
    c.expect_error(header(CMD_READ, 0, 3, 4096, 512), &[], NbdErrno::EIO);
    assert_eq!(c.read(0, 512), vec![0u8; 512]);
}

#[test]
fn many_clients_at_once() {
    let backend = MemoryBackend::single(8 * MIB, Mode::Pool);
    let config = ServerConfig {
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    };
    let srv = serve_with("many", backend.clone(), config);
    let tcp = srv.server.as_ref().unwrap().tcp_address().unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let socket = srv.socket.clone();
            thread::spawn(move || {
                let mut c = if i % 2 == 0 {
                    Raw::go(&socket, "").0
                } else {
                    let mut c = Raw::connect_tcp(tcp);
                    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
                    c.query(OPT_GO, "", &[INFO_BLOCK_SIZE]);
                    c
                };
                let base = i * MIB;
                let mut data = vec![0u8; 65536];
                for round in 0..16u64 {
                    SplitMix64::new(i * 100 + round).fill(&mut data);
                    let offset = base + round * 65536;
                    c.write(offset, &data, if round % 4 == 0 { CMD_FLAG_FUA } else { 0 });
                    assert_eq!(c.read(offset, 65536), data, "client {i} round {round}");
                }
                c.request(CMD_FLUSH, 0, 7, 0, 0);
                assert_eq!(c.reply(0), (7, None, vec![]));
                c.request(CMD_DISC, 0, 8, 0, 0);
                assert!(c.closed());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let disk = backend.snapshot(0);
    let mut data = vec![0u8; 65536];
    for i in 0..8u64 {
        for round in 0..16u64 {
            SplitMix64::new(i * 100 + round).fill(&mut data);
            let offset = (i * MIB + round * 65536) as usize;
            assert!(disk[offset..offset + 65536] == data[..]);
        }
    }
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let backend = MemoryBackend::single(MIB, Mode::Held);
    backend.fill(0, 8);
    let expect = backend.snapshot(0);
    let mut srv = serve("shutdown", backend.clone());
    let socket = srv.socket.clone();
    let (mut c, _, _) = Raw::go(&socket, "");
    c.request(CMD_READ, 0, 1, 0, 4096);
    c.request(CMD_WRITE, 0, 2, 8192, 512);
    c.send(&[0x77; 512]);
    backend.wait_held(2);

    let server = srv.server.take().unwrap();
    let stopping = thread::spawn(move || server.shutdown());
    // Accepting stops: a new client is closed before the greeting, or refused.
    let mut refused = false;
    for _ in 0..400 {
        refused = match UnixStream::connect(&socket) {
            Err(_) => true,
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 1];
                matches!(s.read(&mut buf), Ok(0) | Err(_))
            }
        };
        if refused {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    assert!(refused, "server still accepting after shutdown began");
    assert!(
        !stopping.is_finished(),
        "shutdown returned with I/O in flight"
    );

    backend.release(&[1, 0]);
    assert_eq!(c.reply(0), (2, None, vec![]));
    assert_eq!(c.reply(4096), (1, None, expect[..4096].to_vec()));
    assert!(c.closed());
    stopping.join().unwrap();
    assert!(!socket.exists(), "socket file removed");
    assert!(backend.snapshot(0)[8192..8704].iter().all(|&b| b == 0x77));
}

#[test]
fn start_refuses_bad_configs_and_replaces_stale_sockets() {
    let backend = MemoryBackend::single(MIB, Mode::Inline);
    assert!(Server::start(backend.clone(), ServerConfig::default()).is_err());
    let dir = temp_dir("configs");
    let socket = dir.join("s.sock");
    // A socket file with nobody behind it is replaced.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let config = ServerConfig {
        unix_socket: Some(socket.clone()),
        ..ServerConfig::default()
    };
    let server = Server::start(backend.clone(), config.clone()).expect("stale socket replaced");
    // A live one is not.
    assert!(Server::start(backend.clone(), config).is_err());
    let (mut c, _, _) = Raw::go(&socket, "");
    assert_eq!(c.read(0, 512), vec![0u8; 512]);
    drop(c);
    server.shutdown();
    let bad = ServerConfig {
        unix_socket: Some(dir.join("t.sock")),
        maximum_payload_bytes: 100,
        ..ServerConfig::default()
    };
    assert!(Server::start(backend, bad).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
