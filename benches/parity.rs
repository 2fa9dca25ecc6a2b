//! Criterion benchmarks of the parity engines, side by side with ISA-L in the same run.
//!
//! `cargo bench --bench parity` measures our engines; with `--features isal` (needs
//! `libisal-dev`) ISA-L's `xor_gen`, `pq_gen` and `ec_encode_data` (two-failure decode with
//! a cached decode matrix) join every group, and a closing summary times ours and ISA-L in
//! interleaved samples and prints the ratio per shape: on a shared, noisy machine only
//! ratios taken that way are worth comparing. Its memory-bound part sets each operation
//! beside a plain read, and beside "k in 2 out" (the k blocks read and two outputs streamed,
//! no arithmetic): the ceiling of P+Q generation and two-block recovery from DRAM. In-cache groups use the engines' default
//! store hint; the memory-bound ones tell our engines their outputs stream to disk
//! (`StoreHint::Stream`), as a RAID write path would.
//!
//! Environment: `PARITY_TABLE=1` runs the `raid bench parity` table instead;
//! `PARITY_SUMMARY=0` skips the summary; `PARITY_SUMMARY_ONLY=1` runs only the summary;
//! `PARITY_SUMMARY_DRAM=0` leaves the memory-bound rows out of it; `PARITY_ONLY=xor,pq_gen`
//! limits it to some operations; `PARITY_K=4,8` and `PARITY_LEN=4096` to some shapes;
//! `PARITY_READ=block` reads block after block in the plain-read rows; `PARITY_EXPERIMENT=1`
//! runs only the engine beside a minimal hand-written P+Q loop (see `experiment`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use orion_raid::host::bench::{self, Pool};
use orion_raid::parity::{ParityEngine, ReadOrder, StoreHint};

const DATA_COUNTS: [usize; 3] = [4, 8, 16];
const BLOCK_BYTES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
const MEMORY_BLOCK_BYTES: usize = 1 << 20;
const MEMORY_POOL_BYTES: usize = 512 << 20;

/// `count` page-aligned blocks of `len` bytes, filled with seeded noise (the `raid bench`
/// pool, so both benchmarks measure the same buffers).
struct Blocks {
    pool: Pool,
    len: usize,
}

impl Blocks {
    fn new(count: usize, len: usize, seed: u64) -> Blocks {
        Blocks {
            pool: Pool::new(count, len, seed),
            len,
        }
    }

    /// Blocks `first..first + n` as mutable slices.
    fn range(&mut self, first: usize, n: usize) -> Vec<&mut [u8]> {
        self.pool.blocks(first, n, self.len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Xor,
    PqGen,
    Recover2,
    Read,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Xor => "xor",
            Op::PqGen => "pq_gen",
            Op::Recover2 => "recover2",
            Op::Read => "read",
        }
    }
}

/// Who computes: one of our engines, or ISA-L.
#[derive(Clone, Copy)]
enum Impl {
    Ours(ParityEngine),
    #[cfg(feature = "isal")]
    Isal,
}

impl Impl {
    /// The same implementation told that its outputs stream to disk (the memory-bound rows).
    fn streaming(self) -> Impl {
        match self {
            Impl::Ours(e) => Impl::Ours(e.with_store_hint(StoreHint::Stream)),
            #[cfg(feature = "isal")]
            other => other,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Impl::Ours(e) => e.name(),
            #[cfg(feature = "isal")]
            Impl::Isal => "isal",
        }
    }
}

/// One stripe: k data blocks (slots 0..k), P, Q, plus two spare blocks the recovery writes.
struct Stripe<'a> {
    data: Vec<&'a mut [u8]>,
    p: &'a mut [u8],
    q: &'a mut [u8],
    out_x: &'a mut [u8],
    out_y: &'a mut [u8],
}

const STRIPE_EXTRA: usize = 4;

fn stripe(blocks: Vec<&mut [u8]>) -> Stripe<'_> {
    let mut it = blocks.into_iter();
    let k = it.len() - STRIPE_EXTRA;
    let data: Vec<&mut [u8]> = it.by_ref().take(k).collect();
    let mut next = || it.next().unwrap_or_default();
    let (p, q, out_x, out_y) = (next(), next(), next(), next());
    Stripe {
        data,
        p,
        q,
        out_x,
        out_y,
    }
}

