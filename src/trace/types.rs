//! The one trace format both engines produce: per-layer statistics of every capture point in
//! two scopes (all tokens, last token), and the once-per-pass points. Its JSON Schema is
//! generated from these types (`schemas/forward-trace.schema.json`).

use schemars::JsonSchema;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::ActivationStats;
use crate::model::Slot;

/// Statistics of one capture point: always both scopes, per-token on request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotStats {
    /// Over every token of the pass.
    pub all: ActivationStats,
    /// Over the last token only.
    pub last: ActivationStats,
    /// One block per token, when requested (`--per-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_token: Option<Vec<ActivationStats>>,
}

/// Every capture point of one decoder layer, keyed by slot name in execution order: the
/// slots of [`crate::model::SLOTS`] the model's family captures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct LayerTrace(pub BTreeMap<Slot, SlotStats>);

impl LayerTrace {
    /// The statistics of one per-layer slot (`None` for the once-per-pass slots and for
    /// slots the family does not capture).
    pub fn get(&self, slot: Slot) -> Option<&SlotStats> {
        self.0.get(&slot)
    }

    /// Mutable access to one slot's statistics.
    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut SlotStats> {
        self.0.get_mut(&slot)
    }

    /// The slots recorded, in execution order.
    pub fn slots(&self) -> impl Iterator<Item = (Slot, &SlotStats)> {
        self.0.iter().map(|(&s, st)| (s, st))
    }
}

/// Logits statistics and the last position's largest logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogitsTrace {
    /// Over every position the pass computed logits for.
    pub all: ActivationStats,
    /// Over the last position.
    pub last: ActivationStats,
    /// One block per position, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_token: Option<Vec<ActivationStats>>,
    /// The last position's largest logits as `[token_id, value]`, largest first.
    pub top_k: Vec<(u32, f32)>,
}

impl LogitsTrace {
    /// The statistics part, as for any other slot.
    pub fn stats(&self) -> SlotStats {
        SlotStats {
            all: self.all.clone(),
            last: self.last.clone(),
            per_token: self.per_token.clone(),
        }
    }
}

/// A traced forward pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardTrace {
    /// Trace format version.
    pub format: String,
    /// The engine that produced the trace (`gguf` or `apr`).
    pub engine: String,
    /// How statistics were computed (see [`STATISTICS`]).
    pub statistics: String,
    /// The token ids traced.
    pub tokens: Vec<u32>,
    /// Token embeddings; absent when an external engine could not capture them (pv's own
    /// engines always record them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embd: Option<SlotStats>,
    /// Per-layer statistics, indexed by layer.
    pub layers: Vec<LayerTrace>,
    /// Final RMSNorm output; absent when an external engine could not capture it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_norm: Option<SlotStats>,
    /// Output logits.
    pub logits: LogitsTrace,
}

impl ForwardTrace {
    /// The per-layer slots this trace records (its family's), in execution order.
    pub fn layer_slots(&self) -> Vec<Slot> {
        self.layers
            .first()
            .map(|l| l.slots().map(|(s, _)| s).collect())
            .unwrap_or_default()
    }
}

/// The trace format version written by this pv (3: `embd` and `final_norm` may be absent,
/// for an external engine that exposes neither).
pub const TRACE_FORMAT: &str = "pv-forward-trace/3";
/// The statistics statement every trace carries.
pub const STATISTICS: &str = "f64 sums of deviations from the first finite value; population std; NaN/Inf counted and excluded";
