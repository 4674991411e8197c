//! The processor state a guest call starts from.
//!
//! Native code that uses 256- or 512-bit AVX registers without a `vzeroupper` at its end leaves
//! their upper halves "dirty": tract's hand-written x86 kernels do, which a wasi:nn graph on the
//! tract backend runs on the calling thread (ONNX Runtime's clean up after themselves). The thread
//! stays that way until something clears them — glibc's own AVX-512 string functions deliberately
//! do not — and from then on every legacy-SSE instruction Cranelift emits in guest code pays a
//! state-transition or false-dependency penalty. Measured here: digits-onnx's tract-in-guest call
//! took 217–530 µs instead of 12–14 µs on a thread that had run one tract graph. Clearing the state
//! before a guest runs costs about a cycle.

/// Zeroes the upper halves of the vector registers (`vzeroupper`) when the CPU has AVX.
#[inline]
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above). `vzeroupper` only zeroes bits 128 and up of the
        // vector registers, which code built for the baseline x86-64 target never holds values in.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper()
}

/// Whether this thread's vector registers have dirty upper halves (the AVX component of the
/// `XINUSE` bitmap), where the CPU can tell (`None`: it has no AVX, or no `XGETBV` with ECX = 1).
pub fn upper_vector_state_in_use() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        let xsave = std::arch::is_x86_feature_detected!("xsave")
            && std::arch::is_x86_feature_detected!("avx")
            && __cpuid_count(0xD, 1).eax & (1 << 2) != 0;
        if xsave {
            // SAFETY: the CPU has XSAVE and XGETBV with ECX = 1 (checked above).
            return Some(unsafe { xinuse() } & (1 << 2) != 0);
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xinuse() -> u64 {
    std::arch::x86_64::_xgetbv(1)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn clearing_leaves_the_upper_halves_clean() {
        if upper_vector_state_in_use().is_none() {
            eprintln!("this CPU cannot report its AVX state; nothing to check");
            return;
        }
        // SAFETY: `upper_vector_state_in_use` answered, so the CPU has AVX; ymm0 is declared clobbered.
        unsafe { std::arch::asm!("vpcmpeqd ymm0, ymm0, ymm0", out("ymm0") _) };
        assert_eq!(
            upper_vector_state_in_use(),
            Some(true),
            "a 256-bit write dirties the state"
        );
        clear_upper_vector_state();
        assert_eq!(upper_vector_state_in_use(), Some(false));
    }
}
