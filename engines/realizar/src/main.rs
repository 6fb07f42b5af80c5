//! realizar as a pv engine: `pv-engine-realizar engine-trace MODEL --tokens ...` answers
//! the `pv-engine/1` protocol (pv's `src/trace/engine.rs`) from realizar's own code.
//!
//! - A `.gguf` runs through `OwnedQuantizedModel::forward_single_with_cache`, realizar's
//!   production path, one position at a time, with realizar's per-op tap armed: each stage
//!   tensor it emits is read back after each position.
//! - A `.apr` runs through `AprTransformer::forward_traced_with_plan`, which writes the
//!   stage tensors of every position at once.
//!
//! The statistics are pv's ([`TraceObserver`]) over realizar's raw tensors, so they are
//! computed as pv computes its own. realizar's stages map onto pv's slots through
//! [`STAGES`]. A stage realizar does not emit on a path (the production GGUF path fuses the
//! FFN's gate, up and activation; neither path emits Gemma's q/k or post norms) is simply
//! not in the trace: pv reports it as not captured.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use pv::model::{Observer, Slot};
use pv::trace::engine::{EngineArgs, write_dumps};
use pv::trace::{ForwardTrace, TraceObserver, assemble};
use realizar::apr_transformer::AprTransformer;
use realizar::gguf::{MappedGGUFModel, OwnedQuantizedKVCache, OwnedQuantizedModel};
use realizar::inference_trace::gpu_stage_dump::per_op_tap;
use realizar::inference_trace::save_tensor::read_tensor_file;
use realizar::inference_trace::save_tensor_plan::SaveTensorPlan;
use realizar::inference_trace::save_tensor_stage::SaveTensorStage;

/// The engine, as the trace names it.
const ENGINE: &str = "realizar (aprender-serve 0.72.3)";

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

#[derive(Parser)]
#[command(version, about = "realizar as a pv engine (pv-engine/1)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// One traced pass of realizar on given token ids, answered as pv's trace (a `.gguf`
    /// through realizar's GGUF path, a `.apr` through its APR path).
    EngineTrace(EngineArgs),
}

/// realizar's stage tensors by (stage name, layer; `None` for a whole-model stage), every
/// position's rows in order.
type Stages = BTreeMap<(String, Option<usize>), Vec<f32>>;

/// A failure: exit 2 for the model or the request, 1 for the engine.
struct Failure(u8, String);

fn bad(msg: impl Into<String>) -> Failure {
    Failure(2, msg.into())
}

