//! RAID10 near / far / offset placement as md lays it out, with the layout word's bit fields
//! and mdadm's layout names.
//!
//! md's rules (drivers/md/raid10.c): the layout word holds `near` copies in bits 0–7, `far`
//! copies in bits 8–15, the offset flag in bit 16 and the far-set choice in bits 17–18. Chunk
//! `c` has `near` copies at consecutive positions `c × near … c × near + near − 1` of a raid0-like
//! row-major walk over the members (a copy that runs off the last member continues on member 0
//! one row down). Each of those has `far − 1` further copies, each one `near` members further
//! on (rotating within the whole array, or within a "far set" of members), and either one
//! `stride` further down the member (far: `stride` = a `1/far` share of the member) or one
//! chunk further down (offset: every stripe row is followed by its `far − 1` shifted
//! repeats). Copies are listed near copy by near copy, each followed by its far copies.
//!
//! md accepts a few combined geometries (near > 1 with offset when near does not divide the
//! member count; near > 1 with far sets that do not divide the members) whose placement makes
//! two blocks share a cell or two copies share a member; those are refused here, see
//! [`LayoutError::UnsafeRaid10Geometry`]. mdadm never creates them.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use super::{Extent, LayoutError, MAX_COPIES, MemberSector};

const NEAR_MASK: u32 = 0xff;
const FAR_SHIFT: u32 = 8;
const OFFSET_BIT: u32 = 1 << 16;
const LEGACY_FAR_SETS_BIT: u32 = 1 << 17;
const FAR_SETS_BIT: u32 = 1 << 18;

/// How far copies rotate across the members (layout bits 17–18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FarSets {
    /// Bits clear: far copies rotate across the whole array (everything mdadm creates).
    Whole,
    /// Bit 17: sets of `member count / far` members. md keeps it for old arrays only; on many
    /// member counts it puts copies on the same member, which is refused here.
    Legacy,
    /// Bit 18: sets of `near × far` members, the last set taking any remainder (dm-raid's
    /// far sets).
    Sets,
}

/// The RAID10 layout word, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raid10LayoutBits {
    pub near_copies: u8,
    pub far_copies: u8,
    /// Offset layout: far copies sit in the following chunk rows rather than far away.
    pub far_offset: bool,
    pub far_sets: FarSets,
}

impl Raid10LayoutBits {
    /// mdadm's default, `n2` (0x102).
    pub const NEAR2: Raid10LayoutBits = Raid10LayoutBits {
        near_copies: 2,
        far_copies: 1,
        far_offset: false,
        far_sets: FarSets::Whole,
    };

    /// Decodes a layout word, refusing what md refuses.
    pub fn from_bits(layout: u32) -> Result<Self, LayoutError> {
        let invalid = LayoutError::InvalidRaid10Layout { layout };
        if layout >> 19 != 0 {
            return Err(invalid);
        }
        let far_sets = match (
            layout & LEGACY_FAR_SETS_BIT != 0,
            layout & FAR_SETS_BIT != 0,
        ) {
            (false, false) => FarSets::Whole,
            (true, false) => FarSets::Legacy,
            (false, true) => FarSets::Sets,
            (true, true) => return Err(invalid),
        };
        let near_copies = (layout & NEAR_MASK) as u8;
        let far_copies = ((layout >> FAR_SHIFT) & NEAR_MASK) as u8;
        if near_copies == 0 || far_copies == 0 {
            return Err(invalid);
        }
        Ok(Raid10LayoutBits {
            near_copies,
            far_copies,
            far_offset: layout & OFFSET_BIT != 0,
            far_sets,
        })
    }

    /// The layout word for the superblock.
    pub fn bits(self) -> u32 {
        let sets = match self.far_sets {
            FarSets::Whole => 0,
            FarSets::Legacy => LEGACY_FAR_SETS_BIT,
            FarSets::Sets => FAR_SETS_BIT,
        };
        u32::from(self.near_copies)
            | u32::from(self.far_copies) << FAR_SHIFT
            | if self.far_offset { OFFSET_BIT } else { 0 }
            | sets
    }

    /// Copies of every block: `near × far`.
    pub fn copies(self) -> usize {
        usize::from(self.near_copies) * usize::from(self.far_copies)
    }
}

/// mdadm's names: `n2`, `f2`, `o2` (also `n2f2`, `n2o2` for combined words md accepts). A
/// far-set word gets a `+sets` (bit 18) or `+legacysets` (bit 17) suffix, which is this
/// project's spelling: mdadm has no name for them.
impl fmt::Display for Raid10LayoutBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let far_term = self.far_copies != 1 || self.far_offset;
        if self.near_copies != 1 || !far_term {
            write!(f, "n{}", self.near_copies)?;
        }
        if far_term {
            let kind = if self.far_offset { 'o' } else { 'f' };
            write!(f, "{kind}{}", self.far_copies)?;
        }
        match self.far_sets {
            FarSets::Whole => Ok(()),
            FarSets::Legacy => write!(f, "+legacysets"),
            FarSets::Sets => write!(f, "+sets"),
        }
    }
}

