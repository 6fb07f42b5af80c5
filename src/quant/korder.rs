//! K-quant dot products in each order llama.cpp's x86 CPU backend computes them, in portable
//! Rust: the reference the SIMD kernels must equal bit for bit, and the fallback on CPUs
//! without AVX2.
//!
//! A super-block's dot product with a Q8_K block is an exact integer sum split into parts
//! (eight SIMD lanes, 64- or 128-value steps, the whole block); what differs between llama.cpp's
//! code paths is how those integers meet the float scales:
//!
//! - **vec-dot** (`ggml_vec_dot_qN_K_q8_K`, AVX2 code in both the AVX2 and AVX-512 builds):
//!   eight i32 lanes per block, lane `l` holding the values `k` with `(k % 32) / 4 == l`, each
//!   converted and fused-multiply-added into its own f32 lane by `d_a * d_w`; the lanes are
//!   summed once at the end ([`hsum8`]). Mins go through their own lanes (Q2_K: eight, Q4_K:
//!   four) or a scalar (Q5_K).
//! - **repacked** (`ggml_gemv/gemm_qN_K_8x8_q8_K`, Q4_K with AVX2 and Q2_K with AVX-512, for
//!   matrices whose row count is a multiple of 8): one fused multiply-add per step of values
//!   for the scaled sum and one for the mins, subtracted at the end; the step is the whole
//!   block for one activation row (gemv) and 64 (Q4_K) or 128 (Q2_K) values for each group of
//!   four rows (gemm).
//! - **tiled** (`ggml-cpu/tiled`, batches of at least 8 rows, matrices not repacked): per block
//!   `r = f32(isum) * d_w`, minus `dmin_w * f32(imin)` by one fused multiply-add, then
//!   `acc = fma(r, d_a, acc)`.

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

use super::float::f16_at;
use super::format::GgmlType;
use super::kquants::{q3k_scales, q4k_scales_mins, q6k_quant, q45k_quant};

/// Bytes of a Q8_K block.
pub(crate) const Q8K_BYTES: usize = GgmlType::Q8_K.block_bytes();

/// One K-quant super-block decoded for integer arithmetic.
pub(crate) struct KBlock {
    /// Quants as the integer sums use them: Q3_K with its offset of 4 applied, Q6_K without
    /// its offset of 32 (the vec-dot subtracts it per lane, the tiled sum per block).
    pub q: [i8; 256],
    /// Scale of each 16 values.
    pub sc: [i32; 16],
    /// Min of each 16 values (zero for formats without mins).
    pub min: [i32; 16],
    /// Super-block scale.
    pub d: f32,
    /// Super-block min scale (zero for formats without mins).
    pub dmin: f32,
}

/// Whether K-quant `ty` has per-group mins (Q2_K, Q4_K, Q5_K).
pub(crate) fn has_min(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K)
}

/// Decodes one block of K-quant `ty` (Q2_K, Q3_K, Q4_K, Q5_K or Q6_K).
pub(crate) fn decode(ty: GgmlType, x: &[u8]) -> KBlock {
    let mut b = KBlock {
        q: [0; 256],
        sc: [0; 16],
        min: [0; 16],
        d: 0.0,
        dmin: 0.0,
    };
    match ty {
        GgmlType::Q2_K => {
            let (scales, qs) = (&x[..16], &x[16..80]);
            for k in 0..256 {
                let (g, s, j) = (k / 128, (k % 128) / 32, k % 32);
                b.q[k] = ((qs[g * 32 + j] >> (2 * s)) & 3) as i8;
            }
            for s in 0..16 {
                b.sc[s] = (scales[s] & 0x0f) as i32;
                b.min[s] = (scales[s] >> 4) as i32;
            }
            (b.d, b.dmin) = (f16_at(&x[80..]), f16_at(&x[82..]));
        }
        GgmlType::Q3_K => {
            let (hmask, qs) = (&x[..32], &x[32..96]);
            for k in 0..256 {
                let (g, s, j) = (k / 128, (k % 128) / 32, k % 32);
                let low = ((qs[g * 32 + j] >> (2 * s)) & 3) as i8;
                let high = (hmask[j] >> (4 * g + s)) & 1;
                b.q[k] = low - if high == 0 { 4 } else { 0 };
            }
            b.sc = q3k_scales(&x[96..108]).map(i32::from);
            b.d = f16_at(&x[108..]);
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (qh, qs) = if ty == GgmlType::Q5_K {
                (Some(&x[16..48]), &x[48..176])
            } else {
                (None, &x[16..144])
            };
            for k in 0..256 {
                b.q[k] = q45k_quant(qs, qh, k) as i8;
            }
            let (sc, m) = q4k_scales_mins(&x[4..16]);
            for s in 0..16 {
                b.sc[s] = sc[s / 2] as i32;
                b.min[s] = m[s / 2] as i32;
            }
            (b.d, b.dmin) = (f16_at(x), f16_at(&x[2..]));
        }
        GgmlType::Q6_K => {
            let (ql, qh) = (&x[..128], &x[128..192]);
            for k in 0..256 {
                b.q[k] = q6k_quant(ql, qh, k) as i8;
            }
            for s in 0..16 {
                b.sc[s] = x[192 + s] as i8 as i32;
            }
            b.d = f16_at(&x[208..]);
        }
        _ => unreachable!("{ty} is not a K-quant weight format"),
    }
    b
}

#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The sum of Q8_K block `y`'s quants `16 s .. 16 s + 16` (stored in the block).
#[inline(always)]
pub(crate) fn bsum(y: &[u8], s: usize) -> i32 {
    i16::from_le_bytes([y[260 + 2 * s], y[261 + 2 * s]]) as i32
}

