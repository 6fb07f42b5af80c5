//! The block formats: one row of [`FORMATS`] per GGML element type, holding everything
//! pv knows about the format: its GGUF id and name, how many values a block holds and how
//! many bytes it takes, the activation format its fused dot product consumes, its decoder
//! and encoder, its accumulation-order family, and which llama.cpp builds repack it.
//!
//! This is llama.cpp's `type_traits` and `type_traits_cpu` in one table. Adding a format is
//! a variant of [`GgmlType`], its row here, and its kernels (`quant::kernels` lists them per
//! instruction set); sizes everywhere else are read from the row.

use std::fmt;

pub use super::kquants::QK_K;
use super::{float, kquants, legacy};

/// A GGML tensor element type, identified in GGUF by its `u32` id. The variants are in
/// the order of [`FORMATS`], so `ty as usize` is the row.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

/// Which llama.cpp CPU build's arithmetic to reproduce: its element-wise functions and
/// reductions, and which matrices it repacks (Q2_K only with AVX-512).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// An AVX-512 build (16-lane reductions, AVX-512 `exp`): the machine kind the shared
    /// llama.cpp reference figures come from.
    #[default]
    Avx512,
    /// An AVX2 build (8-lane reductions, AVX2 `exp`).
    Avx2,
}

impl Flavor {
    /// Every flavour, in [`Flavor::index`] order.
    pub const ALL: [Flavor; 2] = [Flavor::Avx512, Flavor::Avx2];

    /// Position in [`Flavor::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Flavor::Avx512 => 0,
            Flavor::Avx2 => 1,
        }
    }

    /// SIMD lanes of the reductions this build performs.
    pub const fn lanes(self) -> usize {
        match self {
            Flavor::Avx512 => 16,
            Flavor::Avx2 => 8,
        }
    }
}

/// How a format's fused dot products accumulate, which decides the code paths llama.cpp
/// has for it (see `quant::path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Plain floats: one value per "block".
    Float,
    /// 32-value blocks with one scale (and a min or sum): llama.cpp's vec-dot order only.
    Legacy,
    /// 256-value super-blocks: vec-dot order, and the tiled order for batches.
    KQuant,
}

/// Decodes whole blocks into `dst.len()` values.
pub type DequantizeFn = fn(&[u8], &mut [f32]);

/// Encodes `src.len()` values into whole blocks.
pub type QuantizeFn = fn(&[f32], &mut [u8]);

/// Everything one block format is.
#[derive(Debug)]
pub struct Format {
    /// The element type this row describes.
    pub ty: GgmlType,
    /// The GGUF type id.
    pub id: u32,
    /// The name ggml and llama.cpp print.
    pub name: &'static str,
    /// Values per block (1 for plain floats).
    pub block_len: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The accumulation-order family of its dot products.
    pub family: Family,
    /// The activation format its fused dot product consumes; `None` for the activation
    /// formats themselves, which hold no weights.
    pub act: Option<GgmlType>,
    /// Decodes whole blocks: `src` is `dst.len() / block_len` blocks (checked by callers).
    pub dequantize: DequantizeFn,
    /// Encodes whole blocks, where pv has an encoder (tests build the others from random
    /// valid blocks).
    pub quantize: Option<QuantizeFn>,
    /// The llama.cpp builds that repack a matrix of this format at load into interleaved
    /// blocks of 8 rows (`ggml-cpu/repack.cpp`) when its row count is a multiple of 8.
    pub repacked: &'static [Flavor],
}

const BOTH: &[Flavor] = &[Flavor::Avx512, Flavor::Avx2];

