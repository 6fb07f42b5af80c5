//! The typed parameters of each checker. A contract's `params` must deserialise into its
//! checker's type (unknown keys refused); the contract schema states each type, so an
//! editor flags a wrong parameter as the user types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{AprDtype, Slot};

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
    /// The element type of the APR reference converted from this model when it is absent
    /// (f32 unless given; f16 halves the file of a large model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apr_dtype: Option<AprDtype>,
}

/// A model file pinned by digest, GGUF or APR: an entry of a contract's `models` table, or
/// the file of one side of a comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPin {
    /// File name (`.gguf` or `.apr`), looked up in `--models DIR`.
    #[schemars(regex(pattern = r"^[^/\\]+\.(gguf|apr)$"))]
    pub file: String,
    /// Lower-case hex sha256 of the file.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// For a GGUF model, the element type of the APR reference converted from it when that
    /// is absent (f32 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apr_dtype: Option<AprDtype>,
}

/// A name in a contract's `models` or `prompt_sets` table.
#[derive(JsonSchema)]
#[allow(dead_code)] // schema only: references are resolved before params are typed
pub(super) struct TableName(#[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]*$"))] String);

/// In the schema, a model is given inline or by its name in the contract's `models`
/// table. The loader replaces a name by the entry before anything else reads the params,
/// so checkers and evidence records only ever see the pinned file.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "ModelRef_for_{T}")]
#[allow(dead_code)] // schema only
enum ModelRef<T> {
    /// A name in the contract's `models` table.
    Name(TableName),
    /// The file and its digest, inline.
    Pin(T),
}

/// In the schema, prompts are given inline or by the name of one of the contract's
/// `prompt_sets` (resolved on load, like a model name).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // schema only
enum PromptsRef {
    /// A name in the contract's `prompt_sets` table.
    Set(TableName),
    /// The prompts, inline.
    List(#[schemars(length(min = 1))] Vec<String>),
}

impl CanonicalModel {
    /// The APR file converted from this model (`pv convert`): same stem, `.apr`, with the
    /// element type before it when that is not f32 (`MODEL.f16.apr`).
    pub fn apr_file(&self) -> String {
        let stem = self.file.strip_suffix(".gguf").unwrap_or(&self.file);
        match self.apr_dtype() {
            AprDtype::F32 => format!("{stem}.apr"),
            AprDtype::F16 => format!("{stem}.f16.apr"),
            AprDtype::Keep => format!("{stem}.keep.apr"),
        }
    }

    /// The element type of the APR reference.
    pub fn apr_dtype(&self) -> AprDtype {
        self.apr_dtype.unwrap_or_default()
    }
}

/// A traced pass of one prompt on one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracePromptParams {
    /// The model (inline, or a name in the contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// The prompt, tokenised once with the model's tokenizer.
    #[schemars(length(min = 1))]
    pub prompt: String,
}

/// The APR/GGUF standard-deviation ratio of one slot at one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdRatioParams {
    /// The model (its `.apr` sibling is found beside it; inline, or a name in the
    /// contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
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
    /// The APR reference, pinned (an `.apr` file, inline or a name in the contract's
    /// `models`): the file the APR engine reads instead of the model's converted sibling,
    /// made by `pv convert` when absent. A run is canonical only when it, too, has the pinned
    /// sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ModelRef<ModelPin>>")]
    pub reference: Option<ModelPin>,
    /// An external engine that runs both files, its GGUF path on `model` and its APR path on
    /// the reference (`realizar`); default: pv's GGUF engine and pv's APR engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
}

/// One defect made in an APR file, to see whether a loader refuses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hazard {
    /// One tensor left out (a loader must refuse, not fill it with zeros or ones).
    MissingTensor {
        /// The tensor's name as stored.
        #[schemars(length(min = 1))]
        tensor: String,
    },
    /// The metadata cut short, so it is not JSON (a loader must refuse, not run on
    /// defaults).
    MalformedMetadata,
    /// One bit of tensor data flipped with the CRC32 footer left as it was (a loader that
    /// reads the footer must refuse).
    ChecksumMismatch,
}

