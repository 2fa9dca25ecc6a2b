//! Test support shared by the engine tests: an array created on faulty memory disks.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use super::Array;
use super::assemble::{CreateOptions, create};
use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES};
use crate::executor::Executor;
use crate::metadata::Level;
use crate::platform::faulty::{FaultConfig, FaultyDisk};
use crate::platform::memory::MemoryDisk;

/// What an engine test needs: the executor, the raw memory behind each member, the faulty
/// wrappers the array uses, and the array.
pub(crate) struct FaultyArray {
    pub exec: Executor,
    pub mem: Vec<Rc<MemoryDisk>>,
    pub disks: Vec<Rc<FaultyDisk>>,
    pub array: Rc<Array>,
}

/// `disks` as the named members `d0`, `d1`, … that `create` and `assemble` take.
pub(crate) fn named_members<D: BlockDevice + 'static>(
    disks: &[Rc<D>],
) -> Vec<(String, Rc<dyn BlockDevice>)> {
    disks
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("d{i}"), d.clone() as Rc<dyn BlockDevice>))
        .collect()
}

/// Creates an array of `count` members of `member_sectors` each (named `d0`, `d1`, …) on
/// faulty memory disks, with a little random latency if asked.
pub(crate) fn faulty_array(
    opts: CreateOptions,
    count: usize,
    member_sectors: u64,
    latency: bool,
) -> FaultyArray {
    let exec = Executor::new();
    let mem: Vec<Rc<MemoryDisk>> = (0..count)
        .map(|_| Rc::new(MemoryDisk::new(member_sectors)))
        .collect();
    let config = FaultConfig {
        min_latency_ns: if latency { 10 } else { 0 },
        max_latency_ns: if latency { 1000 } else { 0 },
        ..FaultConfig::default()
    };
    let disks: Vec<Rc<FaultyDisk>> = mem
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Rc::new(FaultyDisk::new(
                m.clone(),
                exec.clone(),
                i as u64,
                config.clone(),
            ))
        })
        .collect();
    let members = named_members(&disks);
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .expect("create finishes")
        .expect("create succeeds");
    // Its jobs run when one is due, as a RebuildManager runs them.
    crate::jobs::attach(&array);
    FaultyArray {
        exec,
        mem,
        disks,
        array,
    }
}

/// Create options for tests: fixed UUID, time and entropy.
pub(crate) fn options(
    level: Level,
    layout: Option<&str>,
    chunk_sectors: u32,
    name: &str,
) -> CreateOptions {
    CreateOptions {
        level,
        layout: layout.map(Into::into),
        chunk_sectors,
        name: name.into(),
        uuid: [3; 16],
        time_s: 1_000,
        entropy: 9,
        assume_clean: true,
    }
}

/// Writes `data` at `sector` and runs the executor until the write completes.
pub(crate) fn write_now(
    exec: &Executor,
    array: &Rc<Array>,
    sector: u64,
    data: Vec<u8>,
) -> Result<(), IoError> {
    let a = array.clone();
    exec.block_on(async move { a.write(sector, Bytes::from(data), false).await })
        .expect("write finishes")
}

/// Reads `sectors` sectors at `sector` and runs the executor until the read completes.
pub(crate) fn read_now(
    exec: &Executor,
    array: &Rc<Array>,
    sector: u64,
    sectors: usize,
) -> Result<Vec<u8>, IoError> {
    let a = array.clone();
    exec.block_on(async move {
        a.read(sector, alloc::vec![0u8; sectors * SECTOR_BYTES])
            .await
    })
    .expect("read finishes")
}

/// Recomputes P (and Q) of `stripe` from the data cells `cell(disk, stripe)` returns and
/// asserts the parity cells on the members match.
pub(crate) fn assert_stripe_parity(
    l: &crate::layout::Raid5Layout,
    stripe: u64,
    cell: impl Fn(usize, u64) -> Vec<u8>,
    what: &str,
) {
    let engine = crate::parity::ParityEngine::scalar();
    let data_disks: Vec<usize> = (0..l.data_disks())
        .map(|i| l.data_disk(stripe, i))
        .collect();
    let data: Vec<Vec<u8>> = data_disks.iter().map(|&d| cell(d, stripe)).collect();
    let views: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut p = alloc::vec![0u8; views[0].len()];
    match l.q_disk(stripe) {
        None => engine.xor(&views, &mut p),
        Some(qd) => {
            let slots: Vec<u8> = data_disks
                .iter()
                .map(|&d| l.syndrome_slot(stripe, d).unwrap())
                .collect();
            let mut q = alloc::vec![0u8; p.len()];
            engine.pq_gen(&views, &slots, &mut p, &mut q);
            assert!(
                cell(qd, stripe) == q,
                "{what}: Q of stripe {stripe} is stale"
            );
        }
    }
    assert!(
        cell(l.parity_disk(stripe), stripe) == p,
        "{what}: P of stripe {stripe} is stale"
    );
}

/// Runs the executor until `done` holds, waiting for the worker threads of file members
/// (their completions wake tasks from another thread) and moving the virtual clock on when
/// only timers are left. I/O timeouts must be off: the clock moves while workers run.
#[cfg(feature = "std")]
pub(crate) fn drive_until(exec: &Executor, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        exec.run_until_stalled();
        if done() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no progress for 60 s");
        std::thread::sleep(std::time::Duration::from_micros(200));
        if exec.run_until_stalled() == 0
            && let Some(at) = exec.next_deadline_ns()
        {
            exec.advance_to(at);
        }
    }
}

#[cfg(feature = "std")]
pub(crate) fn drive<T: 'static>(
    exec: &Executor,
    future: impl core::future::Future<Output = T> + 'static,
) -> T {
    let handle = exec.spawn(future);
    let out = core::cell::RefCell::new(None);
    drive_until(exec, || {
        if out.borrow().is_none() {
            *out.borrow_mut() = handle.try_take();
        }
        out.borrow().is_some()
    });
    out.into_inner().expect("finished")
}
