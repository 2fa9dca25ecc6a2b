//! `raid serve` and `raid up`: the engine thread that owns the arrays (through a
//! `RaidDriver`), fed by the NBD server and the control socket.
//!
//! Threads: the engine thread owns the NBD connections once they negotiated (the reactor of
//! `nbd::reactor`: epoll over the sockets and the engine's eventfd), turns each request into
//! a task on the single executor and writes the reply when the task ends, with no thread hop.
//! Handshakes, the control socket and the signal handler run on threads that wake the
//! engine; file members' I/O runs on the worker pool. One executor orders everything, which
//! is what makes multi-connection NBD coherent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orion_driver::Frame;

use crate::array::Array;
use crate::array::assemble::{CreateOptions, NamedDevice, create};
use crate::array::nested::{NestedSpec, Stack, StackAssembly, assemble_stacks, create_nested};
use crate::array::persist::has_pool_label;
use crate::block::{BlockDevice, SECTOR_BYTES};
use crate::driver::{BlockIo, IoGeometry, RaidDriver, WriteNotice, driver_error};
use crate::host::control::{ControlEvent, ControlServer};
use crate::host::file::{FileDisk, IoPool};
use crate::host::metrics::{MetricsFileWriter, MetricsServer};
use crate::host::nbd::server::ServerConfig;
use crate::host::nbd::{BufferPool, ExportInfo, IoOutcome, NbdErrno, NbdIo, ReplyToken};
use crate::host::runtime::{HostRuntime, Signal};
use crate::host::spec::MemberSpec;
use crate::monitor::MonitorConfig;
use crate::platform::memory::MemoryDisk;

/// Work for the engine thread from other threads.
enum EngineMsg {
    /// SIGINT or SIGTERM.
    Stop,
    /// The Prometheus text of every array, for the metrics responder.
    Metrics(Sender<String>),
}

/// Wakes the engine loop from any thread.
#[derive(Clone)]
pub struct Wake(Arc<Signal>);

impl Wake {
    pub fn wake(&self) {
        self.0.raise();
    }
}

/// The longest the engine sleeps with nothing to do (it is woken for everything else).
const ENGINE_IDLE_WAIT: Duration = Duration::from_millis(200);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub nbd_socket: Option<PathBuf>,
    pub nbd_listen: Option<String>,
    pub control: PathBuf,
    /// Create this array on the members first.
    pub create: Option<CreateOptions>,
    /// With `create`: build a nested array (RAID 50/60) of this many groups; `create`
    /// describes the outer RAID 0 and the groups' layout.
    pub nested: Option<NestedSpec>,
    pub members: Vec<MemberSpec>,
    /// Printed once the server is up (how to connect).
    pub banner: bool,
    pub monitor: MonitorOptions,
    /// Stripe cache budget of every array served, in bytes (recorded with its settings).
    pub stripe_cache_bytes: Option<u64>,
    /// Arrays running background jobs at once (0: no limit).
    pub max_concurrent_jobs: usize,
    /// The cache size every array's stripe cache shares (`None`: the default).
    pub cache_bytes: Option<u64>,
}

/// Monitoring intervals and where the Prometheus text goes.
#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    pub config: MonitorConfig,
    /// Serve GET /metrics on this TCP address.
    pub metrics_listen: Option<String>,
    /// Rewrite this file every monitoring interval.
    pub metrics_file: Option<PathBuf>,
}

/// Why serving could not start.
#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens every member spec as a block device.
pub fn open_members(
    specs: &[MemberSpec],
    pool: &Arc<IoPool>,
) -> Result<Vec<NamedDevice>, ServeError> {
    let mut out: Vec<NamedDevice> = Vec::new();
    for spec in specs {
        match spec {
            MemberSpec::Path(p) => {
                let disk =
                    FileDisk::open(p, pool.clone()).map_err(|e| ServeError(e.to_string()))?;
                out.push((p.display().to_string(), Rc::new(disk)));
            }
            MemberSpec::Memory(bytes) => {
                if *bytes < 4 << 20 {
                    return Err(ServeError(format!(
                        "mem:{bytes}: a memory member needs at least 4 MiB"
                    )));
                }
                out.push((
                    format!("mem:{bytes}"),
                    Rc::new(MemoryDisk::new(bytes / SECTOR_BYTES as u64)),
                ));
            }
        }
    }
    Ok(out)
}

