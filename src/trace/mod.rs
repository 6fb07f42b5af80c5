//! Activation statistics, the trace format, and the traced forward pass: the same forward
//! as production with an observer that records every capture point.

mod diff;
pub mod engine;
mod limits;
mod metric;
mod npy;
mod observer;
mod parity;
mod stats;
mod types;

pub use diff::{
    ChannelDiff, LogitsDiff, SetSummary, SlotDiff, SlotSummary, TraceDiff, Worst, diff,
    kl_divergence, not_captured_lines, set_mean, summarize,
};
pub use limits::{
    Bound, Calibration, Limit, MetricModel, Prediction, Thresholds, Values, calibrate,
    gev_quantile, gev_upper_95, judge_set, judge_summary, metric_floor,
};
pub use metric::{LOG_CLIP, Metric, Violation, distinct_tokens};
pub use npy::{npy_bytes, read_npy, write_npy};
pub use observer::{CaptureSpec, Captured, Finished, TraceObserver};
pub use parity::{NotCaptured, Parity, ParityError, Shape, ShapeMismatch, check_parity, parity};
pub use stats::{ActivationStats, Scope, ScopeKind};
pub use types::{ForwardTrace, LayerTrace, LogitsTrace, STATISTICS, SlotStats, TRACE_FORMAT};

use std::sync::Arc;

use crate::model::{
    AprTransformer, Fault, Faulty, LayerInputs, Logits, ModelError, OwnedQuantizedModel, Slot,
    Substituting, top_k,
};

/// The JSON Schema of [`ForwardTrace`], as committed in `schemas/forward-trace.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(ForwardTrace);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

/// Capture every slot of every layer (for [`diff`]).
pub fn capture_all() -> CaptureSpec {
    CaptureSpec {
        slots: crate::model::SLOTS.iter().map(|i| i.slot).collect(),
        layers: None,
    }
}

/// How two models are compared layer by layer.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CompareMode {
    /// Both passes run end to end: a layer's figures include the error it inherited.
    #[default]
    EndToEnd,
    /// Each layer of A runs on B's input to that layer: a layer's figures are its own error.
    Local,
}

/// Traces `tokens` on both models, capturing every slot (a fault, if any, goes into A's
/// pass), and compares them against `limits`, end to end or layer-local.
pub fn compare_models(
    a: &dyn TracedForward,
    b: &dyn TracedForward,
    tokens: &[u32],
    fault: Option<Fault>,
    mode: CompareMode,
    limits: &Thresholds,
) -> Result<TraceDiff, CompareError> {
    let tb = reference_pass(b, tokens)?;
    compare_with_reference(a, &tb, fault, mode, limits)
}

/// The reference side of [`compare_models`]: B traced with every slot captured. It does not
/// depend on A or on a fault, so it can be reused across many comparisons.
pub fn reference_pass(b: &dyn TracedForward, tokens: &[u32]) -> Result<Traced, ModelError> {
    b.forward_traced_with(
        tokens,
        &TraceOptions {
            capture: Some(capture_all()),
            ..Default::default()
        },
    )
}

/// The A side of [`compare_models`] against a reference pass over the same tokens.
pub fn compare_with_reference(
    a: &dyn TracedForward,
    tb: &Traced,
    fault: Option<Fault>,
    mode: CompareMode,
    limits: &Thresholds,
) -> Result<TraceDiff, CompareError> {
    let inputs = match mode {
        CompareMode::EndToEnd => None,
        CompareMode::Local => {
            let inputs = layer_inputs(&tb.captured);
            if inputs.embd.is_empty() || inputs.l_out.len() != tb.trace.layers.len() {
                return Err(CompareError::NoLayerInputs {
                    engine: tb.trace.engine.clone(),
                });
            }
            Some(Arc::new(inputs))
        }
    };
    let ta = a.forward_traced_with(
        &tb.trace.tokens,
        &TraceOptions {
            capture: Some(capture_all()),
            fault,
            inputs,
            ..Default::default()
        },
    )?;
    let mut d = diff(&ta, tb)?;
    d.judge(limits);
    Ok(d)
}

/// The residual stream entering each layer, from a pass that captured `embd` and `l_out`.
pub fn layer_inputs(captured: &[Captured]) -> LayerInputs {
    let mut inputs = LayerInputs::default();
    for c in captured {
        match (c.slot, c.layer) {
            (Slot::Embd, None) => inputs.embd = c.data.clone(),
            (Slot::LOut, Some(_)) => inputs.l_out.push(c.data.clone()),
            _ => {}
        }
    }
    inputs
}

/// Why two models could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A pass failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The traces do not line up.
    #[error(transparent)]
    Parity(#[from] ParityError),
    /// A layer-local comparison needs the reference's residual stream (`embd` and every
    /// layer's `l_out`), which this engine did not capture.
    #[error(
        "{engine} did not capture the residual stream (embd and every layer's l_out): \
         a layer-local comparison cannot run on it; compare end to end"
    )]
    NoLayerInputs {
        /// The reference engine.
        engine: String,
    },
}

