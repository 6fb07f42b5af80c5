//! Portable fused dot products of the 32-value formats and the float formats: a weight row
//! in its block format against an activation row quantized to the matching format. The
//! block formats reproduce llama.cpp's AVX2 vec-dot order exactly, so the SIMD kernels must
//! equal them bit for bit; they are also the fallback on CPUs without AVX2.

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

use super::float::f16_at;

use super::korder::hsum8;

/// One 32-value block's integer dot as llama.cpp's AVX2 kernels hold it: lane `l` sums the
/// products of values `4l .. 4l + 4`.
#[inline(always)]
fn lanes32(q: &[i32; 32], y: &[u8]) -> [f32; 8] {
    std::array::from_fn(|l| {
        (4 * l..4 * l + 4)
            .map(|j| q[j] * y[j] as i8 as i32)
            .sum::<i32>() as f32
    })
}

/// Blocks of 32 values in llama.cpp's AVX2 vec-dot order: each block's eight lanes
/// fused-multiply-added into eight f32 lanes by `d_w * d_a`, summed at the end; formats with
/// a min add `m_w * s_a` per block into a scalar by fused multiply-add (as GCC compiles
/// `summs += m * s`). `block(x)` gives the block's quants, `w_bytes`/`a_bytes` the block
/// sizes and `q_at` where the activation quants start.
#[inline(always)]
fn blocks32(
    w: &[u8],
    a: &[u8],
    (w_bytes, a_bytes, q_at): (usize, usize, usize),
    has_min: bool,
    block: impl Fn(&[u8]) -> [i32; 32],
) -> f32 {
    let mut acc = [0f32; 8];
    let mut mins = 0f32;
    for (x, y) in w.chunks_exact(w_bytes).zip(a.chunks_exact(a_bytes)) {
        let d = f16_at(x) * f16_at(y);
        for (acc, p) in acc.iter_mut().zip(lanes32(&block(x), &y[q_at..])) {
            *acc = d.mul_add(p, *acc);
        }
        if has_min {
            mins = f16_at(&x[2..]).mul_add(f16_at(&y[2..]), mins);
        }
    }
    hsum8(acc) + mins
}

/// 16 bytes of nibbles as 32 values: low nibbles first, then high nibbles.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i32) -> [i32; 32] {
    std::array::from_fn(|j| {
        let b = qs[j % 16];
        (if j < 16 { b & 0x0f } else { b >> 4 }) as i32 - offset
    })
}

/// Q4_0 weights · Q8_0 activations.
pub fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    blocks32(w, a, (18, 34, 2), false, |x| nibbles(&x[2..18], 8))
}

/// Q4_1 weights · Q8_1 activations.
pub fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    blocks32(w, a, (20, 36, 4), true, |x| nibbles(&x[4..20], 0))
}

fn q5_quants(qh: u32, qs: &[u8], offset: i32) -> [i32; 32] {
    let low = nibbles(qs, 0);
    std::array::from_fn(|j| (low[j] | ((((qh >> j) & 1) as i32) << 4)) - offset)
}

/// Q5_0 weights · Q8_0 activations.
pub fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    blocks32(w, a, (22, 34, 2), false, |x| {
        q5_quants(u32::from_le_bytes([x[2], x[3], x[4], x[5]]), &x[6..22], 16)
    })
}

/// Q5_1 weights · Q8_1 activations.
pub fn dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    blocks32(w, a, (24, 36, 4), true, |x| {
        q5_quants(u32::from_le_bytes([x[4], x[5], x[6], x[7]]), &x[8..24], 0)
    })
}

/// Q8_0 weights · Q8_0 activations.
pub fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    blocks32(w, a, (34, 34, 2), false, |x| {
        std::array::from_fn(|j| x[2 + j] as i8 as i32)
    })
}

#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
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
