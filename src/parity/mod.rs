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
//! # Speed
//! The SIMD engines keep P and Q in registers across all sources (one pass over the data),
//! compute Q by Horner's rule (one doubling per slot), multiply by constants with `pshufb`
//! nibble tables, and solve recoveries in the same pass that gathers the syndromes. Large
//! blocks are written with non-temporal stores so parity does not evict the data from cache.
//!
//! With the `std` feature, [`bench::run`] measures every engine (`raid bench parity`).

pub mod gf;
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

#[cfg(feature = "std")]
pub mod bench;

#[cfg(test)]
mod tests;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Most data blocks in one P+Q stripe: slots are bytes, and md's largest arrays fit.
pub const MAX_DATA_BLOCKS: usize = 256;

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

/// Capacity of a [`Plan`]: enough for every slot, or old and new of half of them.
const PLAN_CAPACITY: usize = MAX_DATA_BLOCKS;

/// Sources of a syndrome computation, sorted by slot from high to low so that Q is one
/// Horner pass: before xoring source `i` in, Q is doubled `gaps[i]` times, and after the
/// last source `tail_gap` times. P is the plain xor of the sources.
pub(crate) struct Plan<'a> {
    srcs: [&'a [u8]; PLAN_CAPACITY],
    slots: [u8; PLAN_CAPACITY],
    gaps: [u8; PLAN_CAPACITY],
    count: usize,
    tail_gap: u8,
    len: usize,
}

impl<'a> Plan<'a> {
    fn new(len: usize) -> Self {
        Plan {
            srcs: [&[]; PLAN_CAPACITY],
            slots: [0; PLAN_CAPACITY],
            gaps: [0; PLAN_CAPACITY],
            count: 0,
            tail_gap: 0,
            len,
        }
    }

    fn push(&mut self, block: &'a [u8], slot: u8) {
        assert_eq!(
            block.len(),
            self.len,
            "parity: blocks of one call differ in length"
        );
        assert!(
            self.count < PLAN_CAPACITY,
            "parity: too many blocks in one call"
        );
        let slot = reduce_slot(slot);
        // Insertion keeps the list sorted high to low; callers usually give ascending
        // slots, so walk from the front where the new (larger) slot belongs.
        let mut at = self.count;
        while at > 0 && self.slots[at - 1] < slot {
            at -= 1;
        }
        self.srcs.copy_within(at..self.count, at + 1);
        self.slots.copy_within(at..self.count, at + 1);
        self.srcs[at] = block;
        self.slots[at] = slot;
        self.count += 1;
    }

    fn finish(mut self) -> Self {
        for i in 0..self.count {
            self.gaps[i] = if i == 0 {
                0
            } else {
                self.slots[i - 1] - self.slots[i]
            };
        }
        self.tail_gap = if self.count == 0 {
            0
        } else {
            self.slots[self.count - 1]
        };
        self
    }

    pub(crate) fn sources(&self) -> &[&'a [u8]] {
        &self.srcs[..self.count]
    }

