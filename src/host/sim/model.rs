//! The simulator's model of the array's contents: for each sector, the values a read may
//! return given the writes acknowledged, in flight, failed or cut by a crash. Written data is
//! self-describing (each sector carries its write's tag and its own sector number), so a
//! read is checked without keeping the data.

use std::collections::BTreeMap;

use crate::block::SECTOR_BYTES;
use crate::rng::SplitMix64;

/// The value of a sector that was discarded: any content may be read.
pub const ANY: u64 = u64::MAX;
/// The value of a sector never written, or written with zeroes.
pub const ZERO: u64 = 0;

/// Fills one sector with the content of write `tag` at `sector` (`tag` 0: zeroes).
pub fn fill_sector(tag: u64, sector: u64, out: &mut [u8]) {
    debug_assert_eq!(out.len(), SECTOR_BYTES);
    if tag == ZERO {
        out.fill(0);
        return;
    }
    out[..8].copy_from_slice(&tag.to_le_bytes());
    out[8..16].copy_from_slice(&sector.to_le_bytes());
    SplitMix64::new(tag ^ sector.rotate_left(29)).fill(&mut out[16..]);
}

/// The data of write `tag` over `sectors` sectors from `sector`.
pub fn write_data(tag: u64, sector: u64, sectors: u32) -> Vec<u8> {
    let mut data = vec![0u8; sectors as usize * SECTOR_BYTES];
    for (i, chunk) in data.chunks_mut(SECTOR_BYTES).enumerate() {
        fill_sector(tag, sector + i as u64, chunk);
    }
    data
}

/// Which value `data` (one sector read at `sector`) holds, if it is any write's.
fn value_of(sector: u64, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return Some(ZERO);
    }
    let tag = u64::from_le_bytes(data[..8].try_into().ok()?);
    let at = u64::from_le_bytes(data[8..16].try_into().ok()?);
    if at != sector || tag == ZERO || tag == ANY {
        return None;
    }
    let mut expect = [0u8; SECTOR_BYTES];
    fill_sector(tag, sector, &mut expect);
    (expect[..] == data[..]).then_some(tag)
}

/// A write (or discard, or write-zeroes) in flight.
struct Write {
    value: u64,
    sector: u64,
    sectors: u64,
    issued: u64,
}

/// A read in flight: what it may return, gathered while it runs.
struct Read {
    sector: u64,
    /// Per sector, the settled values when it was issued.
    at_issue: Vec<Vec<u64>>,
    /// Writes that were in flight at some moment while it ran.
    overlapping: Vec<(u64, u64, u64)>,
}

/// The reference model.
#[derive(Default)]
pub struct Model {
    /// Per written sector: the values it may hold now, each with the time it was settled.
    /// A missing sector holds [`ZERO`].
    settled: BTreeMap<u64, Vec<(u64, u64)>>,
    writes: BTreeMap<u64, Write>,
    reads: BTreeMap<u64, Read>,
    clock: u64,
}

impl Model {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn settled_values(&self, sector: u64) -> Vec<u64> {
        match self.settled.get(&sector) {
            Some(v) => v.iter().map(|&(value, _)| value).collect(),
            None => vec![ZERO],
        }
    }

    /// A write of `value` (a tag, [`ZERO`] or [`ANY`]) was sent as request `id`.
    pub fn begin_write(&mut self, id: u64, value: u64, sector: u64, sectors: u64) {
        let issued = self.tick();
        for read in self.reads.values_mut() {
            let end = read.sector + read.at_issue.len() as u64;
            if sector < end && read.sector < sector + sectors {
                read.overlapping.push((value, sector, sectors));
            }
        }
        self.writes.insert(
            id,
            Write {
                value,
                sector,
                sectors,
                issued,
            },
        );
    }

    /// Request `id` was answered: `ok` acknowledged, else failed (it may or may not have
    /// reached the members, in part).
    pub fn end_write(&mut self, id: u64, ok: bool) {
        let Some(w) = self.writes.remove(&id) else {
            return;
        };
        let now = self.tick();
        for s in w.sector..w.sector + w.sectors {
            let entry = self.settled.entry(s).or_insert_with(|| vec![(ZERO, 0)]);
            if ok {
                // Writes acknowledged after this one was issued may have landed after it.
                entry.retain(|&(_, at)| at > w.issued);
            }
            entry.retain(|&(v, _)| v != w.value);
            entry.push((w.value, now));
            if entry.len() == 1 && entry[0].0 == ZERO {
                self.settled.remove(&s);
            }
        }
    }

    /// A read of `sectors` from `sector` was sent as request `id`.
    pub fn begin_read(&mut self, id: u64, sector: u64, sectors: u64) {
        self.tick();
        let at_issue = (sector..sector + sectors)
            .map(|s| self.settled_values(s))
            .collect();
        let overlapping = self
            .writes
            .values()
            .filter(|w| w.sector < sector + sectors && sector < w.sector + w.sectors)
            .map(|w| (w.value, w.sector, w.sectors))
            .collect();
        self.reads.insert(
            id,
            Read {
                sector,
                at_issue,
                overlapping,
            },
        );
    }

