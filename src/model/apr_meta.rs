//! What an APR file says about its model, in either dialect, and what pv writes.
//!
//! aprender's dialect keeps the hyper-parameters as flat typed keys (`hidden_size`,
//! `num_layers`, ..., with the aliases realizar accepts) and the tokenizer as flat
//! `tokenizer.*` keys; its tensors carry GGUF names (`apr import` of a llama-family GGUF)
//! or Hugging Face names (of a Qwen GGUF, or of SafeTensors), both mapped to pv's roles
//! through [`TENSORS`](super::tensors::TENSORS). pv's first dialect nests them under
//! `hyperparameters` and `tokenizer`, with GGUF names. Both end in the same
//! [`ModelConfig`], checked the same way as a GGUF file's.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::arch::{Arch, ArchSpec, RopeStyle};
use super::config::{ConfigError, Hyper, MAX_COUNT};
use super::tensors::{MODEL_TENSORS, TensorSpec, gguf_name};
use super::{ModelConfig, ModelError};
use crate::apr::{AprError, AprFile, AprTensor, AprenderMetadata, Dialect, metadata::f32_number};
use crate::tokenizer::TokenizerSpec;

/// An APR file read as a model: its hyper-parameters, its tokenizer (if it holds one), its
/// tensors under their GGUF names, and what pv noticed on the way.
pub struct AprModel<'a> {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// The tokenizer, when the file holds a vocabulary.
    pub tokenizer: Option<TokenizerSpec>,
    /// Every tensor, by its GGUF name.
    pub tensors: BTreeMap<String, &'a AprTensor>,
    /// Facts a reader should know: values inferred from tensor shapes, metadata that
    /// contradicts the architecture, a tokenizer without token types.
    pub notes: Vec<String>,
}

/// Architecture names aprender and Hugging Face use, with the family pv runs.
const ARCH_NAMES: [(&str, Arch); 14] = [
    ("llama", Arch::Llama),
    ("llamaforcausallm", Arch::Llama),
    ("qwen2forcausallm", Arch::Qwen2),
    ("qwen3forcausallm", Arch::Qwen3),
    ("gemma3forcausallm", Arch::Gemma3),
    ("gemma3forconditionalgeneration", Arch::Gemma3),
    ("smollm", Arch::Llama),
    ("smollm2", Arch::Llama),
    ("qwen2", Arch::Qwen2),
    ("qwen2.5", Arch::Qwen2),
    ("qwen3", Arch::Qwen3),
    ("gemma3", Arch::Gemma3),
    ("gemma3_text", Arch::Gemma3),
    ("gemma-3", Arch::Gemma3),
];

/// aprender's `rope_type`: 0 rotates adjacent pairs (llama.cpp NORM), 2 halves (NEOX).
fn rope_type(style: RopeStyle) -> u32 {
    match style {
        RopeStyle::Adjacent => 0,
        RopeStyle::Halves => 2,
    }
}

/// A metadata problem: the key (under `metadata.`) and what is wrong.
type MetaErr = (String, String);

fn meta_err(file: &AprFile, (key, reason): MetaErr) -> ModelError {
    ModelError::Apr(AprError::Malformed {
        field: format!("metadata.{key}"),
        offset: file.metadata_offset,
        reason,
    })
}

