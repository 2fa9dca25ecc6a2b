//! Cross-check of the RAID 4/5/6 engine against an independent reference of Linux md's
//! placement (`raid5_compute_sector`), Q syndrome slots (`raid6_d0` / `raid6_idx_to_slot`)
//! and parity (P = xor, Q over GF(2^8) with polynomial 0x11d and generator 2), written here
//! from the kernel's definitions without using `orion_raid::layout` or `orion_raid::parity`.
//!
//! Forward: member images are laid out stripe by stripe by the reference (superblocks come
//! from `create`), the engine assembles them — whole, and with every member / every pair of
//! members removed as far as the level tolerates — and must read back the exact bytes.
//! Reverse: data written through the engine (random offsets and lengths: full-stripe,
//! read-modify-write and reconstruct-write paths; optimal and degraded) is decoded from the
//! member images by the reference, whose parity must also match every stripe.
//!
//! Seeded: `SEED=<n>` replays; every assertion message names the seed.

use std::rc::Rc;

use orion_raid::array::Array;
use orion_raid::array::assemble::{CreateOptions, assemble, create, read_superblock};
use orion_raid::block::{BlockDevice, Bytes, SECTOR_BYTES};
use orion_raid::executor::Executor;
use orion_raid::metadata::Level;
use orion_raid::platform::memory::MemoryDisk;
use orion_raid::rng::SplitMix64;

// ---------------------------------------------------------------------------------------
// The reference: md's geometry.
// ---------------------------------------------------------------------------------------

/// One md parity geometry.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// 4, 5 or 6.
    level: u32,
    /// md's layout number (ignored for RAID4).
    algorithm: u32,
    raid_disks: usize,
    chunk_sectors: u64,
}

/// Where the cells of one stripe live.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StripeMap {
    pd: usize,
    qd: Option<usize>,
    /// Member of each logical data chunk, in array order.
    data: Vec<usize>,
}

impl Geometry {
    fn max_degraded(&self) -> usize {
        if self.level == 6 { 2 } else { 1 }
    }

    fn data_disks(&self) -> usize {
        self.raid_disks - self.max_degraded()
    }

    /// md's `raid5_compute_sector` for the chunk `dd` (logical data index) of `stripe`:
    /// the member it lands on, plus the parity members of the stripe.
    fn place(&self, stripe: u64, logical: usize) -> (usize, usize, Option<usize>) {
        let n = self.raid_disks;
        let data_disks = self.data_disks();
        let mut dd = logical;
        let (pd, qd): (usize, Option<usize>);
        match self.level {
            4 => {
                pd = data_disks;
                qd = None;
            }
            5 => {
                let r = (stripe % n as u64) as usize;
                match self.algorithm {
                    0 => {
                        pd = data_disks - r;
                        if dd >= pd {
                            dd += 1;
                        }
                    }
                    1 => {
                        pd = r;
                        if dd >= pd {
                            dd += 1;
                        }
                    }
                    2 => {
                        pd = data_disks - r;
                        dd = (pd + 1 + dd) % n;
                    }
                    3 => {
                        pd = r;
                        dd = (pd + 1 + dd) % n;
                    }
                    4 => {
                        pd = 0;
                        dd += 1;
                    }
                    5 => pd = data_disks,
                    a => panic!("raid5 algorithm {a} is not in the reference"),
                }
                qd = None;
            }
            6 => {
                let r = (stripe % n as u64) as usize;
                let r1 = (stripe % (n as u64 - 1)) as usize;
                let (p, q) = match self.algorithm {
                    0 | 1 => {
                        let p = if self.algorithm == 0 { n - 1 - r } else { r };
                        if p == n - 1 {
                            dd += 1;
                            (p, 0)
                        } else {
                            if dd >= p {
                                dd += 2;
                            }
                            (p, p + 1)
                        }
                    }
                    2 | 3 => {
                        let p = if self.algorithm == 2 { n - 1 - r } else { r };
                        dd = (p + 2 + dd) % n;
                        (p, (p + 1) % n)
                    }
                    4 => {
                        dd += 2;
                        (0, 1)
                    }
                    5 => (data_disks, data_disks + 1),
                    16 | 17 => {
                        let p = if self.algorithm == 16 {
                            data_disks - r1
                        } else {
                            r1
                        };
                        if dd >= p {
                            dd += 1;
                        }
                        (p, n - 1)
                    }
                    18 | 19 => {
                        let p = if self.algorithm == 18 {
                            data_disks - r1
                        } else {
                            r1
                        };
                        dd = (p + 1 + dd) % (n - 1);
                        (p, n - 1)
                    }
                    20 => {
                        dd += 1;
                        (0, n - 1)
                    }
                    a => panic!("raid6 algorithm {a} is not in the reference"),
                };
                pd = p;
                qd = Some(q);
            }
            l => panic!("level {l} is not a parity level"),
        }
        (dd, pd, qd)
    }

