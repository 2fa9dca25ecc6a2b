//! Rebuild: a member being rebuilt (a spare taking a failed member's slot, a stale member
//! re-added, a replacement copied from the member it replaces) is walked from its
//! `recovery_offset` on, region by region, each region under the array's lock of the range
//! or stripes it covers; the position is checkpointed in the member's `recovery_offset`
//! (with md's `RECOVERY_OFFSET` feature bit) every few regions and when stopped, after a
//! flush of the member, so a stop or crash resumes there. A parity rebuild keeps a few
//! regions in flight ([`Window`]) and retires them in order.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::{Context, Poll};

use super::{emit, set_job_done, throttle};
use crate::array::{
    Array, ArrayError, ChunkBuffers, Health, JobKind, JobProgress, Member, MemberState,
    RebuildPriority,
};
use crate::block::{BlockDevice, Bytes, IoError, Offload, SECTOR_BYTES};
use crate::executor::join_all;
use crate::layout::{ArrayLayout, Raid5Layout};
use crate::monitor::Event;

/// Member sectors rebuilt under one lock at low priority or under a rate limit (1 MiB), so a
/// region holds up foreground I/O briefly; parity levels round to whole stripes. Also the
/// region of a parity rebuild at any priority: several are kept in flight instead, which
/// keeps the cells between their read, their xor and their write in the CPU caches
/// (`benches/rebuild.sh`: 8 MiB regions, one or two at a time, ran at half the speed).
const REGION_SECTORS: u64 = 2048;
/// The region of a copy level's rebuild at normal and high priority with no rate limit
/// (8 MiB), and the unit `checkpoint_regions` counts then: fewer lock and throttle rounds.
const BULK_REGION_SECTORS: u64 = 8 * REGION_SECTORS;
/// Regions of a parity array's rebuild in flight at normal and high priority with no rate
/// limit: the next regions' reads run while one is xored and written, so neither the
/// members nor the engine wait for the other.
const PARITY_REGIONS_IN_FLIGHT: usize = 3;
/// Regions in flight when they run as worker jobs (host files): they hold no engine
/// buffers, and with only a few, the jobs (all started at once on the worker pool) finish
/// together and leave the cores idle until the engine starts the next ones.
const OFFLOADED_REGIONS_IN_FLIGHT: usize = 8;
/// What the buffers of a parity rebuild's cells keep between uses.
const CELL_POOL_MAX_BYTES: usize = 64 << 20;

