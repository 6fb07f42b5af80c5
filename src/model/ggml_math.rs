//! The element-wise functions and summation orders of llama.cpp's CPU backend, reproduced
//! lane for lane so that pv's engine computes the same float values, not merely close ones.
//!
//! Why: the engine quantizes activations to 8 bits per block as llama.cpp does, so a one-ulp
//! difference upstream can flip a rounding and move near-tied logits apart. llama.cpp's own
//! results differ between its AVX2 and AVX-512 builds (different `exp` polynomial evaluation
//! and reduction widths), so the flavour to reproduce is a choice: [`Flavor`].

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

pub use crate::quant::Flavor;

const R: f32 = f32::from_bits(0x4b40_0000); // 0x1.8p23
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
const C5: f32 = f32::from_bits(0x3c07_2010);
const C4: f32 = f32::from_bits(0x3d2b_9f17);
const C3: f32 = f32::from_bits(0x3e2a_af33);
const C2: f32 = f32::from_bits(0x3eff_fedb);
const C1: f32 = f32::from_bits(0x3f7f_fff6);

/// `exp(x)` as one lane of llama.cpp's `ggml_v_expf` computes it.
#[inline(always)]
pub fn expf(x: f32, flavor: Flavor) -> f32 {
    let z = x.mul_add(LOG2E, R);
    let n = z - R;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let u = b * b;
    let poly = C5.mul_add(b, C4).mul_add(u, C3.mul_add(b, C2));
    match flavor {
        Flavor::Avx2 => {
            let j = poly.mul_add(u, C1 * b);
            let e = z.to_bits() << 23;
            let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
            if n.abs() <= 126.0 {
                return j.mul_add(k, k);
            }
            let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
            let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
            let s2 = f32::from_bits(e.wrapping_sub(g));
            if n.abs() > 192.0 {
                s1 * s1
            } else {
                s2.mul_add(j, s2) * s1
            }
        }
        Flavor::Avx512 => {
            if n.abs() > 192.0 {
                return if n <= 0.0 { 0.0 } else { f32::INFINITY };
            }
            let j = poly.mul_add(u, C1.mul_add(b, 1.0));
            // _mm512_scalef_ps: j * 2^n, exact but for the final rounding.
            // n is an integer in [-192, 192]: 2^n is exact as an f64 built from its exponent.
            let pow2 = f64::from_bits(((n as i64 + 1023) as u64) << 52);
            (j as f64 * pow2) as f32
        }
    }
}

/// SiLU as llama.cpp's vectorised `ggml_v_silu`: `x / (1 + exp(0 - x))`.
#[inline(always)]
pub fn silu(x: f32, flavor: Flavor) -> f32 {
    x / (1.0 + expf(0.0 - x, flavor))
}

