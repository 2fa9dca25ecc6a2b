//! Parity engine: XOR (RAID-4/5) and P+Q (RAID-6) generation, read-modify-write update and
//! recovery of any one or two lost blocks, with a scalar reference and SIMD engines.
//!
//! # Field and convention
//! P is the XOR of the data blocks. Q = Σ gˢ·Dₛ over GF(2⁸) with polynomial 0x11d and
//! generator g = {02} (see [`gf`]), the convention of Linux `lib/raid6` and ISA-L `pq_gen`.
//! The exponent `s` of each data block is its *syndrome slot*, given explicitly by the
//! caller (`slots[i]` for `data[i]`): md's RAID-6 layouts assign slots that differ from the
//! logical data order (see `raid6_idx_to_slot` in the kernel). Slots of one stripe must be
//! distinct (taken modulo 255) for recovery to be possible.
//!
//! # Engines
//! * [`ParityEngine::scalar`]: the reference, byte by byte straight from the definitions.
//! * [`ParityEngine::portable`]: 64-bit words (SWAR), any target.
//! * [`ParityEngine::ssse3`], [`ParityEngine::avx2`] (x86_64): return `None` unless `cpuid`
//!   (and, for AVX, `XGETBV`) shows the CPU and OS support them; this is the only way to
//!   obtain one, so holding the engine proves its instructions are safe to run.
//! * [`ParityEngine::widest`]: the widest detected engine, no timing.
//! * [`ParityEngine::select`]: a short self-benchmark of every detected engine on the
//!   caller's clock (the core never reads an OS clock), as Linux does at boot.
//!
//! An engine is `Copy` and stateless; keep the one you selected and call it from anywhere.
//!
//! # Operations
//! All buffers of one call have the same length, any length (no multiple of the vector
//! width is needed) and any alignment. A length mismatch is a caller bug and panics.
//! * [`ParityEngine::xor`] `dst = ⊕ srcs`; [`ParityEngine::xor_into`] `dst ^= ⊕ srcs`
//!   (RAID-5 read-modify-write: `P ^= old ^ new`). [`ParityEngine::recover_one_data`] is
//!   the RAID-5 / RAID-6 single data recovery from P.
//! * [`ParityEngine::pq_gen`] P and Q; [`ParityEngine::q_gen`] Q alone.
//! * [`ParityEngine::pq_update`]: read-modify-write. Given the old and new contents of some
//!   data blocks and their slots, fold the change into P and Q without reading the others.
//! * [`ParityEngine::recover_two_data`], [`ParityEngine::recover_data_and_p`],
//!   [`ParityEngine::recover_data_and_q`]: one pass over the survivors.
//! * [`ParityEngine::recover`]: a whole stripe in place, whichever one or two blocks of it
//!   are lost ([`Lost`]); the lost buffers are overwritten, the others are read.
//!
//! Survivors are passed as a list with their slots (`survivors`, `survivor_slots`); the lost
//! data blocks as `(slot, buffer)`.
//!
//! # Example
//! ```
//! use orion_raid::parity::{Lost, ParityEngine};
//! let engine = ParityEngine::widest(); // or ParityEngine::select(&clock_ns)
//! let (mut d0, mut d1, mut d2) = ([1u8; 100], [2u8; 100], [3u8; 100]);
//! let slots = [0, 1, 2];
//! let (mut p, mut q) = ([0u8; 100], [0u8; 100]);
//! engine.pq_gen(&[&d0, &d1, &d2], &slots, &mut p, &mut q);
//! d0.fill(0); // lost
//! d2.fill(0); // lost
//! let mut data: [&mut [u8]; 3] = [&mut d0, &mut d1, &mut d2];
//! engine.recover(&mut data, &slots, &mut p, &mut q, Lost::TwoData(0, 2)).unwrap();
//! assert_eq!((d0, d2), ([1u8; 100], [3u8; 100]));
//! ```
//!
//! # Speed
//! The SIMD engines keep P and Q in registers across all sources (one pass over the data),
//! compute Q by Horner's rule (one doubling per slot), multiply by constants with `pshufb`
//! nibble tables, and solve recoveries in the same pass that gathers the syndromes, so a
//! recovery costs about what a P+Q generation costs. Past 8 sources they take a group of 8
//! at a time, a page of each, through P and Q scratch kept in L1: many sources side by side
//! are more streams than the hardware prefetchers follow. A call allocates nothing for up
//! to 32 data blocks. [`StoreHint`] says whether outputs go through the cache or are streamed
//! to memory (non-temporal stores): by default by the size of the call; a caller that knows
//! its output goes straight to a disk can ask for streaming.
//!
//! The host tool's `host::bench` measures every engine (`raid bench parity`).

