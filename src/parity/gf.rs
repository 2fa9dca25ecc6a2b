//! GF(2⁸) arithmetic of RAID-6: reduction polynomial 0x11d, generator {02}.
//!
//! The field is the one of Linux `lib/raid6` and ISA-L, so a Q computed here matches theirs
//! byte for byte. `mul_slow` is the definition (carry-less multiply, then reduce); the
//! log/exp tables are built from it at compile time and checked against it in the tests.

/// The reduction polynomial x⁸ + x⁴ + x³ + x² + 1.
pub const POLY: u16 = 0x11d;

/// Low byte of [`POLY`]: what a doubling folds back in when the top bit falls out.
pub(crate) const POLY_LOW: u8 = 0x1d;

/// The definition of multiplication: shift-and-add, reducing modulo [`POLY`] as it goes.
pub const fn mul_slow(a: u8, b: u8) -> u8 {
    let mut a = a as u16;
    let mut b = b;
    let mut product: u16 = 0;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        a <<= 1;
        if a & 0x100 != 0 {
            a ^= POLY;
        }
        b >>= 1;
    }
    product as u8
}

struct Tables {
    /// `exp[i] = g^i`, doubled in length so `exp[log a + log b]` needs no modulo.
    exp: [u8; 512],
    /// `log[a]` for a ≠ 0; `log[0]` is unused.
    log: [u8; 256],
}

const fn build_tables() -> Tables {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u8 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x;
        exp[i + 255] = x;
        log[x as usize] = i as u8;
        x = mul_slow(x, 2);
        i += 1;
    }
    // g^510 and g^511 are only reached by callers that reduce first; keep them defined.
    exp[510] = exp[0];
    exp[511] = exp[1];
    Tables { exp, log }
}

static TABLES: Tables = build_tables();

/// `a · b` in GF(2⁸).
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    TABLES.exp[TABLES.log[a as usize] as usize + TABLES.log[b as usize] as usize]
}

/// `a · {02}`: the step of Horner's rule for Q.
#[inline]
pub const fn mul2(a: u8) -> u8 {
    let carry = if a & 0x80 != 0 { POLY_LOW } else { 0 };
    (a << 1) ^ carry
}

/// `g^n` for the generator g = {02}; the coefficient of syndrome slot `n` in Q.
#[inline]
pub fn exp2(n: u32) -> u8 {
    TABLES.exp[(n % 255) as usize]
}

/// The discrete logarithm of a nonzero `a` to base {02}.
///
/// # Panics
/// If `a` is zero, which has no logarithm.
#[inline]
pub fn log2(a: u8) -> u8 {
    assert!(a != 0, "GF(2^8): zero has no logarithm");
    TABLES.log[a as usize]
}

/// The multiplicative inverse of a nonzero `a`.
///
/// # Panics
/// If `a` is zero.
#[inline]
pub fn inv(a: u8) -> u8 {
    assert!(a != 0, "GF(2^8): zero has no inverse");
    TABLES.exp[255 - TABLES.log[a as usize] as usize]
}

/// `a / b` for a nonzero `b`.
///
/// # Panics
/// If `b` is zero.
#[inline]
pub fn div(a: u8, b: u8) -> u8 {
    mul(a, inv(b))
}

/// The two 16-entry tables that multiply by `c` one nibble at a time: `c·x = lo[x & 15] ^
/// hi[x >> 4]`, because multiplication distributes over the xor of the two nibbles. This
/// is the form a byte shuffle (`pshufb`) can evaluate sixteen or thirty-two lanes at once.
pub fn nibble_tables(c: u8) -> ([u8; 16], [u8; 16]) {
    // c·2ⁱ for i in 0..8 by doubling; every entry is then an xor of those (multiplication
    // is linear over xor), so a table costs a few dozen cheap operations, not 32 multiplies.
    let mut powers = [0u8; 8];
    let mut x = c;
    for p in powers.iter_mut() {
        *p = x;
        x = mul2(x);
    }
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    for n in 1..16usize {
        let low_bit = n.trailing_zeros() as usize;
        let rest = n & (n - 1);
        lo[n] = lo[rest] ^ powers[low_bit];
        hi[n] = hi[rest] ^ powers[low_bit + 4];
    }
    (lo, hi)
}

