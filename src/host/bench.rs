//! Throughput measurements of the parity engines: the body of `raid bench parity [--json]`.
//!
//! For each data count k and block size it measures XOR, P+Q generation and two-data
//! recovery on every engine, single thread, in GB/s of data processed (k × block bytes per
//! second, 1 GB = 10⁹ bytes). The in-cache rows call the engine with its default
//! [`StoreHint::Auto`].
//!
//! The memory-bound rows cycle 1 MiB blocks through a pool of at least
//! [`BenchOptions::memory_bound_bytes`] so every call reads from DRAM, beside a plain read of
//! the same bytes with the same engine (`op` = `read`: the faster of reading every block
//! side by side, the order the kernels read in, and block after block) as the ceiling. They model the write path of a RAID driver (cold
//! data in, parity out to the disks), so the engine is told so: [`StoreHint::Stream`].
//!
//! Each figure is the best of a few timed batches: on a shared machine the best batch is the
//! one least disturbed by other work.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::parity::{EngineKind, ParityEngine, ReadOrder, StoreHint};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// One JSON object per line instead of a table.
    pub json: bool,
    /// Data block counts k.
    pub data_counts: Vec<usize>,
    /// Block sizes, bytes.
    pub block_bytes: Vec<usize>,
    /// Size of the buffer pool of the memory-bound rows (1 MiB blocks); 0 skips them.
    pub memory_bound_bytes: usize,
    /// Engines to measure; empty means every detected engine.
    pub engines: Vec<EngineKind>,
    /// Length of one timed batch.
    pub batch_time: Duration,
    /// Timed batches per figure; the best one counts.
    pub batches: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            json: false,
            data_counts: vec![4, 8, 16],
            block_bytes: vec![4 << 10, 64 << 10, 1 << 20],
            memory_bound_bytes: 512 << 20,
            engines: Vec::new(),
            batch_time: Duration::from_millis(40),
            batches: 3,
        }
    }
}

/// An operation measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    /// `dst = ⊕ data`.
    Xor,
    /// P and Q of the data.
    PqGen,
    /// Two lost data blocks from the other data, P and Q.
    Recover2,
    /// A plain read of the data (memory-bound rows only).
    Read,
}

impl BenchOp {
    /// The `op` field of the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Xor => "xor",
            BenchOp::PqGen => "pq_gen",
            BenchOp::Recover2 => "recover2",
            BenchOp::Read => "read",
        }
    }
}

/// One figure.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// The operation.
    pub op: BenchOp,
    /// Data blocks.
    pub k: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Whether the data came from DRAM rather than cache.
    pub memory_bound: bool,
    /// The engine.
    pub engine: EngineKind,
    /// Data processed per second, 10⁹ bytes.
    pub gb_per_s: f64,
}

impl Measurement {
    /// The JSON line of `raid bench parity --json`.
    pub fn json(&self) -> String {
        format!(
            "{{\"op\":\"{}\",\"k\":{},\"block_bytes\":{},\"memory_bound\":{},\"engine\":\"{}\",\"gb_per_s\":{:.2}}}",
            self.op.name(),
            self.k,
            self.block_bytes,
            self.memory_bound,
            self.engine.name(),
            self.gb_per_s
        )
    }
}

/// Block buffers carved out of one allocation, each aligned to a page, filled with seeded
/// noise. Shared with the criterion benchmark.
pub struct Pool {
    backing: Vec<u8>,
    base: usize,
    block_bytes: usize,
    count: usize,
}

const PAGE_BYTES: usize = 4096;

impl Pool {
    /// `count` blocks of up to `block_bytes` each.
    pub fn new(count: usize, block_bytes: usize, seed: u64) -> Pool {
        let stride = block_bytes.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let mut backing = vec![0u8; stride * count + PAGE_BYTES];
        let addr = backing.as_ptr() as usize;
        let base = (PAGE_BYTES - addr % PAGE_BYTES) % PAGE_BYTES;
        let mut x = seed | 1;
        for chunk in backing[base..].chunks_mut(8) {
            // xorshift64: fast enough to fill half a gigabyte, and never all zero.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Pool {
            backing,
            base,
            block_bytes: stride,
            count,
        }
    }

    /// Blocks `first..first + n`, each `len` bytes, split into shared and mutable ones.
    pub fn blocks(&mut self, first: usize, n: usize, len: usize) -> Vec<&mut [u8]> {
        assert!(first + n <= self.count);
        let start = self.base + first * self.block_bytes;
        self.backing[start..start + n * self.block_bytes]
            .chunks_mut(self.block_bytes)
            .map(|b| &mut b[..len])
            .collect()
    }
}

/// The shape of one stripe: k data blocks at slots 0..k, then P, then Q.
fn stripe_slots(k: usize) -> Vec<u8> {
    (0..k as u8).collect()
}