pub mod gf;
pub mod locate;
mod portable;
mod scalar;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod cpu;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[macro_use]
mod simd;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod ssse3;

#[cfg(test)]
mod tests;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Which implementation an engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// The byte-by-byte reference.
    Scalar,
    /// 64-bit words, no SIMD.
    Portable,
    /// 16-byte SSSE3 vectors.
    Ssse3,
    /// 32-byte AVX2 vectors.
    Avx2,
}

impl EngineKind {
    /// The name used in reports and `raid bench parity`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Scalar => "scalar",
            EngineKind::Portable => "portable",
            EngineKind::Ssse3 => "ssse3",
            EngineKind::Avx2 => "avx2",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug)]
enum Imp {
    Scalar,
    Portable,
    #[cfg(target_arch = "x86_64")]
    Ssse3(ssse3::Ssse3),
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
}

/// A parity engine. Cheap to copy; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct ParityEngine {
    imp: Imp,
    store_hint: StoreHint,
}

/// How the SIMD engines write their outputs.
///
/// Streaming (non-temporal) stores send outputs straight to memory: no read of the old
/// line first and no eviction of data the caller still needs, but the bytes are not in the
/// cache afterwards. They pay off for outputs nobody reads soon (parity on its way to
/// disk), and cost when the whole working set would have stayed in cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StoreHint {
    /// Decide by the size of the call: stream when its outputs would push its sources out
    /// of the cache level the operation lives in (see [`SYNDROME_STREAMING_BYTES`]).
    #[default]
    Auto,
    /// Always keep outputs in cache (e.g. recovered data about to be returned to a reader).
    Cache,
    /// Always stream when the outputs are aligned to the vector width (e.g. parity about
    /// to be written to a member disk).
    Stream,
}

/// The private L2 of the Zen 3 the [`StoreHint::Auto`] rules were tuned on.
const L2_BYTES: usize = 512 << 10;

/// [`StoreHint::Auto`] streams the output of an XOR when the call touches more than the
/// L2: a cached output would only evict sources. P+Q generation and update stream their
/// outputs when the sources fit the L2 but the outputs would push them out, or when the
/// call touches more than this: P+Q is compute-heavier, so caching its outputs pays while
/// the working set fits the shared L3 (32 MiB on the machine it was tuned on). Recoveries
/// stream only past this size: their output is data a reader wants next, and cached they
/// measured 1.3–1.5× faster at k = 8 × 64 KiB (streamed, the two outputs wait on DRAM).
pub const SYNDROME_STREAMING_BYTES: usize = 16 << 20;

/// The order of [`ParityEngine::read_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOrder {
    /// As the parity kernels read: all blocks a step at a time (past 8 blocks, a group of
    /// 8 at a time, a page of each).
    SideBySide,
    /// One block after the other.
    BlockByBlock,
}

/// Which blocks of a RAID-6 stripe are lost, for [`ParityEngine::recover`]. Data blocks are
/// named by their index in the `data` list (not by slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// P only: regenerate P.
    P,
    /// Q only: regenerate Q.
    Q,
    /// Both parities: regenerate both.
    PQ,
    /// One data block, from P.
    Data(usize),
    /// One data block and P: the data from Q, then P.
    DataP(usize),
    /// One data block and Q: the data from P, then Q.
    DataQ(usize),
    /// Two data blocks, from P and Q.
    TwoData(usize, usize),
}

/// Why [`ParityEngine::recover`] refused a request (nothing was written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParityError {
    /// A lost data index is not below the number of data blocks.
    NoSuchBlock {
        /// The index named in [`Lost`].
        index: usize,
        /// How many data blocks the stripe has.
        data_count: usize,
    },
    /// [`Lost::TwoData`] named the same block twice.
    SameBlockTwice(usize),
    /// The two lost data blocks have the same syndrome slot (modulo 255): not solvable.
    SharedSlot(u8),
}

