//! `AprTransformer`: a deliberately plain float32 implementation of the same decoder, written
//! to be read. It shares no matrix or quantization kernel with the GGUF engine: activations
//! are never quantized, every product is an f32 loop, attention is computed from scratch for
//! the whole prompt.
//!
//! Weights are read in place from the mapped APR file, so memory grows with the file, not
//! with a copy of it: f32 rows are used where they lie (APR aligns every tensor to 64
//! bytes), and f16, bf16 or quantized rows are widened to f32 a block of rows at a time
//! inside the matrix product. Only the small vectors (norms, biases) are decoded at load.

use crate::quant::cpu::multiversion;
use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::arch::{FfnAct, RopeStyle};
use super::tensors::{Block, TensorSource};
use super::{Logits, ModelConfig, ModelError, Observer, Slot};
use crate::apr::{AprError, AprFile, AprTensor, DType};
use crate::quant;
use crate::quant::GgmlType;
use crate::tokenizer::TokenizerSpec;

/// A weight matrix inside the mapped APR file, in its stored element type.
///
/// # Shapes
/// `rows x cols`, row-major: the tensor's bytes are `size` bytes at `start` of the file.
/// For a plain or GGML block type row `r` is `row_bytes` bytes at `start + r * row_bytes`
/// (a K-quant row of aprender's may be padded to whole super-blocks); aprender's APR_Q4
/// and APR_Q8 are decoded by value index, as their blocks and scale span rows.
pub struct Matrix {
    rows: usize,
    cols: usize,
    dtype: DType,
    start: usize,
    size: usize,
    row_bytes: usize,
}

impl Matrix {
    /// Rows `r0 .. r0 + nr` as f32: borrowed from the file when they are stored as aligned
    /// f32, otherwise widened into `scratch` (the same values either way).
    fn rows_f32<'a>(
        &self,
        file: &'a [u8],
        r0: usize,
        nr: usize,
        scratch: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let tensor = &file[self.start..self.start + self.size];
        let cols = self.cols;
        match self.dtype {
            DType::Ggml(t) => {
                let bytes = &tensor[r0 * self.row_bytes..(r0 + nr) * self.row_bytes];
                #[cfg(target_endian = "little")]
                if t == GgmlType::F32
                    && let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes)
                {
                    return values;
                }
                // A padded row decodes to whole blocks; its first `cols` values are kept.
                let stored = self.row_bytes / t.block_bytes() * t.block_size();
                scratch.resize(nr * stored, 0.0);
                for (row, out) in bytes
                    .chunks_exact(self.row_bytes)
                    .zip(scratch.chunks_exact_mut(stored))
                {
                    quant::dequantize_row(t, row, out)
                        .expect("element type and size were checked at load");
                }
                if stored != cols {
                    for r in 0..nr {
                        scratch.copy_within(r * stored..r * stored + cols, r * cols);
                    }
                }
                scratch.truncate(nr * cols);
            }
            DType::AprQ4 => {
                scratch.resize(nr * cols, 0.0);
                quant::aprq::dequantize_q4(tensor, r0 * cols, scratch)
                    .expect("size was checked at load");
            }
            DType::AprQ8 => {
                scratch.resize(nr * cols, 0.0);
                quant::aprq::dequantize_q8(tensor, r0 * cols, scratch)
                    .expect("size was checked at load");
            }
            _ => unreachable!("plain integer and f64 tensors are refused at load"),
        }
        scratch
    }
}

/// One block's weights, read in place.
type Layer = Block<Matrix>;

/// The APR file as a tensor source: its tensors under their GGUF names, matrices located
/// and checked, vectors decoded.
struct Decoder<'a> {
    file: &'a AprFile,
    tensors: &'a BTreeMap<String, &'a AprTensor>,
}

impl Decoder<'_> {
    /// The tensor with GGUF name `name`, checked to have dims `shape`.
    fn located(&self, name: &str, shape: &[usize]) -> Result<&AprTensor, ModelError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| tensor_err(name, "required tensor is missing"))?;
        if t.dims.iter().map(|&d| d as usize).ne(shape.iter().copied()) {
            return Err(tensor_err(
                &t.name,
                format!("dims {:?}, expected {shape:?}", t.dims),
            ));
        }
        Ok(t)
    }

    /// The matrix `name` located in the file; its first row is decoded once here, so an
    /// element type pv cannot widen is an error at load rather than in the middle of a
    /// product.
    fn matrix_at(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let t = self.located(name, &[rows, cols])?;
        matrix_of(self.file, t, rows, cols)
    }
}

