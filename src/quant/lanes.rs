//! AVX-512 VNNI tiles for K-quant weights with one output per lane, as llama.cpp's repacked
//! gemm gives each output its own lane: four weight rows against four tokens fill the
//! sixteen lanes of one register (lane `4r + t`: row `r`, token `t`), so each `vpdpbusd`
//! does 64 useful multiply-adds and no sum crosses lanes. The weights are laid out once per
//! tile call ([`KLaneBlock`], each four-value step repeated across its row's chunk: the
//! panel stays in L1), the batch's Q8_K activations once per batch ([`KLaneActs`], four
//! tokens' steps side by side, broadcast to every chunk as they are loaded).
//!
//! - **Q2_K, repacked order.** A value's weight is its 4-bit scale times its 2-bit quant,
//!   at most 45: the scales are folded into the quants, and a step's integer dot is one
//!   chain of `vpdpbusd` of those unsigned bytes with the signed activations. The mins go
//!   through `vpdpwssd` (4-bit mins times the activations' i16 block sums). Each output
//!   receives the float operations of `korder::repacked`: two FMAs per block for whole
//!   groups of four tokens (llama.cpp's gemm), one for the tokens after them (its gemv).
//! - **Q3_K, tiled order.** A weight (6-bit signed scale times a quant in -4..=3) does not
//!   fit a byte, so each 16-value group's dot of the unsigned quants (`q + 4`, 0..=7) is
//!   summed alone (it fits an i16), two groups are packed into the halves of each dword,
//!   and one `vpdpwssd` by the two scales adds them; the offset of 4 comes off through the
//!   block sums. Each output receives `korder::tiled`'s operations: the block's integer dot
//!   times `d`, then one FMA by the activation scale.
//! - **Q4_K, repacked order.** Weights are the 4-bit quants; as for Q3_K, each 16-value
//!   group's dot is packed into an i16 half and one `vpdpwssd` multiplies two of them by
//!   their sub-block's scale, another the block sums by its min; four FMAs per block for
//!   whole groups of four tokens, one for the tokens after them.
//! - **Q6_K, tiled order.** A 16-value group's dot of the unsigned quants (0..=63) does not
//!   fit an i16: each is multiplied by its scale with `vpmulld`; the offset of 32 comes off
//!   through the block sums, as for Q3_K.
//!
//! Integer sums are exact however they are grouped, so every output equals the portable
//! order's bit for bit. Every function here requires AVX-512F, BW and VNNI (plus AVX2, FMA
//! and F16C); `quant::kernels` hands them out only after runtime detection (`quant::cpu`).

#![allow(unsafe_op_in_unsafe_fn)]
#![allow(clippy::needless_range_loop)] // quad-indexed loops over parallel register arrays

use std::arch::x86_64::*;

use super::format::GgmlType;
use super::panel::{KLaneActs, KLaneBlock, TilePanel};

const Q2K_BYTES: usize = GgmlType::Q2_K.block_bytes();
const Q3K_BYTES: usize = GgmlType::Q3_K.block_bytes();
const Q4K_BYTES: usize = GgmlType::Q4_K.block_bytes();
const Q6K_BYTES: usize = GgmlType::Q6_K.block_bytes();
const Q8K_BYTES: usize = GgmlType::Q8_K.block_bytes();

