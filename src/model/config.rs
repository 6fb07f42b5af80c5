//! Hyper-parameters of a decoder-only transformer, read from GGUF metadata with the
//! architecture and every required key checked first, so a wrong file fails at load with a
//! message naming the key rather than deep inside a matrix product.

use crate::gguf::{GgufError, GgufFile};

use super::arch::Arch;

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
    /// Width of one head's keys, values and queries (`attention.key_length`, by default
    /// `n_embd / n_head`).
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
    /// Positions a sliding-window layer attends to (`attention.sliding_window`); 0 when
    /// every layer attends globally.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sliding_window: usize,
    /// RoPE base of the sliding-window layers (`rope.freq_base_swa`, llama.cpp's default
    /// 10,000); the global layers use `rope_theta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta_swa: Option<f32>,
    /// Final logit soft-capping `c * tanh(logits / c)` (`final_logit_softcapping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_softcap: Option<f32>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ModelConfig {
    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of the Q projection (all query heads).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// The family's table row.
    pub fn spec(&self) -> &'static super::arch::ArchSpec {
        self.arch.spec()
    }

    /// Whether layer `l` attends through the sliding window (llama.cpp's pattern: the last
    /// layer of each group of `swa_pattern` is global).
    pub fn is_swa(&self, l: usize) -> bool {
        let n = self.spec().swa_pattern;
        self.sliding_window > 0 && n > 0 && l % n < n - 1
    }

    /// The RoPE base of layer `l`.
    pub fn rope_theta_at(&self, l: usize) -> f32 {
        if self.is_swa(l) {
            self.rope_theta_swa.unwrap_or(10_000.0)
        } else {
            self.rope_theta
        }
    }

    /// The checks every format shares, before any buffer is sized from these numbers: counts
    /// positive and at most 2^24, heads that divide the width and each other, a RoPE width that
    /// is even and within a head, and an epsilon and base that are positive and finite.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use Hyper::*;
        let err = |param, reason: String| Err(ConfigError { param, reason });
        for (param, n) in [
            (NLayer, self.n_layer),
            (NEmbd, self.n_embd),
            (NFf, self.n_ff),
            (NHead, self.n_head),
            (NHeadKv, self.n_head_kv),
            (VocabSize, self.vocab_size),
            (ContextLength, self.context_length),
            (RopeDim, self.rope_dim),
        ] {
            if n == 0 || n > MAX_COUNT {
                return err(param, format!("{n} is not a count from 1 to 2^24"));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return err(
                NHeadKv,
                format!(
                    "{} KV heads do not divide {} heads",
                    self.n_head_kv, self.n_head
                ),
            );
        }
        if self.head_dim == 0 || self.q_dim() > MAX_COUNT {
            return err(
                HeadDim,
                format!(
                    "{} heads of {} is not a width from 1 to 2^24",
                    self.n_head, self.head_dim
                ),
            );
        }
        if self.sliding_window > MAX_COUNT {
            return err(
                SlidingWindow,
                format!("{} is more than 2^24", self.sliding_window),
            );
        }
        if !self.rope_dim.is_multiple_of(2) || self.rope_dim > self.head_dim {
            return err(
                RopeDim,
                format!(
                    "{} must be even and at most the head width {}",
                    self.rope_dim, self.head_dim
                ),
            );
        }
        for (param, x) in [
            (RopeTheta, Some(self.rope_theta)),
            (RmsEps, Some(self.rms_eps)),
            (RopeThetaSwa, self.rope_theta_swa),
            (LogitSoftcap, self.logit_softcap),
        ]
        .into_iter()
        .filter_map(|(p, x)| Some((p, x?)))
        {
            if !(x.is_finite() && x > 0.0) {
                return err(param, format!("{x} is not a positive finite number"));
            }
        }
        Ok(())
    }

    /// The tensor table agrees with the numbers, checked before any tensor is read: the
    /// `blk.N.*` groups are exactly layers 0..n_layer, and the embedding has `vocab_size`
    /// rows. `tensors` gives each name with its number of rows (the outermost dimension).
    pub fn check_tensors<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<(), ConfigError> {
        let mut blocks = std::collections::BTreeSet::new();
        let mut embd_rows = None;
        for (name, rows) in tensors {
            if let Some(rest) = name.strip_prefix("blk.")
                && let Some((n, _)) = rest.split_once('.')
                && let Ok(n) = n.parse::<u64>()
            {
                blocks.insert(n);
            }
            if name == "token_embd.weight" {
                embd_rows = Some(rows);
            }
        }
        let expected = self.n_layer as u64;
        if blocks.len() as u64 != expected || blocks.last().is_some_and(|&l| l + 1 != expected) {
            return Err(ConfigError {
                param: Hyper::NLayer,
                reason: format!(
                    "{} layers, but the tensor table has blk groups {}",
                    self.n_layer,
                    match (blocks.first(), blocks.last()) {
                        (Some(a), Some(b)) => format!("{a}..={b} ({} of them)", blocks.len()),
                        _ => "none".to_string(),
                    }
                ),
            });
        }
        match embd_rows {
            Some(r) if r != self.vocab_size as u64 => Err(ConfigError {
                param: Hyper::VocabSize,
                reason: format!(
                    "{} tokens, but token_embd.weight has {r} rows",
                    self.vocab_size
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// The largest count (layers, widths, heads, vocabulary, context) pv accepts: 2^24.
pub const MAX_COUNT: usize = 1 << 24;

/// A hyper-parameter, with the name each format gives it (one table for both formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hyper {
    /// Decoder blocks.
    NLayer,
    /// Residual width.
    NEmbd,
    /// FFN inner width.
    NFf,
    /// Query heads.
    NHead,
    /// Key/value heads.
    NHeadKv,
    /// Width of one head.
    HeadDim,
    /// Width of one head's values (must equal the keys').
    HeadDimV,
    /// Sliding-window length.
    SlidingWindow,
    /// RoPE base of the sliding-window layers.
    RopeThetaSwa,
    /// Final logit soft-cap.
    LogitSoftcap,
    /// RoPE'd dimensions of a head.
    RopeDim,
    /// RoPE base.
    RopeTheta,
    /// RMSNorm epsilon.
    RmsEps,
    /// Vocabulary size.
    VocabSize,
    /// Context length.
    ContextLength,
}

/// One hyper-parameter's names: the GGUF key (after the architecture's prefix), the field
/// of pv's first APR dialect (`hyperparameters.*`), and aprender's key with the aliases its
/// readers accept (realizar's `AprMetadata` serde aliases), first match wins.
struct Keys {
    hyper: Hyper,
    gguf: &'static str,
    pv: &'static str,
    aprender: &'static str,
    aliases: &'static [&'static str],
}

const fn keys(
    hyper: Hyper,
    gguf: &'static str,
    pv: &'static str,
    aprender: &'static str,
    aliases: &'static [&'static str],
) -> Keys {
    Keys {
        hyper,
        gguf,
        pv,
        aprender,
        aliases,
    }
}

/// Every hyper-parameter's names in every format, one row each. Keys aprender has no name
/// for (the sliding window, its RoPE base, soft-capping) take the Hugging Face config's.
const KEYS: [Keys; 15] = {
    use Hyper::*;
    [
        keys(
            NLayer,
            "block_count",
            "n_layer",
            "num_layers",
            &["num_hidden_layers", "n_layers", "n_layer"],
        ),
        keys(
            NEmbd,
            "embedding_length",
            "n_embd",
            "hidden_size",
            &["hidden_dim", "d_model", "n_embd"],
        ),
        keys(
            NFf,
            "feed_forward_length",
            "n_ff",
            "intermediate_size",
            &["intermediate_dim", "ffn_dim", "n_inner"],
        ),
        keys(
            NHead,
            "attention.head_count",
            "n_head",
            "num_heads",
            &["num_attention_heads", "n_heads", "n_head"],
        ),
        keys(
            NHeadKv,
            "attention.head_count_kv",
            "n_head_kv",
            "num_kv_heads",
            &["num_key_value_heads", "n_kv_heads"],
        ),
        keys(HeadDim, "attention.key_length", "head_dim", "head_dim", &[]),
        keys(
            HeadDimV,
            "attention.value_length",
            "head_dim",
            "head_dim",
            &[],
        ),
        keys(
            SlidingWindow,
            "attention.sliding_window",
            "sliding_window",
            "sliding_window",
            &[],
        ),
        keys(
            RopeThetaSwa,
            "rope.freq_base_swa",
            "rope_theta_swa",
            "rope_local_base_freq",
            &["rope_theta_swa"],
        ),
        keys(
            LogitSoftcap,
            "final_logit_softcapping",
            "logit_softcap",
            "final_logit_softcapping",
            &[],
        ),
        keys(RopeDim, "rope.dimension_count", "rope_dim", "rope_dim", &[]),
        keys(RopeTheta, "rope.freq_base", "rope_theta", "rope_theta", &[]),
        keys(
            RmsEps,
            "attention.layer_norm_rms_epsilon",
            "rms_eps",
            "rms_norm_eps",
            &["layer_norm_eps", "norm_eps"],
        ),
        keys(
            VocabSize,
            "vocab_size",
            "vocab_size",
            "vocab_size",
            &["n_vocab"],
        ),
        keys(
            ContextLength,
            "context_length",
            "context_length",
            "max_position_embeddings",
            &["max_seq_len", "context_length", "n_ctx"],
        ),
    ]
};

impl Hyper {
    fn keys(self) -> &'static Keys {
        KEYS.iter()
            .find(|k| k.hyper == self)
            .expect("every hyper-parameter has a row")
    }

    /// The GGUF metadata key (under the architecture's prefix).
    pub fn gguf_key(self, arch: Arch) -> String {
        format!("{}.{}", arch.name(), self.keys().gguf)
    }

    /// The field of the `hyperparameters` object of pv's first APR dialect.
    pub fn apr_field(self) -> &'static str {
        self.keys().pv
    }

    /// aprender's metadata key, which pv writes.
    pub fn aprender_key(self) -> &'static str {
        self.keys().aprender
    }

    /// aprender's key and then the aliases readers accept for it, in the order they are
    /// tried.
    pub fn aprender_keys(self) -> impl Iterator<Item = &'static str> {
        let k = self.keys();
        std::iter::once(k.aprender).chain(k.aliases.iter().copied())
    }
}

