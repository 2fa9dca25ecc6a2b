//! The I/O engine of the parity levels (RAID 4, 5, 6): reads with reconstruction and repair,
//! full-stripe / read-modify-write / reconstruct-write under stripe locks, degraded I/O.
//!
//! Locking: for a parity layout the array's `RangeLock` is taken over stripe indices, not
//! array sectors (the copy-based paths, which lock sectors, never run on such an array).
//! Writes hold their stripes exclusively, reads share them, a repair takes its stripe alone.
//!
//! Memory: a request allocates buffers for the member cells of the stripes it touches (at
//! most a chunk per member per stripe), never anything that scales with the array.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use super::gather::{PieceState, Registration, Segment};
use super::{Array, Member};
use crate::block::{BlockDevice, Bytes, IoError, SECTOR_BYTES, check_range};
use crate::executor::join_all;
use crate::layout::{ArrayLayout, Raid5Layout};
use crate::parity::Lost;

/// A run of member cells that failed a read on a live member and is to be rewritten.
/// What a parity write of one band left behind.
struct BandOutcome {
    /// Data indices whose content is lost.
    lost: Vec<usize>,
    /// A member had no space: the band is not written everywhere.
    no_space: bool,
}

struct StripeRepair {
    stripe: u64,
    offset_sectors: u64,
    sectors: u64,
    disk_index: usize,
}

/// Splits `[sector, sector + sectors)` into per-stripe groups of chunk segments.
fn stripe_segments(l: &Raid5Layout, sector: u64, sectors: u64) -> Vec<(u64, Vec<Segment>)> {
    let mut groups: Vec<(u64, Vec<Segment>)> = Vec::new();
    let end = sector + sectors;
    let mut s = sector;
    while s < end {
        let at = l
            .stripe_of(s)
            .expect("a checked request lies inside the array");
        let len = (l.chunk_sectors() - at.offset_sectors).min(end - s);
        let seg = Segment {
            data_index: at.data_index,
            offset_sectors: at.offset_sectors,
            sectors: len,
            buf_offset: ((s - sector) as usize) * SECTOR_BYTES,
        };
        match groups.last_mut() {
            Some((stripe, segs)) if *stripe == at.stripe => segs.push(seg),
            _ => groups.push((at.stripe, vec![seg])),
        }
        s += len;
    }
    groups
}

fn array_sector_of(l: &Raid5Layout, stripe: u64, data_index: usize, offset_sectors: u64) -> u64 {
    (stripe * l.data_disks() as u64 + data_index as u64) * l.chunk_sectors() + offset_sectors
}

/// How one read of a cell ended.
pub(crate) enum CellRead {
    Ok(Vec<u8>),
    /// The member is missing or failed (now or before).
    Gone,
    /// A read error on a member that stays in the array: the cell wants a rewrite.
    Error,
}

/// [`CellRead`] for the engine's own paths and the jobs': the content may be shared with the
/// stripe cache.
pub(crate) enum SharedCell {
    Ok(Bytes),
    /// The member is missing or failed (now or before).
    Gone,
    /// A read error on a member that stays in the array: the cell wants a rewrite.
    Error,
}

impl Array {
    /// Reads the cells `[offset, offset + sectors)` of `stripe` on `disks`, all at once.
    pub(crate) async fn read_cells(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        offset_sectors: u64,
        sectors: u64,
        disks: &[usize],
    ) -> Vec<(usize, CellRead)> {
        self.read_cells_shared(l, stripe, offset_sectors, sectors, disks)
            .await
            .into_iter()
            .map(|(d, c)| {
                let c = match c {
                    SharedCell::Ok(b) => CellRead::Ok(Vec::from(b)),
                    SharedCell::Gone => CellRead::Gone,
                    SharedCell::Error => CellRead::Error,
                };
                (d, c)
            })
            .collect()
    }

    /// [`Self::read_cells`] without copying what comes from the stripe cache.
    pub(crate) async fn read_cells_shared(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        offset_sectors: u64,
        sectors: u64,
        disks: &[usize],
    ) -> Vec<(usize, SharedCell)> {
        self.read_cells_cached(l, stripe, offset_sectors, sectors, disks, true)
            .await
    }