    fn stripe(&self, stripe: u64) -> StripeMap {
        let mut data = Vec::with_capacity(self.data_disks());
        let mut parity = None;
        for logical in 0..self.data_disks() {
            let (dd, pd, qd) = self.place(stripe, logical);
            data.push(dd);
            parity = Some((pd, qd));
        }
        let (pd, qd) = parity.expect("at least one data disk");
        let map = StripeMap { pd, qd, data };
        // Every member has exactly one role in the stripe.
        let mut seen = vec![false; self.raid_disks];
        for d in map.data.iter().copied().chain([map.pd]).chain(map.qd) {
            assert!(!seen[d], "reference placement puts two cells on member {d}");
            seen[d] = true;
        }
        assert!(
            seen.iter().all(|&s| s),
            "reference placement leaves a member out"
        );
        map
    }

    /// The Q coefficient index of each member of `stripe` (`None` for P and Q), as the
    /// kernel's `raid6_d0` / `raid6_idx_to_slot` walk assigns them.
    fn syndrome_slots(&self, map: &StripeMap) -> Vec<Option<usize>> {
        let n = self.raid_disks;
        let qd = map.qd.expect("RAID6 has Q");
        let d0 = if qd == n - 1 { 0 } else { qd + 1 };
        let mut slots = vec![None; n];
        let mut count = 0;
        for step in 0..n {
            let d = (d0 + step) % n;
            if d != map.pd && d != qd {
                slots[d] = Some(count);
                count += 1;
            }
        }
        slots
    }
}

// ---------------------------------------------------------------------------------------
// The reference: GF(2^8) arithmetic and parity.
// ---------------------------------------------------------------------------------------

struct Gf {
    exp: [u8; 512],
    log: [u8; 256],
}

impl Gf {
    fn new() -> Self {
        let mut exp = [0u8; 512];
        let mut log = [0u8; 256];
        let mut x: u16 = 1;
        for (i, e) in exp.iter_mut().enumerate().take(255) {
            *e = x as u8;
            log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11d;
            }
        }
        for i in 255..512 {
            exp[i] = exp[i - 255];
        }
        Gf { exp, log }
    }

    fn mul(&self, a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            0
        } else {
            self.exp[self.log[a as usize] as usize + self.log[b as usize] as usize]
        }
    }

    fn pow2(&self, i: usize) -> u8 {
        self.exp[i % 255]
    }

    fn inv(&self, a: u8) -> u8 {
        assert_ne!(a, 0, "no inverse of zero");
        self.exp[255 - self.log[a as usize] as usize]
    }
}

/// A cell as little-endian 64-bit words: the reference works on eight bytes at a time
/// (multiplication by 2 in GF(2^8) is independent per byte, so it works lane-wise).
type Cell = Vec<u64>;

