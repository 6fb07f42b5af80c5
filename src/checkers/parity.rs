//! Generic checkers, set by params alone, that compare two engines over several prompts:
//! - `trace_agreement`: every slot of every layer against a calibrated limits table
//!   (layer-local or end to end), naming the first slot, metric and channel outside it;
//! - `logits_agreement`: the output distributions, position by position (KL, top-1, top-k);
//! - `decode_consistency`: greedy steps through the KV cache against a full recomputation
//!   of each prefix and against the reference engine, step by step.
//!
//! Each records what its judge needs and nothing it does not: `trace_agreement` keeps the
//! per-slot, per-layer table (worst of each metric over the prompts, mean gain).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::context::{CheckError, Context, Input, Measured, file_input, model_path, typed_params};
use super::judge::{Judged, Judgement};
use super::load::{external, load_apr};
use super::params::{
    CanonicalModel, DecodeParams, Engine, LogitsAgreementParams, Side, TraceAgreementParams,
    Verdicts,
};
use crate::apr::AprFile;
use crate::model::{
    AprTransformer, Faulty, NoopObserver, OwnedQuantizedModel, argmax, with_threads,
};
use crate::tokenizer::Tokenizer;
use crate::trace::engine::ExternalModel;
use crate::trace::{
    SetSummary, Thresholds, TracedForward, compare_models, judge_summary, kl_divergence,
    not_captured_lines, summarize,
};

/// An engine loaded with its model.
// A checker holds two or three of these for its whole run; boxing would save nothing.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Gguf(OwnedQuantizedModel),
    Apr(AprTransformer),
    /// An external engine on its file: each pass is one run of its executable.
    External(ExternalModel),
}

impl Loaded {
    fn traced(&self) -> &(dyn TracedForward + Sync) {
        match self {
            Loaded::Gguf(m) => m,
            Loaded::Apr(m) => m,
            Loaded::External(m) => m,
        }
    }

    /// Logits of every position of `tokens`, with `fault` (if any) injected (pv's engines
    /// only: an external engine refuses a fault).
    fn logits(
        &self,
        tokens: &[u32],
        fault: Option<crate::model::Fault>,
    ) -> Result<crate::model::Logits, CheckError> {
        let mut noop = NoopObserver;
        let mut obs = Faulty::new(fault, &mut noop);
        Ok(match self {
            Loaded::Gguf(m) => m.forward_observed(tokens, &mut obs)?,
            Loaded::Apr(m) => m.forward_observed(tokens, &mut obs)?,
            Loaded::External(m) => {
                let options = crate::trace::TraceOptions {
                    fault,
                    ..Default::default()
                };
                m.forward_traced_with(tokens, &options)?.logits
            }
        })
    }
}

/// The two sides of a comparison, the tokenizer of the test's model, and the files read.
struct Sides {
    sides: [Loaded; 2],
    tokenizer: Tokenizer,
    inputs: Vec<Input>,
}

