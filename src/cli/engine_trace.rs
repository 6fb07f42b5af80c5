//! `pv engine-trace MODEL --tokens ...`: pv's own side of the engine protocol
//! ([`crate::trace::engine`]), the same answer any engine adapter gives, from pv's GGUF or
//! APR engine.

use std::path::PathBuf;

use super::{CliError, load_traceable, print_json};
use crate::model::{Slot, with_threads};
use crate::trace::{CaptureSpec, TraceOptions, capture_all};

/// Arguments of `pv engine-trace`.
#[derive(clap::Args)]
#[command(
    after_help = "This is the protocol every engine speaks (pv-engine/1, see `pv trace --help`): \
pv runs it for `pv trace --engine pv`, and an adapter of another engine (scripts/engines.sh) \
answers the same command line with the same JSON.\n\nExample:\n  \
pv engine-trace models/SmolLM2-135M-Instruct.Q4_1.gguf --tokens 1780,314,216 --dump /tmp/d --slots ffn_inner,logits"
)]
pub struct Args {
    /// The model (GGUF or APR).
    model: PathBuf,
    /// The token ids of the pass, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// How many of the last position's largest logits to record.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Per-token statistics too.
    #[arg(long)]
    per_token: bool,
    /// Write the tensors of --slots (default all) as float32 .npy files into DIR.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,
    /// Slots to dump (names as in the trace, or `all`).
    #[arg(long, value_delimiter = ',', requires = "dump")]
    slots: Option<Vec<String>>,
    /// Layers to dump (default every layer).
    #[arg(long, value_delimiter = ',', requires = "dump")]
    layers: Option<Vec<usize>>,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

/// The capture spec of `--slots` (all when absent or `all`).
pub(super) fn capture_spec(
    slots: Option<&[String]>,
    layers: Option<Vec<usize>>,
) -> Result<CaptureSpec, CliError> {
    let slots = match slots {
        None => capture_all().slots,
        Some(s) if s.iter().any(|x| x == "all") => capture_all().slots,
        Some(s) => s
            .iter()
            .map(|x| {
                Slot::from_name(x)
                    .ok_or_else(|| CliError::input(format!("--slots: unknown slot {x:?}")))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(CaptureSpec { slots, layers })
}

/// Runs `pv engine-trace`.
pub fn run(a: Args) -> Result<(), CliError> {
    let (model, _, n_layer) = load_traceable(&a.model)?;
    if let Some(bad) = a.layers.iter().flatten().find(|&&l| l >= n_layer) {
        return Err(CliError::input(format!(
            "--layers {bad}: the model has layers 0..{}",
            n_layer - 1
        )));
    }
    let capture = match &a.dump {
        Some(_) => Some(capture_spec(a.slots.as_deref(), a.layers.clone())?),
        None => None,
    };
    let options = TraceOptions {
        per_token: a.per_token,
        top_k: a.top_k,
        capture,
        fault: None,
        inputs: None,
    };
    let traced = with_threads(a.threads, || model.forward_traced_with(&a.tokens, &options))?;
    if let Some(dir) = &a.dump {
        super::trace::write_dumps(dir, &traced.captured)?;
    }
    print_json(&serde_json::to_value(&traced.trace).map_err(|e| CliError::other(e.to_string()))?)
}
