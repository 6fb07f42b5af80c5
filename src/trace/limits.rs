//! Limits on how far two traces of one model may part, per capture point and layer, and
//! their calibration from the quantization noise of an intact pair.
//!
//! A GGUF model and its APR conversion differ by quantization only, and how much depends on
//! the slot and the layer: a single global tolerance is either too wide for the quiet slots
//! (a 3% scale passes) or too tight for the loud ones (intact prompts raise alarms). So the
//! limits are a table, `slot -> metric -> limit` (one number, or one per layer), derived by
//! [`calibrate`] as the worst deviation seen on calibration prompts times a stated margin.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diff::{SetSummary, TraceDiff, summarize};
use super::metric::{LOG_CLIP, Metric, Violation, distinct_tokens};
use crate::model::Slot;

/// Per-layer values, or one value for every layer (and for the once-per-pass slots).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Values {
    /// Every layer.
    Every(f64),
    /// One per layer (index = layer).
    PerLayer(Vec<f64>),
}

impl Values {
    fn at(&self, layer: Option<usize>) -> Option<f64> {
        match (self, layer) {
            (Values::Every(v), _) => Some(*v),
            (Values::PerLayer(v), Some(l)) => v.get(l).copied(),
            (Values::PerLayer(_), None) => None,
        }
    }

    fn all(&self) -> &[f64] {
        match self {
            Values::Every(v) => std::slice::from_ref(v),
            Values::PerLayer(v) => v,
        }
    }
}

/// The limit of one metric at one slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Limit {
    /// An upper bound on the deviation of each prompt.
    Max(Values),
    /// A band for a signed metric (the gain): its mean over the prompts compared must lie
    /// within `mean ± band_k x sd x sqrt(1/n + 1/calibration_prompts)`, n the number of
    /// prompts. Quantization biases the gain of some slots by a steady amount, so the band
    /// is centred on the intact mean; several prompts narrow it by sqrt(n).
    Band {
        /// Intact mean of (gain - 1).
        mean: Values,
        /// Intact standard deviation of (gain - 1) across prompts.
        sd: Values,
    },
    /// An upper bound on each prompt's deviation that depends on the prompt (derived for a
    /// false-alarm rate, see [`Prediction`]): the deviation's logarithm has this centre and
    /// spread for a prompt of typical length.
    LogNormal {
        /// Intact centre of ln(deviation).
        log_mean: Values,
        /// Intact spread of ln(deviation) across prompts.
        log_sd: Values,
    },
}

/// A limit resolved for one slot and layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// deviation <= this.
    Max(f64),
    /// deviation <= [`Thresholds::log_bound`] of these, for the prompt judged.
    LogNormal {
        /// Centre of ln(deviation).
        log_mean: f64,
        /// Spread of ln(deviation).
        log_sd: f64,
    },
    /// |mean signed deviation - mean| <= band_k x sd x sqrt(1/n + 1/calibration_prompts).
    Band {
        /// Centre.
        mean: f64,
        /// Spread of one prompt.
        sd: f64,
    },
}

/// Limits per slot and metric, for one way of comparing (end to end or layer-local). A slot
/// or metric that is absent is not judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Whether the limits are for layer-local comparison (`pv diff --local`).
    #[serde(default)]
    pub local: bool,
    /// Width of gain bands in standard deviations.
    #[serde(default = "default_k")]
    pub band_k: f64,
    /// Prompts the bands' means and spreads were measured on.
    #[serde(default = "one")]
    pub calibration_prompts: usize,
    /// The false-alarm rate per prompt the limits were derived for (`pv calibrate
    /// --false-alarm`), when they were derived that way rather than as a margin on the worst
    /// calibration value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_alarm_rate: Option<f64>,
    /// How a prompt's length moves the limits, and how many spreads each metric allows
    /// (tables derived for a false-alarm rate; see [`calibrate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// Per slot, per metric.
    pub slots: BTreeMap<Slot, BTreeMap<Metric, Limit>>,
}

/// The noise model behind limits derived for a false-alarm rate. A prompt's length is
/// counted in distinct token ids (`T`): a prompt that repeats one token averages no noise
/// away, however long it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    /// Mean of ln T over the calibration prompts: the length a table's centres are for.
    pub mean_log_tokens: f64,
    /// Per metric.
    pub metrics: BTreeMap<Metric, MetricModel>,
}

/// How one metric's deviations spread, and how far one prompt's may go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricModel {
    /// Spreads a prompt may deviate by: the quantile, at the metric's share of the rate, of
    /// the largest standardised deviation a calibration prompt shows over every cell.
    pub k: f64,
    /// Spreads the geometric mean (for a band, the mean) of a set of prompts may deviate
    /// by, per set size: the same quantile of the largest standardised deviation that
    /// random sets of that many calibration prompts show. A mean has thinner tails than
    /// one prompt, so these are mostly smaller than `k`. They do not fall steadily with
    /// the size, though (the calibration corpus's mean is not every corpus's mean), so a
    /// set of `n` is judged with the largest of them for sizes up to `n` (never more than
    /// `k`), and is held no tighter than a set of the largest size here. Pairs of (set
    /// size, spreads), by size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_k: Vec<(usize, f64)>,
    /// A prompt of T distinct tokens spreads `sqrt(1 + noise_tokens / T)` times a long
    /// prompt's spread (fewer values to average the noise over).
    pub noise_tokens: f64,
    /// The centre of ln(deviation) moves by `slope x spread` per unit of ln T (upper bounds).
    pub slope: f64,
    /// The centre's precision, in prompts of the long-prompt spread:
    /// sum over the calibration prompts of `1 / (1 + noise_tokens / T)`.
    pub effective_prompts: f64,
    /// No limit below this (for a band: no spread below it).
    pub floor: f64,
}

impl MetricModel {
    /// The variance factor of a prompt of `tokens` distinct ids; `None` (a record that did
    /// not keep the count) is taken as a prompt of the table's typical length.
    fn weight(&self, tokens: Option<usize>, mean_log_tokens: f64) -> f64 {
        let t = tokens.map_or(mean_log_tokens.exp(), |t| t.max(1) as f64);
        1.0 + self.noise_tokens / t
    }

    /// The spreads allowed to a set of `n` prompts judged together, and the size its
    /// spread is computed for (see `set_k`).
    fn k_for(&self, n: usize) -> (f64, f64) {
        let largest = self.set_k.iter().map(|s| s.0).max().unwrap_or(usize::MAX);
        let size = n.min(largest).max(1) as f64;
        let k = self
            .set_k
            .iter()
            .filter(|s| s.0 <= n)
            .map(|s| s.1)
            .reduce(f64::max)
            .map_or(self.k, |k| k.min(self.k));
        (if n < 2 { self.k } else { k }, size)
    }

