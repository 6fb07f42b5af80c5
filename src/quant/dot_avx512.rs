//! AVX-512 VNNI kernels for the 32-value formats: the four-row (generation) kernel keeps
//! two weight rows per 512-bit register, so that one `vpdpbusd`, one conversion and one
//! FMA serve two outputs. The tile (prompt) kernel comes in two forms: one output per
//! 256-bit register, the 32 registers AVX-512 gives sharing each decoded block among 20
//! outputs (the faster where 512-bit operations run as two halves, Zen 4), and two outputs
//! per 512-bit register, eight tokens a group (the faster where they run at full width:
//! on an Intel Xeon, 2.25 against 3.24 µs for four Q8_0 rows of 576 values and 64 tokens).
//!
//! Each output keeps its own eight f32 lanes and receives exactly the operations the
//! single-row AVX2 kernel performs on its accumulator: the same integer block sums, the
//! same `dx * dy` product, the same FMA, the same final reduction. Results therefore equal
//! `dot_avx2`'s bit for bit; only the number of instructions changes.
//!
//! Every function here requires AVX-512F, BW, VL and VNNI (plus AVX2, FMA and F16C);
//! `quant::kernels` hands them out only after runtime detection (`quant::cpu`).

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::dot_avx2::{
    Acts, LEGACY, PanelAux, f16_at, fill_acts, fill_lane_acts, fill_panel, hsum, lane_tile,
    legacy_layout, legacy_quants, legacy_tile, load_bytes, nibbles32, out4, prefetch_ahead,
    q8_0_sum, scale_products,
};
use super::format::GgmlType;
use super::lanes::{spread_rows, spread_steps, store_quads};
use super::panel::{ActQuants, LaneActs, LaneBlock, PanelBlock, TilePanel};

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

/// Two 32-byte vectors as one 64-byte vector, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `acc + (the eight i32 sums of four unsigned × signed byte products)`: `vpdpbusd` on
/// 256 bits (AVX-512 VL), exact.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dpbusd_vl(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

// Four legacy-format weight rows · every activation row of a batch: AVX2's tile
// (`dot_avx2::legacy_tile`) with `vpdpbusd`, the activations offset by 128 for signed
// formats, and five tokens a group. Each output keeps its own eight f32 lanes in a 256-bit
// register, as the AVX2 kernel does: the 20 accumulators and the panel's eight vectors fit
// AVX-512's 32 registers, and the FMA's load broadcasts each stored scale product. (On
// Zen 4, which runs a 512-bit operation as two 256-bit halves, two outputs per 512-bit
// register ran slower than one per 256-bit register: 3.6 against 2.6 ns per eight outputs
// and block; spreading the scale products over 512-bit registers took a full-width product
// per two outputs on the pipes the `vpdpbusd`s and FMAs need.)
legacy_tile!(
    tile_legacy,
    group,
    "avx512f,avx512vl,avx512vnni,avx2,fma,f16c",
    dpbusd_vl,
    true,
    5
);

/// Four legacy-format weight rows · every activation row of a batch with two rows per
/// 512-bit register, for CPUs that run 512-bit operations at full width: the same panel and
/// activations as [`tile_legacy`], eight tokens a group (16 accumulators), and per token and
/// pair of rows one `vpdpbusd`, one scale product (`dx` of both rows times the token's
/// `dy`), one conversion and one FMA for two outputs. Each output still keeps its own eight
/// f32 lanes (a register's low half is row `2h`, its high half row `2h + 1`) and receives
/// the single-row kernel's operations, so results equal [`tile_legacy`]'s bit for bit.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_pairs<const T: u8>(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut TilePanel,
) {
    let (_, ab, at, has_min) = legacy_layout(LEGACY[T as usize]);
    fill_acts(panel, a, ab, at, !has_min);
    fill_panel::<T>(w, &mut panel.legacy, PanelAux::Offset);
    let TilePanel {
        legacy,
        act_scales,
        act_quants,
        ..
    } = panel;
    let n = a.len().min(out.len());
    let stride = act_quants.len() / legacy.len().max(1);
    let mut t = 0;
    macro_rules! group {
        ($n:literal) => {{
            group_pairs::<T, $n>(
                legacy,
                &act_quants[t..],
                &act_scales[t..],
                stride,
                &mut out[t..t + $n],
            );
        }};
    }
    while t + 8 <= n {
        group!(8);
        t += 8;
    }
    if n - t >= 4 {
        group!(4);
        t += 4;
    }
    if n - t >= 2 {
        group!(2);
        t += 2;
    }
    if n - t == 1 {
        group!(1);
    }
}

