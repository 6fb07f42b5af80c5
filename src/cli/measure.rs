//! `pv measure`: run one checker's measurement and print it as JSON, with no verdict and
//! no record. This is how `pv gate --engine PATH` takes measurements from another pv build
//! (the code under test) while judging them itself.

use std::path::PathBuf;

use super::{CliError, emit};
use crate::checkers::{self, CheckError, Context};
use crate::evidence::recheck::{MeasureOutput, MeasuredInput};

/// Arguments of `pv measure`.
#[derive(clap::Args)]
#[command(after_help = "\
Prints one JSON document: {\"checker\", \"measurements\", \"inputs\"}. The params are given \
whole, as the caller trusts them; nothing is read from contracts/ and nothing is judged.

Exit status: 0 measured, 2 bad params, missing model or a failed run.

Example:
  pv measure --checker apr_gguf_std_ratio --models models \\
    --params '{\"model\":{\"file\":\"SmolLM2-135M-Instruct.Q4_1.gguf\",\"sha256\":\"b179…\"},\"prompt\":\"What is 2+2?\",\"layer\":3,\"slot\":\"ffn_inner\",\"band\":[0.5,2.0]}'")]
pub struct Args {
    /// The registered checker.
    #[arg(long)]
    checker: String,
    /// Its params, as JSON.
    #[arg(long)]
    params: String,
    /// Directory holding the model files the params name.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// The repository (for checkers that read git).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The contract the test belongs to (for checkers that cite it).
    #[arg(long, default_value = "")]
    contract: String,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

/// Runs `pv measure`.
pub fn run(a: Args) -> Result<(), CliError> {
    let checker = checkers::find(&a.checker).ok_or_else(|| {
        CliError::input(format!(
            "no checker {:?}; registered: {}",
            a.checker,
            checkers::names()
        ))
    })?;
    let params: serde_json::Value = serde_json::from_str(&a.params)
        .map_err(|e| CliError::input(format!("--params is not JSON: {e}")))?;
    (crate::contract::catalog::find(&a.checker)
        .expect("registered checkers are in the catalog")
        .check_params)(&params)
    .map_err(|e| CliError::input(format!("--params: {e}")))?;
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };
    let none = |_: &str| None;
    let ctx = Context {
        models: &a.models,
        threads,
        cite: None,
        repo: &a.root,
        contract_id: &a.contract,
        latest_verdict: &none,
        progress: &|_| {},
        fault: None,
    };
    let m =
        (checker.measure)(&params, &ctx).map_err(|e: CheckError| CliError::input(e.to_string()))?;
    let out = MeasureOutput {
        checker: checker.name.into(),
        measurements: m.measurements,
        inputs: m.inputs.iter().map(MeasuredInput::from).collect(),
    };
    emit(&(serde_json::to_string(&out).map_err(|e| CliError::other(e.to_string()))? + "\n"))
}