/// `engine_loader_hazard`: an external engine given the test's APR reference with one
/// defect made in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HazardParams {
    /// The external engine (`realizar`).
    pub engine: Engine,
    /// The model: its tokenizer gives the prompt's ids (inline, or a name in the
    /// contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// The intact APR file the defect is made in (inline, or a name in the contract's
    /// `models`; made by `pv convert` from `model` when absent).
    #[schemars(with = "ModelRef<ModelPin>")]
    pub reference: ModelPin,
    /// The prompt the engine runs on both files.
    #[schemars(length(min = 1))]
    pub prompt: String,
    /// The defect.
    pub hazard: Hazard,
    /// What to call a refusal and a run on the broken file.
    #[serde(default)]
    pub verdicts: Verdicts,
}

impl HazardParams {
    /// Checks what the schema cannot say.
    pub fn check(&self) -> Result<(), String> {
        if self.engine.external().is_none() || !self.engine.extensions().contains(&".apr") {
            return Err(format!(
                "engine {}: an external engine that reads .apr files (realizar)",
                self.engine.name()
            ));
        }
        if !self.reference.file.ends_with(".apr") {
            return Err(format!(
                "reference {:?}: the defect is made in an .apr file",
                self.reference.file
            ));
        }
        Ok(())
    }
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
    /// The model (its `.apr` sibling is traced; inline, or a name in the contract's
    /// `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// The prompt.
    #[schemars(length(min = 1))]
    pub prompt: String,
    /// Layers checked (0-based).
    #[schemars(length(min = 1))]
    pub layers: Vec<usize>,
    /// Largest allowed absolute difference, relative to the slot's largest magnitude.
    pub tolerance: f64,
    /// The gated FFN's activation the sub-FFN equations recompute: `silu` (SwiGLU, the
    /// default) or `gelu` (GeGLU, tanh form). Only `apr_sub_ffn_equations` reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<crate::model::FfnAct>,
}

/// Labels a generic checker gives its two outcomes (data, so a contract names its own
/// hypotheses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verdicts {
    /// The verdict when every limit holds.
    #[schemars(length(min = 1))]
    pub pass: String,
    /// The verdict when any limit is broken.
    #[schemars(length(min = 1))]
    pub fail: String,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            pass: "PASS".into(),
            fail: "FAIL".into(),
        }
    }
}

/// An engine that runs a test's model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// pv's GGUF engine on the model file (llama.cpp's arithmetic).
    Gguf,
    /// The plain-f32 APR engine on the model's APR conversion (`pv convert`, beside it).
    Apr,
    /// realizar (aprender-serve), an external engine through its pv-engine/1 adapter
    /// (`scripts/engines.sh realizar`): `OwnedQuantizedModel` on a `.gguf`,
    /// `AprTransformer` on an `.apr`.
    Realizar,
    /// llama.cpp, an external engine through its pv-engine/1 adapter
    /// (`scripts/engines.sh llama.cpp`), on a `.gguf`.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

impl Engine {
    /// The name contracts and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Gguf => "gguf",
            Engine::Apr => "apr",
            Engine::Realizar => "realizar",
            Engine::LlamaCpp => "llama.cpp",
        }
    }

    /// The name of the external engine (as `pv trace --engine` takes it), or `None` for
    /// pv's own.
    pub fn external(self) -> Option<&'static str> {
        match self {
            Engine::Gguf | Engine::Apr => None,
            e => Some(e.name()),
        }
    }

    /// The file kinds it runs.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Engine::Gguf | Engine::LlamaCpp => &[".gguf"],
            Engine::Apr => &[".apr"],
            Engine::Realizar => &[".gguf", ".apr"],
        }
    }
}

/// One side of a comparison: an engine on the test's `model` (`gguf`, or `apr` on its
/// `.apr` sibling), or an engine on a model file of its own (e.g. two quantizations of one
/// model, both on `gguf`). Either way the prompts are tokenised with `model`'s tokenizer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Side {
    /// An engine on the test's model.
    Engine(Engine),
    /// An engine on its own file.
    File {
        /// The engine (`gguf` takes a `.gguf` file, `apr` an `.apr` file).
        engine: Engine,
        /// The file (inline, or a name in the contract's `models`).
        #[schemars(with = "ModelRef<ModelPin>")]
        model: ModelPin,
    },
}

