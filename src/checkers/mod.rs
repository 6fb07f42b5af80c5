//! The checker registry: the only names a falsification test may give as its `checker`,
//! each with the type of its `params`.
//!
//! The table is plain data so that `pv validate`, the contract schema and `pv discharge`
//! all read the same list; a test naming anything else is refused.

mod apr;
mod citation;
pub mod context;
mod gguf;
pub mod params;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use context::{CheckError, Context, Input, Outcome};
use params::{CitationParams, EquationParams, StdRatioParams, TracePromptParams};

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
    /// Runs the check.
    pub run: fn(&Value, &Context) -> Result<Outcome, CheckError>,
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
        run: gguf::sub_ffn_slots_filled,
    },
    Checker {
        name: "gguf_traced_logits_bit_identical",
        summary: "forward_traced logits equal forward's bit for bit, at 1 thread and at all threads",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
        run: gguf::traced_logits_bit_identical,
    },
    Checker {
        name: "apr_gguf_std_ratio",
        summary: "APR/GGUF std ratio of one slot at one layer, same tokens and scopes, inside a band (H1) or not (H2)",
        params_schema: schema_of::<StdRatioParams>,
        check_params: |v| parse::<StdRatioParams>(v)?.check(),
        run: apr::std_ratio,
    },
    Checker {
        name: "fix_cites_hypothesis",
        summary: "the fix commit (--cite REV) cites the contract id and the hypothesis of the latest valid evidence of a test",
        params_schema: schema_of::<CitationParams>,
        check_params: plain::<CitationParams>,
        run: citation::fix_cites_hypothesis,
    },
    Checker {
        name: "apr_trace_fields_superset",
        summary: "the APR engine's trace has every pre-existing slot and every sub-FFN slot, filled, in every layer",
        params_schema: schema_of::<TracePromptParams>,
        check_params: plain::<TracePromptParams>,
        run: apr::trace_fields_superset,
    },
    Checker {
        name: "apr_sub_ffn_equations",
        summary: "on the APR reference engine, ffn_act = silu(ffn_gate) and ffn_inner = ffn_act * ffn_up within tolerance",
        params_schema: schema_of::<EquationParams>,
        check_params: |v| parse::<EquationParams>(v)?.check(),
        run: apr::sub_ffn_equations,
    },
    Checker {
        name: "apr_ffn_down_residual",
        summary: "on the APR reference engine, ffn_down is the down projection before the residual: l_out = ffn_inp + ffn_down",
        params_schema: schema_of::<EquationParams>,
        check_params: |v| parse::<EquationParams>(v)?.check(),
        run: apr::ffn_down_residual,
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
