//! The K-quant super-block formats (256 values): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K.
//!
//! # Layouts (bytes)
//! - Q2_K (84): `scales[16]` (low nibble scale, high nibble min, per 16 values), `qs[64]`
//!   (2-bit), `d: f16`, `dmin: f16`; `x = d * sc * q - dmin * m`.
//! - Q3_K (110): `hmask[32]`, `qs[64]`, `scales[12]` (sixteen 6-bit scales, offset 32),
//!   `d: f16`; `x = d * sc * (q2 - (hbit ? 0 : 4))`.
//! - Q4_K (144): `d: f16`, `dmin: f16`, `scales[12]` (eight 6-bit scales and mins, per 32
//!   values), `qs[128]`; `x = d * sc * q - dmin * m`.
//! - Q5_K (176): as Q4_K plus `qh[32]` before `qs` (bit `b` of `qh[j]` is value `32b + j`'s
//!   fifth bit).
//! - Q6_K (210): `ql[128]`, `qh[64]`, `scales: [i8; 16]`, `d: f16`; `x = d * sc * (q - 32)`.
//! - Q8_K (292): `d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]` (sums of each 16 quants); the
//!   activation format paired with every K-quant.

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

use super::float::{f16_at, put_f16};

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// Bytes per super-block, from the layouts above (`quant::FORMATS` reads them).
pub const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;
pub const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
pub const Q4_K_BYTES: usize = 2 + 2 + 12 + QK_K / 2;
pub const Q5_K_BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
pub const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
pub const Q8_K_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);

/// The sixteen signed 6-bit scales of a Q3_K block.
#[inline]
pub fn q3k_scales(s: &[u8]) -> [i8; 16] {
    std::array::from_fn(|i| {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        ((low | (high << 4)) as i8) - 32
    })
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K or Q5_K block.
#[inline]
pub fn q4k_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0f) | ((s[j] >> 6) << 4);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Decodes Q2_K blocks.
pub fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q2_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let (d, dmin) = (f16_at(&b[80..]), f16_at(&b[82..]));
        for (k, o) in out.iter_mut().enumerate() {
            let (g, s, j) = (k / 128, (k % 128) / 32, k % 32);
            let q = (qs[g * 32 + j] >> (2 * s)) & 3;
            let sc = scales[k / 16];
            *o = d * (sc & 0x0f) as f32 * q as f32 - dmin * (sc >> 4) as f32;
        }
    }
}

/// Decodes Q3_K blocks.
pub fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q3_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (hmask, qs) = (&b[..32], &b[32..96]);
        let scales = q3k_scales(&b[96..108]);
        let d = f16_at(&b[108..]);
        for (k, o) in out.iter_mut().enumerate() {
            let (g, s, j) = (k / 128, (k % 128) / 32, k % 32);
            let low = ((qs[g * 32 + j] >> (2 * s)) & 3) as i32;
            let high = (hmask[j] >> (4 * g + s)) & 1;
            let q = low - if high == 0 { 4 } else { 0 };
            *o = d * scales[k / 16] as f32 * q as f32;
        }
    }
}

/// The 4-bit (Q4_K) or 5-bit (Q5_K, with `qh`) quant of value `k` of a block.
#[inline(always)]
pub fn q45k_quant(qs: &[u8], qh: Option<&[u8]>, k: usize) -> u8 {
    let (g, r) = (k / 64, k % 64);
    let low = if r < 32 {
        qs[g * 32 + r] & 0x0f
    } else {
        qs[g * 32 + r - 32] >> 4
    };
    match qh {
        Some(qh) => low | (((qh[k % 32] >> (k / 32)) & 1) << 4),
        None => low,
    }
}

fn dequantize_q45_k(b: &[u8], qh: Option<&[u8]>, qs: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
    let (sc, m) = q4k_scales_mins(&b[4..16]);
    for (k, o) in out.iter_mut().enumerate() {
        let sub = k / 32;
        *o = d * sc[sub] as f32 * q45k_quant(qs, qh, k) as f32 - dmin * m[sub] as f32;
    }
}

/// Decodes Q4_K blocks.
pub fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        dequantize_q45_k(b, None, &b[16..144], out);
    }
}

/// Decodes Q5_K blocks.
pub fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q5_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        dequantize_q45_k(b, Some(&b[16..48]), &b[48..176], out);
    }
}

