//! `FileDisk`: an image file or block device on the host, served by a pool of worker threads.
//!
//! Each request becomes a positioned read or write (`pread`/`pwrite`) on a worker thread; the
//! worker completes a shared slot and wakes the waiting task through the executor's
//! thread-safe waker. Many requests are in flight at once, across members and requests.
//! A rebuild's "read these cells, xor them, write the result" can run as one worker job
//! (the [`Offload`] capability), so the engine thread neither copies nor wakes per cell.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use crate::block::{
    BlockDevice, Bytes, DeviceIdentity, DeviceProblem, IoError, IoFuture, Offload, OffloadSource,
    SECTOR_BYTES, check_range, check_sectors,
};
use crate::parity::ParityEngine;
use crate::platform::open::{OpenError, open_exclusive, open_for_reading};

/// Bytes of each source a [`Offload::write_xor_of`] job reads at a time: the pieces of
/// all sources (the first is also the result) stay in or near one core's L2 cache (512 KiB
/// per core on the bench machine) from the copy out of the page cache, through the xor, to
/// the copy back in, instead of making three trips through memory. 64 KiB measured the same
/// with four sources, 16 KiB and 512 KiB slower.
const XOR_PIECE_BYTES: usize = 128 << 10;

/// The workers of [`Offload::write_xor_of`], one per CPU (at most 8), apart from the pools
/// that serve the members' reads and writes. A rebuild keeps 16 such jobs in flight; on the
/// members' pool they took all 8 of its threads on a 2-CPU machine, so the threads' pieces
/// (one per source, [`XOR_PIECE_BYTES`] each) pushed each other out of the caches, and
/// foreground requests waited behind them. With as many workers as CPUs an idle RAID5
/// rebuild of a 510 MiB tmpfs member onto a used spare took 268-350 ms against 292-476 ms
/// (onto a fresh spare 407-564 against 486-560; noisy machine, interleaved runs).
fn bulk_pool() -> &'static Arc<IoPool> {
    static BULK: OnceLock<Arc<IoPool>> = OnceLock::new();
    BULK.get_or_init(|| IoPool::named("raid-bulk", bulk_workers()))
}

/// Workers of [`bulk_pool`]: one per CPU, at most 8.
pub fn bulk_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