impl Side {
    /// The engine that runs this side.
    pub fn engine(&self) -> Engine {
        match self {
            Side::Engine(e) | Side::File { engine: e, .. } => *e,
        }
    }

    /// The file this side runs, given the test's model.
    pub fn file(&self, model: &CanonicalModel) -> String {
        match self {
            Side::Engine(Engine::Apr) => model.apr_file(),
            Side::Engine(_) => model.file.clone(),
            Side::File { model, .. } => model.file.clone(),
        }
    }

    /// The file's pin, when the side names its own file.
    pub fn pin(&self) -> Option<&ModelPin> {
        match self {
            Side::Engine(_) => None,
            Side::File { model, .. } => Some(model),
        }
    }

    /// How reports name it: the engine, and the file when it has its own.
    pub fn label(&self) -> String {
        let e = self.engine().name();
        match self {
            Side::Engine(_) => e.to_string(),
            Side::File { model, .. } => format!("{e}:{}", model.file),
        }
    }
}

/// Checks a pair of sides: they differ, and each engine is given its own kind of file.
fn check_sides(sides: &[Side; 2], model: &CanonicalModel) -> Result<(), String> {
    if sides[0].engine() == sides[1].engine() && sides[0].file(model) == sides[1].file(model) {
        return Err("sides: the two sides run the same engine on the same file".into());
    }
    for s in sides {
        if let Side::File { engine, model } = s {
            let ext = engine.extensions();
            if !ext.iter().any(|e| model.file.ends_with(e)) {
                return Err(format!(
                    "sides: engine {} runs {} files, not {}",
                    engine.name(),
                    ext.join(" and "),
                    model.file
                ));
            }
        }
    }
    Ok(())
}

/// `trace_agreement`: engine `a` against engine `b` on every prompt, every slot and layer
/// compared against a calibrated table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceAgreementParams {
    /// The model (inline, or a name in the contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// The side under test and the reference, e.g. `[gguf, apr]`, or engines on files of
    /// their own (`{engine: gguf, model: q8_0}`).
    pub sides: [Side; 2],
    /// The prompts (inline, or a name in the contract's `prompt_sets`), each tokenised with
    /// the model's tokenizer.
    #[schemars(with = "PromptsRef")]
    pub prompts: Vec<String>,
    /// `local`: each layer of `a` runs on `b`'s input to it, so a layer's figures are its
    /// own error; `end_to_end`: both passes run whole.
    pub mode: crate::trace::CompareMode,
    /// The limits (`pv calibrate`), for the same mode.
    pub thresholds: crate::trace::Thresholds,
    /// The slots judged (default: every slot the table has limits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<Vec<Slot>>,
    /// The layers whose slots are judged: numbers and `{from, to}` ranges (inclusive;
    /// default: every layer). Once-per-pass slots are judged either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerSpan>>,
    /// What to call a pass and a failure.
    #[serde(default)]
    pub verdicts: Verdicts,
}

/// One layer, or an inclusive range of layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum LayerSpan {
    /// One layer.
    One(usize),
    /// `from..=to`.
    Range {
        /// First layer.
        from: usize,
        /// Last layer (inclusive).
        to: usize,
    },
}

/// `reference_agreement`: the GGUF engine against figures a named reference (llama.cpp)
/// computed on the same model, stored in the contract with their provenance: token ids,
/// the last position's top logits, and greedy continuations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceAgreementParams {
    /// The model the figures were made on (inline, or a name in the contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// Who made the figures and how: program and commit, build, machine, the script that
    /// drove it, the file they were copied from.
    #[schemars(length(min = 1))]
    pub source: String,
    /// Which llama.cpp CPU build's arithmetic the figures come from (the engine reproduces
    /// either; logits differ between them in the last bits).
    pub flavor: crate::quant::Flavor,
    /// The reference's end-of-generation ids: a greedy continuation stops after one.
    pub eos: Vec<u32>,
    /// Largest continuation the reference generated; a shorter one ends in an `eos` id.
    #[schemars(range(min = 1))]
    pub n_gen: usize,
    /// How many of the last position's largest logits are compared, in order.
    #[schemars(range(min = 1))]
    pub top_k: usize,
    /// Largest |logit difference| allowed among them (0: bit-identical).
    pub max_abs_logit: f64,
    /// The prompts, each with what the reference computed for it.
    #[schemars(length(min = 1))]
    pub cases: Vec<ReferenceCase>,
    /// What to call a pass and a failure.
    #[serde(default)]
    pub verdicts: Verdicts,
}

