//! RAID 4, 5 and 6 address maps as md lays them out: where each data chunk, the P chunk and the
//! Q chunk of every stripe live, and the Q syndrome slot (coefficient index) of each data chunk.
//!
//! md's rules (drivers/md/raid5.c, `raid5_compute_sector`, `raid6_d0`, `raid6_idx_to_slot`):
//! array chunk `c` is data chunk `c mod D` of stripe `c div D` (`D` data members). A stripe is
//! one chunk row: the same `stripe × chunk` offset on every member. The layout number
//! ("algorithm") decides, per stripe, which member holds P (and Q for RAID6) and in which order
//! the data chunks fill the remaining members:
//!
//! * asymmetric (0, 1), parity-first (4), parity-last (5), RAID4, and the DDF "restart" forms
//!   (8, 9): data in physical member order, skipping the parity members;
//! * symmetric (2, 3) and DDF N-continue (10): data starts on the member after the parity
//!   members and wraps round, so consecutive chunks keep rotating across all members;
//! * the `-6` layouts (16–20): the RAID5 layout of the same name over the first `n − 1`
//!   members, Q always on the last member.
//!
//! "Left" layouts move P one member down per stripe starting at the last data position; "right"
//! layouts start P on member 0 and move it up. RAID6 puts Q right after P (wrapping to member 0
//! when P is last), DDF N-continue puts Q right before P.
//!
//! Q = Σ gⁱ·Dᵢ where `i` is the data chunk's syndrome slot. md numbers slots by walking the
//! members in physical order, starting on the member after Q (member 0 when Q is the last
//! member) and skipping P and Q; for the symmetric layouts this is the logical data order, for
//! the others it is not. The DDF layouts instead walk from member 0 and count P and Q too, so a
//! data chunk's slot is its member index (slots are then not contiguous: P's and Q's slots are
//! simply absent from the sum). All of that is exposed by [`Raid5Layout::syndrome_slot`].
//!
//! Units as in the rest of `layout`: 512-byte sectors, member sectors relative to the member's
//! `data_offset`, `disk_index` = role in the array.

use core::fmt;
use core::str::FromStr;

use super::{Extent, LayoutError, MemberSector, single_copy};

/// The parity RAID levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParityLevel {
    /// Dedicated parity on the last member.
    Raid4,
    /// Rotating single parity.
    Raid5,
    /// P and Q parity.
    Raid6,
}

impl ParityLevel {
    /// md's level number.
    pub fn md_level(self) -> u32 {
        match self {
            ParityLevel::Raid4 => 4,
            ParityLevel::Raid5 => 5,
            ParityLevel::Raid6 => 6,
        }
    }

    /// The level for md's level number, if it is a parity level.
    pub fn from_md_level(level: u32) -> Option<Self> {
        match level {
            4 => Some(ParityLevel::Raid4),
            5 => Some(ParityLevel::Raid5),
            6 => Some(ParityLevel::Raid6),
            _ => None,
        }
    }

    /// Parity chunks per stripe, which is also how many members may fail.
    pub fn parity_disks(self) -> usize {
        match self {
            ParityLevel::Raid6 => 2,
            ParityLevel::Raid4 | ParityLevel::Raid5 => 1,
        }
    }

    /// The fewest members md runs the level with (mdadm and the kernel agree).
    pub fn min_disk_count(self) -> usize {
        match self {
            ParityLevel::Raid6 => 4,
            ParityLevel::Raid4 | ParityLevel::Raid5 => 2,
        }
    }

    /// The layout number mdadm writes when none is asked for: left-symmetric for RAID5/6, 0
    /// for RAID4 (md ignores the layout of a RAID4 array).
    pub fn default_layout_number(self) -> u32 {
        match self {
            ParityLevel::Raid4 => 0,
            ParityLevel::Raid5 | ParityLevel::Raid6 => ParityAlgorithm::LeftSymmetric.md_number(),
        }
    }
}

/// mdadm's spelling: `raid4`, `raid5`, `raid6`.
impl fmt::Display for ParityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raid{}", self.md_level())
    }
}

