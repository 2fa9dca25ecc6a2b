//! Tests of the parity engines: every engine against the scalar reference, every failure
//! pair recovered, read-modify-write against recompute, and golden hashes of seeded outputs.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

/// A small seeded generator (SplitMix64), so every input here is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// FNV-1a, 64 bits: a fixed hash for the golden values.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `count` buffers of `len` bytes starting `offset` bytes past a 64-byte boundary, so the
/// engines see unaligned data.
struct Buffers {
    backing: Vec<u8>,
    stride: usize,
    offset: usize,
    len: usize,
    count: usize,
}

impl Buffers {
    fn new(count: usize, len: usize, offset: usize) -> Self {
        let stride = (len + offset + 64).div_ceil(64) * 64;
        let backing = vec![0u8; stride * count + 64];
        Buffers {
            backing,
            stride,
            offset,
            len,
            count,
        }
    }

    fn base(&self) -> usize {
        let addr = self.backing.as_ptr() as usize;
        (64 - addr % 64) % 64 + self.offset
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = self.base() + i * self.stride;
        &self.backing[start..start + self.len]
    }

    fn all_mut(&mut self) -> Vec<&mut [u8]> {
        let (base, stride, len, count) = (self.base(), self.stride, self.len, self.count);
        let mut rest = &mut self.backing[base..];
        let mut out = Vec::new();
        for i in 0..count {
            let (block, tail) = rest.split_at_mut(if i + 1 < count { stride } else { len });
            out.push(&mut block[..len]);
            rest = tail;
        }
        out
    }
}

/// Every engine, and each SIMD engine a second time forced to streaming stores (which it
/// uses wherever the outputs are aligned to its vector width).
fn engines() -> Vec<ParityEngine> {
    let mut all = ParityEngine::available();
    let streaming: Vec<ParityEngine> = all
        .iter()
        .filter(|e| matches!(e.kind(), EngineKind::Ssse3 | EngineKind::Avx2))
        .map(|e| e.with_store_hint(StoreHint::Stream))
        .collect();
    all.extend(streaming);
    all
}

/// Slots as md assigns them for a rotated layout: not the identity order.
fn rotated_slots(k: usize, rotation: usize) -> Vec<u8> {
    (0..k).map(|i| ((i + rotation) % k) as u8).collect()
}

fn scalar_pq(data: &[&[u8]], slots: &[u8], len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut p = vec![0u8; len];
    let mut q = vec![0u8; len];
    ParityEngine::scalar().pq_gen(data, slots, &mut p, &mut q);
    (p, q)
}

/// Lengths that exercise the 4-vector steps, single vectors and the scalar tail of every
/// engine, none a multiple of 16 or 32 except by design (0 and 64).
const LENGTHS: [usize; 8] = [0, 1, 15, 33, 64, 97, 300, 1061];
const OFFSETS: [usize; 3] = [0, 1, 13];

#[test]
fn at_least_scalar_and_portable_and_detected_simd() {
    let kinds: Vec<EngineKind> = ParityEngine::available().iter().map(|e| e.kind()).collect();
    assert_eq!(&kinds[..2], &[EngineKind::Scalar, EngineKind::Portable]);
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            kinds.contains(&EngineKind::Avx2),
            std::is_x86_feature_detected!("avx2")
        );
        assert_eq!(
            kinds.contains(&EngineKind::Ssse3),
            std::is_x86_feature_detected!("ssse3")
        );
    }
}

#[test]
fn known_values_from_the_definition() {
    // Q of data [1, 1] at slots [0, 1] is 1 ⊕ 2; slot 8 multiplies by 0x1d.
    for engine in engines() {
        let d0 = [1u8; 40];
        let d1 = [1u8; 40];
        let d2 = [0x80u8; 40];
        let mut p = [0u8; 40];
        let mut q = [0u8; 40];
        engine.pq_gen(&[&d0, &d1], &[0, 1], &mut p, &mut q);
        assert_eq!((p[39], q[39]), (0, 3), "{}", engine.name());
        engine.pq_gen(&[&d2], &[1], &mut p, &mut q);
        assert_eq!((p[0], q[0]), (0x80, 0x1d), "{}", engine.name());
        engine.pq_gen(&[&d0], &[8], &mut p, &mut q);
        assert_eq!(q[17], 0x1d, "{}", engine.name());
    }
}