/// Rebuilds `target` in `slot` of `array` from its `recovery_offset` on; with `replacing`,
/// target is the replacement of that member (which serves meanwhile and is copied from).
/// True when finished (the member is then in sync, recorded; a replaced member becomes a
/// spare), false when stopped or the target failed; an error when data needed for it could
/// not be read.
pub(super) async fn rebuild_member(
    array: &Array,
    slot: usize,
    target: &Rc<Member>,
    replacing: Option<&Rc<Member>>,
) -> Result<bool, ArrayError> {
    let total = array.member_used_sectors();
    let unit = match array.layout() {
        ArrayLayout::Raid5(l) => l.chunk_sectors(),
        _ => 1,
    };
    let resume = (target.recovery_offset_sectors().min(total) / unit) * unit;
    target.set_recovery_start(resume);
    log::info!(
        "{}: rebuild of {} in slot {slot} starts at member sector {resume}",
        array.name(),
        target.name
    );
    let started = array.executor().now_ns();
    array.set_job(Some(JobProgress {
        kind: JobKind::Rebuild,
        done_sectors: resume,
        total_sectors: total,
        started_ns: started,
        now_ns: started,
        resumed_sectors: resume,
    }));
    // By slot: a replacement holds no slot of its own.
    emit(
        array,
        Event::RebuildStarted {
            slot: slot as u32,
            member: target.name.clone(),
        },
    );
    let parity = matches!(array.layout(), ArrayLayout::Raid5(_));
    let offloaded = parity && replacing.is_none() && offload_target(target).is_some();
    let pool = ChunkBuffers::new(CELL_POOL_MAX_BYTES);
    let mut window = Window::default();
    // Where the next region starts; `recovery_offset` trails it by the regions in flight.
    let mut next = resume;
    // Member sectors retired since the last checkpoint, and the end of the last region.
    let mut since_checkpoint = 0u64;
    let mut checkpointed_at = resume;
    loop {
        let stopped = if target.state() != MemberState::Rebuilding {
            Some(Ok(false))
        } else if array.jobs().stop.get() {
            None
        } else if array.health() == Health::Failed {
            Some(Err(ArrayError::ArrayFailed))
        } else {
            if next >= total && window.is_empty() {
                break;
            }
            let p = array.policy();
            let gentle =
                p.rebuild_priority == RebuildPriority::Low || p.rebuild_rate_bytes_per_s > 0;
            // Copy levels move the cursor inside a region: one at a time.
            let depth = if parity && !gentle {
                if offloaded {
                    OFFLOADED_REGIONS_IN_FLIGHT
                } else {
                    PARITY_REGIONS_IN_FLIGHT
                }
            } else {
                1
            };
            if next < total && window.len() < depth {
                window.drive(throttle(array, next - resume, started)).await;
                // Small regions when the job is to give way or keep to a rate.
                let region = if gentle || parity {
                    REGION_SECTORS
                } else {
                    BULK_REGION_SECTORS
                };
                let region = region.max(unit) / unit * unit;
                let end = (next + region).min(total);
                // The member replaced stops being a source if it failed (then target took
                // its slot and is rebuilt from the others).
                let source = replacing.filter(|o| o.state() == MemberState::Active);
                let at = next;
                let pool = &pool;
                let region_done: Region<'_> = match array.layout() {
                    ArrayLayout::Raid5(l) => Box::pin(async move {
                        // Where the general path starts: past what worker jobs did.
                        let from = match source {
                            Some(_) => at / unit,
                            None => match rebuild_stripes_offloaded(
                                array,
                                l,
                                (at / unit, end / unit),
                                target,
                                slot,
                            )
                            .await
                            {
                                Ok(()) => return true,
                                Err(stripe) => stripe,
                            },
                        };
                        rebuild_stripes(array, l, (from, end / unit), target, slot, source, pool)
                            .await
                            .is_ok()
                    }),
                    _ => Box::pin(rebuild_copies(array, slot, target, at, end, source)),
                };
                window.push(end, region_done);
                next = end;
                continue;
            }
            let (end, ok) = window.retire().await.expect("a region is in flight");
            if !ok {
                // Regions after a failed one may have been written, but the cursor stays
                // before it.
                while window.retire().await.is_some() {}
                if target.state() != MemberState::Rebuilding {
                    array.set_job(None);
                    return Ok(false);
                }
                checkpoint_rebuild(array, target).await;
                array.set_job(None);
                return Err(ArrayError::RebuildSourceUnreadable {
                    sector: target.recovery_offset_sectors(),
                });
            }
            if parity {
                // Every region before this one is written: retired in order.
                target.set_recovery_offset(end);
            }
            set_job_done(array, target.recovery_offset_sectors());
            // Every `checkpoint_regions` regions of the size the priority asks (bulk for a
            // parity job too, whose regions are small to keep them in flight).
            since_checkpoint += end - checkpointed_at;
            checkpointed_at = end;
            let every = if gentle {
                REGION_SECTORS
            } else {
                BULK_REGION_SECTORS
            };
            if since_checkpoint >= u64::from(p.checkpoint_regions.max(1)) * every.max(unit) {
                since_checkpoint = 0;
                // Regions in flight go on; the cursor does not move meanwhile, so the
                // checkpoint covers only data the flush made durable.
                window.drive(checkpoint_rebuild(array, target)).await;
            }
            continue;
        };
        // Stopping: let the regions in flight finish, moving the cursor over those that are
        // written and in order, then record it (a stop) or give up.
        let mut in_order = true;
        while let Some((end, ok)) = window.retire().await {
            in_order &= ok;
            if in_order && parity {
                target.set_recovery_offset(end);
            }
        }
        match stopped {
            None => {
                if target.state() == MemberState::Rebuilding {
                    checkpoint_rebuild(array, target).await;
                }
                array.set_job(None);
                return Ok(false);
            }
            Some(r) => {
                array.set_job(None);
                return r;
            }
        }
    }
    if !array.complete_rebuild(slot, target, replacing).await {
        array.set_job(None);
        return Ok(false);
    }
    log::info!("{}: rebuild of {} finished", array.name(), target.name);
    emit(
        array,
        Event::RebuildFinished {
            slot: slot as u32,
            member: target.name.clone(),
        },
    );
    array.check_health();
    array.set_job(None);
    Ok(true)
}

