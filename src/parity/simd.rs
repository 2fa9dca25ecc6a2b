//! The SIMD kernels shared by the SSSE3 and AVX2 engines, written once as a macro and
//! instantiated in each engine's module with that engine's vector type and target feature.
//!
//! Shape of every kernel: the outer loop walks the blocks in steps of `LANES` vectors; for
//! each step the inner loop walks the sources, keeping P and Q of the step in registers, so
//! each source byte is loaded once and each output byte stored once. Q follows Horner's rule
//! (sources sorted by slot from high to low; one doubling per slot of distance), which costs
//! four vector operations per source instead of a full multiply. The recoveries finish each
//! step with two nibble-table multiplies (`pshufb`), so they are single passes too.
//! With `NT`, outputs are written with streaming (non-temporal) stores; the front end
//! decides when (see `StoreHint`).
//!
//! The engine module provides: `V`, `W` (bytes per vector), `Table`, and the
//! `#[target_feature]` functions `zero`, `splat`, `xor`, `mul2`, `table`, `table_mul`,
//! `fold`, `fence`, and the unsafe `load` and `put::<NT>`.

use super::Job;

/// What a syndrome kernel does at the end of each step (see [`Job`]).
pub(super) const GEN_PQ: u8 = 0;
pub(super) const GEN_Q: u8 = 1;
pub(super) const UPDATE: u8 = 2;
pub(super) const REC2: u8 = 3;
pub(super) const REC_DATA_P: u8 = 4;
pub(super) const REC_DATA_Q: u8 = 5;

/// Above this many sources the kernels take them a group at a time (see `xor_grouped`).
pub(super) const GROUP_SOURCES: usize = 8;
/// Bytes of each source a group pass reads before the next group: one page.
pub(super) const GROUP_CHUNK_BYTES: usize = 4096;

/// How far ahead of its loads a streaming kernel asks for source lines. The hardware
/// prefetchers alone left the loads of a DRAM-bound P+Q waiting (0.66 of a plain read at
/// k = 4 without, 0.78 with, in a minimal loop); 512 and 1024 measured alike, 4 KiB and more
/// worse.
const PREFETCH_AHEAD_BYTES: usize = 512;

/// Asks for the cache lines of `bytes` bytes at `PREFETCH_AHEAD_BYTES` past `p`.
#[inline(always)]
pub(super) fn prefetch(p: *const u8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        let at = p.wrapping_add(PREFETCH_AHEAD_BYTES + off);
        // SAFETY: a prefetch is a hint: it never faults and changes no memory, whatever
        // the address (`wrapping_add` keeps the pointer arithmetic itself defined).
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(at.cast())
        };
        off += 64;
    }
}

/// The raw pointers of a [`Job`], taken once per call.
#[derive(Clone, Copy)]
pub(super) struct Io {
    pub(super) mode: u8,
    pub(super) p_in: *const u8,
    pub(super) q_in: *const u8,
    pub(super) p_out: *mut u8,
    pub(super) q_out: *mut u8,
    pub(super) x_out: *mut u8,
    pub(super) y_out: *mut u8,
    pub(super) a: u8,
    pub(super) b: u8,
    /// The OR of the output addresses, to test their alignment at once.
    pub(super) out_addr_bits: usize,
}

