//! AVX2 + FMA fused dot products, one per weight format, each equal to its scalar twin in
//! `dot_scalar` up to float summation order (property-tested in `quant::tests`).
//!
//! Every function here requires AVX2 and FMA; `quant::dot` hands them out only after
//! runtime detection. Callers pass whole blocks: `a` holds at least as many activation
//! blocks as `w` holds weight blocks.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::format::GgmlType;
use super::kquants::{q3k_scales, q4k_scales_mins};
use super::panel::{ActQuants, ActWords, LaneActs, LaneBlock, PanelBlock, TilePanel};

/// Block sizes, read from the format table ([`super::format::FORMATS`]).
const Q4_0_BYTES: usize = GgmlType::Q4_0.block_bytes();
const Q4_1_BYTES: usize = GgmlType::Q4_1.block_bytes();
const Q5_0_BYTES: usize = GgmlType::Q5_0.block_bytes();
const Q5_1_BYTES: usize = GgmlType::Q5_1.block_bytes();
const Q8_0_BYTES: usize = GgmlType::Q8_0.block_bytes();
const Q8_1_BYTES: usize = GgmlType::Q8_1.block_bytes();
const Q8_K_BYTES: usize = GgmlType::Q8_K.block_bytes();

/// An f16 at `b[0..2]` as f32, by the F16C instruction (the portable path is a call).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_at(b: &[u8]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        u16::from_le_bytes([b[0], b[1]]) as i32,
    )))
}

#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// 16 bytes of packed nibbles to 32 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles32(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// 32 bits to 32 bytes, 0xff where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits32(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Sums of adjacent products of unsigned `x` and signed `y` bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_us(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// Sums of adjacent products of signed `x` and signed `y` bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_ss(x: __m256i, y: __m256i) -> __m256i {
    madd_us(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: &[u8]) -> __m256i {
    debug_assert!(p.len() >= 32);
    _mm256_loadu_si256(p.as_ptr() as *const __m256i)
}

/// Q4_0 weights · Q8_0 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let qx = _mm256_sub_epi8(nibbles32(x[2..18].as_ptr()), _mm256_set1_epi8(8));
        let p = _mm256_cvtepi32_ps(madd_ss(qx, load(&y[2..])));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * f16_at(y)), p, acc);
    }
    hsum(acc)
}

/// Q4_1 weights · Q8_1 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        let p = _mm256_cvtepi32_ps(madd_us(nibbles32(x[4..20].as_ptr()), load(&y[4..])));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * f16_at(y)), p, acc);
        // Fused as GCC compiles llama.cpp's `summs += m * s`.
        mins = f16_at(&x[2..]).mul_add(f16_at(&y[2..]), mins);
    }
    hsum(acc) + mins
}

/// Q5_0 weights · Q8_0 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.chunks_exact(Q5_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
        // 0xf0 where the fifth bit is clear turns nibble n into the signed byte n - 16.
        let hi = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(0xf0u8 as i8));
        let qx = _mm256_or_si256(nibbles32(x[6..22].as_ptr()), hi);
        let p = _mm256_cvtepi32_ps(madd_ss(qx, load(&y[2..])));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * f16_at(y)), p, acc);
    }
    hsum(acc)
}

/// Q5_1 weights · Q8_1 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (x, y) in w.chunks_exact(Q5_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        let hi = _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(nibbles32(x[8..24].as_ptr()), hi);
        let p = _mm256_cvtepi32_ps(madd_us(qx, load(&y[4..])));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * f16_at(y)), p, acc);
        mins = f16_at(&x[2..]).mul_add(f16_at(&y[2..]), mins);
    }
    hsum(acc) + mins
}

/// Q8_0 weights · Q8_0 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.chunks_exact(Q8_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let p = _mm256_cvtepi32_ps(madd_ss(load(&x[2..]), load(&y[2..])));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x) * f16_at(y)), p, acc);
    }
    hsum(acc)
}

/// A 32-value block of a legacy format as 32 bytes, as its single-row kernel builds them
/// (signed for Q4_0, Q5_0 and Q8_0, unsigned for Q4_1 and Q5_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn legacy_quants(ty: GgmlType, x: &[u8]) -> __m256i {
    match ty {
        GgmlType::Q4_0 => _mm256_sub_epi8(nibbles32(x[2..18].as_ptr()), _mm256_set1_epi8(8)),
        GgmlType::Q5_0 => {
            let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
            let hi = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(0xf0u8 as i8));
            _mm256_or_si256(nibbles32(x[6..22].as_ptr()), hi)
        }
        GgmlType::Q8_0 => load(&x[2..]),
        GgmlType::Q4_1 => nibbles32(x[4..20].as_ptr()),
        _ => {
            let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
            let hi = _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10));
            _mm256_or_si256(nibbles32(x[8..24].as_ptr()), hi)
        }
    }
}

/// The 32-value formats of [`dot4_legacy`], [`rows4_legacy`] and the tiles, by their const
/// parameter (so each is compiled for one format, its layout constants folded in).
pub(super) const LEGACY: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_1,
];

/// (weight block bytes, activation block bytes, offset of the activation quants, whether
/// the quants are unsigned with a min) of a [`LEGACY`] format.
#[inline(always)]
pub(super) fn legacy_layout(ty: GgmlType) -> (usize, usize, usize, bool) {
    match ty {
        GgmlType::Q4_0 => (Q4_0_BYTES, Q8_0_BYTES, 2, false),
        GgmlType::Q5_0 => (Q5_0_BYTES, Q8_0_BYTES, 2, false),
        GgmlType::Q8_0 => (Q8_0_BYTES, Q8_0_BYTES, 2, false),
        GgmlType::Q4_1 => (Q4_1_BYTES, Q8_1_BYTES, 4, true),
        _ => (Q5_1_BYTES, Q8_1_BYTES, 4, true),
    }
}

/// Legacy-format weights · four activation rows, the weight block unpacked once;
/// each result equals the single-row kernel's bit for bit (same operations per row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_legacy<const T: u8>(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    let ty = LEGACY[T as usize];
    let (wb, ab, at, has_min) = legacy_layout(ty);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [0.0f32; 4];
    for (b, x) in w.chunks_exact(wb).enumerate() {
        let qx = legacy_quants(ty, x);
        let dx = f16_at(x);
        for t in 0..4 {
            let y = &a[t][ab * b..ab * (b + 1)];
            legacy_block(has_min, qx, dx, x, y, at, &mut acc[t], &mut mins[t]);
        }
    }
    finish4(&acc, &mins)
}

/// One block into one output's accumulators, exactly as the single-row kernel adds it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the block, its decoded parts and the two accumulators
unsafe fn legacy_block(
    has_min: bool,
    qx: __m256i,
    dx: f32,
    x: &[u8],
    y: &[u8],
    at: usize,
    acc: &mut __m256,
    mins: &mut f32,
) {
    let qy = load(&y[at..]);
    let m = if has_min {
        madd_us(qx, qy)
    } else {
        madd_ss(qx, qy)
    };
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16_at(y)), _mm256_cvtepi32_ps(m), *acc);
    if has_min {
        *mins = f16_at(&x[2..]).mul_add(f16_at(&y[2..]), *mins);
    }
}

/// Four outputs from their lane accumulators and min sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn finish4(acc: &[__m256; 4], mins: &[f32; 4]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for t in 0..4 {
        out[t] = hsum(acc[t]) + mins[t];
    }
    out
}

/// The f16 at byte `$at` of four blocks as four f32 lanes (written out, not a call, so that
/// it compiles inside each caller's instruction set).
macro_rules! f16x4 {
    ($xs:expr, $at:expr) => {
        _mm_cvtph_ps(_mm_setr_epi16(
            i16::from_le_bytes([$xs[0][$at], $xs[0][$at + 1]]),
            i16::from_le_bytes([$xs[1][$at], $xs[1][$at + 1]]),
            i16::from_le_bytes([$xs[2][$at], $xs[2][$at + 1]]),
            i16::from_le_bytes([$xs[3][$at], $xs[3][$at + 1]]),
            0,
            0,
            0,
            0,
        ))
    };
}

