//! Activation statistics of one capture point over a stated sample of positions.
//!
//! Moments are accumulated in f64 with Welford's update; NaN and ±Inf are counted and left
//! out of the moments; `std` is the population standard deviation. Every block records the
//! positions it covers, so statistics over different samples cannot pass as comparable.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which positions a statistics block covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// Every token of the pass (the whole `tokens x width` tensor).
    All,
    /// The last token's row only.
    Last,
    /// One token's row (per-token statistics).
    Token,
}

/// The sample a statistics block was computed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Which kind of sample.
    pub kind: ScopeKind,
    /// First position covered (0-based, in the traced token sequence).
    pub first_position: usize,
    /// Last position covered (inclusive).
    pub last_position: usize,
    /// Values per position.
    pub width: usize,
    /// Values covered (`positions x width`).
    pub elements: usize,
}

/// Statistics of one capture point over one [`Scope`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationStats {
    /// The sample these numbers describe.
    pub scope: Scope,
    /// Finite values (those entering the moments).
    pub count: usize,
    /// Smallest finite value (0 when there is none).
    pub min: f64,
    /// Largest finite value (0 when there is none).
    pub max: f64,
    /// Mean of the finite values.
    pub mean: f64,
    /// Population standard deviation of the finite values.
    pub std: f64,
    /// Euclidean norm of the finite values.
    pub l2: f64,
    /// NaN values.
    pub nan: usize,
    /// +Inf or -Inf values.
    pub inf: usize,
    /// Values exactly zero.
    pub zeros: usize,
}

impl ActivationStats {
    /// Statistics of `rows` (each `width` wide) starting at position `first`.
    pub fn of(data: &[f32], width: usize, first: usize, kind: ScopeKind) -> Self {
        let positions = data.len() / width;
        let (mut count, mut mean, mut m2, mut sq) = (0usize, 0f64, 0f64, 0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut nan, mut inf, mut zeros) = (0, 0, 0);
        for &v in data {
            if v.is_nan() {
                nan += 1;
                continue;
            }
            if v.is_infinite() {
                inf += 1;
                continue;
            }
            if v == 0.0 {
                zeros += 1;
            }
            let x = v as f64;
            count += 1;
            let delta = x - mean;
            mean += delta / count as f64;
            m2 += delta * (x - mean);
            sq += x * x;
            min = min.min(x);
            max = max.max(x);
        }
        let none = count == 0;
        ActivationStats {
            scope: Scope {
                kind,
                first_position: first,
                last_position: first + positions.saturating_sub(1),
                width,
                elements: data.len(),
            },
            count,
            min: if none { 0.0 } else { min },
            max: if none { 0.0 } else { max },
            mean,
            std: if none {
                0.0
            } else {
                (m2 / count as f64).sqrt()
            },
            l2: sq.sqrt(),
            nan,
            inf,
            zeros,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_and_counts() {
        let s = ActivationStats::of(
            &[1.0, 2.0, 3.0, 4.0, f32::NAN, f32::INFINITY, 0.0, 0.0],
            4,
            5,
            ScopeKind::All,
        );
        assert_eq!(s.count, 6);
        assert_eq!((s.nan, s.inf, s.zeros), (1, 1, 2));
        assert_eq!((s.min, s.max), (0.0, 4.0));
        assert!((s.mean - 10.0 / 6.0).abs() < 1e-12);
        let var = [1.0f64, 2.0, 3.0, 4.0, 0.0, 0.0]
            .iter()
            .map(|x| (x - 10.0 / 6.0).powi(2))
            .sum::<f64>()
            / 6.0;
        assert!((s.std - var.sqrt()).abs() < 1e-12);
        assert!((s.l2 - 30f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            s.scope,
            Scope {
                kind: ScopeKind::All,
                first_position: 5,
                last_position: 6,
                width: 4,
                elements: 8
            }
        );
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        let data: Vec<f32> = (0..10000).map(|i| 1.0e4 + (i % 2) as f32).collect();
        let s = ActivationStats::of(&data, 100, 0, ScopeKind::All);
        assert!((s.std - 0.5).abs() < 1e-9, "{}", s.std);
    }
}
