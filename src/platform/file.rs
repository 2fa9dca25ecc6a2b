//! `FileDisk`: an image file or block device on the host, served by a pool of worker threads.
//!
//! Each request becomes a positioned read or write (`pread`/`pwrite`) on a worker thread; the
//! worker completes a shared slot and wakes the waiting task through the executor's
//! thread-safe waker. Many requests are in flight at once, across members and requests.
//! A rebuild's "read these cells, xor them, write the result" can run as one worker job
//! ([`FileDisk::write_xor_of`]), so the engine thread neither copies nor wakes per cell.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use crate::block::{
    BlockDevice, Bytes, IoError, IoFuture, SECTOR_BYTES, check_range, check_sectors,
};
use crate::parity::ParityEngine;

/// Bytes of each source a [`FileDisk::write_xor_of`] job reads at a time: the pieces of
/// all sources (the first is also the result) stay in or near one core's L2 cache (512 KiB
/// per core on the bench machine) from the copy out of the page cache, through the xor, to
/// the copy back in, instead of making three trips through memory. 64 KiB measured the same
/// with four sources, 16 KiB and 512 KiB slower.
const XOR_PIECE_BYTES: usize = 128 << 10;

/// The workers of [`FileDisk::write_xor_of`], one per CPU (at most 8), apart from the pools
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
    pool: Arc<IoPool>,
}

fn io_error(sector: u64, err: &std::io::Error) -> IoError {
    log::warn!("I/O error at sector {sector}: {err}");
    IoError::Media { sector }
}

impl FileDisk {
    /// Opens `path` read-write; its size (rounded down to whole sectors) is the capacity.
    ///
    /// Takes an exclusive advisory lock (`flock`) for as long as the disk is open, and
    /// refuses a file another open disk holds: two processes (a `raid serve` and an offline
    /// `raid set --members`, or two servers) writing one member's metadata would each undo
    /// the other's. The kernel drops the lock when the holder exits, however it exits.
    pub fn open(path: &Path, pool: Arc<IoPool>) -> std::io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    "in use: another process (a running raid serve?) has it open",
                ));
            }
            // A file system without locks (some network ones): serve it unguarded rather
            // than not at all.
            Err(std::fs::TryLockError::Error(e)) => {
                log::warn!(
                    "{}: not locked ({e}): nothing guards it from other processes",
                    path.display()
                );
            }
        }
        let bytes = file.seek(SeekFrom::End(0))?;
        Ok(FileDisk {
            file: Arc::new(file),
            path: path.to_path_buf(),
            capacity_sectors: bytes / SECTOR_BYTES as u64,
            pool,
        })
    }

    /// Creates a sparse image file of `bytes` (which must not exist yet) and opens it.
    pub fn create_sparse(path: &Path, bytes: u64, pool: Arc<IoPool>) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(bytes)?;
        drop(file);
        Self::open(path, pool)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes at `sector` of this disk the xor of `bytes` read at each `(disk, sector)` of
    /// `sources`, as one job on a worker thread of its own pool ([`bulk_pool`]), a
    /// cache-sized piece at a time. Nothing is retried: on an error (`Media` names the
    /// sector of the source or of this disk) part of the range may be written, and the
    /// caller redoes it its own way.
    pub fn write_xor_of(
        &self,
        sector: u64,
        sources: &[(&FileDisk, u64)],
        bytes: usize,
        engine: ParityEngine,
    ) -> IoFuture<'_, ()> {
        let checked = check_range(sector, bytes, self.capacity_sectors).and_then(|_| {
            sources
                .iter()
                .try_for_each(|(d, s)| check_range(*s, bytes, d.capacity_sectors).map(|_| ()))
        });
        let target = self.file.clone();
        let sources: Vec<(Arc<File>, u64)> =
            sources.iter().map(|(d, s)| (d.file.clone(), *s)).collect();
        Box::pin(async move {
            checked?;
            if sources.is_empty() {
                return Err(IoError::Unsupported);
            }
            let done =
                bulk_pool().submit(move || xor_job(&target, sector, &sources, bytes, engine));
            match done.wait().await {
                Some(Ok(())) => Ok(()),
                Some(Err((at, e))) => Err(io_error(at, &e)),
                None => Err(IoError::DeviceFailed),
            }
        })
    }
}

/// The worker side of [`FileDisk::write_xor_of`]; an error names the sector it hit.
fn xor_job(
    target: &File,
    sector: u64,
    sources: &[(Arc<File>, u64)],
    bytes: usize,
    engine: ParityEngine,
) -> Result<(), (u64, std::io::Error)> {
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
            let (file, s) = &sources[0];
            file.read_exact_at(first, byte_at(*s))
                .map_err(|e| (*s, e))?;
            for (i, (file, s)) in sources[1..].iter().enumerate() {
                let buf = &mut rest[i * piece_max..i * piece_max + len];
                file.read_exact_at(buf, byte_at(*s)).map_err(|e| (*s, e))?;
            }
            if sources.len() > 1 {
                let others: Vec<&[u8]> = (0..sources.len() - 1)
                    .map(|i| &rest[i * piece_max..i * piece_max + len])
                    .collect();
                engine.xor_into(&others, first);
            }
            target
                .write_all_at(first, byte_at(sector))
                .map_err(|e| (sector, e))?;
            done += len;
        }
        Ok(())
    })
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
            let f = File::open(p).map_err(with_path(p))?;
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
            if let Err((at_sector, e)) = xor_job(&out, sector, &srcs, len, engine) {
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

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn read(&self, sector: u64, mut buf: Vec<u8>) -> IoFuture<'_, Vec<u8>> {
        let checked = check_range(sector, buf.len(), self.capacity_sectors);
        let file = self.file.clone();
        Box::pin(async move {
            checked?;
            let done = self.pool.submit(move || {
                let r = file.read_exact_at(&mut buf, sector * SECTOR_BYTES as u64);
                r.map(|()| buf)
            });
            match done.wait().await {
                Some(Ok(buf)) => Ok(buf),
                Some(Err(e)) => Err(io_error(sector, &e)),
                None => Err(IoError::DeviceFailed),
            }
        })
    }

    fn write(&self, sector: u64, data: Bytes, fua: bool) -> IoFuture<'_, ()> {
        let checked = check_range(sector, data.len(), self.capacity_sectors);
        let file = self.file.clone();
        Box::pin(async move {
            checked?;
            let done = self.pool.submit(move || {
                file.write_all_at(&data, sector * SECTOR_BYTES as u64)?;
                if fua {
                    file.sync_data()?;
                }
                Ok::<(), std::io::Error>(())
            });
            match done.wait().await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(io_error(sector, &e)),
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
        let sources: Vec<(&FileDisk, u64)> = disks[..3]
            .iter()
            .enumerate()
            .map(|(i, d)| (d, 8 + i as u64))
            .collect();
        wait(disks[3].write_xor_of(16, &sources, bytes, engine)).unwrap();
        let mut got = vec![0u8; bytes + 2 * SECTOR_BYTES];
        disks[3]
            .file
            .read_exact_at(&mut got, 15 * SECTOR_BYTES as u64)
            .unwrap();
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
        let past = [(&disks[0], (4 << 20) / SECTOR_BYTES as u64 - 1)];
        assert!(matches!(
            wait(disks[3].write_xor_of(0, &past, bytes, engine)),
            Err(IoError::OutOfRange { .. })
        ));
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