/// One prompt of a `reference_agreement` test and the reference's figures for it. Only
/// `tokens` is required: a case without `top` or `greedy` checks tokenisation alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceCase {
    /// A short name for reports.
    pub name: String,
    /// The prompt text, tokenised with the model's tokenizer (BOS added, special tokens
    /// recognised, as llama.cpp does by default).
    pub text: String,
    /// The reference's token ids for `text`.
    pub tokens: Vec<u32>,
    /// The reference's largest last-position logits after `tokens`, as `[id, logit]`,
    /// largest first (ties by id), at least `top_k` of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(u32, f64)>,
    /// The reference's greedy continuation of `tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<Vec<u32>>,
    /// The text the reference decoded `greedy` to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy_text: Option<String>,
}

impl ReferenceAgreementParams {
    /// Checks what the schema cannot say: every case's figures are complete and consistent.
    pub fn check(&self) -> Result<(), String> {
        nonneg("max_abs_logit", self.max_abs_logit)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.cases.iter().enumerate() {
            let at = format!("cases[{i}] ({})", c.name);
            if !names.insert(&c.name) {
                return Err(format!("{at}: a second case of this name"));
            }
            if c.tokens.is_empty() {
                return Err(format!("{at}: tokens is empty"));
            }
            if !c.top.is_empty() {
                if c.top.len() < self.top_k {
                    return Err(format!(
                        "{at}: top lists {} logits; top_k is {}",
                        c.top.len(),
                        self.top_k
                    ));
                }
                if c.top.iter().any(|&(_, v)| !v.is_finite()) {
                    return Err(format!("{at}: top holds a logit that is not finite"));
                }
                if c.top.windows(2).any(|w| w[0].1 < w[1].1) {
                    return Err(format!("{at}: top is not sorted, largest first"));
                }
            }
            if let Some(g) = &c.greedy {
                let ended = g.last().is_some_and(|t| self.eos.contains(t));
                if g.is_empty() || g.len() > self.n_gen || (g.len() < self.n_gen && !ended) {
                    return Err(format!(
                        "{at}: greedy has {} tokens; a continuation is n_gen ({}) long or ends in an eos id",
                        g.len(),
                        self.n_gen
                    ));
                }
                if g[..g.len() - 1].iter().any(|t| self.eos.contains(t)) {
                    return Err(format!("{at}: greedy goes on after an eos id"));
                }
            } else if c.greedy_text.is_some() {
                return Err(format!("{at}: greedy_text without greedy"));
            }
        }
        Ok(())
    }
}

impl TraceAgreementParams {
    /// Whether the test judges `slot` at `layer`.
    pub fn judges(&self, slot: Slot, layer: Option<usize>) -> bool {
        let slot_ok = self.slots.as_ref().is_none_or(|s| s.contains(&slot));
        let layer_ok = match (layer, &self.layers) {
            (Some(l), Some(spans)) => spans.iter().any(|s| match *s {
                LayerSpan::One(x) => x == l,
                LayerSpan::Range { from, to } => (from..=to).contains(&l),
            }),
            _ => true,
        };
        slot_ok && layer_ok
    }
}

/// `logits_agreement`: the output distributions of two engines, position by position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogitsAgreementParams {
    /// The model (inline, or a name in the contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// The side under test and the reference (as in `trace_agreement`).
    pub sides: [Side; 2],
    /// The prompts (inline, or a name in the contract's `prompt_sets`), each tokenised with
    /// the model's tokenizer.
    #[schemars(with = "PromptsRef")]
    pub prompts: Vec<String>,
    /// Largest KL(b || a) at any position, in nats.
    pub max_kl: f64,
    /// Smallest fraction of positions (over all prompts) where the argmaxes agree.
    pub min_top1: f64,
    /// At every position, `a`'s argmax is among `b`'s `top_k` largest logits.
    #[schemars(range(min = 1))]
    pub top_k: usize,
    /// What to call a pass and a failure.
    #[serde(default)]
    pub verdicts: Verdicts,
}

