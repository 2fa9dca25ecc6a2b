//! Resync after an unclean shutdown: every block is read from one live copy and written to
//! the others (parity levels: parity recomputed), so members a crash left disagreeing agree
//! again.
//!
//! Foreground I/O stays correct throughout: each region is resynced under an exclusive range
//! lock, so a write to it either lands before (and is copied) or after (and reaches every
//! copy itself). Progress is reported for `raid status`. The position is checkpointed in
//! `resync_offset` (array sectors for the copy levels, member sectors for the parity levels)
//! when the array is stopped, and while no write has made the array dirty since it started,
//! so a restart resumes.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use super::{emit, set_job_done, throttle};
use crate::array::{
    Array, ArrayError, Health, JobKind, JobProgress, Member, MemberState, SharedCell,
};
use crate::block::{Bytes, SECTOR_BYTES};
use crate::executor::join_all;
use crate::layout::{ArrayLayout, Raid5Layout};
use crate::monitor::Event;

/// Array sectors resynced under one lock (1 MiB).
const REGION_SECTORS: u64 = 2048;

/// Makes every copy of every block of `array` equal to the first live copy (parity levels:
/// recomputes parity), from the checkpoint on. Returns true when done (afterwards a clean
/// stop records the array as in sync), false when stopped (the position is kept for
/// `mark_clean` to record). A member that fails a write is failed as in foreground I/O; a
/// block no copy can be read from is left as it is and counted (it returns errors to
/// readers anyway).
pub async fn resync(array: &Array) -> Result<bool, ArrayError> {
    if !array.is_redundant() {
        array.set_resynced();
        return Ok(true);
    }
    let (total, unit) = match array.layout() {
        // Parity levels count in member sectors, as md does: whole stripes.
        ArrayLayout::Raid5(l) => (l.stripe_count() * l.chunk_sectors(), l.chunk_sectors()),
        layout => (layout.array_sectors(), 1),
    };
    let resume = (array.resync_cursor().min(total) / unit) * unit;
    if resume > 0 {
        log::info!("{}: resync resumes at {resume}", array.name());
    }
    let started = array.executor().now_ns();
    array.set_job(Some(JobProgress {
        kind: JobKind::Resync,
        done_sectors: resume,
        total_sectors: total,
        started_ns: started,
        now_ns: started,
        resumed_sectors: resume,
    }));
    emit(array, Event::ResyncStarted);
    let mut unreadable = 0u64;
    // The first region a member had no space for: the resync is to be redone from there.
    let mut no_space_at: Option<u64> = None;
    let mut sector = resume;
    let mut regions = 0u32;
    while sector < total {
        if array.jobs().stop.get() {
            if array.take_resync_again() {
                // A stall during this resync: the next one starts over.
                array.set_resync_cursor(0);
            }
            array.set_job(None);
            return Ok(false);
        }
        throttle(array, sector - resume, started).await;
        let len = REGION_SECTORS.max(unit).min(total - sector);
        let region = resync_region(array, sector, len).await;
        unreadable += region.unreadable;
        if region.no_space {
            no_space_at.get_or_insert(sector);
        }
        sector += len;
        array.set_resync_cursor(sector);
        set_job_done(array, sector);
        if array.health() == Health::Failed {
            array.set_job(None);
            return Err(ArrayError::ArrayFailed);
        }
        regions += 1;
        if regions >= array.policy().checkpoint_regions.max(1) && !array.is_dirty_on_disk() {
            regions = 0;
            checkpoint_resync(array).await;
        }
    }
    array.set_job(None);
    if let Some(at) = no_space_at {
        // Pending from there: retried when the jobs next start (a later write refused for
        // space, `raid add`, a restart: the position is recorded at a clean stop).
        log::warn!(
            "{}: resync incomplete: a member had no space (from {at}); retried later",
            array.name()
        );
        array.set_resync_cursor(at);
        return Ok(false);
    }
    emit(
        array,
        Event::ResyncFinished {
            unreadable_extents: unreadable,
        },
    );
    if unreadable > 0 {
        log::error!(
            "{}: resync finished; {unreadable} extents had no readable copy",
            array.name()
        );
    } else {
        log::info!("{}: resync finished", array.name());
    }
    if array.take_resync_again() {
        // A stall during this resync may have torn writes behind its cursor.
        array.set_resync_cursor(0);
        return Ok(true);
    }
    array.set_resynced();
    Ok(true)
}

/// Records the resync position, valid only while no write made the array dirty (a torn
/// write below the position would otherwise be skipped after a crash).
async fn checkpoint_resync(array: &Array) {
    if array.flush_members().await.is_err() {
        return;
    }
    let _ = array
        .update_superblocks(|sb| {
            if !array.is_dirty_on_disk() {
                sb.resync_offset_sectors = array.resync_cursor();
            }
        })
        .await;
}

