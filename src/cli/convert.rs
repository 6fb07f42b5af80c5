//! `pv convert MODEL.gguf -o MODEL.apr`: the same model in the APR reference format.

use std::path::PathBuf;

use super::CliError;
use crate::gguf::GgufFile;
use crate::model::{AprDtype, gguf_to_apr};

/// Arguments of `pv convert`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  pv convert models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/SmolLM2-135M-Instruct.Q4_1.apr"
)]
pub struct Args {
    /// The GGUF model to convert.
    model: PathBuf,
    /// Where to write the APR file (written atomically).
    #[arg(long, short)]
    output: PathBuf,
    /// Element type of the converted tensors: f32 (dequantized, the reference), f16, or keep
    /// each tensor's GGUF format.
    #[arg(long, value_enum, default_value_t)]
    dtype: AprDtype,
}

/// Runs `pv convert`.
pub fn run(a: Args) -> Result<(), CliError> {
    let file = GgufFile::open(&a.model).map_err(|e| CliError::input(e.to_string()))?;
    let writer = gguf_to_apr(&file, a.dtype)?;
    writer
        .write(&a.output)
        .map_err(|e| CliError::other(e.to_string()))?;
    eprintln!("wrote {} ({:?})", a.output.display(), a.dtype);
    Ok(())
}
