//! The vocabulary shared by measuring (`trace::diff`) and judging (`trace::limits`): the
//! metrics a comparison reports, how a deviation enters a logarithm, a prompt's distinct
//! tokens, and a finding. Measuring feeds judging one way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::parity::Shape;
use crate::model::Slot;

/// How far B is from A at one capture point, each as a deviation from perfect agreement
/// (0), so that every limit is an upper bound and a margin multiplies it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 1 - cosine similarity of the whole tensors.
    CosineGap,
    /// Largest |std(B)/std(A) - 1| of the two scopes (all tokens, last token).
    StdRatio,
    /// |<a,b>/<a,a> - 1|: B's least-squares scale against A, minus one. Quantization noise
    /// is uncorrelated with the signal, so this sees a 1% scale that std ratios drown.
    Gain,
    /// Normalised mean squared error, sum((a-b)^2) / sum(a^2) (SQNR = -10 log10 of it).
    Nmse,
    /// Largest |a - b|.
    MaxAbs,
    /// Per output channel (feature), over the tokens: the largest |ln(std_b / std_a)|, each
    /// std padded by a tenth of the median channel std and by a thousandth of the tensor's
    /// and of the channel's own RMS, so that near-constant channels do not dominate. A zeroed or rescaled channel
    /// stands out.
    ChannelStd,
    /// Per output channel: the largest |a_j - b_j| / (|b_j| + a tenth of the median |b_j|).
    /// A zeroed, negated or swapped channel gives about 1 or more.
    ChannelErr,
    /// Per output channel: 1 - the smallest cosine of a channel's values over the tokens,
    /// over the channels whose norm is at least a tenth of the median.
    ChannelCosineGap,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 8] = [
        Metric::CosineGap,
        Metric::StdRatio,
        Metric::Gain,
        Metric::Nmse,
        Metric::MaxAbs,
        Metric::ChannelStd,
        Metric::ChannelErr,
        Metric::ChannelCosineGap,
    ];

    /// The name used in contracts and reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::CosineGap => "cosine_gap",
            Metric::StdRatio => "std_ratio",
            Metric::Gain => "gain",
            Metric::Nmse => "nmse",
            Metric::MaxAbs => "max_abs",
            Metric::ChannelStd => "channel_std",
            Metric::ChannelErr => "channel_err",
            Metric::ChannelCosineGap => "channel_cosine_gap",
        }
    }

    /// Whether the metric looks at single output channels (and so names one).
    pub fn per_channel(self) -> bool {
        matches!(
            self,
            Metric::ChannelStd | Metric::ChannelErr | Metric::ChannelCosineGap
        )
    }
}

/// Deviations below this are taken as this before their logarithm (in calibration and in
/// a set's [`SlotSummary`](super::SlotSummary) means alike): f32 rounding.
pub const LOG_CLIP: f64 = 1e-6;

/// How many distinct token ids a prompt has: what averages a comparison's noise away.
pub fn distinct_tokens(tokens: &[u32]) -> usize {
    tokens
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// One metric of one slot outside its limit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Violation {
    /// Index into [`TraceDiff::slots`](super::TraceDiff::slots).
    pub index: usize,
    /// Layer, or `None` for once-per-pass slots.
    pub layer: Option<usize>,
    /// Capture point.
    pub slot: Slot,
    /// The metric.
    pub metric: Metric,
    /// The prompt (index into the set judged), or `None` for a band judged on the mean
    /// over every prompt.
    pub prompt: Option<usize>,
    /// The deviation (for a band: the mean signed deviation).
    #[serde(deserialize_with = "nan_from_null")]
    pub value: f64,
    /// The upper bound, or the band's half-width.
    #[serde(deserialize_with = "nan_from_null")]
    pub limit: f64,
    /// The band's centre.
    pub center: Option<f64>,
    /// The worst channel, for per-channel metrics.
    pub channel: Option<usize>,
    /// The two shapes of a slot the engines computed at different sizes (A, B): the
    /// violation is that, whatever `metric` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapes: Option<[Shape; 2]>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = match self.layer {
            Some(l) => format!("{} at layer {l}", self.slot.name()),
            None => self.slot.name().to_string(),
        };
        if let Some([a, b]) = self.shapes {
            return write!(f, "{at}: shapes differ: A {a}, B {b}");
        }
        match self.center {
            Some(c) => write!(
                f,
                "{at}: {} - 1 = {:+.4e}, outside {:+.4e} ± {:.4e}",
                self.metric.name(),
                self.value,
                c,
                self.limit
            )?,
            None => write!(
                f,
                "{at}: {} {:.4e} > {:.4e}{}",
                self.metric.name(),
                self.value,
                self.limit,
                if self.prompt.is_none() && self.value.is_finite() {
                    " (geometric mean over the prompts)"
                } else {
                    ""
                }
            )?,
        }
        if let Some(c) = self.channel {
            write!(f, " (channel {c})")?;
        }
        Ok(())
    }
}

/// JSON has no NaN or infinity, and serde_json writes them as `null`: read `null` back as
/// NaN, so a saved comparison (`pv calibrate --save-measurements`) loads as it was made.
pub(super) fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
