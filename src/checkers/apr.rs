//! Checkers that involve the APR reference engine: the APR/GGUF std ratio that decides
//! H1 from H2 (FFN-GGUF-003), and the APR sibling contract's telemetry checks.

use serde_json::{Value, json};

use super::context::{CheckError, Context, Input, Measured, typed_params};
use super::gguf::{self, count_problems, recorded_slots, recorded_width, slot_counts, widths_of};
use super::judge::{Judged, Judgement, agrees, arr, flag, num, text, uint};
use super::load::{apr_path, load_apr};
use super::params::{EquationParams, StdRatioParams, TracePromptParams};
use crate::model::{FfnAct, Slot, with_threads};
use crate::trace::{CaptureSpec, TraceOptions, TracedForward, check_parity};

/// FFN-GGUF-003: both engines traced on the same tokens; per layer, the std of one slot in
/// both scopes.
pub fn std_ratio(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: StdRatioParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    if let Some(name) = p.engine.and_then(|e| e.external()) {
        return external_std_ratio(&p, name, ctx);
    }
    // One engine at a time: the GGUF model is traced and unmapped before the APR file is
    // mapped, so peak memory is the larger model's, not the sum (a 7B f16 reference is 15 GB).
    let gguf::Loaded {
        model,
        tokens,
        input: gguf_input,
    } = gguf::load(ctx, &p.model, &p.prompt)?;
    (ctx.progress)(&format!(
        "tracing the GGUF engine ({} tokens)",
        tokens.len()
    ));
    let tg = with_threads(ctx.threads, || model.forward_traced(&tokens))?;
    drop(model);
    let gguf_path = ctx.models.join(&p.model.file);
    let (apr, apr_input) = load_apr(ctx, &p.model, p.reference.as_ref(), &gguf_path)?;
    // The APR file's own tokenizer, if it has one, is only compared: both engines run on
    // the GGUF tokenizer's ids.
    let apr_tokens = match &apr.tokenizer {
        Some(t) => Some(crate::tokenizer::Tokenizer::from_spec(t)?.encode(&p.prompt)?),
        None => None,
    };
    (ctx.progress)(&format!("tracing the APR engine ({} tokens)", tokens.len()));
    let ta = with_threads(ctx.threads, || apr.forward_traced(&tokens))?;
    check_parity(&ta, &tg)?;
    std_ratio_rows(&p, &tokens, &ta, &tg, apr_tokens.map(|t| t == tokens)).map(|measurements| {
        Measured {
            measurements,
            inputs: vec![gguf_input, apr_input],
        }
    })
}

/// `apr_gguf_std_ratio` with an external engine on both files (`engine: realizar`): its
/// GGUF path on the model, its APR path on the reference, both on the GGUF tokenizer's ids.
fn external_std_ratio(
    p: &StdRatioParams,
    name: &str,
    ctx: &Context,
) -> Result<Measured, CheckError> {
    let gguf_path = super::context::model_path(ctx, &p.model.file)?;
    let (gguf_input, _) = super::context::file_input(&gguf_path)?;
    let file =
        crate::gguf::GgufFile::open(&gguf_path).map_err(|e| CheckError::Input(e.to_string()))?;
    let tokens = crate::tokenizer::Tokenizer::from_gguf(&file)?.encode(&p.prompt)?;
    drop(file);
    let apr_path = apr_path(ctx, &p.model, p.reference.as_ref(), &gguf_path)?;
    let (apr_input, _) = super::context::file_input(&apr_path)?;
    let (xg, engine_input) = super::load::external(ctx, name, &gguf_path)?;
    let (xa, _) = super::load::external(ctx, name, &apr_path)?;
    (ctx.progress)(&format!(
        "tracing {name}'s GGUF path ({} tokens)",
        tokens.len()
    ));
    let tg = xg.forward_traced(&tokens)?;
    (ctx.progress)(&format!(
        "tracing {name}'s APR path ({} tokens)",
        tokens.len()
    ));
    let ta = xa.forward_traced(&tokens)?;
    if let Some(m) = crate::trace::parity(&ta, &tg, [true, true])?
        .mismatched
        .into_iter()
        .find(|m| m.slot == p.slot && m.layer == Some(p.layer))
    {
        return Err(CheckError::Input(format!(
            "{} at layer {}: shapes differ ({} from the APR path, {} from the GGUF path): no std ratio can be measured",
            p.slot.name(),
            p.layer,
            m.shapes[0],
            m.shapes[1]
        )));
    }
    for t in [&tg, &ta] {
        if t.layers.iter().any(|l| l.get(p.slot).is_none()) {
            return Err(CheckError::Input(format!(
                "{} did not capture {}: the ratio cannot be measured",
                t.engine,
                p.slot.name()
            )));
        }
    }
    let mut m = std_ratio_rows(p, &tokens, &ta, &tg, None)?;
    m["engines"] = json!({"gguf": tg.engine, "apr": ta.engine});
    Ok(Measured {
        measurements: m,
        inputs: vec![gguf_input, apr_input, engine_input],
    })
}