/// md's RAID4/5/6 layouts ("algorithms"), by their md layout numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParityAlgorithm {
    /// 0: P moves down from the last member; data restarts at member 0 every stripe.
    LeftAsymmetric,
    /// 1: P moves up from member 0; data restarts at member 0.
    RightAsymmetric,
    /// 2 (the default): P moves down from the last member; data continues after P.
    LeftSymmetric,
    /// 3: P moves up from member 0; data continues after P.
    RightSymmetric,
    /// 4: P (and Q) on the first members.
    ParityFirst,
    /// 5: P (and Q) on the last members; RAID4's placement.
    ParityLast,
    /// 8, RAID6 only: DDF PRL=6 RLQ=1, right-asymmetric placement with DDF Q order.
    DdfZeroRestart,
    /// 9, RAID6 only: DDF PRL=6 RLQ=2, left-asymmetric shifted by one stripe, DDF Q order.
    DdfNRestart,
    /// 10, RAID6 only: DDF PRL=6 RLQ=3, left-symmetric with Q before P, DDF Q order.
    DdfNContinue,
    /// 16, RAID6 only: left-asymmetric over all but the last member, Q on the last.
    LeftAsymmetric6,
    /// 17, RAID6 only: right-asymmetric over all but the last member, Q on the last.
    RightAsymmetric6,
    /// 18, RAID6 only: left-symmetric over all but the last member, Q on the last.
    LeftSymmetric6,
    /// 19, RAID6 only: right-symmetric over all but the last member, Q on the last.
    RightSymmetric6,
    /// 20, RAID6 only: parity-first over all but the last member, Q on the last.
    ParityFirst6,
}

impl ParityAlgorithm {
    /// The default for RAID5 and RAID6.
    pub const DEFAULT: ParityAlgorithm = ParityAlgorithm::LeftSymmetric;

    /// Every algorithm, in md number order.
    pub const ALL: [ParityAlgorithm; 14] = [
        ParityAlgorithm::LeftAsymmetric,
        ParityAlgorithm::RightAsymmetric,
        ParityAlgorithm::LeftSymmetric,
        ParityAlgorithm::RightSymmetric,
        ParityAlgorithm::ParityFirst,
        ParityAlgorithm::ParityLast,
        ParityAlgorithm::DdfZeroRestart,
        ParityAlgorithm::DdfNRestart,
        ParityAlgorithm::DdfNContinue,
        ParityAlgorithm::LeftAsymmetric6,
        ParityAlgorithm::RightAsymmetric6,
        ParityAlgorithm::LeftSymmetric6,
        ParityAlgorithm::RightSymmetric6,
        ParityAlgorithm::ParityFirst6,
    ];