    /// The set's spread in units of one long prompt's: `sqrt(mean(w) / n + 1 /
    /// effective_prompts)`, `n` capped by [`MetricModel::k_for`].
    fn set_spread(&self, tokens: &[Option<usize>], mean_log_tokens: f64) -> (f64, f64) {
        let n = tokens.len().max(1) as f64;
        let w: f64 = tokens
            .iter()
            .map(|&t| self.weight(t, mean_log_tokens))
            .sum::<f64>()
            / n;
        let (k, size) = self.k_for(tokens.len());
        (k, (w / size + 1.0 / self.effective_prompts.max(1.0)).sqrt())
    }
}

fn default_k() -> f64 {
    6.0
}

fn one() -> usize {
    1
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            local: false,
            band_k: default_k(),
            calibration_prompts: 1,
            false_alarm_rate: None,
            prediction: None,
            slots: BTreeMap::new(),
        }
    }
}

impl Thresholds {
    /// The same upper bounds for every slot and layer.
    pub fn uniform(limits: &[(Metric, f64)]) -> Self {
        let per: BTreeMap<Metric, Limit> = limits
            .iter()
            .map(|&(m, v)| (m, Limit::Max(Values::Every(v))))
            .collect();
        Thresholds {
            slots: crate::model::SLOTS
                .iter()
                .map(|i| (i.slot, per.clone()))
                .collect(),
            ..Default::default()
        }
    }

    /// How many checks one prompt gets: a value per slot, metric and layer.
    pub fn cells(&self) -> usize {
        self.slots
            .values()
            .flat_map(|m| m.values())
            .map(|l| match l {
                Limit::Max(v)
                | Limit::Band { mean: v, .. }
                | Limit::LogNormal { log_mean: v, .. } => match v {
                    Values::PerLayer(x) => x.len(),
                    Values::Every(_) => 1,
                },
            })
            .sum()
    }

    /// pv diff's default when no calibrated table is given: |std ratio - 1| <= 5% and
    /// cosine >= 0.99 everywhere.
    pub fn coarse() -> Self {
        Thresholds::uniform(&[(Metric::StdRatio, 0.05), (Metric::CosineGap, 0.01)])
    }

    /// The limits that apply to `slot` at `layer`.
    pub fn limits(&self, slot: Slot, layer: Option<usize>) -> Vec<(Metric, Bound)> {
        let Some(m) = self.slots.get(&slot) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(|(&metric, l)| {
                let b = match l {
                    Limit::Max(v) => Bound::Max(v.at(layer)?),
                    Limit::Band { mean, sd } => Bound::Band {
                        mean: mean.at(layer)?,
                        sd: sd.at(layer)?,
                    },
                    Limit::LogNormal { log_mean, log_sd } => Bound::LogNormal {
                        log_mean: log_mean.at(layer)?,
                        log_sd: log_sd.at(layer)?,
                    },
                };
                Some((metric, b))
            })
            .collect()
    }

    /// Half-width of a band of spread `sd` for a mean over `n` prompts of a typical length.
    pub fn band_width(&self, sd: f64, n: usize) -> f64 {
        self.band_width_for(sd, &vec![None; n.max(1)])
    }

    /// Half-width of a band of spread `sd` for the mean over prompts of these distinct token
    /// counts (`None`: not known, taken as typical). Without a [`Prediction`]:
    /// `band_k x sd x sqrt(1/n + 1/calibration_prompts)`. With one: the gain's `k` times the
    /// standard deviation of the mean, `sd x sqrt(sum(w_p) / n^2 + 1 / effective_prompts)`,
    /// `w_p` each prompt's variance factor.
    pub fn band_width_for(&self, sd: f64, tokens: &[Option<usize>]) -> f64 {
        let n = tokens.len().max(1) as f64;
        match self.model(Metric::Gain) {
            Some((m, mean_log)) => {
                let (k, spread) = m.set_spread(tokens, mean_log);
                k * sd.max(m.floor) * spread
            }
            None => {
                let nc = self.calibration_prompts.max(1) as f64;
                self.band_k * sd * (1.0 / n + 1.0 / nc).sqrt()
            }
        }
    }

    /// The upper bound of a [`Limit::LogNormal`] for one prompt of `tokens` distinct ids:
    /// `exp(log_mean + slope x log_sd x (ln T - mean_log_tokens) + k x log_sd x sqrt(w(T) +
    /// 1 / effective_prompts))`, and never below the metric's floor. A table without the
    /// metric's model gives the centre alone.
    pub fn log_bound(
        &self,
        metric: Metric,
        log_mean: f64,
        log_sd: f64,
        tokens: Option<usize>,
    ) -> f64 {
        let Some((m, mean_log)) = self.model(metric) else {
            return log_mean.exp();
        };
        let lt = tokens.map_or(mean_log, |t| (t.max(1) as f64).ln());
        let spread = (m.weight(tokens, mean_log) + 1.0 / m.effective_prompts.max(1.0)).sqrt();
        (log_mean + m.slope * log_sd * (lt - mean_log) + m.k * log_sd * spread)
            .exp()
            .max(m.floor)
    }

    /// [`Thresholds::log_bound`] for the geometric mean of a set of prompts' deviations
    /// (these distinct token counts): the centre at their mean ln T, the spread that of a
    /// mean, `sqrt(sum(w_p) / n^2 + 1 / effective_prompts)`, and the set's `k`.
    pub fn log_bound_for(
        &self,
        metric: Metric,
        log_mean: f64,
        log_sd: f64,
        tokens: &[Option<usize>],
    ) -> f64 {
        let Some((m, mean_log)) = self.model(metric) else {
            return log_mean.exp();
        };
        let n = tokens.len().max(1) as f64;
        let lt = tokens
            .iter()
            .map(|t| t.map_or(mean_log, |t| (t.max(1) as f64).ln()))
            .sum::<f64>()
            / n;
        let (k, spread) = m.set_spread(tokens, mean_log);
        (log_mean + m.slope * log_sd * (lt - mean_log) + k * log_sd * spread)
            .exp()
            .max(m.floor)
    }

    fn model(&self, metric: Metric) -> Option<(&MetricModel, f64)> {
        let p = self.prediction.as_ref()?;
        Some((p.metrics.get(&metric)?, p.mean_log_tokens))
    }

