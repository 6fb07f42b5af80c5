//! Comparing two traced passes over the same tokens, slot by slot in execution order: std
//! ratios in both scopes, and from full captures cosine, SQNR, NMSE and max |diff|; for the
//! logits also KL divergence and top-1 agreement per position.

use serde::Serialize;

use super::parity::{ParityError, check_parity};
use super::{Captured, Traced};
use crate::model::{Logits, Slot, argmax};

/// Element-wise comparison of one capture point.
#[derive(Clone, Debug, Serialize)]
pub struct SlotDiff {
    /// Layer, or `None` for once-per-pass slots.
    pub layer: Option<usize>,
    /// Capture point.
    pub slot: Slot,
    /// std(B) / std(A) over all tokens.
    pub std_ratio_all: f64,
    /// std(B) / std(A) over the last token.
    pub std_ratio_last: f64,
    /// Cosine similarity of the full tensors.
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio of B against A, in dB.
    pub sqnr_db: f64,
    /// Normalised mean squared error, sum((a-b)^2) / sum(a^2).
    pub nmse: f64,
    /// Largest |a - b|.
    pub max_abs_diff: f64,
}

/// Per-position comparison of the logits.
#[derive(Clone, Debug, Serialize)]
pub struct LogitsDiff {
    /// KL(softmax(A) || softmax(B)) per position, in nats.
    pub kl: Vec<f64>,
    /// Whether the argmax agrees, per position.
    pub top1_agree: Vec<bool>,
}

/// Tolerances that decide the first divergent slot.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tolerance {
    /// Largest allowed |std ratio - 1| (either scope).
    pub max_std_deviation: f64,
    /// Smallest allowed cosine similarity.
    pub min_cosine: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            max_std_deviation: 0.05,
            min_cosine: 0.99,
        }
    }
}

/// The comparison of two traces.
#[derive(Clone, Debug, Serialize)]
pub struct TraceDiff {
    /// Engines compared (A, B).
    pub engines: (String, String),
    /// Tokens traced.
    pub tokens: Vec<u32>,
    /// Tolerances applied.
    pub tolerance: Tolerance,
    /// Every capture point in execution order.
    pub slots: Vec<SlotDiff>,
    /// The logits.
    pub logits: LogitsDiff,
    /// Index into `slots` of the first capture point outside the tolerance.
    pub first_divergent: Option<usize>,
}

fn compare(a: &Captured, b: &Captured) -> (f64, f64, f64, f64) {
    let (mut dot, mut na, mut nb, mut err, mut max) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.data.iter().zip(&b.data) {
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
    (cosine, 10.0 * (na / err).log10(), err / na, max)
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn logits_diff(a: &Logits, b: &Logits) -> LogitsDiff {
    let (mut kl, mut top1) = (Vec::new(), Vec::new());
    for t in 0..a.n_positions() {
        let (la, lb) = (log_softmax(a.row(t)), log_softmax(b.row(t)));
        kl.push(la.iter().zip(&lb).map(|(p, q)| p.exp() * (p - q)).sum());
        top1.push(argmax(a.row(t)) == argmax(b.row(t)));
    }
    LogitsDiff {
        kl,
        top1_agree: top1,
    }
}

/// Compares two traced passes that captured every slot whole. Refuses (with the parity
/// error) traces whose tokens, layers or scopes differ.
pub fn diff(a: &Traced, b: &Traced, tolerance: Tolerance) -> Result<TraceDiff, ParityError> {
    check_parity(&a.trace, &b.trace)?;
    let mut slots = Vec::new();
    for (ca, cb) in a.captured.iter().zip(&b.captured) {
        assert_eq!(
            (ca.layer, ca.slot),
            (cb.layer, cb.slot),
            "both passes capture in execution order"
        );
        let stats = |t: &Traced| match ca.layer {
            Some(l) => t.trace.layers[l].get(ca.slot).cloned().expect("layer slot"),
            None => match ca.slot {
                Slot::Embd => t.trace.embd.clone(),
                Slot::FinalNorm => t.trace.final_norm.clone(),
                _ => t.trace.logits.stats(),
            },
        };
        let (sa, sb) = (stats(a), stats(b));
        let (cosine, sqnr_db, nmse, max_abs_diff) = compare(ca, cb);
        slots.push(SlotDiff {
            layer: ca.layer,
            slot: ca.slot,
            std_ratio_all: sb.all.std / sa.all.std,
            std_ratio_last: sb.last.std / sa.last.std,
            cosine,
            sqnr_db,
            nmse,
            max_abs_diff,
        });
    }
    let first_divergent = slots.iter().position(|s| {
        (s.std_ratio_all - 1.0).abs() > tolerance.max_std_deviation
            || (s.std_ratio_last - 1.0).abs() > tolerance.max_std_deviation
            || s.cosine < tolerance.min_cosine
    });
    Ok(TraceDiff {
        engines: (a.trace.engine.clone(), b.trace.engine.clone()),
        tokens: a.trace.tokens.clone(),
        tolerance,
        slots,
        logits: logits_diff(&a.logits, &b.logits),
        first_divergent,
    })
}