impl TensorSource for Decoder<'_> {
    type Matrix = Matrix;
    type Error = ModelError;

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        self.matrix_at(name, rows, cols)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.located(name, &[len])?;
        let m = matrix_of(self.file, t, 1, len)?;
        let mut out = Vec::new();
        Ok(m.rows_f32(self.file.bytes(), 0, 1, &mut out).to_vec())
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// The reference engine over an APR file.
pub struct AprTransformer {
    /// Hyper-parameters, from the APR metadata.
    pub config: ModelConfig,
    /// The tokenizer description, from the APR metadata (`None` when the file holds no
    /// vocabulary).
    pub tokenizer: Option<TokenizerSpec>,
    /// What pv noticed reading the file (values inferred from tensor shapes, metadata that
    /// contradicts the architecture).
    pub notes: Vec<String>,
    /// The file the matrices are read from.
    file: Arc<AprFile>,
    token_embd: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Option<Matrix>,
    rope_freqs: Option<Vec<f32>>,
}

fn tensor_err(name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Apr(AprError::Tensor {
        name: name.into(),
        reason: reason.into(),
    })
}

/// Tensor `t` as a `rows x cols` matrix, after checking its element type can hold weights
/// and decoding its first row.
fn matrix_of(
    file: &AprFile,
    t: &AprTensor,
    rows: usize,
    cols: usize,
) -> Result<Matrix, ModelError> {
    let row_bytes = match t.dtype {
        DType::Ggml(_) => t.size / rows.max(1),
        DType::AprQ4 | DType::AprQ8 => 0,
        other => {
            return Err(tensor_err(
                &t.name,
                format!("element type {other} cannot hold the weights pv runs"),
            ));
        }
    };
    let range = file.tensor_range(t);
    let m = Matrix {
        rows,
        cols,
        dtype: t.dtype,
        start: range.start,
        size: t.size,
        row_bytes,
    };
    if rows > 0 {
        let mut scratch = Vec::new();
        let first = m.rows_f32(file.bytes(), 0, 1, &mut scratch);
        debug_assert_eq!(first.len(), cols);
    }
    Ok(m)
}

impl AprTransformer {
    /// Loads the model an APR file of either dialect holds: hyper-parameters, tokenizer and
    /// every tensor's name and shape checked, matrices left in the file (see the module
    /// documentation).
    pub fn load(file: impl Into<Arc<AprFile>>) -> Result<Self, ModelError> {
        let shared: Arc<AprFile> = file.into();
        let file = &*shared;
        let model = super::apr_meta::read(file)?;
        let config = model.config;
        let src = Decoder {
            file,
            tensors: &model.tensors,
        };
        let d = config.n_embd;
        // Names and shapes from the tensor table the GGUF engine reads too.
        let layers = (0..config.n_layer)
            .map(|i| Block::load(&src, &config, i))
            .collect::<Result<Vec<_>, _>>()?;
        let optional = |name: &str, len: usize| -> Result<Option<Vec<f32>>, ModelError> {
            match src.has(name) {
                false => Ok(None),
                true => src.vector(name, len).map(Some),
            }
        };
        let output = match src.has("output.weight") {
            true => Some(src.matrix_at("output.weight", config.vocab_size, d)?),
            false => None,
        };
        Ok(AprTransformer {
            token_embd: src.matrix_at("token_embd.weight", config.vocab_size, d)?,
            output_norm: src.vector("output_norm.weight", d)?,
            output,
            rope_freqs: optional("rope_freqs.weight", config.rope_dim / 2)?,
            layers,
            tokenizer: model.tokenizer,
            notes: model.notes,
            config,
            file: shared.clone(),
        })
    }

    /// Logits of every position of `tokens`.
    pub fn forward(&self, tokens: &[u32]) -> Result<Logits, ModelError> {
        self.forward_observed(tokens, &mut super::NoopObserver)
    }