    /// Problems with the table for a model of `n_layer` layers: per-layer lists of another
    /// length, per-layer lists on once-per-pass slots, bands on metrics that are not signed,
    /// limits that are negative or not finite.
    pub fn problems(&self, n_layer: Option<usize>) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.band_k.is_finite() && self.band_k > 0.0) {
            out.push(format!("band_k {} is not a positive number", self.band_k));
        }
        if self.calibration_prompts == 0 {
            out.push("calibration_prompts is 0".into());
        }
        if let Some(p) = &self.prediction {
            if !p.mean_log_tokens.is_finite() || p.mean_log_tokens < 0.0 {
                out.push(format!(
                    "prediction.mean_log_tokens {} is not a finite number >= 0",
                    p.mean_log_tokens
                ));
            }
            for (m, x) in &p.metrics {
                let fields = [
                    ("k", x.k, x.k > 0.0),
                    ("noise_tokens", x.noise_tokens, x.noise_tokens >= 0.0),
                    ("slope", x.slope, true),
                    (
                        "effective_prompts",
                        x.effective_prompts,
                        x.effective_prompts > 0.0,
                    ),
                    ("floor", x.floor, x.floor >= 0.0),
                ];
                for (f, v, ok) in fields {
                    if !(v.is_finite() && ok) {
                        out.push(format!(
                            "prediction.metrics.{}.{f}: {v} is out of range",
                            m.name()
                        ));
                    }
                }
                if !x.set_k.is_sorted_by(|a, b| a.0 < b.0) {
                    out.push(format!(
                        "prediction.metrics.{}.set_k: sizes are not in increasing order",
                        m.name()
                    ));
                }
                for &(size, k) in &x.set_k {
                    if size < 2 || !(k.is_finite() && k > 0.0) {
                        out.push(format!(
                            "prediction.metrics.{}.set_k: {size}: {k} is out of range (sets \
                             of 2 or more prompts, a positive number of spreads)",
                            m.name()
                        ));
                    }
                }
            }
        }
        for (slot, metrics) in &self.slots {
            let per_layer = slot.info().per_layer;
            for (m, l) in metrics {
                let at = format!("{}.{}", slot.name(), m.name());
                let parts: Vec<(&str, &Values)> = match l {
                    Limit::Max(v) => vec![("", v)],
                    Limit::Band { mean, sd } => {
                        if *m != Metric::Gain {
                            out.push(format!("{at}: only gain takes a band"));
                        }
                        vec![(".mean", mean), (".sd", sd)]
                    }
                    Limit::LogNormal { log_mean, log_sd } => {
                        if *m == Metric::Gain {
                            out.push(format!("{at}: the gain takes a band, not log_mean/log_sd"));
                        }
                        if self.model(*m).is_none() {
                            out.push(format!(
                                "{at}: log_mean/log_sd need prediction.metrics.{}",
                                m.name()
                            ));
                        }
                        vec![(".log_mean", log_mean), (".log_sd", log_sd)]
                    }
                };
                for (part, v) in parts {
                    if let Values::PerLayer(list) = v {
                        if !per_layer {
                            out.push(format!("{at}{part}: a once-per-pass slot takes one value"));
                        } else if let Some(n) = n_layer.filter(|&n| n != list.len()) {
                            out.push(format!("{at}{part}: {} values for {n} layers", list.len()));
                        }
                    }
                    let signed = part == ".mean" || part == ".log_mean";
                    if let Some(x) = v
                        .all()
                        .iter()
                        .find(|x| !x.is_finite() || (!signed && **x < 0.0))
                    {
                        out.push(format!(
                            "{at}{part}: {x} is not a finite number{}",
                            if signed { "" } else { " >= 0" }
                        ));
                    }
                }
            }
        }
        out
    }

    /// The table as block YAML, each line indented by `indent` spaces, one flow list per
    /// metric (what `pv calibrate` writes and a contract's `thresholds:` holds).
    pub fn to_yaml(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let list = |v: &Values| match v {
            Values::Every(x) => yaml_float(*x),
            Values::PerLayer(v) => format!(
                "[{}]",
                v.iter()
                    .map(|&x| yaml_float(x))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut o = format!(
            "{pad}local: {}\n{pad}band_k: {}\n{pad}calibration_prompts: {}\n",
            self.local, self.band_k, self.calibration_prompts
        );
        if let Some(r) = self.false_alarm_rate {
            o.push_str(&format!("{pad}false_alarm_rate: {}\n", yaml_float(r)));
        }
        if let Some(p) = &self.prediction {
            o.push_str(&format!(
                "{pad}prediction:\n{pad}  mean_log_tokens: {}\n{pad}  metrics:\n",
                yaml_float(p.mean_log_tokens)
            ));
            for (m, x) in &p.metrics {
                let set_k = if x.set_k.is_empty() {
                    String::new()
                } else {
                    let sizes: Vec<String> = x
                        .set_k
                        .iter()
                        .map(|(n, k)| format!("[{n}, {}]", yaml_float(*k)))
                        .collect();
                    format!(", set_k: [{}]", sizes.join(", "))
                };
                o.push_str(&format!(
                    "{pad}    {}: {{k: {}{set_k}, noise_tokens: {}, slope: {}, effective_prompts: {}, floor: {}}}\n",
                    m.name(),
                    yaml_float(x.k),
                    yaml_float(x.noise_tokens),
                    yaml_float(x.slope),
                    yaml_float(x.effective_prompts),
                    yaml_float(x.floor)
                ));
            }
        }
        o.push_str(&format!("{pad}slots:\n"));
        for (slot, metrics) in &self.slots {
            o.push_str(&format!("{pad}  {}:\n", slot.name()));
            for (m, l) in metrics {
                match l {
                    Limit::Max(v) => o.push_str(&format!("{pad}    {}: {}\n", m.name(), list(v))),
                    Limit::Band { mean, sd } => {
                        o.push_str(&format!("{pad}    {}:\n", m.name()));
                        o.push_str(&format!("{pad}      mean: {}\n", list(mean)));
                        o.push_str(&format!("{pad}      sd: {}\n", list(sd)));
                    }
                    Limit::LogNormal { log_mean, log_sd } => {
                        o.push_str(&format!("{pad}    {}:\n", m.name()));
                        o.push_str(&format!("{pad}      log_mean: {}\n", list(log_mean)));
                        o.push_str(&format!("{pad}      log_sd: {}\n", list(log_sd)));
                    }
                }
            }
        }
        o
    }
}

/// `x` in exponent form that YAML 1.1 readers also take for a float (a point in the
/// mantissa, a signed exponent: `2.48e-3`, `1.0e+0`); YAML 1.2 reads it the same.
fn yaml_float(x: f64) -> String {
    let s = format!("{x:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let m = if m.contains('.') || !m.chars().any(|c| c.is_ascii_digit()) {
        m.to_string()
    } else {
        format!("{m}.0")
    };
    let e = if e.starts_with('-') {
        e.to_string()
    } else {
        format!("+{e}")
    };
    format!("{m}e{e}")
}

/// How [`calibrate`] turns the intact pair's noise into limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Each upper bound is the worst deviation seen over the calibration prompts times this.
    pub margin: f64,
    /// Gain bands are this many standard deviations wide (see [`Limit::Band`]).
    pub band_k: f64,
    /// No limit (or spread) is below this: a slot both engines compute identically would
    /// otherwise get a limit of 0.
    pub floor: f64,
    /// The metrics calibrated (the gain as a band, the others as upper bounds).
    pub metrics: Vec<Metric>,
    /// Derive the limits for this false-alarm rate per prompt instead (`margin` and
    /// `band_k` are then not used): see [`calibrate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_alarm: Option<f64>,
}