/// `QN` quads of tokens from `quad` on against the laid-out weights, with `STEPS` FMAs per
/// block (2: llama.cpp's gemm, 128 values a step; 1: its gemv). Each quad's integer sums
/// run in two chains (even and odd four-value steps) to hide `vpdpbusd`'s latency; the
/// weights' broadcasts are shared by the quads.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn q2k_quads<const QN: usize, const STEPS: usize>(
    panel: &TilePanel,
    nb: usize,
    quad: usize,
    out: &mut [[f32; 4]],
) {
    let mut acc = [_mm512_setzero_ps(); QN];
    let mut acc_min = [_mm512_setzero_ps(); QN];
    for (b, wb) in panel.klanes.iter().enumerate().take(nb) {
        let dw = _mm512_load_ps(wb.d.as_ptr());
        let dmw = _mm512_load_ps(wb.dmin.as_ptr());
        let mut isum = [[_mm512_setzero_si512(); 2]; QN];
        let mut imin = [_mm512_setzero_si512(); QN];
        for h in 0..2 {
            if STEPS == 2 {
                isum = [[_mm512_setzero_si512(); 2]; QN];
                imin = [_mm512_setzero_si512(); QN];
            }
            for g in (32 * h..32 * h + 32).step_by(2) {
                let q0 = load(&wb.q[g]);
                let q1 = load(&wb.q[g + 1]);
                for k in 0..QN {
                    let ab = &panel.klane_acts[(quad + k) * nb + b];
                    isum[k][0] = _mm512_dpbusd_epi32(isum[k][0], q0, bcast(&ab.y[g]));
                    isum[k][1] = _mm512_dpbusd_epi32(isum[k][1], q1, bcast(&ab.y[g + 1]));
                }
            }
            for j in 4 * h..4 * h + 4 {
                let m = load(&wb.mins[j]);
                for k in 0..QN {
                    let ab = &panel.klane_acts[(quad + k) * nb + b];
                    imin[k] = _mm512_dpwssd_epi32(imin[k], m, bcast(&ab.bsums[j]));
                }
            }
            if STEPS == 2 || h == 1 {
                for k in 0..QN {
                    let ab = &panel.klane_acts[(quad + k) * nb + b];
                    let da = _mm512_broadcast_f32x4(_mm_loadu_ps(ab.d.as_ptr()));
                    let (d, dmin) = (_mm512_mul_ps(dw, da), _mm512_mul_ps(dmw, da));
                    let s = _mm512_add_epi32(isum[k][0], isum[k][1]);
                    acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[k]);
                    acc_min[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[k]), dmin, acc_min[k]);
                }
            }
        }
    }
    for k in 0..QN {
        acc[k] = _mm512_sub_ps(acc[k], acc_min[k]);
    }
    store_quads(&acc, quad, out);
}

/// A 16-byte step of the activations broadcast to the four 128-bit chunks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn bcast(v: &[u8; 16]) -> __m512i {
    _mm512_broadcast_i32x4(_mm_loadu_si128(v.as_ptr() as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn load(v: &[u8; 64]) -> __m512i {
    _mm512_load_si512(v.as_ptr() as *const __m512i)
}

/// Dword `i` of each of four rows (`lo`: rows 0-1 as dwords 0-7, 8-15; `hi`: rows 2-3)
/// repeated across chunk `r` of result `i`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn spread_steps(lo: __m512i, hi: __m512i) -> [__m512i; 8] {
    let mut steps = [_mm512_setzero_si512(); 8];
    for (i, step) in steps.iter_mut().enumerate() {
        let i = i as i32;
        let idx = _mm512_add_epi32(
            _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24),
            _mm512_set1_epi32(i),
        );
        *step = _mm512_permutex2var_epi32(lo, idx, hi);
    }
    steps
}

/// Four rows' f32 scales (lane `r`) repeated across chunk `r`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn spread_rows(d: __m128) -> __m512 {
    let idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d))
}