    /// The algorithm md's layout number names, whatever the level.
    pub fn from_md_number(number: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.md_number() == number)
    }

    /// md's layout number (the superblock's `layout` field).
    pub fn md_number(self) -> u32 {
        match self {
            ParityAlgorithm::LeftAsymmetric => 0,
            ParityAlgorithm::RightAsymmetric => 1,
            ParityAlgorithm::LeftSymmetric => 2,
            ParityAlgorithm::RightSymmetric => 3,
            ParityAlgorithm::ParityFirst => 4,
            ParityAlgorithm::ParityLast => 5,
            ParityAlgorithm::DdfZeroRestart => 8,
            ParityAlgorithm::DdfNRestart => 9,
            ParityAlgorithm::DdfNContinue => 10,
            ParityAlgorithm::LeftAsymmetric6 => 16,
            ParityAlgorithm::RightAsymmetric6 => 17,
            ParityAlgorithm::LeftSymmetric6 => 18,
            ParityAlgorithm::RightSymmetric6 => 19,
            ParityAlgorithm::ParityFirst6 => 20,
        }
    }

    /// mdadm's name.
    pub fn name(self) -> &'static str {
        match self {
            ParityAlgorithm::LeftAsymmetric => "left-asymmetric",
            ParityAlgorithm::RightAsymmetric => "right-asymmetric",
            ParityAlgorithm::LeftSymmetric => "left-symmetric",
            ParityAlgorithm::RightSymmetric => "right-symmetric",
            ParityAlgorithm::ParityFirst => "parity-first",
            ParityAlgorithm::ParityLast => "parity-last",
            ParityAlgorithm::DdfZeroRestart => "ddf-zero-restart",
            ParityAlgorithm::DdfNRestart => "ddf-N-restart",
            ParityAlgorithm::DdfNContinue => "ddf-N-continue",
            ParityAlgorithm::LeftAsymmetric6 => "left-asymmetric-6",
            ParityAlgorithm::RightAsymmetric6 => "right-asymmetric-6",
            ParityAlgorithm::LeftSymmetric6 => "left-symmetric-6",
            ParityAlgorithm::RightSymmetric6 => "right-symmetric-6",
            ParityAlgorithm::ParityFirst6 => "parity-first-6",
        }
    }

    /// A DDF layout: Q's syndrome slots follow member order from member 0, P and Q included.
    pub fn is_ddf(self) -> bool {
        matches!(
            self,
            ParityAlgorithm::DdfZeroRestart
                | ParityAlgorithm::DdfNRestart
                | ParityAlgorithm::DdfNContinue
        )
    }

    /// A `-6` layout: RAID5 placement over all members but the last, Q on the last.
    pub fn is_q_last(self) -> bool {
        matches!(
            self,
            ParityAlgorithm::LeftAsymmetric6
                | ParityAlgorithm::RightAsymmetric6
                | ParityAlgorithm::LeftSymmetric6
                | ParityAlgorithm::RightSymmetric6
                | ParityAlgorithm::ParityFirst6
        )
    }

    /// Whether md runs this algorithm at `level`. RAID4 has one placement, parity-last (md
    /// ignores a RAID4 array's layout number, see [`Raid5Layout::new`]).
    pub fn valid_for(self, level: ParityLevel) -> bool {
        match level {
            ParityLevel::Raid4 => self == ParityAlgorithm::ParityLast,
            ParityLevel::Raid5 => self.md_number() <= 5,
            ParityLevel::Raid6 => true,
        }
    }

    /// Parses an mdadm layout name for `level`, as mdadm does: at RAID5 the DDF names mean the
    /// RAID5 layouts of the same placement (`ddf-zero-restart` = right-asymmetric,
    /// `ddf-N-restart` = left-asymmetric, `ddf-N-continue` = left-symmetric) and the `-6` names
    /// are refused; at RAID4 only `parity-last` (or `default`) is accepted.
    pub fn parse_for_level(
        level: ParityLevel,
        text: &str,
    ) -> Result<Self, ParseParityAlgorithmError> {
        let parsed: ParityAlgorithm = text.parse()?;
        let algorithm = match (level, parsed) {
            (ParityLevel::Raid4, _) if text == "default" => ParityAlgorithm::ParityLast,
            (ParityLevel::Raid5, ParityAlgorithm::DdfZeroRestart) => {
                ParityAlgorithm::RightAsymmetric
            }
            (ParityLevel::Raid5, ParityAlgorithm::DdfNRestart) => ParityAlgorithm::LeftAsymmetric,
            (ParityLevel::Raid5, ParityAlgorithm::DdfNContinue) => ParityAlgorithm::LeftSymmetric,
            (_, other) => other,
        };
        if algorithm.valid_for(level) {
            Ok(algorithm)
        } else {
            Err(ParseParityAlgorithmError::NotForLevel { level })
        }
    }
}

/// mdadm's name (`left-symmetric`, `parity-first-6`, `ddf-N-continue`, …).
impl fmt::Display for ParityAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a parity layout name did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseParityAlgorithmError {
    /// Not one of mdadm's RAID5/RAID6 layout names.
    Unknown,
    /// A known name, but not a layout of this level.
    NotForLevel { level: ParityLevel },
}

impl fmt::Display for ParseParityAlgorithmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseParityAlgorithmError::Unknown => f.write_str(
                "unknown parity layout (expected left-asymmetric, right-asymmetric, \
                 left-symmetric, right-symmetric, parity-first, parity-last, la, ra, ls, rs, \
                 a -6 form or a ddf- name)",
            ),
            ParseParityAlgorithmError::NotForLevel { level } => {
                write!(f, "that layout is not a {level} layout")
            }
        }
    }
}

/// Parses every name mdadm knows for RAID5/6 layouts: the long names, `la` `ra` `ls` `rs`,
/// `default` (left-symmetric), the `-6` forms and the DDF names (as the RAID6 DDF layouts; see
/// [`ParityAlgorithm::parse_for_level`] for RAID5's reading of those). Case-sensitive, as mdadm.
impl FromStr for ParityAlgorithm {
    type Err = ParseParityAlgorithmError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let abbreviated = match text {
            "la" => Some(ParityAlgorithm::LeftAsymmetric),
            "ra" => Some(ParityAlgorithm::RightAsymmetric),
            "ls" | "default" => Some(ParityAlgorithm::LeftSymmetric),
            "rs" => Some(ParityAlgorithm::RightSymmetric),
            _ => None,
        };
        abbreviated
            .or_else(|| Self::ALL.into_iter().find(|a| a.name() == text))
            .ok_or(ParseParityAlgorithmError::Unknown)
    }
}

