//! `IpcMember`: a member disk reached through Orion IPC. Each request becomes an `IoRequest`
//! frame to the disk's driver; the `IoResponse` with the same sequence completes it.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::{Poll, Waker};

use orion_driver::{DriverError, Frame, IoFlags, IoOp, IoRequest, IoResponse, Message};

use crate::block::{Bytes, IoError, SECTOR_BYTES, check_range, check_sectors};

/// Largest member request sent in one frame (the protocol allows 8 MiB; 1 MiB keeps frames
/// small and requests parallel).
const MAX_REQUEST_SECTORS: u64 = 2048;

enum Pending {
    Waiting(Option<Waker>),
    Done(IoResponse),
}

/// The driver's outgoing requests and their pending completions, shared by every member.
pub struct IpcPort {
    outbox: Rc<RefCell<VecDeque<Frame>>>,
    /// By sequence: the device asked, and the request's state.
    pending: RefCell<BTreeMap<u64, (u32, Pending)>>,
    next_sequence: Cell<u64>,
    /// Devices the kernel took away: their requests fail at once.
    gone: RefCell<BTreeSet<u32>>,
}

impl IpcPort {
    /// Requests go to `outbox`; sequence numbers start high so they are easy to tell apart
    /// from the kernel's in traces.
    pub fn new(outbox: Rc<RefCell<VecDeque<Frame>>>) -> Self {
        IpcPort {
            outbox,
            pending: RefCell::new(BTreeMap::new()),
            next_sequence: Cell::new(1 << 48),
            gone: RefCell::new(BTreeSet::new()),
        }
    }

    /// Delivers a reply; returns false if no request of ours has that sequence.
    pub fn complete(&self, sequence: u64, response: IoResponse) -> bool {
        let mut pending = self.pending.borrow_mut();
        match pending.get_mut(&sequence) {
            Some((_, slot @ Pending::Waiting(_))) => {
                let Pending::Waiting(waker) = core::mem::replace(slot, Pending::Done(response))
                else {
                    unreachable!("matched Waiting above")
                };
                drop(pending);
                if let Some(w) = waker {
                    w.wake();
                }
                true
            }
            _ => false,
        }
    }

    /// Fails every request in flight (the peer is gone).
    pub fn fail_all(&self, error: DriverError) {
        let sequences: Vec<u64> = self.pending.borrow().keys().copied().collect();
        for s in sequences {
            self.complete(s, IoResponse::err(error));
        }
    }

    /// The kernel took device `device_id` away: its requests in flight fail now (the disk's
    /// driver will never answer them), and so does every later one, without being sent.
    pub fn device_gone(&self, device_id: u32) {
        self.gone.borrow_mut().insert(device_id);
        let sequences: Vec<u64> = self
            .pending
            .borrow()
            .iter()
            .filter(|(_, (device, _))| *device == device_id)
            .map(|(s, _)| *s)
            .collect();
        for s in sequences {
            self.complete(s, IoResponse::err(DriverError::NotFound));
        }
    }

    /// A device that comes back under an id that was taken away is reachable again.
    pub fn device_back(&self, device_id: u32) {
        self.gone.borrow_mut().remove(&device_id);
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending
            .borrow()
            .values()
            .filter(|(_, p)| matches!(p, Pending::Waiting(_)))
            .count()
    }

    async fn call(&self, request: IoRequest) -> IoResponse {
        let device = request.device_id;
        if self.gone.borrow().contains(&device) {
            return IoResponse::err(DriverError::NotFound);
        }
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        self.pending
            .borrow_mut()
            .insert(sequence, (device, Pending::Waiting(None)));
        self.outbox.borrow_mut().push_back(Frame {
            sequence,
            message: Message::IoRequest(request),
        });
        // Removes the entry even if the caller gives up on the request.
        let _cleanup = Cleanup {
            port: self,
            sequence,
        };
        poll_fn(|cx| {
            let mut pending = self.pending.borrow_mut();
            match pending.remove(&sequence) {
                Some((_, Pending::Done(response))) => Poll::Ready(response),
                Some((_, Pending::Waiting(_))) | None => {
                    pending.insert(
                        sequence,
                        (device, Pending::Waiting(Some(cx.waker().clone()))),
                    );
                    Poll::Pending
                }
            }
        })
        .await
    }
}

