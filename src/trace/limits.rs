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

use super::diff::{Metric, TraceDiff};
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
}

/// A limit resolved for one slot and layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// deviation <= this.
    Max(f64),
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
    /// Per slot, per metric.
    pub slots: BTreeMap<Slot, BTreeMap<Metric, Limit>>,
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
                Limit::Max(v) | Limit::Band { mean: v, .. } => match v {
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
                };
                Some((metric, b))
            })
            .collect()
    }

    /// Half-width of a band of spread `sd` for a mean over `n` prompts.
    pub fn band_width(&self, sd: f64, n: usize) -> f64 {
        let n = n.max(1) as f64;
        let nc = self.calibration_prompts.max(1) as f64;
        self.band_k * sd * (1.0 / n + 1.0 / nc).sqrt()
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
                };
                for (part, v) in parts {
                    if let Values::PerLayer(list) = v {
                        if !per_layer {
                            out.push(format!("{at}{part}: a once-per-pass slot takes one value"));
                        } else if let Some(n) = n_layer.filter(|&n| n != list.len()) {
                            out.push(format!("{at}{part}: {} values for {n} layers", list.len()));
                        }
                    }
                    let signed = part == ".mean";
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
            "{pad}local: {}\n{pad}band_k: {}\n{pad}calibration_prompts: {}\n{pad}slots:\n",
            self.local, self.band_k, self.calibration_prompts
        );
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

/// The one-sided and two-sided quantiles a calibration for `alpha` false alarms per prompt
/// needs, over `cells` checks per prompt and `n` calibration prompts: Student's t with
/// `n - 1` degrees of freedom at `1 - alpha / cells` and `1 - alpha / (2 cells)` (a
/// Bonferroni share of the rate per check, and the t of a prediction bound whose mean and
/// spread are estimated from `n` values).
pub fn prediction_quantiles(alpha: f64, cells: usize, n: usize) -> (f64, f64) {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let t = StudentsT::new(0.0, 1.0, (n.max(2) - 1) as f64).expect("degrees of freedom >= 1");
    let p = alpha / cells.max(1) as f64;
    (t.inverse_cdf(1.0 - p), t.inverse_cdf(1.0 - p / 2.0))
}

/// Limits from intact comparisons (the same two models on several prompts, compared the
/// same way, end to end or layer-local): for every slot, layer and metric,
/// `max(margin x worst deviation, floor)`, and for the gain the mean and spread of its
/// signed deviation. Values are rounded outward to three significant digits so the table
/// reads well in a contract.
///
/// With `how.false_alarm = Some(alpha)`, the limits are instead upper prediction bounds
/// for one new prompt at a stated rate. Of the `K` checks a prompt gets (slots x layers x
/// metrics), each is given `alpha / K`, so that a prompt raises a false alarm with
/// probability at most `alpha` (the union bound). An upper-bounded deviation `x` is
/// modelled as log-normal: with the mean `m` and standard deviation `s` of `ln max(x,
/// floor)` over the `n` calibration prompts, its limit is `exp(m + t s sqrt(1 + 1/n))`, `t`
/// Student's quantile at `1 - alpha / K` with `n - 1` degrees of freedom (the parameters
/// are estimated, so the bound is wider than a normal quantile would give), and never
/// below the worst calibration value. The gain (normal, two-sided) keeps its mean and
/// spread, and `band_k` becomes the two-sided quantile, so one prompt's band is `t s
/// sqrt(1 + 1/n)` wide. Both quantiles are widened by how much heavier than t the pooled,
/// standardised calibration deviations are at the levels they can show ([`tail_factors`]).
/// The rate holds as far as the model does: `pv calibrate --check` counts the false alarms
/// on held-out prompts.
pub fn calibrate(intact: &[TraceDiff], local: bool, how: &Calibration) -> Thresholds {
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
    let cells: usize = seen.values().map(BTreeMap::len).sum();
    let n = intact.len();
    let quantiles = how.false_alarm.map(|alpha| {
        let (t1, t2) = prediction_quantiles(alpha, cells, n);
        let (up, band) = tail_factors(&seen, how.floor, n);
        (t1 * up, t2 * band)
    });
    let mut t = Thresholds {
        local,
        band_k: quantiles.map_or(how.band_k, |q| round_up(q.1)),
        calibration_prompts: n,
        false_alarm_rate: how.false_alarm,
        slots: BTreeMap::new(),
    };
    let widen = (1.0 + 1.0 / n.max(1) as f64).sqrt();
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
                let bound = match quantiles {
                    Some((t1, _)) => {
                        let logs: Vec<f64> = v.iter().map(|x| x.max(how.floor).ln()).collect();
                        (mean(&logs) + t1 * sd(&logs) * widen).exp().max(worst)
                    }
                    None => worst * how.margin,
                };
                round_up(bound.max(how.floor))
            }))
        };
        t.slots.entry(slot).or_default().insert(m, l);
    }
    t
}