/// Reads the model an APR file describes: hyper-parameters, tokenizer and tensor names, all
/// checked before any weight is read.
pub fn read(file: &AprFile) -> Result<AprModel<'_>, ModelError> {
    let meta = file
        .metadata
        .as_object()
        .expect("the reader checked the metadata is an object");
    let arch = match file.dialect {
        Dialect::Pv => pv_arch(meta),
        Dialect::Aprender => aprender_arch(meta),
    }
    .map_err(|e| meta_err(file, e))?;
    let tensors = names(file, arch.spec())?;
    let mut notes = Vec::new();
    let (config, tokenizer, named) = match file.dialect {
        Dialect::Pv => {
            let config = pv_config(meta).map_err(|e| meta_err(file, e))?;
            let tokenizer: TokenizerSpec = serde_json::from_value(
                meta.get("tokenizer")
                    .cloned()
                    .ok_or(("tokenizer".to_string(), "missing".to_string()))
                    .map_err(|e| meta_err(file, e))?,
            )
            .map_err(|e| meta_err(file, ("tokenizer".into(), e.to_string())))?;
            let named = |e: ConfigError| {
                (
                    "hyperparameters.".to_string() + e.param.apr_field(),
                    e.reason,
                )
            };
            (config, Some(tokenizer), named as fn(ConfigError) -> MetaErr)
        }
        Dialect::Aprender => {
            let tokenizer = TokenizerSpec::from_aprender(meta)
                .map_err(|e| meta_err(file, (e.aprender_key().into(), e.reason)))?;
            let config = aprender_config(meta, arch, &tensors, tokenizer.as_ref(), &mut notes)
                .map_err(|e| meta_err(file, e))?;
            if tokenizer.is_some() && !meta.contains_key("tokenizer.token_type") {
                notes.push(
                    "no tokenizer.token_type: every token is read as normal text, so special \
                     tokens written in a prompt are split (as for a GGUF file without token types)"
                        .into(),
                );
            }
            let hf_q = file
                .tensors
                .iter()
                .any(|t| t.name.ends_with(".self_attn.q_proj.weight"));
            if hf_q && arch.rope_style() == RopeStyle::Adjacent {
                notes.push(format!(
                    "Hugging Face names on a {} model: pv maps names only and takes the q/k rows \
                     in the order the file stores them, rotating adjacent pairs as the family \
                     does (as realizar does); a file imported from SafeTensors keeps Hugging \
                     Face's row order, which rotates halves, and aprender records no layout to \
                     tell the two apart",
                    arch.name()
                ));
            }
            let named = |e: ConfigError| (e.param.aprender_key().to_string(), e.reason);
            (config, tokenizer, named as fn(ConfigError) -> MetaErr)
        }
    };
    // The same checks as a GGUF file's, before any weight is read or buffer sized.
    config.validate().map_err(|e| meta_err(file, named(e)))?;
    config
        .check_tensors(
            tensors
                .iter()
                .map(|(n, t)| (n.as_str(), t.dims.first().copied().unwrap_or(0))),
        )
        .map_err(|e| meta_err(file, named(e)))?;
    if let Some(t) = &tokenizer {
        t.check().map_err(|e| {
            let key = match file.dialect {
                Dialect::Pv => format!("tokenizer.{}", e.field),
                Dialect::Aprender => e.aprender_key().to_string(),
            };
            meta_err(file, (key, e.reason))
        })?;
    }
    Ok(AprModel {
        config,
        tokenizer,
        tensors,
        notes,
    })
}

fn pv_arch(meta: &Map<String, Value>) -> Result<Arch, MetaErr> {
    let v = meta
        .get("hyperparameters")
        .and_then(|h| h.get("arch"))
        .or_else(|| meta.get("architecture"));
    let name = v.and_then(Value::as_str).unwrap_or_default();
    Arch::from_name(name).ok_or_else(|| {
        (
            "hyperparameters.arch".into(),
            format!("{name:?} is not supported ({})", Arch::names()),
        )
    })
}

fn pv_config(meta: &Map<String, Value>) -> Result<ModelConfig, MetaErr> {
    serde_json::from_value(
        meta.get("hyperparameters")
            .cloned()
            .expect("pv's dialect has hyperparameters"),
    )
    .map_err(|e| ("hyperparameters".into(), e.to_string()))
}

/// The family an aprender file names: `architecture`, else `hf_model_type`, else
/// `model_type` (aprender writes `"Auto"` there when it did not know), else the Hugging Face
/// class name `hf_architecture`.
fn aprender_arch(meta: &Map<String, Value>) -> Result<Arch, MetaErr> {
    let named = [
        "architecture",
        "hf_model_type",
        "model_type",
        "hf_architecture",
    ]
    .into_iter()
    .find_map(|k| {
        let s = meta.get(k)?.as_str()?.to_ascii_lowercase();
        (!s.is_empty() && s != "auto").then_some((k, s))
    });
    let Some((key, name)) = named else {
        return Err((
            "architecture".into(),
            "missing: no architecture, hf_model_type, model_type or hf_architecture names the \
             family"
                .into(),
        ));
    };
    ARCH_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, a)| a)
        .ok_or_else(|| {
            (
                key.to_string(),
                format!("{name:?} is not a family pv runs ({})", Arch::names()),
            )
        })
}

