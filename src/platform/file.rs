//! `FileDisk`: an image file or block device on the host, served by a pool of worker threads.
//!
//! Each request becomes a positioned read or write (`pread`/`pwrite`) on a worker thread; the
//! worker completes a shared slot and wakes the waiting task through the executor's
//! thread-safe waker. Many requests are in flight at once, across members and requests.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use crate::block::{
    BlockDevice, Bytes, IoError, IoFuture, SECTOR_BYTES, check_range, check_sectors,
};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run blocking jobs.
pub struct IoPool {
    sender: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl IoPool {
    /// Starts `threads` workers.
    pub fn new(threads: usize) -> Arc<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let handles = (0..threads.max(1))
            .map(|i| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("raid-io-{i}"))
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
    pub fn open(path: &Path, pool: Arc<IoPool>) -> std::io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
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
}

impl BlockDevice for FileDisk {
    fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
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
}
