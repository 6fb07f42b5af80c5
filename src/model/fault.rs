//! Faults injected through the observer seam, to measure what the contracts and `pv diff`
//! detect and how precisely they point at it: one capture point of one layer has its buffer
//! changed (scaled, a channel zeroed, channels swapped, negated, the skip connection
//! dropped), and the rest of the pass computes on the changed values, as it would with a
//! real bug there.

use std::str::FromStr;

use super::observer::{Observer, Slot};

/// What a fault does to the buffer of its capture point.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Every value multiplied by this factor.
    Scale(f32),
    /// One channel (output feature) zeroed in every token row: one zeroed weight row.
    ZeroChannel(usize),
    /// This fraction of the channels zeroed, evenly spaced: that many weight rows zeroed.
    ZeroFraction(f32),
    /// Two channels swapped in every row: a permuted weight.
    SwapChannels(usize, usize),
    /// Every value negated.
    Negate,
    /// The skip connection dropped: at `ffn_inp` the residual stream becomes the attention
    /// output alone; at `l_out`, the FFN's output alone.
    DropResidual,
    /// Decode steps only (`k_rope`): each token fed after the prompt stores the previous
    /// position's key instead of its own, a KV cache written one position late. Prompt
    /// passes are untouched, so only a comparison of decode steps can see it.
    StaleKey,
}

/// A fault at one capture point of one layer (`None`: a once-per-pass slot).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Fault {
    /// The capture point.
    pub slot: Slot,
    /// Its layer.
    pub layer: Option<usize>,
    /// What it does.
    pub kind: FaultKind,
}

impl Fault {
    /// Applies the fault to `data` (`width` values per token row). `stash` is the sublayer
    /// output a dropped residual is replaced with.
    fn apply(&self, data: &mut [f32], width: usize, stash: &[f32]) {
        match self.kind {
            FaultKind::Scale(f) => data.iter_mut().for_each(|v| *v *= f),
            FaultKind::Negate => data.iter_mut().for_each(|v| *v = -*v),
            FaultKind::ZeroChannel(c) if c < width => {
                data.chunks_exact_mut(width).for_each(|r| r[c] = 0.0)
            }
            FaultKind::ZeroFraction(p) => {
                let n = ((width as f32 * p).round() as usize).clamp(1, width);
                let step = width / n;
                for r in data.chunks_exact_mut(width) {
                    (0..n).for_each(|i| r[i * step] = 0.0);
                }
            }
            FaultKind::SwapChannels(a, b) if a < width && b < width => {
                data.chunks_exact_mut(width).for_each(|r| r.swap(a, b))
            }
            FaultKind::DropResidual if stash.len() == data.len() => data.copy_from_slice(stash),
            _ => {}
        }
    }

    /// The slot whose output replaces the stream when the residual is dropped.
    fn residual_source(&self) -> Option<Slot> {
        match (self.kind, self.slot) {
            (FaultKind::DropResidual, Slot::FfnInp) => Some(Slot::AttnOut),
            (FaultKind::DropResidual, Slot::LOut) => Some(Slot::FfnDown),
            _ => None,
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.slot.name())?;
        if let Some(l) = self.layer {
            write!(f, "@{l}")?;
        }
        match self.kind {
            FaultKind::Scale(x) => write!(f, ":scale={x}"),
            FaultKind::ZeroChannel(c) => write!(f, ":zero-channel={c}"),
            FaultKind::ZeroFraction(p) => write!(f, ":zero-fraction={p}"),
            FaultKind::SwapChannels(a, b) => write!(f, ":swap-channels={a},{b}"),
            FaultKind::Negate => write!(f, ":negate"),
            FaultKind::DropResidual => write!(f, ":drop-residual"),
            FaultKind::StaleKey => write!(f, ":stale-key"),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    /// `SLOT[@LAYER]:KIND[=VALUE]`, e.g. `ffn_down@20:scale=1.05`, `q@3:zero-channel=7`,
    /// `ffn_up@0:swap-channels=3,9`, `ffn_inp@3:drop-residual`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "fault {s:?}: expected SLOT[@LAYER]:KIND[=VALUE] with KIND one of scale=F, \
                 zero-channel=N, zero-fraction=F, swap-channels=A,B, negate, drop-residual, \
                 stale-key"
            )
        };
        let (place, what) = s.split_once(':').ok_or_else(usage)?;
        let (slot, layer) = match place.split_once('@') {
            Some((s, l)) => (s, Some(l.parse::<usize>().map_err(|_| usage())?)),
            None => (place, None),
        };
        let slot = Slot::from_name(slot).ok_or_else(|| format!("fault {s:?}: no slot {slot:?}"))?;
        if slot.info().per_layer != layer.is_some() {
            return Err(format!(
                "fault {s:?}: {} {}",
                slot.name(),
                if layer.is_some() {
                    "is once per pass; give no layer"
                } else {
                    "is per layer; give @LAYER"
                }
            ));
        }
        let (kind, value) = what.split_once('=').unwrap_or((what, ""));
        let num = |v: &str| {
            v.parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(usage)
        };
        let idx = |v: &str| v.parse::<usize>().map_err(|_| usage());
        let kind = match kind {
            "scale" => FaultKind::Scale(num(value)?),
            "zero-channel" => FaultKind::ZeroChannel(idx(value)?),
            "zero-fraction" => FaultKind::ZeroFraction(
                num(value).and_then(|p| (p > 0.0 && p <= 1.0).then_some(p).ok_or_else(usage))?,
            ),
            "swap-channels" => {
                let (a, b) = value.split_once(',').ok_or_else(usage)?;
                FaultKind::SwapChannels(idx(a)?, idx(b)?)
            }
            "negate" if value.is_empty() => FaultKind::Negate,
            "drop-residual" if value.is_empty() && matches!(slot, Slot::FfnInp | Slot::LOut) => {
                FaultKind::DropResidual
            }
            "stale-key" if value.is_empty() && slot == Slot::KRope => FaultKind::StaleKey,
            "stale-key" => return Err(format!("fault {s:?}: stale-key applies at k_rope")),
            "drop-residual" => {
                return Err(format!(
                    "fault {s:?}: drop-residual applies at ffn_inp or l_out"
                ));
            }
            _ => return Err(usage()),
        };
        Ok(Fault { slot, layer, kind })
    }
}

