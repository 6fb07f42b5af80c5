//! Plain float element types: F32, F16 and BF16.

use half::{bf16, f16};

/// Reads a little-endian f16 at `b[0..2]` as f32.
#[inline(always)]
pub fn f16_at(b: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// Writes `v` rounded to f16 into `b[0..2]`.
#[inline(always)]
pub fn put_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// Decodes a row of F32 values.
pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Decodes a row of F16 values.
pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16_at(c);
    }
}

/// Decodes a row of BF16 values.
pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// Encodes a row as F32.
pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (v, c) in src.iter().zip(dst.chunks_exact_mut(4)) {
        c.copy_from_slice(&v.to_le_bytes());
    }
}

/// Encodes a row as F16 (round to nearest even).
pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (v, c) in src.iter().zip(dst.chunks_exact_mut(2)) {
        put_f16(c, *v);
    }
}

/// Encodes a row as BF16 (round to nearest even).
pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (v, c) in src.iter().zip(dst.chunks_exact_mut(2)) {
        c.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
    }
}

/// Round half to even for |x| < 2^22, as `_mm256_round_ps` and ggml's `nearest_int` do:
/// adding and subtracting 1.5 * 2^23 leaves the rounded integer (inlined, unlike
/// `f32::round_ties_even`, which is a libm call on baseline x86-64).
#[inline(always)]
pub fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}