/// Records a rebuild position: the member's data up to it is flushed first, and only then
/// is the position durable (every superblock update records the durable one).
async fn checkpoint_rebuild(array: &Array, target: &Rc<Member>) {
    let at = target.recovery_offset_sectors();
    if target.within_timeout(target.dev.flush()).await.is_err() {
        array.fail_member_rc(target).await;
        return;
    }
    // The cursor may have moved back meanwhile (a write the member missed).
    target.set_recovery_durable(at);
    let _ = array.update_superblocks(|_| {}).await;
}

/// Rebuilds stripes `[first, end)` of a parity array whose members offer [`Offload`] (the
/// host's files) with one job per cell ([`Offload::write_xor_of`]: reads, xor and write off
/// the engine), under the same stripe lock as [`rebuild_stripes`]. Applies where every cell
/// P covers is readable and every device offers the jobs; there are no retries or
/// per-sector fallback.
/// `Err` gives the first stripe not rebuilt: the caller does the rest the general way
/// (stripes after it that were written are simply written again).
pub(super) async fn rebuild_stripes_offloaded(
    array: &Array,
    l: &Raid5Layout,
    (first, end): (u64, u64),
    target: &Rc<Member>,
    slot: usize,
) -> Result<(), u64> {
    let Some(target_jobs) = offload_target(target) else {
        return Err(first);
    };
    let _g = array.range_lock().lock(first, end).await;
    for stripe in first..end {
        array.stripe_cache_invalidate(stripe);
    }
    let chunk = l.chunk_sectors();
    let bytes = l.cell_bytes();
    let engine = array.parity_engine();
    let jobs: Vec<_> = (first..end)
        .map(|stripe| async move {
            let q = l.q_disk(stripe);
            let at = l.member_sector(stripe, 0);
            let members: Vec<Rc<Member>> = (0..l.disk_count())
                .filter(|&d| d != slot && Some(d) != q)
                .map(|d| array.readable(d, at, chunk))
                .collect::<Option<_>>()
                .filter(|_| q != Some(slot))
                .ok_or(stripe)?;
            let sources: Vec<(&dyn BlockDevice, u64)> = members
                .iter()
                .map(|m| (&*m.dev, m.data_offset() + at))
                .collect();
            let job = target_jobs
                .write_xor_of(target.data_offset() + at, &sources, bytes, engine)
                .ok_or(stripe)?;
            let started_ns = target.monitor().start();
            let r = target.within_timeout(job).await;
            // Counted as the reads and the write they stand for.
            for m in &members {
                m.count(|c| c.reads += 1);
                m.monitor()
                    .finish(false, bytes as u64, started_ns, r.is_ok());
            }
            target.count(|c| c.writes += 1);
            target
                .monitor()
                .finish(true, bytes as u64, started_ns, r.is_ok());
            if matches!(r, Err(IoError::Timeout)) {
                // The job may still write after the general path redid the stripe and a
                // client wrote over it: the target is failed, as for a write timeout.
                array.fail_member_rc(target).await;
            }
            r.map_err(|_| stripe)
        })
        .collect();
    lowest_failed_stripe(join_all(jobs).await)
}

/// The jobs `target` runs off the engine when a parity rebuild onto it can use them
/// ([`rebuild_stripes_offloaded`]). Not for a member being replaced: a write to it must
/// reach its replacement too, which the general path does.
fn offload_target(target: &Member) -> Option<&dyn Offload> {
    if target.replacement().is_some() {
        return None;
    }
    target.dev.offload()
}

