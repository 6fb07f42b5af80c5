//! `pv schema contract|trace|evidence`: the published JSON Schemas, as the binary knows
//! them (the files in `schemas/` are these, committed and drift-tested).

use super::{CliError, emit};

/// Which schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// Contract YAML files (`contracts/*.yaml`).
    Contract,
    /// `pv trace --format json` output.
    Trace,
    /// Evidence records' in-toto statement (`evidence/**/NNNN.dsse.json`, payload).
    Evidence,
}

/// Arguments of `pv schema`.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  pv schema contract > contract.schema.json")]
pub struct Args {
    /// The schema to print.
    #[arg(value_enum)]
    which: Which,
}

/// The schema text exactly as committed under `schemas/`.
pub fn text(which: Which) -> String {
    match which {
        Which::Contract => crate::contract::schema::schema_text(),
        Which::Trace => crate::trace::schema_json(),
        Which::Evidence => crate::evidence::schema_text(),
    }
}

/// Runs `pv schema`.
pub fn run(a: Args) -> Result<(), CliError> {
    emit(&text(a.which))
}