/// The per-layer std table of `p.slot` and the ratios at `p.layer`, from the APR and GGUF
/// traces of one token list.
fn std_ratio_rows(
    p: &StdRatioParams,
    tokens: &[u32],
    ta: &crate::trace::ForwardTrace,
    tg: &crate::trace::ForwardTrace,
    apr_tokenizer_agrees: Option<bool>,
) -> Result<Value, CheckError> {
    if p.layer >= tg.layers.len() {
        return Err(CheckError::Params(format!(
            "layer {} does not exist; the model has {} layers",
            p.layer,
            tg.layers.len()
        )));
    }
    let mut rows = Vec::new();
    for (l, (la, lg)) in ta.layers.iter().zip(&tg.layers).enumerate() {
        let missing = || CheckError::Params(format!("slot {} is not per-layer", p.slot.name()));
        let (a, g) = (
            la.get(p.slot).ok_or_else(missing)?,
            lg.get(p.slot).ok_or_else(missing)?,
        );
        rows.push(json!({
            "layer": l,
            "gguf_std_all": g.all.std, "apr_std_all": a.all.std, "ratio_all": a.all.std / g.all.std,
            "gguf_std_last": g.last.std, "apr_std_last": a.last.std, "ratio_last": a.last.std / g.last.std,
            "scope_all": g.all.scope, "scope_last": g.last.scope,
        }));
    }
    let at = &rows[p.layer];
    Ok(json!({
            "tokens": tokens,
            "apr_tokenizer_agrees": apr_tokenizer_agrees,
            "parity": "ok: same tokens, slots, layers and scopes",
            "slot": p.slot,
            "layer": p.layer,
            "band": p.band,
            "ratio_all": at["ratio_all"],
            "ratio_last": at["ratio_last"],
            "per_layer": rows,
    }))
}