/// The most members a RAID6 array may have: mdadm's limit, which also keeps every syndrome
/// slot below 255 so that Q's coefficients gⁱ are distinct.
pub const MAX_RAID6_DISKS: usize = 256;

/// The most members a RAID6 array with a DDF layout may have: there a data chunk's slot is its
/// member index, and slot 255 would repeat slot 0's coefficient (g has order 255).
pub const MAX_RAID6_DDF_DISKS: usize = 255;

/// Where an array sector sits within its stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeAddress {
    /// The stripe (chunk row) index.
    pub stripe: u64,
    /// The logical data chunk within the stripe, `0 .. data_disks`.
    pub data_index: usize,
    /// Sectors into the chunk.
    pub offset_sectors: u64,
}

/// What a member holds in a given stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// Data chunk `data_index` of the stripe.
    Data { data_index: usize },
    /// The stripe's P (XOR) parity.
    P,
    /// The stripe's Q (Reed–Solomon) syndrome; RAID6 only.
    Q,
}

/// What a member cell holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParityCell {
    /// This array sector's data.
    Data { array_sector: u64 },
    /// P parity of this stripe.
    P { stripe: u64 },
    /// Q syndrome of this stripe.
    Q { stripe: u64 },
}

/// How the data chunks of one stripe fill the members that do not hold parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// In physical member order, skipping the parity members.
    Skip,
    /// Data chunk `i` on member `(start + i) mod ring`; the ring (members `0 .. ring`) holds
    /// every data member and P (and Q unless Q sits on member `ring`).
    Rotate { start: usize, ring: usize },
}

/// The placement of one stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StripeShape {
    p: usize,
    q: Option<usize>,
    fill: Fill,
}

/// The RAID4/5/6 address map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raid5Layout {
    level: ParityLevel,
    /// The placement in force (parity-last for RAID4 whatever `layout_number` says).
    algorithm: ParityAlgorithm,
    /// The layout number as given (the superblock's `layout`).
    layout_number: u32,
    disk_count: usize,
    data_disks: usize,
    chunk_sectors: u64,
    chunk_shift: u32,
    /// Whole chunk rows per member.
    stripe_count: u64,
}

impl Raid5Layout {
    /// Builds the map for a parity level over `disk_count` members with md layout number
    /// `algorithm`, a power-of-two chunk of at least 4 KiB (md's rule for RAID4/5/6: a whole
    /// number of 4 KiB pages and a power of two), and `member_sectors` per member (md's
    /// `dev_sectors`: the superblock's `size`, or the usable data size when creating).
    ///
    /// RAID4 ignores `algorithm`, as md does (mdadm writes 0): parity is on the last member.
    /// RAID5 takes layouts 0–5; RAID6 takes 0–5, the DDF layouts 8–10 and the `-6` layouts
    /// 16–20. RAID4/5 need 2 members, RAID6 4 and at most [`MAX_RAID6_DISKS`]
    /// ([`MAX_RAID6_DDF_DISKS`] with a DDF layout).
    pub fn new(
        level: ParityLevel,
        disk_count: usize,
        algorithm: u32,
        chunk_sectors: u32,
        member_sectors: u64,
    ) -> Result<Self, LayoutError> {
        if disk_count == 0 {
            return Err(LayoutError::NoMembers);
        }
        let min_disk_count = level.min_disk_count();
        if disk_count < min_disk_count {
            return Err(LayoutError::TooFewMembers {
                level,
                disk_count,
                min_disk_count,
            });
        }
        let effective = match level {
            ParityLevel::Raid4 => ParityAlgorithm::ParityLast,
            ParityLevel::Raid5 | ParityLevel::Raid6 => ParityAlgorithm::from_md_number(algorithm)
                .filter(|a| a.valid_for(level))
                .ok_or(LayoutError::UnknownParityAlgorithm { level, algorithm })?,
        };
        if level == ParityLevel::Raid6 {
            let max_disk_count = if effective.is_ddf() {
                MAX_RAID6_DDF_DISKS
            } else {
                MAX_RAID6_DISKS
            };
            if disk_count > max_disk_count {
                return Err(LayoutError::TooManyMembers {
                    level,
                    disk_count,
                    max_disk_count,
                });
            }
        }
        if chunk_sectors == 0 {
            return Err(LayoutError::ChunkZero);
        }
        if chunk_sectors < 8 {
            return Err(LayoutError::ChunkTooSmall { chunk_sectors });
        }
        if !chunk_sectors.is_power_of_two() {
            return Err(LayoutError::ChunkNotPowerOfTwo { chunk_sectors });
        }
        let chunk_shift = chunk_sectors.trailing_zeros();
        let data_disks = disk_count - level.parity_disks();
        // md's raid5_size: the member rounded down to whole chunks, times the data members.
        let stripe_count = member_sectors >> chunk_shift;
        if stripe_count == 0 {
            return Err(LayoutError::MemberTooSmall);
        }
        (stripe_count << chunk_shift)
            .checked_mul(data_disks as u64)
            .ok_or(LayoutError::SizeOverflow)?;
        Ok(Raid5Layout {
            level,
            algorithm: effective,
            layout_number: algorithm,
            disk_count,
            data_disks,
            chunk_sectors: u64::from(chunk_sectors),
            chunk_shift,
            stripe_count,
        })
    }

