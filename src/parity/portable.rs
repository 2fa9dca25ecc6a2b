//! The portable engine: 64-bit words holding eight GF(2⁸) lanes (SWAR), safe code, any
//! target. Also finishes the last bytes that a SIMD engine's vectors do not cover.

use core::ops::Range;

use super::gf::{self, POLY_LOW};
use super::{Job, Plan};

/// Words per step of the main loop: four independent chains keep the ALUs busy.
const CHUNK_WORDS: usize = 4;
const WORD_BYTES: usize = 8;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Doubles each of the eight bytes of `x` in GF(2⁸).
#[inline(always)]
fn mul2(x: u64) -> u64 {
    let high = x & HIGH_BITS;
    let shifted = (x & !HIGH_BITS) << 1;
    shifted ^ ((high >> 7) * POLY_LOW as u64)
}

/// Multiplies each byte of `x` by a constant, looked up in its [`gf::mul_table`].
#[inline(always)]
fn mul_const(table: &[u8; 256], x: u64) -> u64 {
    u64::from_le_bytes(x.to_le_bytes().map(|b| table[b as usize]))
}

/// `N` words from `s[at..at + bytes]`, zero-padded when `bytes < 8·N`. Zero padding is
/// harmless: every operation works on each byte alone.
#[inline(always)]
fn load<const N: usize>(s: &[u8], at: usize, bytes: usize) -> [u64; N] {
    let mut words = [0u64; N];
    if bytes == N * WORD_BYTES {
        for (i, w) in words.iter_mut().enumerate() {
            let mut b = [0u8; WORD_BYTES];
            b.copy_from_slice(&s[at + i * WORD_BYTES..at + (i + 1) * WORD_BYTES]);
            *w = u64::from_le_bytes(b);
        }
    } else {
        let mut b = [0u8; CHUNK_WORDS * WORD_BYTES];
        b[..bytes].copy_from_slice(&s[at..at + bytes]);
        for (i, w) in words.iter_mut().enumerate() {
            let mut word = [0u8; WORD_BYTES];
            word.copy_from_slice(&b[i * WORD_BYTES..(i + 1) * WORD_BYTES]);
            *w = u64::from_le_bytes(word);
        }
    }
    words
}

/// Writes the first `bytes` bytes of `words` to `d[at..]`.
#[inline(always)]
fn store<const N: usize>(d: &mut [u8], at: usize, bytes: usize, words: [u64; N]) {
    if bytes == N * WORD_BYTES {
        for (i, w) in words.iter().enumerate() {
            d[at + i * WORD_BYTES..at + (i + 1) * WORD_BYTES].copy_from_slice(&w.to_le_bytes());
        }
    } else {
        let mut b = [0u8; CHUNK_WORDS * WORD_BYTES];
        for (i, w) in words.iter().enumerate() {
            b[i * WORD_BYTES..(i + 1) * WORD_BYTES].copy_from_slice(&w.to_le_bytes());
        }
        d[at..at + bytes].copy_from_slice(&b[..bytes]);
    }
}

/// Walks `range` in chunks of four words, then words, then a last partial word.
#[inline(always)]
fn walk(range: Range<usize>, mut step: impl FnMut(usize, usize, bool)) {
    let mut at = range.start;
    let chunk = CHUNK_WORDS * WORD_BYTES;
    while at + chunk <= range.end {
        step(at, chunk, true);
        at += chunk;
    }
    while at < range.end {
        let bytes = (range.end - at).min(WORD_BYTES);
        step(at, bytes, false);
        at += bytes;
    }
}

/// `dst = ⊕ srcs` (or `dst ^= ⊕ srcs`) over `range`.
pub(super) fn xor(srcs: &[&[u8]], dst: &mut [u8], accumulate: bool, range: Range<usize>) {
    fn at_n<const N: usize>(srcs: &[&[u8]], dst: &mut [u8], acc: bool, at: usize, bytes: usize) {
        let mut sum = if acc {
            load::<N>(dst, at, bytes)
        } else {
            [0; N]
        };
        for s in srcs {
            let d = load::<N>(s, at, bytes);
            for i in 0..N {
                sum[i] ^= d[i];
            }
        }
        store(dst, at, bytes, sum);
    }
    walk(range, |at, bytes, chunk| {
        if chunk {
            at_n::<CHUNK_WORDS>(srcs, dst, accumulate, at, bytes);
        } else {
            at_n::<1>(srcs, dst, accumulate, at, bytes);
        }
    });
}

