//! `AprTransformer`: a deliberately plain float32 implementation of the same decoder, written
//! to be read. It shares no matrix or quantization kernel with the GGUF engine: weights are
//! decoded to f32 rows once at load, activations are never quantized, every product is an
//! f32 loop, attention is computed from scratch for the whole prompt.

use rayon::prelude::*;

use super::{Arch, Logits, ModelConfig, ModelError, Observer, Slot};
use crate::apr::{AprError, AprFile};
use crate::quant;
use crate::tokenizer::TokenizerSpec;

/// A dense f32 matrix.
///
/// # Shapes
/// `rows x cols`, row-major: row `r` is output `r`'s weights.
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    ffn_gate: Matrix,
    ffn_up: Matrix,
    ffn_down: Matrix,
}

/// The reference engine over an APR file.
pub struct AprTransformer {
    /// Hyper-parameters, from the APR metadata.
    pub config: ModelConfig,
    /// The tokenizer description, from the APR metadata.
    pub tokenizer: TokenizerSpec,
    token_embd: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Option<Matrix>,
}

fn meta_err(file: &AprFile, field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Apr(AprError::Malformed {
        field: format!("metadata.{field}"),
        offset: file.metadata_offset,
        reason: reason.into(),
    })
}

fn tensor_err(name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Apr(AprError::Tensor {
        name: name.into(),
        reason: reason.into(),
    })
}

fn decode(file: &AprFile, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    let t = file
        .tensor(name)
        .ok_or_else(|| tensor_err(name, "required tensor is missing"))?;
    if t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>() != shape {
        return Err(tensor_err(
            name,
            format!("dims {:?}, expected {shape:?}", t.dims),
        ));
    }
    let n = shape.iter().product();
    quant::dequantize(t.dtype, file.tensor_data(t), n).map_err(|e| tensor_err(name, e.to_string()))
}

fn matrix(file: &AprFile, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
    Ok(Matrix {
        rows,
        cols,
        data: decode(file, name, &[rows, cols])?,
    })
}

impl AprTransformer {
    /// Loads the model an APR file holds, decoding every weight to f32.
    pub fn load(file: &AprFile) -> Result<Self, ModelError> {
        let meta = &file.metadata;
        let config: ModelConfig = serde_json::from_value(
            meta.get("hyperparameters")
                .cloned()
                .ok_or_else(|| meta_err(file, "hyperparameters", "missing"))?,
        )
        .map_err(|e| meta_err(file, "hyperparameters", e.to_string()))?;
        // The same checks as a GGUF file's, before any weight is read or buffer sized.
        let named = |e: crate::model::ConfigError| {
            meta_err(
                file,
                &format!("hyperparameters.{}", e.param.apr_field()),
                e.reason,
            )
        };
        config.validate().map_err(named)?;
        config
            .check_tensors(
                file.tensors
                    .iter()
                    .map(|t| (t.name.as_str(), t.dims.first().copied().unwrap_or(0))),
            )
            .map_err(named)?;
        let tokenizer: TokenizerSpec = serde_json::from_value(
            meta.get("tokenizer")
                .cloned()
                .ok_or_else(|| meta_err(file, "tokenizer", "missing"))?,
        )
        .map_err(|e| meta_err(file, "tokenizer", e.to_string()))?;
        tokenizer
            .check()
            .map_err(|e| meta_err(file, &format!("tokenizer.{}", e.field), e.reason))?;
        let (d, kv, ff) = (config.n_embd, config.kv_dim(), config.n_ff);
        let optional = |name: String, len: usize| -> Result<Option<Vec<f32>>, ModelError> {
            match file.tensor(&name) {
                None => Ok(None),
                Some(_) => decode(file, &name, &[len]).map(Some),
            }
        };
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: decode(file, &n("attn_norm.weight"), &[d])?,
                wq: matrix(file, &n("attn_q.weight"), d, d)?,
                wk: matrix(file, &n("attn_k.weight"), kv, d)?,
                wv: matrix(file, &n("attn_v.weight"), kv, d)?,
                bq: optional(n("attn_q.bias"), d)?,
                bk: optional(n("attn_k.bias"), kv)?,
                bv: optional(n("attn_v.bias"), kv)?,
                wo: matrix(file, &n("attn_output.weight"), d, d)?,
                ffn_norm: decode(file, &n("ffn_norm.weight"), &[d])?,
                ffn_gate: matrix(file, &n("ffn_gate.weight"), ff, d)?,
                ffn_up: matrix(file, &n("ffn_up.weight"), ff, d)?,
                ffn_down: matrix(file, &n("ffn_down.weight"), d, ff)?,
            });
        }
        let output = match file.tensor("output.weight") {
            Some(_) => Some(matrix(file, "output.weight", config.vocab_size, d)?),
            None => None,
        };
        Ok(AprTransformer {
            token_embd: matrix(file, "token_embd.weight", config.vocab_size, d)?,
            output_norm: decode(file, "output_norm.weight", &[d])?,
            output,
            layers,
            tokenizer,
            config,
        })
    }

    /// Logits of every position of `tokens`.
    pub fn forward(&self, tokens: &[u32]) -> Result<Logits, ModelError> {
        self.forward_observed(tokens, &mut super::NoopObserver)
    }

    /// [`forward`](Self::forward) with an observer at every capture point.
    pub fn forward_observed<O: Observer>(
        &self,
        tokens: &[u32],
        obs: &mut O,
    ) -> Result<Logits, ModelError> {
        let c = &self.config;
        let (n, d, kv, ff) = (tokens.len(), c.n_embd, c.kv_dim(), c.n_ff);
        if n == 0 {
            return Err(ModelError::EmptyInput);
        }
        if n > c.context_length {
            return Err(ModelError::ContextFull {
                needed: n,
                max: c.context_length,
            });
        }
        let mut x = vec![0f32; n * d];
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= c.vocab_size {
                return Err(ModelError::TokenOutOfRange {
                    token: tok as u32,
                    vocab: c.vocab_size,
                });
            }
            x[t * d..(t + 1) * d].copy_from_slice(&self.token_embd.data[tok * d..(tok + 1) * d]);
        }
        obs.capture(None, Slot::Embd, &mut x, d);

        let mut xb = vec![0f32; n * d];
        for (l, w) in self.layers.iter().enumerate() {
            let at = Some(l);
            rmsnorm(&mut xb, &x, &w.attn_norm, c.rms_eps);
            obs.capture(at, Slot::AttnNorm, &mut xb, d);
            let mut q = matmul(&xb, &w.wq, w.bq.as_deref());
            let mut k = matmul(&xb, &w.wk, w.bk.as_deref());
            let mut v = matmul(&xb, &w.wv, w.bv.as_deref());
            obs.capture(at, Slot::Q, &mut q, d);
            obs.capture(at, Slot::K, &mut k, kv);
            obs.capture(at, Slot::V, &mut v, kv);
            rope(&mut q, d, c);
            rope(&mut k, kv, c);
            obs.capture(at, Slot::QRope, &mut q, d);
            obs.capture(at, Slot::KRope, &mut k, kv);
            let att = attention(&q, &k, &v, n, c);
            let mut attn_out = matmul(&att, &w.wo, None);
            obs.capture(at, Slot::AttnOut, &mut attn_out, d);
            x.iter_mut().zip(&attn_out).for_each(|(a, b)| *a += b);
            obs.capture(at, Slot::FfnInp, &mut x, d);

            rmsnorm(&mut xb, &x, &w.ffn_norm, c.rms_eps);
            obs.capture(at, Slot::FfnNorm, &mut xb, d);
            let mut gate = matmul(&xb, &w.ffn_gate, None);
            let mut up = matmul(&xb, &w.ffn_up, None);
            obs.capture(at, Slot::FfnGate, &mut gate, ff);
            obs.capture(at, Slot::FfnUp, &mut up, ff);
            let mut act: Vec<f32> = gate.iter().map(|&g| g / (1.0 + (-g).exp())).collect();
            let mut inner: Vec<f32> = act.iter().zip(&up).map(|(a, u)| a * u).collect();
            obs.capture(at, Slot::FfnAct, &mut act, ff);
            obs.capture(at, Slot::FfnInner, &mut inner, ff);
            let mut down = matmul(&inner, &w.ffn_down, None);
            obs.capture(at, Slot::FfnDown, &mut down, d);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            obs.capture(at, Slot::LOut, &mut x, d);
        }
        rmsnorm(&mut xb, &x, &self.output_norm, c.rms_eps);
        obs.capture(None, Slot::FinalNorm, &mut xb, d);
        let mut logits = matmul(&xb, self.output.as_ref().unwrap_or(&self.token_embd), None);
        obs.capture(None, Slot::Logits, &mut logits, c.vocab_size);
        Ok(Logits {
            vocab: c.vocab_size,
            data: logits,
        })
    }
}