fn to_words(bytes: &[u8]) -> Cell {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Multiplies each of the eight bytes of `w` by 2 in GF(2^8) (polynomial 0x11d).
fn mul2(w: u64) -> u64 {
    let high = (w >> 7) & 0x0101_0101_0101_0101;
    ((w << 1) & 0xfefe_fefe_fefe_fefe) ^ (high * 0x1d)
}

/// Multiplies each byte of `w` by the constant `c`, bit by bit from the top.
fn mul_const(w: u64, c: u8) -> u64 {
    let mut out = 0;
    for bit in (0..8).rev() {
        out = mul2(out);
        if c >> bit & 1 == 1 {
            out ^= w;
        }
    }
    out
}

fn xor_into(dst: &mut [u64], src: &[u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// P and Q of the data cells of one stripe (Q only for RAID6); `cells` is indexed by
/// member, parity members' entries are ignored. Q is evaluated by Horner's rule over the
/// syndrome slots, highest slot first: Q = (((D_k-1)*2 + D_k-2)*2 + ...) + D_0.
fn parity_of(g: &Geometry, map: &StripeMap, cells: &[Cell]) -> (Cell, Option<Cell>) {
    let len = cells[map.data[0]].len();
    let mut p = vec![0u64; len];
    for &d in &map.data {
        xor_into(&mut p, &cells[d]);
    }
    let q = map.qd.map(|_| {
        let slots = g.syndrome_slots(map);
        let mut by_slot: Vec<usize> = vec![usize::MAX; map.data.len()];
        for &d in &map.data {
            by_slot[slots[d].expect("a data member has a slot")] = d;
        }
        let mut q = vec![0u64; len];
        for &d in by_slot.iter().rev() {
            for (o, &i) in q.iter_mut().zip(&cells[d]) {
                *o = mul2(*o) ^ i;
            }
        }
        q
    });
    (p, q)
}

/// Fills the missing cells of one stripe (at most the level's parity count) from the rest.
fn recover(gf: &Gf, g: &Geometry, map: &StripeMap, cells: &mut [Option<Cell>]) {
    let len = cells.iter().flatten().next().expect("some cell").len();
    assert!(
        cells.iter().filter(|c| c.is_none()).count() <= g.max_degraded(),
        "more cells lost than the level tolerates"
    );
    let lost_data: Vec<usize> = map
        .data
        .iter()
        .copied()
        .filter(|&d| cells[d].is_none())
        .collect();
    let slots = map.qd.map(|_| g.syndrome_slots(map));
    let coef = |d: usize| gf.pow2(slots.as_ref().expect("slots")[d].expect("slot"));
    // P and Q of the data that survives (lost data counted as zero).
    let zeroed: Vec<Cell> = cells
        .iter()
        .map(|c| c.clone().unwrap_or_else(|| vec![0u64; len]))
        .collect();
    let (p_rest, q_rest) = parity_of(g, map, &zeroed);
    match lost_data.as_slice() {
        [] => {}
        [x] => {
            let mut out = p_rest.clone();
            if let Some(p) = &cells[map.pd] {
                xor_into(&mut out, p);
            } else {
                let q = cells[map.qd.expect("Q")].as_ref().expect("Q survives");
                let inv = gf.inv(coef(*x));
                out = q
                    .iter()
                    .zip(q_rest.as_ref().expect("Q"))
                    .map(|(a, b)| mul_const(a ^ b, inv))
                    .collect();
            }
            cells[*x] = Some(out);
        }
        [x, y] => {
            let p = cells[map.pd].as_ref().expect("P survives");
            let q = cells[map.qd.expect("Q")].as_ref().expect("Q survives");
            let q_rest = q_rest.as_ref().expect("Q");
            let (gx, gy) = (coef(*x), coef(*y));
            let inv = gf.inv(gx ^ gy);
            let mut dx = vec![0u64; len];
            let mut dy = vec![0u64; len];
            for i in 0..len {
                let pa = p[i] ^ p_rest[i];
                let qa = q[i] ^ q_rest[i];
                // dx + dy = pa and gx*dx + gy*dy = qa, so dx = (qa + gy*pa) / (gx + gy).
                dx[i] = mul_const(qa ^ mul_const(pa, gy), inv);
                dy[i] = pa ^ dx[i];
            }
            cells[*x] = Some(dx);
            cells[*y] = Some(dy);
        }
        _ => panic!("more data lost than the reference recovers"),
    }
    let full: Vec<Cell> = cells
        .iter()
        .map(|c| c.clone().unwrap_or_else(|| vec![0u64; len]))
        .collect();
    let (p, q) = parity_of(g, map, &full);
    if cells[map.pd].is_none() {
        cells[map.pd] = Some(p);
    }
    if let Some(qd) = map.qd
        && cells[qd].is_none()
    {
        cells[qd] = q;
    }
}

// ---------------------------------------------------------------------------------------
// Member images.
// ---------------------------------------------------------------------------------------

const SECTOR: usize = SECTOR_BYTES;
/// mdadm's data offset for these small members (1 MiB); checked against the superblock.
const DATA_OFFSET_SECTORS: u64 = 2048;

struct Images {
    g: Geometry,
    disks: Vec<Rc<MemoryDisk>>,
    data_offset_sectors: u64,
    stripes: u64,
}

fn level_of(level: u32) -> Level {
    match level {
        4 => Level::Raid4,
        5 => Level::Raid5,
        _ => Level::Raid6,
    }
}

/// Fresh members with superblocks from `create` and an all-zero data area (consistent).
fn make_images(g: Geometry, stripes: u64, seed: u64) -> Images {
    let member_sectors = DATA_OFFSET_SECTORS + stripes * g.chunk_sectors;
    let disks: Vec<Rc<MemoryDisk>> = (0..g.raid_disks)
        .map(|_| Rc::new(MemoryDisk::new(member_sectors)))
        .collect();
    let exec = Executor::new();
    let members: Vec<(String, Rc<dyn BlockDevice>)> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("m{i}"), d.clone() as Rc<dyn BlockDevice>))
        .collect();
    let opts = CreateOptions {
        level: level_of(g.level),
        layout: (g.level != 4).then(|| g.algorithm.to_string()),
        chunk_sectors: g.chunk_sectors as u32,
        name: "ref".into(),
        uuid: [7; 16],
        time_s: 1_700_000_000,
        entropy: seed,
        assume_clean: true,
    };
    let e = exec.clone();
    let array = exec
        .block_on(async move { create(&e, members, &opts).await })
        .expect("create finishes")
        .unwrap_or_else(|e| panic!("seed {seed}: create {g:?}: {e}"));
    drop(array);
    let d0 = disks[0].clone() as Rc<dyn BlockDevice>;
    let sb = exec
        .block_on(async move { read_superblock(&*d0).await })
        .expect("read finishes")
        .expect("superblock decodes");
    assert_eq!(sb.data_offset_sectors, DATA_OFFSET_SECTORS, "{g:?}");
    assert_eq!(sb.size_sectors, stripes * g.chunk_sectors, "{g:?}");
    Images {
        g,
        disks,
        data_offset_sectors: sb.data_offset_sectors,
        stripes,
    }
}

impl Images {
    fn array_bytes(&self) -> usize {
        (self.stripes * self.g.data_disks() as u64 * self.g.chunk_sectors) as usize * SECTOR
    }

    fn chunk_bytes(&self) -> usize {
        self.g.chunk_sectors as usize * SECTOR
    }

    fn cell_sector(&self, stripe: u64) -> u64 {
        self.data_offset_sectors + stripe * self.g.chunk_sectors
    }

    /// Lays `data` (the whole array) out stripe by stripe with its parity.
    fn write_array(&self, data: &[u8]) {
        assert_eq!(data.len(), self.array_bytes());
        let cb = self.chunk_bytes();
        let k = self.g.data_disks();
        for stripe in 0..self.stripes {
            let map = self.g.stripe(stripe);
            let mut cells: Vec<Cell> = vec![vec![0u64; cb / 8]; self.g.raid_disks];
            for (logical, &d) in map.data.iter().enumerate() {
                let at = ((stripe as usize * k) + logical) * cb;
                cells[d] = to_words(&data[at..at + cb]);
            }
            let (p, q) = parity_of(&self.g, &map, &cells);
            cells[map.pd] = p;
            if let (Some(qd), Some(q)) = (map.qd, q) {
                cells[qd] = q;
            }
            for (d, cell) in cells.iter().enumerate() {
                self.disks[d]
                    .write_at(self.cell_sector(stripe), &to_bytes(cell))
                    .expect("member write");
            }
        }
    }

    /// Decodes the whole array from the members not in `removed`, and checks that the
    /// parity of every stripe matches its data. `Err` names the first inconsistent stripe.
    fn read_array(&self, gf: &Gf, removed: &[usize]) -> Result<Vec<u8>, String> {
        let cb = self.chunk_bytes();
        let k = self.g.data_disks();
        let mut out = vec![0u8; self.array_bytes()];
        for stripe in 0..self.stripes {
            let map = self.g.stripe(stripe);
            let mut cells: Vec<Option<Cell>> = (0..self.g.raid_disks)
                .map(|d| {
                    (!removed.contains(&d)).then(|| {
                        let mut c = vec![0u8; cb];
                        self.disks[d]
                            .read_at(self.cell_sector(stripe), &mut c)
                            .expect("member read");
                        to_words(&c)
                    })
                })
                .collect();
            if removed.is_empty() {
                let full: Vec<Cell> = cells.iter().flatten().cloned().collect();
                let (p, q) = parity_of(&self.g, &map, &full);
                if full[map.pd] != p {
                    return Err(format!("stripe {stripe}: P does not match the data"));
                }
                if let (Some(qd), Some(q)) = (map.qd, q)
                    && full[qd] != q
                {
                    return Err(format!("stripe {stripe}: Q does not match the data"));
                }
            } else {
                recover(gf, &self.g, &map, &mut cells);
            }
            for (logical, &d) in map.data.iter().enumerate() {
                let at = ((stripe as usize * k) + logical) * cb;
                out[at..at + cb].copy_from_slice(&to_bytes(cells[d].as_ref().expect("recovered")));
            }
        }
        Ok(out)
    }

    /// Assembles the array through the engine from the members not in `removed`.
    fn assemble(&self, exec: &Executor, removed: &[usize], seed: u64) -> Rc<Array> {
        let candidates: Vec<(String, Rc<dyn BlockDevice>)> = self
            .disks
            .iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(i, d)| (format!("m{i}"), d.clone() as Rc<dyn BlockDevice>))
            .collect();
        let e = exec.clone();
        let result = exec
            .block_on(async move { assemble(&e, candidates).await })
            .expect("assembly finishes");
        let g = self.g;
        result.arrays.into_iter().next().unwrap_or_else(|| {
            panic!(
                "seed {seed}: {g:?} without {removed:?} did not assemble: {:?}",
                result.problems
            )
        })
    }
}