#[test]
fn xor_equals_scalar_for_every_count_length_and_offset() {
    let mut rng = Rng(0x0ddc_0ffe);
    for count in 0..=17 {
        for len in LENGTHS {
            for offset in OFFSETS {
                let mut bufs = Buffers::new(count + 1, len, offset);
                for b in bufs.all_mut() {
                    rng.fill(b);
                }
                let srcs: Vec<&[u8]> = (0..count).map(|i| bufs.get(i)).collect();
                let start = bufs.get(count).to_vec();
                let mut want = start.clone();
                ParityEngine::scalar().xor(&srcs, &mut want);
                let mut want_acc = start.clone();
                ParityEngine::scalar().xor_into(&srcs, &mut want_acc);
                for engine in engines() {
                    let mut got = start.clone();
                    engine.xor(&srcs, &mut got);
                    assert_eq!(got, want, "{} xor n={count} len={len}", engine.name());
                    let mut got = start.clone();
                    engine.xor_into(&srcs, &mut got);
                    assert_eq!(
                        got,
                        want_acc,
                        "{} xor_into n={count} len={len}",
                        engine.name()
                    );
                }
            }
        }
    }
}

/// The exhaustive check: for every data count up to 16, every length and offset
/// above, every engine regenerates P and Q like the scalar reference and restores every
/// single lost block and every lost pair among data, P and Q to the original bytes.
#[test]
fn every_engine_recovers_every_failure_pair_like_the_reference() {
    let seed = 0x5eed_0001u64;
    let mut rng = Rng(seed);
    for k in 1..=16usize {
        let slots = rotated_slots(k, k / 2);
        for len in LENGTHS {
            let offset = OFFSETS[(k + len) % OFFSETS.len()];
            check_every_failure(k, len, offset, &slots, &mut rng, seed);
        }
    }
}

/// Past 8 sources and 4 KiB the SIMD kernels go a group of sources at a time; the same
/// checks there, with aligned (streaming) and unaligned outputs.
#[test]
fn many_blocks_of_several_pages_recover_too() {
    let seed = 0x5eed_0003u64;
    let mut rng = Rng(seed);
    for (k, offset) in [(9usize, 0usize), (16, 5), (17, 0)] {
        let slots = rotated_slots(k, 2);
        check_every_failure(k, 2 * 4096 + 77, offset, &slots, &mut rng, seed);
    }
}

/// For every engine: P and Q as the reference computes them, and every single and double
/// loss among the `k` data blocks, P and Q restored to the original bytes.
fn check_every_failure(
    k: usize,
    len: usize,
    offset: usize,
    slots: &[u8],
    rng: &mut Rng,
    seed: u64,
) {
    // Blocks 0..k are data, k is P, k+1 is Q.
    let mut original = Buffers::new(k + 2, len, offset);
    {
        let mut blocks = original.all_mut();
        for b in blocks.iter_mut().take(k) {
            rng.fill(b);
        }
    }
    let (p, q) = {
        let data: Vec<&[u8]> = (0..k).map(|i| original.get(i)).collect();
        scalar_pq(&data, slots, len)
    };
    {
        let mut blocks = original.all_mut();
        blocks[k].copy_from_slice(&p);
        blocks[k + 1].copy_from_slice(&q);
    }
    let data: Vec<&[u8]> = (0..k).map(|i| original.get(i)).collect();
    let mut failures = Vec::new();
    for a in 0..k + 2 {
        failures.push((a, None));
        for b in a + 1..k + 2 {
            failures.push((a, Some(b)));
        }
    }
    for engine in engines() {
        let mut ep = vec![0u8; len];
        let mut eq = vec![0u8; len];
        engine.pq_gen(&data, slots, &mut ep, &mut eq);
        assert!(
            ep == p && eq == q,
            "{} pq_gen k={k} len={len} seed={seed:#x}",
            engine.name()
        );
        for &(a, b) in &failures {
            let lost = lost_of(k, a, b);
            // Offset 0 keeps every output aligned, so streaming stores run too.
            let mut work = Buffers::new(k + 2, len, (offset * 3) % 64);
            {
                let mut blocks = work.all_mut();
                for (i, block) in blocks.iter_mut().enumerate() {
                    if i == a || Some(i) == b {
                        rng.fill(block);
                    } else {
                        block.copy_from_slice(original.get(i));
                    }
                }
                let (data_blocks, parity) = blocks.split_at_mut(k);
                let (pb, qb) = parity.split_at_mut(1);
                engine
                    .recover(data_blocks, slots, pb[0], qb[0], lost)
                    .expect("valid loss");
            }
            for i in 0..k + 2 {
                assert!(
                    work.get(i) == original.get(i),
                    "{} {:?} k={k} len={len} lost={lost:?} block {i} differs (seed {seed:#x})",
                    engine.name(),
                    engine.store_hint()
                );
            }
        }
    }
}

