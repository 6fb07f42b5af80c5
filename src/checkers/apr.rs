//! Checkers that involve the APR reference engine: the APR/GGUF std ratio that decides
//! H1 from H2 (FFN-GGUF-003), and the APR sibling contract's telemetry checks.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::context::{CheckError, Context, Input, Outcome, file_input, pass_fail, typed_params};
use super::gguf::{self, check_slots, slot_width};
use super::params::{CanonicalModel, EquationParams, StdRatioParams, TracePromptParams};
use crate::apr::AprFile;
use crate::gguf::GgufFile;
use crate::model::{AprDtype, AprTransformer, Slot, gguf_to_apr, with_threads};
use crate::trace::{CaptureSpec, TraceOptions, TracedForward, check_parity};

/// The APR sibling of the test's GGUF model, converted (f32, atomically) when absent.
fn apr_path(ctx: &Context, m: &CanonicalModel, gguf: &Path) -> Result<PathBuf, CheckError> {
    let apr = ctx.models.join(m.apr_file());
    if !apr.is_file() {
        (ctx.progress)(&format!(
            "converting {} to {} (f32; pv convert)",
            gguf.display(),
            apr.display()
        ));
        let file = GgufFile::open(gguf).map_err(|e| CheckError::Input(e.to_string()))?;
        gguf_to_apr(&file, AprDtype::F32)?
            .write(&apr)
            .map_err(|e| CheckError::Input(format!("{}: {e}", apr.display())))?;
    }
    Ok(apr)
}

/// Loads the APR engine of the test's model.
fn load_apr(
    ctx: &Context,
    m: &CanonicalModel,
    gguf: &Path,
) -> Result<(AprTransformer, Input), CheckError> {
    let path = apr_path(ctx, m, gguf)?;
    (ctx.progress)(&format!("loading {}", path.display()));
    let (input, _) = file_input(&path)?;
    let file = AprFile::open(&path).map_err(|e| CheckError::Input(e.to_string()))?;
    Ok((AprTransformer::load(&file)?, input))
}

/// FFN-GGUF-003: the APR/GGUF std ratio of one slot at one layer, in both scopes.
pub fn std_ratio(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
    let p: StdRatioParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    let g = gguf::load(ctx, &p.model, &p.prompt)?;
    let gguf_path = ctx.models.join(&p.model.file);
    let (apr, apr_input) = load_apr(ctx, &p.model, &gguf_path)?;
    let apr_tokens = crate::tokenizer::Tokenizer::from_spec(&apr.tokenizer)?.encode(&p.prompt)?;
    (ctx.progress)(&format!(
        "tracing the GGUF engine ({} tokens)",
        g.tokens.len()
    ));
    let tg = with_threads(ctx.threads, || g.model.forward_traced(&g.tokens))?;
    (ctx.progress)(&format!(
        "tracing the APR engine ({} tokens)",
        g.tokens.len()
    ));
    let ta = with_threads(ctx.threads, || apr.forward_traced(&g.tokens))?;
    check_parity(&ta, &tg)?;
    if p.layer >= tg.layers.len() {
        return Err(CheckError::Params(format!(
            "layer {} does not exist; the model has {} layers",
            p.layer,
            tg.layers.len()
        )));
    }
    let [lo, hi] = p.band;
    let mut rows = Vec::new();
    let mut table = format!(
        "{:>5} {:>12} {:>12} {:>8}   {:>12} {:>12} {:>8}\n",
        "layer", "gguf std", "apr std", "ratio", "gguf last", "apr last", "ratio"
    );
    for (l, (la, lg)) in ta.layers.iter().zip(&tg.layers).enumerate() {
        let (a, g) = (
            la.get(p.slot).ok_or_else(|| {
                CheckError::Params(format!("slot {} is not per-layer", p.slot.name()))
            })?,
            lg.get(p.slot).ok_or_else(|| {
                CheckError::Params(format!("slot {} is not per-layer", p.slot.name()))
            })?,
        );
        let ratio_all = a.all.std / g.all.std;
        let ratio_last = a.last.std / g.last.std;
        // `!` marks a ratio outside the band; no trailing blanks on in-band rows.
        let mark = |r: f64, last: bool| match ((lo..=hi).contains(&r), last) {
            (true, true) => "",
            (true, false) => " ",
            (false, _) => "!",
        };
        table += &format!(
            "{:>4}{} {:>12.6} {:>12.6} {:>8.4}{} {:>12.6} {:>12.6} {:>8.4}{}\n",
            l,
            if l == p.layer { "*" } else { " " },
            g.all.std,
            a.all.std,
            ratio_all,
            mark(ratio_all, false),
            g.last.std,
            a.last.std,
            ratio_last,
            mark(ratio_last, true)
        );
        rows.push(json!({
            "layer": l,
            "gguf_std_all": g.all.std, "apr_std_all": a.all.std, "ratio_all": ratio_all,
            "gguf_std_last": g.last.std, "apr_std_last": a.last.std, "ratio_last": ratio_last,
            "scope_all": g.all.scope, "scope_last": g.last.scope,
        }));
    }
    let at = &rows[p.layer];
    let (ra, rl) = (
        at["ratio_all"].as_f64().unwrap_or(f64::NAN),
        at["ratio_last"].as_f64().unwrap_or(f64::NAN),
    );
    let h1 = (lo..=hi).contains(&ra) && (lo..=hi).contains(&rl);
    let verdict = if h1 { "H1" } else { "H2" };
    let report = format!(
        "{} std ratio APR/GGUF per layer, scopes all ({} tokens) and last (1 token, position {}); band [{lo}, {hi}]\n{table}\
         layer {}: ratio(all) = {ra:.4}, ratio(last) = {rl:.4} -> {verdict}: {}",
        p.slot.name(),
        tg.tokens.len(),
        tg.tokens.len() - 1,
        p.layer,
        if h1 {
            "the paths differ by quantization only (normal model behaviour)"
        } else {
            "outside the band: a bug on one path; bisect with pv diff"
        }
    );
    Ok(Outcome {
        verdict: verdict.into(),
        passed: h1,
        canonical: g.canonical,
        measurements: json!({
            "tokens": g.tokens,
            "apr_tokenizer_agrees": apr_tokens == g.tokens,
            "parity": "ok: same tokens, slots, layers and scopes",
            "slot": p.slot,
            "layer": p.layer,
            "band": p.band,
            "ratio_all": ra,
            "ratio_last": rl,
            "per_layer": rows,
        }),
        inputs: vec![g.input, apr_input],
        report,
    })
}