/// Two 32-byte vectors as one 64-byte vector, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Lays four Q2_K rows out as [`KLaneBlock`]s: per block, each row's 256 weights (scale
/// times quant) in value order, each four-value step then repeated across its row's chunk;
/// the mins as i16 pairs the same way; the scales in their rows' chunks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fill_q2_k(w: &[&[u8]; 4], lanes: &mut Vec<KLaneBlock>) {
    const BYTES: usize = Q2K_BYTES;
    let nb = w[0].len() / BYTES;
    // Every entry is written below: a reused panel is not cleared first.
    lanes.resize(nb, KLaneBlock::ZERO);
    let three = _mm256_set1_epi8(3);
    let low = _mm_set1_epi8(0x0f);
    for (b, l) in lanes.iter_mut().enumerate() {
        let xs = [0, 1, 2, 3].map(|r| &w[r][BYTES * b..BYTES * (b + 1)]);
        // Row r's 32-value run c (values 32c..32c+32) as 32 bytes.
        let mut runs = [[_mm256_setzero_si256(); 8]; 4];
        let mut mins = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let sc = _mm_loadu_si128(xs[r].as_ptr() as *const __m128i);
            let scales = _mm256_broadcastsi128_si256(_mm_and_si128(sc, low));
            mins[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), low));
            for n in 0..2 {
                let bits = _mm256_loadu_si256(xs[r][16 + 32 * n..].as_ptr() as *const __m256i);
                for j in 0..4 {
                    // Values 128n + 32j + l: bits 2j of byte l, scale 8n + 2j + l / 16.
                    let q = _mm256_and_si256(
                        _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * j as i32)),
                        three,
                    );
                    let s = (8 * n + 2 * j) as i8;
                    let pick = _mm256_setr_m128i(_mm_set1_epi8(s), _mm_set1_epi8(s + 1));
                    let sc = _mm256_shuffle_epi8(scales, pick);
                    runs[r][4 * n + j] = times_small(q, sc);
                }
            }
        }
        interleave(l, &runs, &[_mm256_setzero_si256(); 4], &mins);
        let d = f16x4(xs, 80);
        let dmin = f16x4(xs, 82);
        _mm512_store_ps(l.d.as_mut_ptr(), spread_rows(d));
        _mm512_store_ps(l.dmin.as_mut_ptr(), spread_rows(dmin));
    }
}

/// Stores four rows' 32-value runs of byte weights and their sixteen i16 scales and mins
/// (one per 16-value group) into `l`, each dword repeated across its row's chunk
/// ([`KLaneBlock`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn interleave(
    l: &mut KLaneBlock,
    runs: &[[__m256i; 8]; 4],
    scales: &[__m256i; 4],
    mins: &[__m256i; 4],
) {
    for c in 0..8 {
        let steps = spread_steps(join(runs[0][c], runs[1][c]), join(runs[2][c], runs[3][c]));
        for (i, v) in steps.iter().enumerate() {
            _mm512_store_si512(l.q[8 * c + i].as_mut_ptr() as *mut __m512i, *v);
        }
    }
    for (dst, v) in [(&mut l.scales, scales), (&mut l.mins, mins)] {
        let steps = spread_steps(join(v[0], v[1]), join(v[2], v[3]));
        for (i, v) in steps.iter().enumerate() {
            _mm512_store_si512(dst[i].as_mut_ptr() as *mut __m512i, *v);
        }
    }
}

/// `q * s` per byte for quants `q` in 0..=3 and scales `s` in 0..=15 (at most 45).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn times_small(q: __m256i, s: __m256i) -> __m256i {
    let one = _mm256_set1_epi8(1);
    let two = _mm256_set1_epi8(2);
    let b0 = _mm256_cmpeq_epi8(_mm256_and_si256(q, one), one);
    let b1 = _mm256_cmpeq_epi8(_mm256_and_si256(q, two), two);
    _mm256_add_epi8(
        _mm256_and_si256(b0, s),
        _mm256_and_si256(b1, _mm256_add_epi8(s, s)),
    )
}

/// `QN` quads of tokens from `quad` on against laid-out Q3_K weights: per pair of 16-value
/// groups, two chains of four `vpdpbusd` (one per group), packed into i16 halves and
/// multiplied by the pair's scales with one `vpdpwssd`; the groups' block sums take the
/// same scales in a second accumulator, which removes the offset of 4 at the end.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn q3k_quads<const QN: usize>(
    panel: &TilePanel,
    nb: usize,
    quad: usize,
    out: &mut [[f32; 4]],
) {
    let mut acc = [_mm512_setzero_ps(); QN];
    for (b, wb) in panel.klanes.iter().enumerate().take(nb) {
        let ab: [&KLaneActs; QN] = std::array::from_fn(|k| &panel.klane_acts[(quad + k) * nb + b]);
        let mut isum = [_mm512_setzero_si512(); QN];
        let mut offset = [_mm512_setzero_si512(); QN];
        for p in 0..8 {
            let packed = pair_sums(wb, &ab, p);
            let sc = load(&wb.scales[p]);
            for k in 0..QN {
                isum[k] = _mm512_dpwssd_epi32(isum[k], packed[k], sc);
                offset[k] = _mm512_dpwssd_epi32(offset[k], bcast(&ab[k].bsums[p]), sc);
            }
        }
        tiled_step::<QN, 2>(&mut acc, &isum, &offset, wb, &ab);
    }
    store_quads(&acc, quad, out);
}

