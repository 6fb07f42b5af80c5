//! `pv run MODEL --prompt TEXT`: greedy generation.

use std::path::PathBuf;

use super::{CliError, Format, emit, load, print_json};
use crate::model::with_threads;

/// Arguments of `pv run`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  pv run models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt 'The capital of France is' -n 16"
)]
pub struct Args {
    /// The GGUF model to run.
    model: PathBuf,
    /// The prompt; special tokens such as <|im_start|> are parsed whole.
    #[arg(long, short)]
    prompt: String,
    /// Tokens to generate (generation also stops at an end-of-generation token).
    #[arg(short = 'n', long = "n-predict", default_value_t = 16)]
    n: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Output format: text (the continuation) or json (prompt and generated token ids, text).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv run`.
pub fn run(a: Args) -> Result<(), CliError> {
    let (model, tok) = load(&a.model)?;
    let prompt = tok.encode(&a.prompt)?;
    let generated = with_threads(a.threads, || {
        model.generate_greedy(&prompt, a.n, tok.end_tokens())
    })?;
    let text = tok.decode(&generated)?;
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "prompt_tokens": prompt,
            "generated_tokens": generated,
            "text": text,
        })),
        Format::Text => emit(&format!("{text}\n")),
    }
}