/// Copy levels: rebuilds member sectors `[at, end)` of `target` from other copies, one
/// contiguous piece at a time, each under the exclusive lock of its array range; the cursor
/// moves past each piece under that lock. False when a piece had no readable source or the
/// target failed.
async fn rebuild_copies(
    array: &Array,
    slot: usize,
    target: &Rc<Member>,
    at: u64,
    end: u64,
    source: Option<&Rc<Member>>,
) -> bool {
    let layout = array.layout();
    // RAID10 maps contiguously within a chunk; RAID1 everywhere.
    let chunk = match layout {
        ArrayLayout::Raid10(_) => array
            .superblock()
            .map(|sb| u64::from(sb.chunk_sectors.max(1))),
        _ => None,
    };
    let mut y = at;
    while y < end {
        let mut len = match chunk {
            Some(c) => (end - y).min(c - y % c),
            None => end - y,
        };
        let Some((_, x)) = layout.unmap(slot, y) else {
            // Holds no data (e.g. past the used area).
            target.set_recovery_offset(y + len);
            y += len;
            continue;
        };
        let Some(ext) = layout.map(x) else {
            target.set_recovery_offset(y + len);
            y += len;
            continue;
        };
        assert!(
            ext.copies
                .iter()
                .any(|c| c.disk_index == slot && c.sector == y),
            "unmap and map agree"
        );
        len = len.min(ext.sectors);
        let _g = array.range_lock().lock(x, x + len).await;
        let bytes = len as usize * SECTOR_BYTES;
        let mut data = match source {
            Some(src) => src.read_data(y, vec![0u8; bytes]).await.ok(),
            None => None,
        };
        for c in ext.copies.iter().filter(|c| c.disk_index != slot) {
            if data.is_some() {
                break;
            }
            if let Some(m) = array.readable(c.disk_index, c.sector, len)
                && let Ok(d) = m.read_data(c.sector, vec![0u8; bytes]).await
            {
                data = Some(d);
                break;
            }
        }
        let Some(data) = data else {
            log::error!(
                "{}: rebuild: no readable copy of array sectors {x}+{len}",
                array.name()
            );
            return false;
        };
        if target
            .write_data(y, Bytes::from(data), false)
            .await
            .is_err()
        {
            array.fail_member_rc(target).await;
            return false;
        }
        target.set_recovery_offset(y + len);
        y += len;
    }
    true
}

/// Parity levels: recomputes the cells of member `target` for stripes `[first, end)` from
/// the other members (or copies them from `source`, the member it replaces, where that
/// reads) and writes them to it, holding those stripes alone. Every buffer comes from and
/// goes back to `pool`. The caller moves the target's `recovery_offset` past the stripes
/// once every region before them is written too (foreground writes reach the target
/// whatever its cursor, so a rebuilt stripe stays right while it waits). On failure, the
/// first stripe that could not be rebuilt.
async fn rebuild_stripes(
    array: &Array,
    l: &Raid5Layout,
    (first, end): (u64, u64),
    target: &Rc<Member>,
    slot: usize,
    source: Option<&Rc<Member>>,
    pool: &ChunkBuffers,
) -> Result<(), u64> {
    let _g = array.range_lock().lock(first, end).await;
    for stripe in first..end {
        array.stripe_cache_invalidate(stripe);
    }
    let chunk = l.chunk_sectors();
    let bytes = l.cell_bytes();
    let jobs: Vec<_> = (first..end)
        .map(|stripe| async move {
            let at = l.member_sector(stripe, 0);
            let copied = match source {
                Some(src) => src.read_data(at, pool.take(bytes)).await.ok(),
                None => None,
            };
            let data = match copied {
                Some(d) => d,
                None => match rebuild_cell_fast(array, l, stripe, slot, pool).await {
                    Some(d) => d,
                    None => array
                        .reconstruct_cell(l, stripe, 0, chunk, slot)
                        .await
                        .map_err(|_| stripe)?,
                },
            };
            let data = Bytes::from(data);
            if target.write_data(at, data.clone(), false).await.is_err() {
                array.fail_member_rc(target).await;
                return Err(stripe);
            }
            pool.give_back(data);
            Ok(())
        })
        .collect();
    lowest_failed_stripe(join_all(jobs).await)
}