/// Horizontal sum of one vector register, in the order the flavour's intrinsics add lanes
/// (`hsum_float_8` for AVX2, GCC's `_mm512_reduce_add_ps` for AVX-512).
#[inline(always)]
pub fn hsum(v: &[f32], flavor: Flavor) -> f32 {
    let mut t = [0f32; 8];
    match flavor {
        Flavor::Avx2 => t.copy_from_slice(&v[..8]),
        Flavor::Avx512 => {
            for i in 0..8 {
                t[i] = v[i + 8] + v[i];
            }
        }
    }
    let s4 = [t[4] + t[0], t[5] + t[1], t[6] + t[2], t[7] + t[3]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// `ggml_vec_dot_f16`: four accumulators of one register each, combined pairwise, reduced.
/// Inputs are f16 values held as f32.
#[inline(always)]
pub fn vec_dot_f16(x: &[f32], y: &[f32], flavor: Flavor) -> f32 {
    let w = flavor.lanes();
    let step = 4 * w;
    let np = x.len() - x.len() % step;
    let mut acc = [[0f32; 16]; 4];
    for i in (0..np).step_by(step) {
        for (j, a) in acc.iter_mut().enumerate() {
            for p in 0..w {
                let k = i + j * w + p;
                a[p] = x[k].mul_add(y[k], a[p]);
            }
        }
    }
    let mut sum = reduce_vec_dot_f16(&mut acc, flavor) as f64;
    for k in np..x.len() {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// The reduction that ends `ggml_vec_dot_f16`: accumulators combined pairwise, then one
/// horizontal sum. Each accumulator holds `flavor.lanes()` lanes.
#[inline(always)]
pub fn reduce_vec_dot_f16(acc: &mut [[f32; 16]; 4], flavor: Flavor) -> f32 {
    let w = flavor.lanes();
    for p in 0..w {
        acc[0][p] += acc[2][p];
        acc[1][p] += acc[3][p];
    }
    for p in 0..w {
        acc[0][p] += acc[1][p];
    }
    match flavor {
        // GGML_F32x8_REDUCE: low + high half, then two horizontal adds.
        Flavor::Avx2 => {
            let a = &acc[0];
            let t0 = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
            (t0[0] + t0[1]) + (t0[2] + t0[3])
        }
        Flavor::Avx512 => hsum(&acc[0][..16], flavor),
    }
}

/// `rows[dst] += rows[src]` for two `len`-wide rows of a lane-major buffer.
#[inline(always)]
fn add_row(rows: &mut [f32], len: usize, dst: usize, src: usize) {
    debug_assert_ne!(dst, src);
    let (a, b) = if dst < src {
        let (lo, hi) = rows.split_at_mut(src * len);
        (&mut lo[dst * len..][..len], &hi[..len])
    } else {
        let (lo, hi) = rows.split_at_mut(dst * len);
        (&mut hi[..len], &lo[src * len..][..len])
    };
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// [`hsum`] of many vectors at once: `rows` holds lane `l` of every vector in row `l`
/// (`len` wide), and the sums land in row 0. Each column goes through [`hsum`]'s additions
/// in its order, so each sum is the same; the rows make it vectorise across columns.
#[inline(always)]
pub fn hsum_rows(rows: &mut [f32], len: usize, flavor: Flavor) {
    if flavor == Flavor::Avx512 {
        for i in 0..8 {
            add_row(rows, len, i, i + 8);
        }
    }
    for i in 0..4 {
        add_row(rows, len, i, i + 4);
    }
    add_row(rows, len, 0, 2);
    add_row(rows, len, 1, 3);
    add_row(rows, len, 0, 1);
}

/// [`reduce_vec_dot_f16`] of many accumulator sets at once: row `r * lanes + p` holds lane
/// `p` of accumulator `r` for every column; the results land in row 0, each equal to
/// [`reduce_vec_dot_f16`]'s for its column.
#[inline(always)]
pub fn reduce_vec_dot_f16_rows(rows: &mut [f32], len: usize, flavor: Flavor) {
    let w = flavor.lanes();
    for p in 0..w {
        add_row(rows, len, p, 2 * w + p);
        add_row(rows, len, w + p, 3 * w + p);
    }
    for p in 0..w {
        add_row(rows, len, p, w + p);
    }
    match flavor {
        Flavor::Avx2 => {
            for i in 0..4 {
                add_row(rows, len, i, i + 4);
            }
            add_row(rows, len, 0, 1);
            add_row(rows, len, 2, 3);
            add_row(rows, len, 0, 2);
        }
        Flavor::Avx512 => hsum_rows(rows, len, flavor),
    }
}

/// One output of llamafile's `tinyBLAS` GEMM (used by llama.cpp for f16 products of two or
/// more columns): one register accumulator over the whole row, then a horizontal sum.
/// `x.len()` must be a multiple of the lane count.
#[inline(always)]
pub fn tinyblas_dot(x: &[f32], y: &[f32], flavor: Flavor) -> f32 {
    match flavor {
        Flavor::Avx512 => tinyblas_dot_lanes::<16>(x, y, flavor),
        Flavor::Avx2 => tinyblas_dot_lanes::<8>(x, y, flavor),
    }
}

/// [`tinyblas_dot`] with the lane count as a constant: the rows taken as arrays of `W`
/// (`as_chunks`, so that no index needs a bounds check) and the lanes as one array, kept
/// in one (AVX2) or two (AVX-512) 256-bit registers. The lanes pass through `black_box`
/// before the horizontal sum: seeing the sum's pairwise tree, the compiler otherwise
/// vectorized the whole loop two lanes at a time (eight `xmm` FMAs a step, not two `ymm`).
#[inline(always)]
fn tinyblas_dot_lanes<const W: usize>(x: &[f32], y: &[f32], flavor: Flavor) -> f32 {
    let mut acc = [0f32; W];
    for (xc, yc) in x.as_chunks::<W>().0.iter().zip(y.as_chunks::<W>().0) {
        for p in 0..W {
            acc[p] = xc[p].mul_add(yc[p], acc[p]);
        }
    }
    hsum(&std::hint::black_box(acc), flavor)
}

/// In-place softmax of `x * scale` as llama.cpp's `soft_max` op: exponentials by `expf`, the
/// sum accumulated in f64 one register at a time, then one multiply by `(f32)(1 / sum)`.
/// `x.len()` must be a multiple of the lane count (pad with `-inf`).
#[inline(always)]
pub fn softmax(x: &mut [f32], scale: f32, flavor: Flavor) {
    let w = flavor.lanes();
    for v in x.iter_mut() {
        *v *= scale;
    }
    let max = lane_max(x);
    let mut sum = 0f64;
    // Masked cells (`-inf` under a finite maximum) give exactly +0, and a register of them
    // adds +0 to the sum: both are written without computing `exp`, which matters because
    // the padded cache is mostly masked for short contexts. The register test visits every
    // lane (no early exit), so that it runs as one vector compare.
    let masked = |v: f32| v == f32::NEG_INFINITY && max.is_finite();
    for c in x.chunks_exact_mut(w) {
        if max.is_finite()
            && c.iter()
                .fold(true, |all, &v| all & (v == f32::NEG_INFINITY))
        {
            c.fill(0.0);
            continue;
        }
        for v in c.iter_mut() {
            *v = if masked(*v) {
                0.0
            } else {
                expf(*v - max, flavor)
            };
        }
        sum += hsum(c, flavor) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The largest element of `x` (`-inf` for none; NaNs ignored, as `f32::max` does), taken
/// eight lanes at a time: its value does not depend on the order it is taken in (only the
/// sign of a zero maximum may, and `exp(v - max)` is the same for both).
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let (chunks, rest) = x.as_chunks::<8>();
    let mut m = [f32::NEG_INFINITY; 8];
    for c in chunks {
        for i in 0..8 {
            m[i] = m[i].max(c[i]);
        }
    }
    m.into_iter()
        .chain(rest.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max)
}

/// A value rounded to f16 and back, as llama.cpp's f16 KV cache and f16 matmul inputs hold it.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// [`round_f16`] of every element, eight at a time by F16C where the CPU has it (the same
/// round-to-nearest-even conversion, so the same values).
pub fn round_f16_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu().f16c {
        // SAFETY: `cpu()` detected F16C and AVX.
        unsafe { round_f16_f16c(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = round_f16(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_f16_f16c(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly eight f32, read and written unaligned.
        unsafe {
            let v = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    chunks
        .into_remainder()
        .iter_mut()
        .for_each(|v| *v = round_f16(*v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_reductions_equal_the_per_vector_reductions() {
        let mut rng = crate::quant::synth::SplitMix(4);
        let len = 13;
        for flavor in Flavor::ALL {
            let w = flavor.lanes();
            let rows: Vec<f32> = (0..4 * w * len).map(|_| rng.normal(1.0)).collect();
            let mut h = rows.clone();
            hsum_rows(&mut h, len, flavor);
            let mut r = rows.clone();
            reduce_vec_dot_f16_rows(&mut r, len, flavor);
            for d in 0..len {
                let lanes: Vec<f32> = (0..w).map(|l| rows[l * len + d]).collect();
                assert_eq!(h[d].to_bits(), hsum(&lanes, flavor).to_bits());
                let mut regs = [[0f32; 16]; 4];
                for (i, reg) in regs.iter_mut().enumerate() {
                    for p in 0..w {
                        reg[p] = rows[(i * w + p) * len + d];
                    }
                }
                assert_eq!(
                    r[d].to_bits(),
                    reduce_vec_dot_f16(&mut regs, flavor).to_bits()
                );
            }
        }
    }

    #[test]
    fn f16_rounding_in_place_equals_the_scalar_rounding() {
        let mut rng = crate::quant::synth::SplitMix(3);
        let mut x: Vec<f32> = (0..1003)
            .map(|i| f32::from_bits(rng.next_u64() as u32) * if i % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        x.extend([
            65504.0,
            65520.0,
            1e-8,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let want: Vec<u32> = x.iter().map(|&v| round_f16(v).to_bits()).collect();
        round_f16_in_place(&mut x);
        for (i, (&g, &w)) in x.iter().zip(&want).enumerate() {
            let (g, w) = (f32::from_bits(g.to_bits()), f32::from_bits(w));
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{i}: {g} vs {w}"
            );
        }
    }

    /// The softmax as llama.cpp's op states it, with no register skipped: every cell's
    /// exponential (masked cells 0), every register's sum added, the maximum taken in order.
    fn softmax_reference(x: &mut [f32], scale: f32, flavor: Flavor) {
        x.iter_mut().for_each(|v| *v *= scale);
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f64;
        for c in x.chunks_exact_mut(flavor.lanes()) {
            for v in c.iter_mut() {
                let masked = *v == f32::NEG_INFINITY && max.is_finite();
                *v = if masked { 0.0 } else { expf(*v - max, flavor) };
            }
            sum += hsum(c, flavor) as f64;
        }
        let inv = (1.0 / sum) as f32;
        x.iter_mut().for_each(|v| *v *= inv);
    }

    #[test]
    fn softmax_equals_the_unskipped_softmax() {
        let mut rng = crate::quant::synth::SplitMix(5);
        for flavor in Flavor::ALL {
            for case in 0..400 {
                let n = 256;
                // Windows of live cells anywhere (some empty, some a single cell), the rest
                // masked as attention masks them; now and then a live zero or a lone +inf.
                let first = (rng.next_u64() % n as u64) as usize;
                let len = first + (rng.next_u64() % (n - first) as u64 + 1) as usize;
                let mut x = vec![f32::NEG_INFINITY; n];
                for v in &mut x[first..len] {
                    *v = rng.normal(4.0);
                }
                if case % 7 == 0 {
                    x[first] = if case % 2 == 0 { 0.0 } else { -0.0 };
                }
                if case % 50 == 1 {
                    x[len - 1] = f32::INFINITY;
                }
                if case % 40 == 3 {
                    x.fill(f32::NEG_INFINITY);
                }
                let (mut got, mut want) = (x.clone(), x);
                softmax(&mut got, 0.125, flavor);
                softmax_reference(&mut want, 0.125, flavor);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{flavor:?} case {case}");
            }
        }
    }

    #[test]
    fn expf_is_accurate_in_both_flavors() {
        for flavor in [Flavor::Avx2, Flavor::Avx512] {
            for i in -2000..1770 {
                let x = i as f32 * 0.05;
                let want = (x as f64).exp();
                let got = expf(x, flavor) as f64;
                // Relative accuracy for normal results; denormals keep fewer bits.
                let tol = if want > f32::MIN_POSITIVE as f64 {
                    want * 3e-7
                } else {
                    1e-44f64.max(want * 0.05)
                };
                assert!(
                    (got - want).abs() <= tol,
                    "{flavor:?} exp({x}) = {got}, want {want}"
                );
            }
            assert_eq!(expf(f32::NEG_INFINITY, flavor), 0.0);
            assert_eq!(expf(-200.0, flavor), 0.0);
        }
    }

    #[test]
    fn dots_and_softmax_are_what_they_claim() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let y: Vec<f32> = (0..256)
            .map(|i| ((i * 11 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        for flavor in [Flavor::Avx2, Flavor::Avx512] {
            assert!((vec_dot_f16(&x, &y, flavor) as f64 - exact).abs() < 1e-4);
            assert!((tinyblas_dot(&x, &y, flavor) as f64 - exact).abs() < 1e-4);
            let mut s = x.clone();
            softmax(&mut s, 0.5, flavor);
            assert!((s.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-5);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_reference {
    use super::*;
    use std::arch::x86_64::*;

    /// llama.cpp's AVX2 `ggml_v_expf`, transcribed intrinsic for intrinsic.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn v_expf(x: __m256) -> __m256 {
        let r = _mm256_set1_ps(R);
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
        );
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let c = _mm256_castps_si256(_mm256_cmp_ps(
            _mm256_andnot_ps(_mm256_set1_ps(-0.0), n),
            _mm256_set1_ps(126.0),
            _CMP_GT_OQ,
        ));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(_mm256_set1_ps(C5), b, _mm256_set1_ps(C4)),
                u,
                _mm256_fmadd_ps(_mm256_set1_ps(C3), b, _mm256_set1_ps(C2)),
            ),
            u,
            _mm256_mul_ps(_mm256_set1_ps(C1), b),
        );
        if _mm256_movemask_ps(_mm256_castsi256_ps(c)) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
            _mm256_set1_epi32(0x82000000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_castps_si256(_mm256_cmp_ps(
            _mm256_andnot_ps(_mm256_set1_ps(-0.0), n),
            _mm256_set1_ps(192.0),
            _CMP_GT_OQ,
        ));
        _mm256_or_ps(
            _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                _mm256_castsi256_ps(d),
                _mm256_or_ps(
                    _mm256_and_ps(
                        _mm256_castsi256_ps(c),
                        _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
                    ),
                    _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }

    #[test]
    fn scalar_port_equals_the_intrinsics_bit_for_bit() {
        if !crate::quant::cpu().avx2 {
            return;
        }
        let mut rng = crate::quant::synth::SplitMix(3);
        for _ in 0..20000 {
            let x: [f32; 8] = std::array::from_fn(|_| rng.uniform() * 200.0);
            let mut out = [0f32; 8];
            // SAFETY: `cpu()` detected AVX2 and FMA above.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v_expf(_mm256_loadu_ps(x.as_ptr()))) };
            for (a, b) in x.iter().zip(out) {
                assert_eq!(expf(*a, Flavor::Avx2).to_bits(), b.to_bits(), "exp({a})");
            }
        }
    }
}
