//! Activation statistics, the trace format, and the traced forward pass: the same forward
//! as production with an observer that records every capture point.

mod diff;
mod npy;
mod observer;
mod parity;
mod stats;
mod types;

pub use diff::{LogitsDiff, SlotDiff, Tolerance, TraceDiff, diff};
pub use npy::{npy_bytes, write_npy};
pub use observer::{CaptureSpec, Captured, TraceObserver};
pub use parity::{ParityError, check_parity};
pub use stats::{ActivationStats, Scope, ScopeKind};
pub use types::{ForwardTrace, LayerTrace, LogitsTrace, STATISTICS, SlotStats, TRACE_FORMAT};

use crate::model::{
    AprTransformer, Fault, Faulty, Logits, ModelError, OwnedQuantizedModel, Slot, top_k,
};

/// The JSON Schema of [`ForwardTrace`], as committed in `schemas/forward-trace.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(ForwardTrace);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

/// Capture every slot of every layer (for [`diff`]).
pub fn capture_all() -> CaptureSpec {
    let mut slots = Slot::LAYER.to_vec();
    slots.extend([Slot::Embd, Slot::FinalNorm, Slot::Logits]);
    CaptureSpec {
        slots,
        layers: None,
    }
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
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            per_token: false,
            top_k: 10,
            capture: None,
            fault: None,
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

/// Runs one observed pass and assembles its trace.
fn trace_with(
    n_layer: usize,
    engine: &str,
    tokens: &[u32],
    options: &TraceOptions,
    run: impl FnOnce(&mut Faulty<'_, TraceObserver>) -> Result<Logits, ModelError>,
) -> Result<Traced, ModelError> {
    let mut obs = TraceObserver::new(n_layer, options.per_token, options.capture.clone());
    let logits = run(&mut Faulty::new(options.fault, &mut obs))?;
    let captured = std::mem::take(&mut obs.captured);
    let (layers, [embd, final_norm, logit_stats]) = obs
        .finish()
        .expect("the forward pass observes every capture point");
    let trace = ForwardTrace {
        format: TRACE_FORMAT.into(),
        engine: engine.into(),
        statistics: STATISTICS.into(),
        tokens: tokens.to_vec(),
        embd,
        layers,
        final_norm,
        logits: LogitsTrace {
            all: logit_stats.all,
            last: logit_stats.last,
            per_token: logit_stats.per_token,
            top_k: top_k(logits.last(), options.top_k)
                .into_iter()
                .map(|(t, v)| (t as u32, v))
                .collect(),
        },
    };
    Ok(Traced {
        trace,
        logits,
        captured,
    })
}

impl TracedForward for OwnedQuantizedModel {
    fn forward_traced_with(
        &self,
        tokens: &[u32],
        options: &TraceOptions,
    ) -> Result<Traced, ModelError> {
        trace_with(self.config.n_layer, "gguf", tokens, options, |obs| {
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
        trace_with(self.config.n_layer, "apr", tokens, options, |obs| {
            self.forward_observed(tokens, obs)
        })
    }
}
