//! The checkers' descriptions: every name a falsification test may give as its `checker`,
//! what it checks, and the type of its `params`. `pv validate` and the contract schema read
//! this table; the code that runs models to measure and judge lives in `checkers`, keyed by
//! each entry's [`CheckerId`].

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::params::{
    CitationParams, DecodeParams, EquationParams, HazardParams, LogitsAgreementParams,
    ReferenceAgreementParams, StdRatioParams, TraceAgreementParams, TracePromptParams,
};

/// Which checker: the key the checkers' code is found by (`checkers::code`), so each name is
/// written once, here, and the compiler holds every entry of the catalog to its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckerId {
    /// `gguf_sub_ffn_slots_filled`.
    GgufSubFfnSlotsFilled,
    /// `gguf_traced_logits_bit_identical`.
    GgufTracedLogitsBitIdentical,
    /// `apr_gguf_std_ratio`.
    AprGgufStdRatio,
    /// `fix_cites_hypothesis`.
    FixCitesHypothesis,
    /// `apr_trace_fields_superset`.
    AprTraceFieldsSuperset,
    /// `apr_sub_ffn_equations`.
    AprSubFfnEquations,
    /// `apr_ffn_down_residual`.
    AprFfnDownResidual,
    /// `trace_agreement`.
    TraceAgreement,
    /// `logits_agreement`.
    LogitsAgreement,
    /// `decode_consistency`.
    DecodeConsistency,
    /// `engine_loader_hazard`.
    EngineLoaderHazard,
    /// `reference_agreement`.
    ReferenceAgreement,
}

/// A checker as contracts see it.
pub struct CheckerSpec {
    /// Its key.
    pub id: CheckerId,
    /// The name contracts use.
    pub name: &'static str,
    /// What it checks, in one line (shown by `pv validate` when a name is unknown).
    pub summary: &'static str,
    /// Adds the params type to a schema generator and returns a reference to it.
    pub params_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Type-checks a contract's params: unknown keys, types, and constraints the schema
    /// cannot state.
    pub check_params: fn(&Value) -> Result<(), String>,
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

/// Every checker, in the order `pv validate` lists them.
pub static CATALOG: &[CheckerSpec] = &[
    CheckerSpec {
        id: CheckerId::GgufSubFfnSlotsFilled,
        name: "gguf_sub_ffn_slots_filled",
        summary: "forward_traced on the GGUF model fills every sub-FFN slot of every layer (count = tokens x width, no NaN/Inf)",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
    },
    CheckerSpec {
        id: CheckerId::GgufTracedLogitsBitIdentical,
        name: "gguf_traced_logits_bit_identical",
        summary: "forward_traced logits equal forward's bit for bit, at 1 thread and at all threads",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
    },
    CheckerSpec {
        id: CheckerId::AprGgufStdRatio,
        name: "apr_gguf_std_ratio",
        summary: "APR/GGUF std ratio of one slot at one layer, same tokens and scopes, inside a band (H1) or not (H2)",
        params_schema: schema_of::<StdRatioParams>,
        check_params: |v| parse::<StdRatioParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::FixCitesHypothesis,
        name: "fix_cites_hypothesis",
        summary: "the fix commit (--cite REV) cites the contract id and the hypothesis of the latest valid evidence of a test",
        params_schema: schema_of::<CitationParams>,
        check_params: plain::<CitationParams>,
    },
    CheckerSpec {
        id: CheckerId::AprTraceFieldsSuperset,
        name: "apr_trace_fields_superset",
        summary: "the APR engine's trace has every pre-existing slot and every sub-FFN slot, filled, in every layer",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
    },
    CheckerSpec {
        id: CheckerId::AprSubFfnEquations,
        name: "apr_sub_ffn_equations",
        summary: "on the APR reference engine, ffn_act = silu(ffn_gate) and ffn_inner = ffn_act * ffn_up within tolerance",
        params_schema: schema_of::<EquationParams>,
        check_params: |v| parse::<EquationParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::AprFfnDownResidual,
        name: "apr_ffn_down_residual",
        summary: "on the APR reference engine, ffn_down is the down projection before the residual: l_out = ffn_inp + ffn_down",
        params_schema: schema_of::<EquationParams>,
        check_params: |v| parse::<EquationParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::TraceAgreement,
        name: "trace_agreement",
        summary: "two engines on several prompts, every slot of every layer within a calibrated limits table (layer-local or end to end); names the first slot, metric and channel outside it",
        params_schema: schema_of::<TraceAgreementParams>,
        check_params: |v| parse::<TraceAgreementParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::LogitsAgreement,
        name: "logits_agreement",
        summary: "two engines' logits at every position of several prompts: KL bound, top-1 agreement rate, tested argmax within the reference's top-k",
        params_schema: schema_of::<LogitsAgreementParams>,
        check_params: |v| parse::<LogitsAgreementParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::DecodeConsistency,
        name: "decode_consistency",
        summary: "greedy steps through the GGUF engine's KV cache against the whole prefix recomputed and against the APR engine, step by step",
        params_schema: schema_of::<DecodeParams>,
        check_params: |v| parse::<DecodeParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::EngineLoaderHazard,
        name: "engine_loader_hazard",
        summary: "an external engine runs the intact APR reference and refuses a copy of it with one defect (a missing tensor, malformed metadata, a checksum mismatch)",
        params_schema: schema_of::<HazardParams>,
        check_params: |v| parse::<HazardParams>(v)?.check(),
    },
    CheckerSpec {
        id: CheckerId::ReferenceAgreement,
        name: "reference_agreement",
        summary: "the GGUF engine against a named reference's stored figures: token ids, the last position's top logits (the pass generation runs), greedy continuations through the KV cache",
        params_schema: schema_of::<ReferenceAgreementParams>,
        check_params: |v| parse::<ReferenceAgreementParams>(v)?.check(),
    },
];

/// The checker of this name.
pub fn find(name: &str) -> Option<&'static CheckerSpec> {
    CATALOG.iter().find(|c| c.name == name)
}

/// The names, comma-separated (for error messages).
pub fn names() -> String {
    CATALOG
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}