/// Limits from intact comparisons (the same two models on several prompts, compared the
/// same way, end to end or layer-local).
///
/// Without a rate (`how.false_alarm = None`): for every slot, layer and metric,
/// `max(margin x worst deviation, floor)`, and for the gain the mean and spread of its
/// signed deviation, judged with `band_k`.
///
/// With `how.false_alarm = Some(alpha)`: limits for at most `alpha` false alarms per prompt,
/// shared equally by the metrics, derived by [`predict`]. Values are rounded outward to
/// three significant digits so the table reads well in a contract.
pub fn calibrate(intact: &[TraceDiff], local: bool, how: &Calibration) -> Thresholds {
    if let Some(alpha) = how.false_alarm {
        return predict(intact, local, how, alpha);
    }
    let mut seen = Deviations::new();
    for d in intact {
        for s in &d.slots {
            for &m in &how.metrics {
                let v = if m == Metric::Gain {
                    s.gain - 1.0
                } else {
                    s.deviation(m).0
                };
                let v = if v.is_nan() { f64::INFINITY } else { v };
                seen.entry((s.slot, m))
                    .or_default()
                    .entry(s.layer)
                    .or_default()
                    .push(v);
            }
        }
    }
    let mut t = Thresholds {
        local,
        band_k: how.band_k,
        calibration_prompts: intact.len(),
        ..Thresholds::default()
    };
    for ((slot, m), per) in seen {
        let values = |f: &dyn Fn(&[f64]) -> f64| {
            if slot.info().per_layer {
                Values::PerLayer(per.values().map(|v| f(v)).collect())
            } else {
                Values::Every(per.values().map(|v| f(v)).fold(f64::NEG_INFINITY, f64::max))
            }
        };
        let l = if m == Metric::Gain {
            Limit::Band {
                mean: values(&|v| round_signed(mean(v))),
                sd: values(&|v| round_up(sd(v).max(how.floor))),
            }
        } else {
            Limit::Max(values(&|v| {
                let worst = v.iter().copied().fold(0.0, f64::max);
                round_up((worst * how.margin).max(how.floor))
            }))
        };
        t.slots.entry(slot).or_default().insert(m, l);
    }
    t
}

/// (slot, metric) -> layer -> the deviations over the calibration prompts.
type Deviations = BTreeMap<(Slot, Metric), BTreeMap<Option<usize>, Vec<f64>>>;

/// The smallest limit a metric is given when derived for a rate: below it the two engines'
/// difference is rounding, not a finding. A slot the two engines compute alike (the
/// residual stream, a norm, a layer whose weights are not quantized) differs by ~1e-7 in
/// cosine, but by 1.4e-5 on a prompt of one repeated word; an untouched norm's channel std
/// ratio by ~1e-7 with many tokens and ~1e-4 with one repeated. One channel of 1,536 zeroed
/// is ~6e-4 of cosine and 1.0 of channel error, above both.
pub fn metric_floor(m: Metric) -> f64 {
    match m {
        Metric::ChannelStd | Metric::ChannelErr => 1e-3,
        Metric::CosineGap | Metric::ChannelCosineGap | Metric::Nmse => 1e-4,
        Metric::Gain | Metric::StdRatio | Metric::MaxAbs => 1e-6,
    }
}

/// The variance factors tried for a prompt's length (`noise_tokens`).
const NOISE_TOKENS: [f64; 14] = [
    0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Limits for `alpha` false alarms per prompt. Per metric, every cell's (slot and layer's)
/// values over the `n` calibration prompts (the gain's `gain - 1`; the other metrics'
/// ln(max(deviation, floor))) are modelled as `centre + slope x sd x (ln T - mean ln T) +
/// sd x sqrt(1 + noise_tokens / T) x e`, `T` the prompt's distinct token ids, `centre` and
/// `sd` the cell's own, `slope` (upper bounds only) and `noise_tokens` the metric's, chosen
/// by likelihood over all its cells. Each calibration prompt's largest standardised
/// deviation over the metric's cells (its own value left out of the cell's spread, only
/// values that could break a limit, i.e. above the metric's floor) is one sample of what
/// a new prompt does at worst: a generalised extreme-value distribution is fitted to those
/// `n` maxima (probability-weighted moments), and `k` is the 95% upper confidence bound
/// (bootstrap) of its quantile at `1 - alpha / M`, `M` metrics, never below the largest
/// maximum seen. Because the maximum is taken over
/// the cells together, the cells' correlation and the tails' weight are in the data, not
/// assumed. `pv calibrate --check` counts the false alarms on held-out prompts.
fn predict(intact: &[TraceDiff], local: bool, how: &Calibration, alpha: f64) -> Thresholds {
    let n = intact.len();
    let tokens: Vec<f64> = intact
        .iter()
        .map(|d| distinct_tokens(&d.tokens).max(1) as f64)
        .collect();
    let mean_log = mean(&tokens.iter().map(|t| t.ln()).collect::<Vec<_>>());
    let x: Vec<f64> = tokens.iter().map(|t| t.ln() - mean_log).collect();
    let mut t = Thresholds {
        local,
        // Set to the gain's k below (what a band is wide, in spreads).
        band_k: 1.0,
        calibration_prompts: n,
        false_alarm_rate: Some(alpha),
        prediction: Some(Prediction {
            mean_log_tokens: round_signed(mean_log),
            metrics: BTreeMap::new(),
        }),
        slots: BTreeMap::new(),
    };
    let share = alpha / how.metrics.len().max(1) as f64;
    for &m in &how.metrics {
        let gain = m == Metric::Gain;
        let floor = metric_floor(m).max(how.floor);
        // (slot, layer) -> u over the prompts; cells some prompt lacks or cannot give are
        // left out (no limit).
        let mut cells: BTreeMap<(Slot, Option<usize>), Vec<f64>> = BTreeMap::new();
        for d in intact {
            for s in &d.slots {
                let u = if gain {
                    s.gain - 1.0
                } else {
                    s.deviation(m).0.max(LOG_CLIP).ln()
                };
                cells.entry((s.slot, s.layer)).or_default().push(u);
            }
        }
        cells.retain(|_, u| u.len() == n && u.iter().all(|v| v.is_finite()));
        let fit = fit_metric(&cells, &tokens, &x, !gain);
        let w: Vec<f64> = tokens.iter().map(|t| 1.0 + fit.noise_tokens / t).collect();
        let mut maxima = vec![f64::NEG_INFINITY; n];
        for (key, u) in &cells {
            let (a, s) = fit.cells[key];
            if s.is_nan() || s <= 0.0 || n < 3 {
                continue;
            }
            let nf = n as f64;
            for p in 0..n {
                if !gain && u[p] <= floor.ln() {
                    continue;
                }
                let r = (u[p] - a - fit.slope * s * x[p]) / w[p].sqrt();
                let s2 = (((nf - 1.0) * s * s - r * r * nf / (nf - 1.0)) / (nf - 2.0)).max(1e-300);
                let z = r / s2.sqrt() / (1.0 + 1.0 / nf).sqrt();
                maxima[p] = maxima[p].max(if gain { z.abs() } else { z });
            }
        }
        maxima.retain(|v| v.is_finite());
        let seen = maxima.iter().copied().fold(0.0, f64::max);
        let k = gev_upper_95(&maxima, 1.0 - share).map_or(seen, |q| q.max(seen));
        // A band judges the plain mean over the prompts compared, so its centre is the plain
        // mean over the calibration prompts, known to sd^2 x sum(w) / n^2; an upper bound's
        // centre is the weighted one, known to sd^2 / sum(1 / w).
        let effective = if gain {
            let nf = n as f64;
            nf * nf / w.iter().sum::<f64>()
        } else {
            w.iter().map(|w| 1.0 / w).sum()
        };
        let mut fit = fit;
        if gain {
            for (key, u) in &cells {
                if let Some(c) = fit.cells.get_mut(key) {
                    c.0 = mean(u);
                }
            }
        }
        if gain {
            t.band_k = round_up(k.max(1.0));
        }
        let set_k = set_spreads(&cells, &fit, &x, &w, gain, floor, share, effective);
        if let Some(p) = t.prediction.as_mut() {
            p.metrics.insert(
                m,
                MetricModel {
                    k: round_up(k.max(1.0)),
                    set_k,
                    noise_tokens: fit.noise_tokens,
                    slope: round_signed(fit.slope),
                    effective_prompts: round_signed(effective),
                    floor,
                },
            );
        }
        let mut by_slot: BTreeMap<Slot, Vec<(f64, f64)>> = BTreeMap::new();
        for key in cells.keys() {
            by_slot.entry(key.0).or_default().push(fit.cells[key]);
        }
        for (slot, per) in by_slot {
            let values = |f: &dyn Fn(&(f64, f64)) -> f64| {
                if slot.info().per_layer {
                    Values::PerLayer(per.iter().map(f).collect())
                } else {
                    Values::Every(per.first().map_or(0.0, f))
                }
            };
            let l = if gain {
                Limit::Band {
                    mean: values(&|c| round_signed(c.0)),
                    sd: values(&|c| round_up(c.1.max(how.floor))),
                }
            } else {
                Limit::LogNormal {
                    // The centre is rounded up in the deviation's own units.
                    log_mean: values(&|c| round_up(c.0.exp()).ln()),
                    log_sd: values(&|c| round_up(c.1)),
                }
            };
            t.slots.entry(slot).or_default().insert(m, l);
        }
    }
    t
}

