//! The forward pass of the llama/qwen2 decoder, written once: every intermediate lives in a
//! named buffer, every step is an output-first kernel, and an [`Observer`] sees each buffer
//! as soon as it is computed.

use super::attention::attention;
use super::ggml_math::round_f16;
use super::kernels::{add_assign, rmsnorm_rows, rope_row, rope_table, swiglu};
use super::matmul::{QuantizedActs, matmul, matvec_many};
use super::observer::{Observer, Slot};
use super::weights::QMatrix;
use super::{ModelError, OwnedQuantizedModel};
use crate::gguf::GgmlType;

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
/// `n` token rows of: `x`, `xb`, `q`, `att`, `attn_out`, `down` (`n_embd`); `k`, `v`
/// (`kv_dim`); `gate`, `up`, `act`, `inner` (`n_ff`); `logits` (`vocab`) for the rows asked for.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    xb: Vec<f32>,
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
    matmul(out, &cache.slots[slot], w, file, &mut cache.scratch);
}

/// [`project`] for several matrices reading the same input; for a single token with one
/// activation format they run in one parallel region.
fn project_all<const N: usize>(
    outs: [(&mut Vec<f32>, &QMatrix); N],
    x: &[f32],
    width: usize,
    cache: &mut ActCache,
    file: &[u8],
) {
    let ty = outs[0].1.act_ty;
    if x.len() != width || outs.iter().any(|(_, w)| w.act_ty != ty) {
        for (out, w) in outs {
            project(out, x, width, w, cache, file);
        }
        return;
    }
    let slot = cache.slot(ty, x, width);
    let mut jobs = outs.map(|(out, w)| {
        out.resize(w.rows, 0.0);
        (&mut out[..], w)
    });
    matvec_many(&mut jobs, &cache.slots[slot], file);
}

impl OwnedQuantizedModel {
    /// Runs `tokens` through the model after the positions already in `cache`, appending
    /// their keys and values, and returns the logits asked for (token-major rows).
    pub fn forward_with_cache<O: Observer>(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
        obs: &mut O,
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config;
        let w = &self.weights;
        let file: &[u8] = self.file_bytes();
        let (n, d, kv, ff) = (tokens.len(), cfg.n_embd, cfg.kv_dim(), cfg.n_ff);
        if n == 0 {
            return Err(ModelError::EmptyInput);
        }
        let pos0 = cache.len;
        if pos0 + n > cache.max {
            return Err(ModelError::ContextFull {
                needed: pos0 + n,
                max: cache.max,
            });
        }
        let mut b = Buffers::default();

        b.x.resize(n * d, 0.0);
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
        obs.capture(None, Slot::Embd, &mut b.x, d);

        let half = cfg.rope_dim / 2;
        let mut cos = vec![0f32; n * half];
        let mut sin = vec![0f32; n * half];
        for t in 0..n {
            let r = t * half..(t + 1) * half;
            rope_table(
                &mut cos[r.clone()],
                &mut sin[r],
                pos0 + t,
                cfg.rope_theta,
                cfg.rope_dim,
                w.rope_freqs.as_deref(),
            );
        }
        let halves = cfg.arch.rope_style() == super::RopeStyle::Halves;
        b.xb.resize(n * d, 0.0);

        for (l, lw) in w.layers.iter().enumerate() {
            let at = Some(l);
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
                (&mut b.q, &lw.bq, d),
                (&mut b.k, &lw.bk, kv),
                (&mut b.v, &lw.bv, kv),
            ] {
                if let Some(bias) = bias {
                    buf.chunks_exact_mut(width)
                        .for_each(|r| add_assign(r, bias));
                }
            }
            obs.capture(at, Slot::Q, &mut b.q, d);
            obs.capture(at, Slot::K, &mut b.k, kv);
            obs.capture(at, Slot::V, &mut b.v, kv);

            for t in 0..n {
                let (c, s) = (
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
                rope_row(&mut b.q[t * d..(t + 1) * d], cfg.head_dim, c, s, halves);
                rope_row(&mut b.k[t * kv..(t + 1) * kv], cfg.head_dim, c, s, halves);
            }
            obs.capture(at, Slot::QRope, &mut b.q, d);
            obs.capture(at, Slot::KRope, &mut b.k, kv);
            cache.k[l].extend(b.k.iter().map(|&x| round_f16(x)));
            cache.v[l].extend(b.v.iter().map(|&x| round_f16(x)));

            b.att.resize(n * d, 0.0);
            attention(
                &mut b.att,
                &b.q,
                &cache.k[l],
                &cache.v[l],
                pos0,
                cfg,
                self.flavor,
            );
            b.qx.new_input();
            project(&mut b.attn_out, &b.att, d, &lw.wo, &mut b.qx, file);
            obs.capture(at, Slot::AttnOut, &mut b.attn_out, d);
            add_assign(&mut b.x, &b.attn_out);
            obs.capture(at, Slot::FfnInp, &mut b.x, d);

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
            b.act.resize(n * ff, 0.0);
            b.inner.resize(n * ff, 0.0);
            swiglu(&mut b.act, &mut b.inner, &b.gate, &b.up, self.flavor);
            obs.capture(at, Slot::FfnAct, &mut b.act, ff);
            obs.capture(at, Slot::FfnInner, &mut b.inner, ff);
            b.qx.new_input();
            project(&mut b.down, &b.inner, ff, &lw.ffn_down, &mut b.qx, file);
            obs.capture(at, Slot::FfnDown, &mut b.down, d);
            add_assign(&mut b.x, &b.down);
            obs.capture(at, Slot::LOut, &mut b.x, d);
        }
        cache.len += n;

        let rows = match which {
            LogitsFor::All => &b.x[..],
            LogitsFor::Last => &b.x[(n - 1) * d..],
        };
        b.xb.truncate(rows.len());
        rmsnorm_rows(&mut b.xb, rows, &w.output_norm, cfg.rms_eps);
        obs.capture(None, Slot::FinalNorm, &mut b.xb, d);
        b.qx.new_input();
        project(&mut b.logits, &b.xb, d, &w.output, &mut b.qx, file);
        obs.capture(None, Slot::Logits, &mut b.logits, cfg.vocab_size);
        Ok(b.logits)
    }
}
