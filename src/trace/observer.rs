//! The observer that turns a forward pass into a [`ForwardTrace`], optionally keeping full
//! copies of selected tensors for element-wise comparison.

use super::stats::{ActivationStats, ScopeKind};
use std::collections::BTreeMap;

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
    /// Per layer, the slots observed.
    layers: Vec<LayerTrace>,
    /// `embd`, `final_norm`, `logits`.
    once: BTreeMap<Slot, SlotStats>,
    /// Kept tensors.
    pub captured: Vec<Captured>,
    /// Rows of the pass (from the first capture, `embd`): a capture whose length is a
    /// multiple of it but not of the width it was reported with is recorded at its real
    /// width, so a wrong-width tensor is named by its shape, not misread as other rows.
    rows: Option<usize>,
}

impl TraceObserver {
    /// An observer for a model of `n_layer` layers.
    pub fn new(n_layer: usize, per_token: bool, capture: Option<CaptureSpec>) -> Self {
        TraceObserver {
            per_token,
            capture,
            layers: vec![LayerTrace::default(); n_layer],
            once: BTreeMap::new(),
            captured: Vec::new(),
            rows: None,
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

    /// The per-layer traces, the `embd` and `final_norm` statistics (`None` where never
    /// observed) and the logits statistics; `None` if the logits or any capture point of
    /// `slots` (the per-layer slots every layer must have) was never observed.
    pub fn finish(mut self, slots: &[Slot]) -> Option<Finished> {
        if self
            .layers
            .iter()
            .any(|l| slots.iter().any(|s| l.get(*s).is_none()))
        {
            return None;
        }
        let logits = self.once.remove(&Slot::Logits)?;
        Some(Finished {
            layers: self.layers,
            embd: self.once.remove(&Slot::Embd),
            final_norm: self.once.remove(&Slot::FinalNorm),
            logits,
        })
    }
}

/// What a [`TraceObserver`] saw, assembled by [`TraceObserver::finish`].
pub struct Finished {
    /// Per-layer statistics.
    pub layers: Vec<LayerTrace>,
    /// Token embeddings, if observed.
    pub embd: Option<SlotStats>,
    /// Final norm, if observed.
    pub final_norm: Option<SlotStats>,
    /// Logits.
    pub logits: SlotStats,
}

impl Observer for TraceObserver {
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], width: usize) {
        let rows = *self.rows.get_or_insert(data.len() / width.max(1));
        // The reported width is believed when it gives the pass's rows (or one row: the
        // last layer of a pass that keeps only the last position).
        let fits = width > 0
            && data.len().is_multiple_of(width)
            && [rows, 1].contains(&(data.len() / width));
        let width = if !fits && rows > 0 && data.len().is_multiple_of(rows) {
            data.len() / rows
        } else {
            width
        };
        let stats = self.stats(data, width);
        match layer {
            Some(l) => self.layers[l].0.insert(slot, stats),
            None => self.once.insert(slot, stats),
        };
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
