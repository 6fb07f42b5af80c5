//! The observer seam of the forward pass. The engine calls its observer at every capture
//! point with the buffer just computed; production passes [`NoopObserver`], which the
//! compiler removes, so a traced forward runs the very same arithmetic as `forward`.

use super::ModelConfig;
use super::arch::ArchSpec;
use super::tensors::Dim;

/// A capture point, named as llama.cpp names its tensors so dumps line up. Everything else
/// about a slot (name, width, where it is captured, which families have it) is its row of
/// [`SLOTS`].
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Token embeddings, scaled where the family scales them (once, before the first layer).
    Embd,
    /// RMSNorm output before attention.
    AttnNorm,
    /// Query projection, after bias, before any norm and RoPE.
    Q,
    /// Key projection, after bias, before any norm and RoPE.
    K,
    /// Value projection, after bias.
    V,
    /// Queries after their per-head RMSNorm (Qwen3, Gemma 3).
    QNorm,
    /// Keys after their per-head RMSNorm (Qwen3, Gemma 3).
    KNorm,
    /// Query after RoPE (what attention reads, before any query scaling).
    QRope,
    /// Key after RoPE (what the KV cache stores).
    KRope,
    /// Attention output after the output projection.
    AttnOut,
    /// RMSNorm of the attention output (Gemma 3).
    AttnPostNorm,
    /// Residual stream after attention (input of the FFN block).
    FfnInp,
    /// RMSNorm output before the FFN.
    FfnNorm,
    /// Gate projection output (gate_proj_out).
    FfnGate,
    /// Up projection output (up_proj_out).
    FfnUp,
    /// `act(gate)`: SiLU or GELU, as the family's FFN has it.
    FfnAct,
    /// `act(gate) * up` (the gated inner activation).
    FfnInner,
    /// Down projection output (ffn_down_out).
    FfnDown,
    /// RMSNorm of the FFN output (Gemma 3).
    FfnPostNorm,
    /// Layer output (residual stream after the FFN).
    LOut,
    /// Final RMSNorm output (once).
    FinalNorm,
    /// Output logits (once).
    Logits,
}

/// Which families capture a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Has {
    /// Every family.
    All,
    /// Families with per-head q/k norms.
    QkNorm,
    /// Families with post-norms.
    PostNorm,
}

/// One capture point: the one table the observer, the trace types, the checkers, the diff
/// and the CLI read.
#[derive(Clone, Copy, Debug)]
pub struct SlotInfo {
    /// The slot.
    pub slot: Slot,
    /// Its name in JSON, CLI tables, contracts and docs.
    pub name: &'static str,
    /// Values per token.
    pub width: Dim,
    /// Captured in every layer (else once per pass).
    pub per_layer: bool,
    /// One of the gated FFN's sub-steps (what the FFN contracts count).
    pub sub_ffn: bool,
    /// Which families capture it.
    pub has: Has,
    /// Absent from records made by the first trace format.
    pub added_later: bool,
}

const fn row(slot: Slot, name: &'static str, width: Dim, per_layer: bool, has: Has) -> SlotInfo {
    SlotInfo {
        slot,
        name,
        width,
        per_layer,
        sub_ffn: false,
        has,
        added_later: false,
    }
}

const fn ffn(slot: Slot, name: &'static str, width: Dim) -> SlotInfo {
    SlotInfo {
        sub_ffn: true,
        ..row(slot, name, width, true, Has::All)
    }
}

const fn later(info: SlotInfo) -> SlotInfo {
    SlotInfo {
        added_later: true,
        ..info
    }
}

/// Every capture point in execution order, indexed by `Slot as usize`.
pub const SLOTS: [SlotInfo; 22] = {
    use Dim::{Ff, Kv, Vocab};
    const E: Dim = Dim::Embd;
    const QD: Dim = Dim::Q;
    use Has::*;
    use Slot::*;
    [
        row(Embd, "embd", E, false, All),
        row(AttnNorm, "attn_norm", E, true, All),
        row(Q, "q", QD, true, All),
        row(K, "k", Kv, true, All),
        row(V, "v", Kv, true, All),
        row(QNorm, "q_norm", QD, true, QkNorm),
        row(KNorm, "k_norm", Kv, true, QkNorm),
        later(row(QRope, "q_rope", QD, true, All)),
        later(row(KRope, "k_rope", Kv, true, All)),
        row(AttnOut, "attn_out", E, true, All),
        row(AttnPostNorm, "attn_post_norm", E, true, PostNorm),
        row(FfnInp, "ffn_inp", E, true, All),
        row(FfnNorm, "ffn_norm", E, true, All),
        ffn(FfnGate, "ffn_gate", Ff),
        ffn(FfnUp, "ffn_up", Ff),
        ffn(FfnAct, "ffn_act", Ff),
        ffn(FfnInner, "ffn_inner", Ff),
        ffn(FfnDown, "ffn_down", E),
        row(FfnPostNorm, "ffn_post_norm", E, true, PostNorm),
        row(LOut, "l_out", E, true, All),
        row(FinalNorm, "final_norm", E, false, All),
        row(Logits, "logits", Vocab, false, All),
    ]
};