/// Why a RAID10 layout name did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseRaid10LayoutError {
    /// No near / far / offset term.
    Empty,
    /// A term is not `n`, `near`, `f`, `far`, `o` or `offset` followed by a count, or the
    /// suffix is not `sets` / `legacysets`.
    UnknownTerm,
    /// A count is missing, not a number, or not in 1..=255.
    BadCount,
    /// The same kind of term appears twice, or both far and offset are given.
    Conflicting,
}

impl fmt::Display for ParseRaid10LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseRaid10LayoutError::Empty => "empty RAID10 layout name",
            ParseRaid10LayoutError::UnknownTerm => {
                "unknown RAID10 layout term (expected n/near, f/far, o/offset with a count)"
            }
            ParseRaid10LayoutError::BadCount => "RAID10 copy count must be 1..=255",
            ParseRaid10LayoutError::Conflicting => "repeated or conflicting RAID10 layout terms",
        })
    }
}

/// Parses mdadm's `n2` / `f2` / `o2` and the long forms `near2`, `far=3`, `offset2`; terms may
/// be combined (`n2f2`, `near=2,far=2`) and a `+sets` / `+legacysets` suffix selects far sets.
impl FromStr for Raid10LayoutBits {
    type Err = ParseRaid10LayoutError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (base, suffix) = match text.split_once('+') {
            Some((base, suffix)) => (base, Some(suffix)),
            None => (text, None),
        };
        let far_sets = match suffix {
            None => FarSets::Whole,
            Some("sets") => FarSets::Sets,
            Some("legacysets") => FarSets::Legacy,
            Some(_) => return Err(ParseRaid10LayoutError::UnknownTerm),
        };
        let mut near = None;
        let mut far = None;
        let mut offset = None;
        let mut rest = base;
        while !rest.is_empty() {
            rest = rest.strip_prefix(',').unwrap_or(rest);
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let (name, after) = rest.split_at(name_len);
            let after = after.strip_prefix('=').unwrap_or(after);
            let digits_len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let (digits, after) = after.split_at(digits_len);
            let slot = match name {
                "n" | "near" => &mut near,
                "f" | "far" => &mut far,
                "o" | "offset" => &mut offset,
                _ => return Err(ParseRaid10LayoutError::UnknownTerm),
            };
            let count: u8 = digits
                .parse()
                .map_err(|_| ParseRaid10LayoutError::BadCount)?;
            if count == 0 {
                return Err(ParseRaid10LayoutError::BadCount);
            }
            if slot.replace(count).is_some() {
                return Err(ParseRaid10LayoutError::Conflicting);
            }
            rest = after;
        }
        if near.is_none() && far.is_none() && offset.is_none() {
            return Err(ParseRaid10LayoutError::Empty);
        }
        if far.is_some() && offset.is_some() {
            return Err(ParseRaid10LayoutError::Conflicting);
        }
        Ok(Raid10LayoutBits {
            near_copies: near.unwrap_or(1),
            far_copies: far.or(offset).unwrap_or(1),
            far_offset: offset.is_some(),
            far_sets,
        })
    }
}

/// The RAID10 address map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raid10Layout {
    disk_count: usize,
    layout: Raid10LayoutBits,
    near: u64,
    far: u64,
    chunk_sectors: u64,
    chunk_shift: u32,
    /// Chunks in the array.
    array_chunks: u64,
    /// Chunks used on each member (md's `dev_sectors` after `calc_sectors`).
    member_chunks_used: u64,
    /// Distance between far copies, in chunk rows (1 for offset).
    stride_rows: u64,
    /// `far_member[k × disk_count + d]`: the member holding far copy `k` of a near copy on
    /// member `d`. Each row of `disk_count` entries is a permutation (checked).
    far_member: Vec<usize>,
    /// The inverse permutations of `far_member`.
    far_member_inverse: Vec<usize>,
}

/// Chunk rows above the highest near row the construction-time collision check may use, so
/// that in far mode the checked chunks never reach the next far region.
const CHECK_STRIDE_SLACK: u64 = 4;