/// Prepared state per implementation and shape (ISA-L's decode tables are built once, as a
/// RAID driver would cache them per failure pattern).
struct Prepared {
    #[cfg(feature = "isal")]
    decode: Option<isal::Decoder>,
}

fn prepare(imp: &Impl, k: usize) -> Prepared {
    let _ = (imp, k);
    Prepared {
        #[cfg(feature = "isal")]
        decode: matches!(imp, Impl::Isal).then(|| {
            let (x, y) = bench::recovery_pair(k);
            isal::Decoder::new(k, x, y)
        }),
    }
}

fn run(imp: &Impl, prepared: &Prepared, op: Op, s: &mut Stripe<'_>) -> u64 {
    let k = s.data.len();
    let (x, y) = bench::recovery_pair(k);
    match imp {
        Impl::Ours(engine) => {
            let data: Vec<&[u8]> = s.data.iter().map(|b| &**b).collect();
            let slots: Vec<u8> = (0..k as u8).collect();
            match op {
                Op::Xor => engine.xor(&data, s.p),
                Op::PqGen => engine.pq_gen(&data, &slots, s.p, s.q),
                Op::Recover2 => {
                    let mut survivors = Vec::with_capacity(k);
                    let mut survivor_slots = Vec::with_capacity(k);
                    for (i, d) in data.iter().enumerate() {
                        if i != x && i != y {
                            survivors.push(*d);
                            survivor_slots.push(i as u8);
                        }
                    }
                    engine.recover_two_data(
                        &survivors,
                        &survivor_slots,
                        s.p,
                        s.q,
                        (x as u8, &mut *s.out_x),
                        (y as u8, &mut *s.out_y),
                    );
                }
                Op::Read => return engine.read_all(&data, read_order()),
            }
        }
        #[cfg(feature = "isal")]
        Impl::Isal => {
            let _ = prepared;
            match op {
                Op::Xor => isal::xor_gen(&s.data, s.p),
                Op::PqGen => isal::pq_gen(&s.data, s.p, s.q),
                Op::Recover2 => {
                    let decoder = prepared.decode.as_ref().expect("prepared for recovery");
                    let mut survivors: Vec<&[u8]> = Vec::with_capacity(k);
                    for (i, d) in s.data.iter().enumerate() {
                        if i != x && i != y {
                            survivors.push(d);
                        }
                    }
                    survivors.push(s.p);
                    survivors.push(s.q);
                    decoder.decode(&survivors, s.out_x, s.out_y);
                }
                Op::Read => unreachable!("ISA-L has no plain read"),
            }
        }
    }
    #[cfg(not(feature = "isal"))]
    let _ = prepared;
    0
}

/// The order of the plain read: side by side as the kernels read (default), or block by
/// block with `PARITY_READ=block`.
fn read_order() -> ReadOrder {
    if std::env::var("PARITY_READ").is_ok_and(|v| v == "block") {
        ReadOrder::BlockByBlock
    } else {
        ReadOrder::SideBySide
    }
}

fn implementations() -> Vec<Impl> {
    // The scalar reference is left out: it is the definition, not a contender.
    #[allow(unused_mut)]
    let mut v: Vec<Impl> = ParityEngine::available()
        .into_iter()
        .filter(|e| e.name() != "scalar")
        .map(Impl::Ours)
        .collect();
    #[cfg(feature = "isal")]
    v.push(Impl::Isal);
    v
}

