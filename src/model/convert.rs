//! GGUF to APR: the same model in aprender's dialect, laid out as `apr import` lays out a
//! llama-family GGUF (GGUF tensor names, an explicit `lm_head.weight` copy when the head is
//! tied to the embedding, flat typed metadata with the tokenizer under `tokenizer.*`), with
//! weights dequantized to f32 (or f16, or kept in their GGUF format where aprender's type
//! table holds it).
//!
//! Tensors are encoded a band of rows at a time (bands in parallel), so converting holds a
//! few megabytes of values whatever the model's size: [`write_apr`] streams them to disk,
//! [`gguf_to_apr`] collects them in memory for small models and tests.

use rayon::prelude::*;

use super::apr_meta::{WriteInfo, aprender_metadata};
use super::{ModelConfig, ModelError};
use crate::apr::{AprEntry, AprStream, AprWriter, AprenderMetadata, DType};
use crate::gguf::{GgufError, GgufFile, TensorInfo};
use crate::quant;
use crate::quant::GgmlType;
use crate::tokenizer::TokenizerSpec;

/// The element type of the converted tensors.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AprDtype {
    /// Dequantize everything to f32 (the reference).
    #[default]
    F32,
    /// Dequantize, then store as f16.
    F16,
    /// Keep each tensor's GGUF format where aprender's type table holds it (F32, F16,
    /// BF16, Q4_K, Q6_K); any other is refused unless a conversion for it is given.
    Keep,
}

/// What `--dtype keep` makes of a tensor whose GGUF format aprender's type table lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtherDtype {
    /// Dequantize it to f32.
    F32,
    /// Dequantize it and store f16.
    F16,
}

/// How to convert: the element type, and for `keep` what to do with the formats aprender
/// cannot hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    /// The element type.
    pub dtype: AprDtype,
    /// With [`AprDtype::Keep`], the type of tensors aprender's table lacks (`None`: refuse).
    pub other: Option<OtherDtype>,
}

impl From<AprDtype> for Conversion {
    fn from(dtype: AprDtype) -> Self {
        Conversion { dtype, other: None }
    }
}

/// Values per band of rows encoded as one piece (16 MiB of f32).
const BAND_VALUES: usize = 1 << 22;

/// The name `apr import` gives the copy of a tied embedding.
const TIED_HEAD: &str = "lm_head.weight";

/// One tensor's conversion: where it comes from and what it becomes.
struct Plan<'a> {
    info: &'a TensorInfo,
    entry: AprEntry,
}

fn tensor_err(t: &TensorInfo, reason: impl ToString) -> ModelError {
    GgufError::Tensor {
        name: t.name.clone(),
        reason: reason.to_string(),
    }
    .into()
}

/// The type tensor `info` is stored in under `how`.
fn target(info: &TensorInfo, how: Conversion) -> Result<GgmlType, ModelError> {
    let from = info.ggml_type;
    Ok(match (how.dtype, how.other) {
        (AprDtype::F32, _) => GgmlType::F32,
        (AprDtype::F16, _) => GgmlType::F16,
        (AprDtype::Keep, _) if DType::Ggml(from).aprender_id().is_some() => from,
        (AprDtype::Keep, Some(OtherDtype::F32)) => GgmlType::F32,
        (AprDtype::Keep, Some(OtherDtype::F16)) => GgmlType::F16,
        (AprDtype::Keep, None) => {
            return Err(tensor_err(
                info,
                format!(
                    "is {from}, which aprender's APR type table does not hold (F32, F16, BF16, \
                     Q4_K, Q6_K): aprender would read its id as another type. Keep the others \
                     with --other f32 (or f16), or convert everything with --dtype f32"
                ),
            ));
        }
    })
}

