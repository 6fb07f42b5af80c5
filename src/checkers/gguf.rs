//! Checkers of the GGUF engine's traced forward: every sub-FFN slot filled
//! (FFN-GGUF-001), and logits bit-identical to the production forward (FFN-GGUF-002).

use serde_json::{Value, json};

use super::context::{
    CheckError, Context, Input, Outcome, file_input, model_path, pass_fail, typed_params,
};
use super::params::{CanonicalModel, TracePromptParams};
use crate::model::{OwnedQuantizedModel, Slot, with_threads};
use crate::tokenizer::Tokenizer;
use crate::trace::{ActivationStats, ForwardTrace, TracedForward};

/// The GGUF model of a test, its tokenizer, the prompt's tokens, and whether it is the
/// canonical file.
pub struct Loaded {
    /// The engine.
    pub model: OwnedQuantizedModel,
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// The file's digest matches the contract's.
    pub canonical: bool,
    /// The file as an evidence input.
    pub input: Input,
}

/// Loads the test's GGUF model and tokenises the prompt once.
pub fn load(ctx: &Context, m: &CanonicalModel, prompt: &str) -> Result<Loaded, CheckError> {
    let path = model_path(ctx, &m.file)?;
    (ctx.progress)(&format!("hashing {}", path.display()));
    let (input, sha) = file_input(&path)?;
    (ctx.progress)(&format!("loading {}", path.display()));
    let model = OwnedQuantizedModel::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(model.file())?;
    let tokens = tokenizer.encode(prompt)?;
    Ok(Loaded {
        model,
        tokens,
        canonical: sha == m.sha256,
        input,
    })
}

/// Checks that a slot's `all` scope covers `tokens x width` finite values.
pub fn slot_filled(s: &ActivationStats, tokens: usize, width: usize) -> Result<(), String> {
    let want = tokens * width;
    if s.scope.elements != want {
        return Err(format!(
            "covers {} values, expected {want}",
            s.scope.elements
        ));
    }
    if s.nan + s.inf > 0 {
        return Err(format!("{} NaN and {} Inf", s.nan, s.inf));
    }
    if s.count != want {
        return Err(format!("{} finite values of {want}", s.count));
    }
    Ok(())
}

/// Width of a slot for a model of embedding width `d`, FFN width `ff` and K/V width `kv`.
pub fn slot_width(slot: Slot, d: usize, ff: usize, kv: usize) -> usize {
    match slot {
        Slot::FfnGate | Slot::FfnUp | Slot::FfnAct | Slot::FfnInner => ff,
        Slot::K | Slot::V => kv,
        _ => d,
    }
}

/// Every given slot of every layer of `trace` filled; the problems found, per layer.
pub fn check_slots(
    trace: &ForwardTrace,
    slots: &[Slot],
    widths: impl Fn(Slot) -> usize,
) -> (Vec<Value>, Vec<String>) {
    let n = trace.tokens.len();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (l, layer) in trace.layers.iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("layer".into(), json!(l));
        for &s in slots {
            let verdict = match layer.get(s) {
                None => Err("missing".to_string()),
                Some(st) => slot_filled(&st.all, n, widths(s)),
            };
            match verdict {
                Ok(()) => {
                    row.insert(s.name().into(), json!(layer.get(s).map(|x| x.all.count)));
                }
                Err(e) => {
                    problems.push(format!("layer {l} {}: {e}", s.name()));
                    row.insert(s.name().into(), json!(e));
                }
            }
        }
        rows.push(Value::Object(row));
    }
    (rows, problems)
}

/// FFN-GGUF-001: `forward_traced` fills every sub-FFN slot of every layer.
pub fn sub_ffn_slots_filled(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
    let p: TracePromptParams = typed_params(p)?;
    let m = load(ctx, &p.model, &p.prompt)?;
    let cfg = &m.model.config;
    (ctx.progress)(&format!(
        "tracing the GGUF engine ({} tokens)",
        m.tokens.len()
    ));
    let trace = with_threads(ctx.threads, || m.model.forward_traced(&m.tokens))?;
    let (d, ff, kv) = (cfg.n_embd, cfg.n_ff, cfg.n_head_kv * cfg.head_dim);
    let (rows, problems) = check_slots(&trace, &Slot::FFN, |s| slot_width(s, d, ff, kv));
    let passed = problems.is_empty() && trace.layers.len() == cfg.n_layer;
    let report = format!(
        "{} layers x {} sub-FFN slots over {} tokens: {}\n{}",
        trace.layers.len(),
        Slot::FFN.len(),
        m.tokens.len(),
        if passed {
            "all filled, no NaN/Inf"
        } else {
            "PROBLEMS"
        },
        problems.join("\n")
    );
    Ok(Outcome {
        verdict: pass_fail(passed),
        passed,
        canonical: m.canonical,
        measurements: json!({
            "tokens": m.tokens,
            "layers": trace.layers.len(),
            "expected_layers": cfg.n_layer,
            "widths": {"d_model": d, "d_ff": ff},
            "counts_per_layer": rows,
            "problems": problems,
        }),
        inputs: vec![m.input],
        report,
    })
}

/// FFN-GGUF-002: traced logits equal `forward`'s bit for bit, at 1 thread and at all.
pub fn traced_logits_bit_identical(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
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
    let passed = runs.iter().all(|r| r["differing_bits"] == 0);
    let thread_invariant = bits_by_threads.windows(2).all(|w| w[0] == w[1]);
    let report = runs
        .iter()
        .map(|r| {
            format!(
                "{} thread(s): {} logits over {} positions, {} differ",
                r["threads"], r["logits_compared"], r["positions"], r["differing_bits"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Outcome {
        verdict: pass_fail(passed),
        passed,
        canonical: m.canonical,
        measurements: json!({
            "tokens": m.tokens,
            "runs": runs,
            "same_bits_at_every_thread_count": thread_invariant,
        }),
        inputs: vec![m.input],
        report,
    })
}
