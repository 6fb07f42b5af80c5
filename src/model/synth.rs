//! Synthetic models at the shapes people ship (Qwen2 0.5B to 7B, Llama 3 1B to 8B): random
//! weights quantized with pv's own quantizers in a mix like llama.cpp's Q4_K_M, and a
//! byte-level vocabulary of the real size. They cost what the real models cost to load,
//! convert, trace and check, so `scripts/scaling.sh` measures how pv grows with parameters
//! without downloading them.
//!
//! The file is a pure function of the shape: every row is generated from a seed derived from
//! its tensor and row, rows are generated in parallel and written in order, so any machine
//! writes the same bytes (and a contract can pin their digest). Memory stays at a few bands
//! of rows whatever the size.

use super::tensors::{Need, Role, TENSORS};
use super::{Arch, Hyper, ModelConfig, ModelError};
use crate::gguf::{GgufError, GgufWriter, Value, ValueType};
use crate::quant::GgmlType;
use crate::quant::{self, synth::SplitMix};

/// The shape of a model family member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Name, as `pv synth` takes it.
    pub name: &'static str,
    /// Architecture (llama or qwen2).
    pub arch: Arch,
    /// Residual width.
    pub n_embd: usize,
    /// FFN inner width.
    pub n_ff: usize,
    /// Decoder blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Whether the output head is the token embedding.
    pub tied: bool,
    /// RoPE base.
    pub rope_theta: f32,
}

/// The shapes `pv synth` writes: the published hyper-parameters of each model.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "qwen2-0.5b",
        arch: Arch::Qwen2,
        n_embd: 896,
        n_ff: 4864,
        n_layer: 24,
        n_head: 14,
        n_head_kv: 2,
        vocab: 151936,
        tied: true,
        rope_theta: 1e6,
    },
    Shape {
        name: "llama-1b",
        arch: Arch::Llama,
        n_embd: 2048,
        n_ff: 8192,
        n_layer: 16,
        n_head: 32,
        n_head_kv: 8,
        vocab: 128256,
        tied: true,
        rope_theta: 5e5,
    },
    Shape {
        name: "qwen2-1.5b",
        arch: Arch::Qwen2,
        n_embd: 1536,
        n_ff: 8960,
        n_layer: 28,
        n_head: 12,
        n_head_kv: 2,
        vocab: 151936,
        tied: true,
        rope_theta: 1e6,
    },
    Shape {
        name: "llama-3b",
        arch: Arch::Llama,
        n_embd: 3072,
        n_ff: 8192,
        n_layer: 28,
        n_head: 24,
        n_head_kv: 8,
        vocab: 128256,
        tied: true,
        rope_theta: 5e5,
    },
    Shape {
        name: "qwen2-7b",
        arch: Arch::Qwen2,
        n_embd: 3584,
        n_ff: 18944,
        n_layer: 28,
        n_head: 28,
        n_head_kv: 4,
        vocab: 152064,
        tied: false,
        rope_theta: 1e6,
    },
    Shape {
        name: "llama-8b",
        arch: Arch::Llama,
        n_embd: 4096,
        n_ff: 14336,
        n_layer: 32,
        n_head: 32,
        n_head_kv: 8,
        vocab: 128256,
        tied: false,
        rope_theta: 5e5,
    },
];

impl Shape {
    /// The shape called `name`.
    pub fn by_name(name: &str) -> Option<&'static Shape> {
        SHAPES.iter().find(|s| s.name == name)
    }

    /// Parameters (weights of every tensor).
    pub fn parameters(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|t| t.1.iter().product::<u64>())
            .sum()
    }

    /// The hyper-parameters of the shape, as a loaded file of it gives them.
    pub fn config(&self) -> ModelConfig {
        let head_dim = self.n_embd / self.n_head;
        ModelConfig {
            arch: self.arch,
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim,
            rope_dim: head_dim,
            rope_theta: self.rope_theta,
            rms_eps: 1e-6,
            vocab_size: self.vocab,
            context_length: 4096,
            sliding_window: 0,
            rope_theta_swa: None,
            logit_softcap: None,
        }
    }

    /// Every tensor `(name, dims with the row length first, type)`, in file order: the
    /// block's tensors as the tensor table lists those the family requires, in llama.cpp's
    /// Q4_K_M mix.
    pub fn tensors(&self) -> Vec<(String, Vec<u64>, GgmlType)> {
        let cfg = self.config();
        let spec = self.arch.spec();
        let d = self.n_embd as u64;
        let mut t = vec![(
            "token_embd.weight".to_string(),
            vec![d, self.vocab as u64],
            mix(d, false),
        )];
        for l in 0..self.n_layer {
            let more = more_bits(l, self.n_layer);
            for s in TENSORS.iter().filter(|s| s.need(spec) == Need::Required) {
                let rows = s.rows.of(&cfg) as u64;
                t.push(match s.cols {
                    None => (s.name(l), vec![rows], GgmlType::F32),
                    Some(cols) => {
                        let cols = cols.of(&cfg) as u64;
                        let more = more && matches!(s.role, Role::Wv | Role::FfnDown);
                        (s.name(l), vec![cols, rows], mix(cols, more))
                    }
                });
            }
        }
        t.push(("output_norm.weight".into(), vec![d], GgmlType::F32));
        if !self.tied {
            t.push((
                "output.weight".into(),
                vec![d, self.vocab as u64],
                mix(d, true),
            ));
        }
        t
    }

    /// The GGUF metadata: hyper-parameters and a byte-level vocabulary of `vocab` tokens.
    fn metadata(&self) -> GgufWriter {
        let (cfg, arch) = (self.config(), self.arch);
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::String(arch.name().into()));
        w.meta(
            "general.name",
            Value::String(format!("pv synthetic {}", self.name)),
        );
        use Hyper::*;
        for (h, v) in [
            (NLayer, cfg.n_layer),
            (NEmbd, cfg.n_embd),
            (NFf, cfg.n_ff),
            (NHead, cfg.n_head),
            (NHeadKv, cfg.n_head_kv),
            (ContextLength, cfg.context_length),
            (VocabSize, cfg.vocab_size),
        ] {
            w.meta(&h.gguf_key(arch), Value::U32(v as u32));
        }
        w.meta(&RmsEps.gguf_key(arch), Value::F32(cfg.rms_eps));
        w.meta(&RopeTheta.gguf_key(arch), Value::F32(cfg.rope_theta));
        // GPT-2's byte-level spelling of the printable ASCII bytes ('Ġ' is the space), so
        // any ASCII prompt tokenises, then filler tokens up to the real vocabulary size.
        let tokens: Vec<Value> = std::iter::once("\u{120}".to_string())
            .chain((0x21u8..=0x7e).map(|b| (b as char).to_string()))
            .chain((95..self.vocab).map(|i| format!("<synthetic {i}>")))
            .map(Value::String)
            .collect();
        w.meta("tokenizer.ggml.model", Value::String("gpt2".into()));
        w.meta("tokenizer.ggml.pre", Value::String("gpt2".into()));
        w.meta(
            "tokenizer.ggml.tokens",
            Value::array(ValueType::String, tokens),
        );
        w.meta(
            "tokenizer.ggml.merges",
            Value::array(ValueType::String, vec![]),
        );
        w
    }
}

