//! Opening host paths as members: only regular files and block devices, never blocking on
//! anything else (a FIFO), held exclusively while open, and known by their identity.
//!
//! Every command that opens a member path goes through here (`raid create`, `serve`,
//! `add`, `replace`, `examine`), so the rules are the same everywhere:
//! * the path is looked at (`stat`) before it is opened, and opened with `O_NONBLOCK`, so
//!   neither a FIFO nor a device that waits for a peer can hang the tool;
//! * a member is opened by one process at a time, as mdadm refuses busy devices even with
//!   `--force`: an OFD write lock on a regular file (`F_OFD_SETLK`; released when the last
//!   descriptor of that open file closes, also when the process dies), `O_EXCL` on a block
//!   device (the kernel's exclusive claim, which also refuses mounted devices and md's
//!   members). Reading only (`raid examine`) takes no lock;
//! * within one process a device is open once: opening it again by any path gives the same
//!   open file, so the core, not the lock, is what refuses it with the role it already has.
#![allow(unsafe_code)]

use std::fmt;
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::block::DeviceIdentity;

/// Why a path could not be opened as a member.
#[derive(Debug)]
pub enum OpenError {
    /// The system refused (missing, permission, ...).
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Neither a regular file nor a block device.
    NotADevice { path: PathBuf, kind: &'static str },
    /// Another process holds it; `holder` says who, as far as can be found out.
    Busy { path: PathBuf, holder: String },
    /// The path named another file by the time it was opened (renamed meanwhile).
    Changed { path: PathBuf },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            OpenError::NotADevice { path, kind } => write!(
                f,
                "{} is {kind}: only a regular file or a block device can be a member",
                path.display()
            ),
            OpenError::Busy { path, holder } => write!(
                f,
                "{} is in use by {holder}: a member is opened by one process at a time \
                 (--force does not change that)",
                path.display()
            ),
            OpenError::Changed { path } => write!(
                f,
                "{} was replaced by another file while it was opened; try again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {}

impl OpenError {
    /// As a `std::io::Error` (for callers that speak it), the message kept whole.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            OpenError::Io { error, .. } => error.kind(),
            OpenError::Busy { .. } => std::io::ErrorKind::ResourceBusy,
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, self.to_string())
    }

    fn io(path: &Path, error: std::io::Error) -> Self {
        OpenError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// What kind of file `t` is, as an error message names it.
fn kind_name(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// A file's identity from its metadata: block devices by device number, the rest by file
/// system and inode.
pub fn identity_of(meta: &Metadata) -> DeviceIdentity {
    if meta.file_type().is_block_device() {
        DeviceIdentity::Block { rdev: meta.rdev() }
    } else {
        DeviceIdentity::File {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Looks at `path` (following symlinks) without opening it: its metadata if it is a
/// regular file or a block device, the reason if not.
pub fn check_member_path(path: &Path) -> Result<Metadata, OpenError> {
    let meta = std::fs::metadata(path).map_err(|e| OpenError::io(path, e))?;
    let t = meta.file_type();
    if t.is_file() || t.is_block_device() {
        Ok(meta)
    } else {
        Err(OpenError::NotADevice {
            path: path.to_path_buf(),
            kind: kind_name(t),
        })
    }
}

/// The identity of the member at `path`, for comparing paths before anything is opened.
pub fn identify(path: &Path) -> Result<DeviceIdentity, OpenError> {
    check_member_path(path).map(|m| identity_of(&m))
}

/// Opens `path` for reading only, with no lock (a served member can be examined), after the
/// same type check as a member: a FIFO is refused, not waited on.
pub fn open_for_reading(path: &Path) -> Result<File, OpenError> {
    let meta = check_member_path(path)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| OpenError::io(path, e))?;
    confirm_same(path, &file, &meta)?;
    Ok(file)
}

/// Checks that the open `file` is what `path` named when it was checked.
fn confirm_same(path: &Path, file: &File, checked: &Metadata) -> Result<Metadata, OpenError> {
    let now = file.metadata().map_err(|e| OpenError::io(path, e))?;
    if identity_of(&now) != identity_of(checked) || now.file_type() != checked.file_type() {
        return Err(OpenError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(now)
}

/// The members this process holds open, by identity. Held while opening, so that two
/// threads opening one device cannot both miss it here and then refuse each other.
static HELD: Mutex<Vec<(DeviceIdentity, Weak<File>)>> = Mutex::new(Vec::new());

/// A member opened read-write and held exclusively.
pub struct HeldMember {
    pub file: Arc<File>,
    pub identity: DeviceIdentity,
    /// A regular file (an image), not a block device: its size and link count mean
    /// something.
    pub is_file: bool,
    /// Bytes, from its size at open (regular files) or its end (block devices).
    pub bytes: u64,
}

/// Opens `path` read-write as a member: type checked, never blocking, exclusive against
/// other processes. A device this process already holds is not opened again: the same
/// open file comes back, and the caller (the core) refuses it for the role it has.
pub fn open_exclusive(path: &Path) -> Result<HeldMember, OpenError> {
    let meta = check_member_path(path)?;
    let identity = identity_of(&meta);
    let is_file = meta.file_type().is_file();
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|(_, w)| w.strong_count() > 0);
    if let Some(file) = held
        .iter()
        .find(|(id, _)| *id == identity)
        .and_then(|(_, w)| w.upgrade())
    {
        let bytes = size_of(path, &file, is_file)?;
        return Ok(HeldMember {
            file,
            identity,
            is_file,
            bytes,
        });
    }
    // O_EXCL without O_CREAT on a block device is the kernel's exclusive open; on a
    // regular file it would mean nothing (the lock below does that job).
    let excl = if is_file { 0 } else { libc::O_EXCL };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | excl)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => OpenError::Busy {
                path: path.to_path_buf(),
                holder: "another program (it is mounted, a member of a Linux md array, or \
                         opened by another raid process)"
                    .into(),
            },
            _ => OpenError::io(path, e),
        })?;
    confirm_same(path, &file, &meta)?;
    if is_file {
        lock_file(path, &file, &meta)?;
    }
    clear_nonblocking(path, &file)?;
    let bytes = size_of(path, &file, is_file)?;
    let file = Arc::new(file);
    held.push((identity, Arc::downgrade(&file)));
    Ok(HeldMember {
        file,
        identity,
        is_file,
        bytes,
    })
}

fn size_of(path: &Path, file: &File, is_file: bool) -> Result<u64, OpenError> {
    if is_file {
        return file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| OpenError::io(path, e));
    }
    // A block device's size is its end (its metadata says 0).
    use std::io::{Seek, SeekFrom};
    let mut f: &File = file;
    f.seek(SeekFrom::End(0)).map_err(|e| OpenError::io(path, e))
}

/// `O_NONBLOCK` only kept the open from waiting; the worker threads' I/O is meant to block.
fn clear_nonblocking(path: &Path, file: &File) -> Result<(), OpenError> {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open (owned by `file`, alive here); F_GETFL/F_SETFL touch no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(OpenError::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Asks `cmd` (F_OFD_SETLK or F_OFD_GETLK) for a write lock over the whole file.
fn whole_file_lock(fd: libc::c_int, cmd: libc::c_int) -> Result<libc::flock, std::io::Error> {
    // SAFETY: flock is plain data; all zero is a valid value (l_pid must be 0 for OFD).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = 0;
    lock.l_len = 0;
    // SAFETY: `fd` is an open descriptor; `lock` is a valid flock the call reads and
    // (for GETLK) writes, living across the call.
    let rc = unsafe { libc::fcntl(fd, cmd, &mut lock) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(lock)
    }
}

/// Takes the OFD write lock on an image file; if another process holds a lock on it, says
/// who (as far as /proc lets us see).
fn lock_file(path: &Path, file: &File, meta: &Metadata) -> Result<(), OpenError> {
    let fd = file.as_raw_fd();
    match whole_file_lock(fd, libc::F_OFD_SETLK) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
            // A classic POSIX lock names its process; an OFD lock (ours, qemu's) answers
            // l_pid -1, so look for the holder in /proc.
            let pid = whole_file_lock(fd, libc::F_OFD_GETLK)
                .ok()
                .filter(|l| l.l_type != libc::F_UNLCK as libc::c_short && l.l_pid > 0)
                .map(|l| l.l_pid as u32);
            let holder = match pid.or_else(|| lock_holder(meta)) {
                Some(pid) => format!("process {pid}{}", process_name(pid)),
                None => format!(
                    "another process (it holds a lock on it; /proc/locks lists it under \
                     inode {})",
                    meta.ino()
                ),
            };
            Err(OpenError::Busy {
                path: path.to_path_buf(),
                holder,
            })
        }
        Err(e) => Err(OpenError::io(path, e)),
    }
}

/// " (name)" of process `pid`, from /proc, or nothing.
fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|n| format!(" ({})", n.trim()))
        .unwrap_or_default()
}

/// The process (not this one) with a descriptor of this file that carries a lock, from
/// /proc/PID/fd and /proc/PID/fdinfo (which lists a descriptor's locks). Only asked after a
/// lock was refused; processes we may not look into are skipped.
fn lock_holder(meta: &Metadata) -> Option<u32> {
    let me = std::process::id();
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let same = std::fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
            if !same {
                continue;
            }
            let info = proc_entry.path().join("fdinfo").join(fd.file_name());
            if std::fs::read_to_string(info).is_ok_and(|t| t.contains("lock:")) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("orion-open-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fifo_directory_and_char_device_are_refused_without_blocking() {
        let d = dir("types");
        let fifo = d.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (d.as_path(), "a directory"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            let e = open_for_reading(path).unwrap_err();
            assert!(e.to_string().contains(kind), "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            let e = open_exclusive(path).err().unwrap();
            assert!(matches!(e, OpenError::NotADevice { .. }), "{e}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_held_member_is_shared_in_process_and_busy_for_another_open_file() {
        let d = dir("held");
        let img = d.join("m.img");
        std::fs::write(&img, vec![0u8; 8192]).unwrap();
        let link = d.join("link.img");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let a = open_exclusive(&img).unwrap();
        // In this process: the same open file, by any path.
        let b = open_exclusive(&link).unwrap();
        assert!(Arc::ptr_eq(&a.file, &b.file));
        assert_eq!(a.identity, identify(&link).unwrap());
        assert_eq!(a.bytes, 8192);
        // Another open file of it (another process's view) is refused by the lock.
        let other = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let meta = other.metadata().unwrap();
        let e = lock_file(&img, &other, &meta).unwrap_err();
        assert!(matches!(e, OpenError::Busy { .. }), "{e}");
        // Reading needs no lock.
        assert!(open_for_reading(&img).is_ok());
        drop((a, b));
        // Released with the last handle.
        lock_file(&img, &other, &meta).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
