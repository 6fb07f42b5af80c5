//! The forward pass of the pre-norm decoder block, written once for every family: the
//! family's row of [`super::ARCHS`] switches on what differs (biases, per-head q/k norms,
//! post-norms, scaled embeddings, the FFN activation, sliding-window layers). Every
//! intermediate lives in a named buffer, every step is an output-first kernel, and an
//! [`Observer`] sees each buffer as soon as it is computed.

use super::attention::attention;
use super::ggml_math::{Flavor, round_f16_in_place};
use super::kernels::{
    add_assign, gated, rmsnorm_rows, rmsnorm_rows_in_place, rope_row, rope_table, scale,
};
use super::matmul::{QuantizedActs, matmul, matmul_many};
use super::observer::{Observer, Slot};
use super::weights::{LayerWeights, QMatrix};
use super::{ModelError, OwnedQuantizedModel};
use crate::quant::GgmlType;
use rayon::prelude::*;

/// Keys and values of every processed position, per layer.
///
/// # Shapes
/// `k[l]` and `v[l]` hold `len` rows of `kv_dim` values.
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    max: usize,
}

impl KvCache {
    /// An empty cache for `n_layer` layers and at most `max` positions.
    pub fn new(n_layer: usize, max: usize) -> Self {
        KvCache {
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
            len: 0,
            max,
        }
    }

    /// Positions processed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been processed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Which positions' logits a pass computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Every position of the call (a whole-prompt evaluation).
    All,
    /// Only the last (generation).
    Last,
}

/// The activations of one call, each named for what it holds.
///
/// # Shapes
/// `n` token rows of: `x`, `xb`, `attn_out`, `post`, `down` (`n_embd`); `q`, `att`
/// (`q_dim`); `k`, `v` (`kv_dim`); `gate`, `up`, `act`, `inner` (`n_ff`); `logits` (`vocab`)
/// for the rows asked for.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    xb: Vec<f32>,
    post: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    attn_out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    inner: Vec<f32>,
    down: Vec<f32>,
    logits: Vec<f32>,
    qx: ActCache,
}

/// Activations quantized for the matrices that read them, reused while the input is the
/// same (q/k/v share one input, gate/up another).
#[derive(Default)]
struct ActCache {
    slots: [QuantizedActs; 2],
    scratch: Vec<f32>,
    /// The llama.cpp build whose matrix kernels to reproduce.
    flavor: Flavor,
}

impl ActCache {
    /// Forgets the quantized copies: the next input is a new buffer.
    fn new_input(&mut self) {
        self.slots.iter_mut().for_each(|a| a.ty = None);
    }
}

impl ActCache {
    /// Index of the slot holding `x` quantized to `ty`, quantizing it on first use.
    fn slot(&mut self, ty: GgmlType, x: &[f32], width: usize) -> usize {
        match self.slots.iter().position(|a| a.ty == Some(ty)) {
            Some(i) => i,
            None => {
                let i = self.slots.iter().position(|a| a.ty.is_none()).unwrap_or(0);
                self.slots[i].fill(ty, x, width);
                i
            }
        }
    }
}

/// `out = w · x` for every token row of `x`, quantizing `x` to `w`'s activation format
/// unless the cache already holds it in that format.
fn project(
    out: &mut Vec<f32>,
    x: &[f32],
    width: usize,
    w: &QMatrix,
    cache: &mut ActCache,
    file: &[u8],
) {
    let slot = cache.slot(w.act_ty, x, width);
    out.resize(x.len() / width * w.rows, 0.0);
    matmul(
        out,
        &cache.slots[slot],
        w,
        file,
        &mut cache.scratch,
        cache.flavor,
    );
}

/// [`project`] for several matrices reading the same input; with one activation format
/// they run in one parallel region.
fn project_all<const N: usize>(
    outs: [(&mut Vec<f32>, &QMatrix); N],
    x: &[f32],
    width: usize,
    cache: &mut ActCache,
    file: &[u8],
) {
    let ty = outs[0].1.act_ty;
    if outs.iter().any(|(_, w)| w.act_ty != ty) {
        for (out, w) in outs {
            project(out, x, width, w, cache, file);
        }
        return;
    }
    let slot = cache.slot(ty, x, width);
    let n = x.len() / width;
    let mut jobs = outs.map(|(out, w)| {
        out.resize(n * w.rows, 0.0);
        (&mut out[..], w)
    });
    matmul_many(
        &mut jobs,
        &cache.slots[slot],
        file,
        &mut cache.scratch,
        cache.flavor,
    );
}