/// The set sizes [`predict`] derives a `set_k` for (those below half the calibration
/// prompts): a contract judges sets of about a dozen prompts.
const SET_SIZES: [usize; 7] = [2, 4, 8, 12, 16, 24, 32];

/// [`MetricModel::set_k`]: for each of [`SET_SIZES`], as many random sets of that many
/// calibration prompts as there are prompts (a fixed generator, so a table is
/// reproducible); each set's largest standardised deviation of its mean over the metric's
/// cells, measured from each cell's centre without the set's own prompts and in units of
/// the spread the judge allows a set (`sqrt(sum(w) / n^2 + 1 / effective)`), is one
/// sample; `k` is the same bound of the same quantile as for one prompt.
#[allow(clippy::too_many_arguments)]
fn set_spreads(
    cells: &BTreeMap<(Slot, Option<usize>), Vec<f64>>,
    fit: &MetricFit,
    x: &[f64],
    w: &[f64],
    gain: bool,
    floor: f64,
    share: f64,
    effective: f64,
) -> Vec<(usize, f64)> {
    let n = w.len();
    let sum_inv: f64 = w.iter().map(|w| 1.0 / w).sum();
    let mut out = Vec::new();
    let mut rng = SplitMix(0x5e75_5e75);
    for size in SET_SIZES.into_iter().filter(|&m| 2 * m <= n) {
        let m = size as f64;
        let mut order: Vec<usize> = (0..n).collect();
        let mut maxima = Vec::with_capacity(n);
        for _ in 0..n {
            // A partial Fisher-Yates shuffle: the first `size` are a random set.
            for i in 0..size {
                let j = i + (rng.next() % (n - i) as u64) as usize;
                order.swap(i, j);
            }
            let set = &order[..size];
            let w_set: f64 = set.iter().map(|&p| w[p]).sum();
            let spread = (w_set / (m * m) + 1.0 / effective.max(1.0)).sqrt();
            let x_set = set.iter().map(|&p| x[p]).sum::<f64>() / m;
            let mut worst = f64::NEG_INFINITY;
            for (key, u) in cells {
                let (a, s) = fit.cells[key];
                if s.is_nan() || s <= 0.0 {
                    continue;
                }
                let mean_set = set.iter().map(|&p| u[p]).sum::<f64>() / m;
                let z = if gain {
                    // The band's centre is the plain mean over the calibration prompts.
                    let rest = (a * n as f64 - mean_set * m) / (n as f64 - m);
                    ((mean_set - rest) / (s * spread)).abs()
                } else {
                    if mean_set <= floor.ln() {
                        continue;
                    }
                    let own: f64 = set
                        .iter()
                        .map(|&p| (u[p] - fit.slope * s * x[p]) / w[p])
                        .sum();
                    let own_inv: f64 = set.iter().map(|&p| 1.0 / w[p]).sum();
                    let rest = (a * sum_inv - own) / (sum_inv - own_inv);
                    (mean_set - rest - fit.slope * s * x_set) / (s * spread)
                };
                worst = worst.max(z);
            }
            if worst.is_finite() {
                maxima.push(worst);
            }
        }
        let seen = maxima.iter().copied().fold(0.0, f64::max);
        let k = gev_upper_95(&maxima, 1.0 - share).map_or(seen, |q| q.max(seen));
        out.push((size, round_up(k.max(1.0))));
    }
    out
}

/// splitmix64: a small fixed generator, so derived tables are reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One metric's noise model: its length terms and each cell's (centre, spread).
struct MetricFit {
    noise_tokens: f64,
    slope: f64,
    cells: BTreeMap<(Slot, Option<usize>), (f64, f64)>,
}