/// `RT` tokens (their quants and scales from the group's first token on, block-major with
/// `stride`, [`fill_acts`]) against a decoded panel, two rows per register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group_pairs<const T: u8, const RT: usize>(
    panel: &[PanelBlock],
    quants: &[ActQuants],
    scales: &[[f32; 2]],
    stride: usize,
    out: &mut [[f32; 4]],
) {
    let (_, _, _, has_min) = legacy_layout(LEGACY[T as usize]);
    let zero = _mm512_setzero_si512();
    let mut acc = [[_mm512_setzero_ps(); 2]; RT];
    let mut mins = [_mm_setzero_ps(); RT];
    for (b, p) in panel.iter().enumerate() {
        // Rows 2h and 2h + 1 lie side by side in the panel: one 64-byte load a pair.
        let q = [0, 2].map(|r| _mm512_loadu_si512(p.q[r].as_ptr() as *const __m512i));
        let aux = [0, 2].map(|r| _mm512_loadu_si512(p.aux[r].as_ptr() as *const __m512i));
        let d4 = _mm_loadu_ps(p.d.as_ptr());
        let dx = [spread_pair(d4, 0), spread_pair(d4, 2)];
        let at = b * stride;
        let (ys, scales) = (&quants[at..at + RT], &scales[at..at + RT]);
        for t in 0..RT {
            let y = _mm512_broadcast_i64x4(load_bytes(&ys[t].0));
            let [dy, sy] = scales[t];
            let dy = _mm512_set1_ps(dy);
            for h in 0..2 {
                let isum = if has_min {
                    _mm512_dpbusd_epi32(zero, q[h], y)
                } else {
                    _mm512_dpbusd_epi32(aux[h], y, q[h])
                };
                let scale = _mm512_mul_ps(dx[h], dy);
                acc[t][h] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[t][h]);
            }
            if has_min {
                mins[t] = _mm_fmadd_ps(_mm_loadu_ps(p.m.as_ptr()), _mm_set1_ps(sy), mins[t]);
            }
        }
    }
    for t in 0..RT {
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

lane_tile!(
    /// Four repacked Q4_0 weight rows · every Q8_0 activation row of a batch, in llama.cpp's
    /// repacked order (`korder::repacked_q4_0`): per block, the exact integer dot, then one FMA
    /// by `dx * dy` into each output's accumulator.
    ///
    /// One output per lane, as llama.cpp's repacked gemm has it: the rows are laid out once
    /// per tile call ([`LaneBlock`], row `r` in 128-bit chunk `r`, each four-quant step
    /// repeated across the chunk) and the batch's activations once per batch ([`LaneActs`],
    /// four tokens' steps side by side, broadcast to every chunk as they are loaded), so that
    /// eight `vpdpbusd` per block leave the 16 outputs of four rows and four tokens each in its
    /// own lane, with no horizontal sum; one conversion, one scale product and one FMA then
    /// serve all 16. The weights' panel stays in L1 while the quads of tokens stream past it,
    /// 16 bytes per step each. The integer sums are exact, so each output receives the same
    /// float operations as the single-row order, bit for bit.
    tile_repacked_q4_0,
    "avx512f,avx512bw,avx512vnni,avx2,fma,f16c",
    fill_lanes_q4_0,
    lane_quads
);

/// `QN` quads of tokens from `quad` on against a laid-out panel: the weights' loads shared
/// by the quads, each quad's sum split into two chains of four `vpdpbusd` (the integer sums
/// are exact, so how they are grouped changes nothing).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn lane_quads<const QN: usize>(
    panel: &TilePanel,
    nb: usize,
    quad: usize,
    out: &mut [[f32; 4]],
) {
    let mut acc = [_mm512_setzero_ps(); QN];
    for (b, wb) in panel.lanes.iter().enumerate() {
        let ab: [&LaneActs; QN] = std::array::from_fn(|k| &panel.lane_acts[(quad + k) * nb + b]);
        let mut lo = [_mm512_setzero_si512(); QN];
        let mut hi = [_mm512_setzero_si512(); QN];
        for k in 0..QN {
            lo[k] = _mm512_broadcast_i32x4(_mm_load_si128(ab[k].corr.as_ptr() as *const __m128i));
        }
        for g in 0..4 {
            let q_lo = _mm512_load_si512(wb.q[g].as_ptr() as *const __m512i);
            let q_hi = _mm512_load_si512(wb.q[g + 4].as_ptr() as *const __m512i);
            for k in 0..QN {
                let y_lo =
                    _mm512_broadcast_i32x4(_mm_load_si128(ab[k].y[g].as_ptr() as *const __m128i));
                let y_hi = _mm512_broadcast_i32x4(_mm_load_si128(
                    ab[k].y[g + 4].as_ptr() as *const __m128i
                ));
                lo[k] = _mm512_dpbusd_epi32(lo[k], q_lo, y_lo);
                hi[k] = _mm512_dpbusd_epi32(hi[k], q_hi, y_hi);
            }
        }
        let dw = _mm512_load_ps(wb.d.as_ptr());
        for k in 0..QN {
            let dy = _mm512_broadcast_f32x4(_mm_load_ps(ab[k].d.as_ptr()));
            let scale = _mm512_mul_ps(dw, dy);
            let isum = _mm512_add_epi32(lo[k], hi[k]);
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[k]);
        }
    }
    store_quads(&acc, quad, out);
}

