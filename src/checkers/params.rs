//! The typed parameters of each checker. A contract's `params` must deserialise into its
//! checker's type (unknown keys refused); the contract schema states each type, so an
//! editor flags a wrong parameter as the user types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Slot;

/// The model a test is meant for: the canonical GGUF file, named and pinned by digest.
/// A passing run on this exact file discharges the test; on any other model it is an
/// algorithm-level discharge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanonicalModel {
    /// File name of the GGUF model, looked up in `--models DIR`.
    #[schemars(regex(pattern = r"^[^/\\]+\.gguf$"))]
    pub file: String,
    /// Lower-case hex sha256 of the canonical file.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

impl CanonicalModel {
    /// The APR file converted from this model (`pv convert`): same stem, `.apr`.
    pub fn apr_file(&self) -> String {
        format!(
            "{}.apr",
            self.file.strip_suffix(".gguf").unwrap_or(&self.file)
        )
    }
}

/// A traced pass of one prompt on one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracePromptParams {
    /// The model.
    pub model: CanonicalModel,
    /// The prompt, tokenised once with the model's tokenizer.
    #[schemars(length(min = 1))]
    pub prompt: String,
}

/// The APR/GGUF standard-deviation ratio of one slot at one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdRatioParams {
    /// The model (its `.apr` sibling is found beside it).
    pub model: CanonicalModel,
    /// The prompt, tokenised once and fed to both engines.
    #[schemars(length(min = 1))]
    pub prompt: String,
    /// The layer (0-based) whose ratio decides the verdict.
    pub layer: usize,
    /// The capture point compared.
    pub slot: Slot,
    /// `[low, high]`: a ratio APR/GGUF inside it is H1 (normal), outside H2 (a bug).
    pub band: [f64; 2],
}

/// A fix's commit must cite the hypothesis a falsification test recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CitationParams {
    /// The test whose latest valid evidence records the hypothesis (e.g. `FFN-GGUF-003`).
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$"))]
    pub hypothesis_test: String,
}

/// Each sub-FFN slot of the reference engine equals its equation recomputed from the
/// captured inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EquationParams {
    /// The model (its `.apr` sibling is traced).
    pub model: CanonicalModel,
    /// The prompt.
    #[schemars(length(min = 1))]
    pub prompt: String,
    /// Layers checked (0-based).
    #[schemars(length(min = 1))]
    pub layers: Vec<usize>,
    /// Largest allowed absolute difference, relative to the slot's largest magnitude.
    pub tolerance: f64,
}

impl StdRatioParams {
    /// Checks what the schema cannot say.
    pub fn check(&self) -> Result<(), String> {
        let [lo, hi] = self.band;
        if !(lo > 0.0 && lo < hi && hi.is_finite()) {
            return Err(format!(
                "band must be [low, high] with 0 < low < high, got [{lo}, {hi}]"
            ));
        }
        Ok(())
    }
}

impl EquationParams {
    /// Checks what the schema cannot say.
    pub fn check(&self) -> Result<(), String> {
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(format!(
                "tolerance must be in (0, 1), got {}",
                self.tolerance
            ));
        }
        Ok(())
    }
}