/// `dx[r] * dy` for four weight rows (`dx` four lanes, `dy` a scalar), each broadcast to a
/// whole vector: each product is the scalar kernel's.
macro_rules! row_scales {
    ($dx:expr, $dy:expr) => {{
        let d = _mm_mul_ps($dx, _mm_set1_ps($dy));
        let d = _mm256_set_m128(d, d);
        [
            _mm256_shuffle_ps::<0x00>(d, d),
            _mm256_shuffle_ps::<0x55>(d, d),
            _mm256_shuffle_ps::<0xaa>(d, d),
            _mm256_shuffle_ps::<0xff>(d, d),
        ]
    }};
}

/// Rows read ahead by [`prefetch_ahead`]: four groups of four.
const PREFETCH_ROWS: usize = 16;

/// Asks for the `span` bytes `PREFETCH_ROWS` rows of `row_bytes` past each of `xs` (the same
/// block of the rows four groups on, as a matrix's rows lie end to end), into the L2 cache.
/// Generation reads every weight once, in rows too short (hundreds of bytes) for the
/// hardware prefetcher to get ahead of. Into L2, not L1: on a Zen 4 host an L1 prefetch
/// (`T0`) per row and block held SmolLM2 tg32 on one thread at 50-60 tokens/s in Q8_0 and
/// Q6_K and 92 in Q4_0; into L2 (`T1`), 16 rows ahead, they ran at 95-100 and 120 (8 rows
/// ahead: a few percent less; 32: no better). Past the matrix's end it touches whatever
/// follows, harmlessly: a prefetch never faults, and the address is formed without
/// dereferencing.
#[inline(always)]
pub(super) fn prefetch_ahead<const N: usize>(xs: [&[u8]; N], row_bytes: usize, span: usize) {
    for x in xs {
        let ahead = x.as_ptr().wrapping_add(PREFETCH_ROWS * row_bytes);
        for line in (0..span).step_by(64) {
            // SAFETY: SSE (baseline on x86-64); a prefetch reads nothing the program sees.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(line) as *const i8) };
        }
    }
}

/// Four legacy-format weight rows · one activation row (single-token generation): four
/// independent chains, the four rows' scale products and min terms computed as one vector
/// each; every lane performs the single-row kernel's operations, so each result equals it
/// bit for bit. Stamped out per instruction set like [`legacy_tile`], with the sign trick
/// for signed formats.
macro_rules! legacy_rows4 {
    ($name:ident, $features:literal, $dp:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const T: u8>(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
            let ty = LEGACY[T as usize];
            let (wb, ab, at, has_min) = legacy_layout(ty);
            let zero = _mm256_setzero_si256();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut mins = _mm_setzero_ps();
            for (b, y) in a.chunks_exact(ab).take(w[0].len() / wb).enumerate() {
                let xs = [
                    &w[0][wb * b..wb * (b + 1)],
                    &w[1][wb * b..wb * (b + 1)],
                    &w[2][wb * b..wb * (b + 1)],
                    &w[3][wb * b..wb * (b + 1)],
                ];
                prefetch_ahead(xs, w[0].len(), wb);
                let qy = load(&y[at..]);
                let scale = row_scales!(f16x4!(xs, 0), f16_at(y));
                for r in 0..4 {
                    let qx = legacy_quants(ty, xs[r]);
                    let isum = if has_min {
                        $dp(zero, qx, qy)
                    } else {
                        $dp(zero, _mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx))
                    };
                    acc[r] = _mm256_fmadd_ps(scale[r], _mm256_cvtepi32_ps(isum), acc[r]);
                }
                if has_min {
                    mins = _mm_fmadd_ps(f16x4!(xs, 2), _mm_set1_ps(f16_at(&y[2..])), mins);
                }
            }
            let m = out4(mins);
            [
                hsum(acc[0]) + m[0],
                hsum(acc[1]) + m[1],
                hsum(acc[2]) + m[2],
                hsum(acc[3]) + m[3],
            ]
        }
    };
}
legacy_rows4!(rows4_legacy, "avx2,fma,f16c", madd_acc);
legacy_rows4!(rows4_legacy_avxvnni, "avx2,fma,f16c,avxvnni", dpbusd_avx);

impl PanelBlock {
    /// Stores row `r`'s decoded block: quants, auxiliary vector, scale and min.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn set(&mut self, r: usize, q: __m256i, aux: __m256i, d: f32, m: f32) {
        store_bytes(&mut self.q[r], q);
        store_bytes(&mut self.aux[r], aux);
        self.d[r] = d;
        self.m[r] = m;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_bytes(b: &[u8; 32]) -> __m256i {
    _mm256_loadu_si256(b.as_ptr() as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_bytes(b: &mut [u8; 32], v: __m256i) {
    _mm256_storeu_si256(b.as_mut_ptr() as *mut __m256i, v)
}

/// `-128 * (sum of each group of four bytes of q)` as i32 lanes: the correction that turns
/// a product with activations offset by 128 back into the signed product.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn offset_correction(q: __m256i) -> __m256i {
    // 128 * (q0 + q1) lies in [-32768, 32512]: `maddubs` does not saturate here.
    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(0x80u8 as i8), q);
    let fours = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    _mm256_sub_epi32(_mm256_setzero_si256(), fours)
}

/// What a panel keeps beside each signed-format block's quants ([`fill_panel`]); unsigned
/// formats keep zero whatever the tile.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PanelAux {
    /// `-128 * (sum of each group of four quants)`, the correction of activations offset by
    /// 128 ([`offset_correction`]).
    Offset,
    /// No auxiliary vector: the quants widened to i16 pairs ([`byte_pairs`]), the first
    /// half in `q`, the second in `aux`.
    Words,
}

/// Decodes four legacy-format weight rows into a panel: per block, each row's quants, the
/// auxiliary vector `aux` names, scale and min.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fill_panel<const T: u8>(
    w: &[&[u8]; 4],
    panel: &mut Vec<PanelBlock>,
    aux: PanelAux,
) {
    let ty = LEGACY[T as usize];
    let (wb, _, _, has_min) = legacy_layout(ty);
    let nb = w[0].len() / wb;
    // Every field of every block is written below: no need to clear the reused room.
    panel.resize(nb, PanelBlock::ZERO);
    for (b, p) in panel.iter_mut().enumerate() {
        for (r, row) in w.iter().enumerate() {
            let x = &row[wb * b..wb * (b + 1)];
            let q = legacy_quants(ty, x);
            let (q, extra) = match aux {
                _ if has_min => (q, _mm256_setzero_si256()),
                PanelAux::Offset => (q, offset_correction(q)),
                PanelAux::Words => {
                    let [lo, hi] = byte_pairs(q);
                    (lo, hi)
                }
            };
            let m = if has_min { f16_at(&x[2..]) } else { 0.0 };
            p.set(r, q, extra, f16_at(x), m);
        }
    }
}

/// The four rows' `dx * dy` of every block and of the batch's first `n` tokens (`n`
/// rounded up to even), two tokens by four rows a product, block-major like the scales
/// `dy4` they come from ([`fill_acts`]: block `b`'s token `t` at `b * stride + t`), formed
/// once per panel before any sums so that each FMA broadcasts its own from memory, long
/// stored. Iterators, not indices: the loop is a load, a multiply and a store a pair of
/// tokens, with no bounds check inside.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_products(
    panel: &[PanelBlock],
    dy4: &[[f32; 4]],
    stride: usize,
    n: usize,
    prods: &mut Vec<[f32; 4]>,
) {
    let pt = n.div_ceil(2) * 2;
    // Every entry a group reads is written below (a block's last `stride - pt` are not).
    prods.resize(panel.len() * stride, [0.0; 4]);
    for ((p, dst), dy) in panel
        .iter()
        .zip(prods.chunks_exact_mut(stride))
        .zip(dy4.chunks_exact(stride))
    {
        let d8 = _mm256_broadcast_ps(&*(p.d.as_ptr() as *const __m128));
        for (dst, dy) in dst[..pt].chunks_exact_mut(2).zip(dy[..pt].chunks_exact(2)) {
            let v = _mm256_mul_ps(d8, _mm256_loadu_ps(dy.as_ptr() as *const f32));
            _mm256_storeu_ps(dst.as_mut_ptr() as *mut f32, v);
        }
    }
}

