//! `reference_agreement`: pv's GGUF engine against figures another implementation (llama.cpp)
//! computed on the same model file, stored in the contract with their provenance.
//!
//! What a parity test cannot see, this one does: both sides of a parity test are fed the
//! same token ids by pv's tokenizer and run pv's all-positions pass, so a tokenizer bug or a
//! bug in the pass generation runs (last position only, then one token at a time through the
//! KV cache) is invisible there. Here the ids come from pv's tokenizer and are compared with
//! the reference's; the logits come from the generation pass on the reference's ids (so a
//! tokenizer fault does not hide a logits fault, or the other way round); the continuation
//! is generated as the reference generated it.
//!
//! The judge needs nothing but params and measurements: the figures are in the params (the
//! contract, which the gate reads from the base branch), pv's numbers in the measurements.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::context::{CheckError, Context, Measured, bytes_input, model_path, typed_params};
use super::judge::{Judged, Judgement};
use super::params::{ReferenceAgreementParams, ReferenceCase};
use crate::model::{Faulty, NoopObserver, OwnedQuantizedModel, top_k, with_threads};
use crate::tokenizer::Tokenizer;

/// What pv computed for one case.
#[derive(Debug, Serialize, Deserialize)]
struct CaseMeasured {
    /// pv's token ids for the case's text.
    tokens: Vec<u32>,
    /// The largest `top_k` logits of the prompt pass on the reference's ids (last position
    /// only, as generation computes it), `[id, logit]`, largest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top: Option<Vec<(u32, f32)>>,
    /// pv's greedy continuation of the reference's ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    greedy: Option<Vec<u32>>,
    /// Its text, decoded by pv's tokenizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    greedy_text: Option<String>,
}

/// `reference_agreement`'s measurement: tokenises every case, runs the generation pass and a
/// greedy continuation where the case has figures for them.
pub fn reference_agreement(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: ReferenceAgreementParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    let path = model_path(ctx, &p.model.file)?;
    (ctx.progress)(&format!("loading and hashing {}", path.display()));
    let mut model = OwnedQuantizedModel::open(&path)?;
    model.flavor = p.flavor;
    let input = bytes_input(&path, model.file().bytes());
    let tok = Tokenizer::from_gguf(model.file())?;
    let mut cases = Vec::with_capacity(p.cases.len());
    for (i, c) in p.cases.iter().enumerate() {
        (ctx.progress)(&format!("case {}/{} ({})", i + 1, p.cases.len(), c.name));
        let tokens = tok.encode(&c.text)?;
        let mut m = CaseMeasured {
            tokens,
            top: None,
            greedy: None,
            greedy_text: None,
        };
        if !c.top.is_empty() || c.greedy.is_some() {
            let n = if c.greedy.is_some() { p.n_gen } else { 1 };
            let (fault, model) = (ctx.fault, &model);
            let (greedy, first) = with_threads(ctx.threads, || {
                let mut noop = NoopObserver;
                let mut obs = Faulty::new(fault, &mut noop);
                model.generate_greedy_observed(&c.tokens, n, &p.eos, &mut obs)
            })?;
            if !c.top.is_empty() {
                m.top = Some(
                    top_k(&first, p.top_k)
                        .into_iter()
                        .map(|(t, v)| (t as u32, v))
                        .collect(),
                );
            }
            if c.greedy.is_some() {
                m.greedy_text = Some(tok.decode(&greedy)?);
                m.greedy = Some(greedy);
            }
        }
        cases.push(m);
    }
    Ok(Measured {
        measurements: json!({ "cases": cases }),
        inputs: vec![input],
    })
}

/// Where two id lists first differ (`None` when equal).
fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    (a != b).then(|| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()))
    })
}

/// The ids around `k` (for a report line).
fn around(ids: &[u32], k: usize) -> String {
    let lo = k.saturating_sub(2);
    let hi = (k + 3).min(ids.len());
    format!("{:?}", &ids[lo.min(hi)..hi])
}

