//! `pv validate [PATH...]`: every schema error and every semantic rule, for every contract.

use std::path::PathBuf;

use super::{CliError, emit, print_json};
use crate::contract::{self, ContractError};

/// Output formats of `pv validate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ValidateFormat {
    /// `file:line:column: error[rule]: message`, then a summary line.
    #[default]
    Text,
    /// One JSON document: files, findings, counts.
    Json,
    /// SARIF 2.1.0 for code-scanning upload.
    Sarif,
    /// GitHub Actions annotations (`::error file=...`).
    Github,
}

/// Arguments of `pv validate`.
#[derive(clap::Args)]
#[command(after_help = "\
Checks, in order: YAML (duplicate keys, size/depth/alias budget), the JSON Schema \
(schemas/contract.schema.json: every error, with its path), then the semantic rules: \
unique ids across contracts, references that resolve, no depends_on cycle, registered \
checkers with params that type-check, covers patterns that compile and match files (and \
are present for every gate-required test of an ACTIVE contract), names in the models and \
prompt_sets tables that resolve and are used, and obligations and params that state the same \
limits. Every finding carries a stable rule id.

Exit status: 0 clean (warnings allowed), 1 findings, 2 usage or I/O error.

Examples:
  pv validate
  pv validate contracts/trace-ffn-sub-block-gguf-v1.yaml --format github")]
pub struct Args {
    /// Contract files or directories (searched for *.yaml, *.yml); default: ROOT/contracts.
    paths: Vec<PathBuf>,
    /// The repository root `covers` patterns are relative to (and whose `contracts/` is
    /// checked when no path is given).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: ValidateFormat,
}

/// Runs `pv validate`.
pub fn run(a: Args) -> Result<(), CliError> {
    let paths = if a.paths.is_empty() {
        // Shown as `contracts/x.yaml` when run at the root, as before.
        vec![if a.root == std::path::Path::new(".") {
            PathBuf::from("contracts")
        } else {
            a.root.join("contracts")
        }]
    } else {
        a.paths.clone()
    };
    let (report, _) = contract::validate(&paths, &a.root).map_err(|e| match e {
        ContractError::Io { .. } => CliError::input(e.to_string()),
        ContractError::Invalid(_) => CliError::other(e.to_string()),
    })?;
    match a.format {
        ValidateFormat::Text => emit(&report.text())?,
        ValidateFormat::Json => print_json(&report.json())?,
        ValidateFormat::Sarif => print_json(&report.sarif())?,
        ValidateFormat::Github => emit(&report.github())?,
    }
    if report.errors() > 0 {
        return Err(CliError::reported(1));
    }
    Ok(())
}
