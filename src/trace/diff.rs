//! Comparing two traced passes over the same tokens, slot by slot in execution order: std
//! ratios in both scopes, and from full captures cosine, SQNR, NMSE and max |diff|; for the
//! logits also KL divergence and top-1 agreement per position.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Traced;
use super::metric::{LOG_CLIP, Metric, Violation, distinct_tokens, nan_from_null};
use super::parity::{NotCaptured, ParityError, Shape, parity};
use crate::model::{Logits, Slot, argmax};

/// The worst output channel of a slot under each per-channel metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelDiff {
    /// Largest padded |ln(std_b / std_a)| and its channel.
    #[serde(deserialize_with = "nan_from_null_at")]
    pub std: (f64, usize),
    /// Largest padded relative error and its channel.
    #[serde(deserialize_with = "nan_from_null_at")]
    pub err: (f64, usize),
    /// Largest 1 - cosine over the channels that carry signal, and its channel.
    #[serde(deserialize_with = "nan_from_null_at")]
    pub cosine_gap: (f64, usize),
}

/// [`nan_from_null`] for a value and its channel.
fn nan_from_null_at<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(f64, usize), D::Error> {
    let (v, c) = <(Option<f64>, usize)>::deserialize(d)?;
    Ok((v.unwrap_or(f64::NAN), c))
}

/// [`nan_from_null`] for a list.
fn nans_from_nulls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// Element-wise comparison of one capture point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotDiff {
    /// Layer, or `None` for once-per-pass slots.
    pub layer: Option<usize>,
    /// Capture point.
    pub slot: Slot,
    /// std(B) / std(A) over all tokens.
    #[serde(deserialize_with = "nan_from_null")]
    pub std_ratio_all: f64,
    /// std(B) / std(A) over the last token.
    #[serde(deserialize_with = "nan_from_null")]
    pub std_ratio_last: f64,
    /// Cosine similarity of the full tensors.
    #[serde(deserialize_with = "nan_from_null")]
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio of B against A, in dB.
    #[serde(deserialize_with = "nan_from_null")]
    pub sqnr_db: f64,
    /// Normalised mean squared error, sum((a-b)^2) / sum(a^2).
    #[serde(deserialize_with = "nan_from_null")]
    pub nmse: f64,
    /// Largest |a - b|.
    #[serde(deserialize_with = "nan_from_null")]
    pub max_abs_diff: f64,
    /// <a,b> / <a,a>: B's least-squares scale against A.
    #[serde(deserialize_with = "nan_from_null")]
    pub gain: f64,
    /// The worst channels.
    pub channels: ChannelDiff,
    /// The two shapes, when they differ (then nothing else could be compared, and every
    /// figure above is NaN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapes: Option<[Shape; 2]>,
}

impl SlotDiff {
    /// A slot whose shapes differ: NaN everywhere, which breaks any limit on it.
    pub fn mismatched(m: &super::ShapeMismatch) -> Self {
        let nan = f64::NAN;
        SlotDiff {
            layer: m.layer,
            slot: m.slot,
            std_ratio_all: nan,
            std_ratio_last: nan,
            cosine: nan,
            sqnr_db: nan,
            nmse: nan,
            max_abs_diff: nan,
            gain: nan,
            channels: ChannelDiff {
                std: (nan, 0),
                err: (nan, 0),
                cosine_gap: (nan, 0),
            },
            shapes: Some(m.shapes),
        }
    }

    /// The deviation under `m`, and the channel it comes from for per-channel metrics.
    pub fn deviation(&self, m: Metric) -> (f64, Option<usize>) {
        let ch = |(v, c): (f64, usize)| (v, Some(c));
        match m {
            Metric::CosineGap => (1.0 - self.cosine, None),
            Metric::StdRatio => (
                (self.std_ratio_all - 1.0)
                    .abs()
                    .max((self.std_ratio_last - 1.0).abs()),
                None,
            ),
            Metric::Gain => ((self.gain - 1.0).abs(), None),
            Metric::Nmse => (self.nmse, None),
            Metric::MaxAbs => (self.max_abs_diff, None),
            Metric::ChannelStd => ch(self.channels.std),
            Metric::ChannelErr => ch(self.channels.err),
            Metric::ChannelCosineGap => ch(self.channels.cosine_gap),
        }
    }