    pub fn level(&self) -> ParityLevel {
        self.level
    }

    /// The placement in force (parity-last for RAID4).
    pub fn algorithm(&self) -> ParityAlgorithm {
        self.algorithm
    }

    /// The layout number the map was built with, for the superblock.
    pub fn layout_number(&self) -> u32 {
        self.layout_number
    }

    pub fn disk_count(&self) -> usize {
        self.disk_count
    }

    /// Members holding data in each stripe: `disk_count` minus 1 (RAID4/5) or 2 (RAID6).
    pub fn data_disks(&self) -> usize {
        self.data_disks
    }

    /// Parity chunks per stripe: 1 or 2.
    pub fn parity_disks(&self) -> usize {
        self.level.parity_disks()
    }

    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// Bytes of one cell (a chunk on one member): what a rebuild, resync or scrub moves per
    /// member and stripe.
    pub fn cell_bytes(&self) -> usize {
        self.chunk_sectors as usize * crate::block::SECTOR_BYTES
    }

    /// Stripes (chunk rows) in the array.
    pub fn stripe_count(&self) -> u64 {
        self.stripe_count
    }

    /// Array sectors per stripe: chunk × data members.
    pub fn stripe_data_sectors(&self) -> u64 {
        self.chunk_sectors * self.data_disks as u64
    }

    /// Array size as md's `raid5_size` computes it.
    pub fn array_sectors(&self) -> u64 {
        self.stripe_count * self.stripe_data_sectors()
    }

    /// Sectors used on each member (whole chunks); the rest of the member holds nothing.
    pub fn dev_sectors_used(&self) -> u64 {
        self.stripe_count << self.chunk_shift
    }

    /// The stripe, data chunk and chunk offset of `array_sector`; `None` past the end.
    pub fn stripe_of(&self, array_sector: u64) -> Option<StripeAddress> {
        if array_sector >= self.array_sectors() {
            return None;
        }
        let chunk = array_sector >> self.chunk_shift;
        let data_disks = self.data_disks as u64;
        Some(StripeAddress {
            stripe: chunk / data_disks,
            data_index: (chunk % data_disks) as usize,
            offset_sectors: array_sector & (self.chunk_sectors - 1),
        })
    }

    /// The member sector of `offset_sectors` into any chunk of `stripe`: every member keeps
    /// the stripe's chunk at the same place.
    pub fn member_sector(&self, stripe: u64, offset_sectors: u64) -> u64 {
        assert!(offset_sectors < self.chunk_sectors, "offset inside a chunk");
        (stripe << self.chunk_shift) + offset_sectors
    }

    /// The member holding `stripe`'s P parity.
    pub fn parity_disk(&self, stripe: u64) -> usize {
        self.shape(stripe).p
    }

    /// The member holding `stripe`'s Q syndrome; `None` below RAID6.
    pub fn q_disk(&self, stripe: u64) -> Option<usize> {
        self.shape(stripe).q
    }