/// One row per format, in [`GgmlType`] order.
pub static FORMATS: [Format; 15] = {
    use Family::*;
    use GgmlType::*;
    [
        Format {
            ty: F32,
            id: 0,
            name: "F32",
            block_len: 1,
            block_bytes: 4,
            family: Float,
            act: Some(F32),
            dequantize: float::dequantize_f32,
            quantize: Some(float::quantize_f32),
            repacked: &[],
        },
        Format {
            ty: F16,
            id: 1,
            name: "F16",
            block_len: 1,
            block_bytes: 2,
            family: Float,
            act: Some(F32),
            dequantize: float::dequantize_f16,
            quantize: Some(float::quantize_f16),
            repacked: &[],
        },
        Format {
            ty: Q4_0,
            id: 2,
            name: "Q4_0",
            block_len: legacy::QK,
            block_bytes: legacy::Q4_0_BYTES,
            family: Legacy,
            act: Some(Q8_0),
            dequantize: legacy::dequantize_q4_0,
            quantize: Some(legacy::quantize_q4_0),
            repacked: BOTH,
        },
        Format {
            ty: Q4_1,
            id: 3,
            name: "Q4_1",
            block_len: legacy::QK,
            block_bytes: legacy::Q4_1_BYTES,
            family: Legacy,
            act: Some(Q8_1),
            dequantize: legacy::dequantize_q4_1,
            quantize: Some(legacy::quantize_q4_1),
            repacked: &[],
        },
        Format {
            ty: Q5_0,
            id: 6,
            name: "Q5_0",
            block_len: legacy::QK,
            block_bytes: legacy::Q5_0_BYTES,
            family: Legacy,
            act: Some(Q8_0),
            dequantize: legacy::dequantize_q5_0,
            quantize: Some(legacy::quantize_q5_0),
            repacked: &[],
        },
        Format {
            ty: Q5_1,
            id: 7,
            name: "Q5_1",
            block_len: legacy::QK,
            block_bytes: legacy::Q5_1_BYTES,
            family: Legacy,
            act: Some(Q8_1),
            dequantize: legacy::dequantize_q5_1,
            quantize: Some(legacy::quantize_q5_1),
            repacked: &[],
        },
        Format {
            ty: Q8_0,
            id: 8,
            name: "Q8_0",
            block_len: legacy::QK,
            block_bytes: legacy::Q8_0_BYTES,
            family: Legacy,
            act: Some(Q8_0),
            dequantize: legacy::dequantize_q8_0,
            quantize: Some(legacy::quantize_q8_0),
            repacked: &[],
        },
        Format {
            ty: Q8_1,
            id: 9,
            name: "Q8_1",
            block_len: legacy::QK,
            block_bytes: legacy::Q8_1_BYTES,
            family: Legacy,
            act: None,
            dequantize: legacy::dequantize_q8_1,
            quantize: Some(legacy::quantize_q8_1),
            repacked: &[],
        },
        Format {
            ty: Q2_K,
            id: 10,
            name: "Q2_K",
            block_len: QK_K,
            block_bytes: kquants::Q2_K_BYTES,
            family: KQuant,
            act: Some(Q8_K),
            dequantize: kquants::dequantize_q2_k,
            quantize: None,
            repacked: &[Flavor::Avx512],
        },
        Format {
            ty: Q3_K,
            id: 11,
            name: "Q3_K",
            block_len: QK_K,
            block_bytes: kquants::Q3_K_BYTES,
            family: KQuant,
            act: Some(Q8_K),
            dequantize: kquants::dequantize_q3_k,
            quantize: None,
            repacked: &[],
        },
        Format {
            ty: Q4_K,
            id: 12,
            name: "Q4_K",
            block_len: QK_K,
            block_bytes: kquants::Q4_K_BYTES,
            family: KQuant,
            act: Some(Q8_K),
            dequantize: kquants::dequantize_q4_k,
            quantize: Some(kquants::quantize_q4_k),
            repacked: BOTH,
        },
        Format {
            ty: Q5_K,
            id: 13,
            name: "Q5_K",
            block_len: QK_K,
            block_bytes: kquants::Q5_K_BYTES,
            family: KQuant,
            act: Some(Q8_K),
            dequantize: kquants::dequantize_q5_k,
            quantize: None,
            repacked: &[],
        },
        Format {
            ty: Q6_K,
            id: 14,
            name: "Q6_K",
            block_len: QK_K,
            block_bytes: kquants::Q6_K_BYTES,
            family: KQuant,
            act: Some(Q8_K),
            dequantize: kquants::dequantize_q6_k,
            quantize: Some(kquants::quantize_q6_k),
            repacked: &[],
        },
        Format {
            ty: Q8_K,
            id: 15,
            name: "Q8_K",
            block_len: QK_K,
            block_bytes: kquants::Q8_K_BYTES,
            family: KQuant,
            act: None,
            dequantize: kquants::dequantize_q8_k,
            quantize: Some(kquants::quantize_q8_k),
            repacked: &[],
        },
        Format {
            ty: BF16,
            id: 30,
            name: "BF16",
            block_len: 1,
            block_bytes: 2,
            family: Float,
            act: Some(F32),
            dequantize: float::dequantize_bf16,
            quantize: Some(float::quantize_bf16),
            repacked: &[],
        },
    ]
};