thread_local! {
    /// A worker's pieces for `write_xor_of`: reused, so they stay cache-warm and are
    /// never faulted in again.
    static XOR_PIECES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run blocking jobs.
pub struct IoPool {
    sender: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl IoPool {
    /// Starts `threads` workers.
    pub fn new(threads: usize) -> Arc<Self> {
        Self::named("raid-io", threads)
    }

    /// Starts `threads` workers named `prefix-0`, `prefix-1`, ...
    fn named(prefix: &str, threads: usize) -> Arc<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let handles = (0..threads.max(1))
            .map(|i| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("{prefix}-{i}"))
                    .spawn(move || {
                        loop {
                            let job = match receiver.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => break,
                            };
                            match job {
                                Ok(job) => job(),
                                Err(_) => break,
                            }
                        }
                    })
                    .expect("spawning an I/O worker thread")
            })
            .collect();
        Arc::new(IoPool {
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(handles),
        })
    }

    fn submit<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Completion<T> {
        let slot = Arc::new(Slot {
            state: Mutex::new((None, None)),
        });
        let done = slot.clone();
        let job: Job = Box::new(move || {
            let value = job();
            let waker = {
                let mut st = done.state.lock().unwrap_or_else(|e| e.into_inner());
                st.0 = Some(value);
                st.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        let sent = match self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        Completion { slot, sent }
    }

    /// Stops accepting jobs and joins the workers after they drain the queue.
    pub fn shutdown(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handles: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Slot<T> {
    state: Mutex<(Option<T>, Option<Waker>)>,
}

struct Completion<T> {
    slot: Arc<Slot<T>>,
    sent: bool,
}

impl<T> Completion<T> {
    async fn wait(self) -> Option<T> {
        if !self.sent {
            return None;
        }
        std::future::poll_fn(|cx: &mut Context<'_>| {
            let mut st = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
            match st.0.take() {
                Some(v) => Poll::Ready(Some(v)),
                None => {
                    st.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// An image file or block device used as a member.
pub struct FileDisk {
    file: Arc<File>,
    path: PathBuf,
    capacity_sectors: u64,
    identity: DeviceIdentity,
    /// An image file (not a block device): one that can be truncated or deleted under us.
    is_file: bool,
    /// Found shorter than at open: every later request fails. A write past the new end
    /// extends the file with a hole below it that reads zeros, which must never be served
    /// as data, and the array fails the member anyway.
    shrunk: std::sync::atomic::AtomicBool,
    pool: Arc<IoPool>,
}

/// What a failed host I/O means to the array. No space (a full or over-quota file system
/// under an image) is passed up as such: it says nothing about the member. A read that
/// came back short, or a file found shorter than at open, means the file was truncated
/// under the server: the sectors past its end are gone, so the member is failed
/// (`DeviceFailed`) rather than asked again sector by sector.
fn io_error(sector: u64, err: &std::io::Error) -> IoError {
    match err.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            log::warn!("no space for a write at sector {sector}: {err}");
            IoError::NoSpace
        }
        _ if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            log::error!("short I/O at sector {sector}: {err}");
            IoError::DeviceFailed
        }
        _ => {
            log::warn!("I/O error at sector {sector}: {err}");
            IoError::Media { sector }
        }
    }
}

/// After a write to an image file: an error if the file is now shorter than `capacity`
/// bytes. A write past the end of a truncated file would extend it again, with a hole
/// reading zeros below it, and those zeros would be served as data.
fn check_not_shrunk(file: &File, capacity_bytes: u64) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len < capacity_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file shrank from {capacity_bytes} to {len} bytes (truncated?)"),
        ));
    }
    Ok(())
}

impl FileDisk {
    /// Opens `path` read-write as a member (see [`crate::platform::open`]: regular files
    /// and block devices only, never blocking, held exclusively); its size (rounded down
    /// to whole sectors) is the capacity.
    pub fn open(path: &Path, pool: Arc<IoPool>) -> Result<Self, OpenError> {
        let held = open_exclusive(path)?;
        Ok(FileDisk {
            file: held.file,
            path: path.to_path_buf(),
            capacity_sectors: held.bytes / SECTOR_BYTES as u64,
            identity: held.identity,
            is_file: held.is_file,
            shrunk: std::sync::atomic::AtomicBool::new(false),
            pool,
        })
    }

    /// Creates a sparse image file of `bytes` (which must not exist yet) and opens it.
    pub fn create_sparse(path: &Path, bytes: u64, pool: Arc<IoPool>) -> Result<Self, OpenError> {
        let io = |error| OpenError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        file.set_len(bytes).map_err(io)?;
        drop(file);
        Self::open(path, pool)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors * SECTOR_BYTES as u64
    }

    fn is_shrunk(&self) -> bool {
        self.shrunk.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`io_error`], remembering a short I/O (the file was truncated) for good.
    fn failed(&self, sector: u64, err: &std::io::Error) -> IoError {
        let e = io_error(sector, err);
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            log::error!("{}: shorter than at open: failed", self.path.display());
            self.shrunk
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }
}

/// The worker side of [`Offload::write_xor_of`] and [`xor_files`]: writes at `sector` of
/// `target` the xor of `bytes` of each source from its sector on, a piece at a time.
/// `read(source, buf, byte_offset, sector)` fills a piece of the source whose range starts
/// at `sector`; `write_error` names what a failed write of the target (at `sector`) is.
fn xor_job<S, E>(
    target: &File,
    sector: u64,
    sources: &[(S, u64)],
    bytes: usize,
    engine: ParityEngine,
    read: impl Fn(&S, &mut [u8], u64, u64) -> Result<(), E>,
    write_error: impl Fn(std::io::Error) -> E,
) -> Result<(), E> {
    XOR_PIECES.with(|pieces| {
        let mut pieces = pieces.borrow_mut();
        let piece_max = XOR_PIECE_BYTES.min(bytes);
        if pieces.len() < sources.len() * piece_max {
            pieces.resize(sources.len() * piece_max, 0);
        }
        let mut done = 0usize;
        while done < bytes {
            let len = piece_max.min(bytes - done);
            let (first, rest) = pieces.split_at_mut(piece_max);
            let first = &mut first[..len];
            let byte_at = |s: u64| s * SECTOR_BYTES as u64 + done as u64;
            let (source, s) = &sources[0];
            read(source, first, byte_at(*s), *s)?;
            for (i, (source, s)) in sources[1..].iter().enumerate() {
                let buf = &mut rest[i * piece_max..i * piece_max + len];
                read(source, buf, byte_at(*s), *s)?;
            }
            if sources.len() > 1 {
                let others: Vec<&[u8]> = (0..sources.len() - 1)
                    .map(|i| &rest[i * piece_max..i * piece_max + len])
                    .collect();
                engine.xor_into(&others, first);
            }
            target
                .write_all_at(first, byte_at(sector))
                .map_err(&write_error)?;
            done += len;
        }
        Ok(())
    })
}

/// An open image file or block device as the source of another member's worker job.
impl OffloadSource for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        FileExt::read_exact_at(self, buf, offset)
            .map_err(|e| io_error(offset / SECTOR_BYTES as u64, &e))
    }
}

