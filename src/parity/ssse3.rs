//! The SSSE3 parity engine: 16-byte vectors, four per step (64 bytes of each source).

use core::arch::x86_64::{
    __m128i, _mm_add_epi8, _mm_and_si128, _mm_cmpgt_epi8, _mm_cvtsi128_si64, _mm_loadu_si128,
    _mm_set1_epi8, _mm_setzero_si128, _mm_sfence, _mm_shuffle_epi8, _mm_srli_epi16, _mm_srli_si128,
    _mm_storeu_si128, _mm_stream_si128, _mm_xor_si128,
};

use super::simd::aligned;
use super::{Job, Plan, cpu, gf};

type V = __m128i;
const W: usize = 16;
/// Vectors per step: P and Q of a step take 8 of the 16 XMM registers.
const LANES: usize = 4;

#[target_feature(enable = "ssse3")]
#[inline]
fn zero() -> V {
    _mm_setzero_si128()
}

#[target_feature(enable = "ssse3")]
#[inline]
fn splat(byte: u8) -> V {
    _mm_set1_epi8(byte as i8)
}

#[target_feature(enable = "ssse3")]
#[inline]
fn xor(a: V, b: V) -> V {
    _mm_xor_si128(a, b)
}

/// Doubles each byte: shift left, and fold the polynomial into the bytes whose top bit fell
/// out (a signed compare with zero turns the top bit into a whole-byte mask).
#[target_feature(enable = "ssse3")]
#[inline]
fn mul2(v: V, poly: V) -> V {
    let carry = _mm_and_si128(_mm_cmpgt_epi8(_mm_setzero_si128(), v), poly);
    _mm_xor_si128(_mm_add_epi8(v, v), carry)
}

/// The nibble tables of a constant.
#[derive(Clone, Copy)]
struct Table {
    lo: V,
    hi: V,
}

#[target_feature(enable = "ssse3")]
#[inline]
fn table(c: u8) -> Table {
    let (lo, hi) = gf::nibble_tables(c);
    // SAFETY: each table is a 16-byte array, exactly what the unaligned 16-byte load reads.
    unsafe {
        Table {
            lo: _mm_loadu_si128(lo.as_ptr().cast()),
            hi: _mm_loadu_si128(hi.as_ptr().cast()),
        }
    }
}

/// `c · v` per byte: look each nibble up in its table and add the two halves.
#[target_feature(enable = "ssse3")]
#[inline]
fn table_mul(t: &Table, v: V, mask: V) -> V {
    let lo = _mm_and_si128(v, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
    _mm_xor_si128(_mm_shuffle_epi8(t.lo, lo), _mm_shuffle_epi8(t.hi, hi))
}

#[target_feature(enable = "ssse3")]
#[inline]
fn fold(v: V) -> u64 {
    (_mm_cvtsi128_si64(v) ^ _mm_cvtsi128_si64(_mm_srli_si128::<8>(v))) as u64
}

#[target_feature(enable = "ssse3")]
#[inline]
fn fence() {
    _mm_sfence();
}

/// # Safety
/// `p` is valid for reading 16 bytes.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn load(p: *const u8) -> V {
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// # Safety
/// `p` is valid for writing 16 bytes, and 16-byte aligned when `NT`.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn put<const NT: bool>(p: *mut u8, v: V) {
    // SAFETY: the caller guarantees 16 writable bytes, aligned for the streaming store.
    unsafe {
        if NT {
            _mm_stream_si128(p.cast(), v);
        } else {
            _mm_storeu_si128(p.cast(), v);
        }
    }
}

simd_kernels!("ssse3");

/// Proof that this CPU runs SSSE3: only [`Ssse3::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ssse3 {
    _detected: (),
}

impl Ssse3 {
    pub(crate) fn detect() -> Option<Self> {
        cpu::features().ssse3.then_some(Ssse3 { _detected: () })
    }

    /// The xor over whole vectors; returns how many leading bytes were done. `stream`
    /// asks for non-temporal stores, used when `dst` is aligned for them.
    pub(crate) fn xor(
        self,
        srcs: &[&[u8]],
        dst: &mut [u8],
        accumulate: bool,
        stream: bool,
    ) -> usize {
        let len = dst.len();
        debug_assert!(!srcs.is_empty() && srcs.iter().all(|s| s.len() == len));
        let nt = stream && aligned(dst.as_ptr() as usize, W);
        let d = dst.as_mut_ptr();
        // SAFETY: `self` proves SSSE3 is available; the front end checked that `srcs` is
        // non-empty and every buffer has `len` bytes; `aligned` checked the alignment for
        // the streaming stores.
        unsafe {
            match (accumulate, nt) {
                (false, false) => xor_kernel::<LANES, false, false>(srcs, d, len),
                (false, true) => xor_kernel::<LANES, false, true>(srcs, d, len),
                (true, false) => xor_kernel::<LANES, true, false>(srcs, d, len),
                (true, true) => xor_kernel::<LANES, true, true>(srcs, d, len),
            }
        }
    }

    /// A syndrome job over whole vectors; returns how many leading bytes were done.
    /// `stream` asks for non-temporal stores, used when the outputs are aligned for them.
    pub(crate) fn syndrome(self, plan: &Plan<'_>, job: &mut Job<'_>, stream: bool) -> usize {
        let io = Io::of(job);
        let nt = stream && aligned(io.out_addr_bits, W);
        // SAFETY: `self` proves SSSE3 is available; the front end checked that the job's
        // buffers and the plan's sources all have `plan.len()` bytes; `aligned` checked
        // the alignment of the outputs for the streaming stores.
        unsafe {
            if nt {
                syndrome_dispatch::<LANES, true>(plan, &io)
            } else {
                syndrome_dispatch::<LANES, false>(plan, &io)
            }
        }
    }

    pub(crate) fn read(self, blocks: &[&[u8]], side_by_side: bool) -> u64 {
        // SAFETY: `self` proves SSSE3 is available.
        unsafe { read_kernel(blocks, side_by_side) }
    }
}