/// Checks every implementation against the others on one stripe before timing anything.
fn cross_check(k: usize, len: usize) {
    let mut blocks = Blocks::new(k + STRIPE_EXTRA, len, 0xc0ffee + k as u64);
    let mut s = stripe(blocks.range(0, k + STRIPE_EXTRA));
    let reference = ParityEngine::scalar();
    let (x, y) = bench::recovery_pair(k);
    let mut want_p = vec![0u8; len];
    let mut want_q = vec![0u8; len];
    {
        let data: Vec<&[u8]> = s.data.iter().map(|b| &**b).collect();
        let slots: Vec<u8> = (0..k as u8).collect();
        reference.pq_gen(&data, &slots, &mut want_p, &mut want_q);
    }
    let want_x = s.data[x].to_vec();
    let want_y = s.data[y].to_vec();
    for imp in implementations() {
        let prepared = prepare(&imp, k);
        run(&imp, &prepared, Op::Xor, &mut s);
        assert!(
            *s.p == want_p[..],
            "{} xor differs (k={k} len={len})",
            imp.name()
        );
        run(&imp, &prepared, Op::PqGen, &mut s);
        assert!(
            *s.p == want_p[..] && *s.q == want_q[..],
            "{} pq_gen differs (k={k} len={len})",
            imp.name()
        );
        s.out_x.fill(0);
        s.out_y.fill(0);
        run(&imp, &prepared, Op::Recover2, &mut s);
        assert!(
            *s.out_x == want_x[..] && *s.out_y == want_y[..],
            "{} recover2 differs (k={k} len={len})",
            imp.name()
        );
    }
}

fn bench_in_cache(c: &mut Criterion) {
    for op in [Op::Xor, Op::PqGen, Op::Recover2] {
        let mut group = c.benchmark_group(op.name());
        for len in BLOCK_BYTES {
            for k in DATA_COUNTS {
                let mut blocks = Blocks::new(k + STRIPE_EXTRA, len, 7 + k as u64);
                let mut s = stripe(blocks.range(0, k + STRIPE_EXTRA));
                group.throughput(Throughput::Bytes((k * len) as u64));
                for imp in implementations() {
                    let prepared = prepare(&imp, k);
                    group.bench_function(
                        BenchmarkId::new(imp.name(), format!("k{k}/{}", kib(len))),
                        |b| b.iter(|| black_box(run(&imp, &prepared, op, &mut s))),
                    );
                }
            }
        }
        group.finish();
    }
}

/// A pool of 1 MiB stripes of at least 512 MiB, walked round-robin so every call reads
/// from DRAM.
struct MemoryPool {
    blocks: Blocks,
    stripes: usize,
    k: usize,
    cursor: usize,
}

impl MemoryPool {
    fn new(k: usize, in_cache_len: usize) -> MemoryPool {
        let per_stripe = k + STRIPE_EXTRA;
        let (stripes, len) = if in_cache_len > 0 {
            (1, in_cache_len)
        } else {
            (
                (MEMORY_POOL_BYTES / MEMORY_BLOCK_BYTES).div_ceil(per_stripe),
                MEMORY_BLOCK_BYTES,
            )
        };
        MemoryPool {
            blocks: Blocks::new(stripes * per_stripe, len, 0x3e3 + k as u64),
            stripes,
            k,
            cursor: 0,
        }
    }

    fn next(&mut self) -> Stripe<'_> {
        self.cursor = (self.cursor + 1) % self.stripes;
        let per_stripe = self.k + STRIPE_EXTRA;
        stripe(self.blocks.range(self.cursor * per_stripe, per_stripe))
    }
}

fn bench_memory_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_bound");
    for k in DATA_COUNTS {
        let mut pool = MemoryPool::new(k, 0);
        group.throughput(Throughput::Bytes((k * MEMORY_BLOCK_BYTES) as u64));
        for op in [Op::Read, Op::Xor, Op::PqGen, Op::Recover2] {
            for imp in implementations() {
                if op == Op::Read && !matches!(imp, Impl::Ours(_)) {
                    continue;
                }
                let imp = imp.streaming();
                let prepared = prepare(&imp, k);
                group.bench_function(
                    BenchmarkId::new(format!("{}/{}", op.name(), imp.name()), format!("k{k}")),
                    |b| b.iter(|| black_box(run(&imp, &prepared, op, &mut pool.next()))),
                );
            }
        }
    }
    group.finish();
}

fn kib(len: usize) -> String {
    if len >= 1 << 20 {
        format!("{}MiB", len >> 20)
    } else {
        format!("{}KiB", len >> 10)
    }
}