    /// The signed deviation under `m` (gain - 1 for the gain; the deviation otherwise).
    pub fn signed(&self, m: Metric) -> f64 {
        match m {
            Metric::Gain => self.gain - 1.0,
            _ => self.deviation(m).0,
        }
    }

    /// `layer N slot` or `slot` for the once-per-pass slots.
    pub fn place(&self) -> String {
        match self.layer {
            Some(l) => format!("{} at layer {l}", self.slot.name()),
            None => self.slot.name().to_string(),
        }
    }
}

/// Per-position comparison of the logits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogitsDiff {
    /// KL(softmax(A) || softmax(B)) per position, in nats.
    #[serde(deserialize_with = "nans_from_nulls")]
    pub kl: Vec<f64>,
    /// Whether the argmax agrees, per position.
    pub top1_agree: Vec<bool>,
}

/// The comparison of two traces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceDiff {
    /// Engines compared (A, B).
    pub engines: (String, String),
    /// Tokens traced.
    pub tokens: Vec<u32>,
    /// Every capture point in execution order.
    pub slots: Vec<SlotDiff>,
    /// The logits.
    pub logits: LogitsDiff,
    /// Every metric outside its limit on this prompt alone, in execution order.
    pub violations: Vec<Violation>,
    /// Index into `slots` of the first capture point outside the limits.
    pub first_divergent: Option<usize>,
    /// Per-layer slots one engine recorded and the other (an engine other than pv's) could
    /// not capture: neither compared nor judged, and said so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_captured: Vec<NotCaptured>,
}

impl TraceDiff {
    /// The violations at the first divergent slot.
    pub fn first_violations(&self) -> impl Iterator<Item = &Violation> {
        let first = self.first_divergent;
        self.violations
            .iter()
            .filter(move |v| Some(v.index) == first)
    }
}

/// The worst value of one metric over a set of prompts, and where it was.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Worst {
    /// The deviation.
    pub value: f64,
    /// Index of the prompt.
    pub prompt: usize,
    /// The channel, for per-channel metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<usize>,
}

/// One capture point over a set of prompts: what the limits judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SlotSummary {
    /// Layer, or `None` for once-per-pass slots.
    pub layer: Option<usize>,
    /// Capture point.
    pub slot: Slot,
    /// Mean of (gain - 1) over the prompts.
    pub gain_mean: f64,
    /// The worst deviation of every metric over the prompts.
    pub worst: BTreeMap<Metric, Worst>,
    /// Mean over the prompts of ln(max(deviation, [`LOG_CLIP`])) of every metric but the
    /// gain: what a set of prompts is judged on under limits derived for a rate (empty in
    /// records made before it was kept).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_mean: BTreeMap<Metric, f64>,
    /// The shapes (A, B) on the first prompt where they differ: a finding whatever the
    /// limits say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapes: Option<[Shape; 2]>,
}

/// Comparisons of the same two models on several prompts, reduced to what is judged: per
/// slot, the worst of each metric and the mean gain. This is what evidence records keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SetSummary {
    /// How many prompts.
    pub prompts: usize,
    /// Every capture point, in execution order.
    pub slots: Vec<SlotSummary>,
    /// Per-layer slots one engine could not capture (the first prompt's list; the engines
    /// are the same on every prompt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_captured: Vec<NotCaptured>,
    /// Each prompt's number of distinct token ids, which limits derived for a false-alarm
    /// rate depend on (empty in records made before they were kept: judged as prompts of
    /// the table's typical length).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distinct_tokens: Vec<usize>,
}

/// `v`, or `f64::MAX` when it is NaN or infinite: a summary is recorded as JSON, which has
/// no NaN or infinity, and a non-finite deviation must still break every limit.
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::MAX }
}

