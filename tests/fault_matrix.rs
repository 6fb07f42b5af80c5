//! What the gate-required parity contract (contracts/forward-parity-v1.yaml) catches, how
//! exactly it points at the fault, and what it says of the intact model.
//!
//! Faults are injected into the GGUF engine through the observer seam, one at a time, in
//! every slot at several layers: scale by 1.02, one zeroed channel (a zeroed weight row), 3%
//! of channels zeroed, two channels swapped, negation, a dropped residual, and a decode-only
//! stale key (the KV cache written one position late). For each, the contract's own params
//! judge the measurements (detection), and the first slot outside the limits must be the
//! injected one, at the injected layer (localisation). The intact model must pass every
//! test on every prompt (no false alarm).
//!
//! `PV_FAULT_MATRIX=full` runs every slot at five layers and prints the matrix the README
//! shows; the default is every slot at one layer each (rotating), every kind.

mod common;

use pv::checkers::{self, Context, Judged};
use pv::model::{AprDtype, AprTransformer, Fault, OwnedQuantizedModel, Slot, gguf_to_apr};
use pv::tokenizer::Tokenizer;
use pv::trace::{
    CompareMode, Thresholds, Traced, compare_with_reference, judge_summary, reference_pass,
    summarize,
};
use serde_json::{Value, json};

/// The parity contract's tests, by id.
fn parity_params(id: &str) -> Value {
    let text = std::fs::read_to_string(common::root().join("contracts/forward-parity-v1.yaml"))
        .expect("contract");
    let c = pv::contract::parse_text("forward-parity-v1.yaml", &text).expect("a valid contract");
    let t = c
        .test(id)
        .unwrap_or_else(|| panic!("{id} in forward-parity-v1"));
    assert!(t.required_for_gate, "{id} is gate-required");
    t.params.clone()
}

struct Setup {
    gguf: OwnedQuantizedModel,
    params: Value,
    thresholds: Thresholds,
    references: Vec<Traced>,
}

fn setup() -> Option<Setup> {
    let path = common::smollm2()?;
    let gguf = OwnedQuantizedModel::open(&path).unwrap();
    let apr_file = gguf_to_apr(gguf.file(), AprDtype::F32)
        .unwrap()
        .to_bytes()
        .unwrap();
    let apr = AprTransformer::load(pv::apr::AprFile::from_bytes(apr_file).unwrap()).unwrap();
    let tok = Tokenizer::from_gguf(gguf.file()).unwrap();
    let params = parity_params("PARITY-001");
    let thresholds: Thresholds = serde_json::from_value(params["thresholds"].clone()).unwrap();
    let references = params["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let tokens = tok.encode(p.as_str().unwrap()).unwrap();
            reference_pass(&apr, &tokens).unwrap()
        })
        .collect();
    Some(Setup {
        gguf,
        params,
        thresholds,
        references,
    })
}

/// PARITY-001's verdict on the GGUF engine with `fault`, and the first slot outside limits.
fn judge(s: &Setup, fault: Option<Fault>) -> (bool, Option<(Slot, Option<usize>)>, String) {
    let diffs: Vec<_> = s
        .references
        .iter()
        .map(|r| {
            compare_with_reference(
                &s.gguf,
                r,
                fault,
                CompareMode::Local,
                &Thresholds::default(),
            )
            .unwrap()
        })
        .collect();
    let summary = summarize(&diffs);
    let measurements = json!({
        "tokens": diffs.iter().map(|d| d.tokens.len()).collect::<Vec<_>>(),
        "summary": summary,
    });
    let checker = checkers::find("trace_agreement").unwrap();
    let j = (checker.judge)(&Judged {
        contract_id: "forward-parity-v1",
        params: &s.params,
        measurements: &measurements,
    })
    .unwrap();
    let first = judge_summary(&summary, &s.thresholds)
        .first()
        .map(|v| (v.slot, v.layer));
    (j.passed, first, j.report)
}

/// What PARITY-001's limits (derived for 1e-3 false alarms per prompt, `pv calibrate
/// --false-alarm`) may let through: a fault as small as the quiet end of the matrix (a 2%
/// scale, one channel zeroed, two swapped) where a cell's intact spread is wide (a few
/// one- to three-token calibration prompts deviate far at `attn_out`@7 or the last layers),
/// at most this share of the matrix (measured on the full matrix: 4 of 377; the rotating
/// default: 1 of 77). A large fault (3% of channels, a negation, a dropped residual) is never
/// let through.
const SMALL: [&str; 3] = ["scale=1.02", "zero-channel=7", "swap-channels=3,9"];
const MAY_MISS: f64 = 0.03;
/// A caught fault is always named at its own layer; at another slot of it (the next one
/// downstream, when the injected cell's spread is wide) at most this share of the matrix
/// (measured: 2 of 377 on the full matrix, `attn_out`@7 seen at `ffn_inp`@7; none of the
/// rotating 77).
const MAY_MISPLACE: f64 = 0.01;