/// Fits [`predict`]'s model to one metric's cells: for each `noise_tokens` of
/// [`NOISE_TOKENS`], the slope (pooled over the cells in units of each cell's spread) and
/// the cells' weighted centres and spreads by a few rounds of alternation, keeping the
/// `noise_tokens` of the highest Gaussian likelihood.
fn fit_metric(
    cells: &BTreeMap<(Slot, Option<usize>), Vec<f64>>,
    tokens: &[f64],
    x: &[f64],
    with_slope: bool,
) -> MetricFit {
    let n = tokens.len();
    let mut best: Option<(f64, MetricFit)> = None;
    for h in NOISE_TOKENS {
        let w: Vec<f64> = tokens.iter().map(|t| 1.0 + h / t).collect();
        let sum_inv: f64 = w.iter().map(|w| 1.0 / w).sum();
        let mut slope = 0.0;
        let mut fitted = BTreeMap::new();
        for _round in 0..if with_slope { 4 } else { 1 } {
            let (mut zx, mut xx) = (0.0, 0.0);
            for (key, u) in cells {
                let centre = |s: f64| {
                    (0..n)
                        .map(|p| (u[p] - slope * s * x[p]) / w[p])
                        .sum::<f64>()
                        / sum_inv
                };
                let spread = |a: f64, s: f64| {
                    ((0..n)
                        .map(|p| (u[p] - a - slope * s * x[p]).powi(2) / w[p])
                        .sum::<f64>()
                        / (n.max(2) - 1) as f64)
                        .sqrt()
                };
                let mut a = centre(0.0);
                let mut s = spread(a, 0.0);
                for _ in 0..3 {
                    if s.is_nan() || s <= 0.0 {
                        break;
                    }
                    a = centre(s);
                    s = spread(a, s);
                }
                if s > 0.0 {
                    for p in 0..n {
                        zx += (u[p] - a) / s * x[p] / w[p];
                        xx += x[p] * x[p] / w[p];
                    }
                }
                fitted.insert(*key, (a, s));
            }
            if with_slope && xx > 0.0 {
                slope = zx / xx;
            }
        }
        let ll: f64 = cells
            .iter()
            .filter_map(|(key, u)| {
                let (a, s) = fitted[key];
                (s > 0.0).then(|| {
                    (0..n)
                        .map(|p| {
                            let v = s * s * w[p];
                            let r = u[p] - a - slope * s * x[p];
                            -0.5 * (v.ln() + r * r / v)
                        })
                        .sum::<f64>()
                })
            })
            .sum();
        if best.as_ref().is_none_or(|(b, _)| ll > *b) {
            best = Some((
                ll,
                MetricFit {
                    noise_tokens: h,
                    slope,
                    cells: fitted,
                },
            ));
        }
    }
    best.map(|(_, f)| f).unwrap_or(MetricFit {
        noise_tokens: 0.0,
        slope: 0.0,
        cells: BTreeMap::new(),
    })
}

/// The `p` quantile of a generalised extreme-value distribution fitted to `sample` by
/// probability-weighted moments (Hosking, Wallis and Wood 1985); `None` for fewer than ten
/// values or a degenerate fit.
pub fn gev_quantile(sample: &[f64], p: f64) -> Option<f64> {
    use statrs::function::gamma::gamma;
    let mut x: Vec<f64> = sample.iter().copied().filter(|v| v.is_finite()).collect();
    if x.len() < 10 {
        return None;
    }
    x.sort_by(f64::total_cmp);
    let n = x.len() as f64;
    let (mut b0, mut b1, mut b2) = (0.0, 0.0, 0.0);
    for (j, v) in x.iter().enumerate() {
        let j = j as f64;
        b0 += v;
        b1 += j / (n - 1.0) * v;
        b2 += j * (j - 1.0) / ((n - 1.0) * (n - 2.0)) * v;
    }
    let (b0, b1, b2) = (b0 / n, b1 / n, b2 / n);
    let c = (2.0 * b1 - b0) / (3.0 * b2 - b0) - 2f64.ln() / 3f64.ln();
    let k = 7.8590 * c + 2.9554 * c * c;
    let y = -p.ln();
    let q = if k.abs() < 1e-6 {
        let scale = (2.0 * b1 - b0) / 2f64.ln();
        b0 - 0.577_215_664_9 * scale - scale * y.ln()
    } else {
        let g = gamma(1.0 + k);
        let scale = (2.0 * b1 - b0) * k / (g * (1.0 - 2f64.powf(-k)));
        let loc = b0 + scale * (g - 1.0) / k;
        loc + scale / k * (1.0 - y.powf(k))
    };
    q.is_finite().then_some(q)
}