/// Times `a` and `b` in interleaved samples for about `budget` in all, each sample a batch
/// of calls lasting at least `SAMPLE`. Returns their rates (bytes/s) at the 10th percentile
/// of sample times, and the ratio a/b of the rates at the 10th percentile and at the median.
/// Other work on the machine only ever adds time to a sample, so a low percentile of many
/// short samples taken side by side is the figure least moved by it (best-of-turns figures
/// moved by ±15 % between runs here; these by about ±3 %).
fn alternate(
    budget: Duration,
    bytes_per_call: f64,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (f64, f64, f64, f64) {
    const SAMPLE: Duration = Duration::from_micros(50);
    // Warm both, and size the batches so a sample is long against the clock's overhead.
    let calls_per_sample = |f: &mut dyn FnMut()| {
        f();
        let start = Instant::now();
        f();
        let one = start.elapsed().max(Duration::from_nanos(1));
        (SAMPLE.as_nanos() / one.as_nanos()).max(1) as u32
    };
    let (na, nb) = (calls_per_sample(&mut a), calls_per_sample(&mut b));
    let sample = |f: &mut dyn FnMut(), calls: u32| {
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        start.elapsed().as_secs_f64() / calls as f64
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < budget || ta.len() < 10 {
        ta.push(sample(&mut a, na));
        tb.push(sample(&mut b, nb));
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[(v.len() as f64 * q) as usize];
    let (a10, b10) = (at(&ta, 0.1), at(&tb, 0.1));
    (
        bytes_per_call / a10,
        bytes_per_call / b10,
        b10 / a10,
        at(&tb, 0.5) / at(&ta, 0.5),
    )
}

/// The memory traffic of P+Q generation and two-block recovery without their arithmetic:
/// reads the k data blocks side by side as the kernels do (one xor per vector) and streams
/// the result to two outputs, k blocks in and 2 out. The ceiling those operations can reach
/// from DRAM, to set beside the plain read.
fn traffic_only(data: &[&mut [u8]], out_a: &mut [u8], out_b: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        let len = out_a.len();
        assert!(data.iter().all(|d| d.len() == len) && out_b.len() == len);
        assert!(len.is_multiple_of(128));
        assert!((out_a.as_ptr() as usize | out_b.as_ptr() as usize).is_multiple_of(32));
        let srcs: Vec<*const u8> = data.iter().map(|d| d.as_ptr()).collect();
        // SAFETY: AVX2 was detected; every source holds `len` bytes and both outputs hold
        // `len` bytes aligned to 32, as checked above.
        unsafe { traffic_avx2(&srcs, out_a.as_mut_ptr(), out_b.as_mut_ptr(), len) };
        return;
    }
    let _ = (data, out_a, out_b);
}

/// # Safety
/// AVX2 is available; each of `srcs`, `a` and `b` addresses `len` bytes (a multiple of 128);
/// `a` and `b` are aligned to 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn traffic_avx2(srcs: &[*const u8], a: *mut u8, b: *mut u8, len: usize) {
    use std::arch::x86_64::{
        _mm_sfence, _mm256_loadu_si256, _mm256_setzero_si256, _mm256_stream_si256, _mm256_xor_si256,
    };
    // SAFETY: every access is below `len` bytes of its buffer; the caller guarantees the
    // rest.
    unsafe {
        let mut pos = 0;
        while pos < len {
            let mut acc = [_mm256_setzero_si256(); 4];
            for s in srcs.iter().rev() {
                for (l, v) in acc.iter_mut().enumerate() {
                    *v = _mm256_xor_si256(*v, _mm256_loadu_si256(s.add(pos + l * 32).cast()));
                }
            }
            for out in [a, b] {
                for (l, v) in acc.iter().enumerate() {
                    _mm256_stream_si256(out.add(pos + l * 32).cast(), *v);
                }
            }
            pos += 128;
        }
        _mm_sfence();
    }
}

/// A minimal AVX2 P+Q loop, the yardstick the engine's kernels are held to
/// (`PARITY_EXPERIMENT=1`): slots 0..k, 4 vectors a step, streamed outputs. With
/// `prefetch`, each source is prefetched 512 bytes ahead; with `no_q`, Q's arithmetic is left
/// out (the loop's memory traffic with P's arithmetic only).
///
/// # Safety
/// AVX2 is available; every source and both outputs hold `len` bytes (a multiple of 128);
/// the outputs are aligned to 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pq_minimal(
    srcs: &[*const u8],
    a: *mut u8,
    b: *mut u8,
    len: usize,
    prefetch: bool,
    no_q: bool,
) {
    use std::arch::x86_64::*;
    // SAFETY: every access is below `len` bytes of its buffer; prefetches never fault.
    unsafe {
        let poly = _mm256_set1_epi8(0x1d);
        let z = _mm256_setzero_si256();
        let mut pos = 0;
        while pos < len {
            let mut p = [z; 4];
            let mut q = [z; 4];
            for s in srcs.iter().rev() {
                if prefetch {
                    _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(pos + 512).cast());
                    _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(pos + 512 + 64).cast());
                }
                for l in 0..4 {
                    let d = _mm256_loadu_si256(s.add(pos + l * 32).cast());
                    p[l] = _mm256_xor_si256(p[l], d);
                    if no_q {
                        q[l] = p[l];
                    } else {
                        let c = _mm256_and_si256(_mm256_cmpgt_epi8(z, q[l]), poly);
                        q[l] = _mm256_xor_si256(_mm256_add_epi8(q[l], q[l]), c);
                        q[l] = _mm256_xor_si256(q[l], d);
                    }
                }
            }
            for (l, v) in p.iter().enumerate() {
                _mm256_stream_si256(a.add(pos + l * 32).cast(), *v);
            }
            for (l, v) in q.iter().enumerate() {
                _mm256_stream_si256(b.add(pos + l * 32).cast(), *v);
            }
            pos += 128;
        }
        _mm_sfence();
    }
}