/// Reduces comparisons of the same two models (equal slot lists) to a [`SetSummary`].
pub fn summarize(diffs: &[TraceDiff]) -> SetSummary {
    let mut slots: Vec<SlotSummary> = Vec::new();
    for (p, d) in diffs.iter().enumerate() {
        for (i, s) in d.slots.iter().enumerate() {
            if p == 0 {
                slots.push(SlotSummary {
                    layer: s.layer,
                    slot: s.slot,
                    gain_mean: 0.0,
                    worst: BTreeMap::new(),
                    log_mean: BTreeMap::new(),
                    shapes: None,
                });
            }
            let Some(row) = slots
                .get_mut(i)
                .filter(|r| (r.slot, r.layer) == (s.slot, s.layer))
            else {
                continue;
            };
            row.shapes = row.shapes.or(s.shapes);
            row.gain_mean = finite(row.gain_mean + (s.gain - 1.0) / diffs.len() as f64);
            for m in Metric::ALL {
                let (value, channel) = s.deviation(m);
                let value = finite(value);
                if m != Metric::Gain {
                    *row.log_mean.entry(m).or_insert(0.0) +=
                        value.max(LOG_CLIP).ln() / diffs.len() as f64;
                }
                let w = row.worst.entry(m).or_insert(Worst {
                    value,
                    prompt: p,
                    channel,
                });
                if value > w.value {
                    *w = Worst {
                        value,
                        prompt: p,
                        channel,
                    };
                }
            }
        }
    }
    SetSummary {
        prompts: diffs.len(),
        slots,
        not_captured: diffs
            .first()
            .map(|d| d.not_captured.clone())
            .unwrap_or_default(),
        distinct_tokens: diffs.iter().map(|d| distinct_tokens(&d.tokens)).collect(),
    }
}

/// The comparison a set of prompts is judged on as a whole (what `pv diff --plot` draws for
/// a finding on the set rather than on one prompt): per slot, the geometric mean over the
/// prompts of each deviation (1 - cosine, NMSE and its SQNR, each channel figure) and the
/// mean gain. Tokens, logits and violations are the first prompt's. `None` for no
/// comparisons or comparisons of different slot lists.
pub fn set_mean(diffs: &[TraceDiff]) -> Option<TraceDiff> {
    let first = diffs.first()?;
    if diffs.iter().any(|d| d.slots.len() != first.slots.len()) {
        return None;
    }
    let n = diffs.len() as f64;
    let mut out = first.clone();
    for (i, row) in out.slots.iter_mut().enumerate() {
        let column: Vec<&SlotDiff> = diffs.iter().map(|d| &d.slots[i]).collect();
        if column
            .iter()
            .any(|s| (s.slot, s.layer) != (row.slot, row.layer))
        {
            return None;
        }
        let geo = |f: &dyn Fn(&SlotDiff) -> f64| {
            (column.iter().map(|s| f(s).max(LOG_CLIP).ln()).sum::<f64>() / n).exp()
        };
        row.cosine = 1.0 - geo(&|s| 1.0 - s.cosine);
        row.nmse = geo(&|s| s.nmse);
        row.sqnr_db = -10.0 * row.nmse.log10();
        row.max_abs_diff = geo(&|s| s.max_abs_diff);
        row.gain = 1.0 + column.iter().map(|s| s.gain - 1.0).sum::<f64>() / n;
        row.channels.std.0 = geo(&|s| s.channels.std.0);
        row.channels.err.0 = geo(&|s| s.channels.err.0);
        row.channels.cosine_gap.0 = geo(&|s| s.channels.cosine_gap.0);
    }
    Some(out)
}

/// Whole-tensor figures: cosine, SQNR dB, NMSE, max |diff|, gain.
fn compare(a: &[f32], b: &[f32]) -> (f64, f64, f64, f64, f64) {
    let (mut dot, mut na, mut nb, mut err, mut max) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
        err += (x - y) * (x - y);
        max = max.max((x - y).abs());
    }
    let cosine = if na == 0.0 || nb == 0.0 {
        f64::from(u8::from(na == nb))
    } else {
        dot / (na.sqrt() * nb.sqrt())
    };
    let gain = if na == 0.0 {
        f64::from(u8::from(nb == 0.0))
    } else {
        dot / na
    };
    (cosine, 10.0 * (na / err).log10(), err / na, max, gain)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

