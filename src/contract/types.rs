//! The contract file's types: every key a contract may hold, and nothing else.
//!
//! Each struct refuses unknown keys (`deny_unknown_fields`), and the published JSON Schema
//! (`schemas/contract.schema.json`) is generated from these definitions, so the parser,
//! the schema and an editor's validation can never disagree about what a key means.
//! Falsification tests have no status field: a test's status is computed from its
//! evidence records.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One contract: a claim about a model's numerics, stated so that it can be falsified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Who and what the contract is.
    pub metadata: Metadata,
    /// The model files the tests run, each named once, pinned by digest and (optionally)
    /// with where it comes from: a test's `model` (or a side's, or a `reference`) may give
    /// the name instead of the file. `pv fetch-models` fetches what the gate needs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, crate::contract::models::ModelEntry>")]
    pub models: BTreeMap<String, crate::contract::models::ModelEntry>,
    /// Prompt lists, each named once: a test's `prompts` may give the name instead of the
    /// list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, PromptSet>")]
    pub prompt_sets: BTreeMap<String, Vec<String>>,
    /// The equations the implementation must compute, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub equations: BTreeMap<String, Equation>,
    /// Properties the implementation must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proof_obligations: Vec<ProofObligation>,
    /// Executable tests, each able to show an obligation false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub falsification_tests: Vec<FalsificationTest>,
    /// Milestones, each discharging a set of tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implementation_stages: Vec<ImplementationStage>,
}

/// A named prompt list (schema only).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct PromptSet(#[schemars(length(min = 1))] Vec<String>);

/// Lifecycle of a contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContractStatus {
    /// Written, not yet enforced.
    Proposed,
    /// Enforced by `pv gate`.
    Active,
    /// Kept for history; no longer enforced.
    Retired,
}

/// Identity and provenance of a contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique contract id (lower-case words joined by hyphens, ending in a version, e.g.
    /// `trace-ffn-sub-block-gguf-v1`).
    #[schemars(regex(pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$"))]
    pub id: String,
    /// Semantic version of the contract text (MAJOR.MINOR.PATCH).
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"))]
    pub version: String,
    /// One-line title.
    pub title: String,
    /// What the contract claims and why it matters.
    pub description: String,
    /// Lifecycle state.
    pub status: ContractStatus,
    /// Date of creation, `YYYY-MM-DD`.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub created: String,
    /// Who wrote it.
    #[schemars(length(min = 1))]
    pub authors: Vec<String>,
    /// Supporting material: paths relative to the contract file (checked to exist) or
    /// `http(s)://` URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Ids of contracts this one builds on (checked to exist, without cycles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The code this contract's tests exercise: path globs relative to the repository root
    /// (`src/model/**`, `Cargo.lock`; `*` stays within a path component, `**` crosses them;
    /// each starts with a literal name). Every evidence record binds the sha256 of each file
    /// they match; when one changes, appears or disappears, the record is STALE. Required
    /// for a gate-required test of an ACTIVE contract.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z0-9_][^\\]*$")))]
    pub covers: Vec<String>,
}

/// An equation the implementation computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Equation {
    /// The formula, in plain mathematical notation.
    pub formula: String,
    /// Definitions of the formula's symbols, by symbol.
    #[serde(rename = "where", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub where_: BTreeMap<String, String>,
    /// Properties that hold whenever the formula does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants: Vec<String>,
}

/// The kinds of property an obligation may state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObligationType {
    /// Something true of every state.
    Invariant,
    /// Two computations give the same result.
    Equivalence,
    /// A quantity stays within limits.
    Bound,
    /// Something is neither created nor lost (e.g. fields, mass, norm).
    Conservation,
    /// Same inputs, same outputs, whatever the schedule.
    Determinism,
    /// A conversion and its inverse give back the input.
    Roundtrip,
    /// Two structures have the same shape (slots, layers, scopes).
    Parity,
    /// Something exists and is filled.
    Existence,
    /// A process rule (e.g. a fix must cite its hypothesis).
    Traceability,
}

/// How close a property must hold. A test citing the obligation that states its limit in
/// params states the same one: `pv validate` refuses a disagreement (rule
/// `tolerance-mismatch`): `band` against the params' `band`, `abs` and `rel` against the
/// params' `tolerance`, and each of `limits` against the param of that name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Tolerance {
    /// Bit for bit.
    Exact,
    /// Absolute difference at most this.
    Abs(f64),
    /// Relative difference at most this.
    Rel(f64),
    /// A ratio within `[low, high]`.
    Band([f64; 2]),
    /// Bounds a test states as numeric params (e.g. `max_kl: 0.12`, `min_top1: 0.9`): every
    /// test citing the obligation has each of these params, with this value.
    Limits(BTreeMap<String, f64>),
}

/// A property the implementation must have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProofObligation {
    /// Unique id (e.g. `PO-FFN-GGUF-001`).
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$"))]
    pub id: String,
    /// What kind of property it is.
    #[serde(rename = "type")]
    pub kind: ObligationType,
    /// The property, in words.
    pub property: String,
    /// The property, formally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formal: Option<String>,
    /// How close it must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Tolerance>,
    /// Equation ids of this contract it concerns (checked to exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applies_to: Vec<String>,
}

/// An executable test that can show an obligation false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FalsificationTest {
    /// Unique id across all contracts (e.g. `FFN-GGUF-003`).
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$"))]
    pub id: String,
    /// The rule under test, in words.
    pub rule: String,
    /// What the test predicts when the rule holds.
    pub prediction: String,
    /// Obligation ids of this contract the test can falsify (checked to exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<String>,
    /// Name of the registered checker that runs the test (`pv validate` lists them).
    pub checker: String,
    /// The checker's parameters, typed per checker (the schema states each checker's).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub params: serde_json::Value,
    /// What a failure means and what to do next.
    pub if_fails: String,
    /// Whether `pv gate` blocks until this test is discharged.
    pub required_for_gate: bool,
    /// The code this test exercises, replacing the contract's `covers` for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), inner(regex(pattern = r"^[A-Za-z0-9_][^\\]*$")))]
    pub covers: Option<Vec<String>>,
}

/// A milestone of the implementation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImplementationStage {
    /// Unique id (e.g. `M-FFN-GGUF-1`).
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$"))]
    pub id: String,
    /// What the stage delivers.
    pub description: String,
    /// Falsification test ids (of any contract) the stage discharges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discharges: Vec<String>,
}

impl Contract {
    /// The falsification test with this id.
    pub fn test(&self, id: &str) -> Option<&FalsificationTest> {
        self.falsification_tests.iter().find(|t| t.id == id)
    }

    /// The `covers` list that applies to `test`: its own, else the contract's.
    pub fn covers_of<'a>(&'a self, test: &'a FalsificationTest) -> &'a [String] {
        test.covers.as_deref().unwrap_or(&self.metadata.covers)
    }

    /// Whether `pv gate` enforces this contract: only ACTIVE ones are (PROPOSED is written
    /// but not yet enforced; RETIRED is history).
    pub fn enforced(&self) -> bool {
        self.metadata.status == ContractStatus::Active
    }
}