impl fmt::Display for ParityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParityError::NoSuchBlock { index, data_count } => {
                write!(
                    f,
                    "lost data block {index} does not exist (stripe has {data_count})"
                )
            }
            ParityError::SameBlockTwice(index) => {
                write!(f, "data block {index} named twice as lost")
            }
            ParityError::SharedSlot(slot) => {
                write!(f, "two lost data blocks share syndrome slot {slot}")
            }
        }
    }
}

/// The result of [`ParityEngine::self_benchmark`].
#[derive(Clone, Debug)]
pub struct SelfBenchmark {
    /// The engine to use.
    pub chosen: ParityEngine,
    /// Each candidate's best time for the benchmark workload, in clock units (nanoseconds
    /// when the clock is a nanosecond clock).
    pub timings: Vec<(EngineKind, u64)>,
}

/// Sources a plan holds without allocating: every array up to 32 data disks.
const INLINE_SOURCES: usize = 32;

/// Where a [`Plan`] keeps its sources: inline for the usual stripe, on the heap beyond.
// The inline variant is large on purpose: a plan lives on the stack for one call, and the
// point is not to allocate on the I/O path.
#[allow(clippy::large_enum_variant)]
enum Store<'a> {
    Inline {
        srcs: [&'a [u8]; INLINE_SOURCES],
        slots: [u8; INLINE_SOURCES],
        gaps: [u8; INLINE_SOURCES],
    },
    Heap {
        srcs: Vec<&'a [u8]>,
        slots: Vec<u8>,
        gaps: Vec<u8>,
    },
}

/// Sources of a syndrome computation, sorted by slot from high to low so that Q is one
/// Horner pass: before xoring source `i` in, Q is doubled `gaps[i]` times, and after the
/// last source `tail_gap` times. P is the plain xor of the sources.
pub(crate) struct Plan<'a> {
    store: Store<'a>,
    count: usize,
    tail_gap: u8,
    len: usize,
}

impl<'a> Plan<'a> {
    /// An empty plan for up to `capacity` blocks of `len` bytes.
    fn new(len: usize, capacity: usize) -> Self {
        let store = if capacity <= INLINE_SOURCES {
            Store::Inline {
                srcs: [&[]; INLINE_SOURCES],
                slots: [0; INLINE_SOURCES],
                gaps: [0; INLINE_SOURCES],
            }
        } else {
            Store::Heap {
                srcs: vec![&[][..]; capacity],
                slots: vec![0; capacity],
                gaps: vec![0; capacity],
            }
        };
        Plan {
            store,
            count: 0,
            tail_gap: 0,
            len,
        }
    }

