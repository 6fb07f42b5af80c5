//! Deterministic synthetic data for tests and synthetic models: random but valid blocks of
//! every format (finite scales, every quant bit pattern reachable).

use crate::quant::GgmlType;

use super::float::put_f16;

/// A small deterministic generator (SplitMix64), so tests need no `rand` dependency and every
/// run sees the same data.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Roughly normal with standard deviation `std` (sum of four uniforms).
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        s * std * 0.866
    }
}

/// Offsets of the f16 scale fields within one block of `ty`.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        F32 | F16 | BF16 | Q8_K => &[],
    }
}

/// `n` values (a whole number of blocks) of format `ty` with random quants and scales of
/// magnitude about `scale`. Formats pv can encode are produced by quantizing random
/// normal values, the others from random bytes with finite scale fields.
pub fn random_row(ty: GgmlType, n: usize, scale: f32, rng: &mut SplitMix) -> Vec<u8> {
    let bytes = ty.row_bytes(n).expect("whole blocks");
    // Float formats and Q8_K are always encoded from values; the other encodable formats
    // half the time, so raw random quants (every bit pattern) are covered too.
    let always_encoded = matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_K
    );
    if super::can_quantize(ty) && (rng.next_u64().is_multiple_of(2) || always_encoded) {
        let x: Vec<f32> = (0..n).map(|_| rng.normal(scale)).collect();
        return super::quantize(ty, &x).expect("encodable");
    }
    let mut out: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
    let per_value = match ty {
        GgmlType::Q2_K => 0.25,
        GgmlType::Q3_K => 0.25 / 32.0,
        GgmlType::Q4_K | GgmlType::Q5_K => 1.0 / 63.0 / 16.0,
        GgmlType::Q6_K => 1.0 / 32.0 / 64.0,
        _ => 1.0 / 16.0,
    };
    for block in out.chunks_exact_mut(ty.block_bytes()) {
        for &off in f16_fields(ty) {
            put_f16(&mut block[off..], rng.uniform() * scale * per_value);
        }
        if ty == GgmlType::Q8_1 {
            let d = super::float::f16_at(block);
            let s: i32 = block[4..36].iter().map(|&q| q as i8 as i32).sum();
            put_f16(&mut block[2..], d * s as f32);
        }
    }
    out
}
