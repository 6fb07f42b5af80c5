//! aprender's own block formats (`apr-format` 0.72.3, `AprV2Writer::add_q4_tensor` /
//! `add_q8_tensor`; decoded as `aprender-core`'s `AprV2DequantExt` decodes them), read a
//! range of values at a time so that a row of a matrix can be decoded where it lies.
//!
//! - **APR_Q4**: the flattened tensor in blocks of 32 values, each an f16 scale and 16
//!   bytes of nibbles; value `i` of a block is the low nibble of byte `i / 2` when `i` is
//!   even and the high one when odd, and decodes to `(nibble - 8) * scale`. A scale that is
//!   NaN, infinite or below 6.1e-5 in magnitude (every subnormal f16) decodes as 0, as
//!   aprender's reader does (its GH-186 clamp).
//! - **APR_Q8**: one f32 scale for the whole tensor, then one `i8` per value:
//!   `q as f32 * scale`.
//!
//! The encoders reproduce aprender's (scale `max|x| / 7` or `/ 127`, 1 when the block is
//! zero; `round` half away from zero, clamped) so tests can build aprender's files without
//! aprender.

use half::f16;

/// Values per APR_Q4 block.
pub const Q4_BLOCK: usize = 32;
/// Bytes per APR_Q4 block.
pub const Q4_BLOCK_BYTES: usize = 18;
/// aprender's smallest usable APR_Q4 scale (`f16_safety::F16_MIN_NORMAL`).
const MIN_SCALE: f32 = 6.1e-5;

/// Why a range cannot be decoded: it runs past the tensor.
#[derive(Debug, thiserror::Error)]
#[error("values {first}..{end} run past the {have} bytes of the tensor")]
pub struct RangeError {
    /// First value asked for.
    pub first: usize,
    /// One past the last.
    pub end: usize,
    /// Bytes the tensor has.
    pub have: usize,
}

fn q4_scale(bits: [u8; 2]) -> f32 {
    let s = f16::from_le_bytes(bits).to_f32();
    if s.is_finite() && s.abs() >= MIN_SCALE {
        s
    } else {
        0.0
    }
}

/// Values `first .. first + dst.len()` of an APR_Q4 tensor whose bytes are `tensor`.
pub fn dequantize_q4(tensor: &[u8], first: usize, dst: &mut [f32]) -> Result<(), RangeError> {
    let end = first + dst.len();
    if end.div_ceil(Q4_BLOCK) * Q4_BLOCK_BYTES > tensor.len() {
        return Err(RangeError {
            first,
            end,
            have: tensor.len(),
        });
    }
    for (k, out) in dst.iter_mut().enumerate() {
        let i = first + k;
        let block = &tensor[i / Q4_BLOCK * Q4_BLOCK_BYTES..][..Q4_BLOCK_BYTES];
        let j = i % Q4_BLOCK;
        let byte = block[2 + j / 2];
        let nibble = if j.is_multiple_of(2) {
            byte & 0x0f
        } else {
            byte >> 4
        };
        *out = f32::from(nibble as i8 - 8) * q4_scale([block[0], block[1]]);
    }
    Ok(())
}

/// Values `first .. first + dst.len()` of an APR_Q8 tensor whose bytes are `tensor`.
pub fn dequantize_q8(tensor: &[u8], first: usize, dst: &mut [f32]) -> Result<(), RangeError> {
    let end = first + dst.len();
    if dst.is_empty() {
        return Ok(());
    }
    if tensor.len() < 4 || end > tensor.len() - 4 {
        return Err(RangeError {
            first,
            end,
            have: tensor.len(),
        });
    }
    let scale = f32::from_le_bytes(tensor[..4].try_into().expect("4 bytes"));
    for (out, &q) in dst.iter_mut().zip(&tensor[4 + first..4 + end]) {
        *out = f32::from(q as i8) * scale;
    }
    Ok(())
}

/// `x` as APR_Q4, as `AprV2Writer::add_q4_tensor` writes it.
pub fn quantize_q4(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len().div_ceil(Q4_BLOCK) * Q4_BLOCK_BYTES);
    for block in x.chunks(Q4_BLOCK) {
        let max = block.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let scale = if max == 0.0 { 1.0 } else { max / 7.0 };
        out.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
        let mut packed = [0u8; 16];
        for (i, &v) in block.iter().enumerate() {
            let nibble = (((v / scale).round().clamp(-8.0, 7.0) as i8 + 8) as u8) & 0x0f;
            packed[i / 2] |= if i.is_multiple_of(2) {
                nibble
            } else {
                nibble << 4
            };
        }
        out.extend_from_slice(&packed);
    }
    out
}

/// `x` as APR_Q8, as `AprV2Writer::add_q8_tensor` writes it.
pub fn quantize_q8(x: &[f32]) -> Vec<u8> {
    if x.is_empty() {
        return Vec::new();
    }
    let max = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let scale = if max == 0.0 { 1.0 } else { max / 127.0 };
    let mut out = scale.to_le_bytes().to_vec();
    out.extend(
        x.iter()
            .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_ranges_straddle_blocks_and_decode_what_was_encoded() {
        let x: Vec<f32> = (0..70).map(|i| (i as f32 - 35.0) * 0.1).collect();
        let q = quantize_q4(&x);
        assert_eq!(q.len(), 3 * Q4_BLOCK_BYTES);
        let mut all = vec![0f32; 70];
        dequantize_q4(&q, 0, &mut all).unwrap();
        // Half a step of the largest block's scale (3.5 / 7), plus the f16 scale's rounding.
        for (a, b) in all.iter().zip(&x) {
            assert!((a - b).abs() <= 0.25 + 1e-2, "{a} vs {b}");
        }
        // A range across the first block boundary equals the same slice of the whole.
        let mut part = vec![0f32; 20];
        dequantize_q4(&q, 25, &mut part).unwrap();
        assert_eq!(part, all[25..45]);
        assert!(dequantize_q4(&q, 90, &mut part).is_err());
    }

    #[test]
    fn q4_unusable_scales_decode_as_zero() {
        let mut q = quantize_q4(&[1.0; 32]);
        for bits in [f16::NAN, f16::INFINITY, f16::from_f32(3e-5)] {
            q[..2].copy_from_slice(&bits.to_le_bytes());
            let mut out = [9f32; 32];
            dequantize_q4(&q, 0, &mut out).unwrap();
            assert!(out.iter().all(|&v| v == 0.0), "{bits}: {out:?}");
        }
    }

    #[test]
    fn q8_uses_one_scale_for_the_tensor() {
        let x = [0.5f32, -1.27, 0.0, 1.27];
        let q = quantize_q8(&x);
        assert_eq!(q.len(), 8);
        let mut out = [0f32; 2];
        dequantize_q8(&q, 2, &mut out).unwrap();
        assert_eq!(out, [0.0, 127.0 * (1.27f32 / 127.0)]);
        assert!(dequantize_q8(&q, 3, &mut out).is_err());
        assert!(quantize_q8(&[]).is_empty());
    }
}