    /// [`forward`](Self::forward) with an observer at every capture point. Each layer is
    /// the pre-norm block as the papers write it: `x += attention(attn_norm(x))`, then
    /// `x += ffn(ffn_norm(x))`, each sub-block's output through the family's post-norm where
    /// it has one.
    pub fn forward_observed<O: Observer>(
        &self,
        tokens: &[u32],
        obs: &mut O,
    ) -> Result<Logits, ModelError> {
        let c = &self.config;
        let (n, d) = (tokens.len(), c.n_embd);
        if n == 0 {
            return Err(ModelError::EmptyInput);
        }
        if n > c.context_length {
            return Err(ModelError::ContextFull {
                needed: n,
                max: c.context_length,
            });
        }
        let mut x = self.embed(tokens, obs)?;
        let mut xb = vec![0f32; n * d];
        for (l, w) in self.layers.iter().enumerate() {
            let at = Some(l);
            rmsnorm(&mut xb, &x, &w.attn_norm, c.rms_eps);
            obs.capture(at, Slot::AttnNorm, &mut xb, d);
            let attn_out = self.attention_block(&xb, l, w, obs);
            let attn_out = post_norm(attn_out, &w.attn_post_norm, c.rms_eps, |p| {
                obs.capture(at, Slot::AttnPostNorm, p, d)
            });
            x.iter_mut().zip(&attn_out).for_each(|(a, b)| *a += b);
            obs.capture(at, Slot::FfnInp, &mut x, d);

            rmsnorm(&mut xb, &x, &w.ffn_norm, c.rms_eps);
            obs.capture(at, Slot::FfnNorm, &mut xb, d);
            let down = self.ffn_block(&xb, l, w, obs);
            let down = post_norm(down, &w.ffn_post_norm, c.rms_eps, |p| {
                obs.capture(at, Slot::FfnPostNorm, p, d)
            });
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            obs.capture(at, Slot::LOut, &mut x, d);
        }
        rmsnorm(&mut xb, &x, &self.output_norm, c.rms_eps);
        obs.capture(None, Slot::FinalNorm, &mut xb, d);
        let mut logits = self.matmul(&xb, self.output.as_ref().unwrap_or(&self.token_embd), None);
        if let Some(cap) = c.logit_softcap {
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        obs.capture(None, Slot::Logits, &mut logits, c.vocab_size);
        Ok(Logits {
            vocab: c.vocab_size,
            data: logits,
        })
    }

    /// The token embeddings (scaled by sqrt(n_embd) in families that scale them).
    fn embed<O: Observer>(&self, tokens: &[u32], obs: &mut O) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let d = c.n_embd;
        let mut x = vec![0f32; tokens.len() * d];
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= c.vocab_size {
                return Err(ModelError::TokenOutOfRange {
                    token: tok as u32,
                    vocab: c.vocab_size,
                });
            }
            let mut scratch = Vec::new();
            x[t * d..(t + 1) * d].copy_from_slice(self.token_embd.rows_f32(
                self.file.bytes(),
                tok,
                1,
                &mut scratch,
            ));
        }
        if c.spec().embd_scale {
            let s = (d as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
        }
        obs.capture(None, Slot::Embd, &mut x, d);
        Ok(x)
    }

    /// `wo · attention(rope(q), rope(k), v)` of the normed input `xb` at layer `l`.
    fn attention_block<O: Observer>(
        &self,
        xb: &[f32],
        l: usize,
        w: &Layer,
        obs: &mut O,
    ) -> Vec<f32> {
        let c = &self.config;
        let (at, n, qd, kv) = (Some(l), xb.len() / c.n_embd, c.q_dim(), c.kv_dim());
        let mut q = self.matmul(xb, &w.wq, w.bq.as_deref());
        let mut k = self.matmul(xb, &w.wk, w.bk.as_deref());
        let mut v = self.matmul(xb, &w.wv, w.bv.as_deref());
        obs.capture(at, Slot::Q, &mut q, qd);
        obs.capture(at, Slot::K, &mut k, kv);
        obs.capture(at, Slot::V, &mut v, kv);
        if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
            q = normed(&q, qn, c.rms_eps);
            k = normed(&k, kn, c.rms_eps);
            obs.capture(at, Slot::QNorm, &mut q, qd);
            obs.capture(at, Slot::KNorm, &mut k, kv);
        }
        let base = c.rope_theta_at(l);
        rope(&mut q, qd, base, self.rope_freqs.as_deref(), c);
        rope(&mut k, kv, base, self.rope_freqs.as_deref(), c);
        obs.capture(at, Slot::QRope, &mut q, qd);
        obs.capture(at, Slot::KRope, &mut k, kv);
        let window = c.is_swa(l).then_some(c.sliding_window);
        let att = attention(&q, &k, &v, n, window, c);
        let mut attn_out = self.matmul(&att, &w.wo, None);
        obs.capture(at, Slot::AttnOut, &mut attn_out, c.n_embd);
        attn_out
    }

    /// `ffn_down · (act(ffn_gate · xb) * (ffn_up · xb))` of the normed input `xb`.
    fn ffn_block<O: Observer>(&self, xb: &[f32], l: usize, w: &Layer, obs: &mut O) -> Vec<f32> {
        let (c, at) = (&self.config, Some(l));
        let ff = c.n_ff;
        let mut gate = self.matmul(xb, &w.ffn_gate, None);
        let mut up = self.matmul(xb, &w.ffn_up, None);
        obs.capture(at, Slot::FfnGate, &mut gate, ff);
        obs.capture(at, Slot::FfnUp, &mut up, ff);
        let f = c.spec().ffn_act;
        let mut act: Vec<f32> = gate.iter().map(|&g| activation(f, g)).collect();
        let mut inner: Vec<f32> = act.iter().zip(&up).map(|(a, u)| a * u).collect();
        obs.capture(at, Slot::FfnAct, &mut act, ff);
        obs.capture(at, Slot::FfnInner, &mut inner, ff);
        let mut down = self.matmul(&inner, &w.ffn_down, None);
        obs.capture(at, Slot::FfnDown, &mut down, c.n_embd);
        down
    }
}