fn failed(msg: impl Into<String>) -> Failure {
    Failure(1, msg.into())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let Command::EngineTrace(a) = cli.command;
    match run(&a) {
        Ok(trace) => {
            println!(
                "{}",
                serde_json::to_string(&trace).expect("a trace serialises")
            );
            ExitCode::SUCCESS
        }
        Err(Failure(code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The widths pv's reading of the model gives q and k/v, to split realizar's fused qkv.
fn qkv_widths(model: &Path, apr: bool) -> Result<(usize, usize, usize), Failure> {
    let config = if apr {
        let f = pv::apr::AprFile::open(model).map_err(|e| bad(e.to_string()))?;
        pv::model::apr_meta::read(&f)
            .map_err(|e| bad(e.to_string()))?
            .config
    } else {
        let f = pv::gguf::GgufFile::open(model).map_err(|e| bad(e.to_string()))?;
        pv::model::ModelConfig::try_from(&f).map_err(|e| bad(e.to_string()))?
    };
    Ok((config.n_layer, config.q_dim(), config.kv_dim()))
}

/// Every stage file under `dir` (`layer-N/STAGE.bin` or `STAGE.bin`), appended to
/// `tensors` under (stage, layer).
fn collect(
    dir: &Path,
    tensors: &mut BTreeMap<(String, Option<usize>), Vec<f32>>,
) -> Result<(), Failure> {
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
                .ok_or_else(|| failed(format!("unexpected directory {}", p.display())))?;
            for f in std::fs::read_dir(&p)
                .map_err(|e| failed(e.to_string()))?
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
            .ok_or_else(|| failed(format!("unexpected file {}", path.display())))?
            .to_string();
        let mut f = std::fs::File::open(&path).map_err(|e| failed(e.to_string()))?;
        let (_, values) =
            read_tensor_file(&mut f).map_err(|e| failed(format!("{}: {e:?}", path.display())))?;
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
fn run_gguf(model: &Path, tokens: &[u32], scratch: &Path) -> Result<(Stages, Vec<f32>), Failure> {
    let mapped = MappedGGUFModel::from_path(model).map_err(|e| bad(e.to_string()))?;
    let m = OwnedQuantizedModel::from_mapped(&mapped).map_err(|e| bad(e.to_string()))?;
    let c = m.config();
    let mut cache = OwnedQuantizedKVCache::new(c.num_layers, c.kv_dim(), tokens.len());
    let mut tensors = BTreeMap::new();
    let mut logits = Vec::new();
    for (pos, &tok) in tokens.iter().enumerate() {
        let dir = scratch.join(format!("p{pos}"));
        per_op_tap::set_plan(Some(plan(&dir)));
        let out = m.forward_single_with_cache(tok, &mut cache, pos);
        per_op_tap::set_plan(None);
        logits.extend(out.map_err(|e| failed(e.to_string()))?);
        collect(&dir, &mut tensors)?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The logits are the function's result; the tap's copy of them is the same bytes.
    tensors.remove(&("lm_head".to_string(), None));
    Ok((tensors, logits))
}

/// realizar's APR path, every position's stages written at once. It computes the logits of
/// the last position only, so each earlier position's come from the same traced pass over
/// the prefix that ends there.
fn run_apr(model: &Path, tokens: &[u32], scratch: &Path) -> Result<(Stages, Vec<f32>), Failure> {
    let m = AprTransformer::from_apr_file(model).map_err(|e| bad(e.to_string()))?;
    let dir = scratch.join("apr");
    m.forward_traced_with_plan(tokens, Some(&plan(&dir)))
        .map_err(|e| failed(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    collect(&dir, &mut tensors)?;
    let last = tensors
        .remove(&("lm_head".to_string(), None))
        .ok_or_else(|| failed("realizar's APR path emitted no lm_head stage"))?;
    let mut logits = Vec::with_capacity(last.len() * tokens.len());
    for end in 1..tokens.len() {
        let t = m
            .forward_traced(&tokens[..end])
            .map_err(|e| failed(e.to_string()))?;
        logits.extend(t.logits);
    }
    logits.extend(last);
    Ok((tensors, logits))
}

fn run(a: &EngineArgs) -> Result<ForwardTrace, Failure> {
    if a.tokens.is_empty() {
        return Err(bad("no tokens"));
    }
    let apr = a.model.extension().is_some_and(|e| e == "apr");
    let (n_layer, q_dim, kv_dim) = qkv_widths(&a.model, apr)?;
    let scratch = std::env::temp_dir().join(format!("pv-engine-realizar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = if apr {
        run_apr(&a.model, &a.tokens, &scratch)
    } else {
        run_gguf(&a.model, &a.tokens, &scratch)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let (tensors, logits) = result?;
    let n = a.tokens.len();
    let capture = a.capture().map_err(bad)?;
    let mut obs = TraceObserver::new(n_layer, a.per_token, capture);
    let width = |name: &str, data: &[f32]| -> Result<usize, Failure> {
        match data.len() % n {
            0 if !data.is_empty() => Ok(data.len() / n),
            _ => Err(failed(format!(
                "stage {name}: {} values for {n} tokens",
                data.len()
            ))),
        }
    };
    let mut per_layer: BTreeMap<Slot, usize> = BTreeMap::new();
    let mut see = |obs: &mut TraceObserver,
                   layer: Option<usize>,
                   slot: Slot,
                   mut data: Vec<f32>,
                   w: usize| {
        let layer = if slot.info().per_layer { layer } else { None };
        if let Some(l) = layer {
            if l >= n_layer {
                return;
            }
            *per_layer.entry(slot).or_default() += 1;
        }
        obs.capture(layer, slot, &mut data, w);
    };
    let qkv_stage = if tensors.keys().any(|(s, _)| s == "qkv_bias") {
        "qkv_bias"
    } else {
        "qkv_matmul"
    };
    for ((stage, layer), data) in &tensors {
        let w = width(stage, data)?;
        if stage == qkv_stage {
            // q, k, v side by side in each row, where the widths allow.
            if w == q_dim + 2 * kv_dim {
                for (slot, from, len) in [
                    (Slot::Q, 0, q_dim),
                    (Slot::K, q_dim, kv_dim),
                    (Slot::V, q_dim + kv_dim, kv_dim),
                ] {
                    let part: Vec<f32> = data
                        .chunks_exact(w)
                        .flat_map(|r| r[from..from + len].to_vec())
                        .collect();
                    see(&mut obs, *layer, slot, part, len);
                }
            }
            continue;
        }
        if let Some(&(_, slot)) = STAGES.iter().find(|(s, _)| s == stage) {
            see(&mut obs, *layer, slot, data.clone(), w);
        }
    }
    let vocab = width("lm_head", &logits)?;
    see(&mut obs, None, Slot::Logits, logits.clone(), vocab);
    // The slots realizar gave in every layer are the trace's; any other is not captured.
    let slots: Vec<Slot> = per_layer
        .iter()
        .filter(|&(_, &count)| count == n_layer)
        .map(|(&s, _)| s)
        .collect();
    let path = if apr {
        "apr: AprTransformer::forward_traced_with_plan"
    } else {
        "gguf: OwnedQuantizedModel::forward_single_with_cache"
    };
    let (mut trace, captured) = assemble(
        &format!("{ENGINE} {path}"),
        &a.tokens,
        obs,
        &slots,
        &logits[(n - 1) * vocab..],
        a.top_k,
    )
    .ok_or_else(|| failed("realizar gave no embedding or final norm"))?;
    for l in &mut trace.layers {
        l.0.retain(|s, _| slots.contains(s));
    }
    if let Some(dir) = &a.dump {
        let kept: Vec<_> = captured
            .into_iter()
            .filter(|c| c.layer.is_none() || slots.contains(&c.slot))
            .collect();
        write_dumps(dir, &kept).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    }
    Ok(trace)
}