fn read_all(exec: &Executor, array: &Rc<Array>) -> Vec<u8> {
    let a = array.clone();
    let bytes = array.capacity_sectors() as usize * SECTOR;
    exec.block_on(async move { a.read(0, vec![0u8; bytes]).await })
        .expect("read finishes")
        .expect("read succeeds")
}

/// Snapshots every member (the engine's writes change them; degraded variants start over).
fn snapshot(images: &Images) -> Vec<Vec<u8>> {
    images
        .disks
        .iter()
        .map(|d| {
            let mut b = vec![0u8; d.capacity_sectors() as usize * SECTOR];
            d.read_at(0, &mut b).expect("snapshot");
            b
        })
        .collect()
}

fn restore(images: &Images, snap: &[Vec<u8>]) {
    for (d, b) in images.disks.iter().zip(snap) {
        d.write_at(0, b).expect("restore");
    }
}

// ---------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------

fn base_seed() -> u64 {
    std::env::var("SEED")
        .ok()
        .map(|s| s.parse().expect("SEED must be a number"))
        .unwrap_or(0x5eed_0005)
}

/// Every geometry of one level the tests cover.
fn geometries(level: u32) -> Vec<Geometry> {
    let (algorithms, disks): (&[u32], std::ops::RangeInclusive<usize>) = match level {
        4 => (&[0], 3..=6),
        5 => (&[0, 1, 2, 3, 4, 5], 3..=6),
        _ => (&[0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 20], 4..=7),
    };
    let mut out = Vec::new();
    for &algorithm in algorithms {
        for raid_disks in disks.clone() {
            for chunk_sectors in [8, 128] {
                out.push(Geometry {
                    level,
                    algorithm,
                    raid_disks,
                    chunk_sectors,
                });
            }
        }
    }
    out
}