fn faults(full: bool) -> Vec<String> {
    let kinds = [
        "scale=1.02",
        "zero-channel=7",
        "zero-fraction=0.03",
        "swap-channels=3,9",
        "negate",
    ];
    let mut out = Vec::new();
    for (i, slot) in Slot::layer_slots(pv::model::Arch::Llama.spec())
        .iter()
        .enumerate()
    {
        let layers: Vec<usize> = if full {
            vec![0, 7, 14, 21, 29]
        } else {
            vec![[2, 9, 16, 23, 28][i % 5]]
        };
        for l in layers {
            for k in kinds {
                out.push(format!("{}@{l}:{k}", slot.name()));
            }
        }
    }
    out.extend([
        "ffn_inp@3:drop-residual".into(),
        "l_out@17:drop-residual".into(),
    ]);
    out
}

#[test]
fn the_parity_contract_detects_and_localises_injected_faults() {
    let Some(s) = setup() else { return };
    // The intact engine: no alarm on any of the contract's prompts.
    let (passed, first, report) = judge(&s, None);
    assert!(
        passed && first.is_none(),
        "false alarm on the intact model:\n{report}"
    );
    let full = std::env::var("PV_FAULT_MATRIX").is_ok_and(|v| v == "full");
    let mut rows = Vec::new();
    let (mut missed, mut misplaced) = (Vec::new(), Vec::new());
    for spec in faults(full) {
        let f: Fault = spec.parse().unwrap();
        let (passed, first, _) = judge(&s, Some(f));
        let localised = first == Some((f.slot, f.layer));
        if passed {
            missed.push(spec.clone());
        } else if !localised {
            // Caught, but first at another slot: it must still be the injected layer.
            assert_eq!(
                first.map(|(_, l)| l),
                Some(f.layer),
                "{spec} detected at another layer: {first:?}"
            );
            misplaced.push(format!("{spec} -> {first:?}"));
        }
        rows.push((spec, !passed, first));
    }
    if full {
        for (spec, detected, first) in &rows {
            let at = first.map_or("-".to_string(), |(s, l)| match l {
                Some(l) => format!("{}@{l}", s.name()),
                None => s.name().to_string(),
            });
            println!(
                "| {spec} | {} | {at} |",
                if *detected { "H2" } else { "H1 (missed)" }
            );
        }
    }
    println!(
        "{} faults: {} detected, {} localised to the injected slot and layer",
        rows.len(),
        rows.len() - missed.len(),
        rows.len() - missed.len() - misplaced.len()
    );
    println!("not detected: {missed:?}");
    let large: Vec<&String> = missed
        .iter()
        .filter(|m| !SMALL.iter().any(|k| m.ends_with(k)))
        .collect();
    assert!(
        large.is_empty(),
        "large faults not detected by PARITY-001: {large:?}"
    );
    assert!(
        missed.len() as f64 <= MAY_MISS * rows.len() as f64,
        "{} of {} faults not detected by PARITY-001: {missed:?}",
        missed.len(),
        rows.len()
    );
    println!("detected at a later slot of the same layer: {misplaced:?}");
    assert!(
        misplaced.len() as f64 <= MAY_MISPLACE * rows.len() as f64,
        "detected elsewhere: {misplaced:?}"
    );
}

/// A decode-only fault leaves every prompt pass alone (PARITY-001 cannot see it) and is
/// caught by PARITY-003 through the checker itself.
#[test]
fn a_decode_only_fault_is_caught_by_decode_consistency() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let models = path.parent().unwrap().to_path_buf();
    let params = parity_params("PARITY-003");
    let checker = checkers::find("decode_consistency").unwrap();
    let root = common::root();
    let run = |fault: Option<Fault>| {
        let ctx = Context {
            models: &models,
            threads: 0,
            cite: None,
            repo: &root,
            contract_id: "forward-parity-v1",
            latest_verdict: &|_| None,
            progress: &|_| {},
            fault,
        };
        checkers::run(&checker, &params, &ctx).unwrap()
    };
    let intact = run(None);
    assert!(intact.passed, "false alarm:\n{}", intact.report);
    for spec in ["k_rope@0:stale-key", "k_rope@15:stale-key"] {
        let o = run(Some(spec.parse().unwrap()));
        assert!(!o.passed, "{spec} not detected:\n{}", o.report);
        assert_eq!(o.verdict, "H2");
    }
    // The same fault is invisible to a prompt pass.
    let Some(s) = setup() else { return };
    let (passed, _, report) = judge(&s, Some("k_rope@15:stale-key".parse().unwrap()));
    assert!(
        passed,
        "a decode-only fault changed a prompt pass:\n{report}"
    );
}