/// Judges one case: the problems found (empty when it agrees) and a one-line summary.
fn judge_case(p: &ReferenceAgreementParams, c: &ReferenceCase, m: &CaseMeasured) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(k) = first_difference(&m.tokens, &c.tokens) {
        problems.push(format!(
            "token ids differ at {k} (pv {} of {}, reference {} of {})",
            around(&m.tokens, k),
            m.tokens.len(),
            around(&c.tokens, k),
            c.tokens.len()
        ));
    }
    if !c.top.is_empty() {
        match &m.top {
            Some(top) if top.len() >= p.top_k => {
                for (r, (&(ti, tv), &(ri, rv))) in top.iter().zip(&c.top).take(p.top_k).enumerate()
                {
                    let rv32 = rv as f32;
                    let ok = if p.max_abs_logit == 0.0 {
                        tv.to_bits() == rv32.to_bits()
                    } else {
                        (f64::from(tv) - rv).abs() <= p.max_abs_logit
                    };
                    if ti != ri || !ok {
                        problems.push(format!(
                            "last-position logits, rank {r}: pv token {ti} = {tv:e}, reference token {ri} = {rv32:e} (|diff| {:.3e}, allowed {:e})",
                            (f64::from(tv) - rv).abs(),
                            p.max_abs_logit
                        ));
                        break;
                    }
                }
            }
            _ => problems.push(format!(
                "measurements hold no top-{} logits for this case",
                p.top_k
            )),
        }
    }
    if let Some(g) = &c.greedy {
        match &m.greedy {
            Some(ours) => {
                if let Some(k) = first_difference(ours, g) {
                    problems.push(format!(
                        "greedy continuation differs at step {k} (pv {} of {}, reference {} of {})",
                        around(ours, k),
                        ours.len(),
                        around(g, k),
                        g.len()
                    ));
                } else if let (Some(t), Some(rt)) = (&m.greedy_text, &c.greedy_text)
                    && t != rt
                {
                    problems.push(format!(
                        "greedy text differs though the ids agree: pv {t:?}, reference {rt:?}"
                    ));
                }
            }
            None => problems.push("measurements hold no greedy continuation".into()),
        }
    }
    problems
}

