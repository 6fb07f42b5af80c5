//! The checker registry: the only names a falsification test may give as its `checker`,
//! each with the type of its `params`, the code that measures, and the function that judges.
//!
//! A checker is split in two so that a verdict can always be recomputed:
//! - `measure` runs the engines and returns numbers (and the files it read);
//! - `judge` turns params and those numbers into a verdict, a pass/fail and a report.
//!
//! `pv discharge` records what `judge` said; `pv verify` and `pv gate` call the same `judge`
//! on the recorded measurements and reject a record that says otherwise; and the gate can take
//! measurements from another build of pv (the code under test) while judging them itself.
//!
//! What each checker is called and what params it takes is the contract layer's catalog
//! (`contract::catalog`), so `pv validate` and the contract schema know every checker without
//! this module's model-running code; [`code`] adds, per catalog entry, the functions that
//! measure and judge.

mod apr;
mod citation;
pub mod context;
mod gguf;
mod hazard;
pub mod judge;
mod load;
mod parity;
mod reference;

use serde::Deserialize;
use serde_json::Value;

use crate::contract::catalog::CheckerId;
pub use crate::contract::params;
pub use context::{CheckError, Context, Input, Measured, Outcome};
pub use judge::{Judged, Judgement};
use params::CanonicalModel;
pub use params::{Effect, ParamChange, compare_params};

/// Runs the engines for a checker: measurements and the files read, no verdict.
pub type MeasureFn = fn(&Value, &Context) -> Result<Measured, CheckError>;

/// A checker's verdict from params and measurements alone (an error when the measurements
/// are malformed or contradict themselves).
pub type JudgeFn = fn(&Judged) -> Result<Judgement, String>;

/// A checker of the catalog with the code behind it.
#[derive(Clone, Copy)]
pub struct Checker {
    /// The name contracts use.
    pub name: &'static str,
    /// Runs the engines.
    pub measure: MeasureFn,
    /// Judges the measurements.
    pub judge: JudgeFn,
}

/// The code behind each entry of [`crate::contract::catalog::CATALOG`] (an exhaustive
/// match: a catalog entry without code does not compile).
fn code(id: CheckerId) -> (MeasureFn, JudgeFn) {
    use CheckerId::*;
    match id {
        GgufSubFfnSlotsFilled => (gguf::sub_ffn_slots_filled, gguf::judge_slots_filled),
        GgufTracedLogitsBitIdentical => {
            (gguf::traced_logits_bit_identical, gguf::judge_bit_identical)
        }
        AprGgufStdRatio => (apr::std_ratio, apr::judge_std_ratio),
        FixCitesHypothesis => (citation::fix_cites_hypothesis, citation::judge),
        AprTraceFieldsSuperset => (apr::trace_fields_superset, apr::judge_fields_superset),
        AprSubFfnEquations => (apr::sub_ffn_equations, apr::judge_sub_ffn_equations),
        AprFfnDownResidual => (apr::ffn_down_residual, apr::judge_ffn_down_residual),
        TraceAgreement => (parity::trace_agreement, parity::judge_trace_agreement),
        LogitsAgreement => (parity::logits_agreement, parity::judge_logits_agreement),
        DecodeConsistency => (parity::decode_consistency, parity::judge_decode_consistency),
        EngineLoaderHazard => (hazard::loader_hazard, hazard::judge_loader_hazard),
        ReferenceAgreement => (
            reference::reference_agreement,
            reference::judge_reference_agreement,
        ),
    }
}

/// The checker of this name, with its code.
pub fn find(name: &str) -> Option<Checker> {
    let spec = crate::contract::catalog::find(name)?;
    let (measure, judge) = code(spec.id);
    Some(Checker {
        name: spec.name,
        measure,
        judge,
    })
}

/// The registered names, comma-separated (for error messages).
pub fn names() -> String {
    crate::contract::catalog::names()
}

/// The model a test's params pin, if they pin one.
pub fn pinned_model(params: &Value) -> Option<CanonicalModel> {
    params
        .get("model")
        .and_then(|m| CanonicalModel::deserialize(m).ok())
}

/// Every file a test's params pin, as (file, sha256): the test's `model`, its pinned APR
/// `reference`, and the model of each side that names its own file.
pub fn pinned_files(params: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pinned_model(params)
        .map(|m| (m.file, m.sha256))
        .into_iter()
        .collect();
    if let Some(r) = params
        .get("reference")
        .and_then(|m| params::ModelPin::deserialize(m).ok())
    {
        out.push((r.file, r.sha256));
    }
    let sides = params.get("sides").and_then(Value::as_array);
    for side in sides.into_iter().flatten() {
        if let Some(m) = side
            .get("model")
            .and_then(|m| params::ModelPin::deserialize(m).ok())
        {
            out.push((m.file, m.sha256));
        }
    }
    out
}