    fn arrays_mut(&mut self) -> (&mut [&'a [u8]], &mut [u8], &mut [u8]) {
        match &mut self.store {
            Store::Inline { srcs, slots, gaps } => (srcs, slots, gaps),
            Store::Heap { srcs, slots, gaps } => (srcs, slots, gaps),
        }
    }

    fn push(&mut self, block: &'a [u8], slot: u8) {
        assert_eq!(
            block.len(),
            self.len,
            "parity: blocks of one call differ in length"
        );
        let count = self.count;
        let (srcs, slots, _) = self.arrays_mut();
        assert!(count < srcs.len(), "parity: more blocks than announced");
        let slot = reduce_slot(slot);
        // Insertion keeps the list sorted high to low (stable); callers usually give
        // ascending slots, so the new, larger slot belongs near the front.
        let mut at = count;
        while at > 0 && slots[at - 1] < slot {
            at -= 1;
        }
        srcs.copy_within(at..count, at + 1);
        slots.copy_within(at..count, at + 1);
        srcs[at] = block;
        slots[at] = slot;
        self.count += 1;
    }

    fn finish(&mut self) {
        let count = self.count;
        let (_, slots, gaps) = self.arrays_mut();
        for i in 0..count {
            gaps[i] = if i == 0 { 0 } else { slots[i - 1] - slots[i] };
        }
        self.tail_gap = if count == 0 { 0 } else { slots[count - 1] };
    }

    pub(crate) fn sources(&self) -> &[&'a [u8]] {
        match &self.store {
            Store::Inline { srcs, .. } => &srcs[..self.count],
            Store::Heap { srcs, .. } => &srcs[..self.count],
        }
    }

    /// The slots of [`Self::sources`], reduced modulo 255.
    pub(crate) fn slots(&self) -> &[u8] {
        match &self.store {
            Store::Inline { slots, .. } => &slots[..self.count],
            Store::Heap { slots, .. } => &slots[..self.count],
        }
    }

    pub(crate) fn gaps(&self) -> &[u8] {
        match &self.store {
            Store::Inline { gaps, .. } => &gaps[..self.count],
            Store::Heap { gaps, .. } => &gaps[..self.count],
        }
    }

    pub(crate) fn tail_gap(&self) -> u8 {
        self.tail_gap
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Slot 255 has the coefficient of slot 0 (g²⁵⁵ = 1); keeping slots below 255 keeps every gap
/// a plain difference.
fn reduce_slot(slot: u8) -> u8 {
    if slot == 255 { 0 } else { slot }
}

/// What a syndrome pass does with the P and Q it gathered (`p`, `q` below) at each offset.
pub(crate) enum Job<'a> {
    /// `P = p`, `Q = q`.
    GenPq { p: &'a mut [u8], q: &'a mut [u8] },
    /// `Q = q`.
    GenQ { q: &'a mut [u8] },
    /// `P ^= p`, `Q ^= q` (the sources are old and new contents of the same slots).
    Update { p: &'a mut [u8], q: &'a mut [u8] },
    /// Two data blocks at slots x and y: `pd = p ^ P`, `qd = q ^ Q`, then
    /// `dx = a·pd ^ b·qd` and `dy = pd ^ dx` ([`gf::two_data_coefficients`]).
    Rec2 {
        p: &'a [u8],
        q: &'a [u8],
        x_slot: u8,
        y_slot: u8,
        dx: &'a mut [u8],
        dy: &'a mut [u8],
    },
    /// Data at slot x and P: `dx = g⁻ˣ·(q ^ Q)`, `P = p ^ dx`.
    RecDataP {
        q: &'a [u8],
        x_slot: u8,
        dx: &'a mut [u8],
        p_out: &'a mut [u8],
    },
    /// Data at slot x and Q: `dx = p ^ P`, `Q = q ^ gˣ·dx`.
    RecDataQ {
        p: &'a [u8],
        x_slot: u8,
        dx: &'a mut [u8],
        q_out: &'a mut [u8],
    },
}

impl Job<'_> {
    /// The constants of the nibble-table multiplies the job finishes with: `(a, b)` for
    /// two data blocks, `(c, 0)` for one, zeros otherwise.
    pub(crate) fn coefficients(&self) -> (u8, u8) {
        match self {
            Job::Rec2 { x_slot, y_slot, .. } => {
                gf::two_data_coefficients(reduce_slot(*x_slot), reduce_slot(*y_slot))
            }
            Job::RecDataP { x_slot, .. } => (gf::inv(gf::exp2(*x_slot as u32)), 0),
            Job::RecDataQ { x_slot, .. } => (gf::exp2(*x_slot as u32), 0),
            _ => (0, 0),
        }
    }
}

impl Job<'_> {
    /// Whether the job rebuilds lost blocks (rather than generating or updating parity).
    fn is_recovery(&self) -> bool {
        matches!(
            self,
            Job::Rec2 { .. } | Job::RecDataP { .. } | Job::RecDataQ { .. }
        )
    }

    /// How many buffers besides the sources the job reads or writes.
    fn buffer_count(&self) -> usize {
        match self {
            Job::GenQ { .. } => 1,
            Job::GenPq { .. } | Job::Update { .. } => 2,
            _ => 4,
        }
    }

    fn check_len(&self, len: usize) {
        let lens: [usize; 4] = match self {
            Job::GenPq { p, q } | Job::Update { p, q } => [p.len(), q.len(), len, len],
            Job::GenQ { q } => [q.len(), len, len, len],
            Job::Rec2 { p, q, dx, dy, .. } => [p.len(), q.len(), dx.len(), dy.len()],
            Job::RecDataP { q, dx, p_out, .. } => [q.len(), dx.len(), p_out.len(), len],
            Job::RecDataQ { p, dx, q_out, .. } => [p.len(), dx.len(), q_out.len(), len],
        };
        assert!(
            lens.iter().all(|&l| l == len),
            "parity: blocks of one call differ in length"
        );
    }
}

impl ParityEngine {
    /// The reference engine: slow, obviously right, the definition the others are tested
    /// against.
    pub fn scalar() -> Self {
        ParityEngine::of(Imp::Scalar)
    }

