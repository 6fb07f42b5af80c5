//! Portable fused dot products: a weight row in its block format against an activation row
//! quantized to the matching format. These are the reference the SIMD kernels are tested
//! against, and the fallback on CPUs without AVX2.

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

use super::float::f16_at;
use super::kquants::{q3k_scales, q4k_scales_mins, q6k_quant, q45k_quant};

#[inline(always)]
fn i8s(b: &[u8]) -> impl Iterator<Item = i32> + '_ {
    b.iter().map(|&q| q as i8 as i32)
}

#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline(always)]
fn bsum(a: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([a[260 + 2 * j], a[261 + 2 * j]]) as i32
}

/// Q4_0 weights · Q8_0 activations.
pub fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let qy = &y[2..34];
        let mut s = 0i32;
        for j in 0..16 {
            s += ((x[2 + j] & 0x0f) as i32 - 8) * qy[j] as i8 as i32;
            s += ((x[2 + j] >> 4) as i32 - 8) * qy[j + 16] as i8 as i32;
        }
        sum += s as f32 * (f16_at(x) * f16_at(y));
    }
    sum
}

/// Q4_1 weights · Q8_1 activations.
pub fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let (mut sum, mut mins) = (0.0f32, 0.0f32);
    for (x, y) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
        let qy = &y[4..36];
        let mut s = 0i32;
        for j in 0..16 {
            s += (x[4 + j] & 0x0f) as i32 * qy[j] as i8 as i32;
            s += (x[4 + j] >> 4) as i32 * qy[j + 16] as i8 as i32;
        }
        mins = f16_at(&x[2..]).mul_add(f16_at(&y[2..]), mins);
        sum += s as f32 * (f16_at(x) * f16_at(y));
    }
    sum + mins
}

fn q5_quants(qh: u32, qs: &[u8]) -> [i32; 32] {
    std::array::from_fn(|j| {
        let nib = if j < 16 {
            qs[j] & 0x0f
        } else {
            qs[j - 16] >> 4
        };
        (nib | ((((qh >> j) & 1) as u8) << 4)) as i32
    })
}

/// Q5_0 weights · Q8_0 activations.
pub fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
        let q = q5_quants(u32::from_le_bytes([x[2], x[3], x[4], x[5]]), &x[6..22]);
        let s: i32 = q
            .iter()
            .zip(i8s(&y[2..34]))
            .map(|(&q, y)| (q - 16) * y)
            .sum();
        sum += s as f32 * (f16_at(x) * f16_at(y));
    }
    sum
}

/// Q5_1 weights · Q8_1 activations.
pub fn dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let (mut sum, mut mins) = (0.0f32, 0.0f32);
    for (x, y) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
        let q = q5_quants(u32::from_le_bytes([x[4], x[5], x[6], x[7]]), &x[8..24]);
        let s: i32 = q.iter().zip(i8s(&y[4..36])).map(|(&q, y)| q * y).sum();
        mins = f16_at(&x[2..]).mul_add(f16_at(&y[2..]), mins);
        sum += s as f32 * (f16_at(x) * f16_at(y));
    }
    sum + mins
}

/// Q8_0 weights · Q8_0 activations.
pub fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
        let s: i32 = i8s(&x[2..34]).zip(i8s(&y[2..34])).map(|(p, q)| p * q).sum();
        sum += s as f32 * (f16_at(x) * f16_at(y));
    }
    sum
}

/// Q2_K weights · Q8_K activations.
pub fn dot_q2_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(84).zip(a.chunks_exact(292)) {
        let (scales, qs) = (&x[..16], &x[16..80]);
        let qy = &y[4..260];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for sb in 0..16 {
            let mut s = 0i32;
            for k in 16 * sb..16 * (sb + 1) {
                let (g, sh, j) = (k / 128, (k % 128) / 32, k % 32);
                s += ((qs[g * 32 + j] >> (2 * sh)) & 3) as i32 * qy[k] as i8 as i32;
            }
            sumi += (scales[sb] & 0x0f) as i32 * s;
            summ += (scales[sb] >> 4) as i32 * bsum(y, sb);
        }
        let d8 = f32_at(y);
        sum += d8 * (f16_at(&x[80..]) * sumi as f32 - f16_at(&x[82..]) * summ as f32);
    }
    sum
}

/// Q3_K weights · Q8_K activations.
pub fn dot_q3_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
        let (hmask, qs) = (&x[..32], &x[32..96]);
        let scales = q3k_scales(&x[96..108]);
        let qy = &y[4..260];
        let mut sumi = 0i32;
        for sb in 0..16 {
            let mut s = 0i32;
            for k in 16 * sb..16 * (sb + 1) {
                let (g, sh, j) = (k / 128, (k % 128) / 32, k % 32);
                let low = ((qs[g * 32 + j] >> (2 * sh)) & 3) as i32;
                let high = (hmask[j] >> (4 * g + sh)) & 1;
                s += (low - if high == 0 { 4 } else { 0 }) * qy[k] as i8 as i32;
            }
            sumi += scales[sb] as i32 * s;
        }
        sum += f32_at(y) * f16_at(&x[108..]) * sumi as f32;
    }
    sum
}