/// The dots of 16-value groups `2p` and `2p + 1` (four-value steps `8p..8p + 8`) of each
/// quad's tokens with the byte weights, packed as the low and high i16 of each lane: two
/// chains of four `vpdpbusd`. Each group's sum must fit an i16 (at most 16 * 15 * 128 does).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn pair_sums<const QN: usize>(
    wb: &KLaneBlock,
    ab: &[&KLaneActs; QN],
    p: usize,
) -> [__m512i; QN] {
    let mut g = [[_mm512_setzero_si512(); 2]; QN];
    for i in 0..4 {
        let (s0, s1) = (8 * p + i, 8 * p + 4 + i);
        let (q0, q1) = (load(&wb.q[s0]), load(&wb.q[s1]));
        for k in 0..QN {
            g[k][0] = _mm512_dpbusd_epi32(g[k][0], q0, bcast(&ab[k].y[s0]));
            g[k][1] = _mm512_dpbusd_epi32(g[k][1], q1, bcast(&ab[k].y[s1]));
        }
    }
    let mut packed = [_mm512_setzero_si512(); QN];
    for k in 0..QN {
        packed[k] = _mm512_mask_blend_epi16(0xAAAA_AAAA, g[k][0], _mm512_slli_epi32::<16>(g[k][1]));
    }
    packed
}

/// `QN` quads of tokens from `quad` on against laid-out Q4_K weights, with `STEPS` FMAs per
/// block (4: llama.cpp's gemm, 64 values a step; 1: its gemv): per pair of 16-value groups
/// (half a 32-value sub-block each), [`pair_sums`] times the sub-block's scale in both
/// halves, and the block sums times its min, each with one `vpdpwssd`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_quads<const QN: usize, const STEPS: usize>(
    panel: &TilePanel,
    nb: usize,
    quad: usize,
    out: &mut [[f32; 4]],
) {
    let mut acc = [_mm512_setzero_ps(); QN];
    let mut acc_min = [_mm512_setzero_ps(); QN];
    for (b, wb) in panel.klanes.iter().enumerate().take(nb) {
        let ab: [&KLaneActs; QN] = std::array::from_fn(|k| &panel.klane_acts[(quad + k) * nb + b]);
        let dw = _mm512_load_ps(wb.d.as_ptr());
        let dmw = _mm512_load_ps(wb.dmin.as_ptr());
        let mut isum = [_mm512_setzero_si512(); QN];
        let mut imin = [_mm512_setzero_si512(); QN];
        for p in 0..8 {
            if STEPS == 4 && p % 2 == 0 {
                isum = [_mm512_setzero_si512(); QN];
                imin = [_mm512_setzero_si512(); QN];
            }
            let packed = pair_sums(wb, &ab, p);
            let (sc, m) = (load(&wb.scales[p]), load(&wb.mins[p]));
            for k in 0..QN {
                isum[k] = _mm512_dpwssd_epi32(isum[k], packed[k], sc);
                imin[k] = _mm512_dpwssd_epi32(imin[k], bcast(&ab[k].bsums[p]), m);
            }
            if (STEPS == 4 && p % 2 == 1) || p == 7 {
                for k in 0..QN {
                    let da = _mm512_broadcast_f32x4(_mm_loadu_ps(ab[k].d.as_ptr()));
                    let (d, dmin) = (_mm512_mul_ps(dw, da), _mm512_mul_ps(dmw, da));
                    acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[k]), d, acc[k]);
                    acc_min[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[k]), dmin, acc_min[k]);
                }
            }
        }
    }
    for k in 0..QN {
        acc[k] = _mm512_sub_ps(acc[k], acc_min[k]);
    }
    store_quads(&acc, quad, out);
}