/// What a sub-block adds to the residual stream: `x`, or in families with a post-norm `w`,
/// `x` normed (which `capture` sees first).
fn post_norm(
    x: Vec<f32>,
    w: &Option<Vec<f32>>,
    eps: f32,
    capture: impl FnOnce(&mut [f32]),
) -> Vec<f32> {
    match w {
        Some(w) => {
            let mut y = normed(&x, w, eps);
            capture(&mut y);
            y
        }
        None => x,
    }
}

/// The FFN activation by its textbook formula (GELU with tanh, SiLU with exp), in f32.
fn activation(f: FfnAct, g: f32) -> f32 {
    match f {
        FfnAct::Silu => g / (1.0 + (-g).exp()),
        FfnAct::Gelu => {
            let k = (2.0 / std::f32::consts::PI).sqrt();
            0.5 * g * (1.0 + (k * (g + 0.044715 * g * g * g)).tanh())
        }
    }
}

/// [`rmsnorm`] of every `w.len()`-wide row (one head, or the residual width) into a new
/// buffer.
fn normed(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    rmsnorm(&mut out, x, w, eps);
    out
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

impl AprTransformer {
    /// `y[t] = W x[t] (+ b)` for every token row, f32 throughout. Weight rows are split
    /// across threads in blocks of [`ROWS_PER_TASK`]; each block is read (or widened) once
    /// and used for every token. Each output is one [`dot`] in a fixed order, so the result
    /// depends neither on the thread count nor on how the rows are stored.
    fn matmul(&self, x: &[f32], w: &Matrix, bias: Option<&[f32]>) -> Vec<f32> {
        let n = x.len() / w.cols;
        let file = self.file.bytes();
        // Weight-row-major first (each task owns whole rows), then transposed.
        let mut yt = vec![0f32; w.rows * n];
        yt.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (c, out)| {
                let (r0, nr) = (c * ROWS_PER_TASK, out.len() / n);
                let rows = w.rows_f32(file, r0, nr, scratch);
                for ((yr, row), r) in out
                    .chunks_exact_mut(n)
                    .zip(rows.chunks_exact(w.cols))
                    .zip(r0..)
                {
                    for (t, y) in yr.iter_mut().enumerate() {
                        *y =
                            dot(row, &x[t * w.cols..(t + 1) * w.cols]) + bias.map_or(0.0, |b| b[r]);
                    }
                }
            });
        let mut y = vec![0f32; n * w.rows];
        for (r, yr) in yt.chunks_exact(n).enumerate() {
            for (t, &v) in yr.iter().enumerate() {
                y[t * w.rows + r] = v;
            }
        }
        y
    }
}

/// Weight rows per matrix-product task: 16 rows of a 7B model's widest matrix (18,944
/// inputs) widen into 1.2 MB of f32.
const ROWS_PER_TASK: usize = 16;

