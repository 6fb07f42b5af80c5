//! The tensors of a model as data: one table of the tensors a decoder block holds, with
//! each tensor's GGUF and Hugging Face names, its shape in hyper-parameters and when it is
//! present, and the block's weights loaded through it. Both engines load their weights
//! through [`TENSORS`], so a family's tensors and shapes are written once.

use super::arch::ArchSpec;
use super::config::ModelConfig;

/// A weight of one decoder block (or of the model), named for its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// RMSNorm before attention.
    AttnNorm,
    /// Query projection.
    Wq,
    /// Key projection.
    Wk,
    /// Value projection.
    Wv,
    /// Query bias.
    Bq,
    /// Key bias.
    Bk,
    /// Value bias.
    Bv,
    /// Per-head RMSNorm of the queries.
    QNorm,
    /// Per-head RMSNorm of the keys.
    KNorm,
    /// Attention output projection.
    Wo,
    /// RMSNorm of the attention output.
    AttnPostNorm,
    /// RMSNorm before the FFN.
    FfnNorm,
    /// FFN gate projection.
    FfnGate,
    /// FFN up projection.
    FfnUp,
    /// FFN down projection.
    FfnDown,
    /// RMSNorm of the FFN output.
    FfnPostNorm,
}

/// When a block tensor is in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// In every architecture.
    Always,
    /// Required when the architecture's flag is set, else read if present (biases).
    Bias,
    /// Only in architectures with per-head q/k norms.
    QkNorm,
    /// Only in architectures with post-norms.
    PostNorm,
}

/// A tensor's width in terms of the hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Residual width.
    Embd,
    /// All query heads (`n_head * head_dim`).
    Q,
    /// All key/value heads (`n_head_kv * head_dim`).
    Kv,
    /// One head.
    Head,
    /// FFN inner width.
    Ff,
    /// Vocabulary (the logits).
    Vocab,
}

impl Dim {
    /// The width for `cfg`.
    pub fn of(self, cfg: &ModelConfig) -> usize {
        match self {
            Dim::Embd => cfg.n_embd,
            Dim::Q => cfg.q_dim(),
            Dim::Kv => cfg.kv_dim(),
            Dim::Head => cfg.head_dim,
            Dim::Ff => cfg.n_ff,
            Dim::Vocab => cfg.vocab_size,
        }
    }
}

/// One block tensor: its role, its name after `blk.N.` (GGUF, and APR files imported from
/// GGUF) and after `model.layers.N.` (Hugging Face, and APR files imported from SafeTensors
/// or of Qwen), its shape as (outputs, inputs) for a matrix or (length, none) for a vector,
/// and when it is present.
#[derive(Clone, Copy, Debug)]
pub struct TensorSpec {
    /// Role.
    pub role: Role,
    /// GGUF name after `blk.N.`.
    pub suffix: &'static str,
    /// Hugging Face name after `model.layers.N.`.
    pub hf: &'static str,
    /// The Hugging Face name in families with post-norms, where it differs (Gemma's FFN
    /// pre-norm is `pre_feedforward_layernorm`, and its `post_attention_layernorm` is the
    /// attention output's norm, not the FFN's).
    pub hf_post_norms: Option<&'static str>,
    /// Outputs (rows), or the length of a vector.
    pub rows: Dim,
    /// Inputs (columns) of a matrix; `None` for a vector.
    pub cols: Option<Dim>,
    /// When it is present.
    pub presence: Presence,
}

const fn t(
    role: Role,
    (suffix, hf): (&'static str, &'static str),
    rows: Dim,
    cols: Option<Dim>,
    presence: Presence,
) -> TensorSpec {
    TensorSpec {
        role,
        suffix,
        hf,
        hf_post_norms: None,
        rows,
        cols,
        presence,
    }
}

