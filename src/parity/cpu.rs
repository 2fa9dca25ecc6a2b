//! x86_64 CPU feature detection for the parity engines, with `cpuid` and `xgetbv` only, so it
//! works in `no_std` (no `is_x86_feature_detected!`).

use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
use core::sync::atomic::{AtomicU8, Ordering};

/// What the parity engines may use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Features {
    pub(crate) ssse3: bool,
    /// AVX2 instructions present *and* the OS saves the YMM state on context switches.
    pub(crate) avx2: bool,
}

const KNOWN: u8 = 1;
const SSSE3: u8 = 2;
const AVX2: u8 = 4;

/// Detection result, computed once: `cpuid` traps to the hypervisor in a VM and is slow.
static CACHE: AtomicU8 = AtomicU8::new(0);

/// The features of this CPU.
pub(crate) fn features() -> Features {
    let mut bits = CACHE.load(Ordering::Relaxed);
    if bits & KNOWN == 0 {
        bits = detect();
        CACHE.store(bits, Ordering::Relaxed);
    }
    Features {
        ssse3: bits & SSSE3 != 0,
        avx2: bits & AVX2 != 0,
    }
}

fn detect() -> u8 {
    let mut bits = KNOWN;
    // Leaf 0 reports the highest leaf; `cpuid` itself exists on every x86_64 CPU.
    let max_leaf = __cpuid(0).eax;
    if max_leaf < 1 {
        return bits;
    }
    let leaf1 = __cpuid(1);
    let has_ssse3 = leaf1.ecx & (1 << 9) != 0;
    let has_osxsave = leaf1.ecx & (1 << 27) != 0;
    let has_avx = leaf1.ecx & (1 << 28) != 0;
    if has_ssse3 {
        bits |= SSSE3;
    }
    if max_leaf >= 7 && has_osxsave && has_avx {
        let leaf7 = __cpuid_count(7, 0);
        let has_avx2 = leaf7.ebx & (1 << 5) != 0;
        // SAFETY: OSXSAVE set means the OS enabled XSAVE and `xgetbv` is available.
        let xcr0 = unsafe { xcr0() };
        // Bits 1 (SSE state) and 2 (AVX state): the OS saves YMM registers.
        let os_saves_ymm = xcr0 & 0b110 == 0b110;
        if has_avx2 && os_saves_ymm {
            bits |= AVX2;
        }
    }
    bits
}

/// # Safety
/// Only when `cpuid` reports OSXSAVE.
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE, so XCR0 is readable with `xgetbv`.
    unsafe { _xgetbv(0) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpuid_agrees_with_std_detection() {
        let f = super::features();
        assert_eq!(f.ssse3, std::is_x86_feature_detected!("ssse3"));
        assert_eq!(f.avx2, std::is_x86_feature_detected!("avx2"));
    }
}
