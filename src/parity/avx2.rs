//! The AVX2 parity engine: 32-byte vectors, four per step (128 bytes of each source).

use core::arch::x86_64::{
    __m256i, _mm_loadu_si128, _mm_sfence, _mm256_add_epi8, _mm256_and_si256,
    _mm256_broadcastsi128_si256, _mm256_cmpgt_epi8, _mm256_extract_epi64, _mm256_loadu_si256,
    _mm256_set1_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_srli_epi16,
    _mm256_storeu_si256, _mm256_stream_si256, _mm256_xor_si256,
};

use super::simd::aligned;
use super::{Job, Plan, cpu, gf};

type V = __m256i;
const W: usize = 32;
/// Vectors per step: 4 × 32 bytes keeps P and Q of a step in 8 of the 16 YMM registers.
const LANES: usize = 4;

#[target_feature(enable = "avx2")]
#[inline]
fn zero() -> V {
    _mm256_setzero_si256()
}

#[target_feature(enable = "avx2")]
#[inline]
fn splat(byte: u8) -> V {
    _mm256_set1_epi8(byte as i8)
}

#[target_feature(enable = "avx2")]
#[inline]
fn xor(a: V, b: V) -> V {
    _mm256_xor_si256(a, b)
}

/// Doubles each byte: shift left, and fold the polynomial into the bytes whose top bit fell
/// out (a signed compare with zero turns the top bit into a whole-byte mask).
#[target_feature(enable = "avx2")]
#[inline]
fn mul2(v: V, poly: V) -> V {
    let carry = _mm256_and_si256(_mm256_cmpgt_epi8(_mm256_setzero_si256(), v), poly);
    _mm256_xor_si256(_mm256_add_epi8(v, v), carry)
}

/// The nibble tables of a constant, in both 128-bit halves (`vpshufb` works per half).
#[derive(Clone, Copy)]
struct Table {
    lo: V,
    hi: V,
}

#[target_feature(enable = "avx2")]
#[inline]
fn table(c: u8) -> Table {
    let (lo, hi) = gf::nibble_tables(c);
    // SAFETY: each table is a 16-byte array, exactly what the unaligned 16-byte load reads.
    let (lo, hi) = unsafe {
        (
            _mm_loadu_si128(lo.as_ptr().cast()),
            _mm_loadu_si128(hi.as_ptr().cast()),
        )
    };
    Table {
        lo: _mm256_broadcastsi128_si256(lo),
        hi: _mm256_broadcastsi128_si256(hi),
    }
}

/// `c · v` per byte: look each nibble up in its table and add the two halves.
#[target_feature(enable = "avx2")]
#[inline]
fn table_mul(t: &Table, v: V, mask: V) -> V {
    let lo = _mm256_and_si256(v, mask);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
    _mm256_xor_si256(_mm256_shuffle_epi8(t.lo, lo), _mm256_shuffle_epi8(t.hi, hi))
}

#[target_feature(enable = "avx2")]
#[inline]
fn fold(v: V) -> u64 {
    (_mm256_extract_epi64::<0>(v) ^ _mm256_extract_epi64::<1>(v))
        .wrapping_add(_mm256_extract_epi64::<2>(v) ^ _mm256_extract_epi64::<3>(v)) as u64
}

#[target_feature(enable = "avx2")]
#[inline]
fn fence() {
    _mm_sfence();
}

/// # Safety
/// `p` is valid for reading 32 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load(p: *const u8) -> V {
    // SAFETY: the caller guarantees 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// # Safety
/// `p` is valid for writing 32 bytes, and 32-byte aligned when `NT`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn put<const NT: bool>(p: *mut u8, v: V) {
    // SAFETY: the caller guarantees 32 writable bytes, aligned for the streaming store.
    unsafe {
        if NT {
            _mm256_stream_si256(p.cast(), v);
        } else {
            _mm256_storeu_si256(p.cast(), v);
        }
    }
}

simd_kernels!("avx2");

/// Proof that this CPU runs AVX2 with the OS saving YMM state: only [`Avx2::detect`] makes
/// one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _detected: (),
}

impl Avx2 {
    pub(crate) fn detect() -> Option<Self> {
        cpu::features().avx2.then_some(Avx2 { _detected: () })
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
        // SAFETY: `self` proves AVX2 is available; the front end checked that `srcs` is
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
        // SAFETY: `self` proves AVX2 is available; the front end checked that the job's
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
        // SAFETY: `self` proves AVX2 is available.
        unsafe { read_kernel(blocks, side_by_side) }
    }
}