/// FFN-GGUF-003's judge: the ratios at the params' layer, recomputed from the recorded
/// stds, inside the band in both scopes (H1) or not (H2); and the per-layer table.
pub fn judge_std_ratio(j: &Judged) -> Result<Judgement, String> {
    let p: StdRatioParams = serde_json::from_value(j.params.clone()).map_err(|e| e.to_string())?;
    let m = j.measurements;
    let [lo, hi] = p.band;
    let rows = arr(m, "/per_layer")?;
    if p.layer >= rows.len() {
        return Err(format!(
            "layer {} is not among the {} recorded",
            p.layer,
            rows.len()
        ));
    }
    if text(m, "/slot")? != p.slot.name() || uint(m, "/layer")? != p.layer as u64 {
        return Err("the recorded slot or layer is not the params'".into());
    }
    let n = arr(m, "/tokens")?.len();
    let mut table = format!(
        "{:>5} {:>12} {:>12} {:>8}   {:>12} {:>12} {:>8}\n",
        "layer", "gguf std", "apr std", "ratio", "gguf last", "apr last", "ratio"
    );
    let inside = |r: f64| (lo..=hi).contains(&r);
    let (mut ra, mut rl) = (f64::NAN, f64::NAN);
    for (i, row) in rows.iter().enumerate() {
        if uint(row, "/layer")? != i as u64 {
            return Err(format!("per_layer/{i} is not layer {i}"));
        }
        let (ga, aa, gl, al) = (
            num(row, "/gguf_std_all")?,
            num(row, "/apr_std_all")?,
            num(row, "/gguf_std_last")?,
            num(row, "/apr_std_last")?,
        );
        // A std that is not finite is recorded as null (JSON has no NaN or infinity): the
        // ratio cannot be re-derived, and is taken as NaN, which no band holds (H2 when it is
        // the params' layer). Finite stds must give the recorded ratios exactly.
        let finite = [ga, aa, gl, al].iter().all(|x| x.is_finite());
        let (r_all, r_last) = if finite {
            (aa / ga, al / gl)
        } else {
            (f64::NAN, f64::NAN)
        };
        if finite {
            agrees(
                &format!("layer {i} ratio_all"),
                num(row, "/ratio_all")?,
                r_all,
            )?;
            agrees(
                &format!("layer {i} ratio_last"),
                num(row, "/ratio_last")?,
                r_last,
            )?;
        }
        if i == p.layer {
            (ra, rl) = (r_all, r_last);
        }
        // `!` marks a ratio outside the band; no trailing blanks on in-band rows.
        let mark = |r: f64, last: bool| match (inside(r), last) {
            (true, true) => "",
            (true, false) => " ",
            (false, _) => "!",
        };
        table += &format!(
            "{:>4}{} {:>12.6} {:>12.6} {:>8.4}{} {:>12.6} {:>12.6} {:>8.4}{}\n",
            i,
            if i == p.layer { "*" } else { " " },
            ga,
            aa,
            r_all,
            mark(r_all, false),
            gl,
            al,
            r_last,
            mark(r_last, true)
        );
    }
    if ra.is_finite() || rl.is_finite() {
        agrees("ratio_all", num(m, "/ratio_all")?, ra)?;
        agrees("ratio_last", num(m, "/ratio_last")?, rl)?;
    }
    let h1 = inside(ra) && inside(rl);
    let verdict = if h1 { "H1" } else { "H2" };
    let engines = match (m.pointer("/engines/apr"), m.pointer("/engines/gguf")) {
        (Some(Value::String(a)), Some(Value::String(g))) => format!("APR: {a}\nGGUF: {g}\n"),
        _ => String::new(),
    };
    let report = format!(
        "{engines}{} std ratio APR/GGUF per layer, scopes all ({n} tokens) and last (1 token, position {}); band [{lo}, {hi}]\n{table}\
         layer {}: ratio(all) = {ra:.4}, ratio(last) = {rl:.4} -> {verdict}: {}",
        p.slot.name(),
        n.saturating_sub(1),
        p.layer,
        if h1 {
            "the paths differ by quantization only (normal model behaviour)"
        } else {
            "outside the band: a bug on one path; bisect with pv diff"
        }
    );
    Ok(Judgement {
        verdict: verdict.into(),
        passed: h1,
        report,
    })
}

/// FFN-APR-001: the APR engine's trace, counting every per-layer slot and the three global
/// ones.
pub fn trace_fields_superset(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: TracePromptParams = typed_params(p)?;
    let g = gguf::load(ctx, &p.model, &p.prompt)?;
    let (apr, input) = load_apr(ctx, &p.model, None, &ctx.models.join(&p.model.file))?;
    (ctx.progress)(&format!(
        "tracing the APR engine ({} tokens)",
        g.tokens.len()
    ));
    let t = with_threads(ctx.threads, || apr.forward_traced(&g.tokens))?;
    let c = &apr.config;
    let slots = Slot::layer_slots(c.spec());
    Ok(Measured {
        measurements: json!({
            "tokens": g.tokens,
            "layers": t.layers.len(),
            "expected_layers": c.n_layer,
            "widths": widths_of(c),
            "slots": slots.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "counts_per_layer": slot_counts(&t, &slots),
            "globals": {
                "embd": t.embd.as_ref().map(|s| s.all.count),
                "final_norm": t.final_norm.as_ref().map(|s| s.all.count),
                "logits": t.logits.all.count,
            },
        }),
        inputs: vec![g.input, input],
    })
}