impl Slot {
    /// This slot's row of [`SLOTS`].
    pub fn info(self) -> &'static SlotInfo {
        &SLOTS[self as usize]
    }

    /// The name used in JSON, CLI tables and docs.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The slot with this name.
    pub fn from_name(s: &str) -> Option<Slot> {
        SLOTS.iter().find(|i| i.name == s).map(|i| i.slot)
    }

    /// Every per-layer capture point of any family, in execution order.
    pub fn per_layer() -> impl Iterator<Item = Slot> {
        SLOTS.iter().filter(|i| i.per_layer).map(|i| i.slot)
    }

    /// The once-per-pass capture points (`embd`, `final_norm`, `logits`).
    pub fn once() -> impl Iterator<Item = Slot> {
        SLOTS.iter().filter(|i| !i.per_layer).map(|i| i.slot)
    }

    /// The gated FFN's sub-steps.
    pub fn sub_ffn() -> impl Iterator<Item = Slot> {
        SLOTS.iter().filter(|i| i.sub_ffn).map(|i| i.slot)
    }

    /// Whether a family of `spec` captures this slot.
    pub fn in_family(self, spec: &ArchSpec) -> bool {
        match self.info().has {
            Has::All => true,
            Has::QkNorm => spec.qk_norm,
            Has::PostNorm => spec.post_norms,
        }
    }

    /// The per-layer capture points of a family, in execution order.
    pub fn layer_slots(spec: &ArchSpec) -> Vec<Slot> {
        Slot::per_layer().filter(|s| s.in_family(spec)).collect()
    }

    /// Values per token of this slot in `cfg`'s model.
    pub fn width(self, cfg: &ModelConfig) -> usize {
        self.info().width.of(cfg)
    }
}

/// Receives every intermediate of a forward pass.
///
/// The engines call [`Observer::capture`] at each capture point: [`Observer::perturb`] may
/// change the buffer (a fault injected to measure what the contracts and `pv diff` detect;
/// the rest of the pass computes on the changed values), then [`Observer::observe`] sees
/// it. Both default to nothing, so production compiles to the bare arithmetic.
pub trait Observer {
    /// `data` holds `data.len() / width` token rows of `width` values, for `layer` (or `None`
    /// for the once-per-pass slots). Rows are the tokens of this call, in order.
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], width: usize);

    /// May change the buffer at a capture point before it is observed and used further.
    /// `ffn_act` is computed together with `ffn_inner`, so changing it changes only what is
    /// observed.
    #[inline(always)]
    fn perturb(&mut self, _layer: Option<usize>, _slot: Slot, _data: &mut [f32], _width: usize) {}

    /// `perturb`, then `observe`: what an engine calls at each capture point.
    #[inline(always)]
    fn capture(&mut self, layer: Option<usize>, slot: Slot, data: &mut [f32], width: usize) {
        self.perturb(layer, slot, data, width);
        self.observe(layer, slot, data, width);
    }
}

/// The production observer: does nothing and costs nothing.
pub struct NoopObserver;

impl Observer for NoopObserver {
    #[inline(always)]
    fn observe(&mut self, _: Option<usize>, _: Slot, _: &[f32], _: usize) {}
}

/// The residual stream entering each layer of a reference pass: the token embeddings, and
/// every layer's output (the last one feeds the final norm).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerInputs {
    /// `embd`, tokens x width.
    pub embd: Vec<f32>,
    /// `l_out` of each layer, tokens x width.
    pub l_out: Vec<Vec<f32>>,
}

/// Runs each layer on another pass's input: after `inner` has seen a layer's own output
/// (`embd`, `l_out`), the stream is replaced by the reference's, so the next layer computes
/// on exactly what the reference's layer did. What `inner` records per layer is then that
/// layer's local error, not the error it inherited.
pub struct Substituting<'a, O: Observer> {
    inputs: Option<&'a LayerInputs>,
    inner: &'a mut O,
}

impl<'a, O: Observer> Substituting<'a, O> {
    /// Wraps `inner`; with `None` it changes nothing.
    pub fn new(inputs: Option<&'a LayerInputs>, inner: &'a mut O) -> Self {
        Substituting { inputs, inner }
    }
}

impl<O: Observer> Observer for Substituting<'_, O> {
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], width: usize) {
        self.inner.observe(layer, slot, data, width);
    }

    fn perturb(&mut self, layer: Option<usize>, slot: Slot, data: &mut [f32], width: usize) {
        self.inner.perturb(layer, slot, data, width);
    }

    fn capture(&mut self, layer: Option<usize>, slot: Slot, data: &mut [f32], width: usize) {
        self.inner.capture(layer, slot, data, width);
        let Some(inputs) = self.inputs else {
            return;
        };
        let with = match (slot, layer) {
            (Slot::Embd, None) => Some(&inputs.embd),
            (Slot::LOut, Some(l)) => inputs.l_out.get(l),
            _ => None,
        };
        // Passes over other tokens are left alone (the caller compares equal tokens).
        if let Some(w) = with.filter(|w| w.len() == data.len()) {
            data.copy_from_slice(w);
        }
    }
}