/// Lays four Q4_0 rows out for one output per lane ([`LaneBlock`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fill_lanes_q4_0(w: &[&[u8]; 4], lanes: &mut Vec<LaneBlock>) {
    const WB: usize = GgmlType::Q4_0.block_bytes();
    let nb = w[0].len() / WB;
    // Every entry is written below: a reused panel is not cleared first.
    lanes.resize(nb, LaneBlock::ZERO);
    for (b, l) in lanes.iter_mut().enumerate() {
        let at = WB * b..WB * (b + 1);
        let xs = [
            &w[0][at.clone()],
            &w[1][at.clone()],
            &w[2][at.clone()],
            &w[3][at],
        ];
        // Each row's 32 nibbles as bytes: dword g holds quants 4g..4g+4.
        let q = [
            nibbles32(xs[0][2..18].as_ptr()),
            nibbles32(xs[1][2..18].as_ptr()),
            nibbles32(xs[2][2..18].as_ptr()),
            nibbles32(xs[3][2..18].as_ptr()),
        ];
        // Step g: dword g of each row repeated across the row's chunk.
        let steps = spread_steps(join(q[0], q[1]), join(q[2], q[3]));
        for (dst, v) in l.q.iter_mut().zip(steps) {
            _mm512_store_si512(dst.as_mut_ptr() as *mut __m512i, v);
        }
        _mm512_store_ps(l.d.as_mut_ptr(), spread_rows(f16x4(xs, 0)));
    }
}

/// Block `$b` of four Q4_0 rows · a Q8_0 row, exact: row `r`'s sum spread over the four
/// lanes of chunk `r`. The rows' 16 packed bytes fill one register (row `r` in chunk `r`);
/// its low nibbles multiply the first 16 activations and its high nibbles the last 16,
/// each broadcast to every chunk (the unsigned nibbles times the signed activations), and
/// `8 * Σy` in the same lanes comes off. A macro, not a function: rustc leaves a
/// target-feature function this size called five times out of line, spilling its vectors
/// through the stack.
macro_rules! q4_0_block4 {
    ($w:expr, $a:expr, $b:expr) => {{
        const WB: usize = GgmlType::Q4_0.block_bytes();
        const AB: usize = GgmlType::Q8_0.block_bytes();
        let (w, b): (&[&[u8]; 4], usize) = ($w, $b);
        let y = &$a[AB * b..AB * (b + 1)];
        let y_lo = _mm512_broadcast_i32x4(_mm_loadu_si128(y[2..].as_ptr() as *const __m128i));
        let y_hi = _mm512_broadcast_i32x4(_mm_loadu_si128(y[18..].as_ptr() as *const __m128i));
        let eight = _mm512_set1_epi8(8);
        let offset = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, y_lo),
            eight,
            y_hi,
        );
        let at = WB * b + 2;
        let chunk = |r: usize| w[r][at..at + 16].as_ptr() as *const __m128i;
        let q = _mm512_inserti32x4::<3>(
            _mm512_inserti32x4::<2>(
                _mm512_inserti32x4::<1>(
                    _mm512_castsi128_si512(_mm_loadu_si128(chunk(0))),
                    _mm_loadu_si128(chunk(1)),
                ),
                _mm_loadu_si128(chunk(2)),
            ),
            _mm_loadu_si128(chunk(3)),
        );
        let low = _mm512_set1_epi8(0x0f);
        let lo = _mm512_and_si512(q, low);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
        let dot = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, y_lo),
            hi,
            y_hi,
        );
        _mm512_sub_epi32(dot, offset)
    }};
}

