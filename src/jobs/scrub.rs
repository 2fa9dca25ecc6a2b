//! Scrub, the `check` and `repair` background jobs of every redundant level: the walk over
//! the array, one mirror region or a few parity stripes at a time, each under the exclusive
//! range/stripe lock (so a foreground write lands wholly before or after the comparison,
//! never in the middle of it), and the comparison of the redundancy found there. What is
//! compared, how mismatches are counted and what a repair rewrites is described with the
//! report (`crate::array::scrub`). Read errors met on the way are handled as in foreground
//! reads: the content is rebuilt from the redundancy and written back.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use super::{emit, set_job_done, throttle};
use crate::array::scrub::{
    BAD_REGIONS_KEPT, BadRegion, BlockKind, COMPARE_SECTORS, ScrubError, ScrubMode, ScrubOutcome,
    ScrubReport, WrongMember, region_to_stored,
};
use crate::array::{Array, CellRead, ChunkBuffers, JobKind, JobProgress, Member, MemberState};
use crate::block::{Bytes, IoError, SECTOR_BYTES};
use crate::executor::join_all;
use crate::layout::{ArrayLayout, Extent, Raid5Layout};
use crate::metadata::extension::{
    STORED_REGIONS_MAX, ScrubCheckpoint, StoredBadRegion, StoredRegions,
};
use crate::monitor::Event;
use crate::parity::locate::{Culprit, locate};

/// Array sectors of a mirror scrubbed under one lock (1 MiB).
const MIRROR_REGION_SECTORS: u64 = 2048;
/// Parity stripes scrubbed at once, each under its own lock: keeps every member busy while
/// a stripe is being compared, with buffers for a few stripes only.
const STRIPES_IN_FLIGHT: u64 = 4;

const COMPARE_BYTES: usize = COMPARE_SECTORS as usize * SECTOR_BYTES;

/// One block write a repair makes: member, chunk offset, content.
type CellWrite = (usize, u64, Vec<u8>);

/// The member in `slot` if it is in sync: a scrub compares only those.
fn active_member(array: &Array, slot: usize) -> Option<Rc<Member>> {
    array
        .member(slot)
        .filter(|m| m.state() == MemberState::Active)
}

/// Scrubs the whole array, counting mismatches; returns the report when done.
pub async fn check(array: &Array) -> Result<ScrubReport, ScrubError> {
    scrub(array, ScrubMode::Check).await
}

/// Scrubs the whole array and makes every mismatch consistent; returns the report.
/// (`repair` alone is the engine's read-error repair of one extent.)
pub async fn repair_mismatches(array: &Array) -> Result<ScrubReport, ScrubError> {
    scrub(array, ScrubMode::Repair).await
}

/// Runs a whole scrub of either kind and returns its report.
pub async fn scrub(array: &Array, mode: ScrubMode) -> Result<ScrubReport, ScrubError> {
    begin_scrub(array, mode, None)?;
    Ok(run_scrub(array, mode, 0).await)
}

/// Starts a scrub as a background task on the array's executor and returns at once;
/// follow it with [`Array::job`] and [`Array::scrub_report`].
pub fn start(array: &Rc<Array>, mode: ScrubMode) -> Result<(), ScrubError> {
    begin_scrub(array, mode, None)?;
    let me = array.clone();
    array.executor().spawn_detached(async move {
        run_scrub(&me, mode, 0).await;
    });
    Ok(())
}

/// Resumes, in the background, a scrub interrupted by a stop or a crash (its checkpoint
/// came from the extension record at assembly), as md resumes a resync. When it cannot
/// run now (a resync or rebuild goes first, the array is degraded) the checkpoint is
/// dropped: md does not resume an interrupted check after a recovery either. Returns
/// whether a scrub was resumed.
pub fn resume(array: &Rc<Array>) -> bool {
    let Some(cp) = array.scrub_state().checkpoint.get() else {
        return false;
    };
    if array.scrub_running() {
        return false;
    }
    let me = array.clone();
    let mode = if cp.repair {
        ScrubMode::Repair
    } else {
        ScrubMode::Check
    };
    if cp.cursor_sectors >= array.layout().array_sectors() {
        array.scrub_state().checkpoint.set(None);
        return false;
    }
    if let Err(e) = begin_scrub(array, mode, Some(cp)) {
        log::info!(
            "{}: interrupted {} not resumed ({e}); dropped",
            array.name(),
            mode.name()
        );
        array.scrub_state().checkpoint.set(None);
        return false;
    }
    log::info!(
        "{}: {} resumes at array sector {}",
        array.name(),
        mode.name(),
        cp.cursor_sectors
    );
    array.executor().spawn_detached(async move {
        run_scrub(&me, mode, cp.cursor_sectors).await;
    });
    true
}