impl Raid10Layout {
    /// Builds the map for `disk_count` members, a layout word, a power-of-two chunk of at least
    /// 4 KiB, and `member_sectors` per member (md's `dev_sectors`: the superblock's `size`, or
    /// the usable data size when creating).
    pub fn new(
        disk_count: usize,
        layout_bits: u32,
        chunk_sectors: u32,
        member_sectors: u64,
    ) -> Result<Self, LayoutError> {
        if disk_count == 0 {
            return Err(LayoutError::NoMembers);
        }
        let layout = Raid10LayoutBits::from_bits(layout_bits)?;
        if chunk_sectors == 0 {
            return Err(LayoutError::ChunkZero);
        }
        if chunk_sectors < 8 {
            return Err(LayoutError::ChunkTooSmall { chunk_sectors });
        }
        if !chunk_sectors.is_power_of_two() {
            return Err(LayoutError::ChunkNotPowerOfTwo { chunk_sectors });
        }
        let copies = layout.copies();
        if copies < 2 {
            return Err(LayoutError::TooFewCopies { copies });
        }
        if copies > disk_count {
            return Err(LayoutError::TooManyCopies { copies, disk_count });
        }
        if copies > MAX_COPIES {
            return Err(LayoutError::TooManyCopiesForBound { copies });
        }
        let disks = disk_count as u64;
        // Everything below multiplies at most member chunks by the member count.
        member_sectors
            .checked_mul(disks)
            .ok_or(LayoutError::SizeOverflow)?;

        let near = u64::from(layout.near_copies);
        let far = u64::from(layout.far_copies);
        let chunk_shift = chunk_sectors.trailing_zeros();

        // md's raid10_size: chunks per member, a far share of them, times members over near.
        let member_chunks = member_sectors >> chunk_shift;
        let array_chunks = member_chunks / far * disks / near;
        if array_chunks == 0 {
            return Err(LayoutError::MemberTooSmall);
        }
        // md's calc_sectors: chunks used per member, rounded up.
        let member_chunks_used = (array_chunks * near * far).div_ceil(disks);
        let stride_rows = if layout.far_offset {
            1
        } else {
            member_chunks_used / far
        };
        // md recomputes the array size from the used size; the two agree.
        assert_eq!(member_chunks_used / far * disks / near, array_chunks);
        assert!(member_chunks_used <= member_chunks);

        let far_set_size = match layout.far_sets {
            FarSets::Whole => disk_count,
            FarSets::Legacy => disk_count / usize::from(layout.far_copies),
            FarSets::Sets => copies,
        };
        let unsafe_geometry = LayoutError::UnsafeRaid10Geometry {
            layout: layout_bits,
            disk_count,
        };
        let (far_member, far_member_inverse) = far_member_tables(
            disk_count,
            layout.near_copies.into(),
            far as usize,
            far_set_size,
        )
        .ok_or(unsafe_geometry)?;

        let result = Raid10Layout {
            disk_count,
            layout,
            near,
            far,
            chunk_sectors: u64::from(chunk_sectors),
            chunk_shift,
            array_chunks,
            member_chunks_used,
            stride_rows,
            far_member,
            far_member_inverse,
        };
        if !result.placement_is_safe() {
            return Err(unsafe_geometry);
        }
        Ok(result)
    }

    /// Checks, on a virtual array of unbounded size, that no two copies share a cell and no
    /// chunk has two copies on one member.
    ///
    /// Why three rounds of `disk_count` chunks are enough: chunk `c + disk_count` is placed
    /// like chunk `c`, `near` rows lower (`near × far` rows for offset), so the placement is
    /// periodic; a chunk's cells lie within its own stripe row and the next, so two chunks can
    /// only collide when their indices differ by less than two periods, and any such pair can
    /// be shifted into the first three periods. Far copies are checked with a stride larger
    /// than any row used here: in a real array each far region holds only its own rows, so
    /// regions never collide with each other.
    fn placement_is_safe(&self) -> bool {
        let disks = self.disk_count as u64;
        let check_chunks = 3 * disks;
        let check_stride = if self.layout.far_offset {
            1
        } else {
            check_chunks * self.near / disks + CHECK_STRIDE_SLACK
        };
        let mut cells: Vec<(usize, u64)> = Vec::new();
        for chunk in 0..check_chunks {
            let placed = self.chunk_cells(chunk, check_stride);
            for (i, a) in placed.iter().enumerate() {
                if placed[i + 1..].iter().any(|b| b.0 == a.0) {
                    return false;
                }
            }
            cells.extend_from_slice(&placed);
        }
        let count = cells.len();
        cells.sort_unstable();
        cells.dedup();
        cells.len() == count
    }

    /// The (member, chunk row) of every copy of `chunk`, in md's order, with far copies
    /// `stride_rows` apart.
    fn chunk_cells(&self, chunk: u64, stride_rows: u64) -> heapless::Vec<(usize, u64), MAX_COPIES> {
        let disks = self.disk_count as u64;
        let first = chunk * self.near;
        let stripe = first / disks;
        let first_member = (first % disks) as usize;
        let base_row = if self.layout.far_offset {
            stripe * self.far
        } else {
            stripe
        };
        let mut cells = heapless::Vec::new();
        for j in 0..self.near as usize {
            let (member, row) = if first_member + j >= self.disk_count {
                (first_member + j - self.disk_count, base_row + 1)
            } else {
                (first_member + j, base_row)
            };
            for k in 0..self.far as usize {
                let cell = (
                    self.far_member[k * self.disk_count + member],
                    row + k as u64 * stride_rows,
                );
                assert!(
                    cells.push(cell).is_ok(),
                    "copies are checked against MAX_COPIES"
                );
            }
        }
        cells
    }

    pub fn disk_count(&self) -> usize {
        self.disk_count
    }

    pub fn layout(&self) -> Raid10LayoutBits {
        self.layout
    }

    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// Copies of every block: `near × far`.
    pub fn copies(&self) -> usize {
        self.layout.copies()
    }

    /// Array size as md's `raid10_size` computes it.
    pub fn array_sectors(&self) -> u64 {
        self.array_chunks << self.chunk_shift
    }