/// Member subsets to remove: none, every single member, and (RAID6) every pair.
fn removals(g: &Geometry) -> Vec<Vec<usize>> {
    let n = g.raid_disks;
    let mut out = vec![Vec::new()];
    out.extend((0..n).map(|d| vec![d]));
    if g.max_degraded() == 2 {
        for a in 0..n {
            for b in a + 1..n {
                out.push(vec![a, b]);
            }
        }
    }
    out
}

/// Stripes per member: a full parity rotation and a little more.
fn stripes_for(g: &Geometry) -> u64 {
    g.raid_disks as u64 + 1
}

/// Reference-written images read back through the engine, whole and degraded.
fn forward(level: u32) {
    let gf = Gf::new();
    for (case, g) in geometries(level).into_iter().enumerate() {
        let seed = base_seed() ^ ((level as u64) << 32) ^ case as u64;
        let images = make_images(g, stripes_for(&g), seed);
        let mut data = vec![0u8; images.array_bytes()];
        SplitMix64::new(seed).fill(&mut data);
        images.write_array(&data);
        // The reference agrees with itself before the engine is asked.
        assert!(
            images.read_array(&gf, &[]).expect("consistent") == data,
            "seed {seed}: reference round trip {g:?}"
        );
        // Assembly bumps events and records absent members faulty: each case starts over.
        let snap = snapshot(&images);
        for removed in removals(&g) {
            restore(&images, &snap);
            let exec = Executor::new();
            let array = images.assemble(&exec, &removed, seed);
            assert_eq!(
                array.capacity_sectors() as usize * SECTOR,
                data.len(),
                "seed {seed}: {g:?} capacity"
            );
            let got = read_all(&exec, &array);
            if got != data {
                let first = got.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0);
                panic!(
                    "seed {seed}: {g:?} without members {removed:?}: engine read differs \
                     from the reference first at array byte {first} (sector {}); replay with SEED={}",
                    first / SECTOR,
                    base_seed()
                );
            }
        }
    }
}