/// The regular files and block devices directly inside `dir`, sorted by name.
pub fn scan_dir(dir: &Path) -> Result<Vec<MemberSpec>, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let entries =
        std::fs::read_dir(dir).map_err(|e| ServeError(format!("{}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type()
                .map(|t| t.is_file() || t.is_block_device())
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img") || !p.is_file())
        .collect();
    paths.sort();
    Ok(paths.into_iter().map(MemberSpec::Path).collect())
}

/// The NBD preferred block size: the full stripe of a parity array when it is a power of
/// two (a write of it needs no reads), otherwise the chunk; at most 2 MiB, at least 4 KiB.
fn preferred_block_bytes(geometry: &IoGeometry) -> u32 {
    let stripe = geometry.full_stripe_bytes;
    let preferred = if stripe.is_power_of_two() && stripe <= 2 << 20 {
        stripe
    } else {
        geometry.chunk_bytes
    };
    if preferred.is_power_of_two() && preferred >= 4096 {
        preferred.min(2 << 20) as u32
    } else {
        4096
    }
}

/// The driver's request for an NBD one: the payload of a write and the buffer of a read
/// (`read_buf`, given `length` bytes) go as they are, with no copy.
fn block_io(io: NbdIo, read_buf: impl FnOnce(usize) -> Vec<u8>) -> BlockIo {
    let sector = |offset: u64| offset / SECTOR_BYTES as u64;
    let sectors = |length: u32| u64::from(length) / SECTOR_BYTES as u64;
    match io {
        NbdIo::Read { offset, length } => BlockIo::Read {
            sector: sector(offset),
            buf: read_buf(length as usize),
        },
        NbdIo::Write { offset, data, fua } => BlockIo::Write {
            sector: sector(offset),
            data,
            fua,
        },
        NbdIo::Flush => BlockIo::Flush,
        NbdIo::Trim {
            offset,
            length,
            fua,
        } => BlockIo::Discard {
            sector: sector(offset),
            sectors: sectors(length),
            fua,
        },
        NbdIo::WriteZeroes {
            offset,
            length,
            fua,
        } => BlockIo::WriteZeroes {
            sector: sector(offset),
            sectors: sectors(length),
            fua,
        },
    }
}

/// Assembles (or creates) the arrays and serves them until SIGINT/SIGTERM; then finishes
/// requests in flight, flushes, marks every array clean and returns.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let rt = HostRuntime::new();
    let wake = Wake(rt.signal());
    let pool = IoPool::new(8);
    let members = open_members(&opts.members, &pool)?;
    if members.is_empty() {
        return Err(ServeError("no members given".into()));
    }
    // Shared-pool spares (Orion's pool label, no md superblock) go back to the pool.
    let (pool_spares, members): (Vec<_>, Vec<_>) = if opts.create.is_some() {
        (Vec::new(), members)
    } else {
        let devs: Vec<Rc<dyn BlockDevice>> = members.iter().map(|(_, d)| d.clone()).collect();
        let labelled = rt.block_on(async move {
            let mut labelled = Vec::new();
            for dev in &devs {
                labelled.push(has_pool_label(dev.as_ref()).await);
            }
            labelled
        });
        let (pool, rest): (Vec<_>, Vec<_>) = members
            .into_iter()
            .zip(labelled)
            .partition(|(_, labelled)| *labelled);
        (
            pool.into_iter().map(|(m, _)| m).collect(),
            rest.into_iter().map(|(m, _)| m).collect(),
        )
    };
    if members.is_empty() {
        return Err(ServeError(
            "no members given besides spare-pool spares".into(),
        ));
    }
    let exec = rt.exec.clone();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stacks: Vec<Stack> = match (opts.create.clone(), opts.nested) {
        (Some(create_opts), Some(spec)) => {
            let stack = rt
                .block_on(async move { create_nested(&exec, members, &create_opts, spec).await })
                .map_err(|e| ServeError(format!("create: {e}")))?;
            vec![stack]
        }
        (Some(create_opts), None) => {
            let array = rt
                .block_on(async move { create(&exec, members, &create_opts).await })
                .map_err(|e| ServeError(format!("create: {e}")))?;
            vec![Stack::plain(array)]
        }
        (None, _) => {
            let result: StackAssembly =
                rt.block_on(async move { assemble_stacks(&exec, members).await });
            for p in &result.problems {
                log::warn!("{}: {}", p.member, p.reason);
                eprintln!("raid: {}: {}", p.member, p.reason);
            }
            if result.stacks.is_empty() {
                return Err(ServeError("no array could be assembled".into()));
            }
            result.stacks
        }
    };
    for array in stacks
        .iter()
        .flat_map(|s| s.layers())
        .filter(|a| a.needs_resync())
    {
        eprintln!(
            "raid: {}: unclean shutdown: resyncing in the background",
            array.name()
        );
    }
    let all_memory = !opts.members.is_empty()
        && opts
            .members
            .iter()
            .all(|m| matches!(m, MemberSpec::Memory(_)));
    if opts.stripe_cache_bytes.is_none() && all_memory {
        // The stripe cache saves member reads; a `mem:` member's read is a copy from the
        // same memory the cache would copy from, so the cache is only extra work there
        // (RAID5 4k writes measured 1.4-1.8x faster without it). `--stripe-cache` or
        // `raid set NAME stripe_cache=SIZE` turns it on.
        for layer in stacks.iter().flat_map(|s| s.layers()) {
            layer
                .apply_setting("stripe_cache", "0")
                .map_err(|e| ServeError(format!("stripe_cache: {e}")))?;
        }
    }
    if let Some(bytes) = opts.stripe_cache_bytes {
        let layers: Vec<Rc<Array>> = stacks.iter().flat_map(|s| s.layers()).cloned().collect();
        let value = crate::array::persist::format_size_bytes(bytes);
        for layer in &layers {
            layer
                .apply_setting("stripe_cache", &value)
                .map_err(|e| ServeError(format!("--stripe-cache: {e}")))?;
        }
        let recorded = rt.block_on(async move {
            for layer in &layers {
                layer.persist_settings().await?;
            }
            Ok::<(), crate::array::ArrayError>(())
        });
        if let Err(e) = recorded {
            log::warn!("--stripe-cache not recorded: {e}");
        }
    }
    let driver = RaidDriver::with_executor(rt.exec.clone());
    driver
        .rebuild_manager()
        .set_max_concurrent(opts.max_concurrent_jobs);
    if let Some(bytes) = opts.cache_bytes {
        driver
            .cache_manager()
            .set_budget_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    driver.start_monitor(opts.monitor.config);
    for (name, dev) in pool_spares {
        match driver.add_pool_spare(name.clone(), dev) {
            Ok(()) => eprintln!("raid: {name}: back in the shared spare pool"),
            Err(e) => eprintln!("raid: {name}: {e}"),
        }
    }
    // `raid add` / `raid replace` name a path (or mem:SIZE) the server opens itself.
    let opener_pool = pool.clone();
    driver.set_opener(Rc::new(move |name: &str| {
        let spec = MemberSpec::parse(name).map_err(|e| format!("{name}: {e}"))?;
        open_members(&[spec], &opener_pool)
            .map_err(|e| e.0)?
            .pop()
            .map(|(_, dev)| dev)
            .ok_or_else(|| format!("{name}: nothing opened"))
    }));
    let mut exports = Vec::new();
    let mut export_ids = Vec::new();
    for stack in &stacks {
        for layer in stack.layers() {
            layer.set_wall_clock_base(now_s);
        }
        let array = &stack.array;
        // Served first: the RebuildManager runs the jobs.
        let id = driver.add_stack(stack);
        for layer in stack.layers() {
            // Resync after an unclean shutdown, rebuilds to resume, spares to activate.
            crate::jobs::start(layer);
        }
        let geometry = driver
            .io_geometry(id)
            .ok_or_else(|| ServeError(format!("{}: not served", array.name())))?;
        if array.name() != array.md_name() {
            eprintln!(
                "raid: two arrays are named '{}': this one ({}) is served as '{}'",
                array.md_name(),
                array
                    .superblock()
                    .map(|sb| crate::metadata::format_uuid(&sb.array_uuid).to_string())
                    .unwrap_or_default(),
                array.name()
            );
        }
        export_ids.push(id);
        exports.push(ExportInfo {
            name: array.name().to_string(),
            description: format!("Orion RAID array {}", array.name()),
            size_bytes: geometry.capacity_sectors * SECTOR_BYTES as u64,
            preferred_block_bytes: preferred_block_bytes(&geometry),
            read_only: false,
            multi_conn: true,
            can_trim: true,
        });
    }

    let (tx, rx) = channel::<EngineMsg>();
    let tcp = match &opts.nbd_listen {
        Some(addr) => Some(
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| ServeError(format!("--nbd-listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let (nbd, mut reactor) = crate::host::nbd::Server::start_owned(
        exports.clone(),
        ServerConfig {
            unix_socket: opts.nbd_socket.clone(),
            tcp,
            ..ServerConfig::default()
        },
        rt.signal(),
    )
    .map_err(|e| ServeError(format!("NBD server: {e}")))?;
    let buffers = reactor.pool();
    // Writes still arriving, announced to their array so that it can gather stripes.
    reactor.enable_payload_notices();
    let mut arriving: HashMap<u64, WriteNotice> = HashMap::new();

    let (ctl_tx, ctl_rx) = channel::<ControlEvent>();
    let w = wake.clone();
    let mut control = ControlServer::start(&opts.control, ctl_tx, Arc::new(move || w.wake()))
        .map_err(|e| ServeError(format!("control socket {}: {e}", opts.control.display())))?;

    let mut metrics_http = match &opts.monitor.metrics_listen {
        Some(addr) => {
            let addr = addr
                .parse::<std::net::SocketAddr>()
                .map_err(|e| ServeError(format!("--metrics-listen {addr}: {e}")))?;
            let (tx, w) = (Mutex::new(tx.clone()), wake.clone());
            let fetch = Arc::new(move || {
                let (reply_tx, reply_rx) = channel();
                let sent = tx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send(EngineMsg::Metrics(reply_tx));
                sent.ok()?;
                w.wake();
                reply_rx.recv_timeout(Duration::from_secs(5)).ok()
            });
            let server = MetricsServer::start(addr, fetch)
                .map_err(|e| ServeError(format!("--metrics-listen {addr}: {e}")))?;
            log::info!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let mut metrics_file = match &opts.monitor.metrics_file {
        Some(path) => Some(
            MetricsFileWriter::start(path.clone())
                .map_err(|e| ServeError(format!("--metrics-file: {e}")))?,
        ),
        None => None,
    };
    let metrics_interval = Duration::from_nanos(opts.monitor.config.tick_interval_ns);
    let mut metrics_written: Option<std::time::Instant> = None;

    let stop_flag = Arc::new(AtomicBool::new(false));
    install_signal_handlers(tx, wake.clone(), stop_flag.clone())?;

    if opts.banner {
        print_banner(&opts, &exports);
    }
    // The outer arrays; their groups are internal.
    log::info!("serving {} array(s)", stacks.len());

    let mut engine = Engine {
        rt,
        driver,
        withdrawn: vec![false; export_ids.len()],
        export_ids,
        rx,
        ctl_rx,
        control_seq: HashMap::new(),
        next_seq: 1,
    };
    let mut nbd = Some(nbd);
    let mut stopping = false;
    let mut clean_done: Option<crate::executor::JoinHandle<bool>> = None;
    loop {
        for msg in engine.drain() {
            match msg {
                EngineMsg::Stop if !stopping => {
                    stopping = true;
                    eprintln!("raid: stopping: finishing requests in flight");
                    // Stops accepting and negotiating; the reactor then lets the requests
                    // in flight finish and their replies go out.
                    if let Some(server) = nbd.take() {
                        server.shutdown();
                    }
                    reactor.begin_stop();
                }
                EngineMsg::Stop => {}
                EngineMsg::Metrics(reply) => {
                    let metrics = engine.driver.metrics();
                    let _ = reply.send(crate::monitor::prometheus::render(&metrics));
                }
            }
        }
        if stopping && clean_done.is_none() && reactor.is_idle() {
            let stacks = stacks.clone();
            clean_done = Some(engine.rt.exec.spawn(async move {
                let mut ok = true;
                for s in stacks {
                    // No repair write may land after an array is marked clean.
                    for a in s.layers() {
                        crate::jobs::scrub::stop(a).await;
                    }
                    // Outer first, then its groups.
                    if s.mark_clean().await.is_err() {
                        ok = false;
                    }
                }
                ok
            }));
        }
        engine.route_replies(&control, nbd.as_ref());
        if let Some(writer) = &metrics_file
            && metrics_written.is_none_or(|t| t.elapsed() >= metrics_interval)
        {
            metrics_written = Some(std::time::Instant::now());
            writer.offer(crate::monitor::prometheus::render(&engine.driver.metrics()));
        }
        if let Some(ok) = clean_done.as_ref().and_then(|h| h.try_take()) {
            if let Some(writer) = metrics_file.as_mut() {
                writer.finish_with(crate::monitor::prometheus::render(&engine.driver.metrics()));
            }
            if let Some(server) = metrics_http.as_mut() {
                server.stop();
            }
            control.stop();
            pool.shutdown();
            return if ok {
                eprintln!("raid: arrays flushed and marked clean");
                Ok(())
            } else {
                Err(ServeError("an array could not be marked clean".into()))
            };
        }
        let wait = engine.rt.sleep_limit(ENGINE_IDLE_WAIT);
        reactor.poll(wait, &mut |export, io, token| {
            engine.start_nbd(export, io, token, &buffers)
        });
        for notice in reactor.take_payload_notices() {
            engine.payload_notice(notice, &mut arriving);
        }
        engine.rt.run_ready();
    }
}

struct Engine {
    rt: HostRuntime,
    driver: RaidDriver,
    export_ids: Vec<u32>,
    /// Exports taken out of the NBD list, by export index.
    withdrawn: Vec<bool>,
    rx: Receiver<EngineMsg>,
    ctl_rx: Receiver<ControlEvent>,
    /// Our sequence → (control connection, its sequence).
    control_seq: HashMap<u64, (u64, u64)>,
    next_seq: u64,
}

impl Engine {
    /// Starts every queued request; returns the messages the loop itself handles.
    fn drain(&mut self) -> Vec<EngineMsg> {
        let mut rest = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            rest.push(msg);
        }
        while let Ok(event) = self.ctl_rx.try_recv() {
            match event {
                ControlEvent::Frame { conn, frame } => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.control_seq.insert(seq, (conn, frame.sequence));
                    self.driver.handle_frame(Frame {
                        sequence: seq,
                        message: frame.message,
                    });
                }
                ControlEvent::Closed { conn } => {
                    self.control_seq.retain(|_, (c, _)| *c != conn);
                }
            }
        }
        rest
    }

    /// Takes the exports of arrays that are no longer served (`raid stop`) out of the NBD
    /// export list, so clients neither list nor select them.
    fn withdraw_stopped(&mut self, server: &crate::host::nbd::ServerHandle) {
        for (index, &id) in self.export_ids.iter().enumerate() {
            if !self.withdrawn[index] && !self.driver.serves(id) {
                self.withdrawn[index] = true;
                server.withdraw_export(index);
            }
        }
    }

    /// Starts one NBD request as a task of the driver; the task completes `token`.
    fn start_nbd(&self, export: usize, io: NbdIo, token: ReplyToken, buffers: &Arc<BufferPool>) {
        let Some(&id) = self.export_ids.get(export) else {
            token.complete(IoOutcome::Err(NbdErrno::EINVAL));
            return;
        };
        // A pooled buffer for a read: the array overwrites all of it, no zero-fill needed.
        let Some(request) = self.driver.submit_io(id, block_io(io, |n| buffers.take(n))) else {
            // Stopped through the control socket.
            token.complete(IoOutcome::Err(NbdErrno::ESHUTDOWN));
            return;
        };
        self.rt.exec.spawn_detached(async move {
            token.complete(outcome(request.await));
        });
    }

    /// Announces a write still arriving to its array, or ends the announcement.
    fn payload_notice(
        &self,
        notice: crate::host::nbd::PayloadNotice,
        arriving: &mut HashMap<u64, WriteNotice>,
    ) {
        use crate::host::nbd::PayloadNotice;
        match notice {
            PayloadNotice::Arriving {
                connection,
                export_index,
                offset,
                length,
            } => {
                let sector = offset / SECTOR_BYTES as u64;
                let sectors = length.div_ceil(SECTOR_BYTES as u64);
                let notice = self
                    .export_ids
                    .get(export_index)
                    .and_then(|&id| self.driver.expect_write(id, sector, sectors));
                if let Some(notice) = notice {
                    arriving.insert(connection, notice);
                }
            }
            PayloadNotice::Arrived { connection } => {
                arriving.remove(&connection);
            }
        }
    }

    fn route_replies(
        &mut self,
        control: &ControlServer,
        nbd: Option<&crate::host::nbd::ServerHandle>,
    ) {
        self.driver.poll();
        // Before the replies go out: once `raid stop` returns, the export is gone.
        if let Some(server) = nbd {
            self.withdraw_stopped(server);
        }
        for frame in self.driver.take_outgoing() {
            match self.control_seq.remove(&frame.sequence) {
                Some((conn, seq)) => control.send(
                    conn,
                    &Frame {
                        sequence: seq,
                        message: frame.message,
                    },
                ),
                None => log::debug!("reply {} has no control client", frame.sequence),
            }
        }
    }
}

fn outcome(result: Result<Vec<u8>, crate::block::IoError>) -> IoOutcome {
    match result {
        Ok(data) => IoOutcome::Ok(data),
        Err(e) => IoOutcome::Err(nbd_errno(&e)),
    }
}

/// The NBD error a client gets for an array's error: no space is `ENOSPC` (the client may
/// free space or stop writing; the data written before is intact), not an I/O error.
fn nbd_errno(e: &crate::block::IoError) -> NbdErrno {
    use orion_driver::DriverError;
    match driver_error(e) {
        DriverError::OutOfRange | DriverError::InvalidArgument => NbdErrno::EINVAL,
        DriverError::NoSpace => NbdErrno::ENOSPC,
        _ => NbdErrno::EIO,
    }
}

fn install_signal_handlers(
    tx: Sender<EngineMsg>,
    wake: Wake,
    flag: Arc<AtomicBool>,
) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| ServeError(format!("signals: {e}")))?;
    std::thread::Builder::new()
        .name("raid-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(EngineMsg::Stop);
                wake.wake();
            }
        })
        .map_err(|e| ServeError(format!("signals: {e}")))?;
    Ok(())
}

fn print_banner(opts: &ServeOptions, exports: &[ExportInfo]) {
    println!("raid: serving {} array(s):", exports.len());
    for e in exports {
        println!(
            "  {} — {} ({} bytes)",
            if e.name.is_empty() {
                "(default)"
            } else {
                &e.name
            },
            crate::host::spec::format_size(e.size_bytes),
            e.size_bytes
        );
    }
    if let Some(sock) = &opts.nbd_socket {
        let s = sock.display();
        println!("\nConnect over the Unix socket {s}:");
        println!("  nbdinfo 'nbd+unix:///?socket={s}'");
        println!(
            "  qemu-io -f raw 'nbd+unix:///?socket={s}' -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k'"
        );
        println!("  nbdcopy some-file.img 'nbd+unix:///?socket={s}'");
        println!(
            "  fio --name=t --ioengine=nbd --uri='nbd+unix:///?socket={s}' --rw=randrw --bs=4k --size=256M --verify=crc32c"
        );
    }
    if let Some(addr) = &opts.nbd_listen {
        println!("\nor over TCP: nbdinfo nbd://{addr}");
    }
    if let Some(addr) = &opts.monitor.metrics_listen {
        println!("\nPrometheus metrics: http://{addr}/metrics");
    }
    println!(
        "\nManage it: raid status --control {}   (stop with Ctrl-C)",
        opts.control.display()
    );
    println!(
        "Watch it:  raid monitor --control {0}   raid stats --control {0}",
        opts.control.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::IoError;

    #[test]
    fn array_errors_become_nbd_errors() {
        assert_eq!(nbd_errno(&IoError::NoSpace), NbdErrno::ENOSPC);
        assert_eq!(NbdErrno::ENOSPC.code(), 28);
        assert_eq!(nbd_errno(&IoError::Media { sector: 3 }), NbdErrno::EIO);
        assert_eq!(nbd_errno(&IoError::DataLost { sector: 3 }), NbdErrno::EIO);
        assert_eq!(nbd_errno(&IoError::DeviceFailed), NbdErrno::EIO);
        assert_eq!(
            nbd_errno(&IoError::OutOfRange {
                sector: 9,
                sectors: 1,
                capacity_sectors: 8
            }),
            NbdErrno::EINVAL
        );
    }
}
