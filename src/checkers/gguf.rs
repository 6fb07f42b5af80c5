//! Checkers of the GGUF engine's traced forward: every sub-FFN slot filled
//! (FFN-GGUF-001), and logits bit-identical to the production forward (FFN-GGUF-002).

use serde_json::{Value, json};

use super::context::{CheckError, Context, Input, Measured, bytes_input, model_path, typed_params};
use super::judge::{Judged, Judgement, arr, uint};
use super::params::{CanonicalModel, TracePromptParams};
use crate::model::{OwnedQuantizedModel, Slot, with_threads};
use crate::tokenizer::Tokenizer;
use crate::trace::{ForwardTrace, TracedForward};

/// The GGUF model of a test, its tokenizer, the prompt's tokens, and the file as an input.
pub struct Loaded {
    /// The engine.
    pub model: OwnedQuantizedModel,
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// The file as an evidence input.
    pub input: Input,
}

/// Loads the test's GGUF model and tokenises the prompt once.
pub fn load(ctx: &Context, m: &CanonicalModel, prompt: &str) -> Result<Loaded, CheckError> {
    let path = model_path(ctx, &m.file)?;
    (ctx.progress)(&format!("loading and hashing {}", path.display()));
    let model = OwnedQuantizedModel::open(&path)?;
    let input = bytes_input(&path, model.file().bytes());
    let tokenizer = Tokenizer::from_gguf(model.file())?;
    let tokens = tokenizer.encode(prompt)?;
    Ok(Loaded {
        model,
        tokens,
        input,
    })
}

/// Per layer, the finite-value count of each of `slots` (`"missing"` where a layer lacks
/// one): what the slot checkers record.
pub fn slot_counts(trace: &ForwardTrace, slots: &[Slot]) -> Vec<Value> {
    trace
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let mut row = serde_json::Map::new();
            row.insert("layer".into(), json!(l));
            for &s in slots {
                let v = layer
                    .get(s)
                    .map_or(json!("missing"), |st| json!(st.all.count));
                row.insert(s.name().into(), v);
            }
            Value::Object(row)
        })
        .collect()
}

