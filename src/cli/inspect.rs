//! `pv inspect MODEL`: what a GGUF or APR file holds: architecture, hyper-parameters,
//! tokenizer, metadata and the tensor table; for APR, also its dialect, flags and footer,
//! and each tensor's role when its name is a Hugging Face one.

use std::path::PathBuf;

use serde_json::json;

use std::fmt::Write;

use super::{CliError, Format, Kind, emit, print_json, sniff};
use crate::apr::{AprFile, Footer, flags};
use crate::gguf::GgufFile;
use crate::model::ModelConfig;
use crate::model::apr_meta;
use crate::tokenizer::Tokenizer;

/// Arguments of `pv inspect`.
#[derive(clap::Args)]
#[command(
    after_help = "A file pv cannot run is still described: what is wrong with its configuration or \
tokenizer is shown in their place.\n\nExamples:\n  \
pv inspect models/SmolLM2-135M-Instruct.Q4_1.gguf --format json | jq .config\n  \
pv inspect models/SmolLM2-135M-Instruct.Q4_1.apr     # dialect, flags, footer, roles of HF names"
)]
pub struct Args {
    /// The model to describe: GGUF, or APR of either dialect (aprender's, or pv's first).
    model: PathBuf,
    /// Output format: text (a summary and the tensor table) or json (everything, long
    /// metadata arrays summarised as their type and length).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv inspect`.
pub fn run(a: Args) -> Result<(), CliError> {
    match sniff(&a.model)? {
        Kind::Gguf => gguf(a),
        Kind::Apr => apr(a),
    }
}

/// One line describing a configuration, and a second for a sliding window.
fn describe(o: &mut String, c: &ModelConfig) {
    let _ = writeln!(
        o,
        "architecture {}: {} layers, width {}, FFN {}, {} heads ({} KV, head width {}), RoPE {:?} dim {} base {}, RMS eps {:e}, vocab {}, context {}",
        c.arch.name(),
        c.n_layer,
        c.n_embd,
        c.n_ff,
        c.n_head,
        c.n_head_kv,
        c.head_dim,
        c.arch.rope_style(),
        c.rope_dim,
        c.rope_theta,
        c.rms_eps,
        c.vocab_size,
        c.context_length
    );
    if c.sliding_window > 0 {
        let _ = writeln!(
            o,
            "  sliding window {} on {} of {} layers (RoPE base {} there); FFN {}",
            c.sliding_window,
            (0..c.n_layer).filter(|&l| c.is_swa(l)).count(),
            c.n_layer,
            (0..c.n_layer)
                .find(|&l| c.is_swa(l))
                .map_or(c.rope_theta, |l| c.rope_theta_at(l)),
            c.spec().ffn_act.name()
        );
    }
}

/// The tokenizer's summary, or its error.
fn tokenizer_json(tok: &Result<Tokenizer, String>, model: Option<&str>) -> serde_json::Value {
    match tok {
        Ok(t) => json!({
            "model": model,
            "pre": t.pre(),
            "vocab_size": t.vocab_size(),
            "adds_bos": t.adds_bos(),
            "end_tokens": t.end_tokens(),
        }),
        Err(e) => json!({"error": e}),
    }
}

fn tokenizer_line(o: &mut String, tok: &Result<Tokenizer, String>) {
    let _ = match tok {
        Ok(t) => writeln!(
            o,
            "tokenizer: {}, pre-tokenizer {}, {} tokens, BOS {}, end tokens {:?}",
            t.kind(),
            t.pre(),
            t.vocab_size(),
            if t.adds_bos() { "added" } else { "not added" },
            t.end_tokens()
        ),
        Err(e) => writeln!(o, "tokenizer: {e}"),
    };
}

/// A metadata value with long arrays summarised as their length.
fn summarised(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(a) if a.len() > 16 => json!({"type": "array", "len": a.len()}),
        serde_json::Value::Array(a) => a.iter().map(summarised).collect(),
        serde_json::Value::Object(o) if o.len() > 16 => json!({"type": "object", "len": o.len()}),
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), summarised(v))).collect())
        }
        serde_json::Value::String(s) if s.chars().count() > 80 => {
            json!({"type": "string", "len": s.len()})
        }
        other => other.clone(),
    }
}

fn one_line(v: &serde_json::Value) -> String {
    match summarised(v) {
        serde_json::Value::Object(o) if o.get("type").is_some() && o.get("len").is_some() => {
            format!("[{} {}]", o["len"], o["type"].as_str().unwrap_or_default())
        }
        other => other.to_string(),
    }
}

