//! aprender-serve 0.72.3 (library `realizar`): realizar's per-op tap gives every stage
//! tensor of both paths, so the trace holds every slot realizar computes.
//!
//! - A `.gguf` runs through `OwnedQuantizedModel::forward_single_with_cache`, realizar's
//!   production path, one position at a time, with realizar's per-op tap armed: each stage
//!   tensor it emits is read back after each position.
//! - A `.apr` runs through `AprTransformer::forward_traced_with_plan`, which writes the
//!   stage tensors of every position at once; the logits of every position come from
//!   `AprTransformer::forward_with_cache` (the traced pass computes the last one only).
//!
//! realizar's stages map onto pv's slots through [`STAGES`]. A stage realizar does not emit
//! on a path (the production GGUF path fuses the FFN's gate, up and activation; neither
//! path emits Gemma's q/k or post norms) is simply not in the trace: pv reports it as not
//! captured.

use std::collections::BTreeMap;
use std::path::Path;

use pv::model::Slot;
use pv::trace::engine::AdapterError;
use realizar::apr_transformer::{AprKVCache, AprTransformer};
use realizar::gguf::{MappedGGUFModel, OwnedQuantizedKVCache, OwnedQuantizedModel};
use realizar::inference_trace::gpu_stage_dump::per_op_tap;
use realizar::inference_trace::save_tensor::read_tensor_file;
use realizar::inference_trace::save_tensor_plan::SaveTensorPlan;
use realizar::inference_trace::save_tensor_stage::SaveTensorStage;

use crate::{Dims, Stages, Tensors};

/// The engine, as the trace names it.
pub const ENGINE: &str = "realizar (aprender-serve 0.72.3)";

/// Each of realizar's stages and the pv slot it is. `qkv_matmul` (or `qkv_bias`, once the
/// bias is added) is split into q, k and v by their widths.
const STAGES: [(&str, Slot); 15] = [
    ("embedding", Slot::Embd),
    ("attn_norm", Slot::AttnNorm),
    ("q_post_rope", Slot::QRope),
    ("k_post_rope", Slot::KRope),
    ("attn_out", Slot::AttnOut),
    ("post_attn_residual", Slot::FfnInp),
    ("ffn_norm", Slot::FfnNorm),
    ("ffn_gate", Slot::FfnGate),
    ("ffn_up", Slot::FfnUp),
    ("ffn_silu", Slot::FfnAct),
    ("ffn_swigl", Slot::FfnInner),
    ("ffn_out", Slot::FfnDown),
    ("post_ffn_residual", Slot::LOut),
    ("final_norm", Slot::FinalNorm),
    ("lm_head", Slot::Logits),
];

/// What each path runs, as the trace names it.
pub const PATH_GGUF: &str = "gguf: OwnedQuantizedModel::forward_single_with_cache";
/// What the APR path runs.
pub const PATH_APR: &str =
    "apr: AprTransformer::forward_traced_with_plan, logits by forward_with_cache";

/// Every stage file under `dir` (`layer-N/STAGE.bin` or `STAGE.bin`), appended to
/// `tensors` under (stage, layer).
fn collect(
    dir: &Path,
    tensors: &mut BTreeMap<(String, Option<usize>), Vec<f32>>,
) -> Result<(), AdapterError> {
    let mut files = Vec::new();
    let Ok(top) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in top.flatten() {
        let p = e.path();
        if p.is_dir() {
            let layer = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("layer-"))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    AdapterError::failed(format!("unexpected directory {}", p.display()))
                })?;
            for f in std::fs::read_dir(&p)
                .map_err(|e| AdapterError::failed(e.to_string()))?
                .flatten()
            {
                files.push((Some(layer), f.path()));
            }
        } else {
            files.push((None, p));
        }
    }
    for (layer, path) in files {
        let stage = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| AdapterError::failed(format!("unexpected file {}", path.display())))?
            .to_string();
        let mut f = std::fs::File::open(&path).map_err(|e| AdapterError::failed(e.to_string()))?;
        let (_, values) = read_tensor_file(&mut f)
            .map_err(|e| AdapterError::failed(format!("{}: {e:?}", path.display())))?;
        tensors.entry((stage, layer)).or_default().extend(values);
    }
    Ok(())
}

fn plan(dir: &Path) -> SaveTensorPlan {
    SaveTensorPlan {
        stages: SaveTensorStage::ALL.to_vec(),
        layer_range: 0..u32::MAX,
        output_dir: dir.to_path_buf(),
    }
}

