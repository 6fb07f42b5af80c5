//! Activation statistics of one capture point over a stated sample of positions.
//!
//! Moments are accumulated in f64 as sums of deviations from a shift (the first finite
//! value), which keeps the variance free of cancellation without Welford's per-element
//! division; NaN and ±Inf are counted and left out of the moments; `std` is the population
//! standard deviation. Every block records the
//! positions it covers, so statistics over different samples cannot pass as comparable.

use crate::quant::cpu::multiversion;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Elements per parallel partial sum.
const CHUNK: usize = 1 << 12;

/// Sums over one chunk of a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Partial {
    count: usize,
    sum_d: f64,
    sum_d2: f64,
    sq: f64,
    min: f64,
    max: f64,
    nan: usize,
    inf: usize,
    zeros: usize,
}

impl Default for Partial {
    fn default() -> Self {
        Partial {
            count: 0,
            sum_d: 0.0,
            sum_d2: 0.0,
            sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan: 0,
            inf: 0,
            zeros: 0,
        }
    }
}

multiversion!(
    /// [`Partial::of_finite`] compiled for AVX2 where the CPU has it (wider f64 vectors; no
    /// FMA is enabled, so the sums are the same as the portable build's).
    fn of_finite_best(data: &[f32], shift: f64) -> Option<Partial> = of_finite if avx2("avx2")
);

#[inline(always)]
fn of_finite(data: &[f32], shift: f64) -> Option<Partial> {
    Partial::of_finite(data, shift)
}

impl Partial {
    fn of(data: &[f32], shift: f64) -> Self {
        // One pass that assumes every value finite and notes whether one was not; only then
        // is the chunk summed again, value by value.
        if let Some(p) = of_finite_best(data, shift) {
            return p;
        }
        let mut p = Partial::default();
        for &v in data {
            if v.is_nan() {
                p.nan += 1;
            } else if v.is_infinite() {
                p.inf += 1;
            } else {
                p = Partial::merge(p, Self::of_finite(&[v], shift).expect("a finite value"));
            }
        }
        p
    }

    /// The common case, all values finite: eight independent accumulators per quantity (a
    /// fixed order, so still deterministic) let the loop run at vector speed.
    #[inline(always)]
    fn of_finite(data: &[f32], shift: f64) -> Option<Self> {
        let (mut sd, mut sd2, mut sq) = ([0f64; 8], [0f64; 8], [0f64; 8]);
        let (mut min, mut max) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
        let mut zeros = [0u32; 8];
        // Any all-ones exponent (NaN or Inf) sets this; branch-free, so the loop vectorises.
        let mut non_finite = [0u32; 8];
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let v: [f32; 8] = c.try_into().expect("chunks of eight");
            let x = v.map(f64::from);
            let d = x.map(|x| x - shift);
            for k in 0..8 {
                sd[k] += d[k];
            }
            for k in 0..8 {
                sd2[k] += d[k] * d[k];
            }
            for k in 0..8 {
                sq[k] += x[k] * x[k];
            }
            // Plain comparisons (the values are finite) compile to vector min/max.
            for k in 0..8 {
                min[k] = if v[k] < min[k] { v[k] } else { min[k] };
                max[k] = if v[k] > max[k] { v[k] } else { max[k] };
                zeros[k] += u32::from(v[k] == 0.0);
                non_finite[k] |= u32::from(v[k].to_bits() & 0x7f80_0000 == 0x7f80_0000);
            }
        }
        for (k, &v) in chunks.remainder().iter().enumerate() {
            let x = f64::from(v);
            let d = x - shift;
            sd[k] += d;
            sd2[k] += d * d;
            sq[k] += x * x;
            min[k] = if v < min[k] { v } else { min[k] };
            max[k] = if v > max[k] { v } else { max[k] };
            zeros[k] += u32::from(v == 0.0);
            non_finite[k] |= u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000);
        }
        if non_finite.iter().any(|&f| f != 0) {
            return None;
        }
        let total = |a: [f64; 8]| ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        let empty = data.is_empty();
        Some(Partial {
            count: data.len(),
            sum_d: total(sd),
            sum_d2: total(sd2),
            sq: total(sq),
            min: if empty {
                f64::INFINITY
            } else {
                min.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as f64
            },
            max: if empty {
                f64::NEG_INFINITY
            } else {
                max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64
            },
            nan: 0,
            inf: 0,
            zeros: zeros.iter().map(|&z| z as usize).sum(),
        })
    }

    fn merge(a: Partial, b: Partial) -> Partial {
        Partial {
            count: a.count + b.count,
            sum_d: a.sum_d + b.sum_d,
            sum_d2: a.sum_d2 + b.sum_d2,
            sq: a.sq + b.sq,
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            nan: a.nan + b.nan,
            inf: a.inf + b.inf,
            zeros: a.zeros + b.zeros,
        }
    }
}

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
        let shift = data
            .iter()
            .find(|v| v.is_finite())
            .map_or(0.0, |&v| v as f64);
        // Large tensors are summed in parallel chunks, merged in chunk order, so the result
        // does not depend on the thread count.
        let p = data
            .par_chunks(CHUNK)
            .map(|c| Partial::of(c, shift))
            .collect::<Vec<_>>()
            .into_iter()
            .fold(Partial::default(), Partial::merge);
        let Partial {
            count,
            sum_d,
            sum_d2,
            sq,
            min,
            max,
            nan,
            inf,
            zeros,
        } = p;
        let mean = if count == 0 {
            0.0
        } else {
            shift + sum_d / count as f64
        };
        let var = if count == 0 {
            0.0
        } else {
            (sum_d2 - sum_d * sum_d / count as f64).max(0.0) / count as f64
        };
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
            std: var.sqrt(),
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
    fn variance_is_stable_with_a_large_offset() {
        let data: Vec<f32> = (0..10000).map(|i| 1.0e4 + (i % 2) as f32).collect();
        let s = ActivationStats::of(&data, 100, 0, ScopeKind::All);
        assert!((s.std - 0.5).abs() < 1e-9, "{}", s.std);
    }
}