impl KBlock {
    /// `Σ sc[k/16] * q[k] * y[k]` over values `k0..k1` (Q6_K: `q` without its offset).
    fn isum(&self, y: &[u8], k0: usize, k1: usize) -> i32 {
        (k0..k1)
            .map(|k| self.sc[k / 16] * self.q[k] as i32 * y[4 + k] as i8 as i32)
            .sum()
    }

    /// `Σ min[s] * bsum[s]` over the 16-value groups of values `k0..k1`.
    fn imin(&self, y: &[u8], k0: usize, k1: usize) -> i32 {
        (k0 / 16..k1 / 16).map(|s| self.min[s] * bsum(y, s)).sum()
    }

    /// The exact sum over the block with Q6_K's offset of 32 applied.
    fn isum_block(&self, ty: GgmlType, y: &[u8]) -> i32 {
        let s = self.isum(y, 0, 256);
        if ty == GgmlType::Q6_K {
            s - 32 * (0..16).map(|j| self.sc[j] * bsum(y, j)).sum::<i32>()
        } else {
            s
        }
    }

    /// The vec-dot's eight integer lanes (Q6_K: its offset subtracted per lane pair of
    /// 16-value groups, as the AVX2 kernel folds it).
    fn lanes(&self, ty: GgmlType, y: &[u8]) -> [i32; 8] {
        let mut l = [0i32; 8];
        for k in 0..256 {
            l[(k % 32) / 4] += self.sc[k / 16] * self.q[k] as i32 * y[4 + k] as i8 as i32;
        }
        if ty == GgmlType::Q6_K {
            for i in 0..8 {
                l[i] -= 32
                    * (self.sc[2 * i] * bsum(y, 2 * i) + self.sc[2 * i + 1] * bsum(y, 2 * i + 1));
            }
        }
        l
    }
}

/// llama.cpp's `hsum_float_8`: upper half plus lower half, then pairs, then the last two.
#[inline(always)]
pub(crate) fn hsum8(v: [f32; 8]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|i| v[i + 4] + v[i]);
    let t = [s[0] + s[2], s[1] + s[3]];
    t[0] + t[1]
}

/// K-quant `ty` weights · Q8_K activations in the vec-dot order.
pub(crate) fn vec_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    let mut summs = 0f32;
    for (x, y) in w
        .chunks_exact(ty.block_bytes())
        .zip(a.chunks_exact(Q8K_BYTES))
    {
        let b = decode(ty, x);
        let d_a = f32_at(y);
        let d = d_a * b.d;
        let dmin = -d_a * b.dmin;
        match ty {
            GgmlType::Q2_K => {
                for l in 0..8 {
                    let p = b.min[2 * l] * bsum(y, 2 * l) + b.min[2 * l + 1] * bsum(y, 2 * l + 1);
                    acc[l] = dmin.mul_add(p as f32, acc[l]);
                }
            }
            GgmlType::Q4_K => {
                for l in 0..4 {
                    let p = b.min[4 * l] * (bsum(y, 4 * l) + bsum(y, 4 * l + 1))
                        + b.min[4 * l + 2] * (bsum(y, 4 * l + 2) + bsum(y, 4 * l + 3));
                    acc_m[l] = dmin.mul_add(p as f32, acc_m[l]);
                }
            }
            GgmlType::Q5_K => summs = dmin.mul_add(b.imin(y, 0, 256) as f32, summs),
            _ => {}
        }
        for (acc, lane) in acc.iter_mut().zip(b.lanes(ty, y)) {
            *acc = d.mul_add(lane as f32, *acc);
        }
    }
    let m = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    match ty {
        GgmlType::Q4_K => hsum8(acc) + m,
        GgmlType::Q5_K => hsum8(acc) + summs,
        _ => hsum8(acc),
    }
}

/// K-quant `ty` (Q2_K, Q4_K) weights · Q8_K activations in the repacked order with one fused
/// multiply-add per `step` values.
pub(crate) fn repacked(ty: GgmlType, step: usize, w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (x, y) in w
        .chunks_exact(ty.block_bytes())
        .zip(a.chunks_exact(Q8K_BYTES))
    {
        let b = decode(ty, x);
        let d_a = f32_at(y);
        let (d, dmin) = (b.d * d_a, b.dmin * d_a);
        for k0 in (0..256).step_by(step) {
            acc = (b.isum(y, k0, k0 + step) as f32).mul_add(d, acc);
            acc_min = (b.imin(y, k0, k0 + step) as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// K-quant `ty` weights · Q8_K activations in the tiled order.
pub(crate) fn tiled(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w
        .chunks_exact(ty.block_bytes())
        .zip(a.chunks_exact(Q8K_BYTES))
    {
        let b = decode(ty, x);
        let mut r = b.isum_block(ty, y) as f32 * b.d;
        if has_min(ty) {
            r = (-b.dmin).mul_add(b.imin(y, 0, 256) as f32, r);
        }
        acc = r.mul_add(f32_at(y), acc);
    }
    acc
}

/// Q4_0 weights · Q8_0 activations in the repacked order (`q4_0_8x8_q8_0`, gemv and gemm
/// alike): one fused multiply-add per 32-value block by `d_w * d_a`.
pub(crate) fn repacked_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w
        .chunks_exact(GgmlType::Q4_0.block_bytes())
        .zip(a.chunks_exact(GgmlType::Q8_0.block_bytes()))
    {
        let mut s = 0i32;
        for j in 0..16 {
            s += ((x[2 + j] & 0x0f) as i32 - 8) * y[2 + j] as i8 as i32;
            s += ((x[2 + j] >> 4) as i32 - 8) * y[18 + j] as i8 as i32;
        }
        acc = (s as f32).mul_add(f16_at(x) * f16_at(y), acc);
    }
    acc
}
