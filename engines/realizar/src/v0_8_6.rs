//! realizar 0.8.6 (crates.io `realizar`, no default features). It has no per-op tap, and
//! its `AprTransformer::forward_traced` keeps only its own summary statistics (f32 moments
//! over every position), which are not the raw tensors pv's comparisons need. What its
//! public functions give whole is taken as it is:
//!
//! - the token embeddings, from `embed` (the lookup both paths start from);
//! - every position's logits, from the production decode path, one position at a time:
//!   `OwnedQuantizedModel::forward_single_with_cache` for a `.gguf`,
//!   `AprTransformer::forward_with_cache` for a `.apr`.
//!
//! Every per-layer slot and the final norm are therefore not captured. A comparison still
//! judges the logits, and pv's per-position logits figures say where a fault starts.

use std::collections::BTreeMap;
use std::path::Path;

use pv::model::Slot;
use pv::trace::engine::AdapterError;
use realizar086::apr_transformer::{AprKVCache, AprTransformer};
use realizar086::gguf::{MappedGGUFModel, OwnedQuantizedKVCache, OwnedQuantizedModel};

use crate::{Dims, Stages, Tensors};

/// The engine, as the trace names it.
pub const ENGINE: &str = "realizar 0.8.6";
/// What the GGUF path runs, as the trace names it.
pub const PATH_GGUF: &str = "gguf: OwnedQuantizedModel::forward_single_with_cache (logits only)";
/// What the APR path runs.
pub const PATH_APR: &str = "apr: AprTransformer::forward_with_cache (logits only)";

/// The stage name the embeddings are kept under.
const EMBEDDING: &str = "embedding";

/// realizar's GGUF production path, one position at a time.
pub fn run_gguf(
    model: &Path,
    tokens: &[u32],
    _scratch: &Path,
) -> Result<(Stages, Vec<f32>, Dims), AdapterError> {
    let mapped = MappedGGUFModel::from_path(model).map_err(|e| AdapterError::bad(e.to_string()))?;
    let m =
        OwnedQuantizedModel::from_mapped(&mapped).map_err(|e| AdapterError::bad(e.to_string()))?;
    let c = m.config();
    let dims = (c.num_layers, c.q_dim(), c.kv_dim());
    let mut cache = OwnedQuantizedKVCache::new(c.num_layers, c.kv_dim(), tokens.len());
    let mut logits = Vec::new();
    for (pos, &tok) in tokens.iter().enumerate() {
        let row = m
            .forward_single_with_cache(tok, &mut cache, pos)
            .map_err(|e| AdapterError::failed(e.to_string()))?;
        logits.extend(row);
    }
    let stages = BTreeMap::from([((EMBEDDING.to_string(), None), m.embed(tokens))]);
    Ok((stages, logits, dims))
}

/// realizar's APR decode path, one position at a time.
pub fn run_apr(
    model: &Path,
    tokens: &[u32],
    _scratch: &Path,
) -> Result<(Stages, Vec<f32>, Dims), AdapterError> {
    let m = AprTransformer::from_apr_file(model).map_err(|e| AdapterError::bad(e.to_string()))?;
    let c = &m.config;
    let head = c.hidden_dim / c.num_heads.max(1);
    let dims = (c.num_layers, c.num_heads * head, c.num_kv_heads * head);
    let mut cache = AprKVCache::new(&m.config);
    let mut logits = Vec::new();
    for (pos, &tok) in tokens.iter().enumerate() {
        let row = m
            .forward_with_cache(tok, &mut cache, pos)
            .map_err(|e| AdapterError::failed(e.to_string()))?;
        logits.extend(row);
    }
    let stages = BTreeMap::from([((EMBEDDING.to_string(), None), m.embed(tokens))]);
    Ok((stages, logits, dims))
}

/// The embeddings as pv's `embd`; nothing else is captured.
pub fn to_slots(stages: Stages, _n: usize, _dims: Dims) -> Tensors {
    stages
        .into_iter()
        .filter(|((s, l), _)| s == EMBEDDING && l.is_none())
        .map(|(_, data)| ((Slot::Embd, None), data))
        .collect()
}