struct Cleanup<'a> {
    port: &'a IpcPort,
    sequence: u64,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.port.pending.borrow_mut().remove(&self.sequence);
    }
}

fn io_error(error: DriverError, sector: u64) -> IoError {
    match error {
        DriverError::OutOfRange => IoError::OutOfRange {
            sector,
            sectors: 0,
            capacity_sectors: 0,
        },
        DriverError::Timeout => IoError::Timeout,
        DriverError::ReadOnly => IoError::ReadOnly,
        DriverError::Unsupported => IoError::Unsupported,
        DriverError::NotFound | DriverError::NotReady | DriverError::Aborted => {
            IoError::DeviceFailed
        }
        _ => IoError::Media { sector },
    }
}

/// A member disk served by another driver over IPC.
pub struct IpcMember {
    device_id: u32,
    capacity_sectors: u64,
    port: Rc<IpcPort>,
}

impl IpcMember {
    pub fn new(device_id: u32, capacity_sectors: u64, port: Rc<IpcPort>) -> Self {
        IpcMember {
            device_id,
            capacity_sectors,
            port,
        }
    }

    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    async fn do_read(&self, sector: u64, mut buf: Vec<u8>) -> Result<Vec<u8>, IoError> {
        let sectors = check_range(sector, buf.len(), self.capacity_sectors)?;
        let mut done = 0;
        while done < sectors {
            let n = (sectors - done).min(MAX_REQUEST_SECTORS);
            let at = sector + done;
            let response = self
                .port
                .call(IoRequest::read(self.device_id, at, n as u32))
                .await;
            response.status.map_err(|e| io_error(e, at))?;
            let off = done as usize * SECTOR_BYTES;
            let want = n as usize * SECTOR_BYTES;
            if response.data.len() != want {
                // A peer that answers with the wrong amount is broken; never pass on its bytes.
                return Err(IoError::Media { sector: at });
            }
            buf[off..off + want].copy_from_slice(&response.data);
            done += n;
        }
        Ok(buf)
    }

    async fn do_write(&self, sector: u64, data: Bytes, fua: bool) -> Result<(), IoError> {
        let sectors = check_range(sector, data.len(), self.capacity_sectors)?;
        let flags = if fua { IoFlags::FUA } else { IoFlags::empty() };
        let mut done = 0;
        while done < sectors {
            let n = (sectors - done).min(MAX_REQUEST_SECTORS);
            let at = sector + done;
            let off = done as usize * SECTOR_BYTES;
            let piece = data[off..off + n as usize * SECTOR_BYTES].to_vec();
            let response = self
                .port
                .call(IoRequest::write(self.device_id, at, piece, flags))
                .await;
            response.status.map_err(|e| io_error(e, at))?;
            done += n;
        }
        Ok(())
    }

    async fn do_flush(&self) -> Result<(), IoError> {
        let response = self.port.call(IoRequest::flush(self.device_id)).await;
        response.status.map_err(|e| io_error(e, 0))
    }

    async fn do_discard(&self, sector: u64, sectors: u64) -> Result<(), IoError> {
        check_sectors(sector, sectors, self.capacity_sectors)?;
        let mut done = 0;
        while done < sectors {
            let n = (sectors - done).min(u64::from(u32::MAX));
            let request = IoRequest {
                device_id: self.device_id,
                op: IoOp::Discard,
                flags: IoFlags::empty(),
                sector: sector + done,
                sector_count: n as u32,
                data: Vec::new(),
            };
            let response = self.port.call(request).await;
            match response.status {
                Ok(()) | Err(DriverError::Unsupported) => {}
                Err(e) => return Err(io_error(e, sector + done)),
            }
            done += n;
        }
        Ok(())
    }
}

crate::block_device_via_async_fns!(IpcMember, |d| d.capacity_sectors, {
    fn identity(&self) -> Option<crate::block::DeviceIdentity> {
        Some(crate::block::DeviceIdentity::Kernel {
            device_id: self.device_id,
        })
    }
});