/// `PARITY_EXPERIMENT=1`: the engine's streaming P+Q beside [`pq_minimal`] on the same
/// buffers, in cache and from DRAM, and the minimal loop's variants beside the plain read.
/// How the engine's memory-bound gap to that loop was found (loads of statics and of the
/// plan inside the loop stalled behind streaming stores).
#[cfg(target_arch = "x86_64")]
fn experiment() {
    if !std::is_x86_feature_detected!("avx2") {
        return;
    }
    let engine = ParityEngine::widest().with_store_hint(StoreHint::Stream);
    let imp = Impl::Ours(engine);
    let budget = Duration::from_millis(300);
    let minimal = |pool: &std::cell::RefCell<MemoryPool>, prefetch: bool, no_q: bool| {
        let mut pool = pool.borrow_mut();
        let s = pool.next();
        let len = s.p.len();
        let srcs: Vec<*const u8> = s.data.iter().map(|d| d.as_ptr()).collect();
        // SAFETY: AVX2 was detected; the pool's blocks are page aligned and hold `len`
        // bytes, a multiple of 128.
        unsafe {
            pq_minimal(
                &srcs,
                s.p.as_mut_ptr(),
                s.q.as_mut_ptr(),
                len,
                prefetch,
                no_q,
            )
        };
    };
    for k in env_list("PARITY_K", &DATA_COUNTS) {
        let prepared = prepare(&imp, k);
        for in_cache in [4096usize, 65536, 0] {
            let pool = std::cell::RefCell::new(MemoryPool::new(k, in_cache));
            let len = if in_cache == 0 {
                MEMORY_BLOCK_BYTES
            } else {
                in_cache
            };
            let bytes = (k * len) as f64;
            let engine_call = || {
                black_box(run(
                    &imp,
                    &prepared,
                    Op::PqGen,
                    &mut pool.borrow_mut().next(),
                ));
            };
            let f = alternate(budget, bytes, engine_call, || minimal(&pool, true, false));
            print_ratio_named("pq_gen", k, &kib(len), f, "minimal loop");
            if in_cache != 0 {
                continue;
            }
            let read = || {
                black_box(run(
                    &imp,
                    &prepared,
                    Op::Read,
                    &mut pool.borrow_mut().next(),
                ));
            };
            for (name, prefetch, no_q) in [
                ("minimal", false, false),
                ("min+pf", true, false),
                ("min no Q", false, true),
            ] {
                let f = alternate(budget, bytes, || minimal(&pool, prefetch, no_q), read);
                print_ratio_named(name, k, &kib(len), f, "read (dram)");
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn experiment() {}

/// Ours (the widest engine) against ISA-L, or against the plain read in the memory-bound
/// rows, alternating; prints one line per shape with the ratio.
fn summary() {
    let ours = Impl::Ours(ParityEngine::widest());
    let budget = Duration::from_millis(150);
    println!();
    println!(
        "summary: {} against a baseline in interleaved samples; GB/s at the 10th percentile",
        ours.name()
    );
    println!("of sample times; ratios ours/baseline at the 10th percentile and the median");
    println!(
        "{:<9} {:>3} {:>7} {:>9} {:>9} {:>6} {:>6}  baseline",
        "op", "k", "block", "ours", "base", "p10", "median"
    );
    #[cfg(feature = "isal")]
    for len in env_list("PARITY_LEN", &BLOCK_BYTES) {
        for k in env_list("PARITY_K", &DATA_COUNTS) {
            let mut blocks = Blocks::new(k + STRIPE_EXTRA, len, 11 + k as u64);
            let mut s = stripe(blocks.range(0, k + STRIPE_EXTRA));
            let isal = Impl::Isal;
            let ours_prepared = prepare(&ours, k);
            let isal_prepared = prepare(&isal, k);
            for op in summary_ops() {
                let s = std::cell::RefCell::new(&mut s);
                let figures = alternate(
                    budget,
                    (k * len) as f64,
                    || {
                        black_box(run(&ours, &ours_prepared, op, &mut s.borrow_mut()));
                    },
                    || {
                        black_box(run(&isal, &isal_prepared, op, &mut s.borrow_mut()));
                    },
                );
                print_ratio(op, k, &kib(len), figures, "isal");
            }
        }
    }
    if env_flag("PARITY_SUMMARY_DRAM") == Some(false) {
        return;
    }
    let ours = ours.streaming();
    for k in env_list("PARITY_K", &DATA_COUNTS) {
        let pool = std::cell::RefCell::new(MemoryPool::new(k, 0));
        let prepared = prepare(&ours, k);
        let read = || {
            black_box(run(
                &ours,
                &prepared,
                Op::Read,
                &mut pool.borrow_mut().next(),
            ));
        };
        {
            let figures = alternate(
                budget * 2,
                (k * MEMORY_BLOCK_BYTES) as f64,
                || {
                    let mut pool = pool.borrow_mut();
                    let s = pool.next();
                    traffic_only(&s.data, s.p, s.q);
                },
                read,
            );
            print_ratio_named("k in 2 out", k, "1MiB", figures, "read (dram)");
        }
        for op in summary_ops() {
            let figures = alternate(
                budget * 2,
                (k * MEMORY_BLOCK_BYTES) as f64,
                || {
                    black_box(run(&ours, &prepared, op, &mut pool.borrow_mut().next()));
                },
                read,
            );
            print_ratio(op, k, "1MiB", figures, "read (dram)");
            #[cfg(feature = "isal")]
            {
                let isal = Impl::Isal;
                let isal_prepared = prepare(&isal, k);
                let figures = alternate(
                    budget * 2,
                    (k * MEMORY_BLOCK_BYTES) as f64,
                    || {
                        black_box(run(&ours, &prepared, op, &mut pool.borrow_mut().next()));
                    },
                    || {
                        black_box(run(
                            &isal,
                            &isal_prepared,
                            op,
                            &mut pool.borrow_mut().next(),
                        ));
                    },
                );
                print_ratio(op, k, "1MiB", figures, "isal (dram)");
            }
        }
    }
}

/// The ops of the summary: all, or those named in `PARITY_ONLY` (comma-separated).
fn summary_ops() -> Vec<Op> {
    let only = std::env::var("PARITY_ONLY").unwrap_or_default();
    [Op::Xor, Op::PqGen, Op::Recover2]
        .into_iter()
        .filter(|op| only.is_empty() || only.split(',').any(|o| o == op.name()))
        .collect()
}

fn print_ratio(op: Op, k: usize, block: &str, figures: (f64, f64, f64, f64), what: &str) {
    print_ratio_named(op.name(), k, block, figures, what);
}

fn print_ratio_named(
    name: &str,
    k: usize,
    block: &str,
    (ours, base, p10, median): (f64, f64, f64, f64),
    what: &str,
) {
    println!(
        "{name:<9} {k:>3} {block:>7} {:>9.2} {:>9.2} {p10:>6.2} {median:>6.2}  {what}",
        ours / 1e9,
        base / 1e9,
    );
}

/// A comma-separated list of numbers from the environment, or `default`.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        _ => default.to_vec(),
    }
}

fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name).ok().map(|v| v != "0" && !v.is_empty())
}