const fn count_weights() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < FORMATS.len() {
        if FORMATS[i].act.is_some() {
            n += 1;
        }
        i += 1;
    }
    n
}

impl GgmlType {
    /// Every type pv reads, in [`FORMATS`] order.
    pub const ALL: [GgmlType; FORMATS.len()] = {
        let mut all = [GgmlType::F32; FORMATS.len()];
        let mut i = 0;
        while i < FORMATS.len() {
            all[i] = FORMATS[i].ty;
            i += 1;
        }
        all
    };

    /// Every type that can hold weights: all but the activation formats (Q8_1 and Q8_K).
    pub const WEIGHTS: [GgmlType; count_weights()] = {
        let mut out = [GgmlType::F32; count_weights()];
        let (mut i, mut n) = (0, 0);
        while i < FORMATS.len() {
            if FORMATS[i].act.is_some() {
                out[n] = FORMATS[i].ty;
                n += 1;
            }
            i += 1;
        }
        out
    };

    /// This type's row of [`FORMATS`].
    #[inline]
    pub const fn format(self) -> &'static Format {
        &FORMATS[self as usize]
    }

    /// The type for a GGUF type id, or `None` for ids pv does not support.
    pub fn from_id(id: u32) -> Option<Self> {
        FORMATS.iter().find(|f| f.id == id).map(|f| f.ty)
    }

    /// The type parsed from its printed name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        FORMATS
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.ty)
    }

    /// The GGUF type id.
    pub const fn id(self) -> u32 {
        self.format().id
    }

    /// The name ggml and llama.cpp print for this type.
    pub const fn name(self) -> &'static str {
        self.format().name
    }

    /// Values per block (1 for plain float types).
    #[inline]
    pub const fn block_size(self) -> usize {
        self.format().block_len
    }

    /// Bytes per block.
    #[inline]
    pub const fn block_bytes(self) -> usize {
        self.format().block_bytes
    }

    /// The activation format this weight format's fused dot product consumes; `None` for
    /// the activation formats (Q8_1, Q8_K).
    pub const fn vec_dot_type(self) -> Option<GgmlType> {
        self.format().act
    }

    /// Bytes taken by a row of `n` values, or `None` when `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.block_bytes())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_variant_order_and_ids_round_trip() {
        for (i, f) in FORMATS.iter().enumerate() {
            assert_eq!(f.ty as usize, i, "{}", f.name);
            assert_eq!(format!("{:?}", f.ty), f.name);
            assert_eq!(GgmlType::from_id(f.ty.id()), Some(f.ty));
            assert_eq!(GgmlType::from_name(&f.name.to_lowercase()), Some(f.ty));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::WEIGHTS.len(), 13);
        assert!(!GgmlType::WEIGHTS.contains(&GgmlType::Q8_K));
    }

    #[test]
    fn row_bytes_requires_whole_blocks() {
        assert_eq!(GgmlType::Q4_1.row_bytes(64), Some(40));
        assert_eq!(GgmlType::Q4_1.row_bytes(65), None);
        assert_eq!(GgmlType::Q6_K.row_bytes(512), Some(420));
        assert_eq!(GgmlType::F16.row_bytes(3), Some(6));
    }

    /// An encoder writes what its decoder reads: the block sizes in the row agree with the
    /// functions in it.
    #[test]
    fn every_encoder_round_trips_through_its_decoder() {
        for f in &FORMATS {
            let Some(quantize) = f.quantize else { continue };
            let n = 2 * f.block_len.max(32);
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut q = vec![0u8; f.ty.row_bytes(n).unwrap()];
            quantize(&x, &mut q);
            let mut y = vec![0f32; n];
            (f.dequantize)(&q, &mut y);
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 0.2, "{}: max error {err}", f.name);
        }
    }
}
