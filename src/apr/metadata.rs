//! APR metadata: which dialect a file speaks, the header flags aprender defines, and the
//! typed metadata aprender writes, field for field.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Dialect;

impl Dialect {
    /// The dialect of a file with this metadata. pv's first dialect is the only one with
    /// `"format": "apr/2.0"` and a nested `hyperparameters` object; everything else is read
    /// as aprender's.
    pub fn of(metadata: &Value) -> Dialect {
        let pv = metadata.get("format").and_then(Value::as_str) == Some("apr/2.0")
            && metadata
                .get("hyperparameters")
                .is_some_and(Value::is_object);
        if pv { Dialect::Pv } else { Dialect::Aprender }
    }

    /// How `pv inspect` names it.
    pub fn describe(self) -> &'static str {
        match self {
            Dialect::Aprender => "aprender (flat typed metadata, aprender's type ids)",
            Dialect::Pv => "pv's first dialect (nested metadata, GGML type ids; read only)",
        }
    }
}

/// aprender's header flags (`apr-format` `AprV2Flags`), each with what pv does with it.
pub mod flags {
    /// Payload compressed with LZ4: refused.
    pub const LZ4_COMPRESSED: u16 = 0x0001;
    /// Payload compressed with Zstd: refused.
    pub const ZSTD_COMPRESSED: u16 = 0x0002;
    /// Payload encrypted: refused.
    pub const ENCRYPTED: u16 = 0x0004;
    /// Carries a signature (pv does not verify it; shown by `pv inspect`).
    pub const SIGNED: u16 = 0x0008;
    /// One shard of a model split over several files: refused.
    pub const SHARDED: u16 = 0x0010;
    /// Tensors are quantized (informational).
    pub const QUANTIZED: u16 = 0x0020;
    /// Has a filterbank (informational).
    pub const HAS_FILTERBANK: u16 = 0x0040;
    /// Has a model card (informational).
    pub const HAS_MODEL_CARD: u16 = 0x0080;
    /// Supports streaming loads (informational).
    pub const STREAMING: u16 = 0x0100;
    /// Holds a vocabulary (informational).
    pub const HAS_VOCAB: u16 = 0x0200;
    /// Row-major tensors: what every file aprender (and pv) writes says.
    pub const ROW_MAJOR: u16 = 0x0400;
    /// Column-major tensors: refused, as aprender refuses them (its LAYOUT-002).
    pub const COLUMN_MAJOR: u16 = 0x0800;

    /// Every flag, with its name.
    pub const NAMES: [(u16, &str); 12] = [
        (LZ4_COMPRESSED, "lz4-compressed"),
        (ZSTD_COMPRESSED, "zstd-compressed"),
        (ENCRYPTED, "encrypted"),
        (SIGNED, "signed"),
        (SHARDED, "sharded"),
        (QUANTIZED, "quantized"),
        (HAS_FILTERBANK, "has-filterbank"),
        (HAS_MODEL_CARD, "has-model-card"),
        (STREAMING, "streaming"),
        (HAS_VOCAB, "has-vocab"),
        (ROW_MAJOR, "row-major"),
        (COLUMN_MAJOR, "column-major"),
    ];

    /// The flags pv refuses, and why.
    pub const REFUSED: [(u16, &str); 5] = [
        (
            COLUMN_MAJOR,
            "column-major tensors (0x0800): aprender refuses such files too (LAYOUT-002); re-import the model",
        ),
        (
            LZ4_COMPRESSED,
            "LZ4-compressed payload (0x0001): pv reads uncompressed files only",
        ),
        (
            ZSTD_COMPRESSED,
            "Zstd-compressed payload (0x0002): pv reads uncompressed files only",
        ),
        (
            ENCRYPTED,
            "encrypted payload (0x0004): pv cannot read encrypted files",
        ),
        (
            SHARDED,
            "one shard of a sharded model (0x0010): pv reads models held in one file",
        ),
    ];

    /// The names of the flags set in `bits`.
    pub fn names(bits: u16) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(f, _)| bits & f != 0)
            .map(|&(_, n)| n)
            .collect()
    }

    /// Bits no flag defines.
    pub fn unknown(bits: u16) -> u16 {
        bits & !NAMES.iter().fold(0, |a, (f, _)| a | f)
    }
}

/// The metadata of an aprender-dialect file as pv writes it: aprender's `AprV2Metadata`
/// field for field, in its order and with its skipping rules (`license`, `data_source` and
/// `data_license` are always written, as explicit nulls when unknown; `total_size` and
/// `param_count` always; the rest only when set), then the flattened custom keys in sorted
/// order. `AprV2Writer` serialises the same struct, so the bytes match its output whenever
/// its `HashMap` happens to list the custom keys in that order (tests/aprender.rs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AprenderMetadata {
    /// Model type identifier (aprender writes the architecture here on GGUF import).
    pub model_type: String,
    /// Model name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// SPDX license (explicit null when unknown).
    pub license: Option<String>,
    /// Training-data source (explicit null when unknown).
    pub data_source: Option<String>,
    /// Training-data license (explicit null when unknown).
    pub data_license: Option<String>,
    /// Version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Provenance URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Format the model came from (`gguf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_format: Option<String>,
    /// Creation time (pv leaves it out so conversions are reproducible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Bytes of tensor data.
    pub total_size: u64,
    /// Number of parameters.
    pub param_count: u64,
    /// Chat template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Architecture family (`llama`, `qwen2`, `qwen3`, `gemma3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Residual width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// Decoder blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<usize>,
    /// Query heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
    /// Key/value heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_kv_heads: Option<usize>,
    /// Vocabulary size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// FFN inner width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    /// Context length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    /// RoPE base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f32>,
    /// RoPE pairing: 0 adjacent (llama.cpp NORM), 2 halves (NEOX).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<u32>,
    /// RMSNorm epsilon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f32>,
    /// Width of one head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Every other key, flattened into the object in sorted order.
    #[serde(flatten)]
    pub custom: BTreeMap<String, Value>,
}

impl AprenderMetadata {
    /// The JSON bytes written into the file.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata of strings, numbers and JSON values serialises")
    }
}

/// A JSON number for an f32 that reads back as the same f32 and prints as its shortest
/// decimal (`0.1`, not `0.10000000149011612`).
pub fn f32_number(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}