/// llama.cpp's Q4_K_M choice: Q6_K for the output head and, in the layers `more` marks,
/// for attn_v and ffn_down; Q4_K elsewhere. A row length that is not whole 256-value
/// super-blocks falls back as llama.cpp does (Q4_K to Q5_0, Q6_K to Q8_0).
fn mix(cols: u64, more: bool) -> GgmlType {
    let whole = cols.is_multiple_of(crate::quant::QK_K as u64);
    match (more, whole) {
        (false, true) => GgmlType::Q4_K,
        (true, true) => GgmlType::Q6_K,
        (false, false) => GgmlType::Q5_0,
        (true, false) => GgmlType::Q8_0,
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// between.
fn more_bits(layer: usize, n: usize) -> bool {
    layer < n / 8 || layer >= 7 * n / 8 || (layer as isize - (n / 8) as isize) % 3 == 2
}

/// One tensor's bytes, band by band, to `sink`. Matrices hold uniform values of standard
/// deviation 1/sqrt(row length) (so activations keep their scale through the layers);
/// norms are near 1; biases small.
fn generate(
    index: usize,
    name: &str,
    dims: &[u64],
    ty: GgmlType,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let cols = dims[0] as usize;
    let rows: usize = dims[1..].iter().product::<u64>() as usize;
    let vector = dims.len() == 1;
    let amplitude = (3.0f32).sqrt() / (cols as f32).sqrt();
    let encode = |r0: usize, r1: usize| {
        let mut values = vec![0f32; (r1 - r0) * cols];
        for (r, row) in (r0..r1).zip(values.chunks_exact_mut(cols)) {
            let mut rng = SplitMix(((index as u64) << 32) ^ r as u64 ^ 0x5eed);
            for v in row.iter_mut() {
                *v = if !vector {
                    rng.uniform() * amplitude
                } else if name.ends_with("norm.weight") {
                    1.0 + 0.1 * rng.uniform()
                } else {
                    0.02 * rng.uniform()
                };
            }
        }
        quant::quantize(ty, &values).map_err(|e| {
            ModelError::from(GgufError::Tensor {
                name: name.into(),
                reason: e.to_string(),
            })
        })
    };
    super::convert::in_bands(rows, cols, &encode, sink)
}

/// Writes the synthetic model of `shape` to `path` (atomically, streamed);
/// `progress(done, total)` counts bytes of tensor data.
pub fn write_synthetic(
    shape: &Shape,
    path: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ModelError> {
    let tensors = shape.tensors();
    let total: u64 = tensors
        .iter()
        .map(|(_, d, t)| t.row_bytes(d.iter().product::<u64>() as usize).unwrap_or(0) as u64)
        .sum();
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = shape.metadata().stream(path, &tensors)?;
    let mut done = 0;
    progress(0, total);
    for (i, (name, dims, ty)) in tensors.iter().enumerate() {
        generate(i, name, dims, *ty, &mut |b| {
            out.write(b).map_err(io)?;
            done += b.len() as u64;
            progress(done, total);
            Ok(())
        })?;
    }
    out.finish(false).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_their_published_sizes() {
        let billions = |n: &str| Shape::by_name(n).unwrap().parameters() as f64 / 1e9;
        // Published parameter counts: Qwen2-0.5B 0.49, 1.5B 1.54, 7B 7.62; Llama 3.2 1B
        // 1.24, 3B 3.21; Llama 3.1 8B 8.03.
        for (n, want) in [
            ("qwen2-0.5b", 0.49),
            ("qwen2-1.5b", 1.54),
            ("qwen2-7b", 7.62),
            ("llama-1b", 1.24),
            ("llama-3b", 3.21),
            ("llama-8b", 8.03),
        ] {
            assert!(
                (billions(n) - want).abs() / want < 0.02,
                "{n}: {}",
                billions(n)
            );
        }
        assert!(more_bits(0, 28) && more_bits(27, 28) && !more_bits(4, 28) && more_bits(5, 28));
    }
}