/// What a sub-block adds to the residual stream: `x` itself, or, in families with a
/// post-norm `w`, `x`'s RMSNorm into `out` (which `capture` sees first).
fn post_norm<'a>(
    out: &'a mut Vec<f32>,
    x: &'a [f32],
    w: &Option<Vec<f32>>,
    eps: f32,
    capture: impl FnOnce(&mut [f32]),
) -> &'a [f32] {
    match w {
        Some(w) => {
            out.resize(x.len(), 0.0);
            rmsnorm_rows(out, x, w, eps);
            capture(out);
            out
        }
        None => x,
    }
}

/// The cos/sin tables of one call's positions, one pair per RoPE base (the global layers',
/// and the sliding-window layers' where their base differs).
///
/// # Shapes
/// `cos` and `sin` hold `n` rows of `rope_dim / 2` values each.
struct RopeTables {
    half: usize,
    tables: Vec<(f32, Vec<f32>, Vec<f32>)>,
}

impl RopeTables {
    fn new(m: &OwnedQuantizedModel, pos0: usize, n: usize) -> Self {
        let cfg = &m.config;
        let half = cfg.rope_dim / 2;
        let mut bases: Vec<f32> = (0..cfg.n_layer).map(|l| cfg.rope_theta_at(l)).collect();
        bases.sort_by(f32::total_cmp);
        bases.dedup();
        let tables = bases
            .into_iter()
            .map(|base| {
                let (mut cos, mut sin) = (vec![0f32; n * half], vec![0f32; n * half]);
                for t in 0..n {
                    let r = t * half..(t + 1) * half;
                    rope_table(
                        &mut cos[r.clone()],
                        &mut sin[r],
                        pos0 + t,
                        base,
                        cfg.rope_dim,
                        m.weights.rope_freqs.as_deref(),
                    );
                }
                (base, cos, sin)
            })
            .collect();
        RopeTables { half, tables }
    }

    /// Rotates every head of the `q` and `k` rows by their positions' angles for `base`.
    fn rotate(&self, base: f32, q: &mut [f32], k: &mut [f32], m: &OwnedQuantizedModel) {
        let cfg = &m.config;
        let halves = cfg.spec().rope == super::RopeStyle::Halves;
        let (qd, kv, half) = (cfg.q_dim(), cfg.kv_dim(), self.half);
        let (_, cos, sin) = self
            .tables
            .iter()
            .find(|(b, _, _)| *b == base)
            .expect("a table per base");
        for t in 0..q.len() / qd {
            let (c, s) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            rope_row(&mut q[t * qd..(t + 1) * qd], cfg.head_dim, c, s, halves);
            rope_row(&mut k[t * kv..(t + 1) * kv], cfg.head_dim, c, s, halves);
        }
    }
}

impl OwnedQuantizedModel {
    /// Runs `tokens` through the model after the positions already in `cache`, appending
    /// their keys and values, and returns the logits asked for (token-major rows).
    ///
    /// Each layer is the pre-norm block: `x += attention(attn_norm(x))`, then `x +=
    /// ffn(ffn_norm(x))`, each sub-block's output through the family's post-norm where it
    /// has one.
    pub fn forward_with_cache<O: Observer>(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
        obs: &mut O,
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config;
        let (n, pos0) = (tokens.len(), cache.len);
        if n == 0 {
            return Err(ModelError::EmptyInput);
        }
        if pos0 + n > cache.max {
            return Err(ModelError::ContextFull {
                needed: pos0 + n,
                max: cache.max,
            });
        }
        let mut b = Buffers::default();
        b.qx.flavor = self.flavor;
        self.embed(&mut b, tokens, obs)?;
        let rope = RopeTables::new(self, pos0, n);
        for (l, lw) in self.weights.layers.iter().enumerate() {
            let at = Some(l);
            self.attention_block(&mut b, l, lw, &rope, cache, obs);
            if which == LogitsFor::Last && l + 1 == cfg.n_layer {
                // As llama.cpp: right after the last layer's attention, the rows whose
                // logits are not asked for are dropped, so the rest of that layer runs as a
                // batch of one (which products' arithmetic depends on).
                b.keep_last_row(cfg.n_embd);
            }
            let attn_out = post_norm(
                &mut b.post,
                &b.attn_out,
                &lw.attn_post_norm,
                cfg.rms_eps,
                |p| obs.capture(at, Slot::AttnPostNorm, p, cfg.n_embd),
            );
            add_assign(&mut b.x, attn_out);
            obs.capture(at, Slot::FfnInp, &mut b.x, cfg.n_embd);

            self.ffn_block(&mut b, l, lw, obs);
            let down = post_norm(&mut b.post, &b.down, &lw.ffn_post_norm, cfg.rms_eps, |p| {
                obs.capture(at, Slot::FfnPostNorm, p, cfg.n_embd)
            });
            add_assign(&mut b.x, down);
            obs.capture(at, Slot::LOut, &mut b.x, cfg.n_embd);
        }
        cache.len += n;
        Ok(self.output(&mut b, which, obs))
    }