    pub(crate) fn gaps(&self) -> &[u8] {
        &self.gaps[..self.count]
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
    /// Two data blocks: `pd = p ^ P`, `qd = q ^ Q`, `dx = a·pd ^ b·qd`, `dy = pd ^ dx`.
    Rec2 {
        p: &'a [u8],
        q: &'a [u8],
        a: u8,
        b: u8,
        dx: &'a mut [u8],
        dy: &'a mut [u8],
    },
    /// Data and P: `dx = c·(q ^ Q)`, `P = p ^ dx`.
    RecDataP {
        q: &'a [u8],
        c: u8,
        dx: &'a mut [u8],
        p_out: &'a mut [u8],
    },
    /// Data and Q: `dx = p ^ P`, `Q = q ^ c·dx`.
    RecDataQ {
        p: &'a [u8],
        c: u8,
        dx: &'a mut [u8],
        q_out: &'a mut [u8],
    },
}

impl Job<'_> {
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
        ParityEngine { imp: Imp::Scalar }
    }

    /// The 64-bit-word engine; runs anywhere.
    pub fn portable() -> Self {
        ParityEngine { imp: Imp::Portable }
    }

    /// The SSSE3 engine, if this CPU has SSSE3.
    #[cfg(target_arch = "x86_64")]
    pub fn ssse3() -> Option<Self> {
        ssse3::Ssse3::detect().map(|e| ParityEngine { imp: Imp::Ssse3(e) })
    }

    /// The AVX2 engine, if this CPU has AVX2 and the OS saves the AVX state.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> Option<Self> {
        avx2::Avx2::detect().map(|e| ParityEngine { imp: Imp::Avx2(e) })
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
        let done = match self.imp {
            Imp::Scalar => {
                scalar::xor(srcs, dst, accumulate);
                len
            }
            Imp::Portable => 0,
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(e) => e.xor(srcs, dst, accumulate),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(e) => e.xor(srcs, dst, accumulate),
        };
        if done < len {
            portable::xor(srcs, dst, accumulate, done..len);
        }
    }

    /// P and Q of `data`, where `data[i]` has syndrome slot `slots[i]`.
    ///
    /// # Panics
    /// If the buffers differ in length, `slots` and `data` differ in count, or there are
    /// more than [`MAX_DATA_BLOCKS`] data blocks.
    pub fn pq_gen(&self, data: &[&[u8]], slots: &[u8], p: &mut [u8], q: &mut [u8]) {
        assert_eq!(data.len(), slots.len(), "parity: one slot per data block");
        if let Imp::Scalar = self.imp {
            check_lengths(data, &[p.len(), q.len()]);
            scalar::pq_gen(data, slots, Some(p), q);
            return;
        }
        let plan = plan_of(p.len(), data.iter().copied().zip(slots.iter().copied()));
        self.run(&plan, Job::GenPq { p, q });
    }

    /// Q alone (P is kept), as after losing only Q.
    ///
    /// # Panics
    /// As [`Self::pq_gen`].
    pub fn q_gen(&self, data: &[&[u8]], slots: &[u8], q: &mut [u8]) {
        assert_eq!(data.len(), slots.len(), "parity: one slot per data block");
        if let Imp::Scalar = self.imp {
            check_lengths(data, &[q.len()]);
            scalar::pq_gen(data, slots, None, q);
            return;
        }
        let plan = plan_of(q.len(), data.iter().copied().zip(slots.iter().copied()));
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
        if let Imp::Scalar = self.imp {
            check_lengths(old, &[p.len(), q.len()]);
            check_lengths(new, &[p.len()]);
            scalar::pq_update(old, new, slots, p, q);
            return;
        }
        // The update is additive, so any number of blocks goes in batches that fit a plan.
        let batch = PLAN_CAPACITY / 2;
        let len = p.len();
        for start in (0..slots.len()).step_by(batch) {
            let end = (start + batch).min(slots.len());
            let mut plan = Plan::new(len);
            for i in start..end {
                plan.push(old[i], slots[i]);
                plan.push(new[i], slots[i]);
            }
            self.run(
                &plan.finish(),
                Job::Update {
                    p: &mut *p,
                    q: &mut *q,
                },
            );
        }
    }

    /// One lost data block from P and the other data blocks: `dx = P ^ ⊕ survivors`.
    /// Also the RAID-5 recovery (P is the RAID-5 parity).
    ///
    /// # Panics
    /// If the buffers differ in length, or there are more than [`MAX_DATA_BLOCKS`].
    pub fn recover_one_data(&self, survivors: &[&[u8]], p: &[u8], dx: &mut [u8]) {
        assert!(survivors.len() < MAX_DATA_BLOCKS, "parity: too many blocks");
        let mut srcs: [&[u8]; MAX_DATA_BLOCKS] = [&[]; MAX_DATA_BLOCKS];
        srcs[..survivors.len()].copy_from_slice(survivors);
        srcs[survivors.len()] = p;
        self.xor(&srcs[..=survivors.len()], dx);
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
        assert_eq!(
            survivors.len(),
            survivor_slots.len(),
            "parity: one slot per survivor"
        );
        let (x_slot, dx) = x;
        let (y_slot, dy) = y;
        if let Imp::Scalar = self.imp {
            check_lengths(survivors, &[p.len(), q.len(), dx.len(), dy.len()]);
            scalar::recover_two_data(survivors, survivor_slots, p, q, (x_slot, dx), (y_slot, dy));
            return;
        }
        let (a, b) = gf::two_data_coefficients(reduce_slot(x_slot), reduce_slot(y_slot));
        let plan = plan_of(
            p.len(),
            survivors
                .iter()
                .copied()
                .zip(survivor_slots.iter().copied()),
        );
        self.run(&plan, Job::Rec2 { p, q, a, b, dx, dy });
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
        assert_eq!(
            survivors.len(),
            survivor_slots.len(),
            "parity: one slot per survivor"
        );
        let (x_slot, dx) = x;
        if let Imp::Scalar = self.imp {
            check_lengths(survivors, &[q.len(), dx.len(), p_out.len()]);
            scalar::recover_data_and_p(survivors, survivor_slots, q, (x_slot, dx), p_out);
            return;
        }
        let c = gf::inv(gf::exp2(x_slot as u32));
        let plan = plan_of(
            q.len(),
            survivors
                .iter()
                .copied()
                .zip(survivor_slots.iter().copied()),
        );
        self.run(&plan, Job::RecDataP { q, c, dx, p_out });
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
        assert_eq!(
            survivors.len(),
            survivor_slots.len(),
            "parity: one slot per survivor"
        );
        let (x_slot, dx) = x;
        if let Imp::Scalar = self.imp {
            check_lengths(survivors, &[p.len(), dx.len(), q_out.len()]);
            scalar::recover_data_and_q(survivors, survivor_slots, p, (x_slot, dx), q_out);
            return;
        }
        let c = gf::exp2(x_slot as u32);
        let plan = plan_of(
            p.len(),
            survivors
                .iter()
                .copied()
                .zip(survivor_slots.iter().copied()),
        );
        self.run(&plan, Job::RecDataQ { p, c, dx, q_out });
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
        match lost {
            Lost::P | Lost::Q | Lost::PQ => {
                let mut all: [&[u8]; MAX_DATA_BLOCKS] = [&[]; MAX_DATA_BLOCKS];
                assert!(data_count <= MAX_DATA_BLOCKS, "parity: too many blocks");
                for (dst, src) in all.iter_mut().zip(data.iter()) {
                    *dst = src;
                }
                let all = &all[..data_count];
                match lost {
                    Lost::P => self.xor(all, p),
                    Lost::Q => self.q_gen(all, slots, q),
                    _ => self.pq_gen(all, slots, p, q),
                }
            }
            Lost::Data(x) => {
                let x = check(x)?;
                let (survivors, _, lost) = split_lost(data, slots, x, None);
                let [dx, _] = lost;
                self.recover_one_data(survivors.as_slice(), p, dx.unwrap_or_default());
            }
            Lost::DataP(x) => {
                let x = check(x)?;
                let (survivors, survivor_slots, lost) = split_lost(data, slots, x, None);
                let [dx, _] = lost;
                self.recover_data_and_p(
                    survivors.as_slice(),
                    survivor_slots.as_slice(),
                    q,
                    (slots[x], dx.unwrap_or_default()),
                    p,
                );
            }
            Lost::DataQ(x) => {
                let x = check(x)?;
                let (survivors, survivor_slots, lost) = split_lost(data, slots, x, None);
                let [dx, _] = lost;
                self.recover_data_and_q(
                    survivors.as_slice(),
                    survivor_slots.as_slice(),
                    p,
                    (slots[x], dx.unwrap_or_default()),
                    q,
                );
            }
            Lost::TwoData(x, y) => {
                let x = check(x)?;
                let y = check(y)?;
                if x == y {
                    return Err(ParityError::SameBlockTwice(x));
                }
                if reduce_slot(slots[x]) == reduce_slot(slots[y]) {
                    return Err(ParityError::SharedSlot(slots[x]));
                }
                let (survivors, survivor_slots, lost) = split_lost(data, slots, x, Some(y));
                let [dx, dy] = lost;
                self.recover_two_data(
                    survivors.as_slice(),
                    survivor_slots.as_slice(),
                    p,
                    q,
                    (slots[x], dx.unwrap_or_default()),
                    (slots[y], dy.unwrap_or_default()),
                );
            }
        }
        Ok(())
    }

    /// Runs a syndrome job: the engine does the bulk, the portable engine the last bytes
    /// that do not fill a vector.
    fn run(&self, plan: &Plan<'_>, mut job: Job<'_>) {
        job.check_len(plan.len());
        let done = match self.imp {
            Imp::Scalar => unreachable!("the scalar engine does not use plans"),
            Imp::Portable => 0,
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(e) => e.syndrome(plan, &mut job),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(e) => e.syndrome(plan, &mut job),
        };
        if done < plan.len() {
            portable::syndrome(plan, &mut job, done..plan.len());
        }
    }

    /// The sum of all bytes of `blocks` read with this engine's widest loads, for the plain
    /// read baseline of [`bench`]. The value is meaningless; it only keeps the reads alive.
    pub fn read_all(&self, blocks: &[&[u8]]) -> u64 {
        match self.imp {
            Imp::Scalar | Imp::Portable => portable::read(blocks),
            #[cfg(target_arch = "x86_64")]
            Imp::Ssse3(e) => e.read(blocks),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(e) => e.read(blocks),
        }
    }
}