/// `c·x` for every byte `x`, built like [`nibble_tables`] from the doublings of `c`.
pub(crate) fn mul_table(c: u8) -> [u8; 256] {
    let mut powers = [0u8; 8];
    let mut x = c;
    for p in powers.iter_mut() {
        *p = x;
        x = mul2(x);
    }
    let mut table = [0u8; 256];
    for n in 1..256usize {
        table[n] = table[n & (n - 1)] ^ powers[n.trailing_zeros() as usize];
    }
    table
}

/// The coefficients that solve for two lost data blocks at slots `x` and `y`.
///
/// With `pd = P ⊕ ΣP(survivors)` and `qd = Q ⊕ ΣQ(survivors)`, the lost blocks are
/// `dx = a·pd ⊕ b·qd` and `dy = pd ⊕ dx`, where `a = gʸ/(gˣ⊕gʸ)` and `b = 1/(gˣ⊕gʸ)`.
///
/// # Panics
/// If `x == y` modulo 255 (the two blocks would share a coefficient: unrecoverable).
pub(crate) fn two_data_coefficients(x: u8, y: u8) -> (u8, u8) {
    let gx = exp2(x as u32);
    let gy = exp2(y as u32);
    assert!(gx != gy, "two lost data blocks share syndrome slot {x}/{y}");
    let denom_inv = inv(gx ^ gy);
    (mul(gy, denom_inv), denom_inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_agree_with_the_definition_for_every_pair() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_slow(a, b), "{a} * {b}");
            }
        }
    }

    #[test]
    fn generator_has_order_255_and_known_powers() {
        // Linux lib/raid6 and ISA-L: {02}^8 = 0x1d under 0x11d.
        assert_eq!(exp2(8), 0x1d);
        assert_eq!(exp2(0), 1);
        assert_eq!(exp2(255), 1);
        let mut seen = [false; 256];
        for n in 0..255 {
            let v = exp2(n);
            assert!(!seen[v as usize], "g^{n} repeats");
            seen[v as usize] = true;
        }
        assert!(!seen[0]);
    }

    #[test]
    fn inverse_division_and_doubling() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1);
            assert_eq!(exp2(log2(a) as u32), a);
            assert_eq!(mul2(a), mul(a, 2));
            for b in 1..=255u8 {
                assert_eq!(mul(div(a, b), b), a);
            }
        }
    }

    #[test]
    fn nibble_tables_multiply() {
        for c in 0..=255u8 {
            let (lo, hi) = nibble_tables(c);
            for x in 0..=255u8 {
                assert_eq!(lo[(x & 15) as usize] ^ hi[(x >> 4) as usize], mul(c, x));
            }
        }
    }

    #[test]
    fn mul_table_multiplies() {
        for c in 0..=255u8 {
            let t = mul_table(c);
            for x in 0..=255u8 {
                assert_eq!(t[x as usize], mul(c, x));
            }
        }
    }

    #[test]
    fn two_data_coefficients_solve_the_system() {
        for x in 0..20u8 {
            for y in 0..20u8 {
                if x == y {
                    continue;
                }
                let (a, b) = two_data_coefficients(x, y);
                for (dx, dy) in [(0x12u8, 0xf3u8), (0, 0xff), (0x80, 1)] {
                    let pd = dx ^ dy;
                    let qd = mul(exp2(x as u32), dx) ^ mul(exp2(y as u32), dy);
                    let got = mul(a, pd) ^ mul(b, qd);
                    assert_eq!(got, dx);
                    assert_eq!(pd ^ got, dy);
                }
            }
        }
    }
}