impl Io {
    pub(super) fn of(job: &mut Job<'_>) -> Io {
        let mut io = Io {
            mode: GEN_PQ,
            p_in: core::ptr::null(),
            q_in: core::ptr::null(),
            p_out: core::ptr::null_mut(),
            q_out: core::ptr::null_mut(),
            x_out: core::ptr::null_mut(),
            y_out: core::ptr::null_mut(),
            a: 0,
            b: 0,
            out_addr_bits: 0,
        };
        (io.a, io.b) = job.coefficients();
        match job {
            Job::GenPq { p, q } => {
                io.p_out = p.as_mut_ptr();
                io.q_out = q.as_mut_ptr();
            }
            Job::GenQ { q } => {
                io.mode = GEN_Q;
                io.q_out = q.as_mut_ptr();
            }
            Job::Update { p, q } => {
                io.mode = UPDATE;
                io.p_out = p.as_mut_ptr();
                io.q_out = q.as_mut_ptr();
            }
            Job::Rec2 { p, q, dx, dy, .. } => {
                io.mode = REC2;
                io.p_in = p.as_ptr();
                io.q_in = q.as_ptr();
                io.x_out = dx.as_mut_ptr();
                io.y_out = dy.as_mut_ptr();
            }
            Job::RecDataP { q, dx, p_out, .. } => {
                io.mode = REC_DATA_P;
                io.q_in = q.as_ptr();
                io.x_out = dx.as_mut_ptr();
                io.p_out = p_out.as_mut_ptr();
            }
            Job::RecDataQ { p, dx, q_out, .. } => {
                io.mode = REC_DATA_Q;
                io.p_in = p.as_ptr();
                io.x_out = dx.as_mut_ptr();
                io.q_out = q_out.as_mut_ptr();
            }
        }
        io.out_addr_bits = [io.p_out, io.q_out, io.x_out, io.y_out]
            .iter()
            .fold(0, |bits, p| bits | *p as usize);
        io
    }
}

/// Whether addresses that OR to `addr_bits` are all aligned for `vector_bytes`-wide
/// streaming stores.
pub(super) fn aligned(addr_bits: usize, vector_bytes: usize) -> bool {
    addr_bits.is_multiple_of(vector_bytes)
}