/// Lays the batch's activations out for the legacy tiles, once per batch (a later call
/// with the same rows, same address, count, block size and offset, keeps them), every
/// array block-major, a row of `n + 8` tokens per block (zeros past `n`), so that a group
/// of tokens finds each block's entries side by side: the quants, offset by 128 with
/// `offset` ([`ActQuants`]); each block's scale and sum (`d`, and `s` where the format has
/// it) as f32; and the scales again, each repeated four times, for the scale products of
/// four rows and several tokens at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fill_acts(
    panel: &mut TilePanel,
    a: &[&[u8]],
    ab: usize,
    at: usize,
    offset: bool,
) {
    let key = (
        a.first().map_or(0, |r| r.as_ptr() as usize),
        a.len(),
        ab,
        offset,
    );
    if panel.act_key == key && !panel.act_quants.is_empty() {
        return;
    }
    let c = _mm256_set1_epi8(if offset { 0x80u8 as i8 } else { 0 });
    let (n, nb) = (a.len(), a.first().map_or(0, |r| r.len() / ab));
    let stride = n + 8;
    panel.act_quants.clear();
    panel.act_quants.resize(nb * stride, ActQuants([0; 32]));
    panel.act_scales.clear();
    panel.act_scales.resize(nb * stride, [0.0; 2]);
    panel.act_dy4.clear();
    panel.act_dy4.resize(nb * stride, [0.0; 4]);
    for (t, row) in a.iter().enumerate() {
        for (b, y) in row.chunks_exact(ab).enumerate() {
            let i = b * stride + t;
            store_bytes(
                &mut panel.act_quants[i].0,
                _mm256_xor_si256(load(&y[at..]), c),
            );
            let pair = u32::from_le_bytes([y[0], y[1], y[2], y[3]]);
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128(pair as i32));
            let (d, s) = (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)));
            panel.act_scales[i] = [d, s];
            panel.act_dy4[i] = [d; 4];
        }
    }
    panel.act_key = key;
}

/// A group of tokens' activations as [`fill_acts`] laid them out, and their scale
/// products with four rows ([`scale_products`]), each from the group's first token on,
/// block `b`'s entries at `b * stride`.
pub(super) struct Acts<'a> {
    pub(super) quants: &'a [ActQuants],
    pub(super) scales: &'a [[f32; 2]],
    pub(super) prods: &'a [[f32; 4]],
    pub(super) stride: usize,
}

/// Four legacy-format weight rows · every activation row of a batch (llama.cpp's tinyBLAS
/// product): the rows' blocks are decoded once into a panel ([`fill_panel`]), the batch's
/// activations laid out once per batch ([`fill_acts`]), then `$rt` tokens at a time (the
/// rest together) share each decoded block. First, once per panel, the four rows' `dx * dy`
/// of every block and token ([`scale_products`]), then per group, block, token and row the
/// exact integer sum, one conversion and one FMA, its scale a broadcast load of the stored
/// product: the single-row kernel's operations on each
/// output's own eight lanes, so each result equals [`dot4_legacy`]'s (and the single-row
/// kernel's) bit for bit. Stored products, not products spread over registers per token:
/// the spreading took shuffles on the pipes the sums need.
///
/// Stamped out once per instruction set (`$features`), with as many tokens a group as its
/// registers hold accumulators for (`$rt`; 16 registers for AVX2, 32 for AVX-512):
/// `$dp(acc, u, s)` adds the eight i32 sums of four unsigned × signed byte products
/// (`maddubs` + `madd` with AVX2, one `vpdpbusd` with VNNI). Signed formats take the
/// activations offset to unsigned `y + 128` with `-128 * sum(x)` per lane as each sum's
/// starting value (held in `aux`): exact with VNNI, which does not saturate, so only VNNI
/// instances take them (`$signed`); AVX2 routes them to [`tile_words`]. The unsigned
/// formats' sums are exact with `maddubs` too: no pair of products reaches its bound, as
/// activation quants lie in [-127, 127] and unsigned weight quants in [0, 31].
macro_rules! legacy_tile {
    ($name:ident, $group:ident, $features:literal, $dp:ident, $signed:literal, $rt:literal) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const T: u8>(
            w: &[&[u8]; 4],
            a: &[&[u8]],
            out: &mut [[f32; 4]],
            panel: &mut TilePanel,
        ) {
            let (_, ab, at, has_min) = legacy_layout(LEGACY[T as usize]);
            debug_assert!(has_min || $signed, "a signed format in a tile without VNNI");
            fill_acts(panel, a, ab, at, !has_min);
            fill_panel::<T>(w, &mut panel.legacy, PanelAux::Offset);
            let TilePanel {
                legacy,
                act_scales,
                act_quants,
                act_dy4,
                prods,
                ..
            } = panel;
            let n = a.len().min(out.len());
            let stride = act_dy4.len() / legacy.len().max(1);
            scale_products(legacy, act_dy4, stride, n, prods);
            let mut t = 0;
            macro_rules! group {
                ($n:literal) => {{
                    let acts = Acts {
                        quants: &act_quants[t..],
                        scales: &act_scales[t..],
                        prods: &prods[t..],
                        stride,
                    };
                    $group::<T, $n>(legacy, acts, &mut out[t..t + $n]);
                }};
            }
            while t + $rt <= n {
                group!($rt);
                t += $rt;
            }
            match n - t {
                4 => group!(4),
                3 => group!(3),
                2 => group!(2),
                1 => group!(1),
                _ => {}
            }
        }

        /// `RT` tokens against a decoded panel.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $group<const T: u8, const RT: usize>(
            panel: &[PanelBlock],
            acts: Acts,
            out: &mut [[f32; 4]],
        ) {
            let (_, _, _, has_min) = legacy_layout(LEGACY[T as usize]);
            let zero = _mm256_setzero_si256();
            let mut acc = [[_mm256_setzero_ps(); 4]; RT];
            let mut mins = [_mm_setzero_ps(); RT];
            for (b, p) in panel.iter().enumerate() {
                let q = [0, 1, 2, 3].map(|r| load_bytes(&p.q[r]));
                let aux = [0, 1, 2, 3].map(|r| load_bytes(&p.aux[r]));
                // The group's entries of block b, side by side: no bounds checks per token.
                let at = b * acts.stride;
                let (ys, prods) = (&acts.quants[at..at + RT], &acts.prods[at..at + RT]);
                for t in 0..RT {
                    let y = load_bytes(&ys[t].0);
                    let pr = &prods[t];
                    for r in 0..4 {
                        let isum = if has_min {
                            $dp(zero, q[r], y)
                        } else {
                            $dp(aux[r], y, q[r])
                        };
                        let scale = _mm256_broadcast_ss(&pr[r]);
                        acc[t][r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), acc[t][r]);
                    }
                    if has_min {
                        let mx = _mm_loadu_ps(p.m.as_ptr());
                        let dy = _mm_set1_ps(acts.scales[at + t][1]);
                        mins[t] = _mm_fmadd_ps(mx, dy, mins[t]);
                    }
                }
            }
            for t in 0..RT {
                let m = out4(mins[t]);
                for r in 0..4 {
                    out[t][r] = hsum(acc[t][r]) + m[r];
                }
            }
        }
    };
}
pub(super) use legacy_tile;
legacy_tile!(
    tile_legacy,
    group_legacy,
    "avx2,fma,f16c",
    madd_acc,
    false,
    2
);
legacy_tile!(
    tile_legacy_avxvnni,
    group_legacy_avxvnni,
    "avx2,fma,f16c,avxvnni",
    dpbusd_avx,
    true,
    2
);

/// The AVX2 tile: [`tile_legacy`] for the unsigned formats, [`tile_words`] for the signed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const T: u8>(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut TilePanel,
) {
    if legacy_layout(LEGACY[T as usize]).3 {
        tile_legacy::<T>(w, a, out, panel)
    } else {
        tile_words::<T>(w, a, out, panel)
    }
}

/// A vector of 32 signed bytes as two vectors of i16 pairs: dword `i` of the first holds
/// bytes `4i, 4i + 1`, of the second bytes `4i + 2, 4i + 3` ([`ActWords`]' layout).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn byte_pairs(v: __m256i) -> [__m256i; 2] {
    // Word k: byte 2k (even) and byte 2k + 1 (odd), sign-extended.
    let even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v));
    let odd = _mm256_srai_epi16::<8>(v);
    [
        _mm256_blend_epi16::<0xAA>(even, _mm256_slli_epi32::<16>(odd)),
        _mm256_blend_epi16::<0xAA>(_mm256_srli_epi32::<16>(even), odd),
    ]
}

