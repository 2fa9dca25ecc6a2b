//! RAID-6 syndrome decoding for a scrub: which one block of a stripe is wrong, from the
//! differences between the stored P and Q and the P and Q recomputed from the stored data.
//!
//! If exactly one data block at syndrome slot z holds `D ⊕ e` instead of `D`, the recomputed
//! parities differ from the stored ones by `ΔP = e` and `ΔQ = gᶻ·e` (byte by byte). So where
//! `ΔP` is nonzero, `log ΔQ − log ΔP` is z, the same z at every such byte, and where `ΔP` is
//! zero so is `ΔQ`. A wrong P shows as `ΔP ≠ 0, ΔQ = 0` everywhere; a wrong Q as the reverse.
//! Anything else cannot be one wrong block. Scalar on purpose: it runs only on stripes a
//! scrub already found inconsistent.

use super::gf;

/// What [`locate`] concluded about one stripe (or one piece of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Culprit {
    /// The stored P and Q match the data.
    Consistent,
    /// Only P is wrong.
    P,
    /// Only Q is wrong.
    Q,
    /// The data block at this index of the `slots` list is wrong; its correct content is
    /// the stored content xor `ΔP`.
    Data(usize),
    /// More than one block is wrong (or the one the syndromes name holds no data).
    Unknown,
}