    /// The member holding data chunk `data_index` (`< data_disks`) of `stripe`.
    pub fn data_disk(&self, stripe: u64, data_index: usize) -> usize {
        assert!(data_index < self.data_disks, "data index inside the stripe");
        let shape = self.shape(stripe);
        match shape.fill {
            Fill::Rotate { start, ring } => (start + data_index) % ring,
            Fill::Skip => {
                let (low, high) = match shape.q {
                    Some(q) => (shape.p.min(q), Some(shape.p.max(q))),
                    None => (shape.p, None),
                };
                let mut disk = data_index;
                if disk >= low {
                    disk += 1;
                }
                if high.is_some_and(|high| disk >= high) {
                    disk += 1;
                }
                disk
            }
        }
    }

    /// What member `disk_index` (`< disk_count`) holds in `stripe`.
    pub fn member_role(&self, stripe: u64, disk_index: usize) -> MemberRole {
        assert!(disk_index < self.disk_count, "member inside the array");
        let shape = self.shape(stripe);
        if disk_index == shape.p {
            return MemberRole::P;
        }
        if shape.q == Some(disk_index) {
            return MemberRole::Q;
        }
        let data_index = match shape.fill {
            Fill::Rotate { start, ring } => {
                assert!(disk_index < ring, "only Q lies outside the ring");
                (disk_index + ring - start) % ring
            }
            Fill::Skip => {
                let below = |parity: usize| usize::from(parity < disk_index);
                disk_index - below(shape.p) - shape.q.map_or(0, below)
            }
        };
        MemberRole::Data { data_index }
    }

    /// The Q coefficient index of the data chunk on `disk_index` in `stripe` (Q = Σ gˢˡᵒᵗ·D),
    /// as md's `raid6_idx_to_slot` assigns it; `None` for the P and Q members and below RAID6.
    ///
    /// md layouts: walk the members from the one after Q (member 0 when Q is the last member),
    /// counting data members only; slots are `0 .. data_disks`. DDF layouts: the slot is the
    /// member index, `0 .. disk_count` with P's and Q's slots unused.
    pub fn syndrome_slot(&self, stripe: u64, disk_index: usize) -> Option<u8> {
        assert!(disk_index < self.disk_count, "member inside the array");
        let shape = self.shape(stripe);
        let q = shape.q?;
        if disk_index == shape.p || disk_index == q {
            return None;
        }
        let slot = if self.algorithm.is_ddf() {
            disk_index
        } else {
            let n = self.disk_count;
            let first = if q == n - 1 { 0 } else { q + 1 };
            // Q is always last in the walk, so only P can come before this member.
            let steps = (disk_index + n - first) % n;
            let p_steps = (shape.p + n - first) % n;
            steps - usize::from(p_steps < steps)
        };
        // `new` bounds the member count so that every slot stays below 255.
        let slot = u8::try_from(slot).ok().filter(|&s| s < 255);
        assert!(slot.is_some(), "syndrome slot below 255");
        slot
    }

    /// How many coefficient slots Q spans: `data_disks` for md layouts, `disk_count` for DDF
    /// layouts (whose P and Q slots are unused); 0 below RAID6.
    pub fn syndrome_width(&self) -> usize {
        match self.level {
            ParityLevel::Raid6 if self.algorithm.is_ddf() => self.disk_count,
            ParityLevel::Raid6 => self.data_disks,
            ParityLevel::Raid4 | ParityLevel::Raid5 => 0,
        }
    }

    /// Where `array_sector`'s data lives (the single copy) and how far it stays contiguous (to
    /// the end of its chunk); `None` past the end of the array.
    pub fn map(&self, array_sector: u64) -> Option<Extent> {
        let at = self.stripe_of(array_sector)?;
        let copy = MemberSector {
            disk_index: self.data_disk(at.stripe, at.data_index),
            sector: self.member_sector(at.stripe, at.offset_sectors),
        };
        Some(Extent {
            sectors: self.chunk_sectors - at.offset_sectors,
            copies: single_copy(copy),
        })
    }

    /// What member cell (`disk_index`, `member_sector`) holds; `None` outside the array.
    pub fn unmap(&self, disk_index: usize, member_sector: u64) -> Option<ParityCell> {
        if disk_index >= self.disk_count || member_sector >= self.dev_sectors_used() {
            return None;
        }
        let stripe = member_sector >> self.chunk_shift;
        let offset = member_sector & (self.chunk_sectors - 1);
        Some(match self.member_role(stripe, disk_index) {
            MemberRole::P => ParityCell::P { stripe },
            MemberRole::Q => ParityCell::Q { stripe },
            MemberRole::Data { data_index } => {
                let chunk = stripe * self.data_disks as u64 + data_index as u64;
                ParityCell::Data {
                    array_sector: (chunk << self.chunk_shift) + offset,
                }
            }
        })
    }