fn main() {
    if env_flag("PARITY_TABLE") == Some(true) {
        let opts = bench::BenchOptions {
            json: std::env::args().any(|a| a == "--json"),
            ..bench::BenchOptions::default()
        };
        bench::run(&opts, &mut std::io::stdout()).expect("stdout");
        return;
    }
    if env_flag("PARITY_EXPERIMENT") == Some(true) {
        experiment();
        return;
    }
    for k in DATA_COUNTS {
        for len in [4096, 64 << 10] {
            cross_check(k, len);
        }
    }
    if env_flag("PARITY_SUMMARY_ONLY") != Some(true) {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .configure_from_args();
        bench_in_cache(&mut c);
        bench_memory_bound(&mut c);
        c.final_summary();
    }
    if env_flag("PARITY_SUMMARY") != Some(false) {
        summary();
    }
}

#[cfg(feature = "isal")]
mod isal {
    //! ISA-L through FFI (benchmark only): `raid.h` and `erasure_code.h` of libisal.

    use std::ffi::{c_int, c_void};

    mod ffi {
        use std::ffi::{c_int, c_uchar, c_void};

        #[link(name = "isal")]
        unsafe extern "C" {
            pub fn xor_gen(vects: c_int, len: c_int, array: *mut *mut c_void) -> c_int;
            pub fn pq_gen(vects: c_int, len: c_int, array: *mut *mut c_void) -> c_int;
            pub fn ec_init_tables(k: c_int, rows: c_int, a: *mut c_uchar, gftbls: *mut c_uchar);
            pub fn ec_encode_data(
                len: c_int,
                k: c_int,
                rows: c_int,
                gftbls: *mut c_uchar,
                data: *mut *mut c_uchar,
                coding: *mut *mut c_uchar,
            );
            pub fn gf_gen_rs_matrix(a: *mut c_uchar, m: c_int, k: c_int);
            pub fn gf_invert_matrix(input: *mut c_uchar, output: *mut c_uchar, n: c_int) -> c_int;
        }
    }