impl Offload for FileDisk {
    fn source(&self) -> Arc<dyn OffloadSource> {
        self.file.clone()
    }

    /// One job on a worker thread of its own pool ([`bulk_pool`]), a cache-sized piece at a
    /// time (`Media` names the sector of the source or of this disk that failed).
    fn write_xor_of<'a>(
        &'a self,
        sector: u64,
        sources: &[(&dyn BlockDevice, u64)],
        bytes: usize,
        engine: ParityEngine,
    ) -> Option<IoFuture<'a, ()>> {
        let mut checked = check_range(sector, bytes, self.capacity_sectors).map(|_| ());
        let mut files: Vec<(Arc<dyn OffloadSource>, u64)> = Vec::with_capacity(sources.len());
        for &(dev, s) in sources {
            files.push((dev.offload()?.source(), s));
            checked =
                checked.and_then(|()| check_range(s, bytes, dev.capacity_sectors()).map(|_| ()));
        }
        let target = self.file.clone();
        let capacity_bytes = self.is_file.then_some(self.capacity_bytes());
        Some(Box::pin(async move {
            checked?;
            if files.is_empty() {
                return Err(IoError::Unsupported);
            }
            let done = bulk_pool().submit(move || {
                let read = |source: &Arc<dyn OffloadSource>, buf: &mut [u8], offset, _| {
                    source.read_exact_at(buf, offset)
                };
                let write_error = |e| io_error(sector, &e);
                xor_job(&target, sector, &files, bytes, engine, read, write_error)?;
                match capacity_bytes {
                    Some(c) => check_not_shrunk(&target, c).map_err(|e| io_error(sector, &e)),
                    None => Ok(()),
                }
            });
            // Not `self.failed` on an error: the short one may be a source, not this disk.
            done.wait().await.unwrap_or(Err(IoError::DeviceFailed))
        }))
    }
}