impl Sides {
    fn load(ctx: &Context, m: &CanonicalModel, sides: &[Side; 2]) -> Result<Self, CheckError> {
        let path = model_path(ctx, &m.file)?;
        (ctx.progress)(&format!("hashing {}", path.display()));
        let (input, _) = file_input(&path)?;
        let mut inputs = vec![input];
        let file =
            crate::gguf::GgufFile::open(&path).map_err(|e| CheckError::Input(e.to_string()))?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let mut load = |side: &Side| -> Result<Loaded, CheckError> {
            let (loaded, input, engine_input) = match side {
                Side::Engine(Engine::Gguf) => {
                    (ctx.progress)(&format!("loading {}", path.display()));
                    (Loaded::Gguf(OwnedQuantizedModel::open(&path)?), None, None)
                }
                Side::Engine(Engine::Apr) => {
                    let (apr, input) = load_apr(ctx, m, None, &path)?;
                    (Loaded::Apr(apr), Some(input), None)
                }
                Side::Engine(e) => {
                    let name = e.external().expect("pv's engines are matched above");
                    let (x, engine) = external(ctx, name, &path)?;
                    (Loaded::External(x), None, Some(engine))
                }
                Side::File { engine, model } => {
                    let p = model_path(ctx, &model.file)?;
                    (ctx.progress)(&format!("loading {}", p.display()));
                    let (input, _) = file_input(&p)?;
                    match engine {
                        Engine::Gguf => (
                            Loaded::Gguf(OwnedQuantizedModel::open(&p)?),
                            Some(input),
                            None,
                        ),
                        Engine::Apr => {
                            let f =
                                AprFile::open(&p).map_err(|e| CheckError::Input(e.to_string()))?;
                            (Loaded::Apr(AprTransformer::load(f)?), Some(input), None)
                        }
                        e => {
                            let name = e.external().expect("pv's engines are matched above");
                            let (x, engine) = external(ctx, name, &p)?;
                            (Loaded::External(x), Some(input), Some(engine))
                        }
                    }
                }
            };
            for i in [input, engine_input].into_iter().flatten() {
                if !inputs.contains(&i) {
                    inputs.push(i);
                }
            }
            Ok(loaded)
        };
        let sides = [load(&sides[0])?, load(&sides[1])?];
        Ok(Sides {
            sides,
            tokenizer,
            inputs,
        })
    }
}

pub(super) fn verdict(v: &Verdicts, passed: bool, report: String) -> Judgement {
    Judgement {
        verdict: if passed { &v.pass } else { &v.fail }.clone(),
        passed,
        report,
    }
}

fn typed<T: for<'de> Deserialize<'de>>(v: &Value, what: &str) -> Result<T, String> {
    T::deserialize(v).map_err(|e| format!("{what}: {e}"))
}

/// The rows a judge reads from the measurements under `key`: one list per prompt.
fn recorded<T: for<'de> Deserialize<'de>>(j: &Judged, key: &str) -> Result<Vec<Vec<T>>, String> {
    typed(
        j.measurements.get(key).unwrap_or(&Value::Null),
        &format!("measurements/{key}"),
    )
}

/// Every row with its prompt and its index within the prompt.
fn flat<T>(rows: &[Vec<T>]) -> Vec<(usize, usize, &T)> {
    rows.iter()
        .enumerate()
        .flat_map(|(i, r)| r.iter().enumerate().map(move |(k, x)| (i, k, x)))
        .collect()
}

/// What `trace_agreement` records.
#[derive(Serialize, Deserialize)]
struct TraceMeasurements {
    /// The engines as their traces name themselves (version and path included), A then B.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    engines: Option<[String; 2]>,
    /// Tokens per prompt.
    tokens: Vec<usize>,
    /// The per-slot table over all prompts.
    summary: SetSummary,
}