/// Random writes through the engine (optimal, or with members removed), then the member
/// images decoded by the reference.
fn reverse(level: u32) {
    let gf = Gf::new();
    for (case, g) in geometries(level).into_iter().enumerate() {
        let seed = base_seed() ^ ((level as u64) << 32) ^ (case as u64) << 8 ^ 0xabc;
        let images = make_images(g, stripes_for(&g), seed);
        let mut rng = SplitMix64::new(seed);
        // Start from reference-written content so that RMW reads real old data and parity.
        let mut initial = vec![0u8; images.array_bytes()];
        rng.fill(&mut initial);
        images.write_array(&initial);
        let snap = snapshot(&images);
        // Optimal, single members removed and for RAID6 a few pairs: with 4 KiB chunks
        // every single member, with 64 KiB chunks one (the engine's debug-build parity
        // dominates the run time; the forward test covers every removal).
        let n = g.raid_disks;
        let all = removals(&g);
        let singles = if g.chunk_sectors <= 8 { n } else { 1 };
        let pairs = if g.chunk_sectors <= 8 { 3 } else { 1 };
        let first_single = (seed % n as u64) as usize;
        let mut cases: Vec<Vec<usize>> = vec![Vec::new()];
        cases.extend((0..singles).map(|i| vec![(first_single + i) % n]));
        cases.extend(all.iter().filter(|r| r.len() == 2).take(pairs).cloned());
        for removed in cases {
            restore(&images, &snap);
            let exec = Executor::new();
            let array = images.assemble(&exec, &removed, seed);
            let mut model = initial.clone();
            let sectors = array.capacity_sectors();
            let stripe_sectors = g.data_disks() as u64 * g.chunk_sectors;
            for _ in 0..16 {
                let len = match rng.below(4) {
                    0 => 1 + rng.below(8),
                    1 => 1 + rng.below(g.chunk_sectors * 2),
                    2 => stripe_sectors,
                    _ => 1 + rng.below(stripe_sectors * 3),
                }
                .min(sectors);
                let start = if rng.below(3) == 0 {
                    rng.below(sectors / stripe_sectors) * stripe_sectors
                } else {
                    rng.below(sectors - len + 1)
                }
                .min(sectors - len);
                let mut buf = vec![0u8; len as usize * SECTOR];
                rng.fill(&mut buf);
                let at = start as usize * SECTOR;
                model[at..at + buf.len()].copy_from_slice(&buf);
                let a = array.clone();
                exec.block_on(async move { a.write(start, Bytes::from(buf), false).await })
                    .expect("write finishes")
                    .unwrap_or_else(|e| {
                        panic!("seed {seed}: {g:?} without {removed:?}: write failed: {e}")
                    });
            }
            drop(array);
            let decoded = images
                .read_array(&gf, &removed)
                .unwrap_or_else(|e| panic!("seed {seed}: {g:?}: engine wrote bad parity: {e}"));
            if decoded != model {
                let first = decoded
                    .iter()
                    .zip(&model)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                panic!(
                    "seed {seed}: {g:?} without members {removed:?}: members decoded by the \
                     reference differ from what was written, first at array byte {first} \
                     (sector {}); replay with SEED={}",
                    first / SECTOR,
                    base_seed()
                );
            }
        }
    }
}

