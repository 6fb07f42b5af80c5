//! Architectures as data: one row per family saying how its decoder block differs from the
//! plain pre-norm block. The tensors a block holds are in `model::tensors`; each engine
//! keeps its own arithmetic.

/// Supported architectures (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 2/3, TinyLlama, SmolLM2: no attention biases, RoPE on adjacent pairs.
    Llama,
    /// Qwen2, Qwen2.5: q/k/v biases, RoPE on the two halves of each head (NeoX style).
    Qwen2,
    /// Qwen3: no biases, per-head RMSNorm of q and k before RoPE (NeoX style).
    Qwen3,
    /// Gemma 3: scaled embeddings, per-head q/k norms, norms after attention and after the
    /// FFN, GeGLU, sliding-window attention on five layers of six.
    Gemma3,
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

/// The activation of a gated FFN: `inner = act(gate) * up`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FfnAct {
    /// `x * sigmoid(x)` (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU).
    Gelu,
}

impl FfnAct {
    /// The name contracts use.
    pub fn name(self) -> &'static str {
        match self {
            FfnAct::Silu => "silu",
            FfnAct::Gelu => "gelu",
        }
    }
}

/// How one family's block differs from the plain pre-norm block (RMSNorm, attention,
/// residual, RMSNorm, gated FFN, residual).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchSpec {
    /// The architecture.
    pub arch: Arch,
    /// Its name, also the metadata prefix.
    pub name: &'static str,
    /// RoPE pairing.
    pub rope: RopeStyle,
    /// q/k/v carry biases (required).
    pub qkv_bias: bool,
    /// q and k are RMS-normalised per head before RoPE.
    pub qk_norm: bool,
    /// Attention and FFN outputs are RMS-normalised before each residual add.
    pub post_norms: bool,
    /// Token embeddings are multiplied by √n_embd.
    pub embd_scale: bool,
    /// Queries are scaled by 1/√head_dim before attention rather than in its softmax.
    pub scale_q: bool,
    /// FFN activation.
    pub ffn_act: FfnAct,
    /// Every `n`-th layer (the last of each group of `n`) attends globally and the rest
    /// through a sliding window; 0 when every layer attends globally.
    pub swa_pattern: usize,
}

/// One row per architecture: everything the engines need to know about a family beyond its
/// hyper-parameters.
pub const ARCHS: [ArchSpec; 4] = [
    PRE_NORM,
    ArchSpec {
        arch: Arch::Qwen2,
        name: "qwen2",
        rope: RopeStyle::Halves,
        qkv_bias: true,
        ..PRE_NORM
    },
    ArchSpec {
        arch: Arch::Qwen3,
        name: "qwen3",
        rope: RopeStyle::Halves,
        qk_norm: true,
        ..PRE_NORM
    },
    ArchSpec {
        arch: Arch::Gemma3,
        name: "gemma3",
        rope: RopeStyle::Halves,
        qk_norm: true,
        post_norms: true,
        embd_scale: true,
        scale_q: true,
        ffn_act: FfnAct::Gelu,
        swa_pattern: 6,
        ..PRE_NORM
    },
];

/// The plain pre-norm block (Llama's), which the other rows change.
const PRE_NORM: ArchSpec = ArchSpec {
    arch: Arch::Llama,
    name: "llama",
    rope: RopeStyle::Adjacent,
    qkv_bias: false,
    qk_norm: false,
    post_norms: false,
    embd_scale: false,
    scale_q: false,
    ffn_act: FfnAct::Silu,
    swa_pattern: 0,
};

impl Arch {
    /// The table row of this architecture.
    pub fn spec(self) -> &'static ArchSpec {
        ARCHS
            .iter()
            .find(|s| s.arch == self)
            .expect("every architecture has a row")
    }

    /// The metadata prefix and name of the architecture.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// How this architecture pairs the dimensions RoPE rotates, as llama.cpp applies it.
    pub fn rope_style(self) -> RopeStyle {
        self.spec().rope
    }

    /// The architecture named `name` in GGUF metadata.
    pub fn from_name(name: &str) -> Option<Arch> {
        ARCHS.iter().find(|s| s.name == name).map(|s| s.arch)
    }

    /// The supported names, for messages.
    pub fn names() -> String {
        ARCHS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    }
}
