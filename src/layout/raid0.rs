//! RAID0 striping with md's multi-zone rule for members of unequal size, in both of md's zone
//! layouts (original and alternate).
//!
//! md's rule (drivers/md/raid0.c, `create_strip_zones`): every member's size is rounded down
//! to a whole chunk. Zone 0 stripes over all members up to the smallest size; each following
//! zone starts, on the members, where the previous one ended and stripes over the members
//! still larger than that, in role order, up to the next larger size. So there is one zone per
//! distinct (rounded) member size and the array holds the sum of the rounded sizes.
//!
//! Inside a zone a chunk goes to row `zone_chunk / width` on member
//! `members[k % width]`, where `k` is the chunk index counted from the start of the zone in the
//! alternate layout, and from the start of the array in the original layout. Linux 3.14
//! switched from the original to the alternate rule by accident; since 5.4 the superblock's
//! `layout` field records which one an array uses. With one zone both agree.

use alloc::vec::Vec;

use super::{Extent, LayoutError, MemberSector, single_copy};

/// Which md multi-zone RAID0 rule an array follows (the superblock's `layout` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raid0ZoneLayout {
    /// Layout 1: the member within a zone is chosen by the array-wide chunk index (kernels
    /// before 3.14, and md's `RAID0_ORIG_LAYOUT`).
    Original = 1,
    /// Layout 2: the member within a zone is chosen by the zone-relative chunk index (kernels
    /// 3.14 to 5.3, and md's `RAID0_ALT_MULTIZONE_LAYOUT`).
    Alternate = 2,
}

impl Raid0ZoneLayout {
    /// The layout named by a superblock's `layout` field, if it names one.
    pub fn from_md_layout(layout: u32) -> Option<Self> {
        match layout {
            1 => Some(Raid0ZoneLayout::Original),
            2 => Some(Raid0ZoneLayout::Alternate),
            _ => None,
        }
    }

    /// The value for the superblock's `layout` field.
    pub fn md_layout(self) -> u32 {
        self as u32
    }
}

/// One strip zone: a range of the array striped over a fixed set of members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raid0Zone {
    /// First array sector of the zone.
    pub start_sector: u64,
    /// One past the last array sector of the zone.
    pub end_sector: u64,
    /// Member sector (on every member of the zone) where the zone begins.
    pub member_start_sector: u64,
    /// The members striped over, in role order.
    pub members: Vec<usize>,
}

impl Raid0Zone {
    /// Sectors the zone occupies on each of its members.
    fn member_sectors(&self) -> u64 {
        (self.end_sector - self.start_sector) / self.members.len() as u64
    }
}

/// The RAID0 address map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raid0Layout {
    chunk_sectors: u64,
    zone_layout: Raid0ZoneLayout,
    /// Member sizes rounded down to a whole chunk, by role.
    rounded_member_sectors: Vec<u64>,
    zones: Vec<Raid0Zone>,
    array_sectors: u64,
}