/// `trace_agreement`: both engines traced on every prompt and compared slot by slot.
pub fn trace_agreement(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: TraceAgreementParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    let e = Sides::load(ctx, &p.model, &p.sides)?;
    let (a, b) = (e.sides[0].traced(), e.sides[1].traced());
    let mut diffs: Vec<crate::trace::TraceDiff> = Vec::with_capacity(p.prompts.len());
    let mut tokens = Vec::new();
    for (i, prompt) in p.prompts.iter().enumerate() {
        (ctx.progress)(&format!("comparing prompt {}/{}", i + 1, p.prompts.len()));
        let t = e.tokenizer.encode(prompt)?;
        tokens.push(t.len());
        let (fault, mode) = (ctx.fault, p.mode);
        let d = with_threads(ctx.threads, || {
            compare_models(a, b, &t, fault, mode, &Thresholds::default())
        })
        .map_err(|err| match err {
            crate::trace::CompareError::Model(m) => CheckError::Model(m),
            crate::trace::CompareError::Parity(x) => CheckError::Parity(x),
            e @ crate::trace::CompareError::NoLayerInputs { .. } => {
                CheckError::Input(e.to_string())
            }
        })?;
        diffs.push(d);
    }
    let mut summary = summarize(&diffs);
    // A verdict needs something to rest on: at least one slot past the embedding lookup that
    // both engines captured and the test's limits judge. An engine that exposes none of
    // them (realizar 0.8.6's GGUF path against a table without the logits) gets no verdict
    // rather than a vacuous H1.
    let judged = summary.slots.iter().any(|s| {
        s.slot != crate::model::Slot::Embd
            && p.judges(s.slot, s.layer)
            && p.thresholds.slots.contains_key(&s.slot)
    });
    if !judged {
        let engines = diffs.first().map_or(String::new(), |d| {
            format!("{} and {}", d.engines.0, d.engines.1)
        });
        return Err(CheckError::Input(format!(
            "{engines} share no slot this test judges (beyond the embeddings): nothing to \
             judge; {}",
            not_captured_lines(&summary.not_captured).join("; ")
        )));
    }
    // Four significant digits are plenty for limits given to three, and halve the record.
    for w in summary.slots.iter_mut().flat_map(|s| s.worst.values_mut()) {
        w.value = round4(w.value);
    }
    // Geometric means are kept only where the test's limits judge them (a log-normal
    // bound), so the record does not carry a figure per metric nobody reads.
    for s in &mut summary.slots {
        s.gain_mean = round4(s.gain_mean);
        let judged = p.thresholds.limits(s.slot, s.layer);
        s.log_mean.retain(|m, _| {
            judged
                .iter()
                .any(|(j, b)| j == m && matches!(b, crate::trace::Bound::LogNormal { .. }))
        });
        for v in s.log_mean.values_mut() {
            *v = round4(*v);
        }
    }
    let engines = diffs
        .first()
        .map(|d| [d.engines.0.clone(), d.engines.1.clone()]);
    let m = TraceMeasurements {
        engines,
        tokens,
        summary,
    };
    Ok(Measured {
        measurements: serde_json::to_value(m).map_err(|e| CheckError::Input(e.to_string()))?,
        inputs: e.inputs,
    })
}

fn round4(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    // Rounding up near f64::MAX (the summary's stand-in for a non-finite deviation) would
    // overflow to infinity, which JSON cannot hold.
    format!("{v:.3e}")
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite())
        .unwrap_or(v)
}

/// `trace_agreement`'s judge: the recorded table against the params' limits.
pub fn judge_trace_agreement(j: &Judged) -> Result<Judgement, String> {
    let p: TraceAgreementParams = typed(j.params, "params")?;
    let m: TraceMeasurements = typed(j.measurements, "measurements")?;
    if m.summary.prompts != p.prompts.len() || m.tokens.len() != p.prompts.len() {
        return Err(format!(
            "measurements cover {} prompts; the params name {}",
            m.summary.prompts,
            p.prompts.len()
        ));
    }
    let violations: Vec<_> = judge_summary(&m.summary, &p.thresholds)
        .into_iter()
        .filter(|v| p.judges(v.slot, v.layer))
        .collect();
    let mut r = format!(
        "{} vs {}, {} prompts ({} tokens), {} capture points, {}:\n",
        p.sides[0].label(),
        p.sides[1].label(),
        p.prompts.len(),
        m.tokens.iter().sum::<usize>(),
        m.summary.slots.len(),
        match p.mode {
            crate::trace::CompareMode::Local => "each layer on the reference's input",
            crate::trace::CompareMode::EndToEnd => "end to end",
        }
    );
    for line in not_captured_lines(&m.summary.not_captured) {
        let _ = writeln!(r, "{line}");
    }
    match violations.first() {
        None => r.push_str("every slot within its calibrated limits\n"),
        Some(first) => {
            let _ = writeln!(
                r,
                "first outside limits: {} ({} violations in all)",
                m.summary.slots[first.index].layer.map_or(
                    first.slot.name().to_string(),
                    |l| format!("{} at layer {l}", first.slot.name())
                ),
                violations.len()
            );
            for v in violations.iter().filter(|v| v.index == first.index) {
                let on = v.prompt.map_or("mean of all prompts".to_string(), |i| {
                    format!("prompt {}", i + 1)
                });
                let _ = writeln!(r, "  {v} [{on}]");
            }
        }
    }
    Ok(verdict(&p.verdicts, violations.is_empty(), r))
}