/// Lays four Q4_K rows out as [`KLaneBlock`]s: per block, each row's 256 quants in value
/// order, the 32-value sub-blocks' scales and mins each as an i16 pair per 16-value group
/// pair (the same value twice), each dword repeated across its row's chunk; `d` and `dmin`
/// in their rows' chunks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fill_q4_k(w: &[&[u8]; 4], lanes: &mut Vec<KLaneBlock>) {
    const BYTES: usize = Q4K_BYTES;
    let nb = w[0].len() / BYTES;
    // Every entry is written below: a reused panel is not cleared first.
    lanes.resize(nb, KLaneBlock::ZERO);
    let low = _mm256_set1_epi8(0x0f);
    for (b, l) in lanes.iter_mut().enumerate() {
        let xs = [0, 1, 2, 3].map(|r| &w[r][BYTES * b..BYTES * (b + 1)]);
        let mut runs = [[_mm256_setzero_si256(); 8]; 4];
        let mut scales = [_mm256_setzero_si256(); 4];
        let mut mins = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let (sc, m) = super::kquants::q4k_scales_mins(&xs[r][4..16]);
            let sc: [i16; 16] = std::array::from_fn(|s| sc[s / 2] as i16);
            let m: [i16; 16] = std::array::from_fn(|s| m[s / 2] as i16);
            scales[r] = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
            mins[r] = _mm256_loadu_si256(m.as_ptr() as *const __m256i);
            for j in 0..4 {
                // Values 64j + l: low nibbles of byte l; 64j + 32 + l: high nibbles.
                let bits = _mm256_loadu_si256(xs[r][16 + 32 * j..].as_ptr() as *const __m256i);
                runs[r][2 * j] = _mm256_and_si256(bits, low);
                runs[r][2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low);
            }
        }
        interleave(l, &runs, &scales, &mins);
        _mm512_store_ps(l.d.as_mut_ptr(), spread_rows(f16x4(xs, 0)));
        _mm512_store_ps(l.dmin.as_mut_ptr(), spread_rows(f16x4(xs, 2)));
    }
}

/// Lays four Q3_K rows out as [`KLaneBlock`]s: per block, each row's 256 quants plus 4
/// (0..=7) in value order and its sixteen signed scales as i16 pairs, each dword repeated
/// across its row's chunk; `d` in the rows' chunks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fill_q3_k(w: &[&[u8]; 4], lanes: &mut Vec<KLaneBlock>) {
    const BYTES: usize = Q3K_BYTES;
    let nb = w[0].len() / BYTES;
    // Every entry is written below (`dmin` is unused): a reused panel is not cleared first.
    lanes.resize(nb, KLaneBlock::ZERO);
    let three = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    for (b, l) in lanes.iter_mut().enumerate() {
        let xs = [0, 1, 2, 3].map(|r| &w[r][BYTES * b..BYTES * (b + 1)]);
        let mut runs = [[_mm256_setzero_si256(); 8]; 4];
        let mut scales = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let sc = super::kquants::q3k_scales(&xs[r][96..108]).map(i16::from);
            scales[r] = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
            let hmask = _mm256_loadu_si256(xs[r].as_ptr() as *const __m256i);
            for n in 0..2 {
                let bits = _mm256_loadu_si256(xs[r][32 + 32 * n..].as_ptr() as *const __m256i);
                for j in 0..4 {
                    // Values 128n + 32j + l: bits 2j of byte l, high bit 4n + j of hmask[l].
                    let low = _mm256_and_si256(
                        _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * j as i32)),
                        three,
                    );
                    let high = _mm256_and_si256(
                        _mm256_slli_epi16::<2>(_mm256_srl_epi16(
                            hmask,
                            _mm_cvtsi32_si128((4 * n + j) as i32),
                        )),
                        four,
                    );
                    runs[r][4 * n + j] = _mm256_or_si256(low, high);
                }
            }
        }
        interleave(l, &runs, &scales, &[_mm256_setzero_si256(); 4]);
        _mm512_store_ps(l.d.as_mut_ptr(), spread_rows(f16x4(xs, 108)));
    }
}

