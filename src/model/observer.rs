//! The observer seam of the forward pass. The engine calls its observer at every capture
//! point with the buffer just computed; production passes [`NoopObserver`], which the
//! compiler removes, so a traced forward runs the very same arithmetic as `forward`.

/// A capture point, named as llama.cpp names its tensors so dumps line up.
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
    /// Token embeddings (once, before the first layer).
    Embd,
    /// RMSNorm output before attention.
    AttnNorm,
    /// Query projection, after bias, before RoPE.
    Q,
    /// Key projection, after bias, before RoPE.
    K,
    /// Value projection, after bias.
    V,
    /// Query after RoPE (what attention reads).
    QRope,
    /// Key after RoPE (what the KV cache stores).
    KRope,
    /// Attention output after the output projection.
    AttnOut,
    /// Residual stream after attention (input of the FFN block).
    FfnInp,
    /// RMSNorm output before the FFN.
    FfnNorm,
    /// Gate projection output (gate_proj_out).
    FfnGate,
    /// Up projection output (up_proj_out).
    FfnUp,
    /// `silu(gate)` (silu_gate).
    FfnAct,
    /// `silu(gate) * up` (swiglu_inner).
    FfnInner,
    /// Down projection output (ffn_down_out).
    FfnDown,
    /// Layer output (residual stream after the FFN).
    LOut,
    /// Final RMSNorm output (once).
    FinalNorm,
    /// Output logits (once).
    Logits,
}

impl Slot {
    /// Per-layer capture points in execution order.
    pub const LAYER: [Slot; 15] = [
        Slot::AttnNorm,
        Slot::Q,
        Slot::K,
        Slot::V,
        Slot::QRope,
        Slot::KRope,
        Slot::AttnOut,
        Slot::FfnInp,
        Slot::FfnNorm,
        Slot::FfnGate,
        Slot::FfnUp,
        Slot::FfnAct,
        Slot::FfnInner,
        Slot::FfnDown,
        Slot::LOut,
    ];

    /// The sub-FFN capture points.
    pub const FFN: [Slot; 5] = [
        Slot::FfnGate,
        Slot::FfnUp,
        Slot::FfnAct,
        Slot::FfnInner,
        Slot::FfnDown,
    ];

    /// Slots added after the first trace format: records made before them lack them.
    pub const ADDED_LATER: [Slot; 2] = [Slot::QRope, Slot::KRope];

    /// The name used in JSON, CLI tables and docs.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Embd => "embd",
            Slot::AttnNorm => "attn_norm",
            Slot::Q => "q",
            Slot::K => "k",
            Slot::V => "v",
            Slot::QRope => "q_rope",
            Slot::KRope => "k_rope",
            Slot::AttnOut => "attn_out",
            Slot::FfnInp => "ffn_inp",
            Slot::FfnNorm => "ffn_norm",
            Slot::FfnGate => "ffn_gate",
            Slot::FfnUp => "ffn_up",
            Slot::FfnAct => "ffn_act",
            Slot::FfnInner => "ffn_inner",
            Slot::FfnDown => "ffn_down",
            Slot::LOut => "l_out",
            Slot::FinalNorm => "final_norm",
            Slot::Logits => "logits",
        }
    }

    /// The slot with this name.
    pub fn from_name(s: &str) -> Option<Slot> {
        Slot::LAYER
            .into_iter()
            .chain([Slot::Embd, Slot::FinalNorm, Slot::Logits])
            .find(|x| x.name() == s)
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