/// An observer that applies an optional fault, then hands every capture point to `inner`.
/// With no fault it changes nothing.
pub struct Faulty<'a, O: Observer> {
    fault: Option<Fault>,
    inner: &'a mut O,
    stash: Vec<f32>,
    /// Forward calls seen (each starts at `embd`): 1 is the prompt, later ones decode.
    calls: usize,
}

impl<'a, O: Observer> Faulty<'a, O> {
    /// Wraps `inner`, applying `fault` (if any).
    pub fn new(fault: Option<Fault>, inner: &'a mut O) -> Self {
        Faulty {
            fault,
            inner,
            stash: Vec::new(),
            calls: 0,
        }
    }
}

impl<O: Observer> Observer for Faulty<'_, O> {
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], width: usize) {
        self.inner.observe(layer, slot, data, width);
    }

    fn perturb(&mut self, layer: Option<usize>, slot: Slot, data: &mut [f32], width: usize) {
        self.inner.perturb(layer, slot, data, width);
        if slot == Slot::Embd {
            self.calls += 1;
        }
        let Some(f) = self.fault else {
            return;
        };
        if f.layer != layer {
            return;
        }
        if f.kind == FaultKind::StaleKey {
            if f.slot == slot && data.len() >= width {
                // Keep this call's last key for the next call, then (decode calls only)
                // write the previous position's key over each new one, in order.
                let last = data[data.len() - width..].to_vec();
                if self.calls > 1 && self.stash.len() == width {
                    for r in data.chunks_exact_mut(width) {
                        let own = r.to_vec();
                        r.copy_from_slice(&self.stash);
                        self.stash = own;
                    }
                }
                self.stash = last;
            }
            return;
        }
        if f.residual_source() == Some(slot) {
            self.stash.clear();
            self.stash.extend_from_slice(data);
        }
        if f.slot == slot {
            f.apply(data, width, &self.stash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_print_and_apply() {
        for s in [
            "ffn_down@20:scale=1.05",
            "q@3:zero-channel=7",
            "ffn_up@0:swap-channels=3,9",
            "ffn_inp@3:drop-residual",
            "k_rope@2:stale-key",
            "logits:negate",
            "attn_out@1:zero-fraction=0.03",
        ] {
            let f: Fault = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        for bad in [
            "ffn_down:scale=2",
            "logits@1:negate",
            "ffn_down@1:drop-residual",
            "ffn_down@1:scale=x",
            "nope@1:negate",
            "ffn_down@1",
            "ffn_down@1:zero-fraction=2",
            "k@1:stale-key",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        let mut data = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f: Fault = "q@0:swap-channels=0,2".parse().unwrap();
        f.apply(&mut data, 3, &[]);
        assert_eq!(data, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
        let f: Fault = "q@0:zero-channel=1".parse().unwrap();
        f.apply(&mut data, 3, &[]);
        assert_eq!(data, [3.0, 0.0, 1.0, 6.0, 0.0, 4.0]);
    }
}
