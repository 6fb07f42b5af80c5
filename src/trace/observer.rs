//! The observer that turns a forward pass into a [`ForwardTrace`], optionally keeping full
//! copies of selected tensors for element-wise comparison.

use super::stats::{ActivationStats, ScopeKind};
use super::types::{LayerTrace, SlotStats};
use crate::model::{Observer, Slot};

/// Which tensors to keep whole (`--slots`, `--layers`).
#[derive(Clone, Debug, Default)]
pub struct CaptureSpec {
    /// Slots to keep.
    pub slots: Vec<Slot>,
    /// Layers to keep them for (`None`: every layer).
    pub layers: Option<Vec<usize>>,
}

/// A kept tensor.
///
/// # Shapes
/// `data` is `tokens x width`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Captured {
    /// Layer, or `None` for once-per-pass slots.
    pub layer: Option<usize>,
    /// Capture point.
    pub slot: Slot,
    /// Values per token.
    pub width: usize,
    /// The values.
    pub data: Vec<f32>,
}

/// Accumulates statistics (and captures) for every capture point of one pass.
pub struct TraceObserver {
    per_token: bool,
    capture: Option<CaptureSpec>,
    /// Per layer, per slot of [`Slot::LAYER`].
    layers: Vec<[Option<SlotStats>; 15]>,
    /// `embd`, `final_norm`, `logits`.
    once: [Option<SlotStats>; 3],
    /// Kept tensors.
    pub captured: Vec<Captured>,
}

impl TraceObserver {
    /// An observer for a model of `n_layer` layers.
    pub fn new(n_layer: usize, per_token: bool, capture: Option<CaptureSpec>) -> Self {
        TraceObserver {
            per_token,
            capture,
            layers: vec![Default::default(); n_layer],
            once: Default::default(),
            captured: Vec::new(),
        }
    }

    fn stats(&self, data: &[f32], width: usize) -> SlotStats {
        let n = data.len() / width;
        SlotStats {
            all: ActivationStats::of(data, width, 0, ScopeKind::All),
            last: ActivationStats::of(&data[(n - 1) * width..], width, n - 1, ScopeKind::Last),
            per_token: self.per_token.then(|| {
                data.chunks_exact(width)
                    .enumerate()
                    .map(|(t, row)| ActivationStats::of(row, width, t, ScopeKind::Token))
                    .collect()
            }),
        }
    }

    /// The per-layer traces and the `embd`, `final_norm`, `logits` statistics; `None` if
    /// any capture point was never observed.
    pub fn finish(self) -> Option<(Vec<LayerTrace>, [SlotStats; 3])> {
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                let [
                    attn_norm,
                    q,
                    k,
                    v,
                    q_rope,
                    k_rope,
                    attn_out,
                    ffn_inp,
                    ffn_norm,
                    ffn_gate,
                    ffn_up,
                    ffn_act,
                    ffn_inner,
                    ffn_down,
                    l_out,
                ] = l;
                Some(LayerTrace {
                    attn_norm: attn_norm?,
                    q: q?,
                    k: k?,
                    v: v?,
                    q_rope: q_rope?,
                    k_rope: k_rope?,
                    attn_out: attn_out?,
                    ffn_inp: ffn_inp?,
                    ffn_norm: ffn_norm?,
                    ffn_gate: ffn_gate?,
                    ffn_up: ffn_up?,
                    ffn_act: ffn_act?,
                    ffn_inner: ffn_inner?,
                    ffn_down: ffn_down?,
                    l_out: l_out?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let [e, f, g] = self.once;
        Some((layers, [e?, f?, g?]))
    }
}

impl Observer for TraceObserver {
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], width: usize) {
        let stats = self.stats(data, width);
        match layer {
            Some(l) => {
                let i = Slot::LAYER
                    .iter()
                    .position(|&s| s == slot)
                    .expect("per-layer slot");
                self.layers[l][i] = Some(stats);
            }
            None => {
                let i = match slot {
                    Slot::Embd => 0,
                    Slot::FinalNorm => 1,
                    _ => 2,
                };
                self.once[i] = Some(stats);
            }
        }
        if let Some(c) = &self.capture {
            let layer_ok = match (layer, &c.layers) {
                (Some(l), Some(ls)) => ls.contains(&l),
                _ => true,
            };
            if c.slots.contains(&slot) && layer_ok {
                self.captured.push(Captured {
                    layer,
                    slot,
                    width,
                    data: data.to_vec(),
                });
            }
        }
    }
}