    /// `x`: the token embeddings (scaled by sqrt(n_embd) in families that scale them).
    fn embed<O: Observer>(
        &self,
        b: &mut Buffers,
        tokens: &[u32],
        obs: &mut O,
    ) -> Result<(), ModelError> {
        let (cfg, w, file) = (&self.config, &self.weights, self.file_bytes());
        let d = cfg.n_embd;
        b.x.resize(tokens.len() * d, 0.0);
        for (t, &tok) in tokens.iter().enumerate() {
            if tok as usize >= cfg.vocab_size {
                return Err(ModelError::TokenOutOfRange {
                    token: tok,
                    vocab: cfg.vocab_size,
                });
            }
            let row = w.token_embd.row(file, tok as usize);
            crate::quant::dequantize_row(w.token_embd.ty, row, &mut b.x[t * d..(t + 1) * d])
                .expect("shape checked at load");
        }
        if cfg.spec().embd_scale {
            scale(&mut b.x, (d as f32).sqrt());
        }
        obs.capture(None, Slot::Embd, &mut b.x, d);
        b.xb.resize(b.x.len(), 0.0);
        Ok(())
    }

    /// `attn_out = wo · attention(rope(q), rope(k), v)` of `attn_norm(x)`, appending this
    /// call's keys and values to layer `l`'s cache (rounded to f16, as llama.cpp stores them).
    fn attention_block<O: Observer>(
        &self,
        b: &mut Buffers,
        l: usize,
        lw: &LayerWeights,
        rope: &RopeTables,
        cache: &mut KvCache,
        obs: &mut O,
    ) {
        let (cfg, file, at) = (&self.config, self.file_bytes(), Some(l));
        let (d, qd, kv) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());
        rmsnorm_rows(&mut b.xb, &b.x, &lw.attn_norm, cfg.rms_eps);
        obs.capture(at, Slot::AttnNorm, &mut b.xb, d);