/// How many of `row`'s logits are larger than the one at `token`.
fn rank(row: &[f32], token: usize) -> usize {
    let v = row[token];
    row.iter().filter(|&&x| x > v).count()
}

/// One position's comparison.
#[derive(Serialize, Deserialize)]
struct Position {
    /// KL(reference || under test), nats.
    kl: f64,
    /// Whether the argmaxes agree.
    top1: bool,
    /// Rank of the tested engine's argmax among the reference's logits (0 = its argmax).
    rank: usize,
}

fn position(tested: &[f32], reference: &[f32]) -> Position {
    let a = argmax(tested);
    Position {
        kl: kl_divergence(reference, tested),
        top1: a == argmax(reference),
        rank: rank(reference, a),
    }
}

/// `logits_agreement`: every position of every prompt on both engines.
pub fn logits_agreement(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: LogitsAgreementParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    let e = Sides::load(ctx, &p.model, &p.sides)?;
    let mut prompts = Vec::new();
    for (i, prompt) in p.prompts.iter().enumerate() {
        (ctx.progress)(&format!("prompt {}/{}", i + 1, p.prompts.len()));
        let t = e.tokenizer.encode(prompt)?;
        let fault = ctx.fault;
        let (la, lb) = with_threads(ctx.threads, || {
            Ok::<_, CheckError>((e.sides[0].logits(&t, fault)?, e.sides[1].logits(&t, None)?))
        })?;
        let rows: Vec<Position> = (0..la.n_positions())
            .map(|t| position(la.row(t), lb.row(t)))
            .collect();
        prompts.push(rows);
    }
    Ok(Measured {
        measurements: json!({ "positions": prompts }),
        inputs: e.inputs,
    })
}

/// `logits_agreement`'s judge.
pub fn judge_logits_agreement(j: &Judged) -> Result<Judgement, String> {
    let p: LogitsAgreementParams = typed(j.params, "params")?;
    let rows: Vec<Vec<Position>> = recorded(j, "positions")?;
    if rows.len() != p.prompts.len() || rows.iter().any(|r| r.is_empty()) {
        return Err(format!(
            "measurements cover {} prompts; the params name {}",
            rows.len(),
            p.prompts.len()
        ));
    }
    let all = flat(&rows);
    let (wi, wt, worst) = all
        .iter()
        .copied()
        .max_by(|a, b| a.2.kl.total_cmp(&b.2.kl))
        .expect("positions");
    let top1 = all.iter().filter(|x| x.2.top1).count() as f64 / all.len() as f64;
    let max_rank = all.iter().map(|x| x.2.rank).max().unwrap_or(0);
    let kl_ok = worst.kl <= p.max_kl;
    let top1_ok = top1 >= p.min_top1;
    let rank_ok = max_rank < p.top_k;
    let mark = |ok: bool| if ok { "ok" } else { "FAILS" };
    let report = format!(
        "{} vs {}, {} prompts, {} positions:\n  max KL {:.4e} nats (prompt {}, position {}) <= {:e}: {}\n  \
         top-1 agreement {:.3} >= {}: {}\n  worst rank of the tested argmax {} < top_k {}: {}\n",
        p.sides[0].label(),
        p.sides[1].label(),
        p.prompts.len(),
        all.len(),
        worst.kl,
        wi + 1,
        wt,
        p.max_kl,
        mark(kl_ok),
        top1,
        p.min_top1,
        mark(top1_ok),
        max_rank,
        p.top_k,
        mark(rank_ok)
    );
    Ok(verdict(&p.verdicts, kl_ok && top1_ok && rank_ok, report))
}

/// One decode step's comparisons.
#[derive(Serialize, Deserialize)]
struct Step {
    /// KL(recomputed || cached), nats.
    kl_recompute: f64,
    /// Whether the cached and recomputed argmaxes agree.
    top1_recompute: bool,
    /// KL(reference || cached), nats.
    kl_reference: f64,
    /// Whether the reference's argmax is the cached one.
    top1_reference: bool,
}