/// Options of a traced pass.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Add one statistics block per token to every slot.
    pub per_token: bool,
    /// How many of the last position's largest logits to record.
    pub top_k: usize,
    /// Tensors to keep whole.
    pub capture: Option<CaptureSpec>,
    /// A fault injected at one capture point (to measure what comparisons detect).
    pub fault: Option<Fault>,
    /// Run each layer on these inputs (a reference pass's residual stream) instead of the
    /// previous layer's output: the trace then shows each layer's local error.
    pub inputs: Option<Arc<LayerInputs>>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            per_token: false,
            top_k: 10,
            capture: None,
            fault: None,
            inputs: None,
        }
    }
}

/// The result of a traced pass: the trace, the logits (bit-identical to `forward`'s), and
/// any captured tensors.
pub struct Traced {
    /// Statistics of every capture point.
    pub trace: ForwardTrace,
    /// Logits of every position.
    pub logits: Logits,
    /// Tensors kept whole.
    pub captured: Vec<Captured>,
    /// Whether the engine may leave per-layer slots out (an engine other than pv's, which
    /// captures what it can): a comparison lists what it lacks instead of refusing.
    pub partial: bool,
}

/// A forward pass that records a [`ForwardTrace`].
pub trait TracedForward {
    /// Traces `tokens` with default options.
    fn forward_traced(&self, tokens: &[u32]) -> Result<ForwardTrace, ModelError> {
        self.forward_traced_with(tokens, &TraceOptions::default())
            .map(|t| t.trace)
    }

    /// Traces `tokens`.
    fn forward_traced_with(
        &self,
        tokens: &[u32],
        options: &TraceOptions,
    ) -> Result<Traced, ModelError>;
}

/// The trace of a pass an observer has seen, and the tensors it kept: `slots` are the
/// per-layer slots every layer must have, `last_logits` the last position's logits for the
/// top-k. `None` if a layer lacks one of `slots` or the logits were never observed; `embd`
/// and `final_norm` are recorded where observed. pv's engines and any engine adapter that
/// hands its tensors to a [`TraceObserver`] assemble traces this way.
pub fn assemble(
    engine: &str,
    tokens: &[u32],
    mut obs: TraceObserver,
    slots: &[Slot],
    last_logits: &[f32],
    k: usize,
) -> Option<(ForwardTrace, Vec<Captured>)> {
    let captured = std::mem::take(&mut obs.captured);
    let f = obs.finish(slots)?;
    let trace = ForwardTrace {
        format: TRACE_FORMAT.into(),
        engine: engine.into(),
        statistics: STATISTICS.into(),
        tokens: tokens.to_vec(),
        embd: f.embd,
        layers: f.layers,
        final_norm: f.final_norm,
        logits: LogitsTrace {
            all: f.logits.all,
            last: f.logits.last,
            per_token: f.logits.per_token,
            top_k: top_k(last_logits, k)
                .into_iter()
                .map(|(t, v)| (t as u32, v))
                .collect(),
        },
    };
    Some((trace, captured))
}

/// Runs one observed pass and assembles its trace.
fn trace_with(
    config: &crate::model::ModelConfig,
    engine: &str,
    tokens: &[u32],
    options: &TraceOptions,
    run: impl FnOnce(&mut Substituting<'_, Faulty<'_, TraceObserver>>) -> Result<Logits, ModelError>,
) -> Result<Traced, ModelError> {
    let mut obs = TraceObserver::new(config.n_layer, options.per_token, options.capture.clone());
    let mut faulty = Faulty::new(options.fault, &mut obs);
    let logits = run(&mut Substituting::new(
        options.inputs.as_deref(),
        &mut faulty,
    ))?;
    let (trace, captured) = assemble(
        engine,
        tokens,
        obs,
        &Slot::layer_slots(config.spec()),
        logits.last(),
        options.top_k,
    )
    .filter(|(t, _)| t.embd.is_some() && t.final_norm.is_some())
    .expect("the forward pass observes every capture point");
    Ok(Traced {
        trace,
        logits,
        captured,
        partial: false,
    })
}

impl TracedForward for OwnedQuantizedModel {
    fn forward_traced_with(
        &self,
        tokens: &[u32],
        options: &TraceOptions,
    ) -> Result<Traced, ModelError> {
        trace_with(&self.config, "gguf", tokens, options, |obs| {
            self.forward_observed(tokens, obs)
        })
    }
}

impl TracedForward for AprTransformer {
    fn forward_traced_with(
        &self,
        tokens: &[u32],
        options: &TraceOptions,
    ) -> Result<Traced, ModelError> {
        trace_with(&self.config, "apr", tokens, options, |obs| {
            self.forward_observed(tokens, obs)
        })
    }
}