/// Four signed-format weight rows (Q4_0, Q5_0, Q8_0) · every activation row of a batch, for
/// AVX2 without VNNI: [`legacy_tile`]'s panel, groups of two tokens and stored scale
/// products, with weights and activations widened once to i16 pairs (the weights into the
/// panel's `q` and `aux`, the batch's activations into [`ActWords`]) so that a block's
/// exact integer sums are two `vpmaddwd` and an add: one multiply fewer on the multiply
/// ports than the sign trick's `vpsignb`, `vpmaddubsw` and `vpmaddwd`. Dword `i` still sums
/// the products of quants `4i..4i + 4`, so the float operations, and the results, are the
/// single-row kernel's bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_words<const T: u8>(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut TilePanel,
) {
    let (_, ab, at, _) = legacy_layout(LEGACY[T as usize]);
    fill_acts(panel, a, ab, at, false);
    if panel.words_key != panel.act_key || panel.act_words.len() != panel.act_quants.len() {
        panel.act_words.clear();
        for e in &panel.act_quants {
            let [lo, hi] = byte_pairs(load_bytes(&e.0));
            let mut words = ActWords([[0; 16]; 2]);
            _mm256_storeu_si256(words.0[0].as_mut_ptr() as *mut __m256i, lo);
            _mm256_storeu_si256(words.0[1].as_mut_ptr() as *mut __m256i, hi);
            panel.act_words.push(words);
        }
        panel.words_key = panel.act_key;
    }
    fill_panel::<T>(w, &mut panel.legacy, PanelAux::Words);
    let TilePanel {
        legacy,
        act_words,
        act_dy4,
        prods,
        ..
    } = panel;
    let n = a.len().min(out.len());
    let stride = act_dy4.len() / legacy.len().max(1);
    scale_products(legacy, act_dy4, stride, n, prods);
    let mut t = 0;
    while t < n {
        let rt = (n - t).min(2);
        let words = &act_words[t..];
        let prods = &prods[t..];
        if rt == 2 {
            group_words::<2>(legacy, words, prods, stride, &mut out[t..t + 2]);
        } else {
            group_words::<1>(legacy, words, prods, stride, &mut out[t..t + 1]);
        }
        t += rt;
    }
}

/// `RT` tokens (their i16 pairs and scale products, [`scale_products`], from the group's
/// first token on, block-major with `stride`) against a panel of i16 pairs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_words<const RT: usize>(
    panel: &[PanelBlock],
    words: &[ActWords],
    prods: &[[f32; 4]],
    stride: usize,
    out: &mut [[f32; 4]],
) {
    let mut acc = [[_mm256_setzero_ps(); 4]; RT];
    for (b, p) in panel.iter().enumerate() {
        let at = b * stride;
        let (ys, prods) = (&words[at..at + RT], &prods[at..at + RT]);
        for t in 0..RT {
            let y = &ys[t].0;
            let ylo = _mm256_loadu_si256(y[0].as_ptr() as *const __m256i);
            let yhi = _mm256_loadu_si256(y[1].as_ptr() as *const __m256i);
            let pr = &prods[t];
            for r in 0..4 {
                let isum = _mm256_add_epi32(
                    _mm256_madd_epi16(ylo, load_bytes(&p.q[r])),
                    _mm256_madd_epi16(yhi, load_bytes(&p.aux[r])),
                );
                let scale = _mm256_broadcast_ss(&pr[r]);
                acc[t][r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), acc[t][r]);
            }
        }
    }
    for t in 0..RT {
        for r in 0..4 {
            out[t][r] = hsum(acc[t][r]);
        }
    }
}

/// Lays the batch's Q8_0 activations out for [`LaneBlock`]s ([`LaneActs`]), once per batch:
/// a later call with the same rows (same address and count) keeps them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fill_lane_acts(a: &[&[u8]], nb: usize, panel: &mut TilePanel) {
    const AB: usize = GgmlType::Q8_0.block_bytes();
    let key = (a.first().map_or(0, |r| r.as_ptr() as usize), a.len());
    let len = a.len().div_ceil(4) * nb;
    if panel.lane_key == key && panel.lane_acts.len() == len {
        return;
    }
    // Every entry is written below but the padding tokens of the last quad, which are
    // zeroed: a reused panel is not cleared first.
    panel.lane_acts.resize(len, LaneActs::ZERO);
    if !a.len().is_multiple_of(4) {
        for e in &mut panel.lane_acts[(a.len() / 4) * nb..] {
            for t in a.len() % 4..4 {
                for y in &mut e.y {
                    y[4 * t..4 * t + 4].fill(0);
                }
                e.corr[t] = 0;
                e.d[t] = 0.0;
            }
        }
    }
    for (t, row) in a.iter().enumerate() {
        let (quad, tt) = (t / 4, t % 4);
        for (b, y) in row.chunks_exact(AB).take(nb).enumerate() {
            let e = &mut panel.lane_acts[quad * nb + b];
            for (g, dst) in e.y.iter_mut().enumerate() {
                dst[4 * tt..4 * tt + 4].copy_from_slice(&y[2 + 4 * g..6 + 4 * g]);
            }
            e.corr[tt] = -8 * y[2..34].iter().map(|&v| v as i8 as i32).sum::<i32>();
            e.d[tt] = f16_at(y);
        }
    }
    panel.lane_key = key;
}

/// Stamps out the repacked Q4_0 tile's driver for an instruction set (`$features`): lays
/// four rows out with `$fill` ([`LaneBlock`]) and the batch's activations with
/// [`fill_lane_acts`], then runs `$quads` over two quads of tokens at a time and a last
/// one alone.
macro_rules! lane_tile {
    ($(#[$m:meta])* $name:ident, $features:literal, $fill:ident, $quads:ident) => {
        $(#[$m])*
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            w: &[&[u8]; 4],
            a: &[&[u8]],
            out: &mut [[f32; 4]],
            panel: &mut TilePanel,
        ) {
            let nb = w[0].len() / GgmlType::Q4_0.block_bytes();
            $fill(w, &mut panel.lanes);
            fill_lane_acts(a, nb, panel);
            let n = a.len().min(out.len());
            let nq = panel.lane_acts.len() / nb.max(1);
            let mut quad = 0;
            while quad + 2 <= nq {
                $quads::<2>(panel, nb, quad, &mut out[..n]);
                quad += 2;
            }
            if quad < nq {
                $quads::<1>(panel, nb, quad, &mut out[..n]);
            }
        }
    };
}
pub(super) use lane_tile;
lane_tile!(
    /// Four Q4_0 rows · every activation row of a batch in the repacked order, for AVX2: the
    /// AVX-512 repacked tile's layouts ([`LaneBlock`], [`LaneActs`]: one output per lane, no
    /// horizontal sums) on 256-bit registers, rows 0-1 in the first, rows 2-3 in the second.
    /// Without `vpdpbusd`, each step is a `vpmaddubsw` (nibbles 0..=15 times activations in
    /// -127..=127: each i16 at most 3810 in size) added in i16 over the block's eight steps
    /// (at most 30480, no overflow), then one `vpmaddwd` by ones and the `-8 * Σy` correction:
    /// the same exact integer sum, then the same conversion, scale product and FMA per output,
    /// so the same bits as the single-row repacked order.
    tile_repacked_q4_0_avx2,
    "avx2,fma,f16c",
    fill_lanes_q4_0,
    lane_quads
);

/// `QN` quads of tokens from `quad` on against a laid-out panel ([`tile_repacked_q4_0_avx2`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lane_quads<const QN: usize>(
    panel: &TilePanel,
    nb: usize,
    quad: usize,
    out: &mut [[f32; 4]],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; QN];
    for (b, wb) in panel.lanes.iter().enumerate() {
        let ab: [&LaneActs; QN] = std::array::from_fn(|k| &panel.lane_acts[(quad + k) * nb + b]);
        let mut sums = [[_mm256_setzero_si256(); 2]; QN];
        for g in 0..8 {
            let q = [0, 1].map(|h| load_bytes(wb.q[g][32 * h..].first_chunk().unwrap()));
            for k in 0..QN {
                let y = _mm256_broadcastsi128_si256(_mm_load_si128(
                    ab[k].y[g].as_ptr() as *const __m128i
                ));
                for h in 0..2 {
                    sums[k][h] = _mm256_add_epi16(sums[k][h], _mm256_maddubs_epi16(q[h], y));
                }
            }
        }
        let dw = [0, 1].map(|h| _mm256_load_ps(wb.d[8 * h..].as_ptr()));
        for k in 0..QN {
            let corr =
                _mm256_broadcastsi128_si256(_mm_load_si128(ab[k].corr.as_ptr() as *const __m128i));
            let dy = _mm256_broadcast_ps(&*(ab[k].d.as_ptr() as *const __m128));
            for h in 0..2 {
                let isum = _mm256_add_epi32(corr, _mm256_madd_epi16(sums[k][h], ones));
                let scale = _mm256_mul_ps(dw[h], dy);
                acc[k][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[k][h]);
            }
        }
    }
    // Lane 4r + t of register h holds row 2h + r, token t of the quad.
    for (k, acc) in acc.iter().enumerate() {
        let mut o = [0f32; 16];
        _mm256_storeu_ps(o.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(o[8..].as_mut_ptr(), acc[1]);
        for t in 0..4 {
            if let Some(dst) = out.get_mut(4 * (quad + k) + t) {
                *dst = [0, 1, 2, 3].map(|r| o[4 * r + t]);
            }
        }
    }
}

