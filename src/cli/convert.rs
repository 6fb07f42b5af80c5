//! `pv convert MODEL.gguf -o MODEL.apr`: the same model in the APR reference format.

use std::path::PathBuf;

use super::CliError;
use crate::gguf::GgufFile;
use crate::model::{AprDtype, write_apr};

/// Arguments of `pv convert`.
///
/// The file is streamed tensor by tensor (a few megabytes held at a time, whatever the
/// model's size) into a temporary file that is renamed into place when complete.
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
    let bar = super::progress_bar("converting");
    let start = std::time::Instant::now();
    write_apr(&file, a.dtype, &a.output, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let bytes = std::fs::metadata(&a.output).map_or(0, |m| m.len());
    eprintln!(
        "wrote {} ({:?}, {:.1} MB in {:.1} s)",
        a.output.display(),
        a.dtype,
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