fn dot_q45_k(x: &[u8], qh: Option<&[u8]>, qs: &[u8], y: &[u8]) -> f32 {
    let (sc, m) = q4k_scales_mins(&x[4..16]);
    let qy = &y[4..260];
    let (mut sumi, mut summ) = (0i32, 0i32);
    for sb in 0..8 {
        let mut s = 0i32;
        for k in 32 * sb..32 * (sb + 1) {
            s += q45k_quant(qs, qh, k) as i32 * qy[k] as i8 as i32;
        }
        sumi += sc[sb] as i32 * s;
        summ += m[sb] as i32 * (bsum(y, 2 * sb) + bsum(y, 2 * sb + 1));
    }
    f32_at(y) * (f16_at(x) * sumi as f32 - f16_at(&x[2..]) * summ as f32)
}

/// Q4_K weights · Q8_K activations.
pub fn dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(144)
        .zip(a.chunks_exact(292))
        .map(|(x, y)| dot_q45_k(x, None, &x[16..144], y))
        .sum()
}

/// Q4_K weights · Q8_K activations as llama.cpp computes them after repacking the weights
/// into 8-row interleaved blocks (`q4_K_8x8_q8_K`, its choice on every x86 CPU with AVX2 for
/// a matrix whose row count is a multiple of 8). The scaled integer sums and the integer
/// min-corrections are accumulated with fused multiply-adds by `d_w * d_a` and
/// `dmin_w * d_a`, and the correction is subtracted once at the end. The single-row kernel
/// (`gemv`, [`dot_q4_k_q8_k_8x8`]) does one multiply-add per 256-value super-block; the
/// four-row kernel (`gemm`, [`dot_q4_k_q8_k_8x8_gemm`], used for each full group of four
/// activation rows) does one per 64 values.
fn dot_q4_k_8x8<const STEP: usize>(w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)) {
        let (sc, m) = q4k_scales_mins(&x[4..16]);
        let (qs, qy) = (&x[16..144], &y[4..260]);
        let d_a = f32_at(y);
        let (d, dmin) = (f16_at(x) * d_a, f16_at(&x[2..]) * d_a);
        for group in (0..8).collect::<Vec<_>>().chunks(STEP) {
            let (mut isum, mut imin) = (0i32, 0i32);
            for &sb in group {
                let mut s = 0i32;
                for k in 32 * sb..32 * (sb + 1) {
                    s += q45k_quant(qs, None, k) as i32 * qy[k] as i8 as i32;
                }
                isum += sc[sb] as i32 * s;
                imin += m[sb] as i32 * (bsum(y, 2 * sb) + bsum(y, 2 * sb + 1));
            }
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (imin as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// See [`dot_q4_k_8x8`]: llama.cpp's repacked single-row Q4_K kernel.
pub fn dot_q4_k_q8_k_8x8(w: &[u8], a: &[u8]) -> f32 {
    dot_q4_k_8x8::<8>(w, a)
}

/// See [`dot_q4_k_8x8`]: llama.cpp's repacked four-row Q4_K kernel, one row.
pub fn dot_q4_k_q8_k_8x8_gemm(w: &[u8], a: &[u8]) -> f32 {
    dot_q4_k_8x8::<2>(w, a)
}

/// [`dot_q4_k_q8_k_8x8_gemm`] for four activation rows.
pub fn dot4_q4_k_q8_k_8x8_gemm(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    a.map(|a| dot_q4_k_q8_k_8x8_gemm(w, a))
}

/// Q6_K weights · Q8_K activations as llama.cpp's tiled K-quant matrix product computes them
/// (`ggml-cpu/tiled`, taken for a batch of 8 or more activation rows; its AVX-512 VNNI
/// microkernel): per super-block the exact integer sum is converted to f32 and multiplied by
/// `d_w`, then accumulated by one fused multiply-add with `d_a` (GCC fuses the kernel's
/// separate multiply and add).
pub fn dot_q6_k_q8_k_tiled(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)) {
        acc = (q6k_block_sum(x, y) as f32 * f16_at(&x[208..])).mul_add(f32_at(y), acc);
    }
    acc
}

/// Q5_K weights · Q8_K activations.
pub fn dot_q5_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(176)
        .zip(a.chunks_exact(292))
        .map(|(x, y)| dot_q45_k(x, Some(&x[16..48]), &x[48..176], y))
        .sum()
}

/// Q6_K weights · Q8_K activations.
pub fn dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(210)
        .zip(a.chunks_exact(292))
        .map(|(x, y)| f32_at(y) * f16_at(&x[208..]) * q6k_block_sum(x, y) as f32)
        .sum()
}

/// One Q6_K block's exact integer dot with a Q8_K block: sum over its 16 sub-blocks of
/// scale * sum((q - 32) * y).
fn q6k_block_sum(x: &[u8], y: &[u8]) -> i32 {
    let (ql, qh, scales) = (&x[..128], &x[128..192], &x[192..208]);
    let qy = &y[4..260];
    let mut sumi = 0i32;
    for sb in 0..16 {
        let mut s = 0i32;
        for k in 16 * sb..16 * (sb + 1) {
            s += (q6k_quant(ql, qh, k) as i32 - 32) * qy[k] as i8 as i32;
        }
        sumi += scales[sb] as i8 as i32 * s;
    }
    sumi
}

/// F32 weights · F32 activations.
pub fn dot_f32_f32(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(4)
        .zip(a.chunks_exact(4))
        .map(|(x, y)| f32_at(x) * f32_at(y))
        .sum()
}

/// F16 weights · F32 activations.
pub fn dot_f16_f32(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(2)
        .zip(a.chunks_exact(4))
        .map(|(x, y)| f16_at(x) * f32_at(y))
        .sum()
}

/// BF16 weights · F32 activations.
pub fn dot_bf16_f32(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(2)
        .zip(a.chunks_exact(4))
        .map(|(x, y)| half::bf16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32() * f32_at(y))
        .sum()
}