/// Lays four Q4_0 rows out for one output per lane ([`LaneBlock`]): step `g` of row `r`
/// (its quants `4g..4g + 4`, the unsigned nibbles) repeated across 16-byte chunk `r`, and
/// row `r`'s scale across lanes `4r..4r + 4`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fill_lanes_q4_0(w: &[&[u8]; 4], lanes: &mut Vec<LaneBlock>) {
    const WB: usize = GgmlType::Q4_0.block_bytes();
    let nb = w[0].len() / WB;
    // Every entry is written below: a reused panel is not cleared first.
    lanes.resize(nb, LaneBlock::ZERO);
    for (b, l) in lanes.iter_mut().enumerate() {
        for (r, row) in w.iter().enumerate() {
            let x = &row[WB * b..WB * (b + 1)];
            let q = nibbles32(x[2..18].as_ptr());
            for (g, step) in l.q.iter_mut().enumerate() {
                let v = _mm256_permutevar8x32_epi32(q, _mm256_set1_epi32(g as i32));
                let dst = step[16 * r..].as_mut_ptr() as *mut __m128i;
                _mm_storeu_si128(dst, _mm256_castsi256_si128(v));
            }
            l.d[4 * r..4 * r + 4].fill(f16_at(x));
        }
    }
}

/// `acc + madd_us(x, y)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_acc(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_add_epi32(acc, madd_us(x, y))
}

/// `acc + madd_us(x, y)` in one AVX-VNNI instruction, exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn dpbusd_avx(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, x, y)
}

/// Pairs of 16-value scales as i16 lanes for `_mm256_madd_epi16` after `maddubs`: lanes 0..8
/// cover values 0..16 of a 32-value run, lanes 8..16 values 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_pair(lo: i32, hi: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16))
}

#[inline]
fn bsum(y: &[u8], s: usize) -> i32 {
    i16::from_le_bytes([y[260 + 2 * s], y[261 + 2 * s]]) as i32
}

/// A K-quant block's integer dot with a Q8_K block as eight i32 lanes per 64-value quarter:
/// lane `l` of quarter `g` sums `sc * q * y` over the values `k` of the quarter with
/// `(k % 32) / 4 == l` (the lanes of llama.cpp's AVX2 vec-dot; Q6_K's quants without their
/// offset of 32).
type Quarters = [__m256i; 4];

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2k_quarters<const N: usize>(x: &[u8], ys: [&[u8]; N]) -> [Quarters; N] {
    let scales = &x[..16];
    let mask = _mm256_set1_epi8(3);
    let mut q = [[_mm256_setzero_si256(); 4]; N];
    for g in 0..2 {
        let bits = load(&x[16 + 32 * g..]);
        for s in 0..4 {
            let qv = _mm256_and_si256(
                _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * s as i32)),
                mask,
            );
            let k = 128 * g + 32 * s;
            let sc = scale_pair(
                (scales[k / 16] & 0x0f) as i32,
                (scales[k / 16 + 1] & 0x0f) as i32,
            );
            for t in 0..N {
                let p = _mm256_maddubs_epi16(qv, load(&ys[t][4 + k..]));
                q[t][k / 64] = _mm256_add_epi32(q[t][k / 64], _mm256_madd_epi16(p, sc));
            }
        }
    }
    q
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_quarters<const N: usize>(x: &[u8], ys: [&[u8]; N]) -> [Quarters; N] {
    let mask = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let scales = q3k_scales(&x[96..108]);
    let hmask = load(&x[..32]);
    let mut q = [[_mm256_setzero_si256(); 4]; N];
    for g in 0..2 {
        let bits = load(&x[32 + 32 * g..]);
        for s in 0..4 {
            let k = 128 * g + 32 * s;
            let low = _mm256_and_si256(
                _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * s as i32)),
                mask,
            );
            let hbit = _mm256_and_si256(
                _mm256_srl_epi16(hmask, _mm_cvtsi32_si128((4 * g + s) as i32)),
                one,
            );
            // 4 where the high bit is clear: q = low - 4 * (1 - hbit).
            let sub4 = _mm256_slli_epi16(_mm256_xor_si256(hbit, one), 2);
            let sc = scale_pair(scales[k / 16] as i32, scales[k / 16 + 1] as i32);
            for t in 0..N {
                let qy = load(&ys[t][4 + k..]);
                let p = _mm256_sub_epi16(
                    _mm256_maddubs_epi16(low, qy),
                    _mm256_maddubs_epi16(sub4, qy),
                );
                q[t][k / 64] = _mm256_add_epi32(q[t][k / 64], _mm256_madd_epi16(p, sc));
            }
        }
    }
    q
}

/// Q4_K (`qh` `None`) or Q5_K quarters.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_quarters<const N: usize>(
    x: &[u8],
    qh: Option<&[u8]>,
    qs: &[u8],
    ys: [&[u8]; N],
) -> [Quarters; N] {
    let (sc, _) = q4k_scales_mins(&x[4..16]);
    let low_mask = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    // Not `qh.map(..)`: a closure would be compiled outside this function's AVX2 context.
    #[allow(clippy::manual_map)]
    let hbits = match qh {
        Some(h) => Some(load(h)),
        None => None,
    };
    let mut q = [[_mm256_setzero_si256(); 4]; N];
    for g in 0..4 {
        let bits = load(&qs[32 * g..]);
        let mut lo = _mm256_and_si256(bits, low_mask);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low_mask);
        if let Some(h) = hbits {
            let b_lo = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * g as i32)), one);
            let b_hi = _mm256_and_si256(
                _mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * g as i32 + 1)),
                one,
            );
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(b_lo, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(b_hi, 4));
        }
        let (s_lo, s_hi) = (
            _mm256_set1_epi16(sc[2 * g] as i16),
            _mm256_set1_epi16(sc[2 * g + 1] as i16),
        );
        for t in 0..N {
            let p_lo =
                _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load(&ys[t][4 + 64 * g..])), s_lo);
            let p_hi =
                _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load(&ys[t][36 + 64 * g..])), s_hi);
            q[t][g] = _mm256_add_epi32(p_lo, p_hi);
        }
    }
    q
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_quarters<const N: usize>(x: &[u8], ys: [&[u8]; N]) -> [Quarters; N] {
    let scales = &x[192..208];
    let low_mask = _mm256_set1_epi8(0x0f);
    let two_bits = _mm256_set1_epi8(3);
    let mut q = [[_mm256_setzero_si256(); 4]; N];
    for g in 0..2 {
        let ql0 = load(&x[64 * g..]);
        let ql1 = load(&x[64 * g + 32..]);
        let qh = load(&x[128 + 32 * g..]);
        for t4 in 0..4 {
            let ql = if t4 % 2 == 0 { ql0 } else { ql1 };
            let low = if t4 < 2 {
                _mm256_and_si256(ql, low_mask)
            } else {
                _mm256_and_si256(_mm256_srli_epi16(ql, 4), low_mask)
            };
            let high = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * t4 as i32)),
                two_bits,
            );
            let qv = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
            let k = 128 * g + 32 * t4;
            let sc = scale_pair(scales[k / 16] as i8 as i32, scales[k / 16 + 1] as i8 as i32);
            for t in 0..N {
                let p = _mm256_maddubs_epi16(qv, load(&ys[t][4 + k..]));
                q[t][k / 64] = _mm256_add_epi32(q[t][k / 64], _mm256_madd_epi16(p, sc));
            }
        }
    }
    q
}