    fn check_aligned(len: usize, blocks: &[*const u8]) {
        assert!(
            len.is_multiple_of(32) && len <= i32::MAX as usize,
            "ISA-L: length {len}"
        );
        assert!(
            blocks.iter().all(|p| (*p as usize).is_multiple_of(32)),
            "ISA-L: 32-byte alignment"
        );
    }

    /// `dst = ⊕ data` with ISA-L `xor_gen` (pointers: sources, then the destination).
    pub fn xor_gen(data: &[&mut [u8]], dst: &mut [u8]) {
        let len = dst.len();
        let mut ptrs: Vec<*mut c_void> = data.iter().map(|d| d.as_ptr() as *mut c_void).collect();
        ptrs.push(dst.as_mut_ptr().cast());
        check_aligned(
            len,
            &ptrs
                .iter()
                .map(|p| p.cast_const().cast())
                .collect::<Vec<_>>(),
        );
        assert!(data.iter().all(|d| d.len() == len));
        // SAFETY: every pointer addresses `len` bytes, sources are only read, the
        // destination is exclusively borrowed; alignment and length were checked above.
        let rc = unsafe { ffi::xor_gen(ptrs.len() as c_int, len as c_int, ptrs.as_mut_ptr()) };
        assert_eq!(rc, 0, "xor_gen failed");
    }