    fn of(imp: Imp) -> Self {
        ParityEngine {
            imp,
            store_hint: StoreHint::Auto,
        }
    }

    /// The same engine with another [`StoreHint`].
    pub fn with_store_hint(self, store_hint: StoreHint) -> Self {
        ParityEngine { store_hint, ..self }
    }

    /// The engine's [`StoreHint`].
    pub fn store_hint(&self) -> StoreHint {
        self.store_hint
    }

    /// Whether to stream the outputs of a call that reads `source_bytes` and touches
    /// `footprint_bytes` in all, given the [`StoreHint::Auto`] rule `auto`.
    fn stream(
        &self,
        source_bytes: usize,
        footprint_bytes: usize,
        auto: fn(usize, usize) -> bool,
    ) -> bool {
        match self.store_hint {
            StoreHint::Auto => auto(source_bytes, footprint_bytes),
            StoreHint::Cache => false,
            StoreHint::Stream => true,
        }
    }

    /// The 64-bit-word engine; runs anywhere.
    pub fn portable() -> Self {
        ParityEngine::of(Imp::Portable)
    }

    /// The SSSE3 engine, if this CPU has SSSE3.
    #[cfg(target_arch = "x86_64")]
    pub fn ssse3() -> Option<Self> {
        ssse3::Ssse3::detect().map(|e| ParityEngine::of(Imp::Ssse3(e)))
    }

    /// The AVX2 engine, if this CPU has AVX2 and the OS saves the AVX state.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> Option<Self> {
        avx2::Avx2::detect().map(|e| ParityEngine::of(Imp::Avx2(e)))
    }

    /// Every engine this CPU can run, narrowest first (the scalar reference first).
    pub fn available() -> Vec<ParityEngine> {
        #[allow(unused_mut)]
        let mut engines = vec![Self::scalar(), Self::portable()];
        #[cfg(target_arch = "x86_64")]
        {
            engines.extend(Self::ssse3());
            engines.extend(Self::avx2());
        }
        engines
    }