/// Block `$b`'s `dx * dy` for the four rows.
macro_rules! q4_0_scales4 {
    ($w:expr, $a:expr, $b:expr) => {{
        const WB: usize = GgmlType::Q4_0.block_bytes();
        const AB: usize = GgmlType::Q8_0.block_bytes();
        let (w, at): (&[&[u8]; 4], usize) = ($w, WB * $b);
        let x = [&w[0][at..], &w[1][at..], &w[2][at..], &w[3][at..]];
        _mm_mul_ps(f16x4(x, 0), _mm_set1_ps(f16_at(&$a[AB * $b..])))
    }};
}

/// Word index vectors for `_mm512_permutex2var_epi16` gathering the f16 scales of four
/// rows' (`rows` 0-1 or 2-3: `ROWS` is 0 or 2) or of the activations' (`ROWS` 4) blocks
/// `b..b + 4`: word `4r + k` (row `r`, block `k`) picks word `9k` of a row's bytes from
/// block `b` (18-byte blocks; the odd row from the second source) or `17k` of the
/// activations' (34-byte blocks). Other words are 0.
const fn scale_words<const ROWS: usize>() -> [i16; 32] {
    let mut v = [0i16; 32];
    let mut i = 0;
    while i < 16 {
        let (r, k) = (i / 4, i % 4);
        v[i] = if ROWS == 4 {
            17 * k as i16
        } else if r == ROWS || r == ROWS + 1 {
            (9 * k + 32 * (r - ROWS)) as i16
        } else {
            0
        };
        i += 1;
    }
    v
}

/// Thirty-two i16 as one vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn words(v: &[i16; 32]) -> __m512i {
    _mm512_loadu_si512(v.as_ptr() as *const __m512i)
}