fn lost_of(k: usize, a: usize, b: Option<usize>) -> Lost {
    let (p, q) = (k, k + 1);
    match (a, b) {
        (a, None) if a == p => Lost::P,
        (a, None) if a == q => Lost::Q,
        (a, None) => Lost::Data(a),
        (a, Some(b)) if a == p && b == q => Lost::PQ,
        (a, Some(b)) if b == p => Lost::DataP(a),
        (a, Some(b)) if b == q => Lost::DataQ(a),
        (a, Some(b)) => Lost::TwoData(a, b),
    }
}

#[test]
fn aligned_outputs_take_the_streaming_path_and_agree() {
    let mut rng = Rng(0x57_4ea3);
    for count in [1usize, 2, 5, 9, 16, 17] {
        for len in [32usize, 64, 1000, 4096 + 96 + 7, 3 * 4096 + 33] {
            let mut bufs = Buffers::new(count + 3, len, 0);
            for b in bufs.all_mut() {
                rng.fill(b);
            }
            let srcs: Vec<&[u8]> = (0..count).map(|i| bufs.get(i)).collect();
            let slots = rotated_slots(count, 1);
            let mut want = vec![0u8; len];
            ParityEngine::scalar().xor(&srcs, &mut want);
            let (want_p, want_q) = scalar_pq(&srcs, &slots, len);
            for engine in engines() {
                let mut out = Buffers::new(2, len, 0);
                let mut outs = out.all_mut();
                let (p, q) = outs.split_at_mut(1);
                engine.xor(&srcs, p[0]);
                assert!(
                    *p[0] == want[..],
                    "{} {:?} xor n={count} len={len}",
                    engine.name(),
                    engine.store_hint()
                );
                // Xoring the same sources in again must cancel to zero.
                engine.xor_into(&srcs, p[0]);
                assert!(
                    p[0].iter().all(|&b| b == 0),
                    "{} {:?} xor_into n={count} len={len}",
                    engine.name(),
                    engine.store_hint()
                );
                engine.xor(&srcs, p[0]);
                engine.pq_gen(&srcs, &slots, p[0], q[0]);
                assert!(
                    *p[0] == want_p[..] && *q[0] == want_q[..],
                    "{} {:?} pq_gen n={count} len={len}",
                    engine.name(),
                    engine.store_hint()
                );
            }
        }
    }
}

#[test]
fn update_equals_full_recompute() {
    let seed = 0x5eed_0002u64;
    let mut rng = Rng(seed);
    for engine in engines() {
        for k in [1usize, 2, 5, 16] {
            for len in [1usize, 33, 300, 1061, 2 * 4096 + 77] {
                let slots = rotated_slots(k, 1);
                let mut data: Vec<Vec<u8>> = (0..k).map(|_| vec![0u8; len]).collect();
                data.iter_mut().for_each(|d| rng.fill(d));
                let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                let (mut p, mut q) = scalar_pq(&refs, &slots, len);
                // Change every other block (a batch), then one block alone.
                let changed: Vec<usize> = (0..k).step_by(2).collect();
                for round in 0..2 {
                    let which: Vec<usize> = if round == 0 {
                        changed.clone()
                    } else {
                        vec![k - 1]
                    };
                    let old: Vec<Vec<u8>> = which.iter().map(|&i| data[i].clone()).collect();
                    for &i in &which {
                        rng.fill(&mut data[i]);
                    }
                    let old_refs: Vec<&[u8]> = old.iter().map(|d| d.as_slice()).collect();
                    let new_refs: Vec<&[u8]> = which.iter().map(|&i| data[i].as_slice()).collect();
                    let which_slots: Vec<u8> = which.iter().map(|&i| slots[i]).collect();
                    engine.pq_update(&old_refs, &new_refs, &which_slots, &mut p, &mut q);
                    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                    let (want_p, want_q) = scalar_pq(&refs, &slots, len);
                    assert!(
                        p == want_p && q == want_q,
                        "{} update k={k} len={len} round={round} seed={seed:#x}",
                        engine.name()
                    );
                }
            }
        }
    }
}

