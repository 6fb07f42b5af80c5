//! `pv discharge TEST-ID`: run a falsification test's checker and record signed evidence.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Format, emit, print_json};
use crate::evidence::discharge::{DischargeError, Request, complete, discharge};
use crate::evidence::layout::Layout;

/// Arguments of `pv discharge`.
#[derive(clap::Args)]
#[command(after_help = "\
Runs the checker the contract names for TEST-ID with the contract's params, on the models \
in --models, and appends a DSSE-signed in-toto record to evidence/<contract>/<test>/. \
The record moves the test's status: PENDING -> ALGORITHM_LEVEL_DISCHARGED (passed on a \
model that is not the contract's canonical one) -> DISCHARGED (passed on the canonical \
model, matched by sha256); FALSIFIED when the prediction fails.

For FFN-GGUF-003 the APR file is made from the GGUF one (pv convert, f32) when absent. \
Without --key, your default key is used, and created (with keys/NAME.pub) if there is none.

The record binds the sha256 of every file the contract's `covers` patterns match, and \
head.json is re-signed to name it. A discharge killed between the two is completed by the \
next one, or by --complete (which runs no checker).

Exit status: 0 passed and recorded, 1 falsified (recorded) or refused, 2 bad input.

Examples:
  pv discharge FFN-GGUF-003 --models models
  pv discharge FFN-GGUF-004 --cite HEAD
  pv discharge FFN-GGUF-003 --complete")]
pub struct Args {
    /// The falsification test (e.g. FFN-GGUF-003).
    test: String,
    /// Directory holding the model files the contract names.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Private key to sign with (default: ~/.config/pv/keys/$USER.key, created if absent).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The commit of a fix, for citation tests (FFN-GGUF-004).
    #[arg(long)]
    cite: Option<String>,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Only complete an interrupted discharge (sign head.json for a record whose head was
    /// never written, remove leftover temporary files); run no checker.
    #[arg(long)]
    complete: bool,
    /// The repository root (contracts/, evidence/, keys/ beneath it).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn color(code: &str, text: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Runs `pv discharge`.
pub fn run(a: Args) -> Result<(), CliError> {
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };
    let bar = super::spinner();
    let progress = |m: &str| bar.set_message(m.to_string());
    let layout = Layout::at(&a.root);
    if a.complete {
        bar.finish_and_clear();
        let done = complete(&layout, &a.test, a.key.as_deref()).map_err(|e| match e {
            DischargeError::Evidence(crate::evidence::EvidenceError::Usage(_))
            | DischargeError::InvalidChain(..) => CliError::other(e.to_string()),
            _ => CliError::input(e.to_string()),
        })?;
        return emit(&match done {
            Some(seq) => format!("{}: head.json now names record {seq}, signed\n", a.test),
            None => format!("{}: nothing to complete\n", a.test),
        });
    }
    let req = Request {
        test_id: &a.test,
        models: &a.models,
        key: a.key.as_deref(),
        threads,
        cite: a.cite.as_deref(),
        progress: &progress,
    };
    let result = discharge(&layout, &req);
    bar.finish_and_clear();
    let d = result.map_err(|e| match e {
        DischargeError::Refused { .. } => CliError::other(e.to_string()),
        DischargeError::Evidence(crate::evidence::EvidenceError::Usage(_))
        | DischargeError::InvalidChain(..) => CliError::other(e.to_string()),
        _ => CliError::input(e.to_string()),
    })?;
    if let Some((private, public)) = &d.created_key {
        eprintln!(
            "created signing key {} (public half {}; commit it so others trust your records)",
            private.display(),
            public.display()
        );
    }
    if let Some(seq) = d.completed {
        eprintln!("completed an interrupted discharge: head.json now names record {seq}");
    }
    let o = &d.outcome;
    match a.format {
        Format::Json => print_json(&json!({
            "contract_id": d.contract_id,
            "test_id": a.test,
            "verdict": o.verdict,
            "passed": o.passed,
            "canonical": o.canonical,
            "from_status": d.from,
            "to_status": d.to,
            "record": d.record,
            "signer": d.signer,
            "measurements": o.measurements,
        }))?,
        Format::Text => {
            let verdict = if o.passed {
                color("32", &o.verdict)
            } else {
                color("31", &o.verdict)
            };
            emit(&format!(
                "{}\n\n{} {}: verdict {verdict} ({} model)\nstatus {} -> {}\nrecord {} (signed by {})\n",
                o.report.trim_end(),
                d.contract_id,
                a.test,
                if o.canonical {
                    "canonical"
                } else {
                    "non-canonical"
                },
                d.from,
                d.to,
                d.record.display(),
                d.signer
            ))?;
        }
    }
    if o.passed {
        Ok(())
    } else {
        Err(CliError::reported(1))
    }
}
