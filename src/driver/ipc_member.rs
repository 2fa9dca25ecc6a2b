//! `IpcMember`: a member disk reached through Orion IPC. Each request becomes an `IoRequest`
//! frame to the disk's driver; the `IoResponse` with the same sequence completes it.
//!
//! Bounded (DESIGN.md §3): at most [`MAX_MEMBER_REQUESTS`] requests are in flight through a
//! port, and at most [`MAX_DEVICE_REQUESTS`] of them to one device, so the pending table and
//! the member requests in the outbox cannot grow with the load. A request over either cap
//! waits for a place (it does not fail); a device that is taken away meanwhile fails it.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::{Poll, Waker};

use orion_driver::{DriverError, Frame, IoFlags, IoOp, IoRequest, IoResponse, Message};

use crate::block::{Bytes, IoError, SECTOR_BYTES, check_range, check_sectors};
use crate::executor::Semaphore;

/// Largest member request sent in one frame (the protocol allows 8 MiB; 1 MiB keeps frames
/// small and requests parallel).
const MAX_REQUEST_SECTORS: u64 = 2048;

/// Member requests in flight through one port (every member disk of the driver) at once;
/// more wait for a place. The pending-completion table never holds more entries.
pub const MAX_MEMBER_REQUESTS: usize = 256;