/// Asks a running scrub to stop after the region it is on, forgetting its position.
/// Returns whether one runs. (A checkpoint of an interrupted scrub that has not resumed
/// is dropped with `set_scrub_checkpoint(None)` and a superblock update.)
pub fn cancel(array: &Array) -> bool {
    let running = array.scrub_running();
    if running {
        array.scrub_state().cancel.set(true);
    }
    running
}

/// Stops a running scrub and waits until it has let go of the array (before a stop:
/// no repair write may land after the array is marked clean). Unlike a cancel, the
/// scrub keeps its position: the next start resumes it.
pub async fn stop(array: &Array) {
    if array.scrub_running() {
        array.scrub_state().stopping.set(true);
        array.scrub_state().cancel.set(true);
        let _ = array.scrub_state().running.lock().await;
    }
}

/// Whether what is alive still has redundancy: every block survives one more loss.
fn can_scrub(array: &Array) -> Result<(), ScrubError> {
    if !array.is_redundant() {
        return Err(ScrubError::NotRedundant);
    }
    // A member being rebuilt (or a replacement being copied) holds data only below its
    // cursor: comparing against it would report false mismatches and a repair could
    // spread them. Recovery goes first, as in md.
    let rebuilding = array.slots().iter().flatten().any(|m| {
        m.state() == MemberState::Rebuilding
            || m.replacement()
                .is_some_and(|r| r.state() == MemberState::Rebuilding)
    });
    if rebuilding {
        return Err(ScrubError::Busy(JobKind::Rebuild));
    }
    let alive = array.alive();
    let missing = alive.iter().filter(|&&a| !a).count();
    let still_redundant = (0..alive.len()).filter(|&i| alive[i]).all(|extra| {
        let mut fewer = alive.clone();
        fewer[extra] = false;
        array.layout().survives(&fewer)
    });
    if missing > 0 && !still_redundant {
        return Err(ScrubError::Degraded { missing });
    }
    Ok(())
}

/// Validates and claims the job slot, from the start or from a checkpoint; the scrub
/// itself runs in [`run_scrub`].
fn begin_scrub(
    array: &Array,
    mode: ScrubMode,
    from: Option<ScrubCheckpoint>,
) -> Result<(), ScrubError> {
    if let Some(job) = array.job() {
        return Err(ScrubError::Busy(job.kind));
    }
    if array.needs_resync() {
        return Err(ScrubError::ResyncPending);
    }
    can_scrub(array)?;
    let now = array.executor().now_ns();
    let from_sector = from.map_or(0, |c| c.cursor_sectors);
    array.set_job(Some(JobProgress {
        kind: mode.job_kind(),
        done_sectors: from_sector,
        total_sectors: array.layout().array_sectors(),
        started_ns: now,
        now_ns: now,
        resumed_sectors: from_sector,
    }));
    array.scrub_state().cancel.set(false);
    array.scrub_state().stopping.set(false);
    let mut report = ScrubReport::new(mode);
    if let Some(c) = from {
        report.checked_sectors = c.cursor_sectors;
        report.mismatched_sectors = c.mismatched_sectors;
        report.repaired_sectors = c.repaired_sectors;
        report.read_errors_corrected = c.read_errors_corrected;
        let stored = array.scrub_state().checkpoint_regions.borrow();
        report.bad_regions = stored
            .listed
            .iter()
            .take(BAD_REGIONS_KEPT)
            .map(|r| region_from_stored(array, r))
            .collect();
        report.bad_regions_omitted = stored.omitted;
    } else {
        *array.scrub_state().checkpoint_regions.borrow_mut() = StoredRegions::default();
    }
    *array.scrub_state().report.borrow_mut() = Some(report);
    // A fresh scrub replaces an old position; a resumed one keeps it until its first
    // checkpoint.
    array.scrub_state().checkpoint.set(from);
    Ok(())
}