/// Four repacked Q4_0 weight rows · one Q8_0 activation row (single-token generation) in
/// llama.cpp's repacked order: per block, the exact integer dot, then one FMA by `dx * dy`
/// into each row's accumulator, block after block.
///
/// The unsigned nibbles multiply the signed activations (`vpdpbusd`, the four rows' blocks
/// in one register, row `r` in chunk `r`), less `8 * Σy` (once per block for all rows).
/// Four blocks' sums are reduced together: one in-chunk transpose adds them into lane
/// `4r + b`; the sixteen scale products come from two word gathers and one conversion each
/// for the weights and the activations; the FMAs then run block by block over the four
/// rows, as the single-row order does.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn repacked_rows4_q4_0_zmm(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
    const WB: usize = GgmlType::Q4_0.block_bytes();
    const AB: usize = GgmlType::Q8_0.block_bytes();
    let nb = (w[0].len() / WB).min(a.len() / AB);
    let mut acc = _mm_setzero_ps();
    // Word `4r + k` of the scale gathers: the f16 `d` of row `r`'s block `b + k` (word `9k`
    // of a row's 64 bytes from block `b`; rows 1 and 3 from the second source) and of the
    // activations' block `b + k` (word `17k` of their 128 bytes).
    const DX01: [i16; 32] = scale_words::<0>();
    const DX23: [i16; 32] = scale_words::<2>();
    const DY: [i16; 32] = scale_words::<4>();
    let (dx01, dx23, dy) = (words(&DX01), words(&DX23), words(&DY));
    let mut b = 0;
    while b + 4 <= nb {
        let at = WB * b;
        let xs = [&w[0][at..], &w[1][at..], &w[2][at..], &w[3][at..]];
        prefetch_ahead(xs, w[0].len(), 4 * WB);
        let s = [
            q4_0_block4!(w, a, b),
            q4_0_block4!(w, a, b + 1),
            q4_0_block4!(w, a, b + 2),
            q4_0_block4!(w, a, b + 3),
        ];
        let u01 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(s[0], s[1]),
            _mm512_unpackhi_epi32(s[0], s[1]),
        );
        let u23 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(s[2], s[3]),
            _mm512_unpackhi_epi32(s[2], s[3]),
        );
        // Lane 4r + k: row r's sum of block b + k.
        let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(
            _mm512_unpacklo_epi64(u01, u23),
            _mm512_unpackhi_epi64(u01, u23),
        ));
        // Lane 4r + k: dx of row r's block b + k times dy of block b + k, the same product
        // the single-row order forms. The four weight blocks' scales lie in the first 56 of
        // their 72 bytes, the activations' in the first 104 of their 136: each 64-byte load
        // stays inside the four blocks.
        let x = [
            _mm512_loadu_si512(xs[0].as_ptr() as *const __m512i),
            _mm512_loadu_si512(xs[1].as_ptr() as *const __m512i),
            _mm512_loadu_si512(xs[2].as_ptr() as *const __m512i),
            _mm512_loadu_si512(xs[3].as_ptr() as *const __m512i),
        ];
        let dxw = _mm512_mask_blend_epi16(
            0xFF00,
            _mm512_permutex2var_epi16(x[0], dx01, x[1]),
            _mm512_permutex2var_epi16(x[2], dx23, x[3]),
        );
        let ay = &a[AB * b..];
        let dyw = _mm512_permutex2var_epi16(
            _mm512_loadu_si512(ay.as_ptr() as *const __m512i),
            dy,
            _mm512_loadu_si512(ay[64..].as_ptr() as *const __m512i),
        );
        let scale = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm512_castsi512_si256(dxw)),
            _mm512_cvtph_ps(_mm512_castsi512_si256(dyw)),
        );
        for k in 0..4i32 {
            let idx = _mm512_add_epi32(
                _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
                _mm512_set1_epi32(k),
            );
            let x = _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, isum));
            let d = _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, scale));
            acc = _mm_fmadd_ps(x, d, acc);
        }
        b += 4;
    }
    while b < nb {
        let s = q4_0_block4!(w, a, b);
        let s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0x4e>(s));
        let s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0xb1>(s));
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        let x = _mm512_castps512_ps128(_mm512_cvtepi32_ps(_mm512_permutexvar_epi32(idx, s)));
        acc = _mm_fmadd_ps(x, q4_0_scales4!(w, a, b), acc);
        b += 1;
    }
    out4(acc)
}

/// Sixteen interleaved Q4_0 weight rows ([`interleave`](super::interleave)) · one Q8_0
/// activation row (single-token generation) in llama.cpp's repacked order, one output per
/// lane as its gemv has it: per block, four loads bring the sixteen rows' packed bytes,
/// eight `vpdpbusd` (the unsigned nibbles times the signed activations' dword broadcast to
/// every lane) leave each row's exact integer dot in its lane, less `8 * Σy` (the nibbles'
/// offset of 8, once per block for all rows); one conversion, one scale product `dx * dy`
/// and one FMA then serve all sixteen, each lane receiving the single-row order's
/// operations block after block.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn rows16_q4_0_zmm(w: &[u8], a: &[u8]) -> [f32; 16] {
    use super::interleave::Q4_0X16_BYTES;
    const AB: usize = GgmlType::Q8_0.block_bytes();
    let low = _mm512_set1_epi8(0x0f);
    let mut acc = _mm512_setzero_ps();
    for (x, y) in w.chunks_exact(Q4_0X16_BYTES).zip(a.chunks_exact(AB)) {
        let sum_y = q8_0_sum(y);
        let dword = |at: usize| i32::from_le_bytes([y[at], y[at + 1], y[at + 2], y[at + 3]]);
        let mut lo = _mm512_set1_epi32(-8 * sum_y);
        let mut hi = _mm512_setzero_si512();
        for g in 0..4 {
            let q = _mm512_loadu_si512(x[32 + 64 * g..].as_ptr() as *const __m512i);
            lo = _mm512_dpbusd_epi32(
                lo,
                _mm512_and_si512(q, low),
                _mm512_set1_epi32(dword(2 + 4 * g)),
            );
            hi = _mm512_dpbusd_epi32(
                hi,
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), low),
                _mm512_set1_epi32(dword(18 + 4 * g)),
            );
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr() as *const __m256i));
        let scale = _mm512_mul_ps(dx, _mm512_set1_ps(f16_at(y)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)), scale, acc);
    }
    let mut o = [0f32; 16];
    _mm512_storeu_ps(o.as_mut_ptr(), acc);
    o
}