/// `QN` quads of tokens from `quad` on against laid-out Q6_K weights: per 16-value group, a
/// chain of four `vpdpbusd` of the unsigned quants (0..=63; the sum does not fit an i16)
/// times the group's scale with one `vpmulld`; the block sums times the scales in pairs
/// (`vpdpwssd`) remove the offset of 32 at the end.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_quads<const QN: usize>(
    panel: &TilePanel,
    nb: usize,
    quad: usize,
    out: &mut [[f32; 4]],
) {
    let mut acc = [_mm512_setzero_ps(); QN];
    for (b, wb) in panel.klanes.iter().enumerate().take(nb) {
        let ab: [&KLaneActs; QN] = std::array::from_fn(|k| &panel.klane_acts[(quad + k) * nb + b]);
        let mut isum = [_mm512_setzero_si512(); QN];
        let mut offset = [_mm512_setzero_si512(); QN];
        for p in 0..8 {
            let pair = load(&wb.scales[p]);
            // The pair's two scales, sign-extended from the i16 halves.
            let sc = [
                _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(pair)),
                _mm512_srai_epi32::<16>(pair),
            ];
            for (h, sc) in sc.iter().enumerate() {
                let mut g = [_mm512_setzero_si512(); QN];
                for i in 0..4 {
                    let step = 8 * p + 4 * h + i;
                    let q = load(&wb.q[step]);
                    for k in 0..QN {
                        g[k] = _mm512_dpbusd_epi32(g[k], q, bcast(&ab[k].y[step]));
                    }
                }
                for k in 0..QN {
                    isum[k] = _mm512_add_epi32(isum[k], _mm512_mullo_epi32(g[k], *sc));
                }
            }
            for k in 0..QN {
                offset[k] = _mm512_dpwssd_epi32(offset[k], bcast(&ab[k].bsums[p]), pair);
            }
        }
        tiled_step::<QN, 5>(&mut acc, &isum, &offset, wb, &ab);
    }
    store_quads(&acc, quad, out);
}

/// Lays four Q6_K rows out as [`KLaneBlock`]s: per block, each row's 256 quants (0..=63,
/// without their offset of 32) in value order and its sixteen signed scales as i16 pairs,
/// each dword repeated across its row's chunk; `d` in the rows' chunks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fill_q6_k(w: &[&[u8]; 4], lanes: &mut Vec<KLaneBlock>) {
    const BYTES: usize = Q6K_BYTES;
    let nb = w[0].len() / BYTES;
    // Every entry is written below (`mins` and `dmin` are unused): a reused panel is not
    // cleared first.
    lanes.resize(nb, KLaneBlock::ZERO);
    let low = _mm256_set1_epi8(0x0f);
    let three = _mm256_set1_epi8(3);
    for (b, l) in lanes.iter_mut().enumerate() {
        let xs = [0, 1, 2, 3].map(|r| &w[r][BYTES * b..BYTES * (b + 1)]);
        let mut runs = [[_mm256_setzero_si256(); 8]; 4];
        let mut scales = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let x = xs[r];
            scales[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(x[192..].as_ptr() as *const __m128i));
            for h in 0..2 {
                // Values 128h + 32j + l: nibble j / 2 of ql[64h + 32 (j % 2) + l], bits 2j
                // of qh[32h + l] above it.
                let ql = [
                    _mm256_loadu_si256(x[64 * h..].as_ptr() as *const __m256i),
                    _mm256_loadu_si256(x[64 * h + 32..].as_ptr() as *const __m256i),
                ];
                let qh = _mm256_loadu_si256(x[128 + 32 * h..].as_ptr() as *const __m256i);
                for j in 0..4 {
                    let nib = _mm256_and_si256(
                        _mm256_srl_epi16(ql[j % 2], _mm_cvtsi32_si128(4 * (j / 2) as i32)),
                        low,
                    );
                    let high = _mm256_and_si256(
                        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)),
                        three,
                    );
                    runs[r][4 * h + j] = _mm256_or_si256(nib, _mm256_slli_epi16::<4>(high));
                }
            }
        }
        interleave(l, &runs, &scales, &[_mm256_setzero_si256(); 4]);
        _mm512_store_ps(l.d.as_mut_ptr(), spread_rows(f16x4(xs, 208)));
    }
}