/// Writes into `target` the xor of the files `sources` (all of one size, a whole number of
/// sectors), `cell_bytes` at a time with the rebuild's own job ([`xor_job`]), on `threads`
/// threads (at least one) that each take the next cell: the core loop of a RAID5 rebuild of
/// file members with nothing around it (no array, stripe locks, events, checkpoints or
/// engine thread). `raid bench xor-files` times it, the floor under such a rebuild on a
/// machine. The target is written from its start, created if missing and extended to the
/// sources' size if shorter; it may not be one of the sources (by device and inode, so no
/// other name or link of a source either). Returns the bytes of one source; nothing is
/// written if the arguments are wrong. Sizes come from the files' metadata: block devices
/// (size 0 there) are refused.
pub fn xor_files(
    sources: &[&Path],
    target: &Path,
    cell_bytes: usize,
    threads: usize,
    engine: ParityEngine,
) -> std::io::Result<u64> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let invalid = |m: String| Error::new(ErrorKind::InvalidInput, m);
    let Some(first) = sources.first() else {
        return Err(invalid("no source files".into()));
    };
    if cell_bytes == 0 || !cell_bytes.is_multiple_of(SECTOR_BYTES) {
        return Err(invalid(format!(
            "a cell of {cell_bytes} bytes is not a whole number of {SECTOR_BYTES}-byte sectors"
        )));
    }
    fn with_path(p: &Path) -> impl FnOnce(Error) -> Error + '_ {
        move |e| Error::new(e.kind(), format!("{}: {e}", p.display()))
    }
    let files: Vec<(Arc<File>, std::fs::Metadata)> = sources
        .iter()
        .map(|p| {
            let f = open_for_reading(p).map_err(OpenError::into_io)?;
            let m = f.metadata().map_err(with_path(p))?;
            Ok((Arc::new(f), m))
        })
        .collect::<std::io::Result<_>>()?;
    let size = files[0].1.len();
    for (path, (_, meta)) in sources.iter().zip(&files) {
        let len = meta.len();
        if len == 0 {
            return Err(invalid(format!(
                "{} is empty (or not a regular file)",
                path.display()
            )));
        }
        if len != size {
            return Err(invalid(format!(
                "{} has {len} bytes, {} has {size}: the sources must be of one size",
                path.display(),
                first.display()
            )));
        }
    }
    if !size.is_multiple_of(SECTOR_BYTES as u64) {
        return Err(invalid(format!(
            "{} has {size} bytes, not a whole number of {SECTOR_BYTES}-byte sectors",
            first.display()
        )));
    }
    if let Ok(t) = std::fs::metadata(target)
        && let Some(path) = sources
            .iter()
            .zip(&files)
            .find(|(_, (_, m))| m.dev() == t.dev() && m.ino() == t.ino())
            .map(|(p, _)| p)
    {
        return Err(invalid(format!(
            "{} is the source {}: the target would overwrite it",
            target.display(),
            path.display()
        )));
    }
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(with_path(target))?;
    if out.metadata()?.len() < size {
        out.set_len(size).map_err(with_path(target))?;
    }
    let next = AtomicU64::new(0);
    // Set by a worker that failed, so the others stop at their next cell.
    let failed = AtomicBool::new(false);
    let cell = cell_bytes as u64;
    let work = || -> std::io::Result<()> {
        while !failed.load(Ordering::Relaxed) {
            let at = next.fetch_add(cell, Ordering::Relaxed);
            if at >= size {
                break;
            }
            let sector = at / SECTOR_BYTES as u64;
            let srcs: Vec<(Arc<File>, u64)> =
                files.iter().map(|(f, _)| (f.clone(), sector)).collect();
            let len = cell.min(size - at) as usize;
            let read = |file: &Arc<File>, buf: &mut [u8], offset, at_sector| {
                FileExt::read_exact_at(file.as_ref(), buf, offset).map_err(|e| (at_sector, e))
            };
            let write_error = |e| (sector, e);
            if let Err((at_sector, e)) =
                xor_job(&out, sector, &srcs, len, engine, read, write_error)
            {
                failed.store(true, Ordering::Relaxed);
                return Err(Error::new(
                    e.kind(),
                    format!("at sector {at_sector} (target or source): {e}"),
                ));
            }
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(work)).collect();
        // Every worker joined before the first error is returned.
        let results: Vec<std::io::Result<()>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error::other("an xor worker panicked")))
            })
            .collect();
        results.into_iter().collect::<std::io::Result<()>>()
    })?;
    Ok(size)
}

impl BlockDevice for FileDisk {
    fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    fn offload(&self) -> Option<&dyn Offload> {
        Some(self)
    }

    fn identity(&self) -> Option<DeviceIdentity> {
        Some(self.identity)
    }

    /// One `fstat` of the open file: deleted (no links left) or shorter than at open.
    /// Block devices are not looked at (their metadata says neither).
    fn probe(&self) -> Option<DeviceProblem> {
        use std::os::unix::fs::MetadataExt;
        if !self.is_file {
            return None;
        }
        let meta = self.file.metadata().ok()?;
        if meta.nlink() == 0 {
            return Some(DeviceProblem::Deleted);
        }
        let now_sectors = meta.len() / SECTOR_BYTES as u64;
        (now_sectors < self.capacity_sectors).then_some(DeviceProblem::Shrunk {
            capacity_sectors: self.capacity_sectors,
            now_sectors,
        })
    }

