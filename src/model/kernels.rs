//! Small output-first float kernels of the forward pass. Each mirrors how llama.cpp's CPU
//! backend computes the same operation (accumulation width, order of scaling) so the engine
//! agrees with it closely, not merely approximately.

use super::arch::FfnAct;
use super::ggml_math::{Flavor, round_f16, silu};
use crate::quant::cpu::multiversion;

/// `out = x / rms(x) * w` over one row; the sum of squares is accumulated in f64 as ggml does.
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * g;
    }
}

/// `1 / sqrt(mean(x^2) + eps)`, the sum of squares accumulated in f64 as ggml does.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// [`rmsnorm`] of every `w.len()`-wide row of `x` into the matching row of `out`.
pub fn rmsnorm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    for (o, xr) in out.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
        rmsnorm(o, xr, w, eps);
    }
}

/// [`rmsnorm`] of every `w.len()`-wide row of `x` in place (the per-head q/k norms): each
/// row's scale is taken before the row is overwritten, so the arithmetic is the same.
pub fn rmsnorm_rows_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    for r in x.chunks_exact_mut(w.len()) {
        let scale = rms_scale(r, eps);
        for (v, &g) in r.iter_mut().zip(w) {
            *v = (*v * scale) * g;
        }
    }
}

/// `x *= s` element-wise (ggml's `scale` op: embeddings by √n_embd, queries by 1/√head_dim).
pub fn scale(x: &mut [f32], s: f32) {
    x.iter_mut().for_each(|v| *v *= s);
}

/// `x += y` element-wise (residual connections, biases).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

multiversion!(
    /// The gated FFN's two element-wise steps: `act = f(gate)` and `inner = act * up`, with
    /// SiLU as llama.cpp's vectorised kernel computes it and GELU as its table does
    /// ([`gelu_f16`]).
    pub fn gated(act: &mut [f32], inner: &mut [f32], gate: &[f32], up: &[f32], f: FfnAct, flavor: Flavor) = gated_impl if fma("fma")
);

#[inline(always)]
fn gated_impl(
    act: &mut [f32],
    inner: &mut [f32],
    gate: &[f32],
    up: &[f32],
    f: FfnAct,
    flavor: Flavor,
) {
    for (((a, i), &g), &u) in act.iter_mut().zip(inner.iter_mut()).zip(gate).zip(up) {
        *a = match f {
            FfnAct::Silu => silu(g, flavor),
            FfnAct::Gelu => gelu_f16(g),
        };
        *i = *a * u;
    }
}

/// GELU, tanh approximation, as ggml's f32 GeGLU computes it: 0 at or below −10, the input
/// at or above 10, and between them a table of f16 results indexed by the input rounded to
/// f16 (`GGML_GELU_FP16`). The table entry is the f32 formula on the f16 input, compiled
/// with fused multiply-adds, rounded to f16.
#[inline(always)]
pub fn gelu_f16(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let h = round_f16(x);
        let inner = (COEF_A * h).mul_add(h, 1.0);
        round_f16((0.5 * h) * (1.0 + (SQRT_2_OVER_PI * h * inner).tanh()))
    }
}

/// Cos/sin tables of RoPE for one position: entry `i` rotates pair `i` by
/// `pos * theta_scale^i / freq_factor[i]`, with the angle advanced by repeated multiplication
/// in f32 as llama.cpp does.
pub fn rope_table(
    cos: &mut [f32],
    sin: &mut [f32],
    pos: usize,
    base: f32,
    rope_dim: usize,
    freq_factors: Option<&[f32]>,
) {
    let theta_scale = base.powf(-2.0 / rope_dim as f32);
    let mut theta = pos as f32;
    for i in 0..rope_dim / 2 {
        let t = match freq_factors {
            Some(f) => theta / f[i],
            None => theta,
        };
        cos[i] = t.cos();
        sin[i] = t.sin();
        theta *= theta_scale;
    }
}

multiversion!(
    /// Rotates every `head_dim`-wide head of `row` in place: see [`rope_head`].
    pub fn rope_row(row: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], halves: bool) = rope_row_impl if fma("fma")
);

#[inline(always)]
fn rope_row_impl(row: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], halves: bool) {
    // A loop, not `for_each` with a closure: a closure is not compiled with the enclosing
    // function's target features, and `mul_add` outside FMA code is a libm call.
    for h in row.chunks_exact_mut(head_dim) {
        rope_head(h, cos, sin, halves);
    }
}

/// Rotates one head in place. `halves` selects NeoX pairing `(i, i + n/2)`; otherwise pairs
/// are adjacent `(2i, 2i + 1)`. Dimensions past `2 * cos.len()` are left as they are.
#[inline(always)]
pub fn rope_head(head: &mut [f32], cos: &[f32], sin: &[f32], halves: bool) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = if halves {
            (i, i + half)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (head[a], head[b]);
        // As GCC vectorises ggml's rotate_pairs (vfmaddsub over interleaved pairs): x0 * cos
        // and x0 * sin fused, x1's products rounded first. Verified bit for bit against
        // llama.cpp on the adjacent-pair (llama) layout.
        head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
        head[b] = x0.mul_add(sin[i], x1 * cos[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        rmsnorm(&mut out, &x, &[1.0; 4], 0.0);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
        assert!((out[0] - 1.2).abs() < 1e-6);
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let mut cos = [0f32; 4];
        let mut sin = [0f32; 4];
        rope_table(&mut cos, &mut sin, 0, 10000.0, 8, None);
        let mut h: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let orig = h.clone();
        rope_head(&mut h, &cos, &sin, false);
        assert_eq!(h, orig);
        rope_table(&mut cos, &mut sin, 17, 10000.0, 8, None);
        for halves in [false, true] {
            let mut h = orig.clone();
            rope_head(&mut h, &cos, &sin, halves);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = h.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
        }
    }
}