/// Resyncs one region: how many extents no copy could be read from, and whether a member
/// had no space for a copy.
async fn resync_region(array: &Array, sector: u64, sectors: u64) -> RegionSync {
    if let ArrayLayout::Raid5(l) = array.layout() {
        // Member sectors to the array sectors of the same stripes.
        let first = sector / l.chunk_sectors();
        let end = (sector + sectors).div_ceil(l.chunk_sectors());
        let sds = l.stripe_data_sectors();
        return parity_resync_region(array, l, first * sds, (end - first) * sds).await;
    }
    let _g = array.range_lock().lock(sector, sector + sectors).await;
    let mut out = RegionSync::default();
    for (_, ext) in array.extents(sector, sectors) {
        let copies: Vec<(Rc<Member>, u64)> = ext
            .copies
            .iter()
            .filter_map(|c| array.member(c.disk_index).map(|m| (m, c.sector)))
            .collect();
        if copies.len() < 2 {
            continue;
        }
        let bytes = ext.sectors as usize * SECTOR_BYTES;
        let mut source = None;
        for (i, (m, s)) in copies.iter().enumerate() {
            // A member being rebuilt is a source only where it is rebuilt already.
            if m.state() != MemberState::Active && *s + ext.sectors > m.recovery_offset_sectors() {
                continue;
            }
            if let Ok(d) = m.read_data(*s, vec![0u8; bytes]).await {
                source = Some((i, Bytes::from(d)));
                break;
            }
        }
        let Some((from, data)) = source else {
            out.unreadable += 1;
            continue;
        };
        let writes: Vec<_> = copies
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != from)
            .map(|(_, (m, s))| {
                let data = data.clone();
                async move { (m.clone(), m.write_data(*s, data, false).await) }
            })
            .collect();
        for (member, result) in join_all(writes).await {
            match result {
                Ok(()) => {}
                Err(e) if !e.fails_member() => out.no_space = true,
                Err(_) => array.fail_member_rc(&member).await,
            }
        }
    }
    out
}

/// What the resync of one region left.
#[derive(Clone, Copy, Debug, Default)]
struct RegionSync {
    /// Extents (stripes) no copy of the data could be read from: left as they were.
    unreadable: u64,
    /// A member had no space for what the resync wrote: the region is still to do.
    no_space: bool,
}

/// How the resync of one stripe ended.
enum StripeSync {
    Done,
    /// Some data could not be read: left as it was.
    Unreadable,
    /// A member had no space for the parity: still to do.
    NoSpace,
}

/// Resync of the parity levels: recomputes the parity of every stripe whose first sector
/// lies in `[sector, sector + sectors)` from its data, one stripe at a time under the
/// stripe lock. Returns how many stripes had unreadable data, and whether a member had no
/// space for the new parity.
async fn parity_resync_region(
    array: &Array,
    l: &Raid5Layout,
    sector: u64,
    sectors: u64,
) -> RegionSync {
    let sds = l.stripe_data_sectors();
    let first = sector.div_ceil(sds);
    let end = (sector + sectors).div_ceil(sds).min(l.stripe_count());
    let mut out = RegionSync::default();
    for stripe in first..end {
        match parity_resync_stripe(array, l, stripe).await {
            StripeSync::Done => {}
            StripeSync::Unreadable => out.unreadable += 1,
            StripeSync::NoSpace => out.no_space = true,
        }
    }
    out
}

async fn parity_resync_stripe(array: &Array, l: &Raid5Layout, stripe: u64) -> StripeSync {
    let _g = array.range_lock().lock(stripe, stripe + 1).await;
    array.stripe_cache_invalidate(stripe);
    let k = l.data_disks();
    let chunk = l.chunk_sectors();
    let data_disks: Vec<usize> = (0..k).map(|i| l.data_disk(stripe, i)).collect();
    let mut cells: Vec<Option<Bytes>> = vec![None; l.disk_count()];
    for (d, r) in array
        .read_cells_shared(l, stripe, 0, chunk, &data_disks)
        .await
    {
        if let SharedCell::Ok(data) = r {
            cells[d] = Some(data);
        }
    }
    if data_disks.iter().any(|&d| cells[d].is_none()) {
        // Data that cannot be read can only come from the parity this resync distrusts:
        // leave the stripe as it is.
        return StripeSync::Unreadable;
    }
    let engine = array.parity_engine();
    let bytes = l.cell_bytes();
    let data: Vec<&[u8]> = data_disks
        .iter()
        .map(|&d| cells[d].as_deref().expect("checked above"))
        .collect();
    let mut p = vec![0u8; bytes];
    let mut writes: Vec<(usize, Bytes)> = Vec::new();
    match l.q_disk(stripe) {
        Some(qd) => {
            let slots: Vec<u8> = data_disks
                .iter()
                .map(|&d| {
                    l.syndrome_slot(stripe, d)
                        .expect("a data member has a syndrome slot")
                })
                .collect();
            let mut q = vec![0u8; bytes];
            engine.pq_gen(&data, &slots, &mut p, &mut q);
            writes.push((qd, Bytes::from(q)));
        }
        None => engine.xor(&data, &mut p),
    }
    writes.push((l.parity_disk(stripe), Bytes::from(p)));
    let at = l.member_sector(stripe, 0);
    let jobs: Vec<_> = writes
        .into_iter()
        .filter_map(|(d, b)| {
            array
                .member(d)
                .map(|m| async move { (m.clone(), m.write_data(at, b, false).await) })
        })
        .collect();
    let mut out = StripeSync::Done;
    for (m, r) in join_all(jobs).await {
        match r {
            Ok(()) => {}
            Err(e) if !e.fails_member() => out = StripeSync::NoSpace,
            Err(_) => array.fail_member_rc(&m).await,
        }
    }
    out
}
