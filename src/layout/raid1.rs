//! RAID1 mirroring: every member holds every array sector at the same member sector.

use super::{Extent, LayoutError, MAX_COPIES, MemberSector};

/// The RAID1 address map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raid1Layout {
    disk_count: usize,
    member_sectors: u64,
}

impl Raid1Layout {
    /// Builds the map for `disk_count` mirrors of `member_sectors` each (md's `dev_sectors`,
    /// the superblock's `size`). One member is allowed, as mdadm allows it with `--force`.
    pub fn new(disk_count: usize, member_sectors: u64) -> Result<Self, LayoutError> {
        if disk_count == 0 {
            return Err(LayoutError::NoMembers);
        }
        if disk_count > MAX_COPIES {
            return Err(LayoutError::TooManyCopiesForBound { copies: disk_count });
        }
        if member_sectors == 0 {
            return Err(LayoutError::MemberTooSmall);
        }
        Ok(Raid1Layout {
            disk_count,
            member_sectors,
        })
    }

    pub fn disk_count(&self) -> usize {
        self.disk_count
    }

    /// The array is as large as one member.
    pub fn array_sectors(&self) -> u64 {
        self.member_sectors
    }

    /// Every member's copy of `array_sector` (copy `i` on member `i`), contiguous to the end
    /// of the array; `None` past the end.
    pub fn map(&self, array_sector: u64) -> Option<Extent> {
        if array_sector >= self.member_sectors {
            return None;
        }
        let mut copies = heapless::Vec::new();
        for disk_index in 0..self.disk_count {
            let pushed = copies.push(MemberSector {
                disk_index,
                sector: array_sector,
            });
            assert!(pushed.is_ok(), "disk_count is checked against MAX_COPIES");
        }
        Some(Extent {
            sectors: self.member_sectors - array_sector,
            copies,
        })
    }

    /// The copy index (= the member) and array sector a member cell holds.
    pub fn unmap(&self, disk_index: usize, member_sector: u64) -> Option<(usize, u64)> {
        (disk_index < self.disk_count && member_sector < self.member_sectors)
            .then_some((disk_index, member_sector))
    }

    /// The data survives while any member is alive.
    /// `alive.len()` must equal [`Self::disk_count`].
    pub fn survives(&self, alive: &[bool]) -> bool {
        assert_eq!(alive.len(), self.disk_count, "one flag per member");
        alive.iter().any(|&up| up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ArrayLayout;
    use crate::layout::test_support::{check_bijection, check_unused_cells};
    use alloc::vec;

    #[test]
    fn rejects_bad_geometry() {
        assert_eq!(Raid1Layout::new(0, 8), Err(LayoutError::NoMembers));
        assert_eq!(Raid1Layout::new(2, 0), Err(LayoutError::MemberTooSmall));
        assert_eq!(
            Raid1Layout::new(MAX_COPIES + 1, 8),
            Err(LayoutError::TooManyCopiesForBound {
                copies: MAX_COPIES + 1
            })
        );
        assert!(Raid1Layout::new(MAX_COPIES, 8).is_ok());
    }

    #[test]
    fn every_member_holds_every_sector() {
        let l = Raid1Layout::new(3, 100).unwrap();
        assert_eq!(l.array_sectors(), 100);
        let e = l.map(40).unwrap();
        assert_eq!(e.sectors, 60);
        assert_eq!(
            e.copies.as_slice(),
            &[
                MemberSector {
                    disk_index: 0,
                    sector: 40
                },
                MemberSector {
                    disk_index: 1,
                    sector: 40
                },
                MemberSector {
                    disk_index: 2,
                    sector: 40
                },
            ]
        );
        assert_eq!(l.map(100), None);
        assert_eq!(l.unmap(2, 99), Some((2, 99)));
        assert_eq!(l.unmap(3, 0), None);
        assert_eq!(l.unmap(0, 100), None);
        assert!(l.survives(&[false, false, true]));
        assert!(!l.survives(&[false, false, false]));
    }

    #[test]
    fn bijection_small() {
        for disks in 1..5 {
            let l = Raid1Layout::new(disks, 37).unwrap();
            let layout = ArrayLayout::Raid1(l);
            let limits = vec![37; disks];
            let used = check_bijection(&layout, 0, &limits);
            assert_eq!(used.len(), 37 * disks);
            check_unused_cells(&layout, &used, &limits, 1);
        }
    }
}
