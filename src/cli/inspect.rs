//! `pv inspect MODEL`: what a GGUF file holds.
use std::path::PathBuf;

use super::{CliError, Format, print_json};

/// Arguments of `pv inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model to describe.
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv inspect`.
pub fn run(_a: Args) -> Result<(), CliError> {
    let _ = print_json;
    let _ = Format::Text;
    Err(CliError::other("not yet"))
}