/// `out = x / rms(x) * w` per row, in f32.
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// `y[t] = W x[t] (+ b)` for every token row, f32 throughout.
fn matmul(x: &[f32], w: &Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let n = x.len() / w.cols;
    let mut y = vec![0f32; n * w.rows];
    y.par_chunks_mut(w.rows)
        .zip(x.par_chunks(w.cols))
        .for_each(|(yt, xt)| {
            for (r, yr) in yt.iter_mut().enumerate() {
                let row = &w.data[r * w.cols..(r + 1) * w.cols];
                *yr = row.iter().zip(xt).map(|(a, b)| a * b).sum::<f32>()
                    + bias.map_or(0.0, |b| b[r]);
            }
        });
    y
}

/// Rotary position embedding of every head of every token row (`width` per row), with
/// the pairing each architecture uses.
fn rope(x: &mut [f32], width: usize, c: &ModelConfig) {
    let half = c.rope_dim / 2;
    for (pos, row) in x.chunks_exact_mut(width).enumerate() {
        for head in row.chunks_exact_mut(c.head_dim) {
            for i in 0..half {
                let theta = pos as f32 * c.rope_theta.powf(-2.0 * i as f32 / c.rope_dim as f32);
                let (sin, cos) = theta.sin_cos();
                let (a, b) = if c.arch == Arch::Qwen2 {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// Causal grouped-query attention over the whole prompt, f32 softmax.
fn attention(q: &[f32], k: &[f32], v: &[f32], n: usize, c: &ModelConfig) -> Vec<f32> {
    let (d, kv, hd) = (c.n_embd, c.kv_dim(), c.head_dim);
    let group = c.n_head / c.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; n * d];
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / c.n_head, idx % c.n_head);
        let qh = &q[t * d + h * hd..][..hd];
        let kvo = (h / group) * hd;
        let mut scores: Vec<f32> = (0..=t)
            .map(|j| {
                qh.iter()
                    .zip(&k[j * kv + kvo..][..hd])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    * scale
            })
            .collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        scores.iter_mut().for_each(|s| *s = (*s - max).exp());
        let sum: f32 = scores.iter().sum();
        for (j, p) in scores.iter().enumerate() {
            let vj = &v[j * kv + kvo..][..hd];
            o.iter_mut().zip(vj).for_each(|(a, b)| *a += p / sum * b);
        }
    });
    out
}
