//! The one trace format both engines produce: per-layer statistics of every capture point in
//! two scopes (all tokens, last token), and the once-per-pass points. Its JSON Schema is
//! generated from these types (`schemas/forward-trace.schema.json`).

use schemars::JsonSchema;
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

/// Every capture point of one decoder layer, in execution order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerTrace {
    /// RMSNorm output before attention.
    pub attn_norm: SlotStats,
    /// Query projection (after bias, before RoPE).
    pub q: SlotStats,
    /// Key projection (after bias, before RoPE).
    pub k: SlotStats,
    /// Value projection (after bias).
    pub v: SlotStats,
    /// Query after RoPE.
    pub q_rope: SlotStats,
    /// Key after RoPE.
    pub k_rope: SlotStats,
    /// Attention output after the output projection.
    pub attn_out: SlotStats,
    /// Residual stream after attention.
    pub ffn_inp: SlotStats,
    /// RMSNorm output before the FFN.
    pub ffn_norm: SlotStats,
    /// Gate projection output (gate_proj_out).
    pub ffn_gate: SlotStats,
    /// Up projection output (up_proj_out).
    pub ffn_up: SlotStats,
    /// silu(gate) (silu_gate).
    pub ffn_act: SlotStats,
    /// silu(gate) * up (swiglu_inner).
    pub ffn_inner: SlotStats,
    /// Down projection output (ffn_down_out).
    pub ffn_down: SlotStats,
    /// Layer output (residual stream after the FFN).
    pub l_out: SlotStats,
}

impl LayerTrace {
    /// The statistics of one per-layer slot (`None` for the once-per-pass slots).
    pub fn get(&self, slot: Slot) -> Option<&SlotStats> {
        Some(match slot {
            Slot::AttnNorm => &self.attn_norm,
            Slot::Q => &self.q,
            Slot::K => &self.k,
            Slot::V => &self.v,
            Slot::QRope => &self.q_rope,
            Slot::KRope => &self.k_rope,
            Slot::AttnOut => &self.attn_out,
            Slot::FfnInp => &self.ffn_inp,
            Slot::FfnNorm => &self.ffn_norm,
            Slot::FfnGate => &self.ffn_gate,
            Slot::FfnUp => &self.ffn_up,
            Slot::FfnAct => &self.ffn_act,
            Slot::FfnInner => &self.ffn_inner,
            Slot::FfnDown => &self.ffn_down,
            Slot::LOut => &self.l_out,
            Slot::Embd | Slot::FinalNorm | Slot::Logits => return None,
        })
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
    /// Token embeddings.
    pub embd: SlotStats,
    /// Per-layer statistics, indexed by layer.
    pub layers: Vec<LayerTrace>,
    /// Final RMSNorm output.
    pub final_norm: SlotStats,
    /// Output logits.
    pub logits: LogitsTrace,
}

/// The trace format version written by this pv.
pub const TRACE_FORMAT: &str = "pv-forward-trace/2";
/// The statistics statement every trace carries.
pub const STATISTICS: &str = "f64 sums of deviations from the first finite value; population std; NaN/Inf counted and excluded";