/// `reference_agreement`'s judge: every case's ids equal the reference's, its top logits
/// are the reference's (same ids in the same order, values within `max_abs_logit`), and its
/// greedy continuation and text are the reference's.
pub fn judge_reference_agreement(j: &Judged) -> Result<Judgement, String> {
    let p: ReferenceAgreementParams =
        ReferenceAgreementParams::deserialize(j.params).map_err(|e| format!("params: {e}"))?;
    p.check().map_err(|e| format!("params: {e}"))?;
    let cases: Vec<CaseMeasured> =
        Vec::deserialize(j.measurements.get("cases").unwrap_or(&Value::Null))
            .map_err(|e| format!("measurements/cases: {e}"))?;
    if cases.len() != p.cases.len() {
        return Err(format!(
            "measurements cover {} cases; the params name {}",
            cases.len(),
            p.cases.len()
        ));
    }
    let logits = if p.max_abs_logit == 0.0 {
        "bit-identical".to_string()
    } else {
        format!("within {:e}", p.max_abs_logit)
    };
    let mut report = format!(
        "{} cases against {} ({:?} arithmetic): token ids, top-{} last-position logits {logits}, greedy continuations\n",
        p.cases.len(),
        p.source,
        p.flavor,
        p.top_k
    );
    let (mut failed, mut counts) = (0, [0usize; 3]);
    for (c, m) in p.cases.iter().zip(&cases) {
        let problems = judge_case(&p, c, m);
        counts[0] += 1;
        counts[1] += usize::from(!c.top.is_empty());
        counts[2] += usize::from(c.greedy.is_some());
        if problems.is_empty() {
            let mut what = vec![format!("{} ids", c.tokens.len())];
            if !c.top.is_empty() {
                what.push(format!("top-{}", p.top_k));
            }
            if let Some(g) = &c.greedy {
                what.push(format!("greedy {}", g.len()));
            }
            report += &format!("  {}: agrees ({})\n", c.name, what.join(", "));
        } else {
            failed += 1;
            for q in problems {
                report += &format!("  {}: {q}\n", c.name);
            }
        }
    }
    report += &format!(
        "{} of {} cases agree ({} with ids only checked, {} with logits, {} with a continuation)\n",
        p.cases.len() - failed,
        p.cases.len(),
        counts[0] - counts[1].max(counts[2]),
        counts[1],
        counts[2]
    );
    Ok(super::parity::verdict(&p.verdicts, failed == 0, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Value {
        json!({
            "model": {"file": "m.gguf", "sha256": "0".repeat(64)},
            "source": "a test",
            "flavor": "avx2",
            "eos": [0],
            "n_gen": 3,
            "top_k": 2,
            "max_abs_logit": 0.0,
            "verdicts": {"pass": "H1", "fail": "H2"},
            "cases": [
                {"name": "a", "text": "x", "tokens": [1, 5], "top": [[7, 2.5], [3, 1.25]], "greedy": [7, 7, 0], "greedy_text": "yy"},
                {"name": "b", "text": "z", "tokens": [1, 9]},
            ],
        })
    }

    fn judge(m: Value) -> Judgement {
        let p = params();
        judge_reference_agreement(&Judged {
            contract_id: "c",
            params: &p,
            measurements: &m,
        })
        .unwrap()
    }

    fn intact() -> Value {
        json!({"cases": [
            {"tokens": [1, 5], "top": [[7, 2.5], [3, 1.25]], "greedy": [7, 7, 0], "greedy_text": "yy"},
            {"tokens": [1, 9]},
        ]})
    }

    #[test]
    fn agreement_passes_and_each_kind_of_difference_fails_by_name() {
        let j = judge(intact());
        assert!(j.passed, "{}", j.report);
        assert_eq!(j.verdict, "H1");

        let mut m = intact();
        m["cases"][1]["tokens"] = json!([1, 8, 9]);
        let j = judge(m);
        assert!(!j.passed);
        assert!(
            j.report.contains("b: token ids differ at 1"),
            "{}",
            j.report
        );

        // One ulp in one logit is a difference when bit identity is asked for.
        let mut m = intact();
        m["cases"][0]["top"][1][1] = json!(f32::from_bits(1.25f32.to_bits() + 1));
        let j = judge(m);
        assert!(j.report.contains("rank 1"), "{}", j.report);
        assert_eq!(j.verdict, "H2");

        let mut m = intact();
        m["cases"][0]["top"] = json!([[3, 2.5], [7, 1.25]]);
        assert!(judge(m).report.contains("rank 0: pv token 3"));

        let mut m = intact();
        m["cases"][0]["greedy"] = json!([7, 8, 8]);
        assert!(judge(m).report.contains("differs at step 1"));

        let mut m = intact();
        m["cases"][0]["greedy_text"] = json!("yz");
        assert!(judge(m).report.contains("greedy text differs"));
    }

    #[test]
    fn missing_or_short_measurements_are_findings_or_errors_not_passes() {
        let mut m = intact();
        m["cases"][0].as_object_mut().unwrap().remove("top");
        assert!(!judge(m).passed);
        let mut m = intact();
        m["cases"][0]["top"] = json!([[7, 2.5]]);
        assert!(!judge(m).passed);
        let p = params();
        let one = json!({"cases": [intact()["cases"][0].clone()]});
        assert!(
            judge_reference_agreement(&Judged {
                contract_id: "c",
                params: &p,
                measurements: &one,
            })
            .is_err()
        );
    }

    #[test]
    fn inconsistent_figures_are_refused() {
        let bad = |f: &dyn Fn(&mut Value)| {
            let mut p = params();
            f(&mut p);
            ReferenceAgreementParams::deserialize(&p).unwrap().check()
        };
        assert!(bad(&|_| {}).is_ok());
        assert!(bad(&|p| p["cases"][0]["greedy"] = json!([7, 0, 7])).is_err());
        assert!(bad(&|p| p["cases"][0]["greedy"] = json!([7, 7])).is_err());
        assert!(bad(&|p| p["cases"][0]["top"] = json!([[7, 1.0], [3, 2.0]])).is_err());
        assert!(bad(&|p| p["cases"][0]["top"] = json!([[7, 1.0]])).is_err());
        assert!(bad(&|p| p["cases"][1]["name"] = json!("a")).is_err());
        assert!(bad(&|p| p["cases"][1]["greedy_text"] = json!("q")).is_err());
        assert!(bad(&|p| p["max_abs_logit"] = json!(-1.0)).is_err());
    }
}