/// Names the single wrong block of a stripe from `p_delta` = stored P ⊕ recomputed P and
/// `q_delta` = stored Q ⊕ recomputed Q, where data block `i` has syndrome slot `slots[i]`.
///
/// # Panics
/// If the two deltas differ in length (a caller bug).
pub fn locate(p_delta: &[u8], q_delta: &[u8], slots: &[u8]) -> Culprit {
    assert_eq!(p_delta.len(), q_delta.len(), "P and Q deltas of one stripe");
    let mut p_wrong = false;
    let mut q_wrong = false;
    // The slot (log ΔQ − log ΔP mod 255) every byte so far agrees on, if any.
    let mut slot: Option<u8> = None;
    let mut one_data = true;
    for (&dp, &dq) in p_delta.iter().zip(q_delta) {
        p_wrong |= dp != 0;
        q_wrong |= dq != 0;
        if !one_data {
            continue;
        }
        match (dp, dq) {
            (0, 0) => {}
            (0, _) | (_, 0) => one_data = false,
            _ => {
                let z = ((gf::log2(dq) as u16 + 255 - gf::log2(dp) as u16) % 255) as u8;
                match slot {
                    None => slot = Some(z),
                    Some(s) if s == z => {}
                    Some(_) => one_data = false,
                }
            }
        }
    }
    match (p_wrong, q_wrong) {
        (false, false) => Culprit::Consistent,
        (true, false) => Culprit::P,
        (false, true) => Culprit::Q,
        (true, true) => {
            let found = slot
                .filter(|_| one_data)
                .and_then(|z| slots.iter().position(|&s| s % 255 == z));
            found.map_or(Culprit::Unknown, Culprit::Data)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::parity::ParityEngine;
    use crate::rng::SplitMix64;

    const LEN: usize = 64;

    fn stripe(rng: &mut SplitMix64, k: usize) -> Vec<Vec<u8>> {
        (0..k)
            .map(|_| (0..LEN).map(|_| rng.below(256) as u8).collect())
            .collect()
    }

    fn pq(data: &[Vec<u8>], slots: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let (mut p, mut q) = (vec![0u8; LEN], vec![0u8; LEN]);
        ParityEngine::scalar().pq_gen(&refs, slots, &mut p, &mut q);
        (p, q)
    }

    fn deltas(data: &[Vec<u8>], slots: &[u8], p: &[u8], q: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (p2, q2) = pq(data, slots);
        let dp = p.iter().zip(&p2).map(|(a, b)| a ^ b).collect();
        let dq = q.iter().zip(&q2).map(|(a, b)| a ^ b).collect();
        (dp, dq)
    }

    /// Every slot value, every error byte value, and errors in one byte or many: a single
    /// wrong data block is always named, by index.
    #[test]
    fn every_slot_and_error_value_names_the_data_block() {
        let mut rng = SplitMix64::new(0x10ca7e);
        for z in 0..255u8 {
            // A stripe whose block 1 has slot z (the others elsewhere, distinct).
            let slots = [z.wrapping_add(1) % 255, z, z.wrapping_add(2) % 255];
            let data = stripe(&mut rng, 3);
            let (p, q) = pq(&data, &slots);
            for e in 1..=255u8 {
                let mut bad = data.clone();
                let at = (e as usize * 7) % LEN;
                bad[1][at] ^= e;
                if e % 3 == 0 {
                    // A multi-byte error with different values per byte.
                    bad[1][(at + 5) % LEN] ^= e.rotate_left(3) | 1;
                }
                let (dp, dq) = deltas(&bad, &slots, &p, &q);
                assert_eq!(locate(&dp, &dq, &slots), Culprit::Data(1), "slot {z} e {e}");
                // The correction restores the data.
                let fixed: Vec<u8> = bad[1].iter().zip(&dp).map(|(a, b)| a ^ b).collect();
                assert_eq!(fixed, data[1]);
            }
        }
    }

    #[test]
    fn parity_errors_and_consistent_stripes() {
        let mut rng = SplitMix64::new(7);
        let slots = [0u8, 1, 2, 3];
        let data = stripe(&mut rng, 4);
        let (p, q) = pq(&data, &slots);
        let (dp, dq) = deltas(&data, &slots, &p, &q);
        assert_eq!(locate(&dp, &dq, &slots), Culprit::Consistent);
        for e in 1..=255u8 {
            let mut bad_p = p.clone();
            bad_p[e as usize % LEN] ^= e;
            let (dp, dq) = deltas(&data, &slots, &bad_p, &q);
            assert_eq!(locate(&dp, &dq, &slots), Culprit::P);
            let mut bad_q = q.clone();
            bad_q[e as usize % LEN] ^= e;
            let (dp, dq) = deltas(&data, &slots, &p, &bad_q);
            assert_eq!(locate(&dp, &dq, &slots), Culprit::Q);
        }
    }

    #[test]
    fn two_wrong_blocks_are_not_blamed_on_one() {
        let mut rng = SplitMix64::new(0x2b);
        let slots = [0u8, 1, 2, 3, 4];
        let data = stripe(&mut rng, 5);
        let (p, q) = pq(&data, &slots);
        for seed in 0..500u64 {
            let mut r = SplitMix64::new(seed);
            let x = r.below(5) as usize;
            let y = (x + 1 + r.below(4) as usize) % 5;
            let mut bad = data.clone();
            // The same byte of two blocks: a single-byte double error.
            let at = r.below(LEN as u64) as usize;
            bad[x][at] ^= 1 + r.below(255) as u8;
            bad[y][at] ^= 1 + r.below(255) as u8;
            let (dp, dq) = deltas(&bad, &slots, &p, &q);
            // A double error in one byte can alias a single error on a third block (that
            // is the code's distance); it must never name x or y alone with a zero ΔP.
            match locate(&dp, &dq, &slots) {
                Culprit::Consistent => panic!("seed {seed}: a double error went unseen"),
                Culprit::Data(i) => {
                    // Then ΔP and ΔQ really are those of one error on block i.
                    let mut alt = data.clone();
                    for (b, d) in alt[i].iter_mut().zip(&dp) {
                        *b ^= d;
                    }
                    let (dp2, dq2) = deltas(&alt, &slots, &p, &q);
                    assert_eq!((dp2, dq2), (dp.clone(), dq.clone()), "seed {seed}");
                }
                _ => {}
            }
            // Errors on two blocks in different bytes never look like one block.
            let mut bad = data.clone();
            bad[x][at] ^= 1 + r.below(255) as u8;
            bad[y][(at + 1) % LEN] ^= 1 + r.below(255) as u8;
            let (dp, dq) = deltas(&bad, &slots, &p, &q);
            assert_eq!(locate(&dp, &dq, &slots), Culprit::Unknown, "seed {seed}");
            // Data plus P, data plus Q: unknown (two blocks).
            let mut bad_p = p.clone();
            bad_p[(at + 2) % LEN] ^= 0x11;
            let mut bad = data.clone();
            bad[x][at] ^= 0x22;
            let (dp, dq) = deltas(&bad, &slots, &bad_p, &q);
            assert_eq!(locate(&dp, &dq, &slots), Culprit::Unknown, "seed {seed}");
        }
    }

    #[test]
    fn a_slot_no_data_block_has_is_unknown() {
        // DDF layouts leave the slots of P and Q unused: a syndrome naming one is no block.
        let slots = [0u8, 1, 4];
        let mut rng = SplitMix64::new(3);
        let data = stripe(&mut rng, 3);
        let (p, q) = pq(&data, &slots);
        // ΔP = e, ΔQ = g²·e: slot 2, which nobody has.
        let mut bad_p = p.clone();
        let mut bad_q = q.clone();
        bad_p[0] ^= 9;
        bad_q[0] ^= gf::mul(gf::exp2(2), 9);
        let (dp, dq) = deltas(&data, &slots, &bad_p, &bad_q);
        assert_eq!(locate(&dp, &dq, &slots), Culprit::Unknown);
    }
}