#[test]
fn reference_geometry_matches_known_md_pictures() {
    // md's documented left-symmetric RAID5 on 4 members: parity walks from the last member
    // down, data starts after parity.
    let g = Geometry {
        level: 5,
        algorithm: 2,
        raid_disks: 4,
        chunk_sectors: 8,
    };
    assert_eq!(
        g.stripe(0),
        StripeMap {
            pd: 3,
            qd: None,
            data: vec![0, 1, 2]
        }
    );
    assert_eq!(
        g.stripe(1),
        StripeMap {
            pd: 2,
            qd: None,
            data: vec![3, 0, 1]
        }
    );
    // RAID6 left-symmetric: Q follows P; slots equal the logical data order.
    let g6 = Geometry {
        level: 6,
        algorithm: 2,
        raid_disks: 5,
        chunk_sectors: 8,
    };
    let m = g6.stripe(1);
    assert_eq!((m.pd, m.qd), (3, Some(4)));
    let slots = g6.syndrome_slots(&m);
    for (logical, &d) in m.data.iter().enumerate() {
        assert_eq!(slots[d], Some(logical));
    }
    // GF(2^8): 2^8 = 0x1d under 0x11d.
    let gf = Gf::new();
    assert_eq!(gf.pow2(8), 0x1d);
    assert_eq!(gf.mul(gf.inv(0x53), 0x53), 1);
    // The lane-wise word arithmetic agrees with the table arithmetic in every lane.
    for a in 0..=255u8 {
        for c in 0..=255u8 {
            let w = u64::from_le_bytes([a, 0, c, a, 1, 0x80, 0xff, a]);
            let got = mul_const(w, c).to_le_bytes();
            for (lane, &x) in w.to_le_bytes().iter().enumerate() {
                assert_eq!(got[lane], gf.mul(x, c), "{x:#x} * {c:#x}");
            }
        }
    }
}

#[test]
fn raid4_reference_images_read_back() {
    forward(4);
}

#[test]
fn raid5_reference_images_read_back() {
    forward(5);
}

#[test]
fn raid6_reference_images_read_back() {
    forward(6);
}

#[test]
fn raid4_engine_writes_decode_with_reference() {
    reverse(4);
}

#[test]
fn raid5_engine_writes_decode_with_reference() {
    reverse(5);
}

#[test]
fn raid6_engine_writes_decode_with_reference() {
    reverse(6);
}