/// realizar's GGUF production path, one position at a time, its stages read after each.
pub fn run_gguf(
    model: &Path,
    tokens: &[u32],
    scratch: &Path,
) -> Result<(Stages, Vec<f32>, Dims), AdapterError> {
    let mapped = MappedGGUFModel::from_path(model).map_err(|e| AdapterError::bad(e.to_string()))?;
    let m =
        OwnedQuantizedModel::from_mapped(&mapped).map_err(|e| AdapterError::bad(e.to_string()))?;
    let c = m.config();
    let dims = (c.num_layers, c.q_dim(), c.kv_dim());
    let mut cache = OwnedQuantizedKVCache::new(c.num_layers, c.kv_dim(), tokens.len());
    let mut tensors = BTreeMap::new();
    let mut logits = Vec::new();
    for (pos, &tok) in tokens.iter().enumerate() {
        let dir = scratch.join(format!("p{pos}"));
        per_op_tap::set_plan(Some(plan(&dir)));
        let out = m.forward_single_with_cache(tok, &mut cache, pos);
        per_op_tap::set_plan(None);
        logits.extend(out.map_err(|e| AdapterError::failed(e.to_string()))?);
        collect(&dir, &mut tensors)?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The logits are the function's result; the tap's copy of them is the same bytes.
    tensors.remove(&("lm_head".to_string(), None));
    Ok((tensors, logits, dims))
}

/// realizar's APR path: every position's stages written at once by its traced pass, which
/// computes the last position's logits only; every position's logits come from realizar's
/// production decode path (`forward_with_cache`, what generation runs), one position at a
/// time, so a long prompt costs one pass, not one pass per prefix.
pub fn run_apr(
    model: &Path,
    tokens: &[u32],
    scratch: &Path,
) -> Result<(Stages, Vec<f32>, Dims), AdapterError> {
    let m = AprTransformer::from_apr_file(model).map_err(|e| AdapterError::bad(e.to_string()))?;
    let c = &m.config;
    let head = c
        .explicit_head_dim
        .unwrap_or(c.hidden_dim / c.num_heads.max(1));
    let dims = (c.num_layers, c.num_heads * head, c.num_kv_heads * head);
    let dir = scratch.join("apr");
    m.forward_traced_with_plan(tokens, Some(&plan(&dir)))
        .map_err(|e| AdapterError::failed(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    collect(&dir, &mut tensors)?;
    tensors.remove(&("lm_head".to_string(), None));
    let mut cache = AprKVCache::new(&m.config);
    let mut logits = Vec::new();
    for (pos, &tok) in tokens.iter().enumerate() {
        let row = m
            .forward_with_cache(tok, &mut cache, pos)
            .map_err(|e| AdapterError::failed(e.to_string()))?;
        logits.extend(row);
    }
    Ok((tensors, logits, dims))
}

/// realizar's stage tensors as pv's slots: `qkv_matmul` (or `qkv_bias`) split into q, k
/// and v where the widths allow, every other stage through [`STAGES`].
pub fn to_slots(tensors: Stages, n: usize, (_, q_dim, kv_dim): Dims) -> Tensors {
    let qkv_stage = if tensors.keys().any(|(s, _)| s == "qkv_bias") {
        "qkv_bias"
    } else {
        "qkv_matmul"
    };
    let mut slots: BTreeMap<(Slot, Option<usize>), Vec<f32>> = BTreeMap::new();
    for ((stage, layer), data) in tensors {
        if stage == qkv_stage {
            // q, k, v side by side in each row, where the widths allow.
            let w = data.len() / n;
            if w == q_dim + 2 * kv_dim && data.len() % n == 0 {
                for (slot, from, len) in [
                    (Slot::Q, 0, q_dim),
                    (Slot::K, q_dim, kv_dim),
                    (Slot::V, q_dim + kv_dim, kv_dim),
                ] {
                    let part: Vec<f32> = data
                        .chunks_exact(w)
                        .flat_map(|r| r[from..from + len].to_vec())
                        .collect();
                    slots.insert((slot, layer), part);
                }
            }
            continue;
        }
        if let Some(&(_, slot)) = STAGES.iter().find(|(s, _)| *s == stage) {
            slots.insert((slot, layer), data);
        }
    }
    slots
}