/// Golden values: FNV-1a of P‖Q (and of the xor) of seeded data. A change here means the
/// parity bytes on disk would change: arrays written before would no longer verify.
#[test]
fn golden_hashes_of_seeded_outputs() {
    let cases: [(usize, usize, u64, u64); 3] = [
        (4, 4096, 0x0533_9a1d_c302_bdeb, 0x96f8_3843_b4f9_e82b),
        (8, 1000, 0x30fe_78b9_5f8b_b704, 0x74bc_eeb5_f17e_290e),
        (16, 65536, 0x4682_da68_ef76_c03a, 0x4764_9c1a_2498_cccc),
    ];
    for (k, len, pq_hash, xor_hash) in cases {
        let mut rng = Rng(0x601d_0000 + k as u64);
        let data: Vec<Vec<u8>> = (0..k)
            .map(|_| {
                let mut d = vec![0u8; len];
                rng.fill(&mut d);
                d
            })
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let slots = rotated_slots(k, 3);
        for engine in engines() {
            let mut p = vec![0u8; len];
            let mut q = vec![0u8; len];
            engine.pq_gen(&refs, &slots, &mut p, &mut q);
            let mut x = vec![0u8; len];
            engine.xor(&refs, &mut x);
            assert_eq!(
                fnv1a(&[&p, &q]),
                pq_hash,
                "{} pq k={k} len={len}",
                engine.name()
            );
            assert_eq!(
                fnv1a(&[&x]),
                xor_hash,
                "{} xor k={k} len={len}",
                engine.name()
            );
        }
    }
}

#[test]
fn recover_rejects_bad_losses_without_writing() {
    let engine = ParityEngine::widest();
    let mut d0 = [1u8; 8];
    let mut d1 = [2u8; 8];
    let mut p = [3u8; 8];
    let mut q = [4u8; 8];
    let mut data: [&mut [u8]; 2] = [&mut d0, &mut d1];
    assert_eq!(
        engine.recover(&mut data, &[0, 1], &mut p, &mut q, Lost::Data(2)),
        Err(ParityError::NoSuchBlock {
            index: 2,
            data_count: 2
        })
    );
    assert_eq!(
        engine.recover(&mut data, &[0, 1], &mut p, &mut q, Lost::TwoData(1, 1)),
        Err(ParityError::SameBlockTwice(1))
    );
    assert_eq!(
        engine.recover(&mut data, &[7, 7], &mut p, &mut q, Lost::TwoData(0, 1)),
        Err(ParityError::SharedSlot(7))
    );
    assert_eq!((d0, d1, p, q), ([1; 8], [2; 8], [3; 8], [4; 8]));
}