/// (slot, metric) -> layer -> the deviations over the calibration prompts.
type Deviations = BTreeMap<(Slot, Metric), BTreeMap<Option<usize>, Vec<f64>>>;

/// How much heavier than Student's t the calibration deviations' tails are, for the upper
/// bounds (log-deviations, one-sided) and for the gain (two-sided): every cell's values are
/// standardised by their own mean and spread and pooled, and the factor is the largest
/// ratio of a pooled empirical quantile to t's at 0.99, 0.999, 0.9999 and the most extreme
/// level the pool can show (`1 - 1/pool`), and at least 1. The per-check quantile is then
/// widened by it: a tail the normal model underestimates at the levels that can be seen is
/// assumed to be underestimated as much further out.
fn tail_factors(seen: &Deviations, floor: f64, n: usize) -> (f64, f64) {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let (mut up, mut band) = (Vec::new(), Vec::new());
    for ((_, m), per) in seen {
        for v in per.values() {
            let u: Vec<f64> = if *m == Metric::Gain {
                v.clone()
            } else {
                v.iter().map(|x| x.max(floor).ln()).collect()
            };
            let (mu, sigma) = (mean(&u), sd(&u));
            if !(sigma.is_finite() && sigma > 0.0) {
                continue;
            }
            let z = u.iter().map(|x| (x - mu) / sigma);
            if *m == Metric::Gain {
                band.extend(z.map(f64::abs));
            } else {
                up.extend(z);
            }
        }
    }
    let Ok(t) = StudentsT::new(0.0, 1.0, (n.max(2) - 1) as f64) else {
        return (1.0, 1.0);
    };
    let factor = |mut pool: Vec<f64>, two_sided: bool| -> f64 {
        pool.retain(|x| x.is_finite());
        if pool.len() < 100 {
            return 1.0;
        }
        pool.sort_by(f64::total_cmp);
        let last = 1.0 - 1.0 / pool.len() as f64;
        [0.99, 0.999, 0.9999, last]
            .into_iter()
            .filter(|&p| p <= last)
            .map(|p| {
                let q = pool[((p * pool.len() as f64) as usize).min(pool.len() - 1)];
                let tp = if two_sided { 1.0 - (1.0 - p) / 2.0 } else { p };
                q / t.inverse_cdf(tp)
            })
            .fold(1.0, f64::max)
    };
    (factor(up, false), factor(band, true))
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

    /// The per-check quantile grows with the number of checks and shrinks with more
    /// calibration prompts; a pooled tail heavier than t widens it, a normal one does not.
    #[test]
    fn prediction_quantiles_and_tail_factors() {
        let (t1, t2) = prediction_quantiles(1e-3, 1000, 200);
        assert!(t1 > 4.5 && t1 < 5.5 && t2 > t1, "{t1} {t2}");
        assert!(prediction_quantiles(1e-3, 1000, 20).0 > t1);
        assert!(prediction_quantiles(1e-3, 10, 200).0 < t1);
        // Deterministic normal-looking values (a Box-Muller of a fixed sequence) in 40
        // cells of 200: factor near 1. The same with one value in a hundred made 30 times
        // larger: a heavy tail, factor well above 1.
        let uniform = |k: u64| {
            // splitmix64
            let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let normal = |i: usize| {
            let (u, v) = (uniform(2 * i as u64), uniform(2 * i as u64 + 1));
            (-2.0 * (u + 1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let cells = |heavy: bool| -> Deviations {
            let mut d = Deviations::new();
            for l in 0..40 {
                let v = (0..200)
                    .map(|i| {
                        let z = normal(l * 200 + i);
                        let z = if heavy && i % 100 == 7 {
                            z.abs() * 30.0
                        } else {
                            z
                        };
                        (0.1 * z).exp() * 1e-3
                    })
                    .collect();
                d.entry((Slot::Q, Metric::CosineGap))
                    .or_default()
                    .insert(Some(l), v);
            }
            d
        };
        let (light, _) = tail_factors(&cells(false), 1e-9, 200);
        let (heavy, _) = tail_factors(&cells(true), 1e-9, 200);
        assert!(light < 1.3, "{light}");
        assert!(heavy > 1.5, "{heavy}");
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