    /// Sectors used on each member (md's `dev_sectors` after `calc_sectors`); the rest of the
    /// member holds no array data.
    pub fn dev_sectors_used(&self) -> u64 {
        self.member_chunks_used << self.chunk_shift
    }

    /// Every copy of `array_sector` in md's order (copy 0 first), and how far the run stays
    /// contiguous (to the end of its chunk); `None` past the end of the array.
    pub fn map(&self, array_sector: u64) -> Option<Extent> {
        if array_sector >= self.array_sectors() {
            return None;
        }
        let chunk = array_sector >> self.chunk_shift;
        let in_chunk = array_sector & (self.chunk_sectors - 1);
        let mut copies = heapless::Vec::new();
        for (disk_index, row) in self.chunk_cells(chunk, self.stride_rows) {
            let copy = MemberSector {
                disk_index,
                sector: (row << self.chunk_shift) + in_chunk,
            };
            assert!(
                copies.push(copy).is_ok(),
                "copies are checked against MAX_COPIES"
            );
        }
        Some(Extent {
            sectors: self.chunk_sectors - in_chunk,
            copies,
        })
    }

    /// Which copy of which array sector member cell (`disk_index`, `member_sector`) holds;
    /// `None` if it holds none.
    pub fn unmap(&self, disk_index: usize, member_sector: u64) -> Option<(usize, u64)> {
        if disk_index >= self.disk_count || member_sector >= self.dev_sectors_used() {
            return None;
        }
        let row = member_sector >> self.chunk_shift;
        let in_chunk = member_sector & (self.chunk_sectors - 1);
        let (far_index, near_row) = if self.layout.far_offset {
            (row % self.far, row / self.far)
        } else {
            (row / self.stride_rows, row % self.stride_rows)
        };
        if far_index >= self.far {
            return None;
        }
        let near_member =
            self.far_member_inverse[far_index as usize * self.disk_count + disk_index] as u64;
        let position = near_row * self.disk_count as u64 + near_member;
        let chunk = position / self.near;
        if chunk >= self.array_chunks {
            return None;
        }
        let copy_index = (position % self.near) * self.far + far_index;
        Some((copy_index as usize, (chunk << self.chunk_shift) + in_chunk))
    }