fn worst(values: impl Iterator<Item = f64>) -> (f64, usize) {
    values.enumerate().fold((0.0, 0), |(w, wi), (i, v)| {
        // NaN counts as worst.
        if v > w || (v.is_nan() && !w.is_nan()) {
            (v, i)
        } else {
            (w, wi)
        }
    })
}

/// The per-channel figures of two `tokens x width` tensors.
fn channels(a: &[f32], b: &[f32], width: usize) -> ChannelDiff {
    let n = (a.len() / width.max(1)) as f64;
    // Per channel: sum a, sum a^2, sum b, sum b^2, sum ab, sum (a-b)^2.
    let mut acc = vec![[0f64; 6]; width];
    for (ra, rb) in a.chunks_exact(width).zip(b.chunks_exact(width)) {
        for ((c, &x), &y) in acc.iter_mut().zip(ra).zip(rb) {
            let (x, y) = (x as f64, y as f64);
            c[0] += x;
            c[1] += x * x;
            c[2] += y;
            c[3] += y * y;
            c[4] += x * y;
            c[5] += (x - y) * (x - y);
        }
    }
    let std = |s: f64, s2: f64| (s2 / n - (s / n) * (s / n)).max(0.0).sqrt();
    let std_a: Vec<f64> = acc.iter().map(|c| std(c[0], c[1])).collect();
    let std_b: Vec<f64> = acc.iter().map(|c| std(c[2], c[3])).collect();
    let norm_b: Vec<f64> = acc.iter().map(|c| c[3].sqrt()).collect();
    // Each std padded by a tenth of the median channel std, and by a thousandth of the
    // tensor's and of the channel's own RMS: a channel near-constant over the tokens (one
    // token repeated, whose hidden states are then the same at every position) has a std
    // of rounding noise, and the ratio of two noises says nothing.
    let rms_b = (acc.iter().map(|c| c[3]).sum::<f64>() / (n * width as f64).max(1.0)).sqrt();
    let pad_std = (0.1 * median(std_b.clone())).max(1e-3 * rms_b);
    let pad_norm = 0.1 * median(norm_b.clone());
    let std_dev = std_a.iter().zip(&std_b).zip(&acc).map(|((&sa, &sb), c)| {
        if sa == sb {
            0.0
        } else {
            let pad = pad_std.max(1e-3 * (c[3] / n).sqrt());
            ((sb + pad) / (sa + pad)).ln().abs()
        }
    });
    let err = acc
        .iter()
        .zip(&norm_b)
        .map(|(c, &nb)| c[5].sqrt() / (nb + pad_norm).max(f64::MIN_POSITIVE));
    let cos_gap = acc.iter().map(|c| {
        let (na, nb) = (c[1].sqrt(), c[3].sqrt());
        if na.max(nb) < pad_norm || c[5] == 0.0 {
            0.0
        } else if na == 0.0 || nb == 0.0 {
            1.0
        } else {
            1.0 - c[4] / (na * nb)
        }
    });
    ChannelDiff {
        std: worst(std_dev),
        err: worst(err),
        cosine_gap: worst(cos_gap),
    }
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(softmax(p) || softmax(q)) of two logit rows, in nats, summed in f64.
pub fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

impl LogitsDiff {
    /// KL at the first `n` positions, one `position: value` each (`0: 0, 1: 3.1e-3, ...`):
    /// where two engines' logits start to differ locates the fault by position. A difference
    /// that is nil at position 0 and appears from position 1 is in what depends on the
    /// position (RoPE, the causal mask, the KV cache), since position 0 attends only to
    /// itself with no rotation.
    pub fn by_position(&self, n: usize) -> String {
        let mut parts: Vec<String> = self
            .kl
            .iter()
            .take(n)
            .enumerate()
            .map(|(t, kl)| format!("{t}: {kl:.1e}"))
            .collect();
        if self.kl.len() > n {
            parts.push(format!("... ({} positions)", self.kl.len()));
        }
        parts.join(", ")
    }
}

fn logits_diff(a: &Logits, b: &Logits) -> LogitsDiff {
    let (mut kl, mut top1) = (Vec::new(), Vec::new());
    for t in 0..a.n_positions() {
        kl.push(kl_divergence(a.row(t), b.row(t)));
        top1.push(argmax(a.row(t)) == argmax(b.row(t)));
    }
    LogitsDiff {
        kl,
        top1_agree: top1,
    }
}

/// One line per engine naming the slots it did not capture, and in how many layers
/// (`not captured by realizar 0.72.3 gguf: ffn_gate, ffn_up (30 layers each)`); empty when
/// both engines captured every slot.
pub fn not_captured_lines(missing: &[NotCaptured]) -> Vec<String> {
    let mut by: BTreeMap<&str, BTreeMap<Slot, usize>> = BTreeMap::new();
    for m in missing {
        *by.entry(&m.engine).or_default().entry(m.slot).or_default() += 1;
    }
    by.into_iter()
        .map(|(engine, slots)| {
            let names: Vec<String> = slots
                .iter()
                .map(|(s, n)| match s.info().per_layer {
                    true => format!("{} ({n} layers)", s.name()),
                    false => s.name().to_string(),
                })
                .collect();
            format!(
                "not captured by {engine}, so not compared: {}",
                names.join(", ")
            )
        })
        .collect()
}

/// Compares two traced passes that captured every slot whole (unjudged: `violations`
/// empty until [`TraceDiff::judge`]). Refuses (with the parity error) traces whose tokens, layers or scopes differ;
/// a slot only one pass recorded is refused too, unless the other pass is
/// [`partial`](Traced::partial) (an external engine), when it is listed as not captured.
pub fn diff(a: &Traced, b: &Traced) -> Result<TraceDiff, ParityError> {
    let super::Parity {
        not_captured,
        mismatched,
    } = parity(&a.trace, &b.trace, [a.partial, b.partial])?;
    let mut slots = Vec::new();
    for ca in &a.captured {
        let Some(cb) = b
            .captured
            .iter()
            .find(|c| (c.layer, c.slot) == (ca.layer, ca.slot))
        else {
            continue;
        };
        let stats = |t: &Traced| match ca.layer {
            Some(l) => t.trace.layers[l].get(ca.slot).cloned(),
            None => match ca.slot {
                Slot::Embd => t.trace.embd.clone(),
                Slot::FinalNorm => t.trace.final_norm.clone(),
                _ => Some(t.trace.logits.stats()),
            },
        };
        let (Some(sa), Some(sb)) = (stats(a), stats(b)) else {
            continue;
        };
        if let Some(m) = mismatched
            .iter()
            .find(|m| (m.layer, m.slot) == (ca.layer, ca.slot))
        {
            slots.push(SlotDiff::mismatched(m));
            continue;
        }
        let (cosine, sqnr_db, nmse, max_abs_diff, gain) = compare(&ca.data, &cb.data);
        slots.push(SlotDiff {
            layer: ca.layer,
            slot: ca.slot,
            std_ratio_all: sb.all.std / sa.all.std,
            std_ratio_last: sb.last.std / sa.last.std,
            cosine,
            sqnr_db,
            nmse,
            max_abs_diff,
            gain,
            channels: channels(&ca.data, &cb.data, ca.width),
            shapes: None,
        });
    }
    Ok(TraceDiff {
        engines: (a.trace.engine.clone(), b.trace.engine.clone()),
        tokens: a.trace.tokens.clone(),
        slots,
        logits: if a.logits.vocab == b.logits.vocab {
            logits_diff(&a.logits, &b.logits)
        } else {
            LogitsDiff {
                kl: Vec::new(),
                top1_agree: Vec::new(),
            }
        },
        violations: Vec::new(),
        first_divergent: None,
        not_captured,
    })
}