/// FFN-APR-001: the APR trace has every pre-existing slot and every sub-FFN slot.
pub fn trace_fields_superset(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
    let p: TracePromptParams = typed_params(p)?;
    let g = gguf::load(ctx, &p.model, &p.prompt)?;
    let (apr, input) = load_apr(ctx, &p.model, &ctx.models.join(&p.model.file))?;
    (ctx.progress)(&format!(
        "tracing the APR engine ({} tokens)",
        g.tokens.len()
    ));
    let t = with_threads(ctx.threads, || apr.forward_traced(&g.tokens))?;
    let c = &apr.config;
    let (d, ff, kv) = (c.n_embd, c.n_ff, c.n_head_kv * c.head_dim);
    let (rows, mut problems) = check_slots(&t, &Slot::LAYER, |s| slot_width(s, d, ff, kv));
    let n = g.tokens.len();
    for (name, s, w) in [
        ("embd", &t.embd.all, d),
        ("final_norm", &t.final_norm.all, d),
        ("logits", &t.logits.all, c.vocab_size),
    ] {
        if let Err(e) = gguf::slot_filled(s, n, w) {
            problems.push(format!("{name}: {e}"));
        }
    }
    let passed = problems.is_empty() && t.layers.len() == c.n_layer;
    Ok(Outcome {
        verdict: pass_fail(passed),
        passed,
        canonical: g.canonical,
        measurements: json!({"tokens": g.tokens, "layers": t.layers.len(), "counts_per_layer": rows, "problems": problems}),
        inputs: vec![g.input, input],
        report: format!(
            "{} layers x {} slots (+ embd, final_norm, logits) over {n} tokens: {}\n{}",
            t.layers.len(),
            Slot::LAYER.len(),
            if passed {
                "all present and filled"
            } else {
                "PROBLEMS"
            },
            problems.join("\n")
        ),
    })
}