    fn read(&self, sector: u64, mut buf: Vec<u8>) -> IoFuture<'_, Vec<u8>> {
        let checked = check_range(sector, buf.len(), self.capacity_sectors);
        let file = self.file.clone();
        Box::pin(async move {
            checked?;
            if self.is_shrunk() {
                return Err(IoError::DeviceFailed);
            }
            // read_exact_at: a read that comes back short (the end of a truncated file) is
            // an error (UnexpectedEof), never a buffer partly left as it was.
            let done = self.pool.submit(move || {
                let r =
                    FileExt::read_exact_at(file.as_ref(), &mut buf, sector * SECTOR_BYTES as u64);
                r.map(|()| buf)
            });
            match done.wait().await {
                Some(Ok(buf)) => Ok(buf),
                Some(Err(e)) => Err(self.failed(sector, &e)),
                None => Err(IoError::DeviceFailed),
            }
        })
    }

    fn write(&self, sector: u64, data: Bytes, fua: bool) -> IoFuture<'_, ()> {
        let checked = check_range(sector, data.len(), self.capacity_sectors);
        let file = self.file.clone();
        let capacity_bytes = self.is_file.then_some(self.capacity_bytes());
        Box::pin(async move {
            checked?;
            if self.is_shrunk() {
                return Err(IoError::DeviceFailed);
            }
            let done = self.pool.submit(move || {
                file.write_all_at(&data, sector * SECTOR_BYTES as u64)?;
                if let Some(c) = capacity_bytes {
                    check_not_shrunk(&file, c)?;
                }
                if fua {
                    file.sync_data()?;
                }
                Ok::<(), std::io::Error>(())
            });
            match done.wait().await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(self.failed(sector, &e)),
                None => Err(IoError::DeviceFailed),
            }
        })
    }

    fn flush(&self) -> IoFuture<'_, ()> {
        let file = self.file.clone();
        Box::pin(async move {
            match self.pool.submit(move || file.sync_data()).wait().await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(io_error(0, &e)),
                None => Err(IoError::DeviceFailed),
            }
        })
    }

    fn discard(&self, sector: u64, sectors: u64) -> IoFuture<'_, ()> {
        let checked = check_sectors(sector, sectors, self.capacity_sectors);
        let file = self.file.clone();
        Box::pin(async move {
            checked?;
            let done = self.pool.submit(move || {
                let fd = file.as_raw_fd();
                // SAFETY: `fd` is an open descriptor owned by `file`, which this closure keeps
                // alive; fallocate reads no memory of ours.
                let rc = unsafe {
                    libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        (sector * SECTOR_BYTES as u64) as libc::off_t,
                        (sectors * SECTOR_BYTES as u64) as libc::off_t,
                    )
                };
                // A device or file system without hole punching simply keeps the data: a
                // discard promises nothing about the content.
                rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP)
            });
            match done.wait().await {
                Some(true) => Ok(()),
                Some(false) => Err(IoError::Media { sector }),
                None => Err(IoError::DeviceFailed),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;

    #[test]
    fn file_round_trip_with_worker_completions() {
        let dir = std::env::temp_dir().join(format!("orion-filedisk-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let pool = IoPool::new(2);
        let disk = std::rc::Rc::new(FileDisk::create_sparse(&dir, 1 << 20, pool.clone()).unwrap());
        assert_eq!(disk.capacity_sectors(), 2048);
        let exec = Executor::new();
        let notified = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let n2 = notified.clone();
        exec.set_notifier(Arc::new(move || {
            n2.store(true, std::sync::atomic::Ordering::SeqCst)
        }));
        let d = disk.clone();
        let handle = exec.spawn(async move {
            let data: Vec<u8> = (0..4096).map(|i| (i % 253) as u8).collect();
            d.write(10, Bytes::from(data.clone()), true).await.unwrap();
            d.flush().await.unwrap();
            let back = d.read(10, vec![0; 4096]).await.unwrap();
            d.discard(0, 8).await.unwrap();
            let past = d.read(2047, vec![0; 1024]).await;
            (back == data, past)
        });
        let result = loop {
            exec.run_until_stalled();
            if let Some(r) = handle.try_take() {
                break r;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(result.0);
        assert!(matches!(result.1, Err(IoError::OutOfRange { .. })));
        assert!(notified.load(std::sync::atomic::Ordering::SeqCst));
        std::fs::remove_file(&dir).unwrap();
    }

    /// A file truncated under the disk: a write past its new end is an error (not a silent
    /// extension with a hole of zeros below it), and from then on nothing it holds is
    /// served, above all not the zeros of that hole; a read that comes back short is an
    /// error too. Deleted and truncated files are what `probe` reports.
    #[test]
    fn a_truncated_file_fails_requests_instead_of_serving_zeros() {
        let dir = std::env::temp_dir().join(format!("orion-shrunk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pool = IoPool::new(2);
        let run = |disk: &std::rc::Rc<FileDisk>, op: u8, sector: u64| {
            let exec = Executor::new();
            let d = disk.clone();
            let handle = exec.spawn(async move {
                match op {
                    b'r' => d.read(sector, vec![0; 4096]).await.map(|_| ()),
                    _ => d.write(sector, Bytes::from(vec![7u8; 4096]), false).await,
                }
            });
            loop {
                exec.run_until_stalled();
                if let Some(r) = handle.try_take() {
                    break r;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let path = dir.join("w.img");
        let disk = std::rc::Rc::new(FileDisk::create_sparse(&path, 1 << 20, pool.clone()).unwrap());
        assert_eq!(disk.probe(), None);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(256 << 10)
            .unwrap();
        assert_eq!(
            disk.probe(),
            Some(DeviceProblem::Shrunk {
                capacity_sectors: 2048,
                now_sectors: 512
            })
        );
        assert_eq!(run(&disk, b'w', 1024), Err(IoError::DeviceFailed));
        // The write landed past the end and made a hole of zeros at 256K..512K: not served.
        assert_eq!(run(&disk, b'r', 600), Err(IoError::DeviceFailed));
        assert_eq!(run(&disk, b'r', 0), Err(IoError::DeviceFailed));

        let path = dir.join("r.img");
        let disk = std::rc::Rc::new(FileDisk::create_sparse(&path, 1 << 20, pool.clone()).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(256 << 10)
            .unwrap();
        assert_eq!(run(&disk, b'r', 0), Ok(()));
        assert_eq!(
            run(&disk, b'r', 508),
            Err(IoError::DeviceFailed),
            "short read"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(disk.probe(), Some(DeviceProblem::Deleted));
        pool.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_space_and_quota_are_not_media_errors() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(io_error(8, &e), IoError::NoSpace);
            assert!(!io_error(8, &e).fails_member());
        }
        let eio = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(io_error(8, &eio), IoError::Media { sector: 8 });
    }

    /// The fused job writes the xor of its sources across piece boundaries (a length that
    /// is not a whole number of pieces), touches nothing else, and refuses a source range
    /// past the end.
    #[test]
    fn write_xor_of_writes_the_xor_of_every_source() {
        let dir = std::env::temp_dir().join(format!("orion-xorjob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pool = IoPool::new(2);
        let bytes = XOR_PIECE_BYTES * 2 + 3 * SECTOR_BYTES;
        let disks: Vec<FileDisk> = (0..4)
            .map(|i| FileDisk::create_sparse(&dir.join(format!("d{i}")), 4 << 20, pool.clone()))
            .collect::<Result<_, _>>()
            .unwrap();
        let mut rng = crate::rng::SplitMix64::new(5);
        let mut want = vec![0u8; bytes];
        for (i, d) in disks[..3].iter().enumerate() {
            let mut data = vec![0u8; bytes];
            rng.fill(&mut data);
            for (w, b) in want.iter_mut().zip(&data) {
                *w ^= b;
            }
            d.file
                .write_all_at(&data, (8 + i as u64) * SECTOR_BYTES as u64)
                .unwrap();
        }
        disks[3].file.write_all_at(&[0xee; 8192], 0).unwrap();
        let engine = crate::parity::ParityEngine::widest();
        // Polled by hand: the worker completes the slot, nothing else needs to run.
        let wait = |mut fut: IoFuture<'_, ()>| {
            let mut cx = Context::from_waker(Waker::noop());
            loop {
                if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                    return r;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let sources: Vec<(&dyn BlockDevice, u64)> = disks[..3]
            .iter()
            .enumerate()
            .map(|(i, d)| (d as &dyn BlockDevice, 8 + i as u64))
            .collect();
        let job = |sector, sources: &[(&dyn BlockDevice, u64)]| {
            disks[3]
                .offload()
                .and_then(|o| o.write_xor_of(sector, sources, bytes, engine))
                .expect("file members offer the job")
        };
        wait(job(16, &sources)).unwrap();
        let mut got = vec![0u8; bytes + 2 * SECTOR_BYTES];
        FileExt::read_exact_at(disks[3].file.as_ref(), &mut got, 15 * SECTOR_BYTES as u64).unwrap();
        assert!(
            got[..SECTOR_BYTES].iter().all(|&b| b == 0xee),
            "before untouched"
        );
        assert!(
            got[SECTOR_BYTES..SECTOR_BYTES + bytes] == want[..],
            "the xor"
        );
        assert!(
            got[SECTOR_BYTES + bytes..].iter().all(|&b| b == 0),
            "after untouched"
        );
        let past = [(
            &disks[0] as &dyn BlockDevice,
            (4 << 20) / SECTOR_BYTES as u64 - 1,
        )];
        assert!(matches!(
            wait(job(0, &past)),
            Err(IoError::OutOfRange { .. })
        ));
        // A source that offers no direct reads: no job.
        let memory = crate::platform::memory::MemoryDisk::new(8192);
        let plain = [(&memory as &dyn BlockDevice, 0)];
        let offload = disks[3].offload().expect("a file offers jobs");
        assert!(offload.write_xor_of(0, &plain, bytes, engine).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xor_files_writes_the_xor_of_whole_files_and_checks_its_arguments() {
        let dir = std::env::temp_dir().join(format!("orion-xorfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Cells of a full piece and a 1 KiB one, and a last cell shorter than a piece.
        let cell = XOR_PIECE_BYTES + 2 * SECTOR_BYTES;
        let size = 3 * cell + 5 * SECTOR_BYTES;
        let mut rng = crate::rng::SplitMix64::new(11);
        let mut want = vec![0u8; size];
        let paths: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("s{i}"))).collect();
        for p in &paths {
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            for (w, b) in want.iter_mut().zip(&data) {
                *w ^= b;
            }
            std::fs::write(p, &data).unwrap();
        }
        let sources: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let engine = crate::parity::ParityEngine::widest();
        // A new target, then one already written and longer (its tail stays as it was).
        let fresh = dir.join("fresh");
        assert_eq!(
            xor_files(&sources, &fresh, cell, 3, engine).unwrap(),
            size as u64
        );
        assert!(
            std::fs::read(&fresh).unwrap() == want,
            "xor into a new file"
        );
        let used = dir.join("used");
        std::fs::write(&used, vec![0x5a; size + 4096]).unwrap();
        xor_files(&sources, &used, cell, 2, engine).unwrap();
        let got = std::fs::read(&used).unwrap();
        assert!(got[..size] == want[..], "xor over a written file");
        assert!(got[size..].iter().all(|&b| b == 0x5a), "its tail untouched");

        // Wrong arguments write nothing: no target is created.
        let untouched = dir.join("untouched");
        let short = dir.join("short");
        std::fs::write(&short, vec![1u8; size - SECTOR_BYTES]).unwrap();
        let odd = dir.join("odd");
        std::fs::write(&odd, vec![1u8; 1000]).unwrap();
        let missing = dir.join("missing");
        let bad: [(&[&Path], usize); 5] = [
            (&[], cell),
            (&sources, 0),
            (&sources, SECTOR_BYTES + 1),
            (&[sources[0], &short], cell),
            (&[&odd, &odd], cell),
        ];
        for (srcs, c) in bad {
            let e = xor_files(srcs, &untouched, c, 2, engine).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        }
        assert!(xor_files(&[sources[0], &missing], &untouched, cell, 2, engine).is_err());
        assert!(!untouched.exists());
        // A source by another name (a hard link) is not a target.
        let link = dir.join("link");
        std::fs::hard_link(&paths[1], &link).unwrap();
        let before = std::fs::read(&paths[1]).unwrap();
        let e = xor_files(&sources, &link, cell, 2, engine).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(
            std::fs::read(&paths[1]).unwrap() == before,
            "the source untouched"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