/// `decode_consistency`: greedy steps through the GGUF engine's KV cache against a full
/// recomputation of each prefix, and against the reference engine, step by step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeParams {
    /// The model (inline, or a name in the contract's `models`).
    #[schemars(with = "ModelRef<CanonicalModel>")]
    pub model: CanonicalModel,
    /// The prompts (inline, or a name in the contract's `prompt_sets`), each tokenised with
    /// the model's tokenizer.
    #[schemars(with = "PromptsRef")]
    pub prompts: Vec<String>,
    /// Greedy steps after each prompt.
    #[schemars(range(min = 1))]
    pub steps: usize,
    /// Largest KL(recomputed || cached) at any step, in nats.
    pub max_kl_recompute: f64,
    /// Smallest fraction of steps where the cached and recomputed argmaxes agree (a
    /// near-tie may flip: one row sums in another order than a batch).
    pub min_top1_recompute: f64,
    /// Largest KL(reference || cached) at any step, in nats.
    pub max_kl_reference: f64,
    /// Smallest fraction of steps where the reference's argmax is the cached one.
    pub min_top1_reference: f64,
    /// What to call a pass and a failure.
    #[serde(default)]
    pub verdicts: Verdicts,
}

impl TraceAgreementParams {
    /// Checks what the schema cannot say.
    pub fn check(&self) -> Result<(), String> {
        check_sides(&self.sides, &self.model)?;
        if let Some(LayerSpan::Range { from, to }) = self
            .layers
            .iter()
            .flatten()
            .find(|s| matches!(s, LayerSpan::Range { from, to } if from > to))
        {
            return Err(format!("layers: range from {from} to {to} is empty"));
        }
        if self.slots.as_ref().is_some_and(|s| s.is_empty())
            || self.layers.as_ref().is_some_and(|l| l.is_empty())
        {
            return Err("slots and layers, when given, name at least one".into());
        }
        if self.mode == crate::trace::CompareMode::Local
            && let Some(e) = self.sides[0].engine().external()
        {
            return Err(format!(
                "mode local runs side a's layers on side b's inputs, which only pv's engines \
                 can do; {e} is side a (make it side b, or compare end_to_end)"
            ));
        }
        if self.thresholds.local != (self.mode == crate::trace::CompareMode::Local) {
            return Err("thresholds: calibrated for another mode (thresholds.local)".into());
        }
        let problems = self.thresholds.problems(None);
        if !problems.is_empty() {
            return Err(format!("thresholds: {}", problems.join("; ")));
        }
        Ok(())
    }
}

fn fraction(what: &str, v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{what} must be in [0, 1], got {v}"))
    }
}

fn nonneg(what: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{what} must be a finite number >= 0, got {v}"))
    }
}

impl LogitsAgreementParams {
    /// Checks what the schema cannot say.
    pub fn check(&self) -> Result<(), String> {
        check_sides(&self.sides, &self.model)?;
        nonneg("max_kl", self.max_kl)?;
        fraction("min_top1", self.min_top1)
    }
}