impl Raid0Layout {
    /// Builds the map for members of the given usable data sizes (md's `rdev->sectors`, by
    /// role), a chunk of `chunk_sectors` and a zone layout.
    ///
    /// The chunk must be at least 4 KiB and a whole number of KiB: that is what mdadm accepts
    /// for RAID0 (`--chunk`); unlike RAID10 it need not be a power of two.
    pub fn new(
        member_sectors: &[u64],
        chunk_sectors: u32,
        zone_layout: Raid0ZoneLayout,
    ) -> Result<Self, LayoutError> {
        if member_sectors.is_empty() {
            return Err(LayoutError::NoMembers);
        }
        if chunk_sectors == 0 {
            return Err(LayoutError::ChunkZero);
        }
        if chunk_sectors < 8 {
            return Err(LayoutError::ChunkTooSmall { chunk_sectors });
        }
        if !chunk_sectors.is_multiple_of(2) {
            return Err(LayoutError::ChunkNotWholeKib { chunk_sectors });
        }
        let chunk = u64::from(chunk_sectors);
        let rounded: Vec<u64> = member_sectors.iter().map(|&s| s - s % chunk).collect();
        let mut array_sectors: u64 = 0;
        for &size in &rounded {
            array_sectors = array_sectors
                .checked_add(size)
                .ok_or(LayoutError::SizeOverflow)?;
        }
        if array_sectors == 0 {
            return Err(LayoutError::MemberTooSmall);
        }

        let mut sizes: Vec<u64> = rounded.iter().copied().filter(|&s| s > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();

        // A member rounded to nothing sits in md's zone 0 with zero width; leaving it out of
        // every zone gives the same map.
        let mut zones = Vec::with_capacity(sizes.len());
        let mut member_start = 0;
        let mut array_start = 0;
        for &size in &sizes {
            let members: Vec<usize> = (0..rounded.len())
                .filter(|&disk| rounded[disk] > member_start)
                .collect();
            let length = (size - member_start) * members.len() as u64;
            zones.push(Raid0Zone {
                start_sector: array_start,
                end_sector: array_start + length,
                member_start_sector: member_start,
                members,
            });
            array_start += length;
            member_start = size;
        }
        assert_eq!(array_start, array_sectors, "zones must cover the array");

        Ok(Raid0Layout {
            chunk_sectors: chunk,
            zone_layout,
            rounded_member_sectors: rounded,
            zones,
            array_sectors,
        })
    }

    /// Builds the map from superblock fields: `md_layout` is the superblock's `layout`. As in
    /// md, it must be 1 or 2 only when the two rules place data differently, which needs a
    /// second zone striped over two or more members; otherwise it is ignored. (mdadm writes 1,
    /// the original layout, by default.)
    pub fn from_md(
        member_sectors: &[u64],
        chunk_sectors: u32,
        md_layout: u32,
    ) -> Result<Self, LayoutError> {
        let zone_layout =
            Raid0ZoneLayout::from_md_layout(md_layout).unwrap_or(Raid0ZoneLayout::Original);
        let layout = Self::new(member_sectors, chunk_sectors, zone_layout)?;
        let layouts_differ = layout.zones.get(1).is_some_and(|z| z.members.len() > 1);
        if layouts_differ && Raid0ZoneLayout::from_md_layout(md_layout).is_none() {
            return Err(LayoutError::UnknownRaid0ZoneLayout { layout: md_layout });
        }
        Ok(layout)
    }

    pub fn disk_count(&self) -> usize {
        self.rounded_member_sectors.len()
    }

    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    pub fn zone_layout(&self) -> Raid0ZoneLayout {
        self.zone_layout
    }

    /// The strip zones, in array order.
    pub fn zones(&self) -> &[Raid0Zone] {
        &self.zones
    }

    /// Sectors of member `disk_index` that hold data (its size rounded down to a chunk).
    pub fn member_sectors_used(&self, disk_index: usize) -> u64 {
        self.rounded_member_sectors
            .get(disk_index)
            .copied()
            .unwrap_or(0)
    }

    /// The array size: the sum of the members' sizes, each rounded down to a chunk.
    pub fn array_sectors(&self) -> u64 {
        self.array_sectors
    }

    /// Where `array_sector` lives; `None` past the end of the array.
    pub fn map(&self, array_sector: u64) -> Option<Extent> {
        if array_sector >= self.array_sectors {
            return None;
        }
        let zone_index = self.zones.partition_point(|z| z.end_sector <= array_sector);
        let zone = &self.zones[zone_index];
        let width = zone.members.len() as u64;
        let chunk = self.chunk_sectors;
        // Zones start on chunk boundaries, so the offset in the chunk is the same whether
        // counted from the array or the zone.
        let in_chunk = array_sector % chunk;
        let zone_chunk = (array_sector - zone.start_sector) / chunk;
        let row = zone_chunk / width;
        let position = match self.zone_layout {
            Raid0ZoneLayout::Alternate => zone_chunk % width,
            Raid0ZoneLayout::Original => (array_sector / chunk) % width,
        };
        let copy = MemberSector {
            disk_index: zone.members[position as usize],
            sector: zone.member_start_sector + row * chunk + in_chunk,
        };
        Some(Extent {
            sectors: chunk - in_chunk,
            copies: single_copy(copy),
        })
    }

    /// Which array sector member cell (`disk_index`, `member_sector`) holds; `None` if it
    /// holds none (past the member's rounded size, or no such member).
    pub fn unmap(&self, disk_index: usize, member_sector: u64) -> Option<u64> {
        if member_sector >= *self.rounded_member_sectors.get(disk_index)? {
            return None;
        }
        let zone_index = self
            .zones
            .partition_point(|z| z.member_start_sector + z.member_sectors() <= member_sector);
        let zone = self.zones.get(zone_index)?;
        let position = zone.members.iter().position(|&d| d == disk_index)? as u64;
        let width = zone.members.len() as u64;
        let chunk = self.chunk_sectors;
        let in_zone = member_sector - zone.member_start_sector;
        let row = in_zone / chunk;
        let in_chunk = in_zone % chunk;
        let column = match self.zone_layout {
            Raid0ZoneLayout::Alternate => position,
            Raid0ZoneLayout::Original => {
                // The row's first chunk has array-wide index `first`; chunk `first + x` goes to
                // position `(first + x) % width`.
                let first = zone.start_sector / chunk + row * width;
                (position + width - first % width) % width
            }
        };
        Some(zone.start_sector + (row * width + column) * chunk + in_chunk)
    }

    /// RAID0 has no redundancy: the data survives only with every member alive.
    /// `alive.len()` must equal [`Self::disk_count`].
    pub fn survives(&self, alive: &[bool]) -> bool {
        assert_eq!(alive.len(), self.disk_count(), "one flag per member");
        // A member rounded down to nothing holds no data and is not needed.
        alive
            .iter()
            .zip(&self.rounded_member_sectors)
            .all(|(&up, &size)| up || size == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ArrayLayout;
    use crate::layout::test_support::{check_bijection, check_unused_cells, chunk_cells, config};
    use alloc::vec;
    use proptest::prelude::*;

    fn cells(layout: &Raid0Layout, chunk: u64) -> Vec<(usize, u64)> {
        let chunk_sectors = layout.chunk_sectors();
        chunk_cells(&ArrayLayout::Raid0(layout.clone()), chunk, chunk_sectors)
    }

    #[test]
    fn rejects_bad_geometry() {
        let ok = Raid0ZoneLayout::Alternate;
        assert_eq!(Raid0Layout::new(&[], 8, ok), Err(LayoutError::NoMembers));
        assert_eq!(Raid0Layout::new(&[64], 0, ok), Err(LayoutError::ChunkZero));
        assert_eq!(
            Raid0Layout::new(&[64], 4, ok),
            Err(LayoutError::ChunkTooSmall { chunk_sectors: 4 })
        );
        assert_eq!(
            Raid0Layout::new(&[64], 9, ok),
            Err(LayoutError::ChunkNotWholeKib { chunk_sectors: 9 })
        );
        assert_eq!(
            Raid0Layout::new(&[7, 7], 8, ok),
            Err(LayoutError::MemberTooSmall)
        );
        assert_eq!(
            Raid0Layout::new(&[u64::MAX, u64::MAX], 8, ok),
            Err(LayoutError::SizeOverflow)
        );
        // Non-power-of-two chunks are fine for RAID0 (12 sectors = 6 KiB).
        assert!(Raid0Layout::new(&[120, 120], 12, ok).is_ok());
    }

    #[test]
    fn equal_members_stripe_round_robin() {
        // 3 members of 4 chunks of 8 sectors (one member slightly larger: rounded away).
        let l = Raid0Layout::new(&[32, 33, 39], 8, Raid0ZoneLayout::Original).unwrap();
        assert_eq!(l.zones().len(), 1);
        assert_eq!(l.array_sectors(), 96);
        let expected = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)];
        for (chunk, &want) in expected.iter().enumerate() {
            assert_eq!(cells(&l, chunk as u64), vec![want], "chunk {chunk}");
        }
        let e = l.map(13).unwrap();
        assert_eq!(e.sectors, 3);
        assert_eq!(
            e.copies[0],
            MemberSector {
                disk_index: 1,
                sector: 5
            }
        );
        assert_eq!(l.map(96), None);
        assert_eq!(l.unmap(2, 32), None, "rounded-away tail holds nothing");
    }

    /// Members of 100, 200 and 300 chunks: zone 0 = 3 × 100 chunks over members 0,1,2;
    /// zone 1 = 2 × 100 chunks over members 1,2 starting at member chunk 100; zone 2 = 100
    /// chunks on member 2 from member chunk 200. Zone 1 starts at array chunk 300, which is
    /// even, so both zone layouts agree here (see the next test for where they differ).
    #[test]
    fn multi_zone_100_200_300() {
        let chunk = 8u64;
        let sizes = [100 * chunk, 200 * chunk + 5, 300 * chunk];
        for zl in [Raid0ZoneLayout::Original, Raid0ZoneLayout::Alternate] {
            let l = Raid0Layout::new(&sizes, 8, zl).unwrap();
            assert_eq!(l.array_sectors(), 600 * chunk);
            let z = l.zones();
            assert_eq!(z.len(), 3);
            assert_eq!((z[0].start_sector, z[0].end_sector), (0, 300 * chunk));
            assert_eq!(z[0].members, vec![0, 1, 2]);
            assert_eq!(z[0].member_start_sector, 0);
            assert_eq!(
                (z[1].start_sector, z[1].end_sector),
                (300 * chunk, 500 * chunk)
            );
            assert_eq!(z[1].members, vec![1, 2]);
            assert_eq!(z[1].member_start_sector, 100 * chunk);
            assert_eq!(
                (z[2].start_sector, z[2].end_sector),
                (500 * chunk, 600 * chunk)
            );
            assert_eq!(z[2].members, vec![2]);
            assert_eq!(z[2].member_start_sector, 200 * chunk);

            assert_eq!(cells(&l, 0), vec![(0, 0)]);
            assert_eq!(cells(&l, 299), vec![(2, 99)]);
            assert_eq!(cells(&l, 300), vec![(1, 100)]);
            assert_eq!(cells(&l, 301), vec![(2, 100)]);
            assert_eq!(cells(&l, 302), vec![(1, 101)]);
            assert_eq!(cells(&l, 499), vec![(2, 199)]);
            assert_eq!(cells(&l, 500), vec![(2, 200)]);
            assert_eq!(cells(&l, 599), vec![(2, 299)]);
        }
    }

    /// Members (by role) of 10, 5 and 7 chunks. Zone 0: array chunks 0..15 over members
    /// 0,1,2 (rows 0..5). Zone 1: members larger than 5 chunks in role order = [0, 2], from
    /// member chunk 5, (7-5)×2 = 4 chunks: array chunks 15..19. Zone 2: member [0] from member
    /// chunk 7, 3 chunks: array chunks 19..22.
    ///
    /// Zone 1 starts at array chunk 15 (odd): the original layout picks position
    /// `array_chunk % 2`, so chunk 15 → position 1 (member 2); the alternate layout picks
    /// `(array_chunk - 15) % 2`, so chunk 15 → position 0 (member 0).
    #[test]
    fn multi_zone_layouts_differ_when_zone_start_is_odd() {
        let chunk = 12u64; // 6 KiB: not a power of two
        let sizes = [10 * chunk, 5 * chunk + 11, 7 * chunk];
        let orig = Raid0Layout::new(&sizes, 12, Raid0ZoneLayout::Original).unwrap();
        let alt = Raid0Layout::new(&sizes, 12, Raid0ZoneLayout::Alternate).unwrap();
        for l in [&orig, &alt] {
            assert_eq!(l.array_sectors(), 22 * chunk);
            assert_eq!(l.zones()[1].members, vec![0, 2]);
            assert_eq!(l.zones()[2].members, vec![0]);
            // Zone 0 is the same in both.
            assert_eq!(cells(l, 0), vec![(0, 0)]);
            assert_eq!(cells(l, 4), vec![(1, 1)]);
            assert_eq!(cells(l, 14), vec![(2, 4)]);
            // Zone 2 has a single member.
            assert_eq!(cells(l, 19), vec![(0, 7)]);
            assert_eq!(cells(l, 21), vec![(0, 9)]);
        }
        let orig_zone1: Vec<_> = (15..19).map(|c| cells(&orig, c)[0]).collect();
        let alt_zone1: Vec<_> = (15..19).map(|c| cells(&alt, c)[0]).collect();
        assert_eq!(orig_zone1, vec![(2, 5), (0, 5), (2, 6), (0, 6)]);
        assert_eq!(alt_zone1, vec![(0, 5), (2, 5), (0, 6), (2, 6)]);
        // Mid-chunk sector, and the inverse.
        let e = orig.map(15 * chunk + 7).unwrap();
        assert_eq!(e.sectors, 5);
        assert_eq!(
            e.copies[0],
            MemberSector {
                disk_index: 2,
                sector: 5 * chunk + 7
            }
        );
        assert_eq!(orig.unmap(2, 5 * chunk + 7), Some(15 * chunk + 7));
        assert_eq!(alt.unmap(2, 5 * chunk + 7), Some(16 * chunk + 7));
        // Member 1's partial last chunk holds nothing.
        assert_eq!(orig.unmap(1, 5 * chunk), None);
    }

    #[test]
    fn from_md_requires_a_layout_only_for_multi_zone() {
        assert!(Raid0Layout::from_md(&[64, 64], 8, 0).is_ok());
        let l = Raid0Layout::from_md(&[64, 128, 128], 8, 2).unwrap();
        assert_eq!(l.zone_layout(), Raid0ZoneLayout::Alternate);
        assert_eq!(
            Raid0Layout::from_md(&[64, 128, 128], 8, 0),
            Err(LayoutError::UnknownRaid0ZoneLayout { layout: 0 })
        );
        // Two zones, but the second has a single member: both rules agree (md 6.x accepts it).
        assert!(Raid0Layout::from_md(&[64, 128], 8, 0).is_ok());
        assert!(Raid0Layout::from_md(&[64, 96, 128], 8, 0).is_err());
    }

    #[test]
    fn survives_only_with_every_member() {
        let l = Raid0Layout::new(&[64, 64, 3], 8, Raid0ZoneLayout::Original).unwrap();
        assert!(l.survives(&[true, true, true]));
        assert!(!l.survives(&[true, false, true]));
        // Member 2 is smaller than a chunk: it holds no data.
        assert!(l.survives(&[true, true, false]));
    }

    fn check_all(l: &Raid0Layout) {
        let limits: Vec<u64> = (0..l.disk_count())
            .map(|d| l.member_sectors_used(d))
            .collect();
        let layout = ArrayLayout::Raid0(l.clone());
        let used = check_bijection(&layout, l.chunk_sectors(), &limits);
        assert_eq!(used.len() as u64, l.array_sectors());
        check_unused_cells(&layout, &used, &limits, 1);
    }

    #[test]
    fn exhaustive_small_geometries() {
        for zl in [Raid0ZoneLayout::Original, Raid0ZoneLayout::Alternate] {
            for chunk in [8u32, 10] {
                let c = u64::from(chunk);
                for a in 0..4u64 {
                    for b in 1..4u64 {
                        for d in 0..3u64 {
                            let sizes = [a * c + 1, b * c, (a + d) * c + 3, 2 * c];
                            let l = Raid0Layout::new(&sizes, chunk, zl).unwrap();
                            assert_eq!(l.array_sectors(), (2 * a + b + d + 2) * c);
                            check_all(&l);
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(config(64))]
        #[test]
        fn prop_bijection(
            sizes in proptest::collection::vec(0u64..12, 1..6),
            tails in proptest::collection::vec(0u64..40, 6),
            chunk_half in 4u32..12,
            original in any::<bool>(),
        ) {
            let chunk = chunk_half * 2;
            let member_sectors: Vec<u64> = sizes
                .iter()
                .zip(&tails)
                .map(|(&s, &t)| s * u64::from(chunk) + t % u64::from(chunk))
                .collect();
            let zl = if original { Raid0ZoneLayout::Original } else { Raid0ZoneLayout::Alternate };
            match Raid0Layout::new(&member_sectors, chunk, zl) {
                Ok(l) => {
                    let sum: u64 = sizes.iter().sum::<u64>() * u64::from(chunk);
                    prop_assert_eq!(l.array_sectors(), sum);
                    check_all(&l);
                }
                Err(e) => {
                    prop_assert_eq!(e, LayoutError::MemberTooSmall);
                    prop_assert!(sizes.iter().all(|&s| s == 0));
                }
            }
        }
    }
}