/// Every tensor of a decoder block, in the order the block uses them.
pub const TENSORS: [TensorSpec; 16] = {
    use Dim::*;
    use Presence::*;
    use Role::*;
    [
        t(
            AttnNorm,
            ("attn_norm.weight", "input_layernorm.weight"),
            Embd,
            None,
            Always,
        ),
        t(
            Wq,
            ("attn_q.weight", "self_attn.q_proj.weight"),
            Q,
            Some(Embd),
            Always,
        ),
        t(
            Wk,
            ("attn_k.weight", "self_attn.k_proj.weight"),
            Kv,
            Some(Embd),
            Always,
        ),
        t(
            Wv,
            ("attn_v.weight", "self_attn.v_proj.weight"),
            Kv,
            Some(Embd),
            Always,
        ),
        t(Bq, ("attn_q.bias", "self_attn.q_proj.bias"), Q, None, Bias),
        t(Bk, ("attn_k.bias", "self_attn.k_proj.bias"), Kv, None, Bias),
        t(Bv, ("attn_v.bias", "self_attn.v_proj.bias"), Kv, None, Bias),
        t(
            QNorm,
            ("attn_q_norm.weight", "self_attn.q_norm.weight"),
            Head,
            None,
            QkNorm,
        ),
        t(
            KNorm,
            ("attn_k_norm.weight", "self_attn.k_norm.weight"),
            Head,
            None,
            QkNorm,
        ),
        t(
            Wo,
            ("attn_output.weight", "self_attn.o_proj.weight"),
            Embd,
            Some(Q),
            Always,
        ),
        t(
            AttnPostNorm,
            (
                "post_attention_norm.weight",
                "post_attention_layernorm.weight",
            ),
            Embd,
            None,
            PostNorm,
        ),
        TensorSpec {
            hf_post_norms: Some("pre_feedforward_layernorm.weight"),
            ..t(
                FfnNorm,
                ("ffn_norm.weight", "post_attention_layernorm.weight"),
                Embd,
                None,
                Always,
            )
        },
        t(
            FfnGate,
            ("ffn_gate.weight", "mlp.gate_proj.weight"),
            Ff,
            Some(Embd),
            Always,
        ),
        t(
            FfnUp,
            ("ffn_up.weight", "mlp.up_proj.weight"),
            Ff,
            Some(Embd),
            Always,
        ),
        t(
            FfnDown,
            ("ffn_down.weight", "mlp.down_proj.weight"),
            Embd,
            Some(Ff),
            Always,
        ),
        t(
            FfnPostNorm,
            ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
            Embd,
            None,
            PostNorm,
        ),
    ]
};

/// The tensors outside the blocks, by GGUF name and Hugging Face name (`rope_freqs` has
/// none).
pub const MODEL_TENSORS: [(&str, Option<&str>); 4] = [
    ("token_embd.weight", Some("model.embed_tokens.weight")),
    ("output_norm.weight", Some("model.norm.weight")),
    ("output.weight", Some("lm_head.weight")),
    ("rope_freqs.weight", None),
];

/// The GGUF name of the tensor a file calls `name`, whether it uses GGUF names
/// (`blk.3.ffn_down.weight`) or Hugging Face ones (`model.layers.3.mlp.down_proj.weight`,
/// `lm_head.weight`): `None` for a tensor that is not part of a `spec` model.
pub fn gguf_name(name: &str, spec: &ArchSpec) -> Option<String> {
    if let Some((gguf, _)) = MODEL_TENSORS
        .iter()
        .find(|(g, hf)| *g == name || *hf == Some(name))
    {
        return Some(gguf.to_string());
    }
    let (layer, rest) = name
        .strip_prefix("blk.")
        .or_else(|| name.strip_prefix("model.layers."))?
        .split_once('.')?;
    // Only the plain spelling of a number ("3", not "03" or "+3"), so two names cannot
    // claim one tensor.
    let layer: usize = layer
        .parse()
        .ok()
        .filter(|n: &usize| n.to_string() == layer)?;
    let hf = name.starts_with("model.layers.");
    TENSORS
        .iter()
        .filter(|t| t.need(spec) != Need::Absent)
        .find(|t| {
            if hf {
                t.hf_suffix(spec) == rest
            } else {
                t.suffix == rest
            }
        })
        .map(|t| t.name(layer))
}

/// Whether a block tensor must be present, may be, or is not part of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Must be present.
    Required,
    /// Read when present.
    Optional,
    /// Not part of this family (ignored).
    Absent,
}

impl TensorSpec {
    /// The row of `role`.
    pub fn of(role: Role) -> &'static TensorSpec {
        TENSORS
            .iter()
            .find(|s| s.role == role)
            .expect("every role has a row")
    }

    /// The tensor's name in layer `layer`.
    pub fn name(&self, layer: usize) -> String {
        format!("blk.{layer}.{}", self.suffix)
    }

    /// The Hugging Face name after `model.layers.N.` in `spec`'s family.
    pub fn hf_suffix(&self, spec: &ArchSpec) -> &'static str {
        match self.hf_post_norms {
            Some(n) if spec.post_norms => n,
            _ => self.hf,
        }
    }

    /// Whether `spec`'s family holds this tensor.
    pub fn need(&self, spec: &ArchSpec) -> Need {
        match self.presence {
            Presence::Always => Need::Required,
            Presence::Bias if spec.qkv_bias => Need::Required,
            Presence::Bias => Need::Optional,
            Presence::QkNorm if spec.qk_norm => Need::Required,
            Presence::PostNorm if spec.post_norms => Need::Required,
            Presence::QkNorm | Presence::PostNorm => Need::Absent,
        }
    }
}