/// The two data blocks the recovery rows rebuild: not the first, not adjacent.
pub fn recovery_pair(k: usize) -> (usize, usize) {
    if k < 3 { (0, k - 1) } else { (1, k / 2 + 1) }
}

/// Runs `op` once on the stripe of `k + 2` blocks (a read in `read_order`).
fn run_op(
    engine: &ParityEngine,
    op: BenchOp,
    read_order: ReadOrder,
    k: usize,
    blocks: &mut [&mut [u8]],
) -> u64 {
    let slots = stripe_slots(k);
    let (data, parity) = blocks.split_at_mut(k);
    let (p, q) = parity.split_at_mut(1);
    match op {
        BenchOp::Xor => {
            let srcs: Vec<&[u8]> = data.iter().map(|b| &**b).collect();
            engine.xor(&srcs, p[0]);
        }
        BenchOp::PqGen => {
            let srcs: Vec<&[u8]> = data.iter().map(|b| &**b).collect();
            engine.pq_gen(&srcs, &slots, p[0], q[0]);
        }
        BenchOp::Recover2 => {
            let (x, y) = recovery_pair(k);
            let mut survivors: Vec<&[u8]> = Vec::with_capacity(k);
            let mut survivor_slots = Vec::with_capacity(k);
            let mut lost: Vec<&mut [u8]> = Vec::with_capacity(2);
            for (i, block) in data.iter_mut().enumerate() {
                if i == x || i == y {
                    lost.push(&mut **block);
                } else {
                    survivors.push(&**block);
                    survivor_slots.push(slots[i]);
                }
            }
            let dy = lost.pop().unwrap_or_default();
            let dx = lost.pop().unwrap_or_default();
            engine.recover_two_data(
                &survivors,
                &survivor_slots,
                p[0],
                q[0],
                (slots[x], dx),
                (slots[y], dy),
            );
        }
        BenchOp::Read => {
            let srcs: Vec<&[u8]> = data.iter().map(|b| &**b).collect();
            return engine.read_all(&srcs, read_order);
        }
    }
    0
}

