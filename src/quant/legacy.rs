//! The 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1.
//!
//! # Layouts (bytes)
//! - Q4_0 (18): `d: f16`, `qs[16]`: value `j` is the low nibble of `qs[j]`, value `j+16` the
//!   high nibble; `x = (q - 8) * d`.
//! - Q4_1 (20): `d: f16`, `m: f16`, `qs[16]`; `x = q * d + m`.
//! - Q5_0 (22): `d: f16`, `qh: u32` (bit `i` is the fifth bit of value `i`), `qs[16]`;
//!   `x = (q - 16) * d`.
//! - Q5_1 (24): `d: f16`, `m: f16`, `qh: u32`, `qs[16]`; `x = q * d + m`.
//! - Q8_0 (34): `d: f16`, `qs: [i8; 32]`; `x = q * d`.
//! - Q8_1 (36): `d: f16`, `s: f16` (= `d * sum(qs)`), `qs: [i8; 32]`; the activation format
//!   paired with Q4_1 and Q5_1 weights.

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

use super::float::{f16_at, put_f16};

/// Values per block.
pub const QK: usize = 32;

/// Bytes per block, from the layouts above (`quant::FORMATS` reads them).
pub const Q4_0_BYTES: usize = 2 + QK / 2;
pub const Q4_1_BYTES: usize = 2 + 2 + QK / 2;
pub const Q5_0_BYTES: usize = 2 + 4 + QK / 2;
pub const Q5_1_BYTES: usize = 2 + 2 + 4 + QK / 2;
pub const Q8_0_BYTES: usize = 2 + QK;
pub const Q8_1_BYTES: usize = 2 + 2 + QK;

fn nibbles(qs: &[u8], mut f: impl FnMut(usize, u8)) {
    for j in 0..16 {
        f(j, qs[j] & 0x0f);
        f(j + 16, qs[j] >> 4);
    }
}

/// Decodes Q4_0 blocks.
pub fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q4_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b);
        nibbles(&b[2..18], |j, q| out[j] = (q as i32 - 8) as f32 * d);
    }
}

/// Decodes Q4_1 blocks.
pub fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q4_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(b), f16_at(&b[2..]));
        nibbles(&b[4..20], |j, q| out[j] = q as f32 * d + m);
    }
}

fn fifth_bit(qh: u32, j: usize) -> u8 {
    (((qh >> j) & 1) as u8) << 4
}

/// Decodes Q5_0 blocks.
pub fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q5_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        nibbles(&b[6..22], |j, q| {
            out[j] = ((q | fifth_bit(qh, j)) as i32 - 16) as f32 * d
        });
    }
}

/// Decodes Q5_1 blocks.
pub fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q5_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(b), f16_at(&b[2..]));
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        nibbles(&b[8..24], |j, q| {
            out[j] = (q | fifth_bit(qh, j)) as f32 * d + m
        });
    }
}

/// Decodes Q8_0 blocks.
pub fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q8_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b);
        for (o, &q) in out.iter_mut().zip(&b[2..34]) {
            *o = q as i8 as f32 * d;
        }
    }
}

/// Decodes Q8_1 blocks.
pub fn dequantize_q8_1(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q8_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b);
        for (o, &q) in out.iter_mut().zip(&b[4..36]) {
            *o = q as i8 as f32 * d;
        }
    }
}

fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// The value of largest magnitude, with its sign.
fn signed_max(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

fn pack_nibbles(q: &[u8; QK], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
}

fn pack_fifth_bits(q: &[u8; QK]) -> [u8; 4] {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (i, &v)| h | (((v >> 4) & 1) as u32) << i);
    qh.to_le_bytes()
}

/// Encodes Q4_0 blocks (ggml's reference rounding).
pub fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q4_0_BYTES)) {
        let d = signed_max(x) / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q: [u8; QK] = std::array::from_fn(|j| ((x[j] * id + 8.5) as i32).clamp(0, 15) as u8);
        put_f16(b, d);
        pack_nibbles(&q, &mut b[2..18]);
    }
}

/// Encodes Q4_1 blocks.
pub fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q4_1_BYTES)) {
        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q: [u8; QK] =
            std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as i32).clamp(0, 15) as u8);
        put_f16(b, d);
        put_f16(&mut b[2..], min);
        pack_nibbles(&q, &mut b[4..20]);
    }
}