/// Q6_K's offset of 32 per vec-dot lane: lane `l` loses `32 (bsum[2l] sc[2l] + bsum[2l+1]
/// sc[2l+1])`, as llama.cpp's AVX2 kernel folds it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_offset(x: &[u8], y: &[u8]) -> __m256i {
    let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x[192..].as_ptr() as *const __m128i));
    _mm256_slli_epi32(_mm256_madd_epi16(load(&y[260..]), scales16), 5)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add4(q: Quarters) -> __m256i {
    _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]))
}

/// The K-quants by the const parameter of the generic kernels below (each compiled for one
/// format, its dispatch folded away).
const KQUANTS: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The quarters of one block of K-quant `ty` against `N` activation rows (the weights
/// unpacked once for all of them).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quarters<const N: usize>(ty: GgmlType, x: &[u8], ys: [&[u8]; N]) -> [Quarters; N] {
    match ty {
        GgmlType::Q2_K => q2k_quarters(x, ys),
        GgmlType::Q3_K => q3k_quarters(x, ys),
        GgmlType::Q4_K => q45k_quarters(x, None, &x[16..144], ys),
        GgmlType::Q5_K => q45k_quarters(x, Some(&x[16..48]), &x[48..176], ys),
        _ => q6k_quarters(x, ys),
    }
}

/// The sums of four vectors of eight i32 lanes, as one vector of four: exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum4(v: [__m256i; 4]) -> __m128i {
    let a = _mm256_hadd_epi32(v[0], v[1]);
    let b = _mm256_hadd_epi32(v[2], v[3]);
    let c = _mm256_hadd_epi32(a, b);
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1))
}

/// A K-quant block's scale and min scale (zero without mins).
#[inline(always)]
fn k_scales(ty: GgmlType, x: &[u8]) -> (f32, f32) {
    match ty {
        GgmlType::Q2_K => (
            super::float::f16_at(&x[80..]),
            super::float::f16_at(&x[82..]),
        ),
        GgmlType::Q3_K => (super::float::f16_at(&x[108..]), 0.0),
        GgmlType::Q4_K | GgmlType::Q5_K => (super::float::f16_at(x), super::float::f16_at(&x[2..])),
        _ => (super::float::f16_at(&x[208..]), 0.0),
    }
}

/// The min of each 16 values of a K-quant block (zero for formats without mins).
#[inline(always)]
fn k_mins(ty: GgmlType, x: &[u8]) -> [i32; 16] {
    match ty {
        GgmlType::Q2_K => std::array::from_fn(|s| (x[s] >> 4) as i32),
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (_, m) = q4k_scales_mins(&x[4..16]);
            std::array::from_fn(|s| m[s / 2] as i32)
        }
        _ => [0; 16],
    }
}

/// `Σ mins[s] * bsum[s]` over the 16-value groups `s0..s1`.
#[inline(always)]
fn k_imin(mins: &[i32; 16], y: &[u8], s0: usize, s1: usize) -> i32 {
    (s0..s1).map(|s| mins[s] * bsum(y, s)).sum()
}

/// [`k_mins`] as sixteen i16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_mins16(ty: GgmlType, x: &[u8]) -> __m256i {
    let m = k_mins(ty, x).map(|v| v as i16);
    _mm256_loadu_si256(m.as_ptr() as *const __m256i)
}

/// `mins · bsums` of a Q8_K block `y` per 16-value group, summed in pairs: eight i32 lanes,
/// lane `j` covering values `32 j .. 32 j + 32` (exact: products stay far below `i32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn imin_pairs(mins16: __m256i, y: &[u8]) -> __m256i {
    _mm256_madd_epi16(mins16, load(&y[260..]))
}

/// [`k_imin`] over each 64-value quarter of `y`, as four i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn imin_quarters(mins16: __m256i, y: &[u8]) -> __m128i {
    let pairs = imin_pairs(mins16, y);
    _mm_hadd_epi32(
        _mm256_castsi256_si128(pairs),
        _mm256_extracti128_si256(pairs, 1),
    )
}

/// The 4×4 transpose of four i32 vectors: lane `j` of result `i` is lane `i` of `v[j]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose4(v: [__m128i; 4]) -> [__m128i; 4] {
    let t0 = _mm_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm_unpacklo_epi32(v[2], v[3]);
    let t2 = _mm_unpackhi_epi32(v[0], v[1]);
    let t3 = _mm_unpackhi_epi32(v[2], v[3]);
    [
        _mm_unpacklo_epi64(t0, t1),
        _mm_unpackhi_epi64(t0, t1),
        _mm_unpacklo_epi64(t2, t3),
        _mm_unpackhi_epi64(t2, t3),
    ]
}

/// K-quant weights · Q8_K activations in llama.cpp's AVX2 vec-dot order (see
/// `korder::vec_dot`, which this equals bit for bit).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_k<const K: u8>(w: &[u8], a: &[u8]) -> f32 {
    let ty = KQUANTS[K as usize];
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let mut summs = 0f32;
    let bytes = ty.block_bytes();
    for (x, y) in w.chunks_exact(bytes).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d_a = f32_at(y);
        let (dw, dmw) = k_scales(ty, x);
        let d = d_a * dw;
        let dmin = -d_a * dmw;
        let [q] = quarters(ty, x, [y]);
        let mut lanes = add4(q);
        match ty {
            GgmlType::Q2_K => {
                let sc = _mm_loadu_si128(x.as_ptr() as *const __m128i);
                let mins =
                    _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0f)));
                let prod = _mm256_madd_epi16(mins, load(&y[260..]));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
            }
            GgmlType::Q4_K => {
                let (_, m) = q4k_scales_mins(&x[4..16]);
                let p: [i32; 4] = std::array::from_fn(|l| {
                    m[2 * l] as i32 * (bsum(y, 4 * l) + bsum(y, 4 * l + 1))
                        + m[2 * l + 1] as i32 * (bsum(y, 4 * l + 2) + bsum(y, 4 * l + 3))
                });
                let prod = _mm_loadu_si128(p.as_ptr() as *const __m128i);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
            }
            GgmlType::Q5_K => summs = dmin.mul_add(k_imin(&k_mins(ty, x), y, 0, 16) as f32, summs),
            GgmlType::Q6_K => lanes = _mm256_sub_epi32(lanes, q6k_offset(x, y)),
            _ => {}
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
    match ty {
        GgmlType::Q4_K => hsum(acc) + m,
        GgmlType::Q5_K => hsum(acc) + summs,
        _ => hsum(acc),
    }
}

/// K-quant weights · Q8_K activations in llama.cpp's tiled order (`korder::tiled`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiled_k<const K: u8>(w: &[u8], a: &[u8]) -> f32 {
    let ty = KQUANTS[K as usize];
    let mut acc = 0f32;
    let bytes = ty.block_bytes();
    for (x, y) in w.chunks_exact(bytes).zip(a.chunks_exact(Q8_K_BYTES)) {
        let (dw, dmw) = k_scales(ty, x);
        let [q] = quarters(ty, x, [y]);
        let mut lanes = add4(q);
        if ty == GgmlType::Q6_K {
            lanes = _mm256_sub_epi32(lanes, q6k_offset(x, y));
        }
        let mut r = hsum_i32(lanes) as f32 * dw;
        if matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K) {
            r = (-dmw).mul_add(k_imin(&k_mins(ty, x), y, 0, 16) as f32, r);
        }
        acc = r.mul_add(f32_at(y), acc);
    }
    acc
}

