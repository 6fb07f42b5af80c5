//! Hyper-parameters of a decoder-only transformer, read from GGUF metadata with the
//! architecture and every required key checked first, so a wrong file fails at load with a
//! message naming the key rather than deep inside a matrix product.

use crate::gguf::{GgufError, GgufFile};

/// Supported architectures (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 2/3, TinyLlama, SmolLM2: no attention biases, RoPE on adjacent pairs.
    Llama,
    /// Qwen2, Qwen2.5: q/k/v biases, RoPE on the two halves of each head (NeoX style).
    Qwen2,
}

impl Arch {
    /// The metadata prefix and name of the architecture.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// How this architecture pairs the dimensions RoPE rotates, as llama.cpp applies it.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Adjacent,
            Arch::Qwen2 => RopeStyle::Halves,
        }
    }
}

/// Which dimensions of a head RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])` (llama.cpp `LLAMA_ROPE_TYPE_NORM`).
    Adjacent,
    /// `(x[i], x[i + n/2])` (llama.cpp `LLAMA_ROPE_TYPE_NEOX`).
    Halves,
}

/// Typed hyper-parameters of a model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Number of decoder blocks.
    pub n_layer: usize,
    /// Residual stream width (`embedding_length`).
    pub n_embd: usize,
    /// FFN inner width (`feed_forward_length`).
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Width of one head (`n_embd / n_head`).
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
}

impl ModelConfig {
    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

fn usize_key(f: &GgufFile, key: &str) -> Result<usize, GgufError> {
    let v = f.require(key)?;
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0 && n <= 1 << 24)
        .ok_or_else(|| GgufError::Metadata {
            key: key.into(),
            reason: format!(
                "expected a positive integer up to 2^24, found {}",
                v.summary()
            ),
        })
}

fn f32_key(f: &GgufFile, key: &str, default: Option<f32>) -> Result<f32, GgufError> {
    match (f.get(key), default) {
        (None, Some(d)) => Ok(d),
        (None, None) => Err(GgufError::Metadata {
            key: key.into(),
            reason: "required key is missing".into(),
        }),
        (Some(v), _) => v
            .as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| GgufError::Metadata {
                key: key.into(),
                reason: format!("expected a positive number, found {}", v.summary()),
            }),
    }
}

impl TryFrom<&GgufFile> for ModelConfig {
    type Error = GgufError;

    fn try_from(f: &GgufFile) -> Result<Self, GgufError> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(GgufError::Metadata {
                    key: "general.architecture".into(),
                    reason: format!("architecture {other:?} is not supported (llama, qwen2)"),
                });
            }
        };
        let p = arch.name();
        let k = |s: &str| format!("{p}.{s}");
        let required = [
            "block_count",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.layer_norm_rms_epsilon",
        ];
        if let Some(missing) = required.iter().find(|s| f.get(&k(s)).is_none()) {
            return Err(GgufError::Metadata {
                key: k(missing),
                reason: format!("required key for {p} is missing"),
            });
        }
        let n_embd = usize_key(f, &k("embedding_length"))?;
        let n_head = usize_key(f, &k("attention.head_count"))?;
        let n_head_kv = match f.get(&k("attention.head_count_kv")) {
            None => n_head,
            Some(_) => usize_key(f, &k("attention.head_count_kv"))?,
        };
        if n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            return Err(GgufError::Metadata {
                key: k("attention.head_count_kv"),
                reason: format!(
                    "width {n_embd}, {n_head} heads and {n_head_kv} KV heads do not divide evenly"
                ),
            });
        }
        let head_dim = n_embd / n_head;
        let rope_dim = match f.get(&k("rope.dimension_count")) {
            None => head_dim,
            Some(_) => usize_key(f, &k("rope.dimension_count"))?,
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(GgufError::Metadata {
                key: k("rope.dimension_count"),
                reason: format!("{rope_dim} must be even and at most the head width {head_dim}"),
            });
        }
        let vocab_size = match f.get(&k("vocab_size")) {
            Some(_) => usize_key(f, &k("vocab_size"))?,
            None => f
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| GgufError::Metadata {
                    key: k("vocab_size"),
                    reason: "missing, and no tokenizer.ggml.tokens to count".into(),
                })?,
        };
        Ok(ModelConfig {
            arch,
            n_layer: usize_key(f, &k("block_count"))?,
            n_embd,
            n_ff: usize_key(f, &k("feed_forward_length"))?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_theta: f32_key(f, &k("rope.freq_base"), Some(10_000.0))?,
            rms_eps: f32_key(f, &k("attention.layer_norm_rms_epsilon"), None)?,
            vocab_size,
            context_length: match f.get(&k("context_length")) {
                None => 2048,
                Some(_) => usize_key(f, &k("context_length"))?,
            },
        })
    }
}
