//! The scalar reference engine: every operation byte by byte, straight from its definition.
//!
//! Deliberately naive (no Horner's rule, no tables beyond log/exp): the other engines are
//! tested against these functions, so they must be obviously right rather than fast.

use super::{Job, gf};

/// Runs a syndrome job on `blocks[i]` at slot `slots[i]`.
pub(super) fn run(blocks: &[&[u8]], slots: &[u8], job: &mut Job<'_>) {
    match job {
        Job::GenPq { p, q } => pq_gen(blocks, slots, Some(p), q),
        Job::GenQ { q } => pq_gen(blocks, slots, None, q),
        Job::Update { p, q } => accumulate(blocks, slots, p, q),
        Job::Rec2 {
            p,
            q,
            x_slot,
            y_slot,
            dx,
            dy,
        } => recover_two_data(blocks, slots, p, q, (*x_slot, dx), (*y_slot, dy)),
        Job::RecDataP {
            q,
            x_slot,
            dx,
            p_out,
        } => recover_data_and_p(blocks, slots, q, (*x_slot, dx), p_out),
        Job::RecDataQ {
            p,
            x_slot,
            dx,
            q_out,
        } => recover_data_and_q(blocks, slots, p, (*x_slot, dx), q_out),
    }
}

/// `dst = ⊕ srcs`, or `dst ^= ⊕ srcs` when `accumulate`.
pub(super) fn xor(srcs: &[&[u8]], dst: &mut [u8], accumulate: bool) {
    for (i, out) in dst.iter_mut().enumerate() {
        let sum = srcs.iter().fold(0u8, |acc, s| acc ^ s[i]);
        *out = if accumulate { *out ^ sum } else { sum };
    }
}

/// The Q coefficient of a syndrome slot.
fn coefficient(slot: u8) -> u8 {
    gf::exp2(slot as u32)
}

/// `P = Σ Dᵢ` (when asked) and `Q = Σ g^slotᵢ · Dᵢ`.
fn pq_gen(data: &[&[u8]], slots: &[u8], mut p: Option<&mut [u8]>, q: &mut [u8]) {
    for i in 0..q.len() {
        let mut p_byte = 0u8;
        let mut q_byte = 0u8;
        for (block, &slot) in data.iter().zip(slots) {
            p_byte ^= block[i];
            q_byte ^= gf::mul(coefficient(slot), block[i]);
        }
        if let Some(p) = p.as_deref_mut() {
            p[i] = p_byte;
        }
        q[i] = q_byte;
    }
}

/// `P ^= Σ Dᵢ`, `Q ^= Σ g^slotᵢ · Dᵢ`: for an update the blocks are the old and the new
/// contents of each changed slot, so this adds their difference.
fn accumulate(blocks: &[&[u8]], slots: &[u8], p: &mut [u8], q: &mut [u8]) {
    for i in 0..p.len() {
        for (block, &slot) in blocks.iter().zip(slots) {
            p[i] ^= block[i];
            q[i] ^= gf::mul(coefficient(slot), block[i]);
        }
    }
}

/// The syndromes of the survivors alone at byte `i`: (Σ D, Σ g^slot·D).
fn partial_syndromes(survivors: &[&[u8]], slots: &[u8], i: usize) -> (u8, u8) {
    let mut p_byte = 0u8;
    let mut q_byte = 0u8;
    for (block, &slot) in survivors.iter().zip(slots) {
        p_byte ^= block[i];
        q_byte ^= gf::mul(coefficient(slot), block[i]);
    }
    (p_byte, q_byte)
}

/// Solves `pd = dx ⊕ dy`, `qd = gˣ·dx ⊕ gʸ·dy` for each byte.
fn recover_two_data(
    survivors: &[&[u8]],
    slots: &[u8],
    p: &[u8],
    q: &[u8],
    x: (u8, &mut [u8]),
    y: (u8, &mut [u8]),
) {
    let (gx, dx) = (coefficient(x.0), x.1);
    let (gy, dy) = (coefficient(y.0), y.1);
    assert!(gx != gy, "two lost data blocks share a syndrome slot");
    for i in 0..p.len() {
        let (sp, sq) = partial_syndromes(survivors, slots, i);
        let pd = p[i] ^ sp;
        let qd = q[i] ^ sq;
        // qd = gx·dx ⊕ gy·(pd ⊕ dx) = (gx ⊕ gy)·dx ⊕ gy·pd
        let x_byte = gf::div(qd ^ gf::mul(gy, pd), gx ^ gy);
        dx[i] = x_byte;
        dy[i] = pd ^ x_byte;
    }
}

/// `dx = (Q ⊕ Σ g^slot·D) / gˣ`, then `P = Σ D ⊕ dx`.
fn recover_data_and_p(
    survivors: &[&[u8]],
    slots: &[u8],
    q: &[u8],
    x: (u8, &mut [u8]),
    p_out: &mut [u8],
) {
    let (gx, dx) = (coefficient(x.0), x.1);
    for i in 0..q.len() {
        let (sp, sq) = partial_syndromes(survivors, slots, i);
        let x_byte = gf::div(q[i] ^ sq, gx);
        dx[i] = x_byte;
        p_out[i] = sp ^ x_byte;
    }
}

/// `dx = P ⊕ Σ D`, then `Q = Σ g^slot·D ⊕ gˣ·dx`.
fn recover_data_and_q(
    survivors: &[&[u8]],
    slots: &[u8],
    p: &[u8],
    x: (u8, &mut [u8]),
    q_out: &mut [u8],
) {
    let (gx, dx) = (coefficient(x.0), x.1);
    for i in 0..p.len() {
        let (sp, sq) = partial_syndromes(survivors, slots, i);
        let x_byte = p[i] ^ sp;
        dx[i] = x_byte;
        q_out[i] = sq ^ gf::mul(gx, x_byte);
    }
}