/// Encodes Q5_0 blocks.
pub fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q5_0_BYTES)) {
        let d = signed_max(x) / -16.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q: [u8; QK] = std::array::from_fn(|j| ((x[j] * id + 16.5) as i32).clamp(0, 31) as u8);
        put_f16(b, d);
        b[2..6].copy_from_slice(&pack_fifth_bits(&q));
        pack_nibbles(&q, &mut b[6..22]);
    }
}

/// Encodes Q5_1 blocks.
pub fn quantize_q5_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q5_1_BYTES)) {
        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 31.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q: [u8; QK] =
            std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as i32).clamp(0, 31) as u8);
        put_f16(b, d);
        put_f16(&mut b[2..], min);
        b[4..8].copy_from_slice(&pack_fifth_bits(&q));
        pack_nibbles(&q, &mut b[8..24]);
    }
}

/// Quantizes one block to i8 with scale `amax / 127`, as llama.cpp's x86 kernels do (the
/// multiplier is `127 / amax`, rounding half to even), so activations quantize to the same
/// integers as in llama.cpp. Returns the f32 scale and the sum of the quants.
///
/// With AVX2 the block is done in vectors; every element sees the same float operations,
/// so the bytes are the same (tested), and blocks holding NaN or infinity, where vector and
/// scalar maxima differ, take the portable code.
fn q8_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu().avx2 {
        // SAFETY: `cpu()` detected AVX2.
        if let Some(r) = unsafe { q8_block_avx2(x, qs) } {
            return r;
        }
    }
    q8_block_portable(x, qs)
}

/// [`q8_block`], for tests against [`q8_block_portable`].
#[cfg(test)]
pub(crate) fn q8_block_for_tests(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    q8_block(x, qs)
}

/// [`q8_block`] in portable code.
pub(crate) fn q8_block_portable(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let i = super::float::round_even_small(v * id) as i32;
        sum += i;
        *q = i as i8 as u8;
    }
    (d, sum)
}

/// [`q8_block`] with AVX2, or `None` when the block holds a NaN or an infinity.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q8_block_avx2(x: &[f32], qs: &mut [u8]) -> Option<(f32, i32)> {
    use std::arch::x86_64::*;
    assert!(x.len() == QK && qs.len() == QK);
    // SAFETY: `x` holds 32 floats (asserted), four loads of eight.
    let v: [__m256; 4] = unsafe {
        [
            _mm256_loadu_ps(x.as_ptr()),
            _mm256_loadu_ps(x.as_ptr().add(8)),
            _mm256_loadu_ps(x.as_ptr().add(16)),
            _mm256_loadu_ps(x.as_ptr().add(24)),
        ]
    };
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    let mut special = 0;
    for vi in v {
        let a = _mm256_andnot_ps(sign, vi);
        // NaN or infinity: |v| compares unordered or equal to infinity.
        let inf = _mm256_set1_ps(f32::INFINITY);
        special |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(a, inf));
        m = _mm256_max_ps(m, a);
    }
    if special != 0 {
        return None;
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let magic = _mm256_set1_ps(12_582_912.0);
    // The products lie within [-127, 127]: adding and subtracting 1.5 * 2^23 rounds them
    // half to even, as `round_even_small` does, and the conversion is then exact.
    let mut q = [_mm256_setzero_si256(); 4];
    for (qi, vi) in q.iter_mut().zip(v) {
        let p = _mm256_mul_ps(vi, id);
        *qi = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(p, magic), magic));
    }
    let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    // Packing interleaves the 128-bit lanes; the permutation puts the bytes back in order.
    let bytes = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: `qs` holds 32 bytes (asserted).
    unsafe { _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, bytes) };
    Some((d, _mm_cvtsi128_si32(s)))
}

/// Encodes Q8_0 blocks (activations for Q4_0, Q5_0 and Q8_0 weights).
pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, _) = q8_block(x, &mut b[2..34]);
        put_f16(b, d);
    }
}

/// Encodes Q8_1 blocks (activations for Q4_1 and Q5_1 weights).
pub fn quantize_q8_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_1_BYTES)) {
        let (d, sum) = q8_block(x, &mut b[4..36]);
        put_f16(b, d);
        put_f16(&mut b[2..], sum as f32 * d);
    }
}