    /// Forgets read `id` (it failed, or its answer was lost).
    pub fn drop_read(&mut self, id: u64) {
        self.reads.remove(&id);
    }

    /// Checks the data read by request `id`; the sectors that hold what no write could
    /// have left there, as (sector, what was read, what was allowed).
    pub fn check_read(&mut self, id: u64, data: &[u8]) -> Vec<(u64, Option<u64>, Vec<u64>)> {
        let Some(read) = self.reads.remove(&id) else {
            return Vec::new();
        };
        let mut wrong = Vec::new();
        for (i, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
            let s = read.sector + i as u64;
            let mut allowed = read.at_issue.get(i).cloned().unwrap_or_default();
            allowed.extend(self.settled_values(s));
            allowed.extend(
                read.overlapping
                    .iter()
                    .filter(|&&(_, start, n)| start <= s && s < start + n)
                    .map(|&(v, _, _)| v),
            );
            // Writes still in flight now were in flight during the read.
            allowed.extend(
                self.writes
                    .values()
                    .filter(|w| w.sector <= s && s < w.sector + w.sectors)
                    .map(|w| w.value),
            );
            if allowed.contains(&ANY) {
                continue;
            }
            let got = value_of(s, chunk);
            if !got.is_some_and(|v| allowed.contains(&v)) {
                allowed.sort_unstable();
                allowed.dedup();
                wrong.push((s, got, allowed));
            }
        }
        wrong
    }

    /// The driver died: every write in flight may have reached the members, in part, or not.
    pub fn crash(&mut self) {
        let ids: Vec<u64> = self.writes.keys().copied().collect();
        for id in ids {
            self.end_write(id, false);
        }
        self.reads.clear();
    }

    /// Requests in flight (reads and writes) the model tracks.
    pub fn in_flight(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    /// Every sector written so far, as ranges (start, count), for a final read-back.
    pub fn written_ranges(&self, max_sectors: u64) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &s in self.settled.keys() {
            match ranges.last_mut() {
                Some((start, n)) if *start + *n == s && *n < max_sectors => *n += 1,
                _ => ranges.push((s, 1)),
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(model: &mut Model, id: u64, sector: u64, data: &[u8]) -> usize {
        model.begin_read(id, sector, (data.len() / SECTOR_BYTES) as u64);
        model.check_read(id, data).len()
    }

    #[test]
    fn acknowledged_writes_are_what_reads_must_return() {
        let mut m = Model::default();
        m.begin_write(1, 5, 10, 4);
        m.end_write(1, true);
        assert_eq!(read_back(&mut m, 2, 10, &write_data(5, 10, 4)), 0);
        // Old data (zeroes) is wrong once the write was acknowledged.
        assert_eq!(read_back(&mut m, 3, 10, &vec![0u8; 2048]), 4);
        // Another write's data, or the right data at the wrong place, is wrong.
        assert_eq!(read_back(&mut m, 4, 10, &write_data(6, 10, 4)), 4);
        assert_eq!(read_back(&mut m, 5, 11, &write_data(5, 10, 2)), 2);
    }

    #[test]
    fn in_flight_failed_and_crashed_writes_allow_old_or_new() {
        let mut m = Model::default();
        m.begin_write(1, 5, 0, 2);
        m.begin_read(2, 0, 2);
        assert!(m.check_read(2, &write_data(5, 0, 2)).is_empty());
        m.begin_read(3, 0, 2);
        assert!(m.check_read(3, &[0u8; 1024]).is_empty());
        m.end_write(1, false);
        assert_eq!(read_back(&mut m, 4, 0, &[0u8; 1024]), 0);
        m.begin_write(5, 7, 0, 1);
        m.crash();
        assert_eq!(read_back(&mut m, 6, 0, &write_data(7, 0, 1)), 0);
        assert_eq!(read_back(&mut m, 7, 0, &write_data(5, 0, 1)), 0);
        // A later acknowledged write settles it.
        m.begin_write(8, 9, 0, 1);
        m.end_write(8, true);
        assert_eq!(read_back(&mut m, 9, 0, &write_data(7, 0, 1)), 1);
    }

    #[test]
    fn overlapping_writes_in_flight_together_may_land_in_either_order() {
        let mut m = Model::default();
        m.begin_write(1, 5, 0, 1);
        m.begin_write(2, 6, 0, 1);
        m.end_write(2, true);
        m.end_write(1, true);
        assert_eq!(read_back(&mut m, 3, 0, &write_data(5, 0, 1)), 0);
        assert_eq!(read_back(&mut m, 4, 0, &write_data(6, 0, 1)), 0);
        // Issued after both were acknowledged: only it.
        m.begin_write(5, 8, 0, 1);
        m.end_write(5, true);
        assert_eq!(read_back(&mut m, 6, 0, &write_data(6, 0, 1)), 1);
        // A discard allows anything until the next write.
        m.begin_write(7, ANY, 0, 1);
        m.end_write(7, true);
        assert_eq!(read_back(&mut m, 8, 0, &[9u8; 512]), 0);
        assert_eq!(m.written_ranges(64), vec![(0, 1)]);
    }
}
