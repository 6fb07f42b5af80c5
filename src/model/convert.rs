//! GGUF to APR: the same model in pv's reference container, with weights dequantized to f32
//! (or f16, or kept in their GGUF format) and the architecture, hyper-parameters and
//! tokenizer in the JSON metadata.

use serde_json::json;

use super::{ModelConfig, ModelError};
use crate::apr::AprWriter;
use crate::gguf::{GgmlType, GgufError, GgufFile};
use crate::quant;
use crate::tokenizer::TokenizerSpec;

/// The element type of the converted tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AprDtype {
    /// Dequantize everything to f32 (the reference).
    #[default]
    F32,
    /// Dequantize, then store as f16.
    F16,
    /// Keep each tensor's GGUF format.
    Keep,
}

/// The APR version of a GGUF model.
pub fn gguf_to_apr(file: &GgufFile, dtype: AprDtype) -> Result<AprWriter, ModelError> {
    let config = ModelConfig::try_from(file)?;
    let tokenizer = TokenizerSpec::from_gguf(file)?;
    let mut w = AprWriter::new(json!({
        "format": "apr/2.0",
        "architecture": config.arch,
        "hyperparameters": config,
        "tokenizer": tokenizer,
    }));
    for t in &file.tensors {
        let n = t.n_elements() as usize;
        let src = file.tensor_data(t);
        let bad = |e: quant::QuantError| GgufError::Tensor {
            name: t.name.clone(),
            reason: e.to_string(),
        };
        let (ty, data) = match dtype {
            AprDtype::Keep => (t.ggml_type, src.to_vec()),
            AprDtype::F32 | AprDtype::F16 => {
                let ty = if dtype == AprDtype::F32 {
                    GgmlType::F32
                } else {
                    GgmlType::F16
                };
                let values = quant::dequantize(t.ggml_type, src, n).map_err(bad)?;
                (ty, quant::quantize(ty, &values).map_err(bad)?)
            }
        };
        // GGUF lists dims innermost first; APR outermost first.
        let dims: Vec<u64> = t.dims.iter().rev().copied().collect();
        w.tensor(&t.name, ty, &dims, data)
            .map_err(|e| GgufError::Tensor {
                name: t.name.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(w)
}