/// Q4_K or Q2_K weights · Q8_K activations in llama.cpp's repacked order with one fused
/// multiply-add per `step` values (`korder::repacked`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repacked_k<const K: u8>(step: usize, w: &[u8], a: &[u8]) -> f32 {
    let ty = KQUANTS[K as usize];
    let (mut acc, mut acc_min) = (0f32, 0f32);
    let bytes = ty.block_bytes();
    for (x, y) in w.chunks_exact(bytes).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d_a = f32_at(y);
        let (dw, dmw) = k_scales(ty, x);
        let (d, dmin) = (dw * d_a, dmw * d_a);
        let mut iq = [0i32; 4];
        _mm_storeu_si128(
            iq.as_mut_ptr() as *mut __m128i,
            imin_quarters(k_mins16(ty, x), y),
        );
        let [q] = quarters(ty, x, [y]);
        let per = step / 64;
        for p in 0..4 / per {
            let mut s = q[p * per];
            for i in 1..per {
                s = _mm256_add_epi32(s, q[p * per + i]);
            }
            acc = (hsum_i32(s) as f32).mul_add(d, acc);
            let imin: i32 = iq[p * per..(p + 1) * per].iter().sum();
            acc_min = (imin as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// Q8_K block `b` of each of four activation rows (a plain array: no closure, so it inlines
/// into the AVX2 kernels).
#[inline(always)]
fn q8k_blocks4<'a>(a: &[&'a [u8]; 4], b: usize) -> [&'a [u8]; 4] {
    let r = Q8_K_BYTES * b..Q8_K_BYTES * (b + 1);
    [
        &a[0][r.clone()],
        &a[1][r.clone()],
        &a[2][r.clone()],
        &a[3][r],
    ]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes4(v: [f32; 4]) -> __m128 {
    _mm_loadu_ps(v.as_ptr())
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ints4(v: [i32; 4]) -> __m128 {
    _mm_cvtepi32_ps(_mm_loadu_si128(v.as_ptr() as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn out4(v: __m128) -> [f32; 4] {
    let mut o = [0f32; 4];
    _mm_storeu_ps(o.as_mut_ptr(), v);
    o
}

/// [`tiled_k`] for four activation rows, the weights unpacked once: each lane performs the
/// same operations as the single-row kernel, so each result equals it bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiled4_k<const K: u8>(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    let ty = KQUANTS[K as usize];
    let mut acc = _mm_setzero_ps();
    let bytes = ty.block_bytes();
    for (b, x) in w.chunks_exact(bytes).enumerate() {
        let ys = q8k_blocks4(a, b);
        let (dw, dmw) = k_scales(ty, x);
        let q = quarters(ty, x, ys);
        let mut lanes = [_mm256_setzero_si256(); 4];
        for t in 0..4 {
            lanes[t] = add4(q[t]);
            if ty == GgmlType::Q6_K {
                lanes[t] = _mm256_sub_epi32(lanes[t], q6k_offset(x, ys[t]));
            }
        }
        let mut r = _mm_mul_ps(_mm_cvtepi32_ps(hsum4(lanes)), _mm_set1_ps(dw));
        if matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K) {
            let mins = k_mins(ty, x);
            let mut imin = [0i32; 4];
            for t in 0..4 {
                imin[t] = k_imin(&mins, ys[t], 0, 16);
            }
            r = _mm_fnmadd_ps(_mm_set1_ps(dmw), ints4(imin), r);
        }
        let d_a = lanes4([f32_at(ys[0]), f32_at(ys[1]), f32_at(ys[2]), f32_at(ys[3])]);
        acc = _mm_fmadd_ps(r, d_a, acc);
    }
    out4(acc)
}

/// [`repacked_k`] for four activation rows (llama.cpp's gemm), the weights unpacked once;
/// each result equals the single-row kernel's bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repacked4_k<const K: u8>(step: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    let ty = KQUANTS[K as usize];
    let (mut acc, mut acc_min) = (_mm_setzero_ps(), _mm_setzero_ps());
    let bytes = ty.block_bytes();
    let per = step / 64;
    for (b, x) in w.chunks_exact(bytes).enumerate() {
        let ys = q8k_blocks4(a, b);
        let (dw, dmw) = k_scales(ty, x);
        let d_a = lanes4([f32_at(ys[0]), f32_at(ys[1]), f32_at(ys[2]), f32_at(ys[3])]);
        let (d, dmin) = (
            _mm_mul_ps(_mm_set1_ps(dw), d_a),
            _mm_mul_ps(_mm_set1_ps(dmw), d_a),
        );
        let q = quarters(ty, x, ys);
        let mins16 = k_mins16(ty, x);
        // Quarter `g`'s min sums of the four tokens, as one vector per quarter.
        let iq = transpose4([
            imin_quarters(mins16, ys[0]),
            imin_quarters(mins16, ys[1]),
            imin_quarters(mins16, ys[2]),
            imin_quarters(mins16, ys[3]),
        ]);
        for p in 0..4 / per {
            let mut s = [_mm256_setzero_si256(); 4];
            for t in 0..4 {
                s[t] = q[t][p * per];
                for i in 1..per {
                    s[t] = _mm256_add_epi32(s[t], q[t][p * per + i]);
                }
            }
            acc = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4(s)), d, acc);
            let mut imin = iq[p * per];
            for i in 1..per {
                imin = _mm_add_epi32(imin, iq[p * per + i]);
            }
            acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(imin), dmin, acc_min);
        }
    }
    out4(_mm_sub_ps(acc, acc_min))
}

/// [`repacked_k`] with one step per block (llama.cpp's gemv) for four weight rows against
/// one activation row: four independent chains; each result equals the single-row kernel's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repacked_rows4_k<const K: u8>(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
    let ty = KQUANTS[K as usize];
    let (mut acc, mut acc_min) = (_mm_setzero_ps(), _mm_setzero_ps());
    let bytes = ty.block_bytes();
    for (b, y) in a
        .chunks_exact(Q8_K_BYTES)
        .take(w[0].len() / bytes)
        .enumerate()
    {
        let o = bytes * b;
        let xs = [
            &w[0][o..o + bytes],
            &w[1][o..o + bytes],
            &w[2][o..o + bytes],
            &w[3][o..o + bytes],
        ];
        let d_a = _mm_set1_ps(f32_at(y));
        let (mut dw, mut dmw) = ([0f32; 4], [0f32; 4]);
        for r in 0..4 {
            (dw[r], dmw[r]) = k_scales(ty, xs[r]);
        }
        let d = _mm_mul_ps(lanes4(dw), d_a);
        let dmin = _mm_mul_ps(lanes4(dmw), d_a);
        prefetch_ahead(xs, w[0].len(), bytes);
        let mut lanes = [_mm256_setzero_si256(); 4];
        let mut pairs = [_mm256_setzero_si256(); 4];
        for r in 0..4 {
            let [q] = quarters(ty, xs[r], [y]);
            lanes[r] = add4(q);
            pairs[r] = imin_pairs(k_mins16(ty, xs[r]), y);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4(lanes)), d, acc);
        acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4(pairs)), dmin, acc_min);
    }
    out4(_mm_sub_ps(acc, acc_min))
}

/// The entry points of the generic kernels, one per format and path, each with the kernels'
/// target features.
macro_rules! entries {
    ($w:ty, $a:ty => $out:ty: $($name:ident => $f:ident<$k:literal>($($arg:expr),*);)*) => {
        $(
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn $name(w: $w, a: $a) -> $out {
                $f::<$k>($($arg,)* w, a)
            }
        )*
    };
}
entries! { &[u8], &[u8] => f32:
    dot_q2_k_q8_k => vec_dot_k<0>();
    dot_q3_k_q8_k => vec_dot_k<1>();
    dot_q4_k_q8_k => vec_dot_k<2>();
    dot_q5_k_q8_k => vec_dot_k<3>();
    dot_q6_k_q8_k => vec_dot_k<4>();
    tiled_q2_k => tiled_k<0>();
    tiled_q3_k => tiled_k<1>();
    tiled_q4_k => tiled_k<2>();
    tiled_q5_k => tiled_k<3>();
    tiled_q6_k => tiled_k<4>();
    gemv_q4_k => repacked_k<2>(256);
    gemv_q2_k => repacked_k<0>(256);
}
entries! { &[u8], &[&[u8]; 4] => [f32; 4]:
    tiled4_q2_k => tiled4_k<0>();
    tiled4_q3_k => tiled4_k<1>();
    tiled4_q4_k => tiled4_k<2>();
    tiled4_q5_k => tiled4_k<3>();
    tiled4_q6_k => tiled4_k<4>();
    gemm4_q4_k => repacked4_k<2>(64);
    gemm4_q2_k => repacked4_k<0>(128);
    dot4_q4_0_q8_0 => dot4_legacy<0>();
    dot4_q5_0_q8_0 => dot4_legacy<1>();
    dot4_q5_1_q8_1 => dot4_legacy<2>();
    dot4_q8_0_q8_0 => dot4_legacy<3>();
    dot4_q4_1_q8_1 => dot4_legacy<4>();
}
/// The entry points of the 32-value formats' tile and four-row kernels, per instruction
/// set: `tile, rows4 => format index` for each format.
macro_rules! isa_entries {
    ($($features:literal ($tile:ident, $rows4:ident):
        $($t:ident, $r:ident => $k:literal;)*)*) => {
        $($(
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn $t(
                w: &[&[u8]; 4],
                a: &[&[u8]],
                out: &mut [[f32; 4]],
                panel: &mut TilePanel,
            ) {
                $tile::<$k>(w, a, out, panel)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn $r(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
                $rows4::<$k>(w, a)
            }
        )*)*
    };
}
isa_entries! {
    "avx2,fma,f16c" (tile_avx2, rows4_legacy):
        tile_q4_0, dot_rows4_q4_0_q8_0 => 0;
        tile_q5_0, dot_rows4_q5_0_q8_0 => 1;
        tile_q5_1, dot_rows4_q5_1_q8_1 => 2;
        tile_q8_0, dot_rows4_q8_0_q8_0 => 3;
        tile_q4_1, dot_rows4_q4_1_q8_1 => 4;
    "avx2,fma,f16c,avxvnni" (tile_legacy_avxvnni, rows4_legacy_avxvnni):
        tile_q4_0_avxvnni, rows4_q4_0_avxvnni => 0;
        tile_q5_0_avxvnni, rows4_q5_0_avxvnni => 1;
        tile_q5_1_avxvnni, rows4_q5_1_avxvnni => 2;
        tile_q8_0_avxvnni, rows4_q8_0_avxvnni => 3;
        tile_q4_1_avxvnni, rows4_q4_1_avxvnni => 4;
}
entries! { &[&[u8]; 4], &[u8] => [f32; 4]:
    gemv_rows4_q4_k => repacked_rows4_k<2>();
    gemv_rows4_q2_k => repacked_rows4_k<0>();
}

/// Entry point of [`tile_repacked_q4_0_avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_repacked_q4_0(
    w: &[&[u8]; 4],
    a: &[&[u8]],
    out: &mut [[f32; 4]],
    panel: &mut TilePanel,
) {
    tile_repacked_q4_0_avx2(w, a, out, panel)
}

