//! The machine's int8 arithmetic peak: how many byte multiply-accumulates per second the
//! widest int8 dot-product instruction of an instruction set sustains, the ceiling every
//! quantized matrix product's integer work runs under (`pv bench --roofline` reports prompt
//! processing as a share of it).
//!
//! Measured, not looked up: twelve independent accumulators (more than the instruction's
//! latency times its issue rate on any current core) take the instruction back to back, so
//! only its throughput limits the loop.

use super::cpu::Isa;

/// Iterations of the twelve-accumulator loop per call: about 20 ms at 3.5 GHz.
const ROUNDS: usize = 1 << 21;

/// Byte products one call of [`run`] performs, and the call itself: `None` for an
/// instruction set without a vector int8 multiply (portable).
pub fn kernel(isa: Isa) -> Option<(u64, fn() -> i32)> {
    #[cfg(target_arch = "x86_64")]
    {
        // The instruction's byte products per call: 12 accumulators a round.
        let per = |bytes: u64| 12 * ROUNDS as u64 * bytes;
        match isa {
            Isa::Portable => None,
            // `vpmaddubsw` multiplies 32 byte pairs (adding adjacent pairs into i16).
            Isa::Avx2 => Some((per(32), || unsafe_call(x86::maddubs))),
            // `vpdpbusd` (VEX): 32 byte products summed into eight i32 lanes.
            Isa::AvxVnni => Some((per(32), || unsafe_call(x86::dpbusd_vex))),
            // `vpdpbusd` on 512 bits: 64 byte products.
            Isa::Avx512Vnni | Isa::Avx512VnniWide => {
                Some((per(64), || unsafe_call(x86::dpbusd_zmm)))
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        None
    }
}

#[cfg(target_arch = "x86_64")]
fn unsafe_call(f: unsafe fn() -> i32) -> i32 {
    // SAFETY: `kernel` hands out the function of an `Isa`, and an `Isa` is only chosen
    // among those `cpu()` reports (`Isa::best`, `Isa::available`).
    unsafe { f() }
}

/// Int8 multiply-accumulates per second of `threads` threads running `isa`'s widest int8
/// dot-product instruction at once, the best of three passes (`None` for portable).
pub fn int8_macs_per_s(isa: Isa, threads: usize) -> Option<f64> {
    let (products, run) = kernel(isa)?;
    let threads = threads.max(1);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(run)).collect();
            for h in handles {
                std::hint::black_box(h.join().unwrap_or(0));
            }
        });
        best = best.max((products * threads as u64) as f64 / t.elapsed().as_secs_f64());
    }
    Some(best)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod x86 {
    use super::ROUNDS;
    use std::arch::x86_64::*;

    /// Twelve accumulators, each `$op(acc, x, y)` per round, folded into one value at the
    /// end so that nothing is optimized away.
    macro_rules! peak {
        ($name:ident, $features:literal, $zero:expr, $splat:ident,
         |$a:ident, $x:ident, $y:ident| $op:expr, |$v:ident| $fold:expr) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name() -> i32 {
                // Macro arguments, not closures: a closure would be compiled without the
                // target features and called once per instruction.
                let $x = $splat(std::hint::black_box(3));
                let $y = $splat(std::hint::black_box(5));
                let mut acc = [$zero; 12];
                for _ in 0..ROUNDS {
                    for slot in acc.iter_mut() {
                        let $a = *slot;
                        *slot = $op;
                    }
                }
                let mut folded = 0;
                for $v in acc {
                    folded ^= $fold;
                }
                folded
            }
        };
    }
    peak!(
        maddubs,
        "avx2",
        _mm256_setzero_si256(),
        _mm256_set1_epi8,
        |a, x, y| _mm256_add_epi16(a, _mm256_maddubs_epi16(x, y)),
        |a| _mm256_extract_epi32::<0>(a)
    );
    peak!(
        dpbusd_vex,
        "avx2,avxvnni",
        _mm256_setzero_si256(),
        _mm256_set1_epi8,
        |a, x, y| _mm256_dpbusd_avx_epi32(a, x, y),
        |a| _mm256_extract_epi32::<0>(a)
    );
    peak!(
        dpbusd_zmm,
        "avx512f,avx512vnni",
        _mm512_setzero_si512(),
        _mm512_set1_epi8,
        |a, x, y| _mm512_dpbusd_epi32(a, x, y),
        |a| _mm512_reduce_add_epi32(a)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set this CPU runs has a peak (a plain loop with no int8 multiply
    /// has none) within what any core could do.
    #[test]
    fn every_available_set_but_portable_has_a_measured_peak() {
        for isa in Isa::available() {
            let peak = int8_macs_per_s(isa, 1);
            if isa == Isa::Portable {
                assert_eq!(peak, None);
                continue;
            }
            let peak = peak.unwrap_or_else(|| panic!("{isa:?} has no peak"));
            // At least one instruction a cycle at 100 MHz (a busy machine shares the core),
            // and no more than four at 10 GHz.
            let products = kernel(isa).unwrap().0 as f64 / (12 * ROUNDS) as f64;
            assert!(
                peak > products * 1e8 && peak < products * 4e10,
                "{isa:?}: {peak}"
            );
        }
    }
}