impl DecodeParams {
    /// Checks what the schema cannot say.
    pub fn check(&self) -> Result<(), String> {
        nonneg("max_kl_recompute", self.max_kl_recompute)?;
        nonneg("max_kl_reference", self.max_kl_reference)?;
        fraction("min_top1_recompute", self.min_top1_recompute)?;
        fraction("min_top1_reference", self.min_top1_reference)
    }
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
        if let Some(r) = self
            .reference
            .as_ref()
            .filter(|r| !r.file.ends_with(".apr"))
        {
            return Err(format!(
                "reference {:?} is not an .apr file: the APR engine's side is pinned here",
                r.file
            ));
        }
        if let Some(e) = self.engine
            && (e.external().is_none() || !e.extensions().contains(&".apr"))
        {
            return Err(format!(
                "engine {}: an external engine that runs both .gguf and .apr files (realizar) \
                 is named here; pv's own engines are the default",
                e.name()
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

/// How a change of a gate-required test's params moves what it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Strictly harder to pass (a narrower band, a smaller tolerance, more layers).
    Tightened,
    /// Something else is measured (a prompt, a layer, a slot): not comparable.
    Changed,
    /// Easier to pass, or on another model.
    Weakened,
}

/// One parameter that differs between two versions of a test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamChange {
    /// The param (`band`, `model`, ...).
    pub field: String,
    /// Its old value (`null` when added).
    pub from: serde_json::Value,
    /// Its new value (`null` when removed).
    pub to: serde_json::Value,
    /// What the change does to the test.
    pub effect: Effect,
    /// In words (`band widened`, `model re-pinned`).
    pub what: String,
}

fn pair(v: &serde_json::Value) -> Option<[f64; 2]> {
    let a = v.as_array()?;
    match a.as_slice() {
        [lo, hi] => Some([lo.as_f64()?, hi.as_f64()?]),
        _ => None,
    }
}

/// The params that differ between `old` and `new`, each classified. The classification is
/// by field meaning, the same in every checker's params: `model` (a re-pin weakens), `band`
/// (`[low, high]`: inside the old band tightens, anything else widens), `tolerance` (smaller
/// tightens), `layers` (a superset tightens, dropping any weakens); any other difference
/// changes what is measured.
pub fn compare_params(old: &serde_json::Value, new: &serde_json::Value) -> Vec<ParamChange> {
    use serde_json::Value;
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (a, b) = (
            o.get(k).cloned().unwrap_or(Value::Null),
            n.get(k).cloned().unwrap_or(Value::Null),
        );
        if a == b {
            continue;
        }
        let (effect, what) = match k.as_str() {
            "model" => (Effect::Weakened, "model re-pinned".to_string()),
            "band" => match (pair(&a), pair(&b)) {
                (Some([ol, oh]), Some([nl, nh])) if nl >= ol && nh <= oh => {
                    (Effect::Tightened, "band narrowed".into())
                }
                _ => (Effect::Weakened, "band widened or moved".into()),
            },
            "tolerance" => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if y < x => (Effect::Tightened, "tolerance tightened".into()),
                _ => (Effect::Weakened, "tolerance widened".into()),
            },
            "layers" => {
                let set = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
                let (sa, sb) = (set(&a), set(&b));
                if sa.iter().all(|x| sb.contains(x)) {
                    (Effect::Tightened, "layers added".into())
                } else {
                    (Effect::Weakened, "layers dropped".into())
                }
            }
            other => (Effect::Changed, format!("{other} changed")),
        };
        out.push(ParamChange {
            field: k.clone(),
            from: a,
            to: b,
            effect,
            what,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn param_changes_are_classified_by_meaning() {
        let old = json!({"model": {"file": "a.gguf", "sha256": "1"}, "band": [0.5, 2.0], "tolerance": 1e-6, "layers": [0, 3], "prompt": "x"});
        let effect = |new: serde_json::Value| {
            let c = compare_params(&old, &new);
            assert_eq!(c.len(), 1, "{c:?}");
            c[0].effect
        };
        let with = |k: &str, v: serde_json::Value| {
            let mut n = old.clone();
            n[k] = v;
            n
        };
        assert_eq!(effect(with("band", json!([0.9, 1.1]))), Effect::Tightened);
        assert_eq!(effect(with("band", json!([0.1, 10.0]))), Effect::Weakened);
        assert_eq!(effect(with("band", json!([0.4, 1.0]))), Effect::Weakened);
        assert_eq!(effect(with("tolerance", json!(1e-7))), Effect::Tightened);
        assert_eq!(effect(with("tolerance", json!(1e-3))), Effect::Weakened);
        assert_eq!(effect(with("layers", json!([0, 3, 5]))), Effect::Tightened);
        assert_eq!(effect(with("layers", json!([0]))), Effect::Weakened);
        assert_eq!(
            effect(with("model", json!({"file": "a.gguf", "sha256": "2"}))),
            Effect::Weakened
        );
        assert_eq!(effect(with("prompt", json!("y"))), Effect::Changed);
        assert!(compare_params(&old, &old).is_empty());
    }
}