/// Runs a syndrome job over `range`.
pub(super) fn syndrome(plan: &Plan<'_>, job: &mut Job<'_>, range: Range<usize>) {
    let (a, b) = job.coefficients();
    // Only the recoveries multiply by constants; the tables cost 512 cheap steps.
    let recovering = matches!(
        job,
        Job::Rec2 { .. } | Job::RecDataP { .. } | Job::RecDataQ { .. }
    );
    let tables = if recovering {
        (gf::mul_table(a), gf::mul_table(b))
    } else {
        ([0; 256], [0; 256])
    };
    let coefficients = (&tables.0, &tables.1);
    walk(range, |at, bytes, chunk| {
        if chunk {
            syndrome_at::<CHUNK_WORDS>(plan, job, coefficients, at, bytes);
        } else {
            syndrome_at::<1>(plan, job, coefficients, at, bytes);
        }
    });
}

#[inline(always)]
fn syndrome_at<const N: usize>(
    plan: &Plan<'_>,
    job: &mut Job<'_>,
    (a, b): (&[u8; 256], &[u8; 256]),
    at: usize,
    bytes: usize,
) {
    let mut p = [0u64; N];
    let mut q = [0u64; N];
    for (src, &gap) in plan.sources().iter().zip(plan.gaps()) {
        for _ in 0..gap {
            q = q.map(mul2);
        }
        let d = load::<N>(src, at, bytes);
        for i in 0..N {
            p[i] ^= d[i];
            q[i] ^= d[i];
        }
    }
    for _ in 0..plan.tail_gap() {
        q = q.map(mul2);
    }
    match job {
        Job::GenPq { p: p_out, q: q_out } => {
            store(p_out, at, bytes, p);
            store(q_out, at, bytes, q);
        }
        Job::GenQ { q: q_out } => store(q_out, at, bytes, q),
        Job::Update { p: p_io, q: q_io } => {
            let mut old_p = load::<N>(p_io, at, bytes);
            let mut old_q = load::<N>(q_io, at, bytes);
            for i in 0..N {
                old_p[i] ^= p[i];
                old_q[i] ^= q[i];
            }
            store(p_io, at, bytes, old_p);
            store(q_io, at, bytes, old_q);
        }
        Job::Rec2 {
            p: p_in,
            q: q_in,
            dx,
            dy,
            ..
        } => {
            let pin = load::<N>(p_in, at, bytes);
            let qin = load::<N>(q_in, at, bytes);
            let mut x = [0u64; N];
            let mut y = [0u64; N];
            for i in 0..N {
                let pd = p[i] ^ pin[i];
                let qd = q[i] ^ qin[i];
                x[i] = mul_const(a, pd) ^ mul_const(b, qd);
                y[i] = pd ^ x[i];
            }
            store(dx, at, bytes, x);
            store(dy, at, bytes, y);
        }
        Job::RecDataP {
            q: q_in, dx, p_out, ..
        } => {
            let qin = load::<N>(q_in, at, bytes);
            let mut x = [0u64; N];
            for i in 0..N {
                x[i] = mul_const(a, q[i] ^ qin[i]);
                p[i] ^= x[i];
            }
            store(dx, at, bytes, x);
            store(p_out, at, bytes, p);
        }
        Job::RecDataQ {
            p: p_in, dx, q_out, ..
        } => {
            let pin = load::<N>(p_in, at, bytes);
            let mut x = [0u64; N];
            for i in 0..N {
                x[i] = p[i] ^ pin[i];
                q[i] ^= mul_const(a, x[i]);
            }
            store(dx, at, bytes, x);
            store(q_out, at, bytes, q);
        }
    }
}

/// A wrapping sum of every word of every block, block after block (the plain read).
pub(super) fn read(blocks: &[&[u8]]) -> u64 {
    let mut sums = [0u64; CHUNK_WORDS];
    for block in blocks {
        walk(0..block.len(), |at, bytes, chunk| {
            if chunk {
                let words = load::<CHUNK_WORDS>(block, at, bytes);
                for i in 0..CHUNK_WORDS {
                    sums[i] = sums[i].wrapping_add(words[i]);
                }
            } else {
                let [word] = load::<1>(block, at, bytes);
                sums[0] = sums[0].wrapping_add(word);
            }
        });
    }
    sums.iter().fold(0, |a, &s| a.wrapping_add(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_doubling_and_constant_multiply_match_the_field() {
        for c in [0u8, 1, 2, 3, 0x1d, 0x80, 0xff, 0x8e] {
            for x in 0..=255u8 {
                let word = u64::from_le_bytes([x, x ^ 0x55, 0, 0xff, x.wrapping_mul(7), 1, 2, 3]);
                let got = mul_const(&gf::mul_table(c), word).to_le_bytes();
                let want = word.to_le_bytes().map(|b| gf::mul(c, b));
                assert_eq!(got, want, "c={c} x={x}");
                assert_eq!(mul2(word).to_le_bytes(), word.to_le_bytes().map(gf::mul2));
            }
        }
    }
}