/// The target's whole cell of `stripe` as the xor of the cells P covers (every member but
/// the target and Q), read whole into pooled buffers and xored in place into the first: no
/// zero-filled buffer, no copy. `None` when that does not apply (the target holds Q, a
/// source is not in sync there, a read failed): the caller then takes the general path,
/// which retries, counts errors and goes sector by sector.
async fn rebuild_cell_fast(
    array: &Array,
    l: &Raid5Layout,
    stripe: u64,
    target: usize,
    pool: &ChunkBuffers,
) -> Option<Vec<u8>> {
    let q = l.q_disk(stripe);
    if q == Some(target) {
        return None;
    }
    let chunk = l.chunk_sectors();
    let at = l.member_sector(stripe, 0);
    let sources: Vec<Rc<Member>> = (0..l.disk_count())
        .filter(|&d| d != target && Some(d) != q)
        .map(|d| array.readable(d, at, chunk))
        .collect::<Option<_>>()?;
    let reads: Vec<_> = sources
        .iter()
        .map(|m| m.read_data_probe(at, pool.take(l.cell_bytes())))
        .collect();
    let mut cells = Vec::with_capacity(sources.len());
    let mut all_read = true;
    for r in join_all(reads).await {
        match r {
            Ok(buf) => cells.push(buf),
            Err(_) => all_read = false,
        }
    }
    if !all_read || cells.is_empty() {
        for buf in cells {
            pool.give(buf);
        }
        return None;
    }
    let mut cells = cells.into_iter();
    let mut out = cells.next()?;
    let rest: Vec<Vec<u8>> = cells.collect();
    if !rest.is_empty() {
        let srcs: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
        array.parity_engine().xor_into(&srcs, &mut out);
    }
    for buf in rest {
        pool.give(buf);
    }
    Some(out)
}

/// One region of a rebuild in flight: true when it is written.
type Region<'a> = Pin<Box<dyn Future<Output = bool> + 'a>>;

/// A rebuild's regions in flight, oldest first; they are polled together but retired in
/// order, so the cursor only ever moves over regions that are written and have no gap
/// before them.
#[derive(Default)]
struct Window<'a> {
    /// End sector, the region while it runs, its outcome once it has one.
    regions: VecDeque<(u64, Option<Region<'a>>, Option<bool>)>,
}

impl<'a> Window<'a> {
    fn len(&self) -> usize {
        self.regions.len()
    }

    fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    fn push(&mut self, end_sectors: u64, region: Region<'a>) {
        self.regions.push_back((end_sectors, Some(region), None));
    }

    fn poll_regions(&mut self, cx: &mut Context<'_>) {
        for (_, region, outcome) in self.regions.iter_mut() {
            if let Some(r) = region
                && let Poll::Ready(ok) = r.as_mut().poll(cx)
            {
                *outcome = Some(ok);
                // Dropped at once: it releases its stripe lock.
                *region = None;
            }
        }
    }

    /// Runs `other` to completion while the regions go on (they finish, but none retires).
    async fn drive<T>(&mut self, other: impl Future<Output = T>) -> T {
        let mut other = pin!(other);
        poll_fn(|cx| {
            self.poll_regions(cx);
            other.as_mut().poll(cx)
        })
        .await
    }

    /// Waits for the oldest region: its end and whether it was written; `None` when none is
    /// in flight.
    async fn retire(&mut self) -> Option<(u64, bool)> {
        poll_fn(|cx| {
            self.poll_regions(cx);
            match self.regions.front() {
                None => Poll::Ready(None),
                Some((end, _, Some(ok))) => {
                    let done = (*end, *ok);
                    self.regions.pop_front();
                    Poll::Ready(Some(done))
                }
                Some(_) => Poll::Pending,
            }
        })
        .await
    }
}

/// The per-stripe results of a batch: `Err` with the lowest stripe that failed, if any did.
fn lowest_failed_stripe(results: Vec<Result<(), u64>>) -> Result<(), u64> {
    results
        .into_iter()
        .filter_map(Result::err)
        .min()
        .map_or(Ok(()), Err)
}