/// Member requests in flight to one device at once (its queue depth); more wait. Below
/// [`MAX_MEMBER_REQUESTS`], so a disk whose driver stops answering cannot take every place
/// of the port and stall the other disks' requests until their I/O timeout.
pub const MAX_DEVICE_REQUESTS: usize = 64;

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
    /// Places in flight for the whole port ([`MAX_MEMBER_REQUESTS`]).
    slots: Rc<Semaphore>,
    /// Places in flight per device ([`MAX_DEVICE_REQUESTS`]), made on a device's first
    /// request and dropped when it is taken away.
    device_slots: RefCell<BTreeMap<u32, Rc<Semaphore>>>,
    /// The most entries the pending table has held at once.
    peak: Cell<usize>,
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
            slots: Semaphore::new(MAX_MEMBER_REQUESTS),
            device_slots: RefCell::new(BTreeMap::new()),
            peak: Cell::new(0),
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

    /// Fails `device_id`'s requests in flight with `error` at once (its answers, should they
    /// still come, match nothing).
    pub fn fail_device(&self, device_id: u32, error: DriverError) {
        let sequences: Vec<u64> = self
            .pending
            .borrow()
            .iter()
            .filter(|(_, (device, _))| *device == device_id)
            .map(|(s, _)| *s)
            .collect();
        for s in sequences {
            self.complete(s, IoResponse::err(error));
        }
    }

    /// The kernel took device `device_id` away: its requests in flight fail now (the disk's
    /// driver will never answer them), and so do those waiting for a place and every later
    /// one, without being sent.
    pub fn device_gone(&self, device_id: u32) {
        self.gone.borrow_mut().insert(device_id);
        self.fail_device(device_id, DriverError::NotFound);
        // Waiters for a place re-check and give up.
        let device_slots = self.device_slots.borrow_mut().remove(&device_id);
        if let Some(slots) = device_slots {
            slots.wake_all();
        }
        self.slots.wake_all();
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

    /// The most entries the pending table has held at once (never above
    /// [`MAX_MEMBER_REQUESTS`]).
    pub fn peak_in_flight(&self) -> usize {
        self.peak.get()
    }

    async fn call(&self, request: IoRequest) -> IoResponse {
        let device = request.device_id;
        if self.gone.borrow().contains(&device) {
            return IoResponse::err(DriverError::NotFound);
        }
        let device_slots = self
            .device_slots
            .borrow_mut()
            .entry(device)
            .or_insert_with(|| Semaphore::new(MAX_DEVICE_REQUESTS))
            .clone();
        // Taken away while this waited (even if a device came back under its id since: it
        // is another disk, with its own places).
        let gone = || {
            self.gone.borrow().contains(&device)
                || !self
                    .device_slots
                    .borrow()
                    .get(&device)
                    .is_some_and(|s| Rc::ptr_eq(s, &device_slots))
        };
        // The device's place first, then the port's: requests queued behind a busy device
        // hold none of the port's places while they wait.
        let Some(_device_place) = device_slots.acquire_unless(gone).await else {
            return IoResponse::err(DriverError::NotFound);
        };
        let Some(_place) = self.slots.acquire_unless(gone).await else {
            return IoResponse::err(DriverError::NotFound);
        };
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        let held = {
            let mut pending = self.pending.borrow_mut();
            pending.insert(sequence, (device, Pending::Waiting(None)));
            pending.len()
        };
        self.peak.set(self.peak.get().max(held));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockDevice;
    use crate::executor::Executor;
    use alloc::vec;

    type Results = Rc<RefCell<Vec<(u32, Result<Vec<u8>, IoError>)>>>;

    struct Rig {
        exec: Executor,
        outbox: Rc<RefCell<VecDeque<Frame>>>,
        port: Rc<IpcPort>,
        results: Results,
    }

    impl Rig {
        fn new() -> Self {
            let outbox = Rc::new(RefCell::new(VecDeque::new()));
            Rig {
                exec: Executor::new(),
                port: Rc::new(IpcPort::new(outbox.clone())),
                outbox,
                results: Rc::new(RefCell::new(Vec::new())),
            }
        }

        /// Starts a one-sector read of `device`; its result lands in `results`.
        fn read(&self, device: u32, sector: u64) {
            let member = IpcMember::new(device, 1 << 20, self.port.clone());
            let results = self.results.clone();
            self.exec.spawn_detached(async move {
                let r = member.read(sector, vec![0u8; SECTOR_BYTES]).await;
                results.borrow_mut().push((device, r));
            });
        }

        /// Member requests sent and not answered, per device.
        fn sent(&self) -> BTreeMap<u32, usize> {
            let mut by_device = BTreeMap::new();
            for f in self.outbox.borrow().iter() {
                let Message::IoRequest(r) = &f.message else {
                    panic!("not a member request: {:?}", f.message)
                };
                *by_device.entry(r.device_id).or_insert(0) += 1;
            }
            by_device
        }

        /// Answers the oldest request sent: the sector's number in its first byte.
        fn answer_one(&self) -> bool {
            let Some(f) = self.outbox.borrow_mut().pop_front() else {
                return false;
            };
            let Message::IoRequest(r) = f.message else {
                panic!("not a member request")
            };
            let mut data = vec![0u8; SECTOR_BYTES];
            data[0] = r.sector as u8;
            assert!(self.port.complete(f.sequence, IoResponse::ok(data)));
            true
        }
    }

    /// A flood over many devices: never more than the port's cap in flight, nor more than
    /// a device's cap to one device; every request is sent once a place frees, and all
    /// complete with their data.
    #[test]
    fn a_flood_waits_for_places_and_never_exceeds_the_caps() {
        let rig = Rig::new();
        let per_device = 150u64;
        for device in 0..8u32 {
            for sector in 0..per_device {
                rig.read(device, sector);
            }
        }
        rig.exec.run_until_stalled();
        let sent = rig.sent();
        assert_eq!(sent.values().sum::<usize>(), MAX_MEMBER_REQUESTS);
        assert!(sent.values().all(|&n| n <= MAX_DEVICE_REQUESTS), "{sent:?}");
        assert_eq!(rig.port.in_flight(), MAX_MEMBER_REQUESTS);
        while rig.answer_one() {
            rig.exec.run_until_stalled();
            assert!(rig.port.in_flight() <= MAX_MEMBER_REQUESTS);
            assert!(
                rig.sent().values().all(|&n| n <= MAX_DEVICE_REQUESTS),
                "a device over its cap"
            );
        }
        assert_eq!(rig.port.peak_in_flight(), MAX_MEMBER_REQUESTS);
        assert_eq!(rig.port.in_flight(), 0);
        let results = rig.results.borrow();
        assert_eq!(results.len(), 8 * per_device as usize);
        assert!(results.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(rig.exec.task_count(), 0);
    }

    /// One busy device takes at most its own cap: another device's request goes out at
    /// once.
    #[test]
    fn one_busy_device_leaves_places_for_the_others() {
        let rig = Rig::new();
        for sector in 0..500 {
            rig.read(1, sector);
        }
        rig.exec.run_until_stalled();
        assert_eq!(rig.sent().get(&1), Some(&MAX_DEVICE_REQUESTS));
        rig.read(2, 0);
        rig.exec.run_until_stalled();
        assert_eq!(rig.sent().get(&2), Some(&1));
    }

    /// A device taken away: its requests in flight and those still waiting for a place
    /// fail at once; a late answer matches nothing; later requests fail without a frame;
    /// another device's requests are untouched.
    #[test]
    fn a_gone_device_fails_its_requests_in_flight_and_waiting_at_once() {
        let rig = Rig::new();
        for sector in 0..(MAX_DEVICE_REQUESTS as u64 + 20) {
            rig.read(7, sector);
        }
        rig.read(8, 3);
        rig.exec.run_until_stalled();
        let late = rig.outbox.borrow().front().unwrap().sequence;
        assert_eq!(rig.port.in_flight(), MAX_DEVICE_REQUESTS + 1);
        rig.port.device_gone(7);
        rig.exec.run_until_stalled();
        {
            let results = rig.results.borrow();
            assert_eq!(results.len(), MAX_DEVICE_REQUESTS + 20);
            assert!(
                results
                    .iter()
                    .all(|(d, r)| *d == 7 && *r == Err(IoError::DeviceFailed))
            );
        }
        assert_eq!(rig.port.in_flight(), 1, "device 8's request still waits");
        assert!(
            !rig.port
                .complete(late, IoResponse::ok(vec![0u8; SECTOR_BYTES]))
        );
        // Later requests to it fail without being sent.
        rig.outbox.borrow_mut().retain(|f| match &f.message {
            Message::IoRequest(r) => r.device_id != 7,
            _ => true,
        });
        rig.read(7, 0);
        rig.exec.run_until_stalled();
        assert_eq!(rig.sent().get(&7), None);
        assert_eq!(
            rig.results.borrow().last().map(|(d, r)| (*d, r.clone())),
            Some((7, Err(IoError::DeviceFailed)))
        );
        // Device 8 is served as before.
        assert!(rig.answer_one());
        rig.exec.run_until_stalled();
        let results = rig.results.borrow();
        let (device, r) = results.last().unwrap();
        assert_eq!(*device, 8);
        assert_eq!(r.as_ref().unwrap()[0], 3);
    }

    /// `fail_device` fails one device's requests with the error given, not another's.
    #[test]
    fn fail_device_fails_only_that_device() {
        let rig = Rig::new();
        rig.read(1, 0);
        rig.read(2, 0);
        rig.exec.run_until_stalled();
        rig.port.fail_device(1, DriverError::Timeout);
        rig.exec.run_until_stalled();
        assert_eq!(
            *rig.results.borrow(),
            vec![(1, Err(IoError::Timeout))],
            "only device 1's request ended"
        );
        assert_eq!(rig.port.in_flight(), 1);
    }
}