/// Sixteen interleaved Q8_0 weight rows ([`interleave`](super::interleave)) · one Q8_0
/// activation row (single-token generation) in llama.cpp's vec-dot order: each row keeps
/// the single-row kernel's eight f32 lanes (two rows per register, eight registers), lane
/// `l` receiving `fma(dx * dy, f32(Σ of the block's quants 4l..4l+4), acc)` block after
/// block and the same final reduction. The quants are stored offset by 128 (unsigned, as
/// `vpdpbusd` takes them), so each register's integer sums start from `-128 Σy` of the
/// lane's four activations: one `vpdpbusd` per block for all sixteen rows, then one
/// `vpdpbusd`, one conversion, one scale permute and one FMA per pair of rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn rows16_q8_0_zmm(w: &[u8], a: &[u8]) -> [f32; 16] {
    use super::interleave::Q8_0X16_BYTES;
    const AB: usize = GgmlType::Q8_0.block_bytes();
    let offset = _mm512_set1_epi8(-128);
    // Register k's lanes 0..8 take row 2k's scale, lanes 8..16 row 2k + 1's.
    let pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let idx: [__m512i; 8] =
        std::array::from_fn(|k| _mm512_add_epi32(pair, _mm512_set1_epi32(2 * k as i32)));
    let mut acc = [_mm512_setzero_ps(); 8];
    for (x, y) in w.chunks_exact(Q8_0X16_BYTES).zip(a.chunks_exact(AB)) {
        let qy = _mm512_broadcast_i64x4(_mm256_loadu_si256(y[2..].as_ptr() as *const __m256i));
        let start = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, qy),
        );
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr() as *const __m256i));
        let scale = _mm512_mul_ps(dx, _mm512_set1_ps(f16_at(y)));
        for k in 0..8 {
            let q = _mm512_loadu_si512(x[32 + 64 * k..].as_ptr() as *const __m512i);
            let isum = _mm512_dpbusd_epi32(start, q, qy);
            let d = _mm512_permutexvar_ps(idx[k], scale);
            acc[k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc[k]);
        }
    }
    let mut o = [0f32; 16];
    for k in 0..8 {
        let [lo, hi] = halves(acc[k]);
        o[2 * k] = hsum(lo);
        o[2 * k + 1] = hsum(hi);
    }
    o
}

/// Entry point of [`tile_repacked_q4_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn tile_repacked_q4_0_zmm(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut TilePanel,
) {
    tile_repacked_q4_0(w, a, out, panel)
}

/// The entry points, one tile and one four-row kernel per format (by [`LEGACY`] index).
macro_rules! entries {
    ($($t:ident, $p:ident, $r:ident => $k:literal;)*) => {
        $(
            #[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
            pub(crate) unsafe fn $t(
                w: &[&[u8]; 4],
                a: &[&[u8]],
                out: &mut [[f32; 4]],
                panel: &mut TilePanel,
            ) {
                tile_legacy::<$k>(w, a, out, panel)
            }

            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            pub(crate) unsafe fn $p(
                w: &[&[u8]; 4],
                a: &[&[u8]],
                out: &mut [[f32; 4]],
                panel: &mut TilePanel,
            ) {
                tile_pairs::<$k>(w, a, out, panel)
            }

            #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
            pub(crate) unsafe fn $r(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
                rows4_legacy::<$k>(w, a)
            }
        )*
    };
}
entries! {
    tile_q4_0_zmm, tile_q4_0_pairs, rows4_q4_0_zmm => 0;
    tile_q5_0_zmm, tile_q5_0_pairs, rows4_q5_0_zmm => 1;
    tile_q5_1_zmm, tile_q5_1_pairs, rows4_q5_1_zmm => 2;
    tile_q8_0_zmm, tile_q8_0_pairs, rows4_q8_0_zmm => 3;
    tile_q4_1_zmm, tile_q4_1_pairs, rows4_q4_1_zmm => 4;
}