fn apr(a: Args) -> Result<(), CliError> {
    let f = AprFile::open(&a.model).map_err(|e| CliError::input(e.to_string()))?;
    // A file pv cannot run is still worth describing: what is wrong is shown.
    let model = apr_meta::read(&f).map_err(|e| e.to_string());
    let roles: std::collections::HashMap<&str, &str> = match &model {
        Ok(m) => m
            .tensors
            .iter()
            .map(|(g, t)| (t.name.as_str(), g.as_str()))
            .collect(),
        Err(_) => Default::default(),
    };
    let tok = match &model {
        Ok(m) => match &m.tokenizer {
            Some(t) => Tokenizer::from_spec(t).map_err(|e| e.to_string()),
            None => Err("none (no tokenizer.vocabulary in the metadata)".to_string()),
        },
        Err(e) => Err(e.clone()),
    };
    let footer = match f.footer {
        Footer::Verified(crc) => format!("CRC32 {crc:#010x}, verified"),
        Footer::Absent => "none".to_string(),
    };
    let meta = f.metadata.as_object().cloned().unwrap_or_default();
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| {
            json!({"name": t.name, "role": roles.get(t.name.as_str()), "type": t.dtype.name(),
                   "shape": t.dims, "bytes": t.size})
        })
        .collect();
    match a.format {
        Format::Json => print_json(&json!({
            "file": a.model,
            "bytes": f.bytes().len(),
            "format": "apr",
            "version": format!("{}.{}", f.version.0, f.version.1),
            "dialect": f.dialect,
            "flags": {"bits": f.flags, "names": flags::names(f.flags)},
            "footer": match f.footer {
                Footer::Verified(crc) => json!({"crc32": crc, "verified": true}),
                Footer::Absent => json!(null),
            },
            "config": match &model { Ok(m) => json!(m.config), Err(e) => json!({"error": e}) },
            "tokenizer": tokenizer_json(&tok, model.as_ref().ok().and_then(|m| m.tokenizer.as_ref()).map(|t| t.model.as_str())),
            "notes": model.as_ref().map(|m| m.notes.clone()).unwrap_or_default(),
            "metadata": meta.iter().map(|(k, v)| (k.clone(), summarised(v))).collect::<serde_json::Map<_, _>>(),
            "tensors": tensors,
        })),
        Format::Text => {
            let mut o = String::new();
            let _ = writeln!(
                o,
                "{}: APR v{}.{}, {} bytes; dialect {}",
                a.model.display(),
                f.version.0,
                f.version.1,
                f.bytes().len(),
                f.dialect.describe()
            );
            let _ = writeln!(
                o,
                "flags {:#06x} ({}); footer {footer}",
                f.flags,
                flags::names(f.flags).join(", ")
            );
            if f.flags & flags::SIGNED != 0 {
                let _ = writeln!(o, "  signed: pv does not verify APR signatures");
            }
            match &model {
                Ok(m) => {
                    describe(&mut o, &m.config);
                    for n in &m.notes {
                        let _ = writeln!(o, "note: {n}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(o, "config: {e}");
                }
            }
            tokenizer_line(&mut o, &tok);
            let _ = writeln!(o, "\nmetadata ({} keys):", meta.len());
            for (k, v) in &meta {
                let _ = writeln!(o, "  {k} = {}", crate::fsutil::short(&one_line(v), 100));
            }
            let _ = writeln!(o, "\ntensors ({}):", f.tensors.len());
            let _ = writeln!(
                o,
                "  {:<44} {:<26} {:<6} {:>14} {:>12}",
                "name", "role (GGUF name)", "type", "shape", "bytes"
            );
            for t in &f.tensors {
                let role = match roles.get(t.name.as_str()) {
                    Some(&g) if g == t.name => "=".to_string(),
                    Some(&g) => g.to_string(),
                    None => "?".to_string(),
                };
                let _ = writeln!(
                    o,
                    "  {:<44} {:<26} {:<6} {:>14} {:>12}",
                    t.name,
                    role,
                    t.dtype.name(),
                    format!("{:?}", t.dims),
                    t.size
                );
            }
            emit(&o)
        }
    }
}

fn gguf(a: Args) -> Result<(), CliError> {
    let f = GgufFile::open(&a.model).map_err(|e| CliError::input(e.to_string()))?;
    // A file pv cannot run is still worth describing: config and tokenizer errors are shown.
    let config = ModelConfig::try_from(&f).map_err(|e| e.to_string());
    let tok = Tokenizer::from_gguf(&f).map_err(|e| e.to_string());
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ggml_type.name(), "shape": t.dims, "bytes": t.size}))
        .collect();
    let tok_json = tokenizer_json(&tok, f.get("tokenizer.ggml.model").and_then(|v| v.as_str()));
    match a.format {
        Format::Json => print_json(&json!({
            "file": a.model,
            "bytes": f.file_len(),
            "gguf_version": f.version,
            "alignment": f.alignment,
            "architecture": f.get("general.architecture").and_then(|v| v.as_str()),
            "config": match &config { Ok(c) => json!(c), Err(e) => json!({"error": e}) },
            "tokenizer": tok_json,
            "metadata": f.metadata.iter().map(|(k, v)| (k.clone(), v.to_json(16))).collect::<serde_json::Map<_, _>>(),
            "tensors": tensors,
        })),
        Format::Text => {
            let mut o = String::new();
            writeln!(
                o,
                "{}: GGUF v{}, {} bytes, alignment {}",
                a.model.display(),
                f.version,
                f.file_len(),
                f.alignment
            )
            .ok();
            match &config {
                Ok(c) => describe(&mut o, c),
                Err(e) => {
                    let _ = writeln!(o, "config: {e}");
                }
            }
            tokenizer_line(&mut o, &tok);
            writeln!(o, "\nmetadata ({} keys):", f.metadata.len()).ok();
            for (k, v) in &f.metadata {
                writeln!(o, "  {k} = {}", v.summary()).ok();
            }
            writeln!(o, "\ntensors ({}):", f.tensors.len()).ok();
            writeln!(
                o,
                "  {:<32} {:<5} {:>18} {:>12}",
                "name", "type", "shape", "bytes"
            )
            .ok();
            for t in &f.tensors {
                writeln!(
                    o,
                    "  {:<32} {:<5} {:>18} {:>12}",
                    t.name,
                    t.ggml_type.name(),
                    format!("{:?}", t.dims),
                    t.size
                )
                .ok();
            }
            emit(&o)
        }
    }
}
