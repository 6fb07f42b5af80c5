//! `pv engine-trace MODEL --tokens ...`: pv's own side of the engine protocol
//! ([`crate::trace::engine`]), the same answer any engine adapter gives, from pv's GGUF or
//! APR engine.

use super::{CliError, load_traceable, print_json};
use crate::model::with_threads;
use crate::trace::TraceOptions;
use crate::trace::engine::{EngineArgs, write_dumps};

/// Arguments of `pv engine-trace`.
#[derive(clap::Args)]
#[command(
    after_help = "This is the protocol every engine speaks (pv-engine/1, see `pv trace --help`): \
pv runs it for `pv trace --engine pv`, and an adapter of another engine (scripts/engines.sh) \
answers the same command line with the same JSON.\n\nExample:\n  \
pv engine-trace models/SmolLM2-135M-Instruct.Q4_1.gguf --tokens 1780,314,216 --dump /tmp/d --slots ffn_inner,logits"
)]
pub struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

/// Runs `pv engine-trace`.
pub fn run(a: Args) -> Result<(), CliError> {
    let e = &a.engine;
    let (model, _, n_layer) = load_traceable(&e.model)?;
    if let Some(bad) = e.layers.iter().flatten().find(|&&l| l >= n_layer) {
        return Err(CliError::input(format!(
            "--layers {bad}: the model has layers 0..{}",
            n_layer - 1
        )));
    }
    let options = TraceOptions {
        per_token: e.per_token,
        top_k: e.top_k,
        capture: e.capture().map_err(CliError::input)?,
        fault: None,
        inputs: None,
    };
    let traced = with_threads(a.threads, || model.forward_traced_with(&e.tokens, &options))?;
    if let Some(dir) = &e.dump {
        write_dumps(dir, &traced.captured)
            .map_err(|err| CliError::other(format!("{}: {err}", dir.display())))?;
    }
    print_json(&serde_json::to_value(&traced.trace).map_err(|e| CliError::other(e.to_string()))?)
}