/// One block of the tiled order for each quad: the integer dot `isum - (offset << SHIFT)`
/// (the quants' offset through the block sums) times the rows' `d`, then one FMA by the
/// tokens' scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn tiled_step<const QN: usize, const SHIFT: u32>(
    acc: &mut [__m512; QN],
    isum: &[__m512i; QN],
    offset: &[__m512i; QN],
    wb: &KLaneBlock,
    ab: &[&KLaneActs; QN],
) {
    let dw = _mm512_load_ps(wb.d.as_ptr());
    for k in 0..QN {
        let s = _mm512_sub_epi32(isum[k], _mm512_slli_epi32::<SHIFT>(offset[k]));
        let r = _mm512_mul_ps(_mm512_cvtepi32_ps(s), dw);
        let da = _mm512_broadcast_f32x4(_mm_loadu_ps(ab[k].d.as_ptr()));
        acc[k] = _mm512_fmadd_ps(r, da, acc[k]);
    }
}

/// Writes quad `quad + k`'s sixteen outputs (lane `4r + t`) to `out[4 (quad + k) + t][r]`,
/// leaving out the padding tokens past the batch.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn store_quads<const QN: usize>(
    acc: &[__m512; QN],
    quad: usize,
    out: &mut [[f32; 4]],
) {
    // Lane 4r + t to lane 4t + r: each token's four rows side by side.
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (k, acc) in acc.iter().enumerate() {
        let mut o = [0f32; 16];
        _mm512_storeu_ps(o.as_mut_ptr(), _mm512_permutexvar_ps(idx, *acc));
        for t in 0..4 {
            if let Some(dst) = out.get_mut(4 * (quad + k) + t) {
                dst.copy_from_slice(&o[4 * t..4 * t + 4]);
            }
        }
    }
}

/// The f16 at byte `at` of four blocks as four f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn f16x4(xs: [&[u8]; 4], at: usize) -> __m128 {
    let h = |r: usize| i16::from_le_bytes([xs[r][at], xs[r][at + 1]]);
    _mm_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), 0, 0, 0, 0))
}

/// Lays the batch's Q8_K activations out as [`KLaneActs`], once per batch: a later call
/// with the same rows (same address and count) keeps them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fill_acts(a: &[&[u8]], nb: usize, panel: &mut TilePanel) {
    let key = (a.first().map_or(0, |r| r.as_ptr() as usize), a.len());
    let len = a.len().div_ceil(4) * nb;
    if panel.klane_key == key && panel.klane_acts.len() == len {
        return;
    }
    // Every entry is written below but the padding tokens of the last quad, which are
    // zeroed: a reused panel is not cleared first.
    panel.klane_acts.resize(len, KLaneActs::ZERO);
    if !a.len().is_multiple_of(4) {
        for e in &mut panel.klane_acts[(a.len() / 4) * nb..] {
            for t in a.len() % 4..4 {
                for y in e.y.iter_mut().chain(e.bsums.iter_mut()) {
                    y[4 * t..4 * t + 4].fill(0);
                }
                e.d[t] = 0.0;
            }
        }
    }
    for (t, row) in a.iter().enumerate() {
        let (quad, tt) = (t / 4, t % 4);
        for (b, y) in row.chunks_exact(Q8K_BYTES).take(nb).enumerate() {
            let e = &mut panel.klane_acts[quad * nb + b];
            for (g, dst) in e.y.iter_mut().enumerate() {
                dst[4 * tt..4 * tt + 4].copy_from_slice(&y[4 + 4 * g..8 + 4 * g]);
            }
            for (j, dst) in e.bsums.iter_mut().enumerate() {
                dst[4 * tt..4 * tt + 4].copy_from_slice(&y[260 + 4 * j..264 + 4 * j]);
            }
            e.d[tt] = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        }
    }
    panel.klane_key = key;
}