multiversion!(
    /// `a · b` in f32 with eight running sums (element `i` into sum `i % 8`), then the sums
    /// pairwise: a fixed order, the same on every CPU and thread count. Each step is a rounded
    /// multiply then a rounded add (never fused), so the AVX2 build of the same code gives the
    /// same bits as the portable one.
    fn dot(a: &[f32], b: &[f32]) -> f32 = dot_portable if avx2("avx2")
);

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Rotary position embedding of every head of every token row (`width` per row) with base
/// `base`, each frequency divided by its `rope_freqs` factor where the model has them, with
/// the pairing each architecture uses.
fn rope(x: &mut [f32], width: usize, base: f32, freqs: Option<&[f32]>, c: &ModelConfig) {
    let half = c.rope_dim / 2;
    for (pos, row) in x.chunks_exact_mut(width).enumerate() {
        for head in row.chunks_exact_mut(c.head_dim) {
            for i in 0..half {
                let theta = pos as f32 * base.powf(-2.0 * i as f32 / c.rope_dim as f32)
                    / freqs.map_or(1.0, |f| f[i]);
                let (sin, cos) = theta.sin_cos();
                let (a, b) = match c.spec().rope {
                    RopeStyle::Halves => (i, i + half),
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// Causal grouped-query attention over the whole prompt, f32 softmax; with a `window`, each
/// position sees only the last `window` positions up to itself.
fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    window: Option<usize>,
    c: &ModelConfig,
) -> Vec<f32> {
    let (d, kv, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
    let group = c.n_head / c.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; n * d];
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / c.n_head, idx % c.n_head);
        let qh = &q[t * d + h * hd..][..hd];
        let kvo = (h / group) * hd;
        let first = window.map_or(0, |w| (t + 1).saturating_sub(w));
        let mut scores: Vec<f32> = (first..=t)
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
        for (j, p) in (first..=t).zip(&scores) {
            let vj = &v[j * kv + kvo..][..hd];
            o.iter_mut().zip(vj).for_each(|(a, b)| *a += p / sum * b);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apr::AprWriter;

    /// An f32 matrix is used where it lies in the mapped file (no copy); an f16 one is
    /// widened into the scratch buffer, to the same values.
    #[test]
    fn f32_rows_are_read_in_place_and_f16_rows_widened() {
        let values: Vec<f32> = (0..64 * 3).map(|i| i as f32 * 0.25 - 7.0).collect();
        let mut w = AprWriter::new(&serde_json::json!({})).unwrap();
        w.tensor(
            "m32",
            DType::Ggml(GgmlType::F32),
            &[3, 64],
            quant::quantize(GgmlType::F32, &values).unwrap(),
        )
        .unwrap();
        w.tensor(
            "m16",
            DType::Ggml(GgmlType::F16),
            &[3, 64],
            quant::quantize(GgmlType::F16, &values).unwrap(),
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("pv-apr-inplace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.apr");
        w.write(&path).unwrap();
        let file = AprFile::open(&path).unwrap();
        let bytes = file.bytes();
        let span = bytes.as_ptr_range();
        let (m32, m16) = (
            matrix_of(&file, file.tensor("m32").unwrap(), 3, 64).unwrap(),
            matrix_of(&file, file.tensor("m16").unwrap(), 3, 64).unwrap(),
        );
        let mut scratch = Vec::new();
        let rows = m32.rows_f32(bytes, 1, 2, &mut scratch);
        assert!(
            span.contains(&(rows.as_ptr() as *const u8)),
            "read in place"
        );
        assert_eq!(rows, &values[64..]);
        let mut scratch = Vec::new();
        let rows = m16.rows_f32(bytes, 1, 2, &mut scratch).to_vec();
        assert_eq!(scratch.len(), 128);
        assert_eq!(rows, &values[64..], "these values are exact in f16");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Rows of aprender's layouts: a Q4_K matrix whose rows are padded to whole
    /// super-blocks keeps each row's first `cols` values; APR_Q4 blocks and the APR_Q8
    /// scale span rows, and a row decodes to the same values as the whole tensor.
    #[test]
    fn padded_and_row_spanning_layouts_decode_by_row() {
        let (rows, cols) = (3usize, 300usize);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let padded: Vec<u8> = values
            .chunks(cols)
            .flat_map(|r| {
                let mut row = r.to_vec();
                row.resize(512, 0.0);
                quant::quantize(GgmlType::Q4_K, &row).unwrap()
            })
            .collect();
        let mut w = AprWriter::new(&serde_json::json!({})).unwrap();
        let dims = [rows as u64, cols as u64];
        w.tensor("k", DType::Ggml(GgmlType::Q4_K), &dims, padded.clone())
            .unwrap();
        w.tensor("q4", DType::AprQ4, &dims, quant::aprq::quantize_q4(&values))
            .unwrap();
        w.tensor("q8", DType::AprQ8, &dims, quant::aprq::quantize_q8(&values))
            .unwrap();
        let file = AprFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        for name in ["k", "q4", "q8"] {
            let t = file.tensor(name).unwrap();
            let m = matrix_of(&file, t, rows, cols).unwrap();
            let mut whole = Vec::new();
            let all = m.rows_f32(file.bytes(), 0, rows, &mut whole).to_vec();
            assert_eq!(all.len(), rows * cols);
            for r in 0..rows {
                let mut one = Vec::new();
                assert_eq!(
                    m.rows_f32(file.bytes(), r, 1, &mut one),
                    &all[r * cols..][..cols],
                    "{name} row {r}"
                );
            }
            if name == "k" {
                let first = quant::dequantize(GgmlType::Q4_K, &padded[..288], 512).unwrap();
                assert_eq!(&all[..cols], &first[..cols]);
            }
        }
    }
}