/// FFN-APR-001's judge: every slot present in every layer with `tokens x width` finite
/// values (and embd, final_norm, logits likewise). Records made before widths were
/// recorded are judged on presence and on the problems they list.
pub fn judge_fields_superset(j: &Judged) -> Result<Judgement, String> {
    let m = j.measurements;
    let n = arr(m, "/tokens")?.len() as u64;
    let widths = m.get("widths");
    let w = |k: &str| -> Result<Option<u64>, String> {
        widths.map(|_| uint(m, &format!("/widths/{k}"))).transpose()
    };
    let (d, vocab) = (w("d_model")?, w("vocab")?);
    let slots = recorded_slots(m)?;
    let mut problems = count_problems(m, &slots, |s| recorded_width(m, s))?;
    if let (Some(d), Some(v)) = (d, vocab) {
        for (name, width) in [("embd", d), ("final_norm", d), ("logits", v)] {
            let got = uint(m, &format!("/globals/{name}"))?;
            if got != n * width {
                problems.push(format!("{name}: {got} finite values of {}", n * width));
            }
        }
        let expected = uint(m, "/expected_layers")?;
        if uint(m, "/layers")? != expected || arr(m, "/counts_per_layer")?.len() as u64 != expected
        {
            problems.push(format!(
                "the model has {expected} layers; not all were traced"
            ));
        }
    } else {
        for p in arr(m, "/problems")? {
            problems.push(p.as_str().unwrap_or("a recorded problem").to_string());
        }
    }
    let passed = problems.is_empty();
    let report = format!(
        "{} layers x {} slots (+ embd, final_norm, logits) over {n} tokens: {}\n{}",
        uint(m, "/layers")?,
        slots.len(),
        if passed {
            "all present and filled"
        } else {
            "PROBLEMS"
        },
        problems.join("\n")
    );
    Ok(Judgement::pass_fail(passed, report))
}