    /// P and Q with ISA-L `pq_gen` (pointers: sources, then P, then Q).
    pub fn pq_gen(data: &[&mut [u8]], p: &mut [u8], q: &mut [u8]) {
        let len = p.len();
        let mut ptrs: Vec<*mut c_void> = data.iter().map(|d| d.as_ptr() as *mut c_void).collect();
        ptrs.push(p.as_mut_ptr().cast());
        ptrs.push(q.as_mut_ptr().cast());
        check_aligned(
            len,
            &ptrs
                .iter()
                .map(|p| p.cast_const().cast())
                .collect::<Vec<_>>(),
        );
        assert!(data.iter().all(|d| d.len() == len) && q.len() == len);
        // SAFETY: as in `xor_gen`; P and Q are distinct exclusive borrows.
        let rc = unsafe { ffi::pq_gen(ptrs.len() as c_int, len as c_int, ptrs.as_mut_ptr()) };
        assert_eq!(rc, 0, "pq_gen failed");
    }

    /// Decoding of two lost data blocks of a k + P + Q stripe: the inverse of the surviving
    /// rows of the generator matrix, expanded into ISA-L's tables once.
    pub struct Decoder {
        k: usize,
        tables: Vec<u8>,
    }

    impl Decoder {
        pub fn new(k: usize, x: usize, y: usize) -> Decoder {
            let m = k + 2;
            // Rows 0..k identity, row k all ones (P), row k+1 powers of 2 (Q).
            let mut encode = vec![0u8; m * k];
            // SAFETY: `encode` holds m × k bytes, as the function writes.
            unsafe { ffi::gf_gen_rs_matrix(encode.as_mut_ptr(), m as c_int, k as c_int) };
            let rows: Vec<usize> = (0..m).filter(|&r| r != x && r != y).collect();
            assert_eq!(rows.len(), k);
            let mut survivors = Vec::with_capacity(k * k);
            for &r in &rows {
                survivors.extend_from_slice(&encode[r * k..(r + 1) * k]);
            }
            let mut inverse = vec![0u8; k * k];
            // SAFETY: both matrices hold k × k bytes.
            let rc = unsafe {
                ffi::gf_invert_matrix(survivors.as_mut_ptr(), inverse.as_mut_ptr(), k as c_int)
            };
            assert_eq!(rc, 0, "singular decode matrix");
            let mut decode = Vec::with_capacity(2 * k);
            decode.extend_from_slice(&inverse[x * k..(x + 1) * k]);
            decode.extend_from_slice(&inverse[y * k..(y + 1) * k]);
            let mut tables = vec![0u8; 32 * k * 2];
            // SAFETY: `decode` is 2 × k coefficients; `tables` holds 32 × k × 2 bytes.
            unsafe { ffi::ec_init_tables(k as c_int, 2, decode.as_mut_ptr(), tables.as_mut_ptr()) };
            Decoder { k, tables }
        }

        /// `survivors`: the k surviving blocks in row order (data without x and y, P, Q).
        pub fn decode(&self, survivors: &[&[u8]], out_x: &mut [u8], out_y: &mut [u8]) {
            assert_eq!(survivors.len(), self.k);
            let len = out_x.len();
            assert!(survivors.iter().all(|s| s.len() == len) && out_y.len() == len);
            let mut srcs: Vec<*mut u8> = survivors.iter().map(|s| s.as_ptr() as *mut u8).collect();
            let mut outs = [out_x.as_mut_ptr(), out_y.as_mut_ptr()];
            // SAFETY: every pointer addresses `len` bytes; ISA-L reads the sources and the
            // tables (not modified despite the `*mut`), and writes only the two outputs,
            // which are exclusive borrows.
            unsafe {
                ffi::ec_encode_data(
                    len as c_int,
                    self.k as c_int,
                    2,
                    self.tables.as_ptr() as *mut u8,
                    srcs.as_mut_ptr(),
                    outs.as_mut_ptr(),
                )
            };
        }
    }
}
