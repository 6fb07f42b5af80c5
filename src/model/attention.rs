//! Causal grouped-query attention computed as llama.cpp computes it with flash attention off
//! (llama-cpp-python's default): keys and values cached as f16, queries and probabilities
//! rounded to f16 for the two products, which run as llamafile's tinyBLAS GEMM for a batch of
//! two or more tokens and as `ggml_vec_dot_f16` for a single token; the softmax spans the
//! cache padded to 256 cells with masked cells at `-inf`.

#![allow(clippy::needless_range_loop)] // lane-indexed loops mirror the SIMD code they reproduce

use rayon::prelude::*;

use super::ModelConfig;
use super::ggml_math::{
    Flavor, hsum_rows, reduce_vec_dot_f16_rows, round_f16_in_place, softmax, tinyblas_dot,
    vec_dot_f16,
};
use crate::quant::cpu::multiversion;

/// llama.cpp pads the number of KV cells a graph sees to a multiple of this.
const KV_PAD: usize = 256;

/// Attention of `n` new tokens at positions `pos0..pos0 + n` over the cached keys and values.
///
/// # Shapes
/// `out`, `q`: `n` rows of `q_dim` (`q` already rotated); `k`, `v`: `pos0 + n` rows of
/// `kv_dim`, f16-rounded. `scale` multiplies the scores in the softmax; with a `window`, a
/// query at position `p` sees only keys at positions `p - window < j <= p`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos0: usize,
    cfg: &ModelConfig,
    scale: f32,
    window: Option<usize>,
    flavor: Flavor,
) {
    let (hd, nh, kv) = (cfg.head_dim, cfg.n_head, cfg.kv_dim());
    let n = q.len() / cfg.q_dim();
    let group = nh / cfg.n_head_kv;
    let n_kv = (pos0 + n).div_ceil(KV_PAD) * KV_PAD;
    let gemm = n >= 2;
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || Scratch {
            scores: vec![0f32; n_kv],
            qh: vec![0f32; hd],
            acc: vec![0f32; 4 * 16 * hd],
        },
        |scratch, (idx, o)| {
            let (t, h) = (idx / nh, idx % nh);
            let head = Head {
                q: &q[t * nh * hd + h * hd..][..hd],
                k,
                v,
                kv,
                kv_off: (h / group) * hd,
                len: pos0 + t + 1,
                first: window.map_or(0, |w| (pos0 + t + 1).saturating_sub(w)),
                n_kv,
                gemm,
                scale,
                flavor,
            };
            one_head(o, &head, scratch);
        },
    );
}

/// Per-thread buffers of [`one_head`].
struct Scratch {
    scores: Vec<f32>,
    qh: Vec<f32>,
    acc: Vec<f32>,
}

/// One (token, head) pair's inputs.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    kv: usize,
    kv_off: usize,
    len: usize,
    /// The first position inside the window (0 without one).
    first: usize,
    n_kv: usize,
    gemm: bool,
    scale: f32,
    flavor: Flavor,
}

multiversion!(fn one_head(o: &mut [f32], h: &Head, s: &mut Scratch) = one_head_impl if fma("fma"));

#[inline(always)]
fn one_head_impl(o: &mut [f32], h: &Head, s: &mut Scratch) {
    let hd = o.len();
    let (flavor, w) = (h.flavor, h.flavor.lanes());
    s.qh.copy_from_slice(h.q);
    round_f16_in_place(&mut s.qh);
    // Cells outside the window and past the last position are masked: written in bulk, as
    // the padded cache is mostly such cells for short contexts.
    s.scores.clear();
    s.scores.resize(h.n_kv, f32::NEG_INFINITY);
    for (j, sc) in s.scores[..h.len].iter_mut().enumerate().skip(h.first) {
        let kj = &h.k[j * h.kv + h.kv_off..][..hd];
        *sc = if h.gemm {
            tinyblas_dot(kj, &s.qh, flavor)
        } else {
            vec_dot_f16(kj, &s.qh, flavor)
        };
    }
    softmax(&mut s.scores, h.scale, flavor);
    round_f16_in_place(&mut s.scores[..h.len]);

    // out[d] = sum_j p[j] * v[j][d], with each (lane, d) partial sum accumulated in the order
    // the llama.cpp kernel accumulates it; cells past `len` would add exact zeros.
    // Lane by lane and 32 columns at a time, so that the partial sums stay in registers
    // over the lane's cells (each (lane, d) still takes its cells in order).
    let lanes_per_pos = if h.gemm { w } else { 4 * w };
    let acc = &mut s.acc[..lanes_per_pos * hd];
    let scores = &s.scores[..h.len];
    for (lane, row) in acc.chunks_exact_mut(hd).enumerate() {
        let cells = (lane..h.len).step_by(lanes_per_pos);
        let (chunks, rest) = row.as_chunks_mut::<32>();
        for (c, out) in chunks.iter_mut().enumerate() {
            let mut a = [0f32; 32];
            for j in cells.clone() {
                let vj = &h.v[j * h.kv + h.kv_off + 32 * c..][..32];
                for i in 0..32 {
                    a[i] = vj[i].mul_add(scores[j], a[i]);
                }
            }
            *out = a;
        }
        let d0 = hd - rest.len();
        for (i, ad) in rest.iter_mut().enumerate() {
            *ad = 0.0;
            for j in cells.clone() {
                *ad = h.v[j * h.kv + h.kv_off + d0 + i].mul_add(scores[j], *ad);
            }
        }
    }
    if h.gemm {
        hsum_rows(acc, hd, flavor);
    } else {
        reduce_vec_dot_f16_rows(acc, hd, flavor);
    }
    o.copy_from_slice(&acc[..hd]);
}