/// Captures `slots` at the params' layers on the APR engine.
fn capture(
    p: &EquationParams,
    ctx: &Context,
    slots: &[Slot],
) -> Result<(crate::trace::Traced, Vec<Input>), CheckError> {
    p.check().map_err(CheckError::Params)?;
    let g = gguf::load(ctx, &p.model, &p.prompt)?;
    let (apr, input) = load_apr(ctx, &p.model, None, &ctx.models.join(&p.model.file))?;
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
    Ok((t, vec![g.input, input]))
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

/// Judges an equation checker's rows: every layer of the params captured, each of the
/// named errors at most the params' tolerance; the recorded worst error agrees.
fn judge_equations(j: &Judged, errors: &[&str], what: &str) -> Result<Judgement, String> {
    let p: EquationParams = serde_json::from_value(j.params.clone()).map_err(|e| e.to_string())?;
    let m = j.measurements;
    let rows = arr(m, "/per_layer")?;
    let layers: Vec<u64> = rows
        .iter()
        .map(|r| uint(r, "/layer"))
        .collect::<Result<_, _>>()?;
    if layers != p.layers.iter().map(|&l| l as u64).collect::<Vec<_>>() {
        return Err(format!(
            "recorded layers {layers:?} are not the params' {:?}",
            p.layers
        ));
    }
    let mut worst = 0f64;
    for r in rows {
        let e = if flag(r, "/captured")? {
            errors
                .iter()
                .map(|k| num(r, &format!("/{k}")))
                .try_fold(0f64, |w, e| {
                    e.map(|e| if e.is_nan() { f64::INFINITY } else { w.max(e) })
                })?
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
    }
    let recorded = num(m, "/worst_relative_error")?;
    if !(recorded.is_nan() && worst.is_infinite()) {
        agrees("worst_relative_error", recorded, worst)?;
    }
    let passed = worst <= p.tolerance;
    Ok(Judgement::pass_fail(
        passed,
        format!(
            "{what}: worst relative error {worst:.3e} (tolerance {:e})",
            p.tolerance
        ),
    ))
}

/// FFN-APR-002: captures gate, up, act and inner; per layer, how far act is from the
/// contract's activation of gate (`silu` unless the params say `gelu`) and inner from
/// act * up.
pub fn sub_ffn_equations(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: EquationParams = typed_params(p)?;
    let act_fn = p.activation.unwrap_or(FfnAct::Silu);
    let slots = [Slot::FfnGate, Slot::FfnUp, Slot::FfnAct, Slot::FfnInner];
    let (t, inputs) = capture(&p, ctx, &slots)?;
    let mut rows = Vec::new();
    let mut worst = 0f64;
    for &l in &p.layers {
        let [gate, up, act, inner] = slots.map(|s| tensor(&t, l, s));
        let e_act = rel_err(act, gate.iter().map(|&g| activation(act_fn, f64::from(g))));
        let e_inner = rel_err(
            inner,
            act.iter()
                .zip(up)
                .map(|(&a, &u)| f64::from(a) * f64::from(u)),
        );
        let complete = [gate, up, act, inner]
            .iter()
            .all(|x| !x.is_empty() && x.len() == gate.len());
        worst = worst.max(if complete {
            e_act.max(e_inner)
        } else {
            f64::INFINITY
        });
        rows.push(json!({"layer": l, "act_rel_err": e_act, "inner_rel_err": e_inner, "captured": complete}));
    }
    Ok(Measured {
        measurements: json!({"per_layer": rows, "activation": act_fn.name(), "worst_relative_error": worst, "tolerance": p.tolerance}),
        inputs,
    })
}

/// The activations the equations name, in f64: SiLU, and GELU in its tanh form.
fn activation(f: FfnAct, x: f64) -> f64 {
    match f {
        FfnAct::Silu => x / (1.0 + (-x).exp()),
        FfnAct::Gelu => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
    }
}

/// FFN-APR-002's judge. Records made before the activation was a parameter name their
/// errors `silu_gate_rel_err` and `swiglu_inner_rel_err`.
pub fn judge_sub_ffn_equations(j: &Judged) -> Result<Judgement, String> {
    let p: EquationParams = serde_json::from_value(j.params.clone()).map_err(|e| e.to_string())?;
    let act = p.activation.unwrap_or(FfnAct::Silu).name();
    let old = arr(j.measurements, "/per_layer")?
        .first()
        .is_some_and(|r| r.get("silu_gate_rel_err").is_some());
    let keys: [&str; 2] = if old {
        ["silu_gate_rel_err", "swiglu_inner_rel_err"]
    } else {
        ["act_rel_err", "inner_rel_err"]
    };
    judge_equations(
        j,
        &keys,
        &format!("ffn_act = {act}(ffn_gate), ffn_inner = ffn_act * ffn_up"),
    )
}

/// FFN-APR-003: captures ffn_inp, ffn_down, ffn_post_norm and l_out; per layer, how far
/// l_out is from ffn_inp plus the FFN's output as the residual adds it: ffn_down, or its
/// post-norm in families that normalise it (Gemma 3).
pub fn ffn_down_residual(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: EquationParams = typed_params(p)?;
    let slots = [Slot::FfnInp, Slot::FfnDown, Slot::FfnPostNorm, Slot::LOut];
    let (t, inputs) = capture(&p, ctx, &slots)?;
    let mut rows = Vec::new();
    let mut worst = 0f64;
    for &l in &p.layers {
        let [inp, down, post, out] = slots.map(|s| tensor(&t, l, s));
        let added = if post.is_empty() { down } else { post };
        let complete = !out.is_empty() && inp.len() == out.len() && added.len() == out.len();
        let e = if complete {
            rel_err(
                out,
                inp.iter()
                    .zip(added)
                    .map(|(&a, &b)| f64::from(a) + f64::from(b)),
            )
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
        let mut row = json!({"layer": l, "residual_rel_err": e, "captured": complete});
        if !post.is_empty() {
            row["added"] = json!("ffn_post_norm");
        }
        rows.push(row);
    }
    Ok(Measured {
        measurements: json!({"per_layer": rows, "worst_relative_error": worst, "tolerance": p.tolerance}),
        inputs,
    })
}

/// FFN-APR-003's judge.
pub fn judge_ffn_down_residual(j: &Judged) -> Result<Judgement, String> {
    judge_equations(j, &["residual_rel_err"], "l_out = ffn_inp + ffn_down")
}