/// The file's tensors under their GGUF names: every name must be a tensor of a `spec`
/// model, in either naming, and no tensor may be named twice (`output.weight` beside
/// `lm_head.weight`). pv refuses a tensor it does not know rather than ignore it: leaving
/// out a weight would run a different model than the file's.
fn names<'a>(
    file: &'a AprFile,
    spec: &ArchSpec,
) -> Result<BTreeMap<String, &'a AprTensor>, ModelError> {
    let mut out: BTreeMap<String, &AprTensor> = BTreeMap::new();
    for t in &file.tensors {
        let Some(g) = gguf_name(&t.name, spec) else {
            return Err(ModelError::Apr(AprError::Tensor {
                name: t.name.clone(),
                reason: format!(
                    "not a tensor of a {} model (GGUF names blk.N.{}, Hugging Face names \
                     model.layers.N.{}, or one of {}); pv would have to ignore it and run a \
                     different model than the file's",
                    spec.name,
                    TensorSpec::of(super::Role::Wq).suffix,
                    TensorSpec::of(super::Role::Wq).hf,
                    MODEL_TENSORS
                        .iter()
                        .flat_map(|(g, h)| std::iter::once(*g).chain(*h))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }));
        };
        if let Some(other) = out.insert(g.clone(), t) {
            return Err(ModelError::Apr(AprError::Tensor {
                name: t.name.clone(),
                reason: format!("names the same weight as {} ({g})", other.name),
            }));
        }
    }
    Ok(out)
}