/// One monitoring event per mismatched stripe (or mirror extent), while the report
/// still lists every bad region: a badly damaged array must not flood the event ring.
fn emit_mismatch(array: &Array, sector: u64, sectors: u64, slot: Option<usize>) {
    let listing = array
        .scrub_state()
        .report
        .borrow()
        .as_ref()
        .is_some_and(|r| r.bad_regions_omitted == 0);
    if listing {
        emit(
            array,
            Event::MismatchFound {
                sector,
                sectors,
                slot: slot.map(|s| s as u32),
            },
        );
    }
}

fn note(array: &Array, f: impl FnOnce(&mut ScrubReport)) {
    if let Some(r) = array.scrub_state().report.borrow_mut().as_mut() {
        f(r);
    }
}

/// Takes the checkpoint of a scrub that has done everything below `cursor_sectors`,
/// with the bad regions it has listed so far (all below the cursor).
fn take_checkpoint(array: &Array, mode: ScrubMode, cursor_sectors: u64) {
    let checkpoint = checkpoint_at(array, mode, cursor_sectors);
    let regions = array
        .scrub_report()
        .map(|r| StoredRegions {
            listed: r
                .bad_regions
                .iter()
                .take(STORED_REGIONS_MAX)
                .map(region_to_stored)
                .collect(),
            omitted: r.bad_regions_omitted,
        })
        .unwrap_or_default();
    array.set_scrub_checkpoint(checkpoint, regions);
}