/// The external engines a test's params name (`engine: realizar`, a side `realizar` or
/// `{engine: realizar, ...}`), as `pv trace --engine` names them: a run of the test needs
/// their adapters built (`scripts/engines.sh NAME`).
pub fn external_engines(params: &Value) -> Vec<&'static str> {
    fn engine(v: &Value) -> Option<&'static str> {
        params::Engine::deserialize(v).ok()?.external()
    }
    let mut out: Vec<&'static str> = Vec::new();
    let mut add = |e: Option<&'static str>| {
        if let Some(e) = e.filter(|e| !out.contains(e)) {
            out.push(e);
        }
    };
    add(params.get("engine").and_then(engine));
    for side in params
        .get("sides")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(engine(side).or_else(|| side.get("engine").and_then(engine)));
    }
    out
}

/// Whether a run was on the contract's canonical models: the sha256 of every file the
/// params pin (as `digest_of(file name)` gives it) equals its pin. A test that pins no
/// model is always canonical.
pub fn canonical(params: &Value, digest_of: impl Fn(&str) -> Option<String>) -> bool {
    pinned_files(params)
        .iter()
        .all(|(file, sha)| digest_of(file).is_some_and(|d| &d == sha))
}

/// The sha256 an input list gives a file name (inputs are named by path; the last path
/// component is compared).
pub fn input_digest(inputs: &[Input], file: &str) -> Option<String> {
    inputs
        .iter()
        .find(|i| {
            std::path::Path::new(&i.name)
                .file_name()
                .is_some_and(|n| n == file)
        })
        .and_then(|i| i.digest.get("sha256").cloned())
}

/// Runs `checker` with `params`: measures, judges, and works out whether the model was the
/// canonical one.
pub fn run(checker: &Checker, params: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
    let m = (checker.measure)(params, ctx)?;
    let j = (checker.judge)(&Judged {
        contract_id: ctx.contract_id,
        params,
        measurements: &m.measurements,
    })
    .map_err(CheckError::Judge)?;
    let canonical = canonical(params, |f| input_digest(&m.inputs, f));
    Ok(Outcome {
        verdict: j.verdict,
        passed: j.passed,
        canonical,
        measurements: m.measurements,
        inputs: m.inputs,
        report: j.report,
    })
}

#[cfg(test)]
mod tests {
    /// Every way params name an external engine is found; pv's own engines are not listed.
    #[test]
    fn external_engines_are_found_wherever_params_name_them() {
        use serde_json::json;
        let e = super::external_engines;
        assert_eq!(e(&json!({"engine": "realizar"})), ["realizar"]);
        assert_eq!(e(&json!({"sides": ["realizar", "apr"]})), ["realizar"]);
        assert_eq!(
            e(&json!({"sides": [{"engine": "llama.cpp", "model": "x"}, "realizar"]})),
            ["llama.cpp", "realizar"]
        );
        assert!(e(&json!({"sides": ["gguf", {"engine": "apr", "model": "x"}]})).is_empty());
        assert!(e(&json!({"model": "m"})).is_empty());
    }

    /// A pinned APR reference is part of what makes a run canonical, for the test that
    /// names it; a test on the same model without one is judged on its model alone.
    #[test]
    fn a_pinned_reference_must_match_too() {
        let (g, a) = ("a".repeat(64), "b".repeat(64));
        let with = serde_json::json!({
            "model": {"file": "m.gguf", "sha256": g},
            "reference": {"file": "m.apr", "sha256": a},
        });
        assert_eq!(
            super::pinned_files(&with),
            [
                ("m.gguf".to_string(), g.clone()),
                ("m.apr".to_string(), a.clone())
            ]
        );
        let digests = |apr: &str| {
            let (g, apr) = (g.clone(), apr.to_string());
            move |f: &str| {
                Some(if f == "m.gguf" {
                    g.clone()
                } else {
                    apr.clone()
                })
            }
        };
        assert!(super::canonical(&with, digests(&a)));
        assert!(!super::canonical(&with, digests(&"c".repeat(64))));
        assert!(!super::canonical(&with, |f: &str| (f == "m.gguf").then(|| g.clone())));
        let without = serde_json::json!({"model": {"file": "m.gguf", "sha256": g}});
        assert!(super::canonical(&without, |f: &str| (f == "m.gguf").then(|| g.clone())));
    }
}