/// Q4_0 weights · Q8_0 activations in llama.cpp's repacked order (`korder::repacked_q4_0`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn repacked_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let qx = _mm256_sub_epi8(nibbles32(x[2..18].as_ptr()), _mm256_set1_epi8(8));
        let s = hsum_i32(madd_ss(qx, load(&y[2..])));
        acc = (s as f32).mul_add(f16_at(x) * f16_at(y), acc);
    }
    acc
}

/// [`repacked_q4_0`] for four activation rows (llama.cpp's gemm), the weight block unpacked
/// once; each lane performs the single-row kernel's operations, so each result equals it.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn repacked4_q4_0(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    let mut acc = _mm_setzero_ps();
    let mut m = [_mm256_setzero_si256(); 4];
    let mut d = [0f32; 4];
    for (b, x) in w.chunks_exact(Q4_0_BYTES).enumerate() {
        let qx = _mm256_sub_epi8(nibbles32(x[2..18].as_ptr()), _mm256_set1_epi8(8));
        let dx = f16_at(x);
        for t in 0..4 {
            let y = &a[t][34 * b..34 * b + 34];
            m[t] = madd_ss(qx, load(&y[2..]));
            d[t] = dx * f16_at(y);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4(m)), lanes4(d), acc);
    }
    out4(acc)
}

/// [`repacked_q4_0`] for four weight rows against one activation row (llama.cpp's gemv over
/// interleaved rows); each result equals the single-row kernel's.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn repacked_rows4_q4_0(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
    let mut acc = _mm_setzero_ps();
    let mut m = [_mm256_setzero_si256(); 4];
    let mut d = [0f32; 4];
    for (b, y) in a
        .chunks_exact(Q8_0_BYTES)
        .take(w[0].len() / Q4_0_BYTES)
        .enumerate()
    {
        let qy = load(&y[2..]);
        let dy = f16_at(y);
        for r in 0..4 {
            let x = &w[r][18 * b..18 * b + 18];
            let qx = _mm256_sub_epi8(nibbles32(x[2..18].as_ptr()), _mm256_set1_epi8(8));
            m[r] = madd_ss(qx, qy);
            d[r] = f16_at(x) * dy;
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4(m)), lanes4(d), acc);
    }
    out4(acc)
}

/// Σ of a Q8_0 block's 32 signed quants (`y`: the block's bytes): `vpsadbw` sums them
/// offset by 128.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_sum(y: &[u8]) -> i32 {
    let sad = _mm256_sad_epu8(
        _mm256_xor_si256(load(&y[2..]), _mm256_set1_epi8(-128)),
        _mm256_setzero_si256(),
    );
    let sad = _mm_add_epi64(
        _mm256_castsi256_si128(sad),
        _mm256_extracti128_si256::<1>(sad),
    );
    _mm_cvtsi128_si32(_mm_add_epi64(sad, _mm_unpackhi_epi64(sad, sad))) - 32 * 128
}

/// Sixteen interleaved Q4_0 weight rows ([`interleave`](super::interleave)) · one Q8_0
/// activation row (single-token generation) in llama.cpp's repacked order, one output per
/// lane as its AVX2 gemv has it, eight rows per register: per block and step, the unsigned
/// nibbles of eight rows times the activations' dword broadcast to every lane
/// (`vpmaddubsw`), the eight steps summed in i16 (each sum at most 8 · 2 · 15 · 128 = 30720,
/// so exact), then one `vpmaddwd` by ones, `- 8 Σy` (the nibbles' offset), one conversion,
/// one scale product `dx * dy` and one FMA per eight rows: each lane receives the
/// single-row order's operations block after block ([`repacked_rows4_q4_0`] does the same
/// four rows at a time, gathering each row's block on every token).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows16_q4_0(w: &[u8], a: &[u8]) -> [f32; 16] {
    use super::interleave::Q4_0X16_BYTES;
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); 2];
    for (x, y) in w
        .chunks_exact(Q4_0X16_BYTES)
        .zip(a.chunks_exact(Q8_0_BYTES))
    {
        let dword = |at: usize| {
            _mm256_set1_epi32(i32::from_le_bytes([y[at], y[at + 1], y[at + 2], y[at + 3]]))
        };
        let mut sums = [_mm256_setzero_si256(); 2];
        for g in 0..4 {
            let (ylo, yhi) = (dword(2 + 4 * g), dword(18 + 4 * g));
            for (h, sum) in sums.iter_mut().enumerate() {
                let q = load(&x[32 + 64 * g + 32 * h..]);
                let lo = _mm256_maddubs_epi16(_mm256_and_si256(q, low), ylo);
                let hi =
                    _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16::<4>(q), low), yhi);
                *sum = _mm256_add_epi16(*sum, _mm256_add_epi16(lo, hi));
            }
        }
        let offset = _mm256_set1_epi32(-8 * q8_0_sum(y));
        let dy = _mm256_set1_ps(f16_at(y));
        for (h, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
            let isum = _mm256_add_epi32(_mm256_madd_epi16(sum, _mm256_set1_epi16(1)), offset);
            let dx = _mm256_cvtph_ps(_mm_loadu_si128(x[16 * h..].as_ptr() as *const __m128i));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dx, dy), *acc);
        }
    }
    let mut o = [0f32; 16];
    _mm256_storeu_ps(o.as_mut_ptr(), acc[0]);
    _mm256_storeu_ps(o[8..].as_mut_ptr(), acc[1]);
    o
}

/// F32 weights · F32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_f32(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len().min(a.len()) / 4;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(w.as_ptr().add(4 * i) as *const f32);
        let y = _mm256_loadu_ps(a.as_ptr().add(4 * i) as *const f32);
        acc = _mm256_fmadd_ps(x, y, acc);
        i += 8;
    }
    let mut s = hsum(acc);
    while i < n {
        s += f32_at(&w[4 * i..]) * f32_at(&a[4 * i..]);
        i += 1;
    }
    s
}

/// F16 weights · F32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_f32(w: &[u8], a: &[u8]) -> f32 {
    let n = (w.len() / 2).min(a.len() / 4);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i));
        let y = _mm256_loadu_ps(a.as_ptr().add(4 * i) as *const f32);
        acc = _mm256_fmadd_ps(x, y, acc);
        i += 8;
    }
    let mut s = hsum(acc);
    while i < n {
        s += f16_at(&w[2 * i..]) * f32_at(&a[4 * i..]);
        i += 1;
    }
    s
}