#[cfg(test)]
mod determinism {
    use super::*;

    #[test]
    fn chunked_sums_do_not_depend_on_the_thread_count() {
        let data: Vec<f32> = (0..200_000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.3)
            .collect();
        let one =
            crate::model::with_threads(1, || ActivationStats::of(&data, 1000, 0, ScopeKind::All));
        let two =
            crate::model::with_threads(2, || ActivationStats::of(&data, 1000, 0, ScopeKind::All));
        assert_eq!(one, two);
    }
}

#[cfg(test)]
mod vectorised {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The AVX2 build of the chunk sums is the portable one, bit for bit, and both agree
        /// with a textbook two-pass computation; a NaN or Inf anywhere sends the chunk down
        /// the counting path.
        #[test]
        fn avx2_build_equals_portable_and_textbook(
            v in proptest::collection::vec(-1.0e3f32..1.0e3, 1..300),
            poison in proptest::option::of((0usize..300, prop_oneof![Just(f32::NAN), Just(f32::INFINITY)])),
        ) {
            let mut v = v;
            if let Some((i, bad)) = poison {
                let i = i % v.len();
                v[i] = bad;
                prop_assert!(Partial::of_finite(&v, 0.5).is_none());
                prop_assert!(of_finite_best(&v, 0.5).is_none());
                let p = Partial::of(&v, 0.5);
                prop_assert_eq!(p.count, v.len() - 1);
                prop_assert_eq!(p.nan + p.inf, 1);
                return Ok(());
            }
            let shift = f64::from(v[0]);
            let portable = Partial::of_finite(&v, shift).unwrap();
            prop_assert_eq!(of_finite_best(&v, shift).unwrap(), portable);
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
            let got_mean = shift + portable.sum_d / n;
            let got_var = portable.sum_d2 / n - (portable.sum_d / n).powi(2);
            prop_assert!((got_mean - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
            prop_assert!((got_var - var).abs() <= 1e-9 * (1.0 + var));
            let min = v.iter().fold(f32::INFINITY, |a, &b| a.min(b));
            let max = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            prop_assert_eq!((portable.min, portable.max), (f64::from(min), f64::from(max)));
            prop_assert_eq!(portable.zeros, v.iter().filter(|&&x| x == 0.0).count());
        }
    }
}