/// `decode_consistency`: per prompt, the prompt pass as generation runs it (step 0, the last
/// position's logits only) and `steps` greedy steps through the GGUF engine's cache; each
/// step's logits against the GGUF engine on the whole prefix at once and against the
/// APR engine on the whole prefix.
pub fn decode_consistency(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: DecodeParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    let e = Sides::load(
        ctx,
        &p.model,
        &[Side::Engine(Engine::Gguf), Side::Engine(Engine::Apr)],
    )?;
    let [Loaded::Gguf(gguf), Loaded::Apr(apr)] = &e.sides else {
        return Err(CheckError::Input(
            "decode_consistency runs gguf against apr".into(),
        ));
    };
    let mut out = Vec::new();
    for (i, prompt) in p.prompts.iter().enumerate() {
        (ctx.progress)(&format!("decoding prompt {}/{}", i + 1, p.prompts.len()));
        let t = e.tokenizer.encode(prompt)?;
        let fault = ctx.fault;
        let steps = with_threads(ctx.threads, || -> Result<Vec<Step>, CheckError> {
            let mut noop = NoopObserver;
            let mut obs = Faulty::new(fault, &mut noop);
            let (fed, rows) = gguf.decode_greedy_observed(&t, p.steps, &mut obs)?;
            let mut prefix = t.clone();
            prefix.extend(&fed);
            // Step s (1..=steps) is the pass that fed fed[s-1]: its logits follow
            // prefix[..t.len() + s]. Step 0 is the prompt pass as generation runs it (logits
            // of the last position only, the other rows dropped in the last layer), held to
            // the all-positions pass's last row.
            let whole = gguf.forward(&prefix)?;
            let reference = apr.forward(&prefix)?;
            Ok((0..rows.len())
                .map(|s| {
                    let pos = t.len() + s - 1;
                    let (c, w, r) = (&rows[s], whole.row(pos), reference.row(pos));
                    Step {
                        kl_recompute: kl_divergence(w, c),
                        top1_recompute: argmax(w) == argmax(c),
                        kl_reference: kl_divergence(r, c),
                        top1_reference: argmax(r) == argmax(c),
                    }
                })
                .collect())
        })?;
        out.push(steps);
    }
    Ok(Measured {
        measurements: json!({ "steps": out }),
        inputs: e.inputs,
    })
}