/// The metadata and per-tensor plan of `file`'s conversion.
fn plan(file: &GgufFile, how: Conversion) -> Result<(AprenderMetadata, Vec<Plan<'_>>), ModelError> {
    let config = ModelConfig::try_from(file)?;
    let tokenizer = TokenizerSpec::from_gguf(file)?;
    let tied = file.tensor("output.weight").is_none();
    let head = file.tensor("token_embd.weight").filter(|_| tied);
    let plans = file
        .tensors
        .iter()
        .map(|info| (info, info.name.as_str()))
        .chain(head.map(|embd| (embd, TIED_HEAD)))
        .map(|(info, name)| {
            // GGUF lists dims innermost first; APR outermost first.
            let dims: Vec<u64> = info.dims.iter().rev().copied().collect();
            let ty = DType::Ggml(target(info, how)?);
            let entry = AprEntry::new(name, ty, &dims).map_err(|e| tensor_err(info, e))?;
            Ok(Plan { info, entry })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let info = WriteInfo {
        name: file
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(String::from),
        chat_template: file
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(String::from),
        shapes: plans
            .iter()
            .map(|p| (p.entry.name.clone(), p.entry.dims.clone()))
            .collect(),
        param_count: plans
            .iter()
            .map(|p| p.entry.dims.iter().product::<u64>())
            .sum(),
        total_size: plans.iter().map(|p| p.entry.size() as u64).sum(),
        tied,
    };
    Ok((aprender_metadata(&config, &tokenizer, info), plans))
}

impl Plan<'_> {
    /// The converted bytes of the tensor, band by band, each band to `sink` in order.
    fn encode(
        &self,
        file: &GgufFile,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        let src = file.tensor_data(self.info);
        let from = self.info.ggml_type;
        let DType::Ggml(to) = self.entry.dtype else {
            unreachable!("conversions write GGML types")
        };
        let (rows, cols) = self.info.rows_cols();
        let in_row = src.len() / rows.max(1);
        if from == to {
            return src.chunks(BAND_VALUES).try_for_each(&mut *sink);
        }
        in_bands(
            rows,
            cols,
            &|r0, r1| {
                let values =
                    quant::dequantize(from, &src[r0 * in_row..r1 * in_row], (r1 - r0) * cols)
                        .map_err(|e| tensor_err(self.info, e))?;
                quant::quantize(to, &values).map_err(|e| tensor_err(self.info, e))
            },
            sink,
        )
    }
}

/// Rows `0..rows` of `cols` values each, encoded by `encode(first, end)` in bands of about
/// [`BAND_VALUES`] values, the bands of a batch in parallel, and handed to `sink` in order:
/// memory bounded by a few bands, every core busy, the output independent of the thread
/// count.
pub(super) fn in_bands(
    rows: usize,
    cols: usize,
    encode: &(dyn Fn(usize, usize) -> Result<Vec<u8>, ModelError> + Sync),
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let band = (BAND_VALUES / cols.max(1)).max(1);
    let batch = band * rayon::current_num_threads();
    for first in (0..rows).step_by(batch) {
        let last = (first + batch).min(rows);
        let bands: Vec<Vec<u8>> = (first..last)
            .step_by(band)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|r0| encode(r0, (r0 + band).min(last)))
            .collect::<Result<_, _>>()?;
        for b in &bands {
            sink(b)?;
        }
    }
    Ok(())
}

/// The APR version of a GGUF model, built in memory.
pub fn gguf_to_apr(file: &GgufFile, how: impl Into<Conversion>) -> Result<AprWriter, ModelError> {
    let (metadata, plans) = plan(file, how.into())?;
    let mut w = AprWriter::new(&metadata)?;
    for p in &plans {
        let mut data = Vec::with_capacity(p.entry.size());
        p.encode(file, &mut |b| {
            data.extend_from_slice(b);
            Ok(())
        })?;
        w.tensor(&p.entry.name, p.entry.dtype, &p.entry.dims, data)?;
    }
    Ok(w)
}

/// Converts `file` to an APR file at `path`, streamed tensor by tensor with bounded memory
/// and written atomically. `progress(done, total)` is called with output bytes as they are
/// written.
pub fn write_apr(
    file: &GgufFile,
    how: impl Into<Conversion>,
    path: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ModelError> {
    let (metadata, mut plans) = plan(file, how.into())?;
    // The stream takes tensors in name order.
    plans.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
    let total: u64 = plans.iter().map(|p| p.entry.size() as u64).sum();
    let mut out = AprStream::create(
        path,
        &metadata,
        plans.iter().map(|p| p.entry.clone()).collect(),
    )?;
    let mut done = 0u64;
    progress(0, total);
    for p in &plans {
        p.encode(file, &mut |b| {
            out.write(b)?;
            done += b.len() as u64;
            progress(done, total);
            Ok(())
        })?;
    }
    out.finish()?;
    Ok(())
}