        b.qx.new_input();
        project_all(
            [(&mut b.q, &lw.wq), (&mut b.k, &lw.wk), (&mut b.v, &lw.wv)],
            &b.xb,
            d,
            &mut b.qx,
            file,
        );
        for (buf, bias, width) in [
            (&mut b.q, &lw.bq, qd),
            (&mut b.k, &lw.bk, kv),
            (&mut b.v, &lw.bv, kv),
        ] {
            if let Some(bias) = bias {
                buf.chunks_exact_mut(width)
                    .for_each(|r| add_assign(r, bias));
            }
        }
        obs.capture(at, Slot::Q, &mut b.q, qd);
        obs.capture(at, Slot::K, &mut b.k, kv);
        obs.capture(at, Slot::V, &mut b.v, kv);
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            rmsnorm_rows_in_place(&mut b.q, qn, cfg.rms_eps);
            rmsnorm_rows_in_place(&mut b.k, kn, cfg.rms_eps);
            obs.capture(at, Slot::QNorm, &mut b.q, qd);
            obs.capture(at, Slot::KNorm, &mut b.k, kv);
        }

        rope.rotate(cfg.rope_theta_at(l), &mut b.q, &mut b.k, self);
        obs.capture(at, Slot::QRope, &mut b.q, qd);
        obs.capture(at, Slot::KRope, &mut b.k, kv);
        // Queries are scaled either before attention (Gemma) or inside its softmax.
        let kq_scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let softmax_scale = if cfg.spec().scale_q {
            scale(&mut b.q, kq_scale);
            1.0
        } else {
            kq_scale
        };
        let pos0 = cache.len;
        for (cache, new) in [(&mut cache.k[l], &b.k), (&mut cache.v[l], &b.v)] {
            let from = cache.len();
            cache.extend_from_slice(new);
            round_f16_in_place(&mut cache[from..]);
        }

        b.att.resize(b.q.len(), 0.0);
        let window = cfg.is_swa(l).then_some(cfg.sliding_window);
        attention(
            &mut b.att,
            &b.q,
            &cache.k[l],
            &cache.v[l],
            pos0,
            cfg,
            softmax_scale,
            window,
            self.flavor,
        );
        b.qx.new_input();
        project(&mut b.attn_out, &b.att, qd, &lw.wo, &mut b.qx, file);
        obs.capture(at, Slot::AttnOut, &mut b.attn_out, d);
    }

    /// `down = ffn_down · (act(ffn_gate · h) * (ffn_up · h))` of `h = ffn_norm(x)`.
    fn ffn_block<O: Observer>(&self, b: &mut Buffers, l: usize, lw: &LayerWeights, obs: &mut O) {
        let (cfg, file, at) = (&self.config, self.file_bytes(), Some(l));
        let (d, ff) = (cfg.n_embd, cfg.n_ff);
        rmsnorm_rows(&mut b.xb, &b.x, &lw.ffn_norm, cfg.rms_eps);
        obs.capture(at, Slot::FfnNorm, &mut b.xb, d);
        b.qx.new_input();
        project_all(
            [(&mut b.gate, &lw.ffn_gate), (&mut b.up, &lw.ffn_up)],
            &b.xb,
            d,
            &mut b.qx,
            file,
        );
        obs.capture(at, Slot::FfnGate, &mut b.gate, ff);
        obs.capture(at, Slot::FfnUp, &mut b.up, ff);
        let rows = b.x.len() / d;
        b.act.resize(rows * ff, 0.0);
        b.inner.resize(rows * ff, 0.0);
        let (f, flavor) = (cfg.spec().ffn_act, self.flavor);
        if rows > 1 {
            // Element-wise, so token rows in parallel compute the same values.
            b.act
                .par_chunks_mut(ff)
                .zip(b.inner.par_chunks_mut(ff))
                .zip(b.gate.par_chunks(ff).zip(b.up.par_chunks(ff)))
                .for_each(|((a, i), (g, u))| gated(a, i, g, u, f, flavor));
        } else {
            gated(&mut b.act, &mut b.inner, &b.gate, &b.up, f, flavor);
        }
        obs.capture(at, Slot::FfnAct, &mut b.act, ff);
        obs.capture(at, Slot::FfnInner, &mut b.inner, ff);
        b.qx.new_input();
        project(&mut b.down, &b.inner, ff, &lw.ffn_down, &mut b.qx, file);
        obs.capture(at, Slot::FfnDown, &mut b.down, d);
    }

    /// The logits of the rows asked for: `output · final_norm(x)`, soft-capped in families
    /// that cap them.
    fn output<O: Observer>(&self, b: &mut Buffers, which: LogitsFor, obs: &mut O) -> Vec<f32> {
        let (cfg, w, file) = (&self.config, &self.weights, self.file_bytes());
        let d = cfg.n_embd;
        let rows = match which {
            LogitsFor::All => &b.x[..],
            LogitsFor::Last => &b.x[b.x.len() - d..],
        };
        b.xb.truncate(rows.len());
        rmsnorm_rows(&mut b.xb, rows, &w.output_norm, cfg.rms_eps);
        obs.capture(None, Slot::FinalNorm, &mut b.xb, d);
        b.qx.new_input();
        project(&mut b.logits, &b.xb, d, &w.output, &mut b.qx, file);
        if let Some(cap) = cfg.logit_softcap {
            b.logits
                .iter_mut()
                .for_each(|v| *v = (*v * (1.0 / cap)).tanh() * cap);
        }
        obs.capture(None, Slot::Logits, &mut b.logits, cfg.vocab_size);
        std::mem::take(&mut b.logits)
    }
}

impl Buffers {
    /// Keeps only the last token row of the residual stream and of the attention output
    /// (the rest of the layer then runs as a batch of one).
    fn keep_last_row(&mut self, d: usize) {
        let m = self.x.len() / d;
        if m > 1 {
            self.x.drain(..(m - 1) * d);
            self.attn_out.drain(..(m - 1) * d);
            self.xb.truncate(d);
        }
    }
}
