//! Block formats: the table of every GGML element type ([`FORMATS`]), dequantize and
//! quantize rows, and the fused dot products of weights with quantized activations, per
//! instruction set ([`kernels`]) and per llama.cpp code path ([`path`]).
//!
//! Rows are byte slices in the format's block layout; lengths are checked here so the
//! per-format code can index blocks directly. This is the bottom layer: the file formats
//! (`gguf`, `apr`) store these types, the engines compute with them.

pub mod aprq;
pub mod cpu;
mod dot_avx2;
mod dot_avx512;
mod dot_scalar;
pub mod float;
pub mod format;
pub mod interleave;
pub mod kernels;
mod korder;
pub mod kquants;
mod lanes;
pub mod legacy;
mod panel;
pub mod path;
pub mod peak;
pub mod synth;

pub use cpu::{Cpu, Isa, cpu};
pub use format::{FORMATS, Family, Flavor, Format, GgmlType, QK_K};
pub use kernels::{Dot, Dot4, FormatKernels, Order, Rows4, Rows16, Tile};
pub use panel::TilePanel;
pub use path::{MatrixKernels, TILED_MIN_BATCH, is_repacked};

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
    (ty.format().dequantize)(src, dst);
    Ok(())
}

/// Whether pv can encode rows of `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    ty.format().quantize.is_some()
}

/// Encodes `src` as format `ty` into `dst`. Q2_K, Q3_K and Q5_K have no encoder (tests build
/// those from random valid blocks instead).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check(ty, src.len(), dst.len())?;
    let quantize = ty.format().quantize.ok_or_else(|| QuantError {
        ty,
        n: src.len(),
        reason: "pv has no encoder for this format".into(),
    })?;
    quantize(src, dst);
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