/// Why hyper-parameters cannot describe a model: the parameter and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The parameter.
    pub param: Hyper,
    /// What is wrong.
    pub reason: String,
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
        let arch = Arch::from_name(arch_name).ok_or_else(|| GgufError::Metadata {
            key: "general.architecture".into(),
            reason: format!(
                "architecture {arch_name:?} is not supported ({})",
                Arch::names()
            ),
        })?;
        // Every key by its row of KEYS: no GGUF key is spelled twice.
        use Hyper::*;
        let k = |h: Hyper| h.gguf_key(arch);
        let has = |h: Hyper| f.get(&k(h)).is_some();
        let count = |h: Hyper| usize_key(f, &k(h));
        if let Some(missing) = [NLayer, NEmbd, NFf, NHead, RmsEps]
            .into_iter()
            .find(|&h| !has(h))
        {
            return Err(GgufError::Metadata {
                key: k(missing),
                reason: format!("required key for {} is missing", arch.name()),
            });
        }
        let n_embd = count(NEmbd)?;
        let n_head = count(NHead)?;
        let n_head_kv = if has(NHeadKv) {
            count(NHeadKv)?
        } else {
            n_head
        };
        let head_dim = match has(HeadDim) {
            true => count(HeadDim)?,
            false if n_embd.is_multiple_of(n_head) => n_embd / n_head,
            false => {
                return Err(GgufError::Metadata {
                    key: k(NHead),
                    reason: format!(
                        "{n_head} heads do not divide the width {n_embd}, and no \
                         {} gives the head width",
                        k(HeadDim)
                    ),
                });
            }
        };
        if let Some(v) = f.get(&k(HeadDimV))
            && v.as_u64() != Some(head_dim as u64)
        {
            return Err(GgufError::Metadata {
                key: k(HeadDimV),
                reason: format!(
                    "{}: pv runs heads whose values are as wide as their keys ({head_dim})",
                    v.summary()
                ),
            });
        }
        let optional_f32 = |h: Hyper| match has(h) {
            false => Ok(None),
            true => f32_key(f, &k(h), None).map(Some),
        };
        let vocab_size = match has(VocabSize) {
            true => count(VocabSize)?,
            false => f
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| GgufError::Metadata {
                    key: k(VocabSize),
                    reason: "missing, and no tokenizer.ggml.tokens to count".into(),
                })?,
        };
        let config = ModelConfig {
            arch,
            n_layer: count(NLayer)?,
            n_embd,
            n_ff: count(NFf)?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim: if has(RopeDim) {
                count(RopeDim)?
            } else {
                head_dim
            },
            rope_theta: f32_key(f, &k(RopeTheta), Some(10_000.0))?,
            rms_eps: f32_key(f, &k(RmsEps), None)?,
            vocab_size,
            context_length: if has(ContextLength) {
                count(ContextLength)?
            } else {
                2048
            },
            sliding_window: match has(SlidingWindow) {
                true if arch.spec().swa_pattern > 0 => count(SlidingWindow)?,
                _ => 0,
            },
            rope_theta_swa: optional_f32(RopeThetaSwa)?,
            logit_softcap: optional_f32(LogitSoftcap)?,
        };
        let named = |e: ConfigError| GgufError::Metadata {
            key: e.param.gguf_key(arch),
            reason: e.reason,
        };
        config.validate().map_err(named)?;
        config
            .check_tensors(f.tensors.iter().map(|t| {
                // GGUF lists the row length first: the rows are the outermost dimension.
                (t.name.as_str(), t.dims.last().copied().unwrap_or(0))
            }))
            .map_err(named)?;
        Ok(config)
    }
}
