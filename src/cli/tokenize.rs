//! `pv tokenize MODEL TEXT`: the model's token ids for a text.

use std::path::PathBuf;

use super::{CliError, Format, emit, print_json};
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

/// Arguments of `pv tokenize`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  pv tokenize models/SmolLM2-135M-Instruct.Q4_1.gguf 'What is 2+2?'"
)]
pub struct Args {
    /// The GGUF model whose tokenizer to use.
    model: PathBuf,
    /// The text to tokenize.
    text: String,
    /// Output format: text (one token a line: id and piece) or json (a list of ids).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv tokenize`.
pub fn run(a: Args) -> Result<(), CliError> {
    let file = GgufFile::open(&a.model).map_err(|e| CliError::input(e.to_string()))?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&a.text)?;
    match a.format {
        Format::Json => print_json(&serde_json::json!(ids)),
        Format::Text => {
            let mut o: String = ids
                .iter()
                .map(|id| format!("{id:>6}  {:?}\n", tok.piece(*id)))
                .collect();
            o += &format!("{} tokens\n", ids.len());
            emit(&o)
        }
    }
}
