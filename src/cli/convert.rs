//! `pv convert MODEL.gguf -o MODEL.apr`: the same model as an APR file in aprender's dialect,
//! the reference format.

use std::path::PathBuf;

use super::CliError;
use crate::gguf::GgufFile;
use crate::model::{AprDtype, Conversion, OtherDtype, write_apr};

/// Arguments of `pv convert`.
///
/// The file is what aprender's `apr import` writes from a llama-family GGUF, and what
/// aprender's and realizar's readers read: flat typed metadata (the tokenizer under
/// `tokenizer.*`), GGUF tensor names with an `lm_head.weight` copy of a tied embedding,
/// aprender's type ids, the row-major flag and a CRC32 footer. It is streamed tensor by
/// tensor (a few megabytes held at a time, whatever the model's size) into a temporary file
/// that is renamed into place when complete, and the same GGUF always gives the same bytes.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
pv convert models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/SmolLM2-135M-Instruct.Q4_1.apr\n  \
pv convert models/formats/smollm2-Q4_K_M.gguf -o q4km.apr --dtype keep --other f16\n\n\
--dtype keep keeps only the types aprender's APR table holds (F32, F16, BF16, Q4_K, Q6_K): \
aprender would read the id of any other GGML type (Q4_0, Q4_1, Q8_0, ...) as a different \
type, so those are refused unless --other says what to store them as.")]
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
    /// With --dtype keep: store tensors whose GGUF type aprender's table lacks as f32 or f16
    /// (without it they are refused, naming the tensor and its type).
    #[arg(long, value_enum)]
    other: Option<OtherDtype>,
}

/// Runs `pv convert`.
pub fn run(a: Args) -> Result<(), CliError> {
    let file = GgufFile::open(&a.model).map_err(|e| CliError::input(e.to_string()))?;
    let bar = super::progress_bar("converting");
    let start = std::time::Instant::now();
    if a.other.is_some() && a.dtype != AprDtype::Keep {
        return Err(CliError::input("--other applies to --dtype keep only"));
    }
    let how = Conversion {
        dtype: a.dtype,
        other: a.other,
    };
    write_apr(&file, how, &a.output, &mut |done, total| {
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