    /// Whether every block can still be read or rebuilt: at most `parity_disks` members lost.
    /// `alive.len()` must equal [`Self::disk_count`].
    pub fn survives(&self, alive: &[bool]) -> bool {
        assert_eq!(alive.len(), self.disk_count, "one flag per member");
        alive.iter().filter(|&&up| !up).count() <= self.parity_disks()
    }

    /// md's placement of `stripe` (see the module comment).
    fn shape(&self, stripe: u64) -> StripeShape {
        use ParityAlgorithm as A;
        let n = self.disk_count;
        // The residues below are < n, so they fit a usize.
        let turn = |members: usize| (stripe % members as u64) as usize;
        // RAID6 rotating layouts: Q follows P, wrapping to member 0 after the last.
        let q_after = |p: usize| Some(if p == n - 1 { 0 } else { p + 1 });
        let rotate_after = |last_parity: usize, ring: usize| Fill::Rotate {
            start: (last_parity + 1) % ring,
            ring,
        };
        let (p, q, fill) = match (self.level, self.algorithm) {
            (ParityLevel::Raid4, _) | (ParityLevel::Raid5, A::ParityLast) => {
                (n - 1, None, Fill::Skip)
            }
            (ParityLevel::Raid5, A::LeftAsymmetric) => (n - 1 - turn(n), None, Fill::Skip),
            (ParityLevel::Raid5, A::RightAsymmetric) => (turn(n), None, Fill::Skip),
            (ParityLevel::Raid5, A::LeftSymmetric) => {
                let p = n - 1 - turn(n);
                (p, None, rotate_after(p, n))
            }
            (ParityLevel::Raid5, A::RightSymmetric) => {
                let p = turn(n);
                (p, None, rotate_after(p, n))
            }
            (ParityLevel::Raid5, A::ParityFirst) => (0, None, Fill::Skip),
            (ParityLevel::Raid6, A::LeftAsymmetric) => {
                let p = n - 1 - turn(n);
                (p, q_after(p), Fill::Skip)
            }
            (ParityLevel::Raid6, A::RightAsymmetric | A::DdfZeroRestart) => {
                let p = turn(n);
                (p, q_after(p), Fill::Skip)
            }
            (ParityLevel::Raid6, A::DdfNRestart) => {
                // Left-asymmetric one stripe on: stripe 0 is D … D P Q.
                let p = n - 1 - ((stripe % n as u64 + 1) % n as u64) as usize;
                (p, q_after(p), Fill::Skip)
            }
            (ParityLevel::Raid6, A::LeftSymmetric) => {
                let p = n - 1 - turn(n);
                let q = (p + 1) % n;
                (p, Some(q), rotate_after(q, n))
            }
            (ParityLevel::Raid6, A::RightSymmetric) => {
                let p = turn(n);
                let q = (p + 1) % n;
                (p, Some(q), rotate_after(q, n))
            }
            (ParityLevel::Raid6, A::DdfNContinue) => {
                let p = n - 1 - turn(n);
                (p, Some((p + n - 1) % n), rotate_after(p, n))
            }
            (ParityLevel::Raid6, A::ParityFirst) => (0, Some(1), Fill::Skip),
            (ParityLevel::Raid6, A::ParityLast) => (n - 2, Some(n - 1), Fill::Skip),
            (ParityLevel::Raid6, A::LeftAsymmetric6) => {
                (n - 2 - turn(n - 1), Some(n - 1), Fill::Skip)
            }
            (ParityLevel::Raid6, A::RightAsymmetric6) => (turn(n - 1), Some(n - 1), Fill::Skip),
            (ParityLevel::Raid6, A::LeftSymmetric6) => {
                let p = n - 2 - turn(n - 1);
                (p, Some(n - 1), rotate_after(p, n - 1))
            }
            (ParityLevel::Raid6, A::RightSymmetric6) => {
                let p = turn(n - 1);
                (p, Some(n - 1), rotate_after(p, n - 1))
            }
            (ParityLevel::Raid6, A::ParityFirst6) => (0, Some(n - 1), Fill::Skip),
            (ParityLevel::Raid5, other) => {
                unreachable!("new() admits only RAID5 layouts 0-5, not {other}")
            }
        };
        StripeShape { p, q, fill }
    }
}

#[cfg(test)]
#[path = "raid5_tests.rs"]
mod tests;
