//! `pv inspect MODEL`: what a GGUF file holds: architecture, hyper-parameters, tokenizer,
//! metadata and the tensor table.

use std::path::PathBuf;

use serde_json::json;

use std::fmt::Write;

use super::{CliError, Format, emit, print_json};
use crate::gguf::GgufFile;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;

/// Arguments of `pv inspect`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  pv inspect models/SmolLM2-135M-Instruct.Q4_1.gguf --format json | jq .config"
)]
pub struct Args {
    /// The GGUF model to describe.
    model: PathBuf,
    /// Output format: text (a summary and the tensor table) or json (everything, long
    /// metadata arrays summarised as their type and length).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv inspect`.
pub fn run(a: Args) -> Result<(), CliError> {
    let f = GgufFile::open(&a.model).map_err(|e| CliError::input(e.to_string()))?;
    // A file pv cannot run is still worth describing: config and tokenizer errors are shown.
    let config = ModelConfig::try_from(&f).map_err(|e| e.to_string());
    let tok = Tokenizer::from_gguf(&f).map_err(|e| e.to_string());
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ggml_type.name(), "shape": t.dims, "bytes": t.size}))
        .collect();
    let tok_json = match &tok {
        Ok(t) => json!({
            "model": f.get("tokenizer.ggml.model").and_then(|v| v.as_str()),
            "pre": t.pre(),
            "vocab_size": t.vocab_size(),
            "adds_bos": t.adds_bos(),
            "end_tokens": t.end_tokens(),
        }),
        Err(e) => json!({"error": e}),
    };
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
            let _ = match &config {
                Ok(c) => writeln!(
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
                )
                .and_then(|_| match c.sliding_window {
                    0 => Ok(()),
                    w => writeln!(
                        o,
                        "  sliding window {w} on {} of {} layers (RoPE base {} there); FFN {}",
                        (0..c.n_layer).filter(|&l| c.is_swa(l)).count(),
                        c.n_layer,
                        (0..c.n_layer)
                            .find(|&l| c.is_swa(l))
                            .map_or(c.rope_theta, |l| c.rope_theta_at(l)),
                        c.spec().ffn_act.name()
                    ),
                }),
                Err(e) => writeln!(o, "config: {e}"),
            };
            let _ = match &tok {
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