/// Judges recorded slot counts: every layer has every slot of `slots` with exactly
/// `tokens x width(slot)` finite values; the problems found, one line each.
pub fn count_problems(
    m: &Value,
    slots: &[Slot],
    width: impl Fn(Slot) -> Result<Option<u64>, String>,
) -> Result<Vec<String>, String> {
    let n = arr(m, "/tokens")?.len() as u64;
    let mut problems = Vec::new();
    for (i, row) in arr(m, "/counts_per_layer")?.iter().enumerate() {
        let l = uint(row, "/layer")?;
        if l != i as u64 {
            return Err(format!("counts_per_layer/{i} is layer {l}"));
        }
        for &s in slots {
            let Some(v) = row.get(s.name()) else {
                if s.info().added_later {
                    // A record made before this slot was traced.
                    continue;
                }
                problems.push(format!("layer {l} {}: missing", s.name()));
                continue;
            };
            let Some(count) = v.as_u64() else {
                problems.push(format!("layer {l} {}: {v}", s.name()));
                continue;
            };
            if let Some(w) = width(s)? {
                let want = n * w;
                if count != want {
                    problems.push(format!(
                        "layer {l} {}: {count} finite values of {want}",
                        s.name()
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// The widths a slot checker records (`widths` in its measurements), read back to give each
/// slot's width. Records made before the query width was recorded have queries as wide as
/// the residual stream.
pub fn recorded_width(m: &Value, slot: Slot) -> Result<Option<u64>, String> {
    use crate::model::tensors::Dim;
    let Some(w) = m.get("widths") else {
        return Ok(None);
    };
    let key = match slot.info().width {
        Dim::Embd => "d_model",
        Dim::Q if w.get("q").is_none() => "d_model",
        Dim::Q => "q",
        Dim::Kv => "kv",
        Dim::Head => "head",
        Dim::Ff => "d_ff",
        Dim::Vocab => "vocab",
    };
    uint(m, &format!("/widths/{key}")).map(Some)
}

/// The per-layer slots a record counted: those it names (`slots`), or, in records made
/// before it named them, the llama family's.
pub fn recorded_slots(m: &Value) -> Result<Vec<Slot>, String> {
    match m.get("slots") {
        None => Ok(Slot::layer_slots(crate::model::Arch::Llama.spec())),
        Some(_) => arr(m, "/slots")?
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(Slot::from_name)
                    .ok_or_else(|| format!("slots: {v} is not a slot"))
            })
            .collect(),
    }
}

/// The widths a slot checker records for `cfg`.
pub fn widths_of(cfg: &crate::model::ModelConfig) -> Value {
    json!({
        "d_model": cfg.n_embd,
        "d_ff": cfg.n_ff,
        "q": cfg.q_dim(),
        "kv": cfg.kv_dim(),
        "head": cfg.head_dim,
        "vocab": cfg.vocab_size,
    })
}

/// FFN-GGUF-001: `forward_traced` on the GGUF model, counting each sub-FFN slot's values.
pub fn sub_ffn_slots_filled(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: TracePromptParams = typed_params(p)?;
    let m = load(ctx, &p.model, &p.prompt)?;
    let cfg = &m.model.config;
    (ctx.progress)(&format!(
        "tracing the GGUF engine ({} tokens)",
        m.tokens.len()
    ));
    let trace = with_threads(ctx.threads, || m.model.forward_traced(&m.tokens))?;
    Ok(Measured {
        measurements: json!({
            "tokens": m.tokens,
            "layers": trace.layers.len(),
            "expected_layers": cfg.n_layer,
            "widths": widths_of(cfg),
            "counts_per_layer": slot_counts(&trace, &Slot::sub_ffn().collect::<Vec<_>>()),
        }),
        inputs: vec![m.input],
    })
}

/// FFN-GGUF-001's judge: every layer, every sub-FFN slot, `tokens x width` finite values.
pub fn judge_slots_filled(j: &Judged) -> Result<Judgement, String> {
    let m = j.measurements;
    let sub_ffn: Vec<Slot> = Slot::sub_ffn().collect();
    let mut problems = count_problems(m, &sub_ffn, |s| recorded_width(m, s))?;
    let (layers, expected) = (uint(m, "/layers")?, uint(m, "/expected_layers")?);
    let rows = arr(m, "/counts_per_layer")?.len() as u64;
    if layers != expected || rows != expected {
        problems.push(format!(
            "{layers} layers traced ({rows} counted), the model has {expected}"
        ));
    }
    let passed = problems.is_empty();
    let report = format!(
        "{layers} layers x {} sub-FFN slots over {} tokens: {}\n{}",
        sub_ffn.len(),
        arr(m, "/tokens")?.len(),
        if passed {
            "all filled, no NaN/Inf"
        } else {
            "PROBLEMS"
        },
        problems.join("\n")
    );
    Ok(Judgement::pass_fail(passed, report))
}

/// FFN-GGUF-002: forward and forward_traced at 1 thread and at all, logits compared bit by bit.
pub fn traced_logits_bit_identical(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: TracePromptParams = typed_params(p)?;
    let m = load(ctx, &p.model, &p.prompt)?;
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = Vec::new();
    let mut bits_by_threads = Vec::new();
    for threads in [1, all.max(ctx.threads)] {
        (ctx.progress)(&format!(
            "forward and forward_traced at {threads} thread(s)"
        ));
        let (plain, traced) = with_threads(threads, || {
            Ok::<_, CheckError>((
                m.model.forward(&m.tokens)?,
                m.model
                    .forward_traced_with(&m.tokens, &Default::default())?
                    .logits,
            ))
        })?;
        let differing = plain
            .data
            .iter()
            .zip(&traced.data)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count()
            + plain.data.len().abs_diff(traced.data.len());
        runs.push(json!({
            "threads": threads,
            "positions": plain.n_positions(),
            "logits_compared": plain.data.len(),
            "differing_bits": differing,
        }));
        bits_by_threads.push(plain.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    Ok(Measured {
        measurements: json!({
            "tokens": m.tokens,
            "runs": runs,
            "same_bits_at_every_thread_count": bits_by_threads.windows(2).all(|w| w[0] == w[1]),
        }),
        inputs: vec![m.input],
    })
}

/// FFN-GGUF-002's judge: some logits compared in every run, none differing.
pub fn judge_bit_identical(j: &Judged) -> Result<Judgement, String> {
    let runs = arr(j.measurements, "/runs")?;
    let mut passed = !runs.is_empty();
    let mut lines = Vec::new();
    for r in runs {
        let (threads, compared, positions, differ) = (
            uint(r, "/threads")?,
            uint(r, "/logits_compared")?,
            uint(r, "/positions")?,
            uint(r, "/differing_bits")?,
        );
        passed &= differ == 0 && compared > 0;
        lines.push(format!(
            "{threads} thread(s): {compared} logits over {positions} positions, {differ} differ"
        ));
    }
    Ok(Judgement::pass_fail(passed, lines.join("\n")))
}