/// Captures `slots` at the params' layers on the APR engine.
fn capture(
    p: &EquationParams,
    ctx: &Context,
    slots: &[Slot],
) -> Result<(crate::trace::Traced, Vec<Input>, bool), CheckError> {
    p.check().map_err(CheckError::Params)?;
    let g = gguf::load(ctx, &p.model, &p.prompt)?;
    let (apr, input) = load_apr(ctx, &p.model, &ctx.models.join(&p.model.file))?;
    if let Some(&l) = p.layers.iter().find(|&&l| l >= apr.config.n_layer) {
        return Err(CheckError::Params(format!(
            "layer {l} does not exist; the model has {} layers",
            apr.config.n_layer
        )));
    }
    let opts = TraceOptions {
        capture: Some(CaptureSpec {
            slots: slots.to_vec(),
            layers: Some(p.layers.clone()),
        }),
        ..Default::default()
    };
    (ctx.progress)(&format!(
        "tracing the APR engine with capture ({} tokens)",
        g.tokens.len()
    ));
    let t = with_threads(ctx.threads, || apr.forward_traced_with(&g.tokens, &opts))?;
    Ok((t, vec![g.input, input], g.canonical))
}

fn tensor(t: &crate::trace::Traced, layer: usize, slot: Slot) -> &[f32] {
    t.captured
        .iter()
        .find(|c| c.layer == Some(layer) && c.slot == slot)
        .map_or(&[], |c| &c.data)
}

/// Largest |got - want| relative to the largest |got|, in f64.
fn rel_err(got: &[f32], want: impl Iterator<Item = f64>) -> f64 {
    let scale = got
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(f64::MIN_POSITIVE);
    got.iter()
        .zip(want)
        .fold(0f64, |m, (&g, w)| m.max((f64::from(g) - w).abs()))
        / scale
}

fn equation_outcome(
    rows: Vec<Value>,
    worst: f64,
    tol: f64,
    canonical: bool,
    inputs: Vec<Input>,
    what: &str,
) -> Outcome {
    let passed = worst <= tol;
    Outcome {
        verdict: pass_fail(passed),
        passed,
        canonical,
        report: format!("{what}: worst relative error {worst:.3e} (tolerance {tol:e})"),
        measurements: json!({"per_layer": rows, "worst_relative_error": worst, "tolerance": tol}),
        inputs,
    }
}

/// FFN-APR-002: `ffn_act = silu(ffn_gate)` and `ffn_inner = ffn_act * ffn_up`.
pub fn sub_ffn_equations(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
    let p: EquationParams = typed_params(p)?;
    let slots = [Slot::FfnGate, Slot::FfnUp, Slot::FfnAct, Slot::FfnInner];
    let (t, inputs, canonical) = capture(&p, ctx, &slots)?;
    let mut rows = Vec::new();
    let mut worst = 0f64;
    for &l in &p.layers {
        let [gate, up, act, inner] = slots.map(|s| tensor(&t, l, s));
        let silu = |x: f64| x / (1.0 + (-x).exp());
        let e_act = rel_err(act, gate.iter().map(|&g| silu(f64::from(g))));
        let e_inner = rel_err(
            inner,
            act.iter()
                .zip(up)
                .map(|(&a, &u)| f64::from(a) * f64::from(u)),
        );
        let complete = [gate, up, act, inner]
            .iter()
            .all(|x| !x.is_empty() && x.len() == gate.len());
        let e = if complete {
            e_act.max(e_inner)
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
        rows.push(json!({"layer": l, "silu_gate_rel_err": e_act, "swiglu_inner_rel_err": e_inner, "captured": complete}));
    }
    Ok(equation_outcome(
        rows,
        worst,
        p.tolerance,
        canonical,
        inputs,
        "ffn_act = silu(ffn_gate), ffn_inner = ffn_act * ffn_up",
    ))
}

/// FFN-APR-003: `l_out = ffn_inp + ffn_down` (ffn_down is taken before the residual add).
pub fn ffn_down_residual(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
    let p: EquationParams = typed_params(p)?;
    let slots = [Slot::FfnInp, Slot::FfnDown, Slot::LOut];
    let (t, inputs, canonical) = capture(&p, ctx, &slots)?;
    let mut rows = Vec::new();
    let mut worst = 0f64;
    for &l in &p.layers {
        let [inp, down, out] = slots.map(|s| tensor(&t, l, s));
        let complete = !out.is_empty() && inp.len() == out.len() && down.len() == out.len();
        let e = if complete {
            rel_err(
                out,
                inp.iter()
                    .zip(down)
                    .map(|(&a, &b)| f64::from(a) + f64::from(b)),
            )
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
        rows.push(json!({"layer": l, "residual_rel_err": e, "captured": complete}));
    }
    Ok(equation_outcome(
        rows,
        worst,
        p.tolerance,
        canonical,
        inputs,
        "l_out = ffn_inp + ffn_down",
    ))
}