/// The 6-bit quant (0..63) of value `k` of a Q6_K block.
#[inline(always)]
pub fn q6k_quant(ql: &[u8], qh: &[u8], k: usize) -> u8 {
    let (g, r) = (k / 128, k % 128);
    let low = (ql[g * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
    let high = (qh[g * 32 + r % 32] >> (2 * (r / 32))) & 3;
    low | (high << 4)
}

/// Decodes Q6_K blocks.
pub fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q6_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
        let d = f16_at(&b[208..]);
        for (k, o) in out.iter_mut().enumerate() {
            let q = q6k_quant(ql, qh, k) as i32 - 32;
            *o = d * (scales[k / 16] as i8) as f32 * q as f32;
        }
    }
}

/// Decodes Q8_K blocks.
pub fn dequantize_q8_k(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(Q8_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in out.iter_mut().zip(&b[4..260]) {
            *o = d * q as i8 as f32;
        }
    }
}

/// Encodes Q8_K blocks as ggml does: the value of largest magnitude maps to -127 (rounding
/// half to even), and `bsums` holds the sum of each 16 quants.
pub fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let max = x
            .iter()
            .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        b.fill(0);
        if max == 0.0 {
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b[4..260].iter_mut().zip(x) {
            *q = (super::float::round_even_small(iscale * v) as i32).min(127) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = b[4 + 16 * j..4 + 16 * (j + 1)]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            b[260 + 2 * j..262 + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// Encodes Q4_K blocks with a plain min/max fit per 32 values (not ggml's iterative search:
/// good enough to build test models, and every block it writes is valid Q4_K).
pub fn quantize_q4_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q4_K_BYTES)) {
        let mut scale = [0f32; 8];
        let mut min = [0f32; 8];
        for (s, xs) in x.chunks_exact(32).enumerate() {
            let lo = xs.iter().copied().fold(0.0f32, f32::min);
            let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scale[s] = (hi - lo) / 15.0;
            min[s] = -lo;
        }
        let d = scale.iter().copied().fold(0.0, f32::max) / 63.0;
        let dmin = min.iter().copied().fold(0.0, f32::max) / 63.0;
        let quant6 = |v: f32, step: f32| {
            if step == 0.0 {
                0
            } else {
                ((v / step).round() as i32).clamp(0, 63) as u8
            }
        };
        let sc: [u8; 8] = std::array::from_fn(|s| quant6(scale[s], d));
        let m: [u8; 8] = std::array::from_fn(|s| quant6(min[s], dmin));
        put_f16(b, d);
        put_f16(&mut b[2..], dmin);
        // Use the scales as stored (f16-rounded) so the quants fit what dequantization sees.
        let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
        for j in 0..4 {
            b[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            b[8 + j] = m[j] | ((m[j + 4] >> 4) << 6);
            b[12 + j] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
        }
        let qs = &mut b[16..144];
        qs.fill(0);
        for (k, &v) in x.iter().enumerate() {
            let s = k / 32;
            let step = d * sc[s] as f32;
            let q = if step == 0.0 {
                0
            } else {
                (((v + dmin * m[s] as f32) / step).round() as i32).clamp(0, 15) as u8
            };
            let (g, r) = (k / 64, k % 64);
            if r < 32 {
                qs[g * 32 + r] |= q;
            } else {
                qs[g * 32 + r - 32] |= q << 4;
            }
        }
    }
}

/// Encodes Q6_K blocks with a plain max-magnitude fit per 16 values.
pub fn quantize_q6_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q6_K_BYTES)) {
        let scale: [f32; 16] = std::array::from_fn(|s| {
            let xs = &x[16 * s..16 * (s + 1)];
            xs.iter()
                .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
                / -32.0
        });
        let smax = scale
            .iter()
            .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = if smax == 0.0 { 0.0 } else { smax / -128.0 };
        put_f16(&mut b[208..], d);
        let d = f16_at(&b[208..]);
        b[..208].fill(0);
        for s in 0..16 {
            let sc = if d == 0.0 {
                0
            } else {
                ((scale[s] / d).round() as i32).clamp(-128, 127)
            };
            b[192 + s] = sc as i8 as u8;
        }
        for (k, &v) in x.iter().enumerate() {
            let step = d * (b[192 + k / 16] as i8) as f32;
            let q = if step == 0.0 {
                32
            } else {
                ((v / step).round() as i32 + 32).clamp(0, 63) as u8
            };
            let (g, r) = (k / 128, k % 128);
            b[g * 64 + r % 64] |= (q & 0x0f) << (4 * (r / 64));
            b[128 + g * 32 + r % 32] |= (q >> 4) << (2 * (r / 32));
        }
    }
}
