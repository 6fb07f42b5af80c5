//! Weights as the engine uses them: GGUF tensor names mapped once at load to semantic
//! fields; matrices stay quantized in the mapped file (zero-copy; where this CPU's
//! generation kernel takes a matrix's rows interleaved, a rearranged copy is made on first
//! use), small vectors (norms, biases) are decoded to f32.

use std::sync::OnceLock;

use crate::gguf::{GgufError, GgufFile, TensorInfo};
use crate::quant::GgmlType;
use crate::quant::interleave::Interleaved;
use crate::quant::{self, Flavor, Isa, MatrixKernels};

use super::config::ModelConfig;
use super::tensors::{Block, TensorSource};

/// A quantized weight matrix inside the mapped file.
///
/// # Shapes
/// `rows` outputs by `cols` inputs; row `r` occupies `row_bytes` bytes starting at
/// `offset + r * row_bytes` of the file.
#[derive(Clone, Debug)]
pub struct QMatrix {
    /// Tensor name in the file.
    pub name: String,
    /// Weight format.
    pub ty: GgmlType,
    /// Output rows.
    pub rows: usize,
    /// Input columns (row length).
    pub cols: usize,
    /// Byte offset of row 0 in the file.
    pub offset: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Activation format the fused kernel consumes.
    pub act_ty: GgmlType,
    /// The kernels reproducing each llama.cpp build's path for this matrix, by
    /// [`Flavor::index`].
    pub kernels: [MatrixKernels; 2],
    /// The rows interleaved sixteen at a time, made on the first single-token product whose
    /// order takes them (`Order::rows16`; [`QMatrix::interleaved`]): generation reads it
    /// instead of the rows, and a model that only processes prompts never makes it.
    interleaved: OnceLock<Option<Interleaved>>,
}

impl QMatrix {
    /// The kernels reproducing llama.cpp's `flavor` build.
    #[inline]
    pub fn kernels(&self, flavor: Flavor) -> &MatrixKernels {
        &self.kernels[flavor.index()]
    }

    /// The rows interleaved for sixteen-row kernels (`None` where the format has no such
    /// layout), made from `file` on first use: call it outside parallel work, as it blocks
    /// other callers while it copies.
    pub fn interleaved(&self, file: &[u8]) -> Option<&Interleaved> {
        self.interleaved
            .get_or_init(|| {
                let rows: Vec<&[u8]> = (0..self.rows).map(|r| self.row(file, r)).collect();
                Interleaved::new(self.ty, &rows)
            })
            .as_ref()
    }

    /// The bytes of row `r`.
    #[inline]
    pub fn row<'a>(&self, file: &'a [u8], r: usize) -> &'a [u8] {
        let start = self.offset + r * self.row_bytes;
        &file[start..start + self.row_bytes]
    }
}

/// The weights of one decoder block, matrices kept quantized in the mapped file.
pub type LayerWeights = Block<QMatrix>;

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    /// Token embedding table (`vocab_size` rows of `n_embd`).
    pub token_embd: QMatrix,
    /// Decoder blocks.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight.
    pub output_norm: Vec<f32>,
    /// Output head; the token embedding when the model ties them.
    pub output: QMatrix,
    /// Whether the output head is the token embedding.
    pub tied_output: bool,
    /// Per-dimension RoPE frequency divisors (`rope_freqs.weight`, Llama 3.1), if present.
    pub rope_freqs: Option<Vec<f32>>,
}

struct Loader<'a> {
    file: &'a GgufFile,
    isa: Isa,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.file.tensor(name).ok_or_else(|| GgufError::Tensor {
            name: name.into(),
            reason: "required tensor is missing".into(),
        })
    }

    fn shape_err(name: &str, info: &TensorInfo, want: &[usize]) -> GgufError {
        GgufError::Tensor {
            name: name.into(),
            reason: format!("dims {:?}, expected {want:?}", info.dims),
        }
    }

    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<QMatrix, GgufError> {
        let info = self.info(name)?;
        if info.dims != [cols as u64, rows as u64] {
            return Err(Self::shape_err(name, info, &[cols, rows]));
        }
        let act_ty = info
            .ggml_type
            .vec_dot_type()
            .ok_or_else(|| GgufError::Tensor {
                name: name.into(),
                reason: format!("{} is not a weight format", info.ggml_type),
            })?;
        let kernels = Flavor::ALL.map(|f| {
            MatrixKernels::new(info.ggml_type, rows, self.isa, f)
                .expect("every weight format has kernels")
        });
        if !cols.is_multiple_of(act_ty.block_size()) {
            return Err(GgufError::Tensor {
                name: name.into(),
                reason: format!("row length {cols} is not a multiple of {act_ty}'s block"),
            });
        }
        Ok(QMatrix {
            name: name.into(),
            ty: info.ggml_type,
            rows,
            cols,
            offset: self.file.data_offset + info.offset as usize,
            row_bytes: info.size / rows,
            act_ty,
            kernels,
            interleaved: OnceLock::new(),
        })
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, GgufError> {
        let info = self.info(name)?;
        if info.dims != [len as u64] {
            return Err(Self::shape_err(name, info, &[len]));
        }
        quant::dequantize(info.ggml_type, self.file.tensor_data(info), len).map_err(|e| {
            GgufError::Tensor {
                name: name.into(),
                reason: e.to_string(),
            }
        })
    }

    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, GgufError> {
        match self.file.tensor(name) {
            None => Ok(None),
            Some(_) => self.vector(name, len).map(Some),
        }
    }
}

impl TensorSource for Loader<'_> {
    type Matrix = QMatrix;
    type Error = GgufError;

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<QMatrix, GgufError> {
        Loader::matrix(self, name, cols, rows)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, GgufError> {
        Loader::vector(self, name, len)
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }
}

impl ModelWeights {
    /// Maps every tensor the architecture needs, checking names, shapes and formats.
    pub fn load(file: &GgufFile, cfg: &ModelConfig, isa: Isa) -> Result<Self, GgufError> {
        let l = Loader { file, isa };
        let d = cfg.n_embd;
        let layers = (0..cfg.n_layer)
            .map(|i| Block::load(&l, cfg, i))
            .collect::<Result<Vec<_>, _>>()?;
        let token_embd = l.matrix("token_embd.weight", d, cfg.vocab_size)?;
        let (output, tied_output) = match file.tensor("output.weight") {
            Some(_) => (l.matrix("output.weight", d, cfg.vocab_size)?, false),
            None => (token_embd.clone(), true),
        };
        Ok(ModelWeights {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", d)?,
            output,
            tied_output,
            rope_freqs: l.optional_vector("rope_freqs.weight", cfg.rope_dim / 2)?,
        })
    }
}