    /// [`Self::read_cells_shared`]; `keep_reads: false` leaves what members return out of
    /// the cache (the caller is about to overwrite those cells and caches the new content).
    async fn read_cells_cached(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        offset_sectors: u64,
        sectors: u64,
        disks: &[usize],
        keep_reads: bool,
    ) -> Vec<(usize, SharedCell)> {
        let at = l.member_sector(stripe, offset_sectors);
        let bytes = sectors as usize * SECTOR_BYTES;
        let jobs: Vec<_> = disks
            .iter()
            .map(|&d| {
                // A member being rebuilt serves only what is rebuilt already.
                let member = self.readable(d, at, sectors);
                let cached = member
                    .as_ref()
                    .and_then(|_| self.cache_get(stripe, d, offset_sectors, sectors));
                // The read overwrites it whole: a recycled buffer needs no zero-fill.
                let buf = (member.is_some() && cached.is_none()).then(|| self.parity_buffer(bytes));
                async move {
                    let Some(member) = member else {
                        return (d, None, Err(IoError::DeviceFailed), false);
                    };
                    if let Some(data) = cached {
                        return (d, Some(member), Ok(data), true);
                    }
                    let buf = buf.expect("taken for an uncached live member");
                    let r = member.read_data(at, buf).await.map(Bytes::from);
                    (d, Some(member), r, false)
                }
            })
            .collect();
        // Whole chunks are streaming I/O (md bypasses its stripe cache for them too): caching
        // them would cost a copy and evict the small cells that read-modify-write wants.
        let keep = keep_reads && sectors < l.chunk_sectors();
        let mut out = Vec::with_capacity(disks.len());
        for (d, member, r, from_cache) in join_all(jobs).await {
            match &r {
                Ok(data) if !from_cache && keep => self.cache_put(stripe, d, offset_sectors, data),
                Ok(_) => {}
                Err(_) => self.stripe_cache.borrow_mut().invalidate_cell(stripe, d),
            }
            let cell = match (member, r) {
                (_, Ok(data)) => SharedCell::Ok(data),
                (None, Err(_)) => SharedCell::Gone,
                (Some(member), Err(e)) => {
                    log::warn!(
                        "{}: read error on {} at member sector {at}: {e}",
                        self.name(),
                        member.name
                    );
                    if matches!(e, IoError::DeviceFailed) {
                        self.fail_member_rc(&member).await;
                        SharedCell::Gone
                    } else {
                        SharedCell::Error
                    }
                }
            };
            out.push((d, cell));
        }
        out
    }

    /// Fills the `None` cells of one stripe band (indexed by member) from the others.
    /// Returns false when more cells are lost than the level's parity can rebuild.
    fn solve_stripe(&self, l: &Raid5Layout, stripe: u64, cells: &mut [Option<Bytes>]) -> bool {
        let lost: Vec<usize> = (0..cells.len()).filter(|&d| cells[d].is_none()).collect();
        if lost.is_empty() {
            return true;
        }
        if lost.len() > l.parity_disks() {
            return false;
        }
        let Some(len) = cells.iter().flatten().map(Bytes::len).next() else {
            return false;
        };
        let engine = self.parity.get();
        if l.parity_disks() == 1 {
            // P is the xor of the data, so any one cell is the xor of all the others.
            let sources: Vec<&[u8]> = cells.iter().flatten().map(|c| &c[..]).collect();
            let mut out = vec![0u8; len];
            engine.xor(&sources, &mut out);
            cells[lost[0]] = Some(Bytes::from(out));
            return true;
        }
        let k = l.data_disks();
        let p_disk = l.parity_disk(stripe);
        let Some(q_disk) = l.q_disk(stripe) else {
            return false;
        };
        let data_disks: Vec<usize> = (0..k).map(|i| l.data_disk(stripe, i)).collect();
        let slots: Vec<u8> = data_disks
            .iter()
            .map(|&d| {
                l.syndrome_slot(stripe, d)
                    .expect("a data member has a syndrome slot")
            })
            .collect();
        let lost_data: Vec<usize> = (0..k).filter(|&i| cells[data_disks[i]].is_none()).collect();
        let p_lost = cells[p_disk].is_none();
        let q_lost = cells[q_disk].is_none();
        let which = match (lost_data.as_slice(), p_lost, q_lost) {
            ([], true, false) => Lost::P,
            ([], false, true) => Lost::Q,
            ([], true, true) => Lost::PQ,
            ([x], false, false) => Lost::Data(*x),
            ([x], true, false) => Lost::DataP(*x),
            ([x], false, true) => Lost::DataQ(*x),
            ([x, y], false, false) => Lost::TwoData(*x, *y),
            _ => return false,
        };
        // Recovery works in place: a cell shared with the cache is copied out first.
        let mut take = |d: usize| cells[d].take().map_or_else(|| vec![0u8; len], Vec::from);
        let mut data: Vec<Vec<u8>> = data_disks.iter().map(|&d| take(d)).collect();
        let mut p = take(p_disk);
        let mut q = take(q_disk);
        let solved = {
            let mut views: Vec<&mut [u8]> = data.iter_mut().map(Vec::as_mut_slice).collect();
            engine.recover(&mut views, &slots, &mut p, &mut q, which)
        };
        for (&d, buf) in data_disks.iter().zip(data) {
            cells[d] = Some(Bytes::from(buf));
        }
        cells[p_disk] = Some(Bytes::from(p));
        cells[q_disk] = Some(Bytes::from(q));
        match solved {
            Ok(()) => true,
            Err(e) => {
                log::error!("{}: stripe {stripe} cannot be rebuilt: {e}", self.name());
                for d in lost {
                    cells[d] = None;
                }
                false
            }
        }
    }

