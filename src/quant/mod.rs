//! Block formats: dequantize rows of every GGML weight format, quantize rows (activations
//! and test weights), and fused dot products of weights with quantized activations.
//!
//! Rows are byte slices in the format's block layout; lengths are checked here so the
//! per-format code can index blocks directly.

pub mod aprq;
mod dot;
mod dot_avx2;
mod dot_avx512;
mod dot_scalar;
pub mod float;
mod korder;
pub mod kquants;
pub mod legacy;
pub mod synth;

pub use dot::{
    Dot4Fn, DotFn, DotRows4Fn, DotTileFn, Flavor, Kernel, MatrixKernels, REPACKED, TILED,
    TILED_MIN_BATCH, TileIsa, TilePanel, dot_fn, dot_rows4_fn, dot_rows4_fn_in, dot4_fn,
    is_repacked, matrix_kernels, tile_fn, tile_fn_in, vec_dot_type,
};

use crate::gguf::GgmlType;

/// A row handed to a conversion has the wrong length for its format.
#[derive(Debug, thiserror::Error)]
#[error("{ty} row of {n} values: {reason}")]
pub struct QuantError {
    /// The format.
    pub ty: GgmlType,
    /// Number of values requested.
    pub n: usize,
    /// What was wrong.
    pub reason: String,
}

fn check(ty: GgmlType, n: usize, bytes: usize) -> Result<(), QuantError> {
    match ty.row_bytes(n) {
        None => Err(QuantError {
            ty,
            n,
            reason: format!("not a multiple of the block size {}", ty.block_size()),
        }),
        Some(b) if b != bytes => Err(QuantError {
            ty,
            n,
            reason: format!("needs {b} bytes, got {bytes}"),
        }),
        Some(_) => Ok(()),
    }
}

/// Decodes `dst.len()` values of format `ty` from `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check(ty, dst.len(), src.len())?;
    use GgmlType::*;
    match ty {
        F32 => float::dequantize_f32(src, dst),
        F16 => float::dequantize_f16(src, dst),
        BF16 => float::dequantize_bf16(src, dst),
        Q4_0 => legacy::dequantize_q4_0(src, dst),
        Q4_1 => legacy::dequantize_q4_1(src, dst),
        Q5_0 => legacy::dequantize_q5_0(src, dst),
        Q5_1 => legacy::dequantize_q5_1(src, dst),
        Q8_0 => legacy::dequantize_q8_0(src, dst),
        Q8_1 => legacy::dequantize_q8_1(src, dst),
        Q2_K => kquants::dequantize_q2_k(src, dst),
        Q3_K => kquants::dequantize_q3_k(src, dst),
        Q4_K => kquants::dequantize_q4_k(src, dst),
        Q5_K => kquants::dequantize_q5_k(src, dst),
        Q6_K => kquants::dequantize_q6_k(src, dst),
        Q8_K => kquants::dequantize_q8_k(src, dst),
    }
    Ok(())
}

/// Whether pv can encode rows of `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q5_K)
}

/// Encodes `src` as format `ty` into `dst`. Q2_K, Q3_K and Q5_K have no encoder (tests build
/// those from random valid blocks instead).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check(ty, src.len(), dst.len())?;
    use GgmlType::*;
    match ty {
        F32 => float::quantize_f32(src, dst),
        F16 => float::quantize_f16(src, dst),
        BF16 => float::quantize_bf16(src, dst),
        Q4_0 => legacy::quantize_q4_0(src, dst),
        Q4_1 => legacy::quantize_q4_1(src, dst),
        Q5_0 => legacy::quantize_q5_0(src, dst),
        Q5_1 => legacy::quantize_q5_1(src, dst),
        Q8_0 => legacy::quantize_q8_0(src, dst),
        Q8_1 => legacy::quantize_q8_1(src, dst),
        Q4_K => kquants::quantize_q4_k(src, dst),
        Q6_K => kquants::quantize_q6_k(src, dst),
        Q8_K => kquants::quantize_q8_k(src, dst),
        Q2_K | Q3_K | Q5_K => {
            return Err(QuantError {
                ty,
                n: src.len(),
                reason: "pv has no encoder for this format".into(),
            });
        }
    }
    Ok(())
}

/// Allocating convenience over [`quantize_row`].
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let bytes = ty.row_bytes(src.len()).ok_or_else(|| QuantError {
        ty,
        n: src.len(),
        reason: format!("not a multiple of the block size {}", ty.block_size()),
    })?;
    let mut out = vec![0u8; bytes];
    quantize_row(ty, src, &mut out)?;
    Ok(out)
}

/// Allocating convenience over [`dequantize_row`].
pub fn dequantize(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    check(ty, n, src.len())?;
    let mut out = vec![0f32; n];
    dequantize_row(ty, src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