/// A stored bad region as the report lists it; the wrong member's name is its slot's
/// current one.
fn region_from_stored(array: &Array, r: &StoredBadRegion) -> BadRegion {
    BadRegion {
        stripe: r.stripe,
        array_sector: r.array_sector,
        member_sector: r.member_sector,
        sectors: r.sectors,
        wrong: r.wrong.map(|w| WrongMember {
            slot: w.slot as usize,
            name: array
                .slots()
                .get(w.slot as usize)
                .and_then(|m| m.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default(),
            block: match w.block {
                0 => BlockKind::Data,
                1 => BlockKind::P,
                _ => BlockKind::Q,
            },
            syndrome_slot: w.syndrome_slot,
        }),
        group: None,
    }
}

/// The checkpoint of a scrub that has done everything below `cursor_sectors`.
fn checkpoint_at(array: &Array, mode: ScrubMode, cursor_sectors: u64) -> Option<ScrubCheckpoint> {
    let report = array.scrub_report()?;
    Some(ScrubCheckpoint {
        repair: mode == ScrubMode::Repair,
        cursor_sectors,
        mismatched_sectors: report.mismatched_sectors,
        repaired_sectors: report.repaired_sectors,
        read_errors_corrected: report.read_errors_corrected,
    })
}

/// Walks the array, from `from_sector` (0, or a checkpoint's cursor), for a scrub
/// claimed by [`begin_scrub`].
async fn run_scrub(array: &Array, mode: ScrubMode, from_sector: u64) -> ScrubReport {
    let _running = array.scrub_state().running.lock().await;
    let total = array.layout().array_sectors();
    log::info!("{}: {} started", array.name(), mode.name());
    let repair = mode == ScrubMode::Repair;
    emit(array, Event::CheckStarted { repair });
    let mut outcome = ScrubOutcome::Finished;
    // Every cell of the stripes in flight, P and Q included.
    let cell_bytes = match array.layout() {
        ArrayLayout::Raid5(l) => l.cell_bytes(),
        _ => 0,
    };
    let pool = ChunkBuffers::new(
        STRIPES_IN_FLIGHT as usize * (array.layout().disk_count() + 2) * cell_bytes,
    );
    let mut sector = from_sector.min(total);
    let mut stripe = match array.layout() {
        ArrayLayout::Raid5(l) => sector / l.stripe_data_sectors(),
        _ => 0,
    };
    let mut regions_since_checkpoint = 0u32;
    let started_ns = array.executor().now_ns();
    while sector < total {
        if array.scrub_state().cancel.get() {
            outcome = ScrubOutcome::Cancelled;
            break;
        }
        if can_scrub(array).is_err() {
            outcome = ScrubOutcome::Aborted;
            break;
        }
        match array.layout() {
            ArrayLayout::Raid5(l) => {
                let end = (stripe + STRIPES_IN_FLIGHT).min(l.stripe_count());
                join_all(
                    (stripe..end)
                        .map(|s| scrub_stripe(array, l, s, mode, &pool))
                        .collect(),
                )
                .await;
                stripe = end;
                sector = if end == l.stripe_count() {
                    total
                } else {
                    (stripe * l.stripe_data_sectors()).min(total)
                };
            }
            _ => {
                let len = MIRROR_REGION_SECTORS.min(total - sector);
                scrub_mirror_region(array, sector, len, mode).await;
                sector += len;
            }
        }
        set_job_done(array, sector);
        // Paced as the other background jobs: priority and rate limit.
        throttle(array, sector - from_sector.min(total), started_ns).await;
        regions_since_checkpoint += 1;
        if regions_since_checkpoint >= array.policy().checkpoint_regions && sector < total {
            regions_since_checkpoint = 0;
            take_checkpoint(array, mode, sector);
            if let Err(e) = array.update_superblocks(|_| {}).await {
                log::warn!("{}: scrub checkpoint not recorded: {e}", array.name());
            }
        }
    }
    array.set_job(None);
    note(array, |r| r.outcome = outcome);
    if array.scrub_state().stopping.get() && outcome == ScrubOutcome::Cancelled {
        // Stopped with the array: resumes here at the next start (written by the
        // superblock update that marks the array clean).
        take_checkpoint(array, mode, sector);
    } else {
        array.scrub_state().checkpoint.set(None);
        if let Err(e) = array.update_superblocks(|_| {}).await {
            log::warn!("{}: scrub end not recorded: {e}", array.name());
        }
    }
    array.scrub_state().stopping.set(false);
    emit(
        array,
        Event::CheckFinished {
            repair,
            mismatches: array.mismatches(),
        },
    );
    let report = array.scrub_report().expect("a begun scrub has a report");
    let level = if report.mismatched_sectors > 0 {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "{}: {} {}: {} sectors checked, {} mismatched, {} repaired, {} read errors corrected",
        array.name(),
        mode.name(),
        outcome.name(),
        report.checked_sectors,
        report.mismatched_sectors,
        report.repaired_sectors,
        report.read_errors_corrected
    );
    report
}

async fn scrub_mirror_region(array: &Array, sector: u64, sectors: u64, mode: ScrubMode) {
    let _g = array.range_lock().lock(sector, sector + sectors).await;
    let extents = array.extents(sector, sectors);
    join_all(
        extents
            .iter()
            .map(|(s, ext)| scrub_extent(array, *s, ext, mode))
            .collect(),
    )
    .await;
}

/// Compares every live copy of one extent with the first readable one.
async fn scrub_extent(array: &Array, array_sector: u64, ext: &Extent, mode: ScrubMode) {
    let copies: Vec<(Rc<Member>, u64)> = ext
        .copies
        .iter()
        .filter_map(|c| active_member(array, c.disk_index).map(|m| (m.clone(), c.sector)))
        .collect();
    if copies.len() < 2 {
        note(array, |r| r.unchecked_sectors += ext.sectors);
        return;
    }
    let bytes = ext.sectors as usize * SECTOR_BYTES;
    let reads: Vec<_> = copies
        .iter()
        .map(|(m, s)| async move { m.read_data(*s, vec![0u8; bytes]).await })
        .collect();
    let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(copies.len());
    let mut unreadable: Vec<usize> = Vec::new();
    for (i, r) in join_all(reads).await.into_iter().enumerate() {
        match r {
            Ok(d) => contents.push(Some(d)),
            Err(e) => {
                let (m, s) = &copies[i];
                log::warn!(
                    "{}: read error on {} at member sector {s}: {e}",
                    array.name(),
                    m.name
                );
                if matches!(e, IoError::DeviceFailed) {
                    array.fail_member_rc(m).await;
                } else {
                    unreadable.push(i);
                }
                contents.push(None);
            }
        }
    }
    let Some(source) = contents.iter().position(Option::is_some) else {
        note(array, |r| r.unchecked_sectors += ext.sectors);
        return;
    };
    let good = Bytes::from(contents[source].take().expect("the source was read"));
    for &i in &unreadable {
        let (m, s) = &copies[i];
        if m.state() == MemberState::Active {
            array.rewrite(m, *s, ext.sectors, good.clone()).await;
            note(array, |r| r.read_errors_corrected += ext.sectors);
        }
    }
    let compared = contents.iter().filter(|c| c.is_some()).count();
    if compared == 0 && unreadable.is_empty() {
        // Only the source is left (the others failed now): nothing to compare with.
        note(array, |r| r.unchecked_sectors += ext.sectors);
        return;
    }
    note(array, |r| r.checked_sectors += ext.sectors);
    // Per compare unit: which copies differ from the source.
    let units = bytes.div_ceil(COMPARE_BYTES);
    let mut writes: Vec<(usize, usize, usize)> = Vec::new(); // (copy, from, to) bytes
    for u in 0..units {
        let from = u * COMPARE_BYTES;
        let to = (from + COMPARE_BYTES).min(bytes);
        let mut differs = false;
        for (i, c) in contents.iter().enumerate() {
            let Some(c) = c else { continue };
            if c[from..to] != good[from..to] {
                differs = true;
                match writes.last_mut() {
                    Some(w) if w.0 == i && w.2 == from => w.2 = to,
                    _ => writes.push((i, from, to)),
                }
            }
        }
        if differs {
            let sectors = ((to - from) / SECTOR_BYTES) as u64;
            let off = (from / SECTOR_BYTES) as u64;
            note(array, |r| {
                r.mismatched_sectors += sectors;
                r.add_region(BadRegion {
                    stripe: None,
                    array_sector: array_sector + off,
                    member_sector: copies[0].1 + off,
                    sectors,
                    wrong: None,
                    group: None,
                });
            });
        }
    }
    let extent_mismatched: u64 = (0..units)
        .filter(|&u| {
            let (from, to) = (u * COMPARE_BYTES, ((u + 1) * COMPARE_BYTES).min(bytes));
            writes.iter().any(|w| w.1 < to && from < w.2)
        })
        .map(|u| ((COMPARE_BYTES.min(bytes - u * COMPARE_BYTES)) / SECTOR_BYTES) as u64)
        .sum();
    if extent_mismatched > 0 {
        emit_mismatch(array, array_sector, extent_mismatched, None);
    }
    if mode == ScrubMode::Repair && !writes.is_empty() {
        if array.mark_dirty().await.is_err() {
            return;
        }
        // Units rewritten on several copies are counted once.
        let mut fixed = vec![false; units];
        let jobs: Vec<_> = writes
            .iter()
            .map(|&(i, from, to)| {
                let (m, s) = copies[i].clone();
                let data = good.slice(from..to);
                let at = s + (from / SECTOR_BYTES) as u64;
                async move { (m.clone(), m.write_data(at, data, false).await) }
            })
            .collect();
        for ((m, r), &(_, from, to)) in join_all(jobs).await.into_iter().zip(&writes) {
            match r {
                Ok(()) => {
                    for f in &mut fixed[from / COMPARE_BYTES..to.div_ceil(COMPARE_BYTES)] {
                        *f = true;
                    }
                }
                Err(e) => {
                    log::warn!("{}: repair write failed on {}: {e}", array.name(), m.name);
                    // No space: the mismatch stays (reported), the member stays in.
                    if e.fails_member() {
                        array.fail_member_rc(&m).await;
                    }
                }
            }
        }
        let sectors: u64 = (0..units)
            .filter(|&u| fixed[u])
            .map(|u| ((COMPARE_BYTES.min(bytes - u * COMPARE_BYTES)) / SECTOR_BYTES) as u64)
            .sum();
        note(array, |r| r.repaired_sectors += sectors);
    }
}

/// Reads one member's cell sector by sector after a read error, rebuilding and
/// rewriting the sectors that fail. `None` when a sector cannot be rebuilt.
async fn scrub_reread_cell(
    array: &Array,
    l: &Raid5Layout,
    stripe: u64,
    disk: usize,
) -> Option<Vec<u8>> {
    let chunk = l.chunk_sectors();
    let mut out = vec![0u8; l.cell_bytes()];
    for off in 0..chunk {
        let direct = match array.read_cells(l, stripe, off, 1, &[disk]).await.pop() {
            Some((_, CellRead::Ok(data))) => Some(data),
            _ => None,
        };
        let data = match direct {
            Some(d) => d,
            None => {
                let rebuilt = array.reconstruct_cell(l, stripe, off, 1, disk).await.ok()?;
                if let Some(m) = active_member(array, disk) {
                    let at = l.member_sector(stripe, off);
                    array.rewrite(&m, at, 1, Bytes::from(rebuilt.clone())).await;
                    note(array, |r| r.read_errors_corrected += 1);
                }
                rebuilt
            }
        };
        let at = off as usize * SECTOR_BYTES;
        out[at..at + SECTOR_BYTES].copy_from_slice(&data);
    }
    Some(out)
}

/// Checks (and repairs) one parity stripe, holding it alone, in buffers from `pool`.
async fn scrub_stripe(
    array: &Array,
    l: &Raid5Layout,
    stripe: u64,
    mode: ScrubMode,
    pool: &ChunkBuffers,
) {
    let bytes = l.cell_bytes();
    let mut cells: Vec<Option<Vec<u8>>> = (0..l.disk_count())
        .map(|_| Some(pool.take(bytes)))
        .collect();
    let mut p = pool.take(bytes);
    let mut q = pool.take(if l.q_disk(stripe).is_some() { bytes } else { 0 });
    scrub_stripe_in(array, l, stripe, mode, &mut cells, &mut p, &mut q).await;
    for buf in cells.into_iter().flatten().chain([p, q]) {
        pool.give(buf);
    }
}

/// [`scrub_stripe`] with its buffers: `cells` (one per member) are read into,
/// `p` and `q` receive the recomputed parity.
async fn scrub_stripe_in(
    array: &Array,
    l: &Raid5Layout,
    stripe: u64,
    mode: ScrubMode,
    cells: &mut [Option<Vec<u8>>],
    p: &mut [u8],
    q: &mut [u8],
) {
    let _g = array.range_lock().lock(stripe, stripe + 1).await;
    // The scrub reads and rewrites member cells behind the stripe cache: forget the
    // stripe now and again when done (before the lock is let go).
    array.stripe_cache_invalidate(stripe);
    let _forget = ForgetStripe(array, stripe);
    let n = l.disk_count();
    let k = l.data_disks();
    let sds = l.stripe_data_sectors();
    let at = l.member_sector(stripe, 0);
    let reads: Vec<_> = (0..n)
        .map(|d| {
            let member = active_member(array, d);
            let buf = if member.is_some() {
                cells[d].take()
            } else {
                None
            };
            async move {
                match (member, buf) {
                    (Some(m), Some(buf)) => {
                        let r = m.read_data(at, buf).await;
                        (d, Some(m), r)
                    }
                    _ => (d, None, Err(IoError::DeviceFailed)),
                }
            }
        })
        .collect();
    let mut errored = Vec::new();
    for (d, member, r) in join_all(reads).await {
        match (member, r) {
            (_, Ok(data)) => cells[d] = Some(data),
            (None, Err(_)) => cells[d] = None,
            (Some(m), Err(e)) => {
                log::warn!(
                    "{}: read error on {} at member sector {at}: {e}",
                    array.name(),
                    m.name
                );
                if matches!(e, IoError::DeviceFailed) {
                    array.fail_member_rc(&m).await;
                } else {
                    errored.push(d);
                }
            }
        }
    }
    for d in errored {
        cells[d] = scrub_reread_cell(array, l, stripe, d).await;
        if cells[d].is_none() && active_member(array, d).is_some() {
            // A sector neither readable nor rebuildable: comparing would blame parity
            // for a lost block.
            note(array, |r| r.unchecked_sectors += sds);
            return;
        }
    }
    let gone: Vec<usize> = (0..n).filter(|&d| cells[d].is_none()).collect();
    let p_disk = l.parity_disk(stripe);
    let q_disk = l.q_disk(stripe);
    let data_disks: Vec<usize> = (0..k).map(|i| l.data_disk(stripe, i)).collect();
    let slots: Vec<u8> = match q_disk {
        Some(_) => data_disks
            .iter()
            .map(|&d| {
                l.syndrome_slot(stripe, d)
                    .expect("a data member has a syndrome slot")
            })
            .collect(),
        None => Vec::new(),
    };
    let engine = array.parity_engine();
    let bytes = p.len();
    match gone.as_slice() {
        [] => {}
        [g] if q_disk.is_some() && *g != p_disk && Some(*g) != q_disk => {
            // A data member is missing: rebuild it from P, then Q is what can be checked.
            let others: Vec<&[u8]> = (0..n)
                .filter(|&d| d != *g && Some(d) != q_disk)
                .map(|d| cells[d].as_deref().expect("every other cell was read"))
                .collect();
            let mut rebuilt = vec![0u8; bytes];
            engine.xor(&others, &mut rebuilt);
            cells[*g] = Some(rebuilt);
        }
        [_] if q_disk.is_some() => {}
        _ => {
            note(array, |r| r.unchecked_sectors += sds);
            return;
        }
    }
    let missing = gone.first().copied();
    let data: Vec<&[u8]> = data_disks
        .iter()
        .map(|&d| cells[d].as_deref().expect("data present or rebuilt"))
        .collect();
    if q_disk.is_some() {
        engine.pq_gen(&data, &slots, p, q);
    } else {
        engine.xor(&data, p);
    }
    let (p, q): (&[u8], &[u8]) = (p, q);
    // Which parities can be compared: those present and not used to rebuild a member.
    let check_p = missing.is_none() || missing == q_disk;
    let check_q = q_disk.is_some() && (missing.is_none() || missing != q_disk);
    let stored = |d: Option<usize>| d.and_then(|d| cells[d].as_deref());
    let stored_p = stored(Some(p_disk)).filter(|_| check_p);
    let stored_q = stored(q_disk).filter(|_| check_q);
    let zero = [0u8; COMPARE_BYTES];
    let mut writes: Vec<CellWrite> = Vec::new();
    let mut repaired = 0u64;
    // For the monitoring event: mismatched sectors of this stripe, and the one member
    // they are all blamed on (`Some(None)` once blame is unknown or split).
    let mut stripe_mismatched = 0u64;
    let mut blamed: Option<Option<usize>> = None;
    note(array, |r| r.checked_sectors += sds);
    for u in 0..bytes / COMPARE_BYTES {
        let range = u * COMPARE_BYTES..(u + 1) * COMPARE_BYTES;
        let same = |stored: Option<&[u8]>, fresh: &[u8]| {
            stored.is_none_or(|s| s[range.clone()] == fresh[range.clone()])
        };
        if same(stored_p, p) && (q_disk.is_none() || same(stored_q, q)) {
            continue;
        }
        let delta = |stored: Option<&[u8]>, fresh: &[u8]| -> Vec<u8> {
            match stored {
                Some(s) => s[range.clone()]
                    .iter()
                    .zip(&fresh[range.clone()])
                    .map(|(a, b)| a ^ b)
                    .collect(),
                None => zero.to_vec(),
            }
        };
        let dp = delta(stored_p, p);
        let dq = if q_disk.is_some() {
            delta(stored_q, q)
        } else {
            zero.to_vec()
        };
        let culprit = if q_disk.is_some() && missing.is_none() {
            locate(&dp, &dq, &slots)
        } else if dp.iter().chain(&dq).any(|&b| b != 0) {
            Culprit::Unknown
        } else {
            Culprit::Consistent
        };
        let wrong_disk = match culprit {
            Culprit::Consistent => continue,
            Culprit::P if q_disk.is_some() => Some((p_disk, BlockKind::P, None)),
            Culprit::Q => q_disk.map(|d| (d, BlockKind::Q, None)),
            Culprit::Data(i) => Some((data_disks[i], BlockKind::Data, Some(slots[i]))),
            Culprit::P | Culprit::Unknown => None,
        };
        let offset = (u as u64) * COMPARE_SECTORS;
        let wrong = wrong_disk.map(|(d, block, syndrome_slot)| WrongMember {
            slot: d,
            name: array.member(d).map(|m| m.name.clone()).unwrap_or_default(),
            block,
            syndrome_slot,
        });
        stripe_mismatched += COMPARE_SECTORS;
        let this = wrong_disk.map(|w| w.0);
        blamed = match blamed {
            None => Some(this),
            Some(b) if b == this => Some(b),
            Some(_) => Some(None),
        };
        note(array, |r| {
            r.mismatched_sectors += COMPARE_SECTORS;
            r.add_region(BadRegion {
                stripe: Some(stripe),
                array_sector: stripe * sds,
                member_sector: l.member_sector(stripe, offset),
                sectors: COMPARE_SECTORS,
                wrong,
                group: None,
            });
        });
        if mode != ScrubMode::Repair {
            continue;
        }
        repaired += COMPARE_SECTORS;
        let mut push = |d: usize, content: Vec<u8>| match writes.last_mut() {
            Some(w) if w.0 == d && w.1 + (w.2.len() / SECTOR_BYTES) as u64 == offset => {
                w.2.extend_from_slice(&content);
            }
            _ => writes.push((d, offset, content)),
        };
        match culprit {
            Culprit::Data(i) => {
                let d = data_disks[i];
                let fixed: Vec<u8> = cells[d].as_deref().expect("data read")[range.clone()]
                    .iter()
                    .zip(&dp)
                    .map(|(a, b)| a ^ b)
                    .collect();
                push(d, fixed);
            }
            Culprit::Q => {
                if let Some(qd) = q_disk {
                    push(qd, q[range.clone()].to_vec());
                }
            }
            _ => {
                // P alone, or md's regeneration when the culprit is unknown: every
                // parity that was compared is rewritten from the data.
                if check_p {
                    push(p_disk, p[range.clone()].to_vec());
                }
                if let (true, Some(qd)) = (check_q, q_disk) {
                    push(qd, q[range.clone()].to_vec());
                }
            }
        }
    }
    if stripe_mismatched > 0 {
        emit_mismatch(array, stripe * sds, stripe_mismatched, blamed.flatten());
    }
    if writes.is_empty() {
        return;
    }
    // Runs per member were built in unit order; P and Q runs interleave, so merge again.
    writes.sort_by_key(|w| (w.0, w.1));
    let mut merged: Vec<CellWrite> = Vec::new();
    for w in writes {
        match merged.last_mut() {
            Some(m) if m.0 == w.0 && m.1 + (m.2.len() / SECTOR_BYTES) as u64 == w.1 => {
                m.2.extend_from_slice(&w.2);
            }
            _ => merged.push(w),
        }
    }
    if array.mark_dirty().await.is_err() {
        return;
    }
    let jobs: Vec<_> = merged
        .into_iter()
        .filter_map(|(d, offset, content)| {
            active_member(array, d).map(|m| async move {
                let at = l.member_sector(stripe, offset);
                (
                    m.clone(),
                    m.write_data(at, Bytes::from(content), false).await,
                )
            })
        })
        .collect();
    let mut all_written = true;
    for (m, r) in join_all(jobs).await {
        if let Err(e) = r {
            log::warn!("{}: repair write failed on {}: {e}", array.name(), m.name);
            if e.fails_member() {
                array.fail_member_rc(&m).await;
            }
            all_written = false;
        }
    }
    if all_written {
        note(array, |r| r.repaired_sectors += repaired);
    }
}

/// Forgets a stripe's cached cells when dropped.
struct ForgetStripe<'a>(&'a Array, u64);

impl Drop for ForgetStripe<'_> {
    fn drop(&mut self) {
        self.0.stripe_cache_invalidate(self.1);
    }
}
