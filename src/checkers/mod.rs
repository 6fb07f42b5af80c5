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
//! The table is plain data so that `pv validate`, the contract schema and `pv discharge` all
//! read the same list; a test naming anything else is refused.

mod apr;
mod citation;
pub mod context;
mod gguf;
pub mod judge;
mod parity;
pub mod params;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use context::{CheckError, Context, Input, Measured, Outcome};
pub use judge::{Judged, Judgement};
use params::{
    CanonicalModel, CitationParams, DecodeParams, EquationParams, LogitsAgreementParams,
    StdRatioParams, TraceAgreementParams, TracePromptParams,
};
pub use params::{Effect, ParamChange, compare_params};

/// A registered checker.
pub struct Checker {
    /// The name contracts use.
    pub name: &'static str,
    /// What it checks, in one line (shown by `pv validate` when a name is unknown).
    pub summary: &'static str,
    /// Adds the params type to a schema generator and returns a reference to it.
    pub params_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Type-checks a contract's params: unknown keys, types, and constraints the schema
    /// cannot state.
    pub check_params: fn(&Value) -> Result<(), String>,
    /// Runs the engines: measurements and the files read, no verdict.
    pub measure: fn(&Value, &Context) -> Result<Measured, CheckError>,
    /// The verdict from params and measurements alone (an error when the measurements are
    /// malformed or contradict themselves).
    pub judge: fn(&Judged) -> Result<Judgement, String>,
}

fn schema_of<P: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<P>()
}

fn parse<P: DeserializeOwned>(v: &Value) -> Result<P, String> {
    P::deserialize(v).map_err(|e| e.to_string())
}

fn plain<P: DeserializeOwned>(v: &Value) -> Result<(), String> {
    parse::<P>(v).map(|_| ())
}

/// Every checker pv knows, in the order `pv validate` lists them.
pub static REGISTRY: &[Checker] = &[
    Checker {
        name: "gguf_sub_ffn_slots_filled",
        summary: "forward_traced on the GGUF model fills every sub-FFN slot of every layer (count = tokens x width, no NaN/Inf)",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
        measure: gguf::sub_ffn_slots_filled,
        judge: gguf::judge_slots_filled,
    },
    Checker {
        name: "gguf_traced_logits_bit_identical",
        summary: "forward_traced logits equal forward's bit for bit, at 1 thread and at all threads",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
        measure: gguf::traced_logits_bit_identical,
        judge: gguf::judge_bit_identical,
    },
    Checker {
        name: "apr_gguf_std_ratio",
        summary: "APR/GGUF std ratio of one slot at one layer, same tokens and scopes, inside a band (H1) or not (H2)",
        params_schema: schema_of::<StdRatioParams>,
        check_params: |v| parse::<StdRatioParams>(v)?.check(),
        measure: apr::std_ratio,
        judge: apr::judge_std_ratio,
    },
    Checker {
        name: "fix_cites_hypothesis",
        summary: "the fix commit (--cite REV) cites the contract id and the hypothesis of the latest valid evidence of a test",
        params_schema: schema_of::<CitationParams>,
        check_params: plain::<CitationParams>,
        measure: citation::fix_cites_hypothesis,
        judge: citation::judge,
    },
    Checker {
        name: "apr_trace_fields_superset",
        summary: "the APR engine's trace has every pre-existing slot and every sub-FFN slot, filled, in every layer",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
        measure: apr::trace_fields_superset,
        judge: apr::judge_fields_superset,
    },
    Checker {
        name: "apr_sub_ffn_equations",
        summary: "on the APR reference engine, ffn_act = silu(ffn_gate) and ffn_inner = ffn_act * ffn_up within tolerance",
        params_schema: schema_of::<EquationParams>,
        check_params: |v| parse::<EquationParams>(v)?.check(),
        measure: apr::sub_ffn_equations,
        judge: apr::judge_sub_ffn_equations,
    },
    Checker {
        name: "apr_ffn_down_residual",
        summary: "on the APR reference engine, ffn_down is the down projection before the residual: l_out = ffn_inp + ffn_down",
        params_schema: schema_of::<EquationParams>,
        check_params: |v| parse::<EquationParams>(v)?.check(),
        measure: apr::ffn_down_residual,
        judge: apr::judge_ffn_down_residual,
    },
    Checker {
        name: "trace_agreement",
        summary: "two engines on several prompts, every slot of every layer within a calibrated limits table (layer-local or end to end); names the first slot, metric and channel outside it",
        params_schema: schema_of::<TraceAgreementParams>,
        check_params: |v| parse::<TraceAgreementParams>(v)?.check(),
        measure: parity::trace_agreement,
        judge: parity::judge_trace_agreement,
    },
    Checker {
        name: "logits_agreement",
        summary: "two engines' logits at every position of several prompts: KL bound, top-1 agreement rate, tested argmax within the reference's top-k",
        params_schema: schema_of::<LogitsAgreementParams>,
        check_params: |v| parse::<LogitsAgreementParams>(v)?.check(),
        measure: parity::logits_agreement,
        judge: parity::judge_logits_agreement,
    },
    Checker {
        name: "decode_consistency",
        summary: "greedy steps through the GGUF engine's KV cache against the whole prefix recomputed and against the APR engine, step by step",
        params_schema: schema_of::<DecodeParams>,
        check_params: |v| parse::<DecodeParams>(v)?.check(),
        measure: parity::decode_consistency,
        judge: parity::judge_decode_consistency,
    },
];

/// The registered checker of this name.
pub fn find(name: &str) -> Option<&'static Checker> {
    REGISTRY.iter().find(|c| c.name == name)
}

/// The registered names, comma-separated (for error messages).
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model a test's params pin, if they pin one.
pub fn pinned_model(params: &Value) -> Option<CanonicalModel> {
    params
        .get("model")
        .and_then(|m| CanonicalModel::deserialize(m).ok())
}

/// Whether a run was on the contract's canonical model: the sha256 of the file named
/// `params.model.file` (as `digest_of(file name)` gives it) equals the pin. A test that pins
/// no model is always canonical.
pub fn canonical(params: &Value, digest_of: impl Fn(&str) -> Option<String>) -> bool {
    match pinned_model(params) {
        None => true,
        Some(m) => digest_of(&m.file).is_some_and(|d| d == m.sha256),
    }
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