macro_rules! simd_kernels {
    ($feature:literal) => {
        use $crate::parity::simd::{
            GEN_PQ, GEN_Q, GROUP_CHUNK_BYTES, GROUP_SOURCES, Io, REC_DATA_P, REC_DATA_Q, REC2,
            UPDATE, prefetch,
        };

        /// Software prefetch of the sources, for streaming calls only: those read from
        /// DRAM, where the hardware prefetchers alone leave the loads waiting. Only the
        /// syndrome steps use it: the xor already runs at the speed of a plain read, and
        /// the grouped passes read a page of each source at a time.
        #[inline(always)]
        fn prefetch_nt<const NT: bool>(p: *const u8, bytes: usize) {
            if NT {
                prefetch(p, bytes);
            }
        }

        /// Constants of a syndrome kernel, hoisted out of its loops.
        #[derive(Clone, Copy)]
        struct Consts {
            poly: V,
            mask: V,
            ta: Table,
            tb: Table,
        }

        /// One step of `LANES` vectors at byte `pos` of an xor.
        ///
        /// # Safety
        /// `srcs` is non-empty; every source and `dst` hold at least `pos + LANES·W` bytes;
        /// with `NT`, `dst + pos` is aligned to `W`.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn xor_step<const LANES: usize, const ACC: bool, const NT: bool>(
            srcs: &[&[u8]],
            dst: *mut u8,
            pos: usize,
        ) {
            // Last source first. Blocks often lie in memory in order with the output right
            // after them; walked forwards, that constant stride leads the CPU's stride
            // prefetcher onto the output lines being written (measured up to 40% slower
            // with 16 sources).
            // SAFETY: the caller guarantees the bounds, alignment and non-empty `srcs`.
            unsafe {
                let n = srcs.len();
                let first = srcs.get_unchecked(n - 1).as_ptr().add(pos);
                let mut acc = [zero(); LANES];
                for l in 0..LANES {
                    acc[l] = load(first.add(l * W));
                }
                if ACC {
                    for l in 0..LANES {
                        acc[l] = xor(acc[l], load(dst.add(pos + l * W)));
                    }
                }
                for s in srcs.get_unchecked(..n - 1).iter().rev() {
                    let sp = s.as_ptr().add(pos);
                    for l in 0..LANES {
                        acc[l] = xor(acc[l], load(sp.add(l * W)));
                    }
                }
                for l in 0..LANES {
                    put::<NT>(dst.add(pos + l * W), acc[l]);
                }
            }
        }

        /// `dst (^)= ⊕ srcs` over the longest prefix of whole chunks, a group of sources
        /// at a time through a chunk-sized scratch in L1; returns the prefix length.
        /// Many sources side by side are many streams at once, more than the hardware
        /// prefetchers follow; a group at a time reads each source a chunk at a time.
        ///
        /// # Safety
        /// As [`xor_kernel`].
        #[target_feature(enable = $feature)]
        unsafe fn xor_grouped<const LANES: usize, const ACC: bool, const NT: bool>(
            srcs: &[&[u8]],
            dst: *mut u8,
            len: usize,
        ) -> usize {
            let mut scratch = [zero(); GROUP_CHUNK_BYTES / W];
            let groups = srcs.len().div_ceil(GROUP_SOURCES);
            let mut pos = 0;
            while pos + GROUP_CHUNK_BYTES <= len {
                // Last group first, last source first in each, as `xor_step` goes.
                for (g, group) in srcs.rchunks(GROUP_SOURCES).enumerate() {
                    let mut off = 0;
                    while off < GROUP_CHUNK_BYTES {
                        let mut acc = [zero(); LANES];
                        // SAFETY: `pos + off + LANES·W <= pos + GROUP_CHUNK_BYTES <= len`;
                        // the scratch index stays below its length (`off < CHUNK`).
                        unsafe {
                            for l in 0..LANES {
                                acc[l] = if g == 0 {
                                    if ACC {
                                        load(dst.add(pos + off + l * W))
                                    } else {
                                        zero()
                                    }
                                } else {
                                    *scratch.get_unchecked(off / W + l)
                                };
                            }
                            for s in group.iter().rev() {
                                let sp = s.as_ptr().add(pos + off);
                                for l in 0..LANES {
                                    acc[l] = xor(acc[l], load(sp.add(l * W)));
                                }
                            }
                            for l in 0..LANES {
                                if g + 1 == groups {
                                    put::<NT>(dst.add(pos + off + l * W), acc[l]);
                                } else {
                                    *scratch.get_unchecked_mut(off / W + l) = acc[l];
                                }
                            }
                        }
                        off += LANES * W;
                    }
                }
                pos += GROUP_CHUNK_BYTES;
            }
            pos
        }

        /// `dst (^)= ⊕ srcs` over the longest prefix of whole vectors; returns its length.
        ///
        /// # Safety
        /// `srcs` is non-empty; every source and `dst` hold at least `len` bytes; with `NT`,
        /// `dst` is aligned to `W`.
        #[target_feature(enable = $feature)]
        unsafe fn xor_kernel<const LANES: usize, const ACC: bool, const NT: bool>(
            srcs: &[&[u8]],
            dst: *mut u8,
            len: usize,
        ) -> usize {
            let mut pos = 0;
            if srcs.len() > GROUP_SOURCES {
                // SAFETY: forwarded from the caller.
                pos = unsafe { xor_grouped::<LANES, ACC, NT>(srcs, dst, len) };
            }
            while pos + LANES * W <= len {
                // SAFETY: `pos + LANES·W <= len`; the rest is the caller's guarantee.
                unsafe { xor_step::<LANES, ACC, NT>(srcs, dst, pos) };
                pos += LANES * W;
            }
            while pos + W <= len {
                // SAFETY: `pos + W <= len`; the rest is the caller's guarantee.
                unsafe { xor_step::<1, ACC, NT>(srcs, dst, pos) };
                pos += W;
            }
            if NT {
                fence();
            }
            pos
        }

        /// One step of `LANES` vectors at byte `pos` of a syndrome job.
        ///
        /// # Safety
        /// Every source and every pointer of `io` used by `MODE` hold at least
        /// `pos + LANES·W` bytes; with `NT`, the outputs at `pos` are aligned to `W`.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn syndrome_step<const LANES: usize, const MODE: u8, const NT: bool>(
            srcs: &[&[u8]],
            gaps: &[u8],
            tail_gap: u8,
            io: &Io,
            k: Consts,
            pos: usize,
        ) {
            let mut p = [zero(); LANES];
            let mut q = [zero(); LANES];
            // SAFETY: the caller guarantees the bounds and alignment of every access.
            unsafe {
                // `gaps[0]` is 0, and doubling a zero Q changes nothing: every source takes
                // the same path.
                for i in 0..srcs.len() {
                    let sp = srcs.get_unchecked(i).as_ptr().add(pos);
                    prefetch_nt::<NT>(sp, LANES * W);
                    let mut d = [zero(); LANES];
                    for l in 0..LANES {
                        d[l] = load(sp.add(l * W));
                    }
                    let gap = *gaps.get_unchecked(i);
                    if gap == 1 {
                        for l in 0..LANES {
                            q[l] = mul2(q[l], k.poly);
                        }
                    } else {
                        for _ in 0..gap {
                            for l in 0..LANES {
                                q[l] = mul2(q[l], k.poly);
                            }
                        }
                    }
                    for l in 0..LANES {
                        if MODE != GEN_Q {
                            p[l] = xor(p[l], d[l]);
                        }
                        q[l] = xor(q[l], d[l]);
                    }
                }
                syndrome_finish::<LANES, MODE, NT>(tail_gap, io, k, pos, p, q);
            }
        }

        /// The end of a step: the last doublings of Q, then what `MODE` does with P and Q
        /// at byte `pos`.
        ///
        /// # Safety
        /// As [`syndrome_step`].
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn syndrome_finish<const LANES: usize, const MODE: u8, const NT: bool>(
            tail_gap: u8,
            io: &Io,
            k: Consts,
            pos: usize,
            p: [V; LANES],
            mut q: [V; LANES],
        ) {
            // SAFETY: the caller guarantees the bounds and alignment of every access.
            unsafe {
                for _ in 0..tail_gap {
                    for l in 0..LANES {
                        q[l] = mul2(q[l], k.poly);
                    }
                }
                if MODE == GEN_PQ {
                    // P's lines, then Q's: each write-combining buffer fills completely
                    // before the next one opens.
                    for l in 0..LANES {
                        put::<NT>(io.p_out.add(pos + l * W), p[l]);
                    }
                    for l in 0..LANES {
                        put::<NT>(io.q_out.add(pos + l * W), q[l]);
                    }
                    return;
                }
                if MODE == GEN_Q {
                    for l in 0..LANES {
                        put::<NT>(io.q_out.add(pos + l * W), q[l]);
                    }
                    return;
                }
                // The other modes write two outputs: as for P and Q above, all lines of the
                // first, then all of the second, rather than alternating vector by vector.
                let (out1, out2) = match MODE {
                    UPDATE => (io.p_out, io.q_out),
                    REC2 => (io.x_out, io.y_out),
                    REC_DATA_P => (io.x_out, io.p_out),
                    REC_DATA_Q => (io.x_out, io.q_out),
                    _ => unreachable!(),
                };
                match MODE {
                    UPDATE => {
                        prefetch_nt::<NT>(io.p_out.add(pos), LANES * W);
                        prefetch_nt::<NT>(io.q_out.add(pos), LANES * W);
                    }
                    REC2 => {
                        prefetch_nt::<NT>(io.p_in.add(pos), LANES * W);
                        prefetch_nt::<NT>(io.q_in.add(pos), LANES * W);
                    }
                    REC_DATA_P => prefetch_nt::<NT>(io.q_in.add(pos), LANES * W),
                    REC_DATA_Q => prefetch_nt::<NT>(io.p_in.add(pos), LANES * W),
                    _ => {}
                }
                let mut v1 = [zero(); LANES];
                let mut v2 = [zero(); LANES];
                for l in 0..LANES {
                    let o = pos + l * W;
                    (v1[l], v2[l]) = match MODE {
                        UPDATE => (
                            xor(load(io.p_out.add(o)), p[l]),
                            xor(load(io.q_out.add(o)), q[l]),
                        ),
                        REC2 => {
                            let pd = xor(p[l], load(io.p_in.add(o)));
                            let qd = xor(q[l], load(io.q_in.add(o)));
                            let x = xor(table_mul(&k.ta, pd, k.mask), table_mul(&k.tb, qd, k.mask));
                            (x, xor(pd, x))
                        }
                        REC_DATA_P => {
                            let x = table_mul(&k.ta, xor(q[l], load(io.q_in.add(o))), k.mask);
                            (x, xor(p[l], x))
                        }
                        REC_DATA_Q => {
                            let x = xor(p[l], load(io.p_in.add(o)));
                            (x, xor(q[l], table_mul(&k.ta, x, k.mask)))
                        }
                        _ => unreachable!(),
                    };
                }
                for l in 0..LANES {
                    put::<NT>(out1.add(pos + l * W), v1[l]);
                }
                for l in 0..LANES {
                    put::<NT>(out2.add(pos + l * W), v2[l]);
                }
            }
        }

        /// A syndrome job over the longest prefix of whole chunks, a group of sources at a
        /// time through chunk-sized P and Q scratch in L1 (see `xor_grouped`); Horner's
        /// rule carries over from group to group in the scratch Q. Returns the prefix
        /// length.
        ///
        /// # Safety
        /// As [`syndrome_kernel`].
        #[target_feature(enable = $feature)]
        unsafe fn syndrome_grouped<const LANES: usize, const MODE: u8, const NT: bool>(
            srcs: &[&[u8]],
            gaps: &[u8],
            tail_gap: u8,
            len: usize,
            io: &Io,
            k: Consts,
        ) -> usize {
            let groups = srcs.len().div_ceil(GROUP_SOURCES);
            let mut scratch_p = [zero(); GROUP_CHUNK_BYTES / W];
            let mut scratch_q = [zero(); GROUP_CHUNK_BYTES / W];
            let mut pos = 0;
            while pos + GROUP_CHUNK_BYTES <= len {
                for g in 0..groups {
                    let first = g * GROUP_SOURCES;
                    let end = (first + GROUP_SOURCES).min(srcs.len());
                    let mut off = 0;
                    while off < GROUP_CHUNK_BYTES {
                        let at = pos + off;
                        let mut p = [zero(); LANES];
                        let mut q = [zero(); LANES];
                        // SAFETY: `at + LANES·W <= pos + GROUP_CHUNK_BYTES <= len`, the
                        // length of every source and output; scratch indices stay below
                        // `GROUP_CHUNK_BYTES / W`.
                        unsafe {
                            if g > 0 {
                                for l in 0..LANES {
                                    p[l] = *scratch_p.get_unchecked(off / W + l);
                                    q[l] = *scratch_q.get_unchecked(off / W + l);
                                }
                            }
                            for i in first..end {
                                let mut gap = *gaps.get_unchecked(i);
                                while gap != 0 {
                                    for l in 0..LANES {
                                        q[l] = mul2(q[l], k.poly);
                                    }
                                    gap -= 1;
                                }
                                let sp = srcs.get_unchecked(i).as_ptr().add(at);
                                for l in 0..LANES {
                                    let d = load(sp.add(l * W));
                                    if MODE != GEN_Q {
                                        p[l] = xor(p[l], d);
                                    }
                                    q[l] = xor(q[l], d);
                                }
                            }
                            if g + 1 == groups {
                                syndrome_finish::<LANES, MODE, NT>(tail_gap, io, k, at, p, q);
                            } else {
                                for l in 0..LANES {
                                    *scratch_p.get_unchecked_mut(off / W + l) = p[l];
                                    *scratch_q.get_unchecked_mut(off / W + l) = q[l];
                                }
                            }
                        }
                        off += LANES * W;
                    }
                }
                pos += GROUP_CHUNK_BYTES;
            }
            pos
        }

        /// Runs a syndrome job over the longest prefix of whole vectors; returns its length.
        ///
        /// # Safety
        /// `io` was made from a job whose buffers all hold `plan.len()` bytes, as the
        /// plan's sources do; with `NT`, the outputs are aligned to `W`.
        #[target_feature(enable = $feature)]
        unsafe fn syndrome_kernel<const LANES: usize, const MODE: u8, const NT: bool>(
            plan: &$crate::parity::Plan<'_>,
            io: &Io,
        ) -> usize {
            // Everything the loops read, taken out of the plan and the job once: the
            // steps see plain slices and a copy of the pointers.
            let len = plan.len();
            let srcs = plan.sources();
            let gaps = plan.gaps();
            let tail_gap = plan.tail_gap();
            let io = &{ *io };
            let k = Consts {
                poly: splat($crate::parity::gf::POLY_LOW),
                mask: splat(0x0f),
                ta: table(io.a),
                tb: table(io.b),
            };
            let mut pos = 0;
            if srcs.len() > GROUP_SOURCES {
                // SAFETY: forwarded from the caller.
                pos = unsafe {
                    syndrome_grouped::<LANES, MODE, NT>(srcs, gaps, tail_gap, len, io, k)
                };
            }
            while pos + LANES * W <= len {
                // SAFETY: `pos + LANES·W <= len`; the rest is the caller's guarantee.
                unsafe { syndrome_step::<LANES, MODE, NT>(srcs, gaps, tail_gap, io, k, pos) };
                pos += LANES * W;
            }
            while pos + W <= len {
                // SAFETY: `pos + W <= len`; the rest is the caller's guarantee.
                unsafe { syndrome_step::<1, MODE, NT>(srcs, gaps, tail_gap, io, k, pos) };
                pos += W;
            }
            if NT {
                fence();
            }
            pos
        }

        /// Dispatches a syndrome job to the kernel instance for its mode.
        ///
        /// # Safety
        /// As [`syndrome_kernel`].
        #[target_feature(enable = $feature)]
        unsafe fn syndrome_dispatch<const LANES: usize, const NT: bool>(
            plan: &$crate::parity::Plan<'_>,
            io: &Io,
        ) -> usize {
            // SAFETY: forwarded from the caller.
            unsafe {
                match io.mode {
                    GEN_PQ => syndrome_kernel::<LANES, GEN_PQ, NT>(plan, io),
                    GEN_Q => syndrome_kernel::<LANES, GEN_Q, NT>(plan, io),
                    UPDATE => syndrome_kernel::<LANES, UPDATE, NT>(plan, io),
                    REC2 => syndrome_kernel::<LANES, REC2, NT>(plan, io),
                    REC_DATA_P => syndrome_kernel::<LANES, REC_DATA_P, NT>(plan, io),
                    REC_DATA_Q => syndrome_kernel::<LANES, REC_DATA_Q, NT>(plan, io),
                    _ => unreachable!(),
                }
            }
        }

        /// Reads every byte of `blocks` and folds them into a number: the plain read the
        /// benchmark compares the kernels with. `side_by_side` reads in the kernels' order
        /// (all blocks a step at a time, last block first; past 8 blocks a group at a time);
        /// otherwise block after block.
        #[target_feature(enable = $feature)]
        fn read_kernel(blocks: &[&[u8]], side_by_side: bool) -> u64 {
            const LANES: usize = 4;
            let mut acc = [zero(); LANES];
            let mut tail = 0u64;
            let len = blocks.iter().map(|b| b.len()).min().unwrap_or(0);
            let whole = len - len % (LANES * W);
            let mut step = |ptr: *const u8, pos: usize| {
                for l in 0..LANES {
                    // SAFETY: callers pass `pos + LANES·W <= whole <= len`, at most the
                    // block's length.
                    acc[l] = xor(acc[l], unsafe { load(ptr.add(pos + l * W)) });
                }
            };
            if side_by_side && blocks.len() > GROUP_SOURCES {
                // As the kernels go past 8 sources: a page of each of a group at a time.
                let chunks_end = len - len % GROUP_CHUNK_BYTES;
                for chunk in (0..chunks_end).step_by(GROUP_CHUNK_BYTES) {
                    for group in blocks.rchunks(GROUP_SOURCES) {
                        for pos in (chunk..chunk + GROUP_CHUNK_BYTES).step_by(LANES * W) {
                            for block in group.iter().rev() {
                                step(block.as_ptr(), pos);
                            }
                        }
                    }
                }
                for pos in (chunks_end..whole).step_by(LANES * W) {
                    for block in blocks.iter().rev() {
                        step(block.as_ptr(), pos);
                    }
                }
            } else if side_by_side {
                for pos in (0..whole).step_by(LANES * W) {
                    for block in blocks.iter().rev() {
                        step(block.as_ptr(), pos);
                    }
                }
            } else {
                for block in blocks {
                    for pos in (0..whole).step_by(LANES * W) {
                        step(block.as_ptr(), pos);
                    }
                }
            }
            for block in blocks {
                for &byte in &block[whole..] {
                    tail = tail.wrapping_add(byte as u64);
                }
            }
            let mut sum = acc[0];
            for v in &acc[1..] {
                sum = xor(sum, *v);
            }
            fold(sum) ^ tail
        }
    };
}