/// Quads of tokens against a laid-out panel (`panel`, blocks per row, first quad, outputs).
type QuadsFn = unsafe fn(&TilePanel, usize, usize, &mut [[f32; 4]]);

/// Lays out four weight rows (`KLaneBlock`s).
type FillFn = unsafe fn(&[&[u8]; 4], &mut Vec<KLaneBlock>);

/// A lane tile: four rows of `bytes`-byte blocks laid out by `fill`, the batch's Q8_K
/// activations by [`fill_acts`], then the quads of tokens: whole quads two at a time through
/// `quads[0]` and one through `quads[1]`; in a repacked order (`repacked`) the partial last
/// quad takes `quads[2]` (llama.cpp's gemv after its gemm), in the tiled order every quad
/// is alike (the partial one through `quads[1]`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut TilePanel,
    bytes: usize,
    fill: FillFn,
    repacked: bool,
    quads: [QuadsFn; 3],
) {
    let nb = w[0].len() / bytes;
    fill(w, &mut panel.klanes);
    fill_acts(a, nb, panel);
    let n = a.len().min(out.len());
    let whole = if repacked { n / 4 } else { n.div_ceil(4) };
    let out = &mut out[..n];
    let mut quad = 0;
    while quad + 2 <= whole {
        quads[0](panel, nb, quad, out);
        quad += 2;
    }
    if quad < whole {
        quads[1](panel, nb, quad, out);
        quad += 1;
    }
    if quad * 4 < n {
        quads[2](panel, nb, quad, out);
    }
}

/// The tile entry points, one per format and order.
macro_rules! tiles {
    ($($(#[$doc:meta])* $name:ident => $bytes:ident, $fill:ident, $repacked:literal, [$($q:expr),*];)*) => {
        $(
            $(#[$doc])*
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
            pub(crate) unsafe fn $name(
                w: &[&[u8]; 4],
                a: &[&[u8]],
                out: &mut [[f32; 4]],
                panel: &mut TilePanel,
            ) {
                tile(w, a, out, panel, $bytes, $fill, $repacked, [$($q),*])
            }
        )*
    };
}
tiles! {
    /// Four repacked Q2_K weight rows · every Q8_K activation row of a batch, in llama.cpp's
    /// repacked order (`korder::repacked`, step 128 for whole groups of four tokens, 256 for
    /// the tokens after the last whole group), one output per lane.
    tile_repacked_q2_k_zmm => Q2K_BYTES, fill_q2_k, true,
        [q2k_quads::<2, 2>, q2k_quads::<1, 2>, q2k_quads::<1, 1>];
    /// Four repacked Q4_K weight rows · every Q8_K activation row of a batch, in llama.cpp's
    /// repacked order (`korder::repacked`, step 64 for whole groups of four tokens, 256 for
    /// the tokens after the last whole group), one output per lane.
    tile_repacked_q4_k_zmm => Q4K_BYTES, fill_q4_k, true,
        [q4k_quads::<2, 4>, q4k_quads::<1, 4>, q4k_quads::<1, 1>];
    /// Four Q3_K weight rows · every Q8_K activation row of a batch, in llama.cpp's tiled
    /// order (`korder::tiled`), one output per lane.
    tile_q3_k_zmm => Q3K_BYTES, fill_q3_k, false,
        [q3k_quads::<2>, q3k_quads::<1>, q3k_quads::<1>];
    /// Four Q6_K weight rows · every Q8_K activation row of a batch, in llama.cpp's tiled
    /// order (`korder::tiled`), one output per lane.
    tile_q6_k_zmm => Q6K_BYTES, fill_q6_k, false,
        [q6k_quads::<2>, q6k_quads::<1>, q6k_quads::<1>];
}