fn check_lengths(blocks: &[&[u8]], others: &[usize]) {
    let len = others.first().copied().unwrap_or(0);
    assert!(
        blocks.iter().all(|b| b.len() == len) && others.iter().all(|&l| l == len),
        "parity: blocks of one call differ in length"
    );
}

fn plan_of<'a>(len: usize, blocks: impl Iterator<Item = (&'a [u8], u8)>) -> Plan<'a> {
    let mut plan = Plan::new(len);
    for (block, slot) in blocks {
        plan.push(block, slot);
    }
    plan.finish()
}

/// Up to [`MAX_DATA_BLOCKS`] borrowed blocks on the stack.
struct BlockList<'a, T: Copy> {
    items: [T; MAX_DATA_BLOCKS],
    count: usize,
    _life: core::marker::PhantomData<&'a ()>,
}

impl<'a, T: Copy> BlockList<'a, T> {
    fn as_slice(&self) -> &[T] {
        &self.items[..self.count]
    }
}

type SplitStripe<'a> = (
    BlockList<'a, &'a [u8]>,
    BlockList<'a, u8>,
    [Option<&'a mut [u8]>; 2],
);

/// Splits a stripe's data into the survivors (with their slots) and the lost blocks `x`
/// and, if any, `y`, in that order.
fn split_lost<'a>(
    data: &'a mut [&mut [u8]],
    slots: &[u8],
    x: usize,
    y: Option<usize>,
) -> SplitStripe<'a> {
    assert!(data.len() <= MAX_DATA_BLOCKS, "parity: too many blocks");
    let mut survivors = BlockList {
        items: [&[][..]; MAX_DATA_BLOCKS],
        count: 0,
        _life: core::marker::PhantomData,
    };
    let mut survivor_slots = BlockList {
        items: [0u8; MAX_DATA_BLOCKS],
        count: 0,
        _life: core::marker::PhantomData,
    };
    let mut lost: [Option<&'a mut [u8]>; 2] = [None, None];
    for (i, block) in data.iter_mut().enumerate() {
        if i == x {
            lost[0] = Some(&mut **block);
        } else if Some(i) == y {
            lost[1] = Some(&mut **block);
        } else {
            survivors.items[survivors.count] = &**block;
            survivors.count += 1;
            survivor_slots.items[survivor_slots.count] = slots[i];
            survivor_slots.count += 1;
        }
    }
    (survivors, survivor_slots, lost)
}