    /// Rebuilds the cells `[offset, offset + sectors)` of `target` in `stripe` from the other
    /// members. On failure, the offset (in the chunk) of the first sector that is lost.
    pub(crate) async fn reconstruct_cell(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        offset_sectors: u64,
        sectors: u64,
        target: usize,
    ) -> Result<Vec<u8>, u64> {
        let others: Vec<usize> = (0..l.disk_count()).filter(|&d| d != target).collect();
        let mut cells: Vec<Option<Bytes>> = vec![None; l.disk_count()];
        let mut gone = usize::from(self.member(target).is_none());
        for (d, r) in self
            .read_cells_shared(l, stripe, offset_sectors, sectors, &others)
            .await
        {
            match r {
                SharedCell::Ok(data) => cells[d] = Some(data),
                SharedCell::Gone => gone += 1,
                SharedCell::Error => {}
            }
        }
        if self.solve_stripe(l, stripe, &mut cells) {
            return Ok(Vec::from(
                cells[target]
                    .take()
                    .expect("a solved stripe has every cell"),
            ));
        }
        // With more whole members gone than parity covers, every sector here is lost; only
        // read errors (which may hit single sectors) are worth a sector-by-sector retry.
        if sectors == 1 || gone > l.parity_disks() {
            return Err(offset_sectors);
        }
        // Bad sectors on different members need not overlap: go sector by sector, trying
        // the target itself first (a member that is still here may hold most of them).
        let mut out = vec![0u8; sectors as usize * SECTOR_BYTES];
        for i in 0..sectors {
            let off = offset_sectors + i;
            let direct = match self.read_cells(l, stripe, off, 1, &[target]).await.pop() {
                Some((_, CellRead::Ok(data))) => Some(data),
                _ => None,
            };
            let data = match direct {
                Some(data) => data,
                None => Box::pin(self.reconstruct_cell(l, stripe, off, 1, target)).await?,
            };
            let at = i as usize * SECTOR_BYTES;
            out[at..at + SECTOR_BYTES].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// Reads through a parity layout.
    pub(super) async fn parity_read(
        &self,
        l: &Raid5Layout,
        sector: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, IoError> {
        let sectors = check_range(sector, buf.len(), self.capacity_sectors())?;
        self.count(|c| {
            c.reads += 1;
            c.read_bytes += buf.len() as u64;
        });
        if sectors == 0 {
            return Ok(buf);
        }
        let groups = stripe_segments(l, sector, sectors);
        let first = groups[0].0;
        let last = groups[groups.len() - 1].0;
        let guard = self.lock.lock_shared(first, last + 1).await;
        // Straight from the data members when each is in sync there, and the stripe cache has
        // no say: it is off, or every segment is a whole chunk (streamed past the cache, as md
        // does); partial chunks go through the cache below.
        let cache_on = self.stripe_cache_effective_bytes() > 0;
        let direct = groups.iter().all(|(stripe, segs)| {
            segs.iter().all(|seg| {
                let at = l.member_sector(*stripe, seg.offset_sectors);
                (!cache_on || seg.sectors == l.chunk_sectors())
                    && self
                        .readable(l.data_disk(*stripe, seg.data_index), at, seg.sectors)
                        .is_some()
            })
        });
        // On a read error the general path below reads again, rebuilds, and overwrites
        // every segment of `buf`.
        if direct && self.parity_read_direct(l, &groups, &mut buf).await {
            return Ok(buf);
        }
        let jobs: Vec<_> = groups
            .iter()
            .map(|(stripe, segs)| self.read_stripe(l, *stripe, segs))
            .collect();
        let mut repairs = Vec::new();
        let mut first_error = None;
        for result in join_all(jobs).await {
            match result {
                Ok((pieces, jobs)) => {
                    for (seg, data) in pieces {
                        buf[seg.buf_offset..seg.buf_offset + data.len()].copy_from_slice(&data);
                    }
                    repairs.extend(jobs);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // A repair takes its stripe exclusively: only after this read let go of it.
        drop(guard);
        for job in repairs {
            self.repair_cell(l, job).await;
        }
        match first_error {
            None => Ok(buf),
            Some(e) => {
                self.count(|c| c.errors += 1);
                Err(e)
            }
        }
    }

    /// The common case of a parity read, every data member present: each segment read
    /// straight into its part of `buf` (no zero-fill, no copy). False on any read error.
    async fn parity_read_direct(
        &self,
        l: &Raid5Layout,
        groups: &[(u64, Vec<Segment>)],
        buf: &mut [u8],
    ) -> bool {
        let mut reads = Vec::new();
        let total = buf.len();
        let mut rest: &mut [u8] = buf;
        for (stripe, segs) in groups {
            for seg in segs {
                assert_eq!(seg.buf_offset, total - rest.len(), "segments are in order");
                let bytes = seg.sectors as usize * SECTOR_BYTES;
                let (piece, after) = rest.split_at_mut(bytes);
                rest = after;
                let at = l.member_sector(*stripe, seg.offset_sectors);
                // In sync there (a member being rebuilt only below its cursor).
                let Some(member) =
                    self.readable(l.data_disk(*stripe, seg.data_index), at, seg.sectors)
                else {
                    return false;
                };
                reads.push(async move { member.read_data_probe_into(at, piece).await });
            }
        }
        assert!(rest.is_empty(), "segments cover the request in order");
        join_all(reads).await.iter().all(Result::is_ok)
    }

    /// The segments of one stripe: straight from their data members, rebuilt when that fails.
    async fn read_stripe(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        segs: &[Segment],
    ) -> Result<(Vec<(Segment, Bytes)>, Vec<StripeRepair>), IoError> {
        let jobs: Vec<_> = segs
            .iter()
            .map(|seg| async move {
                let disk = l.data_disk(stripe, seg.data_index);
                let r = self
                    .read_cells_shared(l, stripe, seg.offset_sectors, seg.sectors, &[disk])
                    .await
                    .pop()
                    .map_or(SharedCell::Gone, |(_, r)| r);
                (seg, disk, r)
            })
            .collect();
        let mut pieces = Vec::with_capacity(segs.len());
        let mut repairs = Vec::new();
        for (seg, disk, r) in join_all(jobs).await {
            let data = match r {
                SharedCell::Ok(data) => data,
                other => {
                    let rebuilt = self
                        .reconstruct_cell(l, stripe, seg.offset_sectors, seg.sectors, disk)
                        .await
                        .map_err(|off| IoError::DataLost {
                            sector: array_sector_of(l, stripe, seg.data_index, off),
                        })?;
                    if matches!(other, SharedCell::Error) && self.redundant {
                        repairs.push(StripeRepair {
                            stripe,
                            offset_sectors: seg.offset_sectors,
                            sectors: seg.sectors,
                            disk_index: disk,
                        });
                    }
                    Bytes::from(rebuilt)
                }
            };
            pieces.push((*seg, data));
        }
        Ok((pieces, repairs))
    }

    /// Rewrites cells that failed a read with their content rebuilt from the rest of the
    /// stripe, holding the stripe alone so that no newer write is overwritten.
    async fn repair_cell(&self, l: &Raid5Layout, job: StripeRepair) {
        let _g = self.lock.lock(job.stripe, job.stripe + 1).await;
        self.stripe_cache_invalidate(job.stripe);
        let Some(member) = self.member(job.disk_index) else {
            return;
        };
        let Ok(data) = self
            .reconstruct_cell(
                l,
                job.stripe,
                job.offset_sectors,
                job.sectors,
                job.disk_index,
            )
            .await
        else {
            return;
        };
        let at = l.member_sector(job.stripe, job.offset_sectors);
        self.rewrite(&member, at, job.sectors, Bytes::from(data))
            .await;
    }

    /// Writes repaired content onto a member; a member that cannot take it is failed.
    pub(crate) async fn rewrite(&self, member: &Rc<Member>, at: u64, sectors: u64, data: Bytes) {
        // The cell changes under the cache: forget its stripe (cells never cross stripes).
        if let crate::layout::ArrayLayout::Raid5(l) = &self.layout {
            self.stripe_cache_invalidate(at / l.chunk_sectors());
        }
        match member.write_data(at, data, false).await {
            Ok(()) => {
                member.count(|c| c.corrected_sectors += sectors);
                log::info!(
                    "{}: corrected {sectors} sectors on {} at member sector {at}",
                    self.name(),
                    member.name
                );
            }
            // No room to rewrite it: the cell stays bad, the member stays in.
            Err(e) if !e.fails_member() => {}
            Err(_) => self.fail_member_rc(member).await,
        }
    }

    /// Writes through a parity layout. Each stripe share of the request is registered for
    /// gathering (`gather.rs`): the writer holding a stripe writes every share registered
    /// there at once, so adjacent writes in flight together become full-stripe writes.
    pub(super) async fn parity_write(
        &self,
        l: &Raid5Layout,
        sector: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<(), IoError> {
        let sectors = check_range(sector, data.len(), self.capacity_sectors())?;
        self.count(|c| {
            c.writes += 1;
            c.write_bytes += data.len() as u64;
        });
        if sectors == 0 {
            return Ok(());
        }
        let groups = stripe_segments(l, sector, sectors);
        let first = groups[0].0;
        let last = groups[groups.len() - 1].0;
        let whole = |segs: &[Segment]| {
            segs.len() == l.data_disks() && segs.iter().all(|s| s.sectors == l.chunk_sectors())
        };
        let partial = groups.iter().any(|(_, segs)| !whole(segs));
        // Registered in the same poll as the lock ticket below: registry order is lock order.
        let reg = Registration {
            array: self,
            pieces: groups
                .into_iter()
                .map(|(stripe, segs)| self.register_piece(stripe, segs, data.clone(), fua))
                .collect(),
        };
        drop(data);
        let _g = self.lock.lock(first, last + 1).await;
        self.mark_dirty().await?;
        if partial {
            self.gather_wait(l.stripe_data_sectors(), l.chunk_sectors(), &reg.pieces)
                .await;
        }
        // Shares an earlier writer gathered are done; the rest are written here, with
        // whatever later writers registered on the same stripes.
        let jobs: Vec<_> = reg
            .pieces
            .iter()
            .filter(|p| p.is_pending())
            .map(|p| self.write_gathered(l, p.stripe))
            .collect();
        join_all(jobs).await;
        let mut first_error = None;
        for p in &reg.pieces {
            match &*p.state.borrow() {
                PieceState::Done(Ok(())) => {}
                PieceState::Done(Err(e)) => {
                    first_error.get_or_insert(e.clone());
                }
                // Claimed by a writer whose task was dropped mid-write: the data may or
                // may not have landed.
                _ => {
                    first_error.get_or_insert(IoError::DeviceFailed);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                self.count(|c| c.errors += 1);
                Err(e)
            }
        }
    }

    /// Writes every piece registered on `stripe` (the caller holds its lock), oldest first
    /// where they overlap, as bands of chunk offsets where the same data chunks are written,
    /// and gives each piece its outcome: an error only for data of its own that was lost.
    async fn write_gathered(&self, l: &Raid5Layout, stripe: u64) {
        let pieces = self.claim_pieces(stripe);
        if let Some(p) = pieces.windows(2).find(|w| w[0].seq >= w[1].seq) {
            unreachable!("pieces of stripe {stripe} out of order at {}", p[1].seq);
        }
        let fua = pieces.iter().any(|p| p.fua);
        let mut cuts: Vec<u64> = pieces
            .iter()
            .flat_map(|p| &p.segs)
            .flat_map(|s| [s.offset_sectors, s.offset_sectors + s.sectors])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut outcome: Vec<Result<(), IoError>> = vec![Ok(()); pieces.len()];
        let covering = |s: &Segment, lo: u64, hi: u64| {
            s.offset_sectors <= lo && hi <= s.offset_sectors + s.sectors
        };
        for pair in cuts.windows(2) {
            let (lo, hi) = (pair[0], pair[1]);
            let mut new: Vec<Option<Bytes>> = vec![None; l.data_disks()];
            // The newest piece wins where pieces overlap (they are oldest first).
            for p in &pieces {
                for s in p.segs.iter().filter(|s| covering(s, lo, hi)) {
                    let from = s.buf_offset + ((lo - s.offset_sectors) as usize) * SECTOR_BYTES;
                    let to = from + ((hi - lo) as usize) * SECTOR_BYTES;
                    new[s.data_index] = Some(p.data.slice(from..to));
                }
            }
            let new: Vec<(usize, Bytes)> = new
                .into_iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| (i, b)))
                .collect();
            if new.is_empty() {
                continue;
            }
            let BandOutcome { lost, no_space } =
                self.write_band(l, stripe, lo, hi - lo, new, fua).await;
            if no_space {
                // Not acknowledged: every piece in the band gets the error.
                for (p, out) in pieces.iter().zip(outcome.iter_mut()) {
                    if out.is_ok() && p.segs.iter().any(|s| covering(s, lo, hi)) {
                        *out = Err(IoError::NoSpace);
                    }
                }
            }
            if lost.is_empty() {
                continue;
            }
            for (p, out) in pieces.iter().zip(outcome.iter_mut()) {
                let hit = p
                    .segs
                    .iter()
                    .find(|s| covering(s, lo, hi) && lost.contains(&s.data_index));
                if let (Some(s), Ok(())) = (hit, &out) {
                    *out = Err(IoError::DataLost {
                        sector: array_sector_of(l, stripe, s.data_index, lo),
                    });
                }
            }
        }
        for (p, out) in pieces.iter().zip(outcome) {
            *p.state.borrow_mut() = PieceState::Done(out);
        }
    }

    /// Writes new content for some data chunks of `[offset, offset + sectors)` in `stripe`
    /// (every chunk in `new` covers the whole band) and the matching parity. Returns the data
    /// indices (in `new`) whose content is lost: not written, or on a member that is gone
    /// with more members gone than parity covers; and whether a member had no space.
    async fn write_band(
        &self,
        l: &Raid5Layout,
        stripe: u64,
        offset_sectors: u64,
        sectors: u64,
        new: Vec<(usize, Bytes)>,
        fua: bool,
    ) -> BandOutcome {
        let n = l.disk_count();
        let k = l.data_disks();
        let bytes = sectors as usize * SECTOR_BYTES;
        let p_disk = l.parity_disk(stripe);
        let q_disk = l.q_disk(stripe);
        let parity: Vec<usize> = core::iter::once(p_disk).chain(q_disk).collect();
        let mut new_of: Vec<Option<Bytes>> = vec![None; k];
        for (i, b) in new {
            new_of[i] = Some(b);
        }
        let touched: Vec<usize> = (0..k)
            .filter(|&i| new_of[i].is_some())
            .map(|i| l.data_disk(stripe, i))
            .collect();
        let untouched: Vec<usize> = (0..k)
            .filter(|&i| new_of[i].is_none())
            .map(|i| l.data_disk(stripe, i))
            .collect();
        let all_new = || {
            (0..k)
                .filter(|&i| new_of[i].is_some())
                .collect::<Vec<usize>>()
        };
        let at = l.member_sector(stripe, offset_sectors);
        let live = |d: usize| self.readable(d, at, sectors).is_some();

        let rmw_possible = !untouched.is_empty()
            && parity.iter().all(|&d| live(d))
            && touched.iter().all(|&d| live(d));
        let rcw_possible = untouched.iter().all(|&d| live(d));
        // Member reads each plan needs: cells in the stripe cache cost none.
        let uncached = |cells: &[usize]| {
            let cache = self.stripe_cache.borrow();
            cells
                .iter()
                .filter(|&&d| !cache.contains(stripe, d, offset_sectors, sectors))
                .count()
        };
        let rmw_reads = uncached(&touched) + uncached(&parity);
        let rcw_reads = uncached(&untouched);
        // After an unclean shutdown (no resync yet) parity may be stale: read-modify-write
        // would keep it stale, reconstruct-write makes the band consistent again.
        let trust_parity = !self.needs_resync.get();
        let use_rmw = rmw_possible && (!rcw_possible || (trust_parity && rmw_reads < rcw_reads));
        let first_reads: Vec<usize> = if untouched.is_empty() {
            Vec::new()
        } else if use_rmw {
            touched.iter().chain(&parity).copied().collect()
        } else if rcw_possible {
            untouched.clone()
        } else {
            (0..n).filter(|&d| live(d)).collect()
        };

        let mut cells: Vec<Option<Bytes>> = vec![None; n];
        let mut unreadable: Vec<usize> = Vec::new();
        let mut read_done = vec![false; n];
        let mut clean = true;
        // Read-modify-write reads exactly the cells it rewrites: caching their old content
        // would only be replaced by the new one below (costing an eviction each).
        let keep_reads = !use_rmw;
        for (d, r) in self
            .read_cells_cached(l, stripe, offset_sectors, sectors, &first_reads, keep_reads)
            .await
        {
            read_done[d] = true;
            match r {
                SharedCell::Ok(data) => cells[d] = Some(data),
                SharedCell::Gone => clean = false,
                SharedCell::Error => {
                    clean = false;
                    unreadable.push(d);
                }
            }
        }
        // A failed read turns any plan into a reconstruct-write from everything readable.
        let rmw = use_rmw && clean;
        if !clean {
            let rest: Vec<usize> = (0..n).filter(|&d| !read_done[d] && live(d)).collect();
            for (d, r) in self
                .read_cells_shared(l, stripe, offset_sectors, sectors, &rest)
                .await
            {
                match r {
                    SharedCell::Ok(data) => cells[d] = Some(data),
                    SharedCell::Gone => {}
                    SharedCell::Error => unreadable.push(d),
                }
            }
        }
        if !rmw && untouched.iter().any(|&d| cells[d].is_none()) {
            // The untouched data is implied by what survives: rebuild it (a touched chunk's
            // old content may be needed for that, so solve the old stripe as a whole).
            if !self.solve_stripe(l, stripe, &mut cells) {
                return BandOutcome {
                    lost: all_new(),
                    no_space: false,
                };
            }
        }

        let engine = self.parity.get();
        // Both are overwritten whole below: recycled buffers need no zero-fill.
        let mut p = self.parity_buffer(bytes);
        let mut q = if q_disk.is_some() {
            self.parity_buffer(bytes)
        } else {
            Vec::new()
        };
        if rmw {
            let mut old: Vec<&[u8]> = Vec::new();
            let mut fresh: Vec<&[u8]> = Vec::new();
            let mut slots: Vec<u8> = Vec::new();
            for (i, b) in new_of.iter().enumerate() {
                if let Some(b) = b {
                    let d = l.data_disk(stripe, i);
                    old.push(cells[d].as_deref().expect("read for the update"));
                    fresh.push(b);
                    if q_disk.is_some() {
                        slots.push(l.syndrome_slot(stripe, d).expect("a data member's slot"));
                    }
                }
            }
            p.copy_from_slice(cells[p_disk].as_deref().expect("old P read"));
            match q_disk {
                Some(qd) => {
                    q.copy_from_slice(cells[qd].as_deref().expect("old Q read"));
                    engine.pq_update(&old, &fresh, &slots, &mut p, &mut q);
                }
                None => {
                    let sources: Vec<&[u8]> = old.iter().chain(&fresh).copied().collect();
                    engine.xor_into(&sources, &mut p);
                }
            }
        } else {
            let mut data: Vec<&[u8]> = Vec::with_capacity(k);
            let mut slots: Vec<u8> = Vec::with_capacity(k);
            for (i, b) in new_of.iter().enumerate() {
                let d = l.data_disk(stripe, i);
                data.push(match b {
                    Some(b) => b,
                    None => cells[d].as_deref().expect("untouched data read or rebuilt"),
                });
                if q_disk.is_some() {
                    slots.push(l.syndrome_slot(stripe, d).expect("a data member's slot"));
                }
            }
            if q_disk.is_some() {
                engine.pq_gen(&data, &slots, &mut p, &mut q);
            } else {
                engine.xor(&data, &mut p);
            }
        }

        let mut writes: Vec<(usize, Bytes, bool)> = Vec::new();
        for (i, b) in new_of.iter().enumerate() {
            if let Some(b) = b {
                writes.push((l.data_disk(stripe, i), b.clone(), false));
            }
        }
        let (p, q) = (Bytes::from(p), Bytes::from(q));
        writes.push((p_disk, p.clone(), false));
        if let Some(qd) = q_disk {
            writes.push((qd, q.clone(), false));
        }
        // Untouched cells that failed a read get their rebuilt content back.
        for &d in &unreadable {
            if untouched.contains(&d)
                && let Some(c) = cells[d].take()
            {
                writes.push((d, c, true));
            }
        }
        // What the members hold once these writes land, for the stripe cache.
        let written: Vec<(usize, Bytes)> = writes
            .iter()
            .filter(|(_, _, repair)| !repair)
            .map(|(d, b, _)| (*d, b.clone()))
            .collect();
        let jobs: Vec<_> = writes
            .into_iter()
            .filter_map(|(d, b, repair)| {
                self.member(d).map(|m| async move {
                    let r = if repair {
                        self.rewrite(&m, at, sectors, b).await;
                        Ok(())
                    } else {
                        m.write_data(at, b, fua).await
                    };
                    (m, r)
                })
            })
            .collect();
        let mut failed: Vec<Rc<Member>> = Vec::new();
        let mut no_space = false;
        for (m, r) in join_all(jobs).await {
            match r {
                Ok(()) => {}
                Err(e) if !e.fails_member() => {
                    log::warn!("{}: {} has no space for a write", self.name(), m.name);
                    no_space = true;
                }
                Err(e) => {
                    log::warn!("{}: write error on {}: {e}", self.name(), m.name);
                    failed.push(m);
                }
            }
        }
        // The failure is on disk before the write is acknowledged.
        for m in &failed {
            self.fail_member_rc(m).await;
        }
        // A member kept through a stall missed this write: none of it is acknowledged.
        let stalled = Self::kept_after_failure(&failed);
        if no_space {
            // Data and parity may now disagree in this stripe: resynced from here.
            self.copies_may_differ(l.member_sector(stripe, 0));
            self.stripe_cache_invalidate(stripe);
        } else if failed.is_empty() && !untouched.is_empty() {
            // A full-stripe write is streaming: its cells are dropped rather than copied in.
            for (d, b) in &written {
                self.cache_put(stripe, *d, offset_sectors, b);
            }
        } else if failed.is_empty() {
            let mut cache = self.stripe_cache.borrow_mut();
            for (d, _) in &written {
                cache.invalidate_cell(stripe, *d);
            }
        } else {
            self.stripe_cache_invalidate(stripe);
        }
        drop(written);
        self.recycle_parity_buffer(p);
        self.recycle_parity_buffer(q);
        // Old cells nothing else holds (read for read-modify-write, not cached) are reused.
        for c in cells.into_iter().flatten() {
            self.recycle_parity_buffer(c);
        }
        if stalled {
            return BandOutcome {
                lost: all_new(),
                no_space,
            };
        }
        let dead = (0..n).filter(|&d| !live(d)).count();
        let lost = if dead > l.parity_disks() {
            all_new()
                .into_iter()
                .filter(|&i| !live(l.data_disk(stripe, i)))
                .collect()
        } else {
            Vec::new()
        };
        BandOutcome { lost, no_space }
    }
}

impl Array {
    /// A cached cell range, counted as a hit or a miss.
    fn cache_get(
        &self,
        stripe: u64,
        disk: usize,
        offset_sectors: u64,
        sectors: u64,
    ) -> Option<Bytes> {
        let got = self
            .stripe_cache
            .borrow_mut()
            .get(stripe, disk, offset_sectors, sectors);
        match got {
            Some(_) => self.count(|c| c.cache_hits += 1),
            None => self.count(|c| c.cache_misses += 1),
        }
        got
    }

    /// Records what a live member now holds (never for a member that is gone).
    fn cache_put(&self, stripe: u64, disk: usize, offset_sectors: u64, data: &Bytes) {
        if self.member(disk).is_some() {
            self.stripe_cache
                .borrow_mut()
                .put(stripe, disk, offset_sectors, data);
        }
    }

    /// Forgets the cached cells of `stripe`. Every writer of member cells of a parity array
    /// other than the write path (repair, resync, scrub repair, rebuild) calls this under
    /// the stripe lock before writing.
    pub(crate) fn stripe_cache_invalidate(&self, stripe: u64) {
        self.stripe_cache.borrow_mut().invalidate_stripe(stripe);
    }

    /// The stripe cache budget asked for, in bytes (parity levels): the `stripe_cache`
    /// setting. The cache runs at [`Array::stripe_cache_effective_bytes`].
    pub fn stripe_cache_bytes(&self) -> usize {
        self.stripe_cache_wanted.get()
    }

    /// The budget the stripe cache runs at: the setting, within the CacheManager's share.
    pub fn stripe_cache_effective_bytes(&self) -> usize {
        self.stripe_cache.borrow().budget_bytes()
    }

    /// Whether the array has a stripe cache (the parity levels).
    pub fn has_stripe_cache(&self) -> bool {
        matches!(self.layout, ArrayLayout::Raid5(_))
    }

    /// The CacheManager's share for this array (`usize::MAX`: no cap).
    pub fn set_stripe_cache_cap(&self, cap: usize) {
        self.stripe_cache_cap.set(cap);
        self.apply_stripe_cache_budget();
    }

    fn apply_stripe_cache_budget(&self) {
        let budget = self
            .stripe_cache_wanted
            .get()
            .min(self.stripe_cache_cap.get());
        self.stripe_cache.borrow_mut().set_budget_bytes(budget);
    }

    /// Bytes the stripe cache holds now (whole cells).
    pub fn stripe_cache_held_bytes(&self) -> usize {
        self.stripe_cache.borrow().bytes()
    }

    /// Sets the stripe cache budget in bytes (parity levels); 0 turns the cache off.
    pub fn set_stripe_cache_bytes(&self, bytes: usize) {
        self.stripe_cache_wanted.set(bytes);
        self.apply_stripe_cache_budget();
    }
}
