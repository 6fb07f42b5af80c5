//! AVX-512 VNNI tile and four-row kernels for the 32-value formats: two weight rows per
//! 512-bit register, so that one `vpdpbusd`, one conversion and one FMA serve two outputs.
//!
//! Each output keeps its own eight f32 lanes (one half of a register) and receives exactly
//! the operations the single-row AVX2 kernel performs on its accumulator: the same integer
//! block sums, the same `dx * dy` product, the same FMA, the same final reduction. Results
//! therefore equal `dot_avx2`'s bit for bit; only the number of instructions changes.
//!
//! Every function here requires AVX-512F, BW and VNNI (plus AVX2, FMA and F16C);
//! `quant::dot` hands them out only after runtime detection.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::dot_avx2::{
    LEGACY, PanelBlock, f16_at, hsum, legacy_layout, legacy_quants, out4, prefetch_ahead,
};

/// The two halves of `v` as eight-lane vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn halves(v: __m512) -> [__m256; 2] {
    let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
    [_mm512_castps512_ps256(v), _mm256_castpd_ps(hi)]
}

/// Lanes 0..8 from lane `i` of `d`, lanes 8..16 from lane `i + 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn spread_pair(d: __m128, i: i32) -> __m512 {
    let idx = _mm512_add_epi32(
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
        _mm512_set1_epi32(i),
    );
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d))
}

/// Rows `r` and `r + 1` of a panel block's quants as one 64-byte vector.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn quants_pair(p: &PanelBlock, r: usize) -> __m512i {
    _mm512_loadu_si512(p.q[r..r + 2].as_ptr() as *const __m512i)
}

/// Rows `r` and `r + 1` of a panel block's auxiliary vectors as one 64-byte vector.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn aux_pair(p: &PanelBlock, r: usize) -> __m512i {
    _mm512_loadu_si512(p.aux[r..r + 2].as_ptr() as *const __m512i)
}

/// Two 32-byte vectors as one 64-byte vector, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `-128 * (sum of each group of four bytes of q)` as i32 lanes: the correction that turns
/// a product with activations offset by 128 back into the signed product.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn offset_correction(q: __m256i) -> __m256i {
    // 128 * (q0 + q1) lies in [-32768, 32512]: `maddubs` does not saturate here.
    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(0x80u8 as i8), q);
    let fours = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    _mm256_sub_epi32(_mm256_setzero_si256(), fours)
}

/// Four legacy-format weight rows · every activation row of a batch: the rows' blocks are
/// decoded once into a panel (quants, the offset correction of signed formats, scales and
/// mins), then six tokens at a time (one at a time for the rest) share each decoded block:
/// twelve accumulators and the panel's vectors fit the 32 registers, where eight tokens
/// spilled and four reloaded the panel too often (`cargo bench --bench kernels -- tile`). Signed formats offset the activations to `y + 128` (unsigned, as `vpdpbusd`
/// wants) and start each sum from the correction; unsigned ones multiply directly. Every
/// integer sum equals the AVX2 kernel's (VNNI does not saturate), so every result does.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_legacy<const T: u8>(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut Vec<PanelBlock>,
) {
    let ty = LEGACY[T as usize];
    let (wb, _, _, has_min) = legacy_layout(ty);
    let nb = w[0].len() / wb;
    panel.clear();
    panel.resize(nb, PanelBlock::ZERO);
    for (b, p) in panel.iter_mut().enumerate() {
        for (r, row) in w.iter().enumerate() {
            let x = &row[wb * b..wb * (b + 1)];
            let q = legacy_quants(ty, x);
            let aux = if has_min {
                _mm256_setzero_si256()
            } else {
                offset_correction(q)
            };
            p.set(
                r,
                q,
                aux,
                f16_at(x),
                if has_min { f16_at(&x[2..]) } else { 0.0 },
            );
        }
    }
    let n = a.len().min(out.len());
    let mut t = 0;
    while t + 6 <= n {
        group::<T, 6>(panel, &a[t..t + 6], &mut out[t..t + 6]);
        t += 6;
    }
    while t < n {
        group::<T, 1>(panel, &a[t..t + 1], &mut out[t..t + 1]);
        t += 1;
    }
}