/// The one-sided 95% upper confidence bound of [`gev_quantile`]: its 95th percentile over
/// 400 bootstrap resamples of `sample` (a fixed generator, so a table is reproducible). A
/// quantile far past the sample is uncertain, and a limit that misses the tail raises
/// false alarms; the bound pays for that uncertainty in width.
pub fn gev_upper_95(sample: &[f64], p: f64) -> Option<f64> {
    let point = gev_quantile(sample, p)?;
    let n = sample.len() as u64;
    let mut rng = SplitMix(0x2626_2626);
    let mut qs: Vec<f64> = (0..400)
        .filter_map(|_| {
            let resample: Vec<f64> = (0..n).map(|_| sample[(rng.next() % n) as usize]).collect();
            gev_quantile(&resample, p)
        })
        .collect();
    if qs.len() < 100 {
        return Some(point);
    }
    qs.sort_by(f64::total_cmp);
    Some(qs[(qs.len() * 95 / 100).min(qs.len() - 1)].max(point))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (0 for fewer than two values).
fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// `v` rounded up to three significant digits.
fn round_up(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let e = v.abs().log10().floor() - 2.0;
    let scale = 10f64.powf(e);
    let r = (v / scale).ceil() * scale;
    // Printing may leave digits past the third; parse the short form back.
    format!("{r:.3e}").parse().unwrap_or(r)
}

/// `v` to three significant digits (a centre, so to the nearest).
fn round_signed(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    format!("{v:.2e}").parse().unwrap_or(v)
}

impl TraceDiff {
    /// Judges this prompt alone against `limits`, replacing earlier violations.
    pub fn judge(&mut self, limits: &Thresholds) {
        self.violations = judge_set(std::slice::from_ref(self), limits);
        self.first_divergent = self.violations.first().map(|v| v.index);
    }

    /// [`judge`](Self::judge), by value: `diff(&a, &b)?.judged(&limits)`.
    pub fn judged(mut self, limits: &Thresholds) -> Self {
        self.judge(limits);
        self
    }
}

/// Judges comparisons of the same two models on several prompts: upper bounds on each
/// prompt, gain bands on the mean over all of them. Violations come in execution order.
pub fn judge_set(diffs: &[TraceDiff], limits: &Thresholds) -> Vec<Violation> {
    judge_summary(&summarize(diffs), limits)
}

/// [`judge_set`] on the reduced form (what a verifier re-judges from a record). An upper
/// bound is broken on its worst prompt, which the violation names; a bound that depends on
/// the prompt's length is taken at the worst prompt's.
pub fn judge_summary(summary: &SetSummary, limits: &Thresholds) -> Vec<Violation> {
    let mut out = Vec::new();
    let tokens: Vec<Option<usize>> = (0..summary.prompts)
        .map(|p| summary.distinct_tokens.get(p).copied())
        .collect();
    for (index, s) in summary.slots.iter().enumerate() {
        if let Some(shapes) = s.shapes {
            out.push(Violation {
                index,
                layer: s.layer,
                slot: s.slot,
                metric: Metric::CosineGap,
                prompt: None,
                value: f64::MAX,
                limit: 0.0,
                center: None,
                channel: None,
                shapes: Some(shapes),
            });
            continue;
        }
        for (metric, bound) in limits.limits(s.slot, s.layer) {
            let v = |prompt, value, limit, center, channel| Violation {
                index,
                layer: s.layer,
                slot: s.slot,
                metric,
                prompt,
                value,
                limit,
                center,
                channel,
                shapes: None,
            };
            // An upper bound: the worst prompt against its own limit (one that depends on
            // the prompt's length is taken at the worst prompt's).
            let w = s.worst.get(&metric);
            let at = w.and_then(|w| tokens.get(w.prompt).copied().flatten());
            let upper = match bound {
                Bound::Max(limit) => Some(limit),
                Bound::LogNormal { log_mean, log_sd } => {
                    Some(limits.log_bound(metric, log_mean, log_sd, at))
                }
                Bound::Band { .. } => None,
            };
            if let Some(limit) = upper {
                let value = w.map_or(f64::NAN, |w| w.value);
                // NaN (a missing metric) never passes.
                if value.is_nan() || value > limit {
                    out.push(v(
                        w.map(|w| w.prompt),
                        value,
                        limit,
                        None,
                        w.and_then(|w| w.channel),
                    ));
                } else if let (Bound::LogNormal { log_mean, log_sd }, Some(&mean)) =
                    (bound, s.log_mean.get(&metric).filter(|_| tokens.len() > 1))
                {
                    // Several prompts: their geometric mean, like the gain's mean, is held
                    // about sqrt(n) times tighter than one prompt.
                    let limit = limits.log_bound_for(metric, log_mean, log_sd, &tokens);
                    if mean.is_nan() || mean.exp() > limit {
                        out.push(v(None, mean.exp(), limit, None, None));
                    }
                }
            } else if let Bound::Band { mean, sd } = bound {
                let m = if metric == Metric::Gain {
                    s.gain_mean
                } else {
                    f64::NAN
                };
                let width = limits.band_width_for(sd, &tokens);
                let off = (m - mean).abs();
                if off.is_nan() || off > width {
                    let prompt = (summary.prompts == 1).then_some(0);
                    out.push(v(prompt, m, width, Some(mean), None));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_floats_read_back_in_yaml_1_1_form() {
        for (x, want) in [
            (1e-6, "1.0e-6"),
            (0.00248, "2.48e-3"),
            (1.0, "1.0e+0"),
            (-3.5e7, "-3.5e+7"),
        ] {
            assert_eq!(yaml_float(x), want);
            assert_eq!(want.parse::<f64>().unwrap(), x);
        }
    }

    /// Deterministic standard-normal values (Box-Muller of splitmix64).
    fn normal(i: u64) -> f64 {
        let uniform = |k: u64| {
            let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u, v) = (uniform(2 * i), uniform(2 * i + 1));
        (-2.0 * (u + 1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// The fitted extreme-value quantile of a Gumbel sample is the Gumbel's.
    #[test]
    fn gev_quantile_of_a_gumbel_sample() {
        let n = 400;
        let sample: Vec<f64> = (0..n)
            .map(|i| -(-((i as f64 + 0.5) / n as f64).ln()).ln())
            .collect();
        let q = gev_quantile(&sample, 0.999).unwrap();
        let want = -(-(0.999f64).ln()).ln();
        assert!((q - want).abs() < 0.1 * want, "{q} vs {want}");
        assert_eq!(gev_quantile(&sample[..5], 0.999), None);
    }

    /// A prompt of `t` distinct tokens whose 20 cells of `q` deviate with noise that grows
    /// as `sqrt(1 + 50 / t)`; `shift` multiplies layer 3's cosine gap (a fault).
    fn synthetic(seed: u64, t: usize, shift: f64) -> TraceDiff {
        use super::super::diff::{ChannelDiff, LogitsDiff, SlotDiff};
        let spread = (1.0 + 50.0 / t as f64).sqrt();
        let slots = (0..20)
            .map(|l| {
                let z = normal(seed * 64 + 2 * l as u64);
                let g = normal(seed * 64 + 2 * l as u64 + 1);
                let gap = (-9.0 + 0.3 * spread * z).exp() * if l == 3 { shift } else { 1.0 };
                SlotDiff {
                    layer: Some(l),
                    slot: Slot::Q,
                    std_ratio_all: 1.0,
                    std_ratio_last: 1.0,
                    cosine: 1.0 - gap,
                    sqnr_db: 0.0,
                    nmse: 0.0,
                    max_abs_diff: 0.0,
                    gain: 1.0 + 1e-3 * (0.5 + spread * g),
                    channels: ChannelDiff::default(),
                    shapes: None,
                }
            })
            .collect();
        TraceDiff {
            engines: ("a".into(), "b".into()),
            tokens: (0..t as u32).collect(),
            slots,
            logits: LogitsDiff {
                kl: Vec::new(),
                top1_agree: Vec::new(),
            },
            violations: Vec::new(),
            first_divergent: None,
            not_captured: Vec::new(),
        }
    }

    /// On prompts whose noise follows the model: the length term is found, the limits keep
    /// the false alarms on fresh prompts of every length near the stated rate, short prompts
    /// included, and a twentyfold cosine gap at one layer is still caught on a long prompt.
    #[test]
    fn limits_for_a_rate_hold_on_fresh_prompts_of_every_length() {
        let length = |i: usize| ((i * 7919) % 400) + 1;
        let intact: Vec<TraceDiff> = (0..300)
            .map(|i| synthetic(i as u64, length(i), 1.0))
            .collect();
        let how = Calibration {
            margin: 1.0,
            band_k: 1.0,
            floor: 1e-9,
            metrics: vec![Metric::Gain, Metric::CosineGap],
            false_alarm: Some(0.01),
        };
        let t = calibrate(&intact, true, &how);
        assert!(
            t.problems(Some(20)).is_empty(),
            "{:?}",
            t.problems(Some(20))
        );
        let p = t.prediction.as_ref().unwrap();
        for m in [Metric::Gain, Metric::CosineGap] {
            let h = p.metrics[&m].noise_tokens;
            assert!((16.0..=128.0).contains(&h), "{m:?}: noise_tokens {h}");
        }
        let alarms = |first: u64, t_of: &dyn Fn(usize) -> usize, shift: f64| {
            (0..1000)
                .filter(|&i| {
                    let mut d = synthetic(first + i as u64, t_of(i), shift);
                    d.judge(&t);
                    d.first_divergent.is_some()
                })
                .count()
        };
        let fresh = alarms(10_000, &|i| length(i + 5), 1.0);
        let short = alarms(20_000, &|i| 1 + i % 4, 1.0);
        assert!(
            fresh <= 30,
            "{fresh} of 1000 fresh prompts alarmed at a rate of 0.01"
        );
        assert!(short <= 30, "{short} of 1000 prompts of 1-4 tokens alarmed");
        let caught = alarms(30_000, &|_| 200, 20.0);
        assert!(caught >= 990, "a 20x cosine gap caught on {caught} of 1000");
        // Sets of 12, judged together as a contract judges its prompts: the intact ones
        // pass, and a doubled cosine gap that one prompt hides is caught on the mean.
        let cosine = &p.metrics[&Metric::CosineGap];
        assert_eq!(
            cosine.set_k.iter().map(|s| s.0).collect::<Vec<_>>(),
            SET_SIZES,
            "every set size up to half the calibration prompts"
        );
        let sets = |first: u64, shift: f64| {
            (0..200)
                .filter(|&i| {
                    let set: Vec<TraceDiff> = (0..12)
                        .map(|j| synthetic(first + 12 * i + j, 200, shift))
                        .collect();
                    !judge_set(&set, &t).is_empty()
                })
                .count()
        };
        let intact_sets = sets(40_000, 1.0);
        assert!(intact_sets <= 6, "{intact_sets} of 200 intact sets alarmed");
        let one = alarms(50_000, &|_| 200, 2.0);
        let on_sets = sets(60_000, 2.0);
        assert!(
            one < 150,
            "a doubled gap is caught on {one} of 1000 single prompts"
        );
        assert!(
            on_sets >= 190,
            "a doubled gap caught on {on_sets} of 200 sets"
        );
        // The table survives its YAML form.
        let back: Thresholds = serde_saphyr::from_str(&t.to_yaml(0)).unwrap();
        assert_eq!(back.prediction, t.prediction);
        assert_eq!(back.slots.len(), t.slots.len());
    }

    #[test]
    fn rounding_goes_up_to_three_digits() {
        assert_eq!(round_up(0.0012341), 0.00124);
        assert_eq!(round_up(1.0), 1.0);
        assert_eq!(round_up(123456.0), 124000.0);
        assert!(round_up(3.0001e-7) >= 3.0001e-7);
    }

    #[test]
    fn limits_lookup_and_problems() {
        let mut t = Thresholds::coarse();
        assert_eq!(
            t.limits(Slot::Q, Some(3)),
            vec![
                (Metric::CosineGap, Bound::Max(0.01)),
                (Metric::StdRatio, Bound::Max(0.05))
            ]
        );
        let per = |v: Vec<f64>| Values::PerLayer(v);
        t.slots.get_mut(&Slot::Q).unwrap().insert(
            Metric::Gain,
            Limit::Band {
                mean: per(vec![0.1, -0.2]),
                sd: per(vec![0.01, 0.02]),
            },
        );
        assert_eq!(
            t.limits(Slot::Q, Some(1))[2],
            (
                Metric::Gain,
                Bound::Band {
                    mean: -0.2,
                    sd: 0.02
                }
            )
        );
        assert_eq!(
            t.limits(Slot::Q, Some(2)).len(),
            2,
            "no limit past the list"
        );
        assert_eq!(t.problems(Some(2)), Vec::<String>::new());
        assert_eq!(
            t.problems(Some(3)),
            vec![
                "q.gain.mean: 2 values for 3 layers",
                "q.gain.sd: 2 values for 3 layers"
            ]
        );
        t.slots
            .get_mut(&Slot::Logits)
            .unwrap()
            .insert(Metric::Nmse, Limit::Max(per(vec![0.1])));
        t.slots
            .get_mut(&Slot::Embd)
            .unwrap()
            .insert(Metric::Nmse, Limit::Max(Values::Every(-1.0)));
        // Round trip through YAML text.
        let back: Thresholds = serde_saphyr::from_str(&t.to_yaml(0)).unwrap();
        assert_eq!(back, t);
        let p = t.problems(Some(2));
        assert!(
            p.iter().any(|p| p.contains("logits.nmse: a once-per-pass")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("embd.nmse: -1 is not")),
            "{p:?}"
        );
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;
    use crate::model::{Logits, Observer, Slot};
    use crate::trace::diff::diff;
    use crate::trace::{CaptureSpec, TraceObserver, Traced, assemble};

    /// A one-layer pass of `n` tokens whose `q` is `q_width` wide but reported as 6 wide
    /// (an engine bug that computes the slot at another size).
    fn traced(n: usize, q_width: usize) -> Traced {
        let spec = CaptureSpec {
            slots: vec![Slot::Embd, Slot::Q, Slot::Logits],
            layers: None,
        };
        let mut obs = TraceObserver::new(1, false, Some(spec));
        let ramp = |len: usize| {
            (0..len)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>()
        };
        obs.observe(None, Slot::Embd, &ramp(n * 4), 4);
        obs.observe(Some(0), Slot::Q, &ramp(n * q_width), 6);
        obs.observe(None, Slot::FinalNorm, &ramp(n * 4), 4);
        let logits = ramp(n * 5);
        obs.observe(None, Slot::Logits, &logits, 5);
        let tokens: Vec<u32> = (0..n as u32).collect();
        let (trace, captured) =
            assemble("test", &tokens, obs, &[Slot::Q], &logits[(n - 1) * 5..], 3).unwrap();
        Traced {
            trace,
            logits: Logits {
                vocab: 5,
                data: logits,
            },
            captured,
            partial: false,
        }
    }

    /// A slot computed at another width is a finding at that slot and layer, with both
    /// shapes named as they are (8 positions x 10, not 13 positions x 6), whatever the limits
    /// hold; the comparison is not refused as bad input.
    #[test]
    fn a_slot_of_another_shape_is_a_violation_that_names_both_shapes() {
        let (a, b) = (traced(8, 6), traced(8, 10));
        let mut d = diff(&a, &b).expect("compared, not refused");
        d.judge(&Thresholds::coarse());
        let first = d.first_violations().next().expect("a violation");
        assert_eq!((first.slot, first.layer), (Slot::Q, Some(0)));
        assert_eq!(
            first.to_string(),
            "q at layer 0: shapes differ: A 8 positions x 6, B 8 positions x 10"
        );
        // Judged again from the recorded summary, with no limit on q at all.
        let summary = summarize(std::slice::from_ref(&d));
        let v = judge_summary(&summary, &Thresholds::default());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].to_string().contains("shapes differ"));
        // The intact pair: nothing.
        let mut intact = diff(&a, &traced(8, 6)).unwrap();
        intact.judge(&Thresholds::coarse());
        assert!(intact.violations.is_empty());
    }
}
