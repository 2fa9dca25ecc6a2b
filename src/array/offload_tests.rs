//! Tests of the offload capability (`BlockDevice::offload`): a parity rebuild onto a member
//! that offers it runs as its jobs, and falls back to reads and writes through the engine
//! when a source does not offer it.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;

use super::assemble::create;
use super::test_rig::options;
use super::{Array, Health, MemberState};
use crate::block::{
    BlockDevice, Bytes, IoError, IoFuture, Offload, OffloadSource, SECTOR_BYTES, check_range,
};
use crate::executor::Executor;
use crate::metadata::Level;
use crate::parity::ParityEngine;
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

const MEMBER_SECTORS: u64 = 8 * 2048;

/// Sectors held where a job "on another thread" can read them.
struct Sectors(spin::Mutex<Vec<u8>>);

impl OffloadSource for Sectors {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        let data = self.0.lock();
        let at = offset as usize;
        let src = data.get(at..at + buf.len()).ok_or(IoError::Media {
            sector: offset / SECTOR_BYTES as u64,
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A memory disk that offers [`Offload`], running each job at once, and counts them.
struct OffloadDisk {
    sectors: Arc<Sectors>,
    jobs: Cell<u32>,
}

impl OffloadDisk {
    fn new() -> Rc<Self> {
        Rc::new(OffloadDisk {
            sectors: Arc::new(Sectors(spin::Mutex::new(vec![
                0;
                MEMBER_SECTORS as usize
                    * SECTOR_BYTES
            ]))),
            jobs: Cell::new(0),
        })
    }
}

impl BlockDevice for OffloadDisk {
    fn capacity_sectors(&self) -> u64 {
        MEMBER_SECTORS
    }

    fn read(&self, sector: u64, mut buf: Vec<u8>) -> IoFuture<'_, Vec<u8>> {
        let r = check_range(sector, buf.len(), MEMBER_SECTORS).and_then(|_| {
            self.sectors
                .read_exact_at(&mut buf, sector * SECTOR_BYTES as u64)
        });
        Box::pin(async move { r.map(|()| buf) })
    }

    fn write(&self, sector: u64, data: Bytes, _fua: bool) -> IoFuture<'_, ()> {
        let r = check_range(sector, data.len(), MEMBER_SECTORS).map(|_| {
            let at = sector as usize * SECTOR_BYTES;
            self.sectors.0.lock()[at..at + data.len()].copy_from_slice(&data);
        });
        Box::pin(async move { r })
    }

    fn flush(&self) -> IoFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn discard(&self, sector: u64, sectors: u64) -> IoFuture<'_, ()> {
        let r = crate::block::check_sectors(sector, sectors, MEMBER_SECTORS);
        Box::pin(async move { r })
    }

    fn offload(&self) -> Option<&dyn Offload> {
        Some(self)
    }
}

impl Offload for OffloadDisk {
    fn source(&self) -> Arc<dyn OffloadSource> {
        self.sectors.clone()
    }

    fn write_xor_of<'a>(
        &'a self,
        sector: u64,
        sources: &[(&dyn BlockDevice, u64)],
        bytes: usize,
        engine: ParityEngine,
    ) -> Option<IoFuture<'a, ()>> {
        let sources: Vec<(Arc<dyn OffloadSource>, u64)> = sources
            .iter()
            .map(|&(dev, s)| dev.offload().map(|o| (o.source(), s)))
            .collect::<Option<_>>()?;
        self.jobs.set(self.jobs.get() + 1);
        let run = || -> Result<(), IoError> {
            check_range(sector, bytes, MEMBER_SECTORS)?;
            let mut cells = vec![vec![0u8; bytes]; sources.len()];
            for ((source, s), cell) in sources.iter().zip(cells.iter_mut()) {
                source.read_exact_at(cell, s * SECTOR_BYTES as u64)?;
            }
            let (first, rest) = cells.split_first_mut().ok_or(IoError::Unsupported)?;
            let others: Vec<&[u8]> = rest.iter().map(|c| c.as_slice()).collect();
            engine.xor_into(&others, first);
            let at = sector as usize * SECTOR_BYTES;
            self.sectors.0.lock()[at..at + bytes].copy_from_slice(first);
            Ok(())
        };
        let r = run();
        Some(Box::pin(async move { r }))
    }
}

/// A RAID5 of four members (each `plain` one a memory disk, the others [`OffloadDisk`]s)
/// filled with random data, and that data.
fn raid5(exec: &Executor, plain: &[usize]) -> (Rc<Array>, Vec<u8>) {
    let members: Vec<(String, Rc<dyn BlockDevice>)> = (0..4)
        .map(|i| {
            let dev: Rc<dyn BlockDevice> = if plain.contains(&i) {
                Rc::new(MemoryDisk::new(MEMBER_SECTORS))
            } else {
                OffloadDisk::new()
            };
            (format!("d{i}"), dev)
        })
        .collect();
    let e = exec.clone();
    let opts = options(Level::Raid5, None, 128, "o");
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .unwrap()
        .unwrap();
    crate::jobs::attach(&array);
    let mut model = vec![0u8; array.capacity_sectors() as usize * SECTOR_BYTES];
    SplitMix64::new(23).fill(&mut model);
    let (a, data) = (array.clone(), Bytes::from(model.clone()));
    exec.block_on(async move { a.write(0, data, false).await })
        .unwrap()
        .unwrap();
    (array, model)
}

/// Fails `d1`, lets the spare `spare` rebuild in its place, then fails `d0` (reads need the
/// rebuilt member) and checks every byte.
fn rebuild_onto(exec: &Executor, array: &Rc<Array>, model: &[u8], spare: Rc<dyn BlockDevice>) {
    let a = array.clone();
    exec.block_on(async move { a.add_device("s".into(), spare).await })
        .unwrap()
        .unwrap();
    let a = array.clone();
    exec.block_on(async move { a.fail_named("d1").await })
        .unwrap()
        .unwrap();
    exec.run_until_idle();
    assert_eq!(array.health(), Health::Optimal, "the rebuild finished");
    let target = array.slots()[1].clone().unwrap();
    assert_eq!(
        (target.name.as_str(), target.state()),
        ("s", MemberState::Active)
    );
    let a = array.clone();
    exec.block_on(async move { a.fail_named("d0").await })
        .unwrap()
        .unwrap();
    let (a, n) = (array.clone(), model.len());
    let got = exec
        .block_on(async move { a.read(0, vec![0u8; n]).await })
        .unwrap()
        .unwrap();
    assert!(got == model, "the array's content after the rebuild");
}

/// Every member offers the jobs: the rebuild runs as jobs of the new member, one per
/// stripe, and restores every byte.
#[test]
fn parity_rebuild_runs_as_jobs_of_a_member_that_offers_them() {
    let exec = Executor::new();
    let (array, model) = raid5(&exec, &[]);
    let spare = OffloadDisk::new();
    rebuild_onto(&exec, &array, &model, spare.clone());
    let stripes = array.member_used_sectors() / 128;
    assert_eq!(u64::from(spare.jobs.get()), stripes, "one job per stripe");
}

/// A source that does not offer the jobs (a plain memory disk): the new member's job is
/// refused and the rebuild goes through the engine, with the same result.
#[test]
fn parity_rebuild_falls_back_when_a_source_offers_no_jobs() {
    let exec = Executor::new();
    let (array, model) = raid5(&exec, &[2]);
    let spare = OffloadDisk::new();
    rebuild_onto(&exec, &array, &model, spare.clone());
    assert_eq!(spare.jobs.get(), 0, "no job ran");
}