/// `RN` tokens against a decoded panel: per block and token, two `vpdpbusd` (rows 0-1 and
/// 2-3), two scale products, two conversions and two FMAs.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn group<const T: u8, const RN: usize>(
    panel: &[PanelBlock],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
) {
    let ty = LEGACY[T as usize];
    let (_, ab, at, has_min) = legacy_layout(ty);
    let c128 = _mm512_set1_epi8(0x80u8 as i8);
    let zero = _mm512_setzero_si512();
    let mut acc = [[_mm512_setzero_ps(); 2]; RN];
    let mut mins = [_mm_setzero_ps(); RN];
    for (b, p) in panel.iter().enumerate() {
        let q = [quants_pair(p, 0), quants_pair(p, 2)];
        let aux = [aux_pair(p, 0), aux_pair(p, 2)];
        let d4 = _mm_loadu_ps(p.d.as_ptr());
        let dx = [spread_pair(d4, 0), spread_pair(d4, 2)];
        for t in 0..RN {
            let y = &a[t][ab * b..ab * (b + 1)];
            let qy = _mm512_broadcast_i64x4(_mm256_loadu_si256(y[at..].as_ptr() as *const __m256i));
            let dy = _mm512_set1_ps(f16_at(y));
            let yu = _mm512_xor_si512(qy, c128);
            for h in 0..2 {
                let isum = if has_min {
                    _mm512_dpbusd_epi32(zero, q[h], qy)
                } else {
                    _mm512_dpbusd_epi32(aux[h], yu, q[h])
                };
                let scale = _mm512_mul_ps(dx[h], dy);
                acc[t][h] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[t][h]);
            }
            if has_min {
                let mx = _mm_loadu_ps(p.m.as_ptr());
                mins[t] = _mm_fmadd_ps(mx, _mm_set1_ps(f16_at(&y[2..])), mins[t]);
            }
        }
    }
    for t in 0..RN {
        let m = out4(mins[t]);
        for h in 0..2 {
            let [lo, hi] = halves(acc[t][h]);
            out[t][2 * h] = hsum(lo) + m[2 * h];
            out[t][2 * h + 1] = hsum(hi) + m[2 * h + 1];
        }
    }
}

/// Four legacy-format weight rows · one activation row (single-token generation), two rows
/// per register as in [`tile_legacy`], the blocks decoded on the fly. Signed formats take
/// the sign trick in mask form (`|x|` times `y` negated where `x < 0`): no per-block
/// correction to compute, as there is no panel to hold it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn rows4_legacy<const T: u8>(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
    let ty = LEGACY[T as usize];
    let (wb, ab, at, has_min) = legacy_layout(ty);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut mins = _mm_setzero_ps();
    for (b, y) in a.chunks_exact(ab).take(w[0].len() / wb).enumerate() {
        let xs = [
            &w[0][wb * b..wb * (b + 1)],
            &w[1][wb * b..wb * (b + 1)],
            &w[2][wb * b..wb * (b + 1)],
            &w[3][wb * b..wb * (b + 1)],
        ];
        prefetch_ahead(xs, w[0].len(), wb);
        let qy = _mm512_broadcast_i64x4(_mm256_loadu_si256(y[at..].as_ptr() as *const __m256i));
        let dy = _mm512_set1_ps(f16_at(y));
        let d4 = f16x4(xs, 0);
        for h in 0..2 {
            let q = join(
                legacy_quants(ty, xs[2 * h]),
                legacy_quants(ty, xs[2 * h + 1]),
            );
            let isum = if has_min {
                _mm512_dpbusd_epi32(zero, q, qy)
            } else {
                let signed_y = _mm512_mask_sub_epi8(qy, _mm512_movepi8_mask(q), zero, qy);
                _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(q), signed_y)
            };
            let scale = _mm512_mul_ps(spread_pair(d4, 2 * h as i32), dy);
            acc[h] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[h]);
        }
        if has_min {
            mins = _mm_fmadd_ps(f16x4(xs, 2), _mm_set1_ps(f16_at(&y[2..])), mins);
        }
    }
    let m = out4(mins);
    let mut o = [0f32; 4];
    for h in 0..2 {
        let [lo, hi] = halves(acc[h]);
        o[2 * h] = hsum(lo) + m[2 * h];
        o[2 * h + 1] = hsum(hi) + m[2 * h + 1];
    }
    o
}

/// The f16 at byte `at` of four blocks as four f32 lanes, one conversion for all four.
#[inline(always)]
fn f16x4(xs: [&[u8]; 4], at: usize) -> __m128 {
    let h = |x: &[u8]| i16::from_le_bytes([x[at], x[at + 1]]);
    // SAFETY: F16C and SSE2, implied by every caller's target features (runtime-detected).
    unsafe {
        _mm_cvtph_ps(_mm_setr_epi16(
            h(xs[0]),
            h(xs[1]),
            h(xs[2]),
            h(xs[3]),
            0,
            0,
            0,
            0,
        ))
    }
}

/// The entry points, one tile and one four-row kernel per format (by [`LEGACY`] index).
macro_rules! entries {
    ($($t:ident, $r:ident => $k:literal;)*) => {
        $(
            #[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
            pub(crate) unsafe fn $t(
                w: &[&[u8]; 4],
                a: &[&[u8]],
                out: &mut [[f32; 4]],
                panel: &mut Vec<PanelBlock>,
            ) {
                tile_legacy::<$k>(w, a, out, panel)
            }

            #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
            pub(crate) unsafe fn $r(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
                rows4_legacy::<$k>(w, a)
            }
        )*
    };
}
entries! {
    tile_q4_0_zmm, rows4_q4_0_zmm => 0;
    tile_q5_0_zmm, rows4_q5_0_zmm => 1;
    tile_q5_1_zmm, rows4_q5_1_zmm => 2;
    tile_q8_0_zmm, rows4_q8_0_zmm => 3;
    tile_q4_1_zmm, rows4_q4_1_zmm => 4;
}