/// `decode_consistency`'s judge.
pub fn judge_decode_consistency(j: &Judged) -> Result<Judgement, String> {
    let p: DecodeParams = typed(j.params, "params")?;
    let rows: Vec<Vec<Step>> = recorded(j, "steps")?;
    // Records made before the prompt pass was checked hold the steps alone; since, the
    // prompt pass comes first (step 0).
    let with_prompt = rows.first().is_some_and(|r| r.len() == p.steps + 1);
    let per_prompt = p.steps + usize::from(with_prompt);
    if rows.len() != p.prompts.len() || rows.iter().any(|r| r.len() != per_prompt) {
        return Err(format!(
            "measurements cover {} prompts x {:?} steps; the params name {} x {} (and the prompt pass)",
            rows.len(),
            rows.iter().map(Vec::len).collect::<Vec<_>>(),
            p.prompts.len(),
            p.steps
        ));
    }
    let first_step = usize::from(!with_prompt);
    let all = flat(&rows);
    let worst = |f: fn(&Step) -> f64| {
        all.iter()
            .copied()
            .max_by(|a, b| f(a.2).total_cmp(&f(b.2)))
            .map(|(i, s, x)| (f(x), i + 1, s + first_step))
            .expect("steps")
    };
    let (kr, kri, krs) = worst(|s| s.kl_recompute);
    let (kf, kfi, kfs) = worst(|s| s.kl_reference);
    let rate =
        |f: fn(&Step) -> bool| all.iter().filter(|x| f(x.2)).count() as f64 / all.len() as f64;
    let top1_re = rate(|s| s.top1_recompute);
    let top1_ref = rate(|s| s.top1_reference);
    let checks = [
        kr <= p.max_kl_recompute,
        top1_re >= p.min_top1_recompute,
        kf <= p.max_kl_reference,
        top1_ref >= p.min_top1_reference,
    ];
    let mark = |ok: bool| if ok { "ok" } else { "FAILS" };
    let report = format!(
        "{} prompts x {} greedy steps through the KV cache{}:\n  vs the whole prefix recomputed: max KL {:.4e} nats \
         (prompt {kri}, step {krs}) <= {:e}: {}; top-1 agreement {:.3} >= {}: {}\n  vs the APR engine: max KL \
         {:.4e} nats (prompt {kfi}, step {kfs}) <= {:e}: {}; top-1 agreement {:.3} >= {}: {}\n",
        p.prompts.len(),
        p.steps,
        if with_prompt {
            ", after the prompt pass as generation runs it (step 0: last position only)"
        } else {
            ""
        },
        kr,
        p.max_kl_recompute,
        mark(checks[0]),
        top1_re,
        p.min_top1_recompute,
        mark(checks[1]),
        kf,
        p.max_kl_reference,
        mark(checks[2]),
        top1_ref,
        p.min_top1_reference,
        mark(checks[3]),
    );
    Ok(verdict(&p.verdicts, checks.iter().all(|&c| c), report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Slot;
    use crate::trace::{Limit, Metric, SlotSummary, Values, Worst};
    use std::collections::BTreeMap;

    fn params(thresholds: &Thresholds) -> Value {
        json!({
            "model": {"file": "m.gguf", "sha256": "0".repeat(64)},
            "sides": ["gguf", "apr"],
            "prompts": ["a", "b"],
            "mode": "local",
            "thresholds": thresholds,
            "verdicts": {"pass": "H1", "fail": "H2"},
        })
    }

    fn summary(gain_mean: f64, err: f64) -> Value {
        let worst = BTreeMap::from([(
            Metric::ChannelErr,
            Worst {
                value: err,
                prompt: 1,
                channel: Some(7),
            },
        )]);
        let slots = (0..2)
            .map(|l| SlotSummary {
                layer: Some(l),
                slot: Slot::Q,
                gain_mean: if l == 1 { gain_mean } else { 0.0 },
                worst: worst.clone(),
                log_mean: Default::default(),
                shapes: None,
            })
            .collect();
        json!({"tokens": [3, 4], "summary": SetSummary { prompts: 2, slots, not_captured: Vec::new(), distinct_tokens: Vec::new() }})
    }

    #[test]
    fn trace_agreement_judges_bounds_and_bands_and_names_the_place() {
        let mut t = Thresholds {
            local: true,
            calibration_prompts: 10,
            ..Default::default()
        };
        t.slots.insert(
            Slot::Q,
            BTreeMap::from([
                (Metric::ChannelErr, Limit::Max(Values::Every(0.5))),
                (
                    Metric::Gain,
                    Limit::Band {
                        mean: Values::PerLayer(vec![0.0, 0.001]),
                        sd: Values::Every(0.001),
                    },
                ),
            ]),
        );
        let p = params(&t);
        assert_eq!(
            (crate::contract::catalog::find("trace_agreement")
                .unwrap()
                .check_params)(&p),
            Ok(())
        );
        let judge = |m: &Value| {
            judge_trace_agreement(&Judged {
                contract_id: "c",
                params: &p,
                measurements: m,
            })
        };
        let ok = judge(&summary(0.001, 0.2)).unwrap();
        assert_eq!(
            (ok.verdict.as_str(), ok.passed),
            ("H1", true),
            "{}",
            ok.report
        );
        // A 2% scale at layer 1: the mean gain leaves its band.
        let bad = judge(&summary(-0.0196, 0.2)).unwrap();
        assert_eq!(bad.verdict, "H2");
        assert!(bad.report.contains("q at layer 1"), "{}", bad.report);
        // A zeroed channel: named with its channel and prompt.
        let bad = judge(&summary(0.0, 0.9)).unwrap();
        assert!(bad.report.contains("q at layer 0") && bad.report.contains("channel 7"));
        assert!(bad.report.contains("prompt 2"), "{}", bad.report);
        // Measurements of another prompt count, or malformed, are refused.
        let mut m = summary(0.0, 0.2);
        m["tokens"] = json!([3]);
        assert!(judge(&m).is_err());
        assert!(judge(&json!({"summary": 1})).is_err());
        // Slots and layers narrow what is judged.
        let mut narrow = p.clone();
        narrow["layers"] = json!([{"from": 1, "to": 1}]);
        let j = judge_trace_agreement(&Judged {
            contract_id: "c",
            params: &narrow,
            measurements: &summary(0.0, 0.9),
        })
        .unwrap();
        assert!(j.report.contains("q at layer 1"), "{}", j.report);
        narrow["slots"] = json!(["k"]);
        let j = judge_trace_agreement(&Judged {
            contract_id: "c",
            params: &narrow,
            measurements: &summary(0.0, 0.9),
        })
        .unwrap();
        assert!(j.passed, "{}", j.report);
        narrow["layers"] = json!([{"from": 2, "to": 1}]);
        assert!(
            (crate::contract::catalog::find("trace_agreement")
                .unwrap()
                .check_params)(&narrow)
            .is_err()
        );
    }

    #[test]
    fn rounding_keeps_the_non_finite_stand_in_finite() {
        assert_eq!(round4(f64::MAX), f64::MAX);
        assert_eq!(round4(0.00123456), 0.001235);
    }

    #[test]
    fn logits_and_decode_judges_check_every_bound() {
        let p = json!({
            "model": {"file": "m.gguf", "sha256": "0".repeat(64)},
            "sides": ["gguf", "apr"], "prompts": ["a"],
            "max_kl": 0.1, "min_top1": 0.5, "top_k": 2,
        });
        let pos = |kl: f64, top1: bool, rank: usize| json!({"kl": kl, "top1": top1, "rank": rank});
        let judge = |m: Value| {
            judge_logits_agreement(&Judged {
                contract_id: "c",
                params: &p,
                measurements: &m,
            })
            .unwrap()
        };
        assert!(judge(json!({"positions": [[pos(0.01, true, 0), pos(0.05, false, 1)]]})).passed);
        assert!(!judge(json!({"positions": [[pos(0.2, true, 0)]]})).passed);
        assert!(!judge(json!({"positions": [[pos(0.01, false, 1), pos(0.01, false, 1), pos(0.0, true, 0)]]})).passed);
        assert!(!judge(json!({"positions": [[pos(0.01, true, 2)]]})).passed);
        let d = json!({
            "model": {"file": "m.gguf", "sha256": "0".repeat(64)},
            "prompts": ["a"], "steps": 2,
            "max_kl_recompute": 0.01, "min_top1_recompute": 0.5,
            "max_kl_reference": 0.1, "min_top1_reference": 0.5,
        });
        let step = |kr: f64, tr: bool, kf: f64, tf: bool| json!({"kl_recompute": kr, "top1_recompute": tr, "kl_reference": kf, "top1_reference": tf});
        let judge = |m: Value| {
            judge_decode_consistency(&Judged {
                contract_id: "c",
                params: &d,
                measurements: &m,
            })
        };
        let good = step(0.001, true, 0.01, true);
        assert!(
            judge(json!({"steps": [[good.clone(), good.clone()]]}))
                .unwrap()
                .passed
        );
        let stale = step(0.5, false, 0.4, false);
        let r = judge(json!({"steps": [[good.clone(), stale.clone()]]})).unwrap();
        assert!(!r.passed && r.report.contains("step 2"), "{}", r.report);
        assert!(judge(json!({"steps": [[good]]})).is_err(), "a step missing");
        // Since the prompt pass is checked it is step 0: a fault there is named as such.
        let r = judge(json!({"steps": [[stale.clone(), good.clone(), good.clone()]]})).unwrap();
        assert!(!r.passed && r.report.contains("step 0"), "{}", r.report);
        assert!(r.report.contains("last position only"), "{}", r.report);
    }
}