    /// The distinct sets of members holding all copies of some chunk, each sorted. The data
    /// survives exactly while every set keeps at least one live member.
    ///
    /// A chunk's members depend only on where its first near copy lands, `chunk × near` modulo
    /// the member count, and that repeats every `disk_count` chunks; so the first
    /// `disk_count` chunks (or all of them, in a smaller array) show every set there is.
    pub fn mirror_sets(&self) -> Vec<heapless::Vec<usize, MAX_COPIES>> {
        let period = self.array_chunks.min(self.disk_count as u64);
        let mut sets: Vec<heapless::Vec<usize, MAX_COPIES>> = Vec::new();
        for chunk in 0..period {
            let mut set: heapless::Vec<usize, MAX_COPIES> = self
                .chunk_cells(chunk, self.stride_rows)
                .iter()
                .map(|&(member, _)| member)
                .collect();
            set.sort_unstable();
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets.sort_unstable();
        sets
    }

    /// Whether every block keeps a copy on a member marked alive. Exact for the layout, by the
    /// argument on [`Self::mirror_sets`]. `alive.len()` must equal [`Self::disk_count`].
    pub fn survives(&self, alive: &[bool]) -> bool {
        assert_eq!(alive.len(), self.disk_count, "one flag per member");
        let period = self.array_chunks.min(self.disk_count as u64);
        (0..period).all(|chunk| {
            self.chunk_cells(chunk, self.stride_rows)
                .iter()
                .any(|&(member, _)| alive[member])
        })
    }
}

/// Builds md's far-copy member rotation as tables, `None` if a rotation is not a permutation.
///
/// One far step moves a member `near` places on, wrapping within its far set. Sets are
/// `far_set_size` consecutive members; when the count does not divide evenly the last set
/// takes the remainder, and (as in md) any step that lands beyond the start of the last set
/// wraps within the last set, even when it started in the set before.
fn far_member_tables(
    disk_count: usize,
    near: usize,
    far: usize,
    far_set_size: usize,
) -> Option<(Vec<usize>, Vec<usize>)> {
    assert!(far_set_size >= 1 && far_set_size <= disk_count);
    let uneven = !disk_count.is_multiple_of(far_set_size);
    let last_set_start = (disk_count / far_set_size - 1) * far_set_size;
    let last_set_size = far_set_size + disk_count % far_set_size;
    let step = |member: usize| -> usize {
        let set = member / far_set_size;
        let moved = member + near;
        if uneven && moved > last_set_start {
            (moved - last_set_start) % last_set_size + last_set_start
        } else {
            moved % far_set_size + far_set_size * set
        }
    };
    let mut forward = vec![0usize; far * disk_count];
    let mut inverse = vec![usize::MAX; far * disk_count];
    for member in 0..disk_count {
        let mut at = member;
        for k in 0..far {
            if k > 0 {
                at = step(at);
            }
            forward[k * disk_count + member] = at;
            let slot = &mut inverse[k * disk_count + at];
            if *slot != usize::MAX {
                return None;
            }
            *slot = member;
        }
    }
    Some((forward, inverse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ArrayLayout;
    use crate::layout::test_support::{check_bijection, check_unused_cells, chunk_cells, config};
    use alloc::string::ToString;
    use proptest::prelude::*;

    const CHUNK: u32 = 8;

    fn bits(name: &str) -> u32 {
        name.parse::<Raid10LayoutBits>().unwrap().bits()
    }

    fn table(l: &Raid10Layout, chunks: u64) -> Vec<Vec<(usize, u64)>> {
        let layout = ArrayLayout::Raid10(l.clone());
        (0..chunks)
            .map(|c| chunk_cells(&layout, c, l.chunk_sectors()))
            .collect()
    }

    /// A second model of md's `__raid10_find_phys`, written as a loop over sectors rather
    /// than tables, used to cross-check `map`.
    fn reference_cells(
        disks: usize,
        layout_bits: u32,
        chunk_sectors: u64,
        stride_sectors: u64,
        array_sector: u64,
    ) -> Vec<(usize, u64)> {
        let near = (layout_bits & 0xff) as usize;
        let far = ((layout_bits >> 8) & 0xff) as usize;
        let offset = layout_bits & (1 << 16) != 0;
        let set_size = match layout_bits >> 17 {
            0 => disks,
            1 => disks / far,
            _ => near * far,
        };
        let last_start = (disks / set_size - 1) * set_size;
        let last_size = set_size + disks % set_size;
        let virtual_chunk = array_sector / chunk_sectors * near as u64;
        let mut sector = array_sector % chunk_sectors;
        let mut stripe = virtual_chunk / disks as u64;
        let mut dev = (virtual_chunk % disks as u64) as usize;
        if offset {
            stripe *= far as u64;
        }
        sector += stripe * chunk_sectors;
        let mut out = Vec::new();
        for _ in 0..near {
            let mut d = dev;
            let mut s = sector;
            out.push((d, s));
            for _ in 1..far {
                let set = d / set_size;
                d += near;
                if !disks.is_multiple_of(set_size) && d > last_start {
                    d = (d - last_start) % last_size + last_start;
                } else {
                    d = d % set_size + set_size * set;
                }
                s += stride_sectors;
                out.push((d, s));
            }
            dev += 1;
            if dev >= disks {
                dev = 0;
                sector += chunk_sectors;
            }
        }
        out
    }

    /// Whether the reference model, on a virtual array of unbounded size, puts two copies of a
    /// chunk on one member or two copies in one cell (checked over three periods).
    fn reference_is_unsafe(disks: usize, layout_bits: u32) -> bool {
        let chunk = 8u64;
        let offset = layout_bits & (1 << 16) != 0;
        let stride = if offset { chunk } else { 1 << 40 };
        let mut seen = alloc::collections::BTreeSet::new();
        for c in 0..3 * disks as u64 {
            let cells = reference_cells(disks, layout_bits, chunk, stride, c * chunk);
            for (i, a) in cells.iter().enumerate() {
                if cells[i + 1..].iter().any(|b| b.0 == a.0) || !seen.insert(*a) {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn layout_names() {
        let cases = [
            ("n2", 0x102, "n2"),
            ("near2", 0x102, "n2"),
            ("near=3", 0x103, "n3"),
            ("f2", 0x201, "f2"),
            ("far3", 0x301, "f3"),
            ("o2", 0x10201, "o2"),
            ("offset2", 0x10201, "o2"),
            ("n2f2", 0x202, "n2f2"),
            ("near=2,far=2", 0x202, "n2f2"),
            ("n2o3", 0x10302, "n2o3"),
            ("f2+sets", 0x40201, "f2+sets"),
            ("o2+legacysets", 0x30201, "o2+legacysets"),
            ("n1", 0x101, "n1"),
            ("o1", 0x10101, "o1"),
        ];
        for (name, word, canonical) in cases {
            let parsed: Raid10LayoutBits = name.parse().unwrap();
            assert_eq!(parsed.bits(), word, "{name}");
            assert_eq!(parsed.to_string(), canonical, "{name}");
            assert_eq!(Raid10LayoutBits::from_bits(word), Ok(parsed), "{name}");
            assert_eq!(canonical.parse::<Raid10LayoutBits>(), Ok(parsed));
        }
        assert_eq!(Raid10LayoutBits::NEAR2.bits(), 0x102);
        use ParseRaid10LayoutError as E;
        assert_eq!("".parse::<Raid10LayoutBits>(), Err(E::Empty));
        assert_eq!("x2".parse::<Raid10LayoutBits>(), Err(E::UnknownTerm));
        assert_eq!("n".parse::<Raid10LayoutBits>(), Err(E::BadCount));
        assert_eq!("n0".parse::<Raid10LayoutBits>(), Err(E::BadCount));
        assert_eq!("n256".parse::<Raid10LayoutBits>(), Err(E::BadCount));
        assert_eq!("n2n2".parse::<Raid10LayoutBits>(), Err(E::Conflicting));
        assert_eq!("f2o2".parse::<Raid10LayoutBits>(), Err(E::Conflicting));
        assert_eq!("f2+other".parse::<Raid10LayoutBits>(), Err(E::UnknownTerm));
        assert_eq!("n2 ".parse::<Raid10LayoutBits>(), Err(E::UnknownTerm));
    }

    #[test]
    fn layout_word_validation() {
        let invalid = |layout| Err(LayoutError::InvalidRaid10Layout { layout });
        assert_eq!(Raid10LayoutBits::from_bits(0x80102), invalid(0x80102));
        assert_eq!(Raid10LayoutBits::from_bits(0x60201), invalid(0x60201));
        assert_eq!(Raid10LayoutBits::from_bits(0x200), invalid(0x200));
        assert_eq!(Raid10LayoutBits::from_bits(0x002), invalid(0x002));
        // Every word from_bits accepts round-trips through bits() and its name.
        for word in (0u32..0x80000)
            .step_by(97)
            .chain([0x102, 0x201, 0x10201, 0x40202])
        {
            if let Ok(decoded) = Raid10LayoutBits::from_bits(word) {
                assert_eq!(decoded.bits(), word);
                assert_eq!(decoded.to_string().parse(), Ok(decoded));
            }
        }
    }

    #[test]
    fn rejects_bad_geometry() {
        let n2 = 0x102;
        assert_eq!(
            Raid10Layout::new(0, n2, CHUNK, 80),
            Err(LayoutError::NoMembers)
        );
        assert_eq!(Raid10Layout::new(4, n2, 0, 80), Err(LayoutError::ChunkZero));
        assert_eq!(
            Raid10Layout::new(4, n2, 4, 80),
            Err(LayoutError::ChunkTooSmall { chunk_sectors: 4 })
        );
        assert_eq!(
            Raid10Layout::new(4, n2, 24, 80),
            Err(LayoutError::ChunkNotPowerOfTwo { chunk_sectors: 24 })
        );
        assert_eq!(
            Raid10Layout::new(4, 0x101, CHUNK, 80),
            Err(LayoutError::TooFewCopies { copies: 1 })
        );
        assert_eq!(
            Raid10Layout::new(3, 0x202, CHUNK, 80),
            Err(LayoutError::TooManyCopies {
                copies: 4,
                disk_count: 3
            })
        );
        assert_eq!(
            Raid10Layout::new(40, 0x121, CHUNK, 80),
            Err(LayoutError::TooManyCopiesForBound { copies: 33 })
        );
        assert_eq!(
            Raid10Layout::new(4, 0x201, CHUNK, 15),
            Err(LayoutError::MemberTooSmall)
        );
        assert_eq!(
            Raid10Layout::new(4, n2, CHUNK, u64::MAX / 2),
            Err(LayoutError::SizeOverflow)
        );
    }

    /// near2 over 4 members: chunk c's copies on members 2c mod 4 and the next, row c/2.
    #[test]
    fn near2_over_4() {
        let l = Raid10Layout::new(4, bits("n2"), CHUNK, 10 * 8 + 5).unwrap();
        assert_eq!(l.array_sectors(), 20 * 8);
        assert_eq!(l.dev_sectors_used(), 10 * 8);
        assert_eq!(
            table(&l, 5),
            vec![
                vec![(0, 0), (1, 0)],
                vec![(2, 0), (3, 0)],
                vec![(0, 1), (1, 1)],
                vec![(2, 1), (3, 1)],
                vec![(0, 2), (1, 2)],
            ]
        );
        let sets: Vec<Vec<usize>> = l.mirror_sets().iter().map(|s| s.to_vec()).collect();
        assert_eq!(sets, vec![vec![0, 1], vec![2, 3]]);
        assert!(l.survives(&[false, true, false, true]));
        assert!(!l.survives(&[false, false, true, true]));
    }

    /// near2 over 3 members: the second copy of chunk 1 runs off member 2 onto member 0, one
    /// row down. Array = 10 chunks × 3 / 2 = 15 chunks.
    #[test]
    fn near2_over_3() {
        let l = Raid10Layout::new(3, bits("n2"), CHUNK, 10 * 8).unwrap();
        assert_eq!(l.array_sectors(), 15 * 8);
        assert_eq!(l.dev_sectors_used(), 10 * 8);
        assert_eq!(
            table(&l, 6),
            vec![
                vec![(0, 0), (1, 0)],
                vec![(2, 0), (0, 1)],
                vec![(1, 1), (2, 1)],
                vec![(0, 2), (1, 2)],
                vec![(2, 2), (0, 3)],
                vec![(1, 3), (2, 3)],
            ]
        );
        let e = l.map(8 + 3).unwrap();
        assert_eq!(e.sectors, 5);
        assert_eq!(
            e.copies.as_slice(),
            &[
                MemberSector {
                    disk_index: 2,
                    sector: 3
                },
                MemberSector {
                    disk_index: 0,
                    sector: 8 + 3
                },
            ]
        );
        assert_eq!(l.unmap(0, 8 + 3), Some((1, 8 + 3)));
        assert_eq!(l.unmap(0, 10 * 8), None);
        // Any single member can fail; no two can.
        assert!(l.survives(&[false, true, true]));
        assert!(!l.survives(&[false, false, true]));
        assert!(!l.survives(&[true, false, false]));
        assert!(!l.survives(&[false, true, false]));
    }

    /// far2 over 4 members with 10 chunks each: the second half (stride 5 rows) holds the far
    /// copies, shifted one member on.
    #[test]
    fn far2_over_4() {
        let l = Raid10Layout::new(4, bits("f2"), CHUNK, 10 * 8 + 7).unwrap();
        assert_eq!(l.array_sectors(), 20 * 8);
        assert_eq!(l.dev_sectors_used(), 10 * 8);
        assert_eq!(
            table(&l, 6),
            vec![
                vec![(0, 0), (1, 5)],
                vec![(1, 0), (2, 5)],
                vec![(2, 0), (3, 5)],
                vec![(3, 0), (0, 5)],
                vec![(0, 1), (1, 6)],
                vec![(1, 1), (2, 6)],
            ]
        );
        assert_eq!(table(&l, 20)[19], vec![(3, 4), (0, 9)]);
        assert!(l.survives(&[true, false, true, false]));
        assert!(!l.survives(&[true, false, false, true]));
    }

    /// offset2 over 4 members: every stripe row is followed by a copy of itself shifted one
    /// member on.
    #[test]
    fn offset2_over_4() {
        let l = Raid10Layout::new(4, bits("o2"), CHUNK, 10 * 8).unwrap();
        assert_eq!(l.array_sectors(), 20 * 8);
        assert_eq!(
            table(&l, 6),
            vec![
                vec![(0, 0), (1, 1)],
                vec![(1, 0), (2, 1)],
                vec![(2, 0), (3, 1)],
                vec![(3, 0), (0, 1)],
                vec![(0, 2), (1, 3)],
                vec![(1, 2), (2, 3)],
            ]
        );
        assert_eq!(l.unmap(0, 8 + 2), Some((1, 3 * 8 + 2)));
    }

    /// far2 over 3 members, 10 chunks each: stride 5 rows, array 15 chunks.
    #[test]
    fn far2_over_3() {
        let l = Raid10Layout::new(3, bits("f2"), CHUNK, 10 * 8).unwrap();
        assert_eq!(l.array_sectors(), 15 * 8);
        assert_eq!(
            table(&l, 5),
            vec![
                vec![(0, 0), (1, 5)],
                vec![(1, 0), (2, 5)],
                vec![(2, 0), (0, 5)],
                vec![(0, 1), (1, 6)],
                vec![(1, 1), (2, 6)],
            ]
        );
        assert!(!l.survives(&[false, true, false]));
        assert!(l.survives(&[false, true, true]));
    }

    /// far2 with far sets (bit 18) over 5 members: sets {0,1} and {2,3,4} (the last set takes
    /// the remainder); far copies rotate within their set. md's own `enough()` check looks at
    /// windows of consecutive members and would call {2,4} failing survivable; it is not.
    #[test]
    fn far2_sets_over_5() {
        let l = Raid10Layout::new(5, bits("f2+sets"), CHUNK, 4 * 8).unwrap();
        assert_eq!(
            table(&l, 5),
            vec![
                vec![(0, 0), (1, 2)],
                vec![(1, 0), (0, 2)],
                vec![(2, 0), (3, 2)],
                vec![(3, 0), (4, 2)],
                vec![(4, 0), (2, 2)],
            ]
        );
        assert!(!l.survives(&[true, true, false, true, false]));
        assert!(l.survives(&[false, true, false, true, true]));
    }

    #[test]
    fn unsafe_geometries_md_accepts_are_refused() {
        // n2o2 on 5 members: the copy that wraps onto member 0 lands on the row holding the
        // offset copies.
        let n2o2 = 0x10202;
        assert_eq!(
            Raid10Layout::new(5, n2o2, CHUNK, 800),
            Err(LayoutError::UnsafeRaid10Geometry {
                layout: n2o2,
                disk_count: 5
            })
        );
        assert!(Raid10Layout::new(4, n2o2, CHUNK, 800).is_ok());
        // Legacy far sets of 4 / 2 = 2 members with near 2: far copies fall on the near copy's
        // own member.
        let legacy = 0x20202;
        assert_eq!(
            Raid10Layout::new(4, legacy, CHUNK, 800),
            Err(LayoutError::UnsafeRaid10Geometry {
                layout: legacy,
                disk_count: 4
            })
        );
        // Far sets of 4 over 9 members with near 2: a step from the set before the last one
        // wraps into the last set, where another far copy already is.
        let sets = 0x40202;
        assert_eq!(
            Raid10Layout::new(9, sets, CHUNK, 800),
            Err(LayoutError::UnsafeRaid10Geometry {
                layout: sets,
                disk_count: 9
            })
        );
        assert!(Raid10Layout::new(8, sets, CHUNK, 800).is_ok());
    }

    fn check_all(l: &Raid10Layout) {
        let limits = vec![l.dev_sectors_used(); l.disk_count()];
        let layout = ArrayLayout::Raid10(l.clone());
        let used = check_bijection(&layout, l.chunk_sectors(), &limits);
        assert_eq!(used.len() as u64, l.array_sectors() * l.copies() as u64);
        check_unused_cells(&layout, &used, &limits, 1);
        // The reference model agrees chunk by chunk (mid-chunk sector).
        let chunk = l.chunk_sectors();
        let stride = if l.layout().far_offset {
            chunk
        } else {
            l.dev_sectors_used() / u64::from(l.layout().far_copies)
        };
        for c in 0..l.array_sectors() / chunk {
            let s = c * chunk + 3;
            let ours: Vec<(usize, u64)> = l
                .map(s)
                .unwrap()
                .copies
                .iter()
                .map(|m| (m.disk_index, m.sector))
                .collect();
            assert_eq!(
                ours,
                reference_cells(l.disk_count(), l.layout().bits(), chunk, stride, s),
                "chunk {c}"
            );
        }
    }

    /// Brute-force survival: every chunk keeps a live copy.
    fn survives_brute_force(l: &Raid10Layout, alive: &[bool]) -> bool {
        let chunk = l.chunk_sectors();
        (0..l.array_sectors() / chunk).all(|c| {
            l.map(c * chunk)
                .unwrap()
                .copies
                .iter()
                .any(|m| alive[m.disk_index])
        })
    }

    fn check_survival_exhaustively(l: &Raid10Layout) {
        let disks = l.disk_count();
        for mask in 0u32..(1 << disks) {
            let alive: Vec<bool> = (0..disks).map(|d| mask & (1 << d) != 0).collect();
            assert_eq!(
                l.survives(&alive),
                survives_brute_force(l, &alive),
                "alive {alive:?}"
            );
            let by_sets = l
                .mirror_sets()
                .iter()
                .all(|set| set.iter().any(|&d| alive[d]));
            assert_eq!(by_sets, l.survives(&alive));
        }
    }

    #[test]
    fn exhaustive_small_geometries() {
        let mut accepted = 0;
        for disks in 2..=6usize {
            for near in 1..=disks as u32 {
                for far in 1..=disks as u32 {
                    if near * far > disks as u32 || near * far < 2 {
                        continue;
                    }
                    for extra in [0u32, 1 << 16, 1 << 17, 1 << 18, (1 << 16) | (1 << 18)] {
                        let word = near | far << 8 | extra;
                        for member_chunks in [far as u64, 2 * far as u64 + 1, 7] {
                            let size = member_chunks * u64::from(CHUNK) + 3;
                            match Raid10Layout::new(disks, word, CHUNK, size) {
                                Ok(l) => {
                                    accepted += 1;
                                    check_all(&l);
                                    check_survival_exhaustively(&l);
                                }
                                Err(LayoutError::UnsafeRaid10Geometry { .. }) => {
                                    assert!(
                                        reference_is_unsafe(disks, word),
                                        "{word:#x} on {disks}"
                                    );
                                    // mdadm's own shapes are always accepted.
                                    assert!(
                                        extra & !(1 << 16) != 0 || (near > 1 && far > 1),
                                        "refused plain layout {word:#x} on {disks}"
                                    );
                                }
                                Err(e) => panic!("{word:#x} on {disks}: {e}"),
                            }
                        }
                    }
                }
            }
        }
        assert!(accepted > 200);
    }

    proptest! {
        #![proptest_config(config(48))]
        #[test]
        fn prop_bijection(
            disks in 2usize..=9,
            near in 1u32..=4,
            far in 1u32..=4,
            extra in prop::sample::select(vec![0u32, 1 << 16, 1 << 17, 1 << 18]),
            chunk_shift in 3u32..=5,
            member_chunks in 1u64..=14,
            tail in 0u64..32,
        ) {
            let chunk = 1u32 << chunk_shift;
            let word = near | far << 8 | extra;
            let size = member_chunks * u64::from(chunk) + tail % u64::from(chunk);
            let copies = (near * far) as usize;
            match Raid10Layout::new(disks, word, chunk, size) {
                Ok(l) => {
                    prop_assert_eq!(
                        l.array_sectors(),
                        member_chunks / u64::from(far) * disks as u64 / u64::from(near)
                            * u64::from(chunk)
                    );
                    prop_assert!(l.dev_sectors_used() <= size);
                    check_all(&l);
                }
                Err(LayoutError::TooFewCopies { .. }) => prop_assert!(copies < 2),
                Err(LayoutError::TooManyCopies { .. }) => prop_assert!(copies > disks),
                Err(LayoutError::MemberTooSmall) => {
                    prop_assert!(member_chunks / u64::from(far) * disks as u64 / u64::from(near) == 0)
                }
                Err(LayoutError::UnsafeRaid10Geometry { .. }) => {
                    prop_assert!(reference_is_unsafe(disks, word));
                    prop_assert!(extra & (1 << 17 | 1 << 18) != 0 || (near > 1 && far > 1));
                }
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }
    }
}