    /// The widest engine this CPU can run, chosen without timing anything.
    pub fn widest() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(engine) = Self::avx2().or_else(Self::ssse3) {
                return engine;
            }
        }
        Self::portable()
    }

    /// The fastest engine by a short self-benchmark (a few milliseconds) on `clock`, which
    /// returns a monotonic time in nanoseconds. See [`Self::self_benchmark`].
    pub fn select(clock: &dyn Fn() -> u64) -> Self {
        Self::self_benchmark(clock).chosen
    }

    /// Times P+Q generation of 8 × 4 KiB on every detected engine but the scalar reference
    /// and picks the fastest; a tie (or a clock that does not move) goes to the wider engine.
    pub fn self_benchmark(clock: &dyn Fn() -> u64) -> SelfBenchmark {
        const BLOCK_BYTES: usize = 4096;
        const DATA_COUNT: usize = 8;
        const CALLS_PER_ROUND: usize = 16;
        const ROUNDS: usize = 3;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<Vec<u8>> = (0..DATA_COUNT)
            .map(|_| {
                (0..BLOCK_BYTES)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 56) as u8
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|b| b.as_slice()).collect();
        let slots: Vec<u8> = (0..DATA_COUNT as u8).collect();
        let mut p = vec![0u8; BLOCK_BYTES];
        let mut q = vec![0u8; BLOCK_BYTES];
        let mut timings = Vec::new();
        let mut chosen = Self::portable();
        let mut best = u64::MAX;
        for engine in Self::available() {
            if engine.kind() == EngineKind::Scalar {
                continue;
            }
            engine.pq_gen(&refs, &slots, &mut p, &mut q);
            let mut engine_best = u64::MAX;
            for _ in 0..ROUNDS {
                let start = clock();
                for _ in 0..CALLS_PER_ROUND {
                    engine.pq_gen(&refs, &slots, &mut p, &mut q);
                }
                engine_best = engine_best.min(clock().saturating_sub(start));
            }
            timings.push((engine.kind(), engine_best));
            // `<=`: engines come narrowest first, so a tie goes to the wider one.
            if engine_best <= best {
                best = engine_best;
                chosen = engine;
            }
        }
        SelfBenchmark { chosen, timings }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> EngineKind {
        match self.imp {
            Imp::Scalar => EngineKind::Scalar,
            Imp::Portable => EngineKind::Portable,
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(_) => EngineKind::Ssse3,
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(_) => EngineKind::Avx2,
        }
    }

    /// The engine's name: "scalar", "portable", "ssse3" or "avx2".
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// `dst = srcs[0] ^ srcs[1] ^ …`; zero when `srcs` is empty.
    ///
    /// # Panics
    /// If the buffers differ in length.
    pub fn xor(&self, srcs: &[&[u8]], dst: &mut [u8]) {
        self.xor_op(srcs, dst, false);
    }

    /// `dst ^= srcs[0] ^ srcs[1] ^ …`.
    ///
    /// # Panics
    /// If the buffers differ in length.
    pub fn xor_into(&self, srcs: &[&[u8]], dst: &mut [u8]) {
        self.xor_op(srcs, dst, true);
    }

    fn xor_op(&self, srcs: &[&[u8]], dst: &mut [u8], accumulate: bool) {
        let len = dst.len();
        assert!(
            srcs.iter().all(|s| s.len() == len),
            "parity: blocks of one call differ in length"
        );
        if srcs.is_empty() {
            if !accumulate {
                dst.fill(0);
            }
            return;
        }
        let stream = self.stream(srcs.len() * len, (srcs.len() + 1) * len, |_, footprint| {
            footprint > L2_BYTES
        });
        let done = match self.imp {
            Imp::Scalar => {
                scalar::xor(srcs, dst, accumulate);
                len
            }
            Imp::Portable => 0,
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(e) => e.xor(srcs, dst, accumulate, stream),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(e) => e.xor(srcs, dst, accumulate, stream),
        };
        if done < len {
            portable::xor(srcs, dst, accumulate, done..len);
        }
    }

    /// P and Q of `data`, where `data[i]` has syndrome slot `slots[i]`.
    ///
    /// # Panics
    /// If the buffers differ in length or `slots` and `data` differ in count.
    pub fn pq_gen(&self, data: &[&[u8]], slots: &[u8], p: &mut [u8], q: &mut [u8]) {
        let plan = plan_of(p.len(), data, slots);
        self.run(&plan, Job::GenPq { p, q });
    }

    /// Q alone (P is kept), as after losing only Q.
    ///
    /// # Panics
    /// As [`Self::pq_gen`].
    pub fn q_gen(&self, data: &[&[u8]], slots: &[u8], q: &mut [u8]) {
        let plan = plan_of(q.len(), data, slots);
        self.run(&plan, Job::GenQ { q });
    }

    /// Read-modify-write: data block `i` (slot `slots[i]`) changes from `old[i]` to
    /// `new[i]`; fold that into `p` and `q` in place, without the untouched blocks.
    ///
    /// # Panics
    /// If the buffers differ in length or `old`, `new` and `slots` differ in count.
    pub fn pq_update(
        &self,
        old: &[&[u8]],
        new: &[&[u8]],
        slots: &[u8],
        p: &mut [u8],
        q: &mut [u8],
    ) {
        assert_eq!(old.len(), slots.len(), "parity: one slot per old block");
        assert_eq!(new.len(), slots.len(), "parity: one slot per new block");
        // Old and new of a slot are two sources with the same coefficient: their xor is the
        // change, and the change is what P and Q take in.
        let mut plan = Plan::new(p.len(), 2 * slots.len());
        for ((o, n), &slot) in old.iter().zip(new).zip(slots) {
            plan.push(o, slot);
            plan.push(n, slot);
        }
        plan.finish();
        self.run(&plan, Job::Update { p, q });
    }

    /// One lost data block from P and the other data blocks: `dx = P ^ ⊕ survivors`.
    /// Also the RAID-5 recovery (P is the RAID-5 parity).
    ///
    /// # Panics
    /// If the buffers differ in length.
    pub fn recover_one_data(&self, survivors: &[&[u8]], p: &[u8], dx: &mut [u8]) {
        let mut plan = Plan::new(p.len(), survivors.len() + 1);
        for s in survivors {
            plan.push(s, 0);
        }
        plan.push(p, 0);
        self.xor(plan.sources(), dx);
    }

    /// Two lost data blocks `x = (slot, buffer)` and `y` from the surviving data blocks
    /// (`survivors[i]` at slot `survivor_slots[i]`), P and Q.
    ///
    /// # Panics
    /// If the buffers differ in length, the counts of survivors and slots differ, or the
    /// two lost slots are equal modulo 255.
    pub fn recover_two_data(
        &self,
        survivors: &[&[u8]],
        survivor_slots: &[u8],
        p: &[u8],
        q: &[u8],
        x: (u8, &mut [u8]),
        y: (u8, &mut [u8]),
    ) {
        let plan = plan_of(p.len(), survivors, survivor_slots);
        let ((x_slot, dx), (y_slot, dy)) = (x, y);
        self.run(
            &plan,
            Job::Rec2 {
                p,
                q,
                x_slot,
                y_slot,
                dx,
                dy,
            },
        );
    }

    /// A lost data block `x = (slot, buffer)` and a lost P: the data from Q, then P into
    /// `p_out`.
    ///
    /// # Panics
    /// If the buffers differ in length or the counts of survivors and slots differ.
    pub fn recover_data_and_p(
        &self,
        survivors: &[&[u8]],
        survivor_slots: &[u8],
        q: &[u8],
        x: (u8, &mut [u8]),
        p_out: &mut [u8],
    ) {
        let plan = plan_of(q.len(), survivors, survivor_slots);
        let (x_slot, dx) = x;
        self.run(
            &plan,
            Job::RecDataP {
                q,
                x_slot,
                dx,
                p_out,
            },
        );
    }

    /// A lost data block `x = (slot, buffer)` and a lost Q: the data from P, then Q into
    /// `q_out`.
    ///
    /// # Panics
    /// If the buffers differ in length or the counts of survivors and slots differ.
    pub fn recover_data_and_q(
        &self,
        survivors: &[&[u8]],
        survivor_slots: &[u8],
        p: &[u8],
        x: (u8, &mut [u8]),
        q_out: &mut [u8],
    ) {
        let plan = plan_of(p.len(), survivors, survivor_slots);
        let (x_slot, dx) = x;
        self.run(
            &plan,
            Job::RecDataQ {
                p,
                x_slot,
                dx,
                q_out,
            },
        );
    }

    /// Rebuilds the `lost` blocks of a RAID-6 stripe in place: `data[i]` has slot
    /// `slots[i]`; the lost buffers are overwritten and every other buffer is only read.
    ///
    /// # Errors
    /// [`ParityError`] if `lost` names a block that does not exist, the same block twice,
    /// or two blocks of the same slot; then nothing was written.
    ///
    /// # Panics
    /// If the buffers differ in length or `slots` and `data` differ in count.
    pub fn recover(
        &self,
        data: &mut [&mut [u8]],
        slots: &[u8],
        p: &mut [u8],
        q: &mut [u8],
        lost: Lost,
    ) -> Result<(), ParityError> {
        assert_eq!(data.len(), slots.len(), "parity: one slot per data block");
        let data_count = data.len();
        let check = |index: usize| {
            if index < data_count {
                Ok(index)
            } else {
                Err(ParityError::NoSuchBlock { index, data_count })
            }
        };
        let (x, y) = match lost {
            Lost::P | Lost::Q | Lost::PQ => (None, None),
            Lost::Data(x) | Lost::DataP(x) | Lost::DataQ(x) => (Some(check(x)?), None),
            Lost::TwoData(x, y) => {
                let (x, y) = (check(x)?, check(y)?);
                if x == y {
                    return Err(ParityError::SameBlockTwice(x));
                }
                if reduce_slot(slots[x]) == reduce_slot(slots[y]) {
                    return Err(ParityError::SharedSlot(slots[x]));
                }
                (Some(x), Some(y))
            }
        };
        let x_slot = x.map_or(0, |x| slots[x]);
        let y_slot = y.map_or(0, |y| slots[y]);
        let len = p.len();
        // One more place for P, which the single data recovery xors in.
        let mut plan = Plan::new(len, data_count + 1);
        let mut lost_blocks: [&mut [u8]; 2] = [&mut [], &mut []];
        for (i, block) in data.iter_mut().enumerate() {
            if Some(i) == x {
                lost_blocks[0] = &mut **block;
            } else if Some(i) == y {
                lost_blocks[1] = &mut **block;
            } else {
                plan.push(block, slots[i]);
            }
        }
        let [dx, dy] = lost_blocks;
        match lost {
            Lost::P => {
                plan.finish();
                self.xor(plan.sources(), p);
            }
            Lost::Q => {
                plan.finish();
                self.run(&plan, Job::GenQ { q });
            }
            Lost::PQ => {
                plan.finish();
                self.run(&plan, Job::GenPq { p, q });
            }
            Lost::Data(_) => {
                plan.push(p, 0);
                plan.finish();
                self.xor(plan.sources(), dx);
            }
            Lost::DataP(_) => {
                plan.finish();
                let job = Job::RecDataP {
                    q,
                    x_slot,
                    dx,
                    p_out: p,
                };
                self.run(&plan, job);
            }
            Lost::DataQ(_) => {
                plan.finish();
                let job = Job::RecDataQ {
                    p,
                    x_slot,
                    dx,
                    q_out: q,
                };
                self.run(&plan, job);
            }
            Lost::TwoData(..) => {
                plan.finish();
                let job = Job::Rec2 {
                    p,
                    q,
                    x_slot,
                    y_slot,
                    dx,
                    dy,
                };
                self.run(&plan, job);
            }
        }
        Ok(())
    }

    /// Whether a syndrome job streams its outputs (see [`SYNDROME_STREAMING_BYTES`]).
    fn streams(&self, plan: &Plan<'_>, job: &Job<'_>) -> bool {
        let sources = plan.sources().len() * plan.len();
        let footprint = sources + job.buffer_count() * plan.len();
        let auto: fn(usize, usize) -> bool = if job.is_recovery() {
            |_, footprint| footprint > SYNDROME_STREAMING_BYTES
        } else {
            |sources, footprint| {
                (sources <= L2_BYTES && footprint > L2_BYTES)
                    || footprint > SYNDROME_STREAMING_BYTES
            }
        };
        self.stream(sources, footprint, auto)
    }

    /// Runs a syndrome job: the engine does the bulk, the portable engine the last bytes
    /// that do not fill a vector.
    fn run(&self, plan: &Plan<'_>, mut job: Job<'_>) {
        job.check_len(plan.len());
        let stream = self.streams(plan, &job);
        let done = match self.imp {
            Imp::Scalar => {
                scalar::run(plan.sources(), plan.slots(), &mut job);
                plan.len()
            }
            Imp::Portable => 0,
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(e) => e.syndrome(plan, &mut job, stream),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(e) => e.syndrome(plan, &mut job, stream),
        };
        if done < plan.len() {
            portable::syndrome(plan, &mut job, done..plan.len());
        }
    }

    /// The sum of all bytes of `blocks` read with this engine's widest loads, in `order`,
    /// for the plain-read baseline of `host::bench`. The value is meaningless; it only keeps the
    /// reads alive.
    pub fn read_all(&self, blocks: &[&[u8]], order: ReadOrder) -> u64 {
        let side_by_side = order == ReadOrder::SideBySide;
        match self.imp {
            Imp::Scalar | Imp::Portable => portable::read(blocks),
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(e) => e.read(blocks, side_by_side),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(e) => e.read(blocks, side_by_side),
        }
    }
}

/// The plan of `blocks[i]` at `slots[i]`, all `len` bytes long.
fn plan_of<'a>(len: usize, blocks: &[&'a [u8]], slots: &[u8]) -> Plan<'a> {
    assert_eq!(blocks.len(), slots.len(), "parity: one slot per data block");
    let mut plan = Plan::new(len, blocks.len());
    for (block, &slot) in blocks.iter().zip(slots) {
        plan.push(block, slot);
    }
    plan.finish();
    plan
}