#[test]
fn self_benchmark_follows_the_clock() {
    // A clock that never moves: every engine ties, the widest wins.
    let chosen = ParityEngine::select(&|| 0);
    assert_eq!(chosen.kind(), ParityEngine::widest().kind());
    // A scripted clock: each candidate reads the clock twice per round, three rounds; make
    // the portable engine (the first candidate) the fastest.
    let calls = core::cell::Cell::new(0u64);
    let candidates = ParityEngine::available().len() as u64 - 1;
    let clock = || {
        let n = calls.get();
        calls.set(n + 1);
        let engine = n / 6;
        let elapsed = if engine == 0 { 1 } else { 10 };
        // Start reads return a base; end reads return base + elapsed.
        if n.is_multiple_of(2) {
            n * 100
        } else {
            (n - 1) * 100 + elapsed
        }
    };
    let report = ParityEngine::self_benchmark(&clock);
    assert_eq!(calls.get(), candidates * 6);
    assert_eq!(report.chosen.kind(), EngineKind::Portable);
    assert_eq!(report.timings.len() as u64, candidates);
    assert_eq!(report.timings[0], (EngineKind::Portable, 1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any distinct slots (md layouts give any), any lengths and offsets, any loss.
    #[test]
    fn random_stripes_round_trip(
        k in 1usize..=24,
        len in 0usize..700,
        offset in 0usize..64,
        seed in any::<u64>(),
        slot_seed in any::<u64>(),
        lost_a in 0usize..26,
        lost_b in 0usize..26,
    ) {
        let mut rng = Rng(seed);
        // Distinct slots drawn from 0..=254.
        let mut pool: Vec<u8> = (0..255).collect();
        let mut srng = Rng(slot_seed);
        for i in (1..pool.len()).rev() {
            pool.swap(i, (srng.next() % (i as u64 + 1)) as usize);
        }
        let slots: Vec<u8> = pool[..k].to_vec();
        let mut original = Buffers::new(k + 2, len, offset);
        {
            let mut blocks = original.all_mut();
            for b in blocks.iter_mut().take(k) {
                rng.fill(b);
            }
        }
        let (p, q) = {
            let data: Vec<&[u8]> = (0..k).map(|i| original.get(i)).collect();
            scalar_pq(&data, &slots, len)
        };
        {
            let mut blocks = original.all_mut();
            blocks[k].copy_from_slice(&p);
            blocks[k + 1].copy_from_slice(&q);
        }
        let data: Vec<&[u8]> = (0..k).map(|i| original.get(i)).collect();
        let a = lost_a % (k + 2);
        let b = lost_b % (k + 2);
        let (a, b) = if a == b { (a, None) } else { (a.min(b), Some(a.max(b))) };
        let lost = lost_of(k, a, b);
        for engine in engines() {
            let mut ep = vec![0u8; len];
            let mut eq = vec![0u8; len];
            engine.pq_gen(&data, &slots, &mut ep, &mut eq);
            prop_assert!(ep == p && eq == q, "{} pq_gen", engine.name());
            let mut work = Buffers::new(k + 2, len, (offset * 7) % 64);
            {
                let mut blocks = work.all_mut();
                for (i, block) in blocks.iter_mut().enumerate() {
                    if i != a && Some(i) != b {
                        block.copy_from_slice(original.get(i));
                    } else {
                        block.fill(0xa5);
                    }
                }
                let (data_blocks, parity) = blocks.split_at_mut(k);
                let (pb, qb) = parity.split_at_mut(1);
                engine.recover(data_blocks, &slots, pb[0], qb[0], lost).expect("valid loss");
            }
            for i in 0..k + 2 {
                prop_assert!(work.get(i) == original.get(i), "{} {lost:?} block {i}", engine.name());
            }
        }
    }
}

/// The automatic store rule at 8 blocks of 64 KiB, where P+Q generation and recovery part
/// ways: generation streams (its sources fit the L2, its outputs would push them out),
/// recovery keeps its outputs, the data a reader wants next, in cache. Past
/// [`SYNDROME_STREAMING_BYTES`] both stream; the explicit hints override the rule.
#[test]
fn automatic_store_rule_streams_generation_but_not_recovery_of_l2_sized_stripes() {
    const LEN: usize = 64 << 10;
    let data = vec![vec![0u8; LEN]; 8];
    let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    let slots: Vec<u8> = (0..8).collect();
    let (mut p, mut q, mut dx, mut dy) = (
        vec![0u8; LEN],
        vec![0u8; LEN],
        vec![0u8; LEN],
        vec![0u8; LEN],
    );
    let engine = ParityEngine::portable();
    let plan = plan_of(LEN, &refs, &slots);
    let generate = Job::GenPq {
        p: &mut p,
        q: &mut q,
    };
    assert!(engine.streams(&plan, &generate));
    assert!(
        !engine
            .with_store_hint(StoreHint::Cache)
            .streams(&plan, &generate)
    );
    let survivors = plan_of(LEN, &refs[..6], &slots[..6]);
    let (pr, qr) = (vec![0u8; LEN], vec![0u8; LEN]);
    let recover = Job::Rec2 {
        p: &pr,
        q: &qr,
        x_slot: 6,
        y_slot: 7,
        dx: &mut dx,
        dy: &mut dy,
    };
    assert!(!engine.streams(&survivors, &recover));
    assert!(
        engine
            .with_store_hint(StoreHint::Stream)
            .streams(&survivors, &recover)
    );
    // Past the L3 rule, recovery streams too: 20 survivors of 1 MiB.
    let big = vec![0u8; 1 << 20];
    let many: Vec<&[u8]> = vec![&big[..]; 20];
    let many_slots: Vec<u8> = (0..20).collect();
    let (pb, qb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let (mut xb, mut yb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let recover_big = Job::Rec2 {
        p: &pb,
        q: &qb,
        x_slot: 20,
        y_slot: 21,
        dx: &mut xb,
        dy: &mut yb,
    };
    assert!(engine.streams(&plan_of(1 << 20, &many, &many_slots), &recover_big));
}