/// Best data rate over `opts.batches` batches of `opts.batch_time`; `next_stripe` says
/// which stripe of the pool each call uses. A read is timed in both orders (the batches
/// alternate) and counts its faster one: the baseline is the best plain read we have.
fn time_op(
    opts: &BenchOptions,
    pool: &mut Pool,
    engine: &ParityEngine,
    op: BenchOp,
    k: usize,
    len: usize,
    mut next_stripe: impl FnMut() -> usize,
) -> f64 {
    let bytes_per_call = (k * len) as f64;
    let mut sink = 0u64;
    let mut best = 0f64;
    // One untimed call warms caches, page tables and branch predictors.
    let first = next_stripe();
    sink ^= run_op(
        engine,
        op,
        ReadOrder::SideBySide,
        k,
        &mut pool.blocks(first, k + 2, len),
    );
    let orders: &[ReadOrder] = if op == BenchOp::Read {
        &[ReadOrder::SideBySide, ReadOrder::BlockByBlock]
    } else {
        &[ReadOrder::SideBySide]
    };
    for batch in 0..opts.batches.max(1) * orders.len() {
        let order = orders[batch % orders.len()];
        let start = Instant::now();
        let mut calls = 0u64;
        loop {
            let stripe = next_stripe();
            sink ^= run_op(engine, op, order, k, &mut pool.blocks(stripe, k + 2, len));
            calls += 1;
            if start.elapsed() >= opts.batch_time {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        best = best.max(bytes_per_call * calls as f64 / secs / 1e9);
    }
    std::hint::black_box(sink);
    best
}

fn engines_of(opts: &BenchOptions) -> Vec<ParityEngine> {
    ParityEngine::available()
        .into_iter()
        .filter(|e| opts.engines.is_empty() || opts.engines.contains(&e.kind()))
        .collect()
}

/// Measures everything `opts` asks for, printing each row to `out` as soon as it is known
/// (a table, or JSON lines with `opts.json`). Returns every figure.
pub fn run(opts: &BenchOptions, out: &mut dyn Write) -> io::Result<Vec<Measurement>> {
    let engines = engines_of(opts);
    let mut all = Vec::new();
    if !opts.json {
        write!(out, "{:<9} {:>3} {:>9} {:>6}", "op", "k", "block", "memory")?;
        for e in &engines {
            write!(out, " {:>9}", e.name())?;
        }
        writeln!(out, "   (GB/s of data, single thread)")?;
    }
    for &len in &opts.block_bytes {
        for &k in &opts.data_counts {
            let mut pool = Pool::new(k + 2, len, 0x5eed ^ (k * len) as u64);
            for op in [BenchOp::Xor, BenchOp::PqGen, BenchOp::Recover2] {
                let row: Vec<Measurement> = engines
                    .iter()
                    .map(|engine| Measurement {
                        op,
                        k,
                        block_bytes: len,
                        memory_bound: false,
                        engine: engine.kind(),
                        gb_per_s: time_op(opts, &mut pool, engine, op, k, len, || 0),
                    })
                    .collect();
                print_row(opts, out, &row, None)?;
                all.extend(row);
            }
        }
    }
    if opts.memory_bound_bytes > 0 {
        const MEMORY_BLOCK_BYTES: usize = 1 << 20;
        let pool_blocks = opts.memory_bound_bytes.div_ceil(MEMORY_BLOCK_BYTES);
        for &k in &opts.data_counts {
            let stripes = (pool_blocks / (k + 2)).max(1);
            let mut pool = Pool::new(stripes * (k + 2), MEMORY_BLOCK_BYTES, 0x3e3 ^ k as u64);
            // One cursor for every engine and op: a stripe is reused only after the whole
            // pool went by, long after it left the cache.
            let mut cursor = 0usize;
            let mut read_row: Option<Vec<Measurement>> = None;
            for op in [
                BenchOp::Read,
                BenchOp::Xor,
                BenchOp::PqGen,
                BenchOp::Recover2,
            ] {
                let row: Vec<Measurement> = engines
                    .iter()
                    .map(|engine| {
                        let engine = &engine.with_store_hint(StoreHint::Stream);
                        let next = || {
                            cursor = (cursor + 1) % stripes;
                            cursor * (k + 2)
                        };
                        Measurement {
                            op,
                            k,
                            block_bytes: MEMORY_BLOCK_BYTES,
                            memory_bound: true,
                            engine: engine.kind(),
                            gb_per_s: time_op(
                                opts,
                                &mut pool,
                                engine,
                                op,
                                k,
                                MEMORY_BLOCK_BYTES,
                                next,
                            ),
                        }
                    })
                    .collect();
                print_row(opts, out, &row, read_row.as_deref())?;
                if op == BenchOp::Read {
                    read_row = Some(row.clone());
                }
                all.extend(row);
            }
        }
    }
    Ok(all)
}

fn print_row(
    opts: &BenchOptions,
    out: &mut dyn Write,
    row: &[Measurement],
    read: Option<&[Measurement]>,
) -> io::Result<()> {
    if opts.json {
        for m in row {
            writeln!(out, "{}", m.json())?;
        }
        return out.flush();
    }
    let Some(first) = row.first() else {
        return Ok(());
    };
    write!(
        out,
        "{:<9} {:>3} {:>9} {:>6}",
        first.op.name(),
        first.k,
        human_bytes(first.block_bytes),
        if first.memory_bound { "dram" } else { "cache" }
    )?;
    for m in row {
        write!(out, " {:>9.2}", m.gb_per_s)?;
    }
    if let (Some(read), Some(last)) = (read, row.last())
        && let Some(r) = read.iter().find(|r| r.engine == last.engine)
    {
        write!(
            out,
            "   {}: {:.2}× read",
            last.engine.name(),
            last.gb_per_s / r.gb_per_s
        )?;
    }
    writeln!(out)?;
    out.flush()
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_prints_json_lines_for_every_engine() {
        let opts = BenchOptions {
            json: true,
            data_counts: vec![4],
            block_bytes: vec![4096],
            memory_bound_bytes: 8 << 20,
            engines: Vec::new(),
            batch_time: Duration::from_millis(1),
            batches: 1,
        };
        let mut out = Vec::new();
        let figures = run(&opts, &mut out).expect("writing to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        let engines = ParityEngine::available().len();
        // 3 in-cache ops + 4 memory-bound ops (read included), per engine.
        assert_eq!(figures.len(), 7 * engines);
        assert_eq!(text.lines().count(), 7 * engines);
        for line in text.lines() {
            assert!(line.starts_with("{\"op\":\""), "{line}");
            assert!(line.contains("\"k\":4,"), "{line}");
            assert!(line.ends_with('}'), "{line}");
        }
        assert!(
            text.contains("\"op\":\"read\",\"k\":4,\"block_bytes\":1048576,\"memory_bound\":true")
        );
        assert!(figures.iter().all(|m| m.gb_per_s > 0.0));
    }

    #[test]
    fn table_has_a_header_and_a_row_per_op() {
        let opts = BenchOptions {
            json: false,
            data_counts: vec![2],
            block_bytes: vec![1000],
            memory_bound_bytes: 0,
            engines: vec![EngineKind::Portable],
            batch_time: Duration::from_millis(1),
            batches: 1,
        };
        let mut out = Vec::new();
        run(&opts, &mut out).expect("writing to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.lines().nth(2).is_some_and(|l| l.starts_with("pq_gen")));
    }
}