/// One decoder block's weights by role, with the matrix type each engine keeps (the GGUF
/// engine's view into quantized rows, the APR engine's f32 rows); vectors are f32. Loaded
/// through [`TENSORS`] by [`Block::load`], so both engines name and shape them alike.
#[derive(Clone, Debug)]
pub struct Block<M> {
    /// RMSNorm weight before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: M,
    /// Key projection.
    pub wk: M,
    /// Value projection.
    pub wv: M,
    /// Query bias (Qwen2).
    pub bq: Option<Vec<f32>>,
    /// Key bias.
    pub bk: Option<Vec<f32>>,
    /// Value bias.
    pub bv: Option<Vec<f32>>,
    /// Per-head RMSNorm weight of the queries (Qwen3, Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    /// Per-head RMSNorm weight of the keys.
    pub k_norm: Option<Vec<f32>>,
    /// Attention output projection.
    pub wo: M,
    /// RMSNorm weight of the attention output (Gemma 3).
    pub attn_post_norm: Option<Vec<f32>>,
    /// RMSNorm weight before the FFN.
    pub ffn_norm: Vec<f32>,
    /// FFN gate projection (input of the activation).
    pub ffn_gate: M,
    /// FFN up projection.
    pub ffn_up: M,
    /// FFN down projection.
    pub ffn_down: M,
    /// RMSNorm weight of the FFN output (Gemma 3).
    pub ffn_post_norm: Option<Vec<f32>>,
}

/// Where an engine reads its tensors from: each format's reader, checking names, shapes
/// and formats with its own errors.
pub trait TensorSource {
    /// The engine's matrix.
    type Matrix;
    /// The format's error.
    type Error;
    /// The matrix `name` of `rows` outputs by `cols` inputs.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Self::Matrix, Self::Error>;
    /// The vector `name` of `len` values, as f32.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, Self::Error>;
    /// Whether the file holds a tensor `name`.
    fn has(&self, name: &str) -> bool;
}

impl<M> Block<M> {
    /// Reads layer `layer`'s tensors from `src`: every role the family has, required or
    /// optional as [`TensorSpec::need`] says, shaped by [`TENSORS`].
    pub fn load<S: TensorSource<Matrix = M>>(
        src: &S,
        cfg: &ModelConfig,
        layer: usize,
    ) -> Result<Self, S::Error> {
        let spec = cfg.spec();
        let mat = |role| {
            let t = TensorSpec::of(role);
            let cols = t.cols.expect("a matrix row").of(cfg);
            src.matrix(&t.name(layer), t.rows.of(cfg), cols)
        };
        let vec = |role| {
            let t = TensorSpec::of(role);
            src.vector(&t.name(layer), t.rows.of(cfg))
        };
        let opt = |role| {
            let t = TensorSpec::of(role);
            match t.need(spec) {
                Need::Optional if !src.has(&t.name(layer)) => Ok(None),
                Need::Required | Need::Optional => vec(role).map(Some),
                Need::Absent => Ok(None),
            }
        };
        Ok(Block {
            attn_norm: vec(Role::AttnNorm)?,
            wq: mat(Role::Wq)?,
            wk: mat(Role::Wk)?,
            wv: mat(Role::Wv)?,
            bq: opt(Role::Bq)?,
            bk: opt(Role::Bk)?,
            bv: opt(Role::Bv)?,
            q_norm: opt(Role::QNorm)?,
            k_norm: opt(Role::KNorm)?,
            wo: mat(Role::Wo)?,
            attn_post_norm: opt(Role::AttnPostNorm)?,
            ffn_norm: vec(Role::FfnNorm)?,
            ffn_gate: mat(Role::FfnGate)?,
            ffn_up: mat(Role::FfnUp)?,
            ffn_down: mat(Role::FfnDown)?,
            ffn_post_norm: opt(Role::FfnPostNorm)?,
        })
    }
}