/// The value of a hyper-parameter under aprender's key or one of its aliases, with the key
/// it was found under; two keys giving different values are an error.
fn lookup(meta: &Map<String, Value>, h: Hyper) -> Result<Option<(&'static str, &Value)>, MetaErr> {
    let mut found: Option<(&str, &Value)> = None;
    for k in h.aprender_keys() {
        let Some(v) = meta.get(k).filter(|v| !v.is_null()) else {
            continue;
        };
        match found {
            None => found = Some((k, v)),
            Some((k0, v0))
                if match (v0.as_f64(), v.as_f64()) {
                    (Some(a), Some(b)) => a != b,
                    _ => v0 != v,
                } =>
            {
                return Err((k0.into(), format!("{v0}, but {k} gives {v}")));
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

fn count(meta: &Map<String, Value>, h: Hyper, zero_ok: bool) -> Result<Option<usize>, MetaErr> {
    let Some((k, v)) = lookup(meta, h)? else {
        return Ok(None);
    };
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| (zero_ok || n > 0) && n <= MAX_COUNT)
        .map(Some)
        .ok_or_else(|| {
            (
                k.into(),
                format!("expected a positive integer up to 2^24, found {v}"),
            )
        })
}

fn number(meta: &Map<String, Value>, h: Hyper) -> Result<Option<f32>, MetaErr> {
    let Some((k, v)) = lookup(meta, h)? else {
        return Ok(None);
    };
    v.as_f64()
        .map(|x| Some(x as f32))
        .ok_or_else(|| (k.into(), format!("expected a number, found {v}")))
}

fn required<T>(v: Option<T>, h: Hyper) -> Result<T, MetaErr> {
    v.ok_or_else(|| (h.aprender_key().into(), "required key is missing".into()))
}

/// Rows of the tensor with GGUF name `name`, if the file has it.
fn rows(tensors: &BTreeMap<String, &AprTensor>, name: &str) -> Option<usize> {
    tensors
        .get(name)
        .and_then(|t| t.dims.first())
        .and_then(|&r| usize::try_from(r).ok())
}

fn aprender_config(
    meta: &Map<String, Value>,
    arch: Arch,
    tensors: &BTreeMap<String, &AprTensor>,
    tokenizer: Option<&TokenizerSpec>,
    notes: &mut Vec<String>,
) -> Result<ModelConfig, MetaErr> {
    use Hyper::*;
    let spec = arch.spec();
    // The widths and the layer count are unambiguous in the tensor table: taken from it
    // (and said so) when the metadata leaves them out.
    let mut from_tensors = |h: Hyper, what: &str, v: Option<usize>| -> Result<usize, MetaErr> {
        if let Some(n) = count(meta, h, false)? {
            return Ok(n);
        }
        let n = required(v.filter(|&n| n > 0), h)?;
        notes.push(format!("{} {n} inferred from {what}", h.aprender_key()));
        Ok(n)
    };
    let n_embd = from_tensors(
        NEmbd,
        "the columns of token_embd.weight",
        tensors
            .get("token_embd.weight")
            .and_then(|t| t.dims.last())
            .and_then(|&c| usize::try_from(c).ok()),
    )?;
    let n_layer = from_tensors(
        NLayer,
        "the blk groups of the tensor table",
        tensors
            .keys()
            .filter_map(|n| {
                n.strip_prefix("blk.")?
                    .split_once('.')?
                    .0
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map(|l| l + 1),
    )?;
    let n_ff = from_tensors(
        NFf,
        "the rows of blk.0.ffn_gate.weight",
        rows(tensors, "blk.0.ffn_gate.weight"),
    )?;
    let n_head = required(count(meta, NHead, false)?, NHead)?;
    // aprender's GGUF import leaves head_dim out (Gemma 3's heads are wider than
    // width / heads): the query projection's rows say it.
    let q_rows = rows(tensors, "blk.0.attn_q.weight");
    let head_dim = match count(meta, HeadDim, false)? {
        Some(h) => h,
        None => match q_rows {
            Some(r) if r > 0 && r.is_multiple_of(n_head) => {
                if r / n_head != n_embd / n_head {
                    notes.push(format!(
                        "head_dim {} inferred from blk.0.attn_q.weight ({r} rows / {n_head} heads)",
                        r / n_head
                    ));
                }
                r / n_head
            }
            _ if n_embd.is_multiple_of(n_head) => n_embd / n_head,
            _ => {
                return Err((
                    "head_dim".into(),
                    format!("missing, and {n_head} heads do not divide the width {n_embd}"),
                ));
            }
        },
    };
    let n_head_kv = match count(meta, NHeadKv, false)? {
        Some(n) => n,
        None => match rows(tensors, "blk.0.attn_k.weight") {
            Some(r) if head_dim > 0 && r > 0 && r.is_multiple_of(head_dim) => {
                notes.push(format!(
                    "num_kv_heads {} inferred from blk.0.attn_k.weight ({r} rows / head width {head_dim})",
                    r / head_dim
                ));
                r / head_dim
            }
            _ => n_head,
        },
    };
    if let Some(v) = meta.get("rope_type").filter(|v| !v.is_null()) {
        let wanted = rope_type(spec.rope);
        match v.as_u64() {
            Some(t) if t == u64::from(wanted) => {}
            Some(t) => notes.push(format!(
                "rope_type {t} contradicts {}, whose RoPE rotates {} (rope_type {wanted}); pv runs \
                 the family's RoPE, as llama.cpp does",
                spec.name,
                match spec.rope {
                    RopeStyle::Adjacent => "adjacent pairs",
                    RopeStyle::Halves => "the two halves of each head",
                }
            )),
            None => return Err(("rope_type".into(), format!("expected 0 or 2, found {v}"))),
        }
    }
    let vocab_size = match count(meta, VocabSize, false)? {
        Some(n) => n,
        None => tokenizer
            .map(|t| t.tokens.len())
            .or_else(|| rows(tensors, "token_embd.weight"))
            .ok_or_else(|| {
                (
                    "vocab_size".to_string(),
                    "missing, and neither a vocabulary nor an embedding gives it".to_string(),
                )
            })?,
    };
    let rms_eps = required(number(meta, RmsEps)?, RmsEps)?;
    let sliding_window = if spec.swa_pattern > 0 {
        let w = count(meta, SlidingWindow, true)?;
        if w.is_none() {
            notes.push(format!(
                "no sliding_window: every layer of this {} model attends globally, so positions \
                 past its real window (512 tokens in Gemma 3 270M) differ from the GGUF model's; \
                 aprender's import leaves the key out, add it to the metadata",
                spec.name
            ));
        }
        w.unwrap_or(0)
    } else {
        0
    };
    Ok(ModelConfig {
        arch,
        n_layer,
        n_embd,
        n_ff,
        n_head,
        n_head_kv,
        head_dim,
        rope_dim: count(meta, RopeDim, false)?.unwrap_or(head_dim),
        rope_theta: number(meta, RopeTheta)?.unwrap_or(10_000.0),
        rms_eps,
        vocab_size,
        context_length: count(meta, ContextLength, false)?.unwrap_or(2048),
        sliding_window,
        rope_theta_swa: number(meta, RopeThetaSwa)?,
        logit_softcap: number(meta, LogitSoftcap)?,
    })
}

/// What pv records about a model beyond its hyper-parameters and tokenizer when it writes
/// one in aprender's dialect.
pub struct WriteInfo {
    /// `general.name`, if the source has one.
    pub name: Option<String>,
    /// The chat template, if the source has one.
    pub chat_template: Option<String>,
    /// Every tensor written, with its dims (aprender's `tensor_shapes`).
    pub shapes: Vec<(String, Vec<u64>)>,
    /// Values of all tensors.
    pub param_count: u64,
    /// Bytes of all tensors.
    pub total_size: u64,
    /// The LM head is a copy of the embedding (aprender's `tied_embeddings`).
    pub tied: bool,
}

/// The metadata of a model in aprender's dialect: the typed fields aprender and realizar
/// read (every hyper-parameter explicit, `head_dim` and `rope_type` included), then the
/// tokenizer and the keys aprender has no field for.
pub fn aprender_metadata(
    config: &ModelConfig,
    tokenizer: &TokenizerSpec,
    info: WriteInfo,
) -> AprenderMetadata {
    let mut custom: BTreeMap<String, Value> = tokenizer.to_aprender();
    let mut put = |h: Hyper, v: Value| {
        custom.insert(h.aprender_key().to_string(), v);
    };
    if config.rope_dim != config.head_dim {
        put(Hyper::RopeDim, Value::from(config.rope_dim));
    }
    if config.sliding_window > 0 {
        put(Hyper::SlidingWindow, Value::from(config.sliding_window));
    }
    if let Some(x) = config.rope_theta_swa {
        put(Hyper::RopeThetaSwa, f32_number(x));
    }
    if let Some(x) = config.logit_softcap {
        put(Hyper::LogitSoftcap, f32_number(x));
    }
    custom.insert(
        "tensor_shapes".into(),
        Value::Object(
            info.shapes
                .into_iter()
                .map(|(n, d)| (n, Value::from(d)))
                .collect(),
        ),
    );
    if info.tied {
        custom.insert("tied_embeddings".into(), Value::Bool(true));
    }
    let arch = config.arch.name().to_string();
    AprenderMetadata {
        model_type: arch.clone(),
        name: info.name,
        original_format: Some("gguf".into()),
        total_size: info.total_size,
        param_count: info.param_count,
        chat_template: info.chat_template,
        architecture: Some(arch),
        hidden_size: Some(config.n_embd),
        num_layers: Some(config.n_layer),
        num_heads: Some(config.n_head),
        num_kv_heads: Some(config.n_head_kv),
        vocab_size: Some(config.vocab_size),
        intermediate_size: Some(config.n_ff),
        max_position_embeddings: Some(config.context_length),
        rope_theta: Some(config.rope_theta),
        rope_type: Some(rope_type(config.arch.rope_style())),
        rms_norm_eps: Some(config.rms_eps),
        head_dim: Some(config.head_dim),
        custom,
        ..AprenderMetadata::default()
    }
}
