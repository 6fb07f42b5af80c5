//! `pv verify`, `pv status` and `pv gate`: what the evidence proves, checked against the
//! contracts, the trusted keys and the files on disk.

use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Format, emit, print_json};
use crate::contract;
use crate::evidence::discharge::Layout;
use crate::evidence::keys::trusted_keys;
use crate::evidence::verify::{Places, TestReport, Verification, verify_all};
use crate::evidence::{EvidenceError, Status};

/// Where the evidence commands look.
#[derive(clap::Args)]
pub struct Where {
    /// The repository root (contracts/, evidence/, keys/ beneath it; record subjects are
    /// relative to it).
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

fn verification(w: &Where) -> Result<Verification, CliError> {
    let layout = Layout::at(&w.root);
    let contracts =
        contract::load_all(&layout.contracts).map_err(|e| CliError::input(e.to_string()))?;
    let ev = |e: EvidenceError| CliError::input(e.to_string());
    let trusted = trusted_keys(&layout.keys).map_err(ev)?;
    verify_all(
        &contracts,
        &Places {
            root: &layout.root,
            evidence: &layout.evidence,
            trusted: &trusted,
        },
    )
    .map_err(ev)
}

/// Arguments of `pv verify`.
#[derive(clap::Args)]
#[command(after_help = "\
For every record: the DSSE signature checks against a key in keys/, the hash chain and \
numbering are unbroken up to head.json, the status transition is one the table allows, \
the clause digest equals the current contract's (else STALE), and subject files present \
on disk have the recorded sha256.

Exit status: 0 all valid, 1 any invalid, untrusted or stale record or orphan evidence, \
2 unreadable contracts or keys.")]
pub struct VerifyArgs {
    #[command(flatten)]
    at: Where,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv verify`.
pub fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let v = verification(&a.at)?;
    let mut text = String::new();
    let (mut n, mut bad) = (0, 0);
    for t in &v.tests {
        for p in &t.problems {
            bad += 1;
            text += &format!("{}/{}: INVALID: {p}\n", t.contract_id, t.test_id);
        }
        for (i, r) in t.records.iter().enumerate() {
            n += 1;
            let latest = i + 1 == t.records.len();
            let state = if !r.problems.is_empty() {
                bad += 1;
                format!("INVALID: {}", r.problems.join("; "))
            } else if r.stale && latest {
                bad += 1;
                "STALE".to_string()
            } else {
                format!("ok, signed by {}", r.signer.as_deref().unwrap_or("?"))
            };
            text += &format!("{}: {state}\n", r.path);
            for note in &r.notes {
                text += &format!("    note: {note}\n");
            }
        }
    }
    for o in &v.orphans {
        bad += 1;
        text += &format!("{o}: INVALID: evidence for a test no contract defines\n");
    }
    text += &format!("{n} record(s) checked; {bad} problem(s)\n");
    match a.format {
        Format::Text => emit(&text)?,
        Format::Json => print_json(
            &json!({"tests": v.tests, "orphans": v.orphans, "records": n, "problems": bad}),
        )?,
    }
    if bad > 0 {
        Err(CliError::reported(1))
    } else {
        Ok(())
    }
}

/// Arguments of `pv status`.
#[derive(clap::Args)]
#[command(
    after_help = "Statuses are replayed from verified records, never read from the contracts."
)]
pub struct StatusArgs {
    #[command(flatten)]
    at: Where,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `pv status`.
pub fn status(a: StatusArgs) -> Result<(), CliError> {
    let v = verification(&a.at)?;
    match a.format {
        Format::Json => print_json(&json!(
            v.tests
                .iter()
                .map(|t| json!({
                    "contract_id": t.contract_id,
                    "test_id": t.test_id,
                    "status": t.status,
                    "verdict": t.verdict,
                    "date": t.date,
                    "signer": t.signer,
                    "required_for_gate": t.required_for_gate,
                    "valid": t.valid(),
                    "stale": t.stale,
                    "records": t.records.len(),
                }))
                .collect::<Vec<_>>()
        )),
        Format::Text => {
            let mut s = format!(
                "{:<30} {:<13} {:<27} {:<7} {:<21} {}\n",
                "contract", "test", "status", "verdict", "last evidence", "signer"
            );
            for t in &v.tests {
                let mut status = t.status.to_string();
                if !t.valid() {
                    status += " (INVALID)";
                } else if t.stale {
                    status += " (STALE)";
                }
                s += &format!(
                    "{:<30} {:<13} {:<27} {:<7} {:<21} {}{}\n",
                    t.contract_id,
                    t.test_id,
                    status,
                    t.verdict.as_deref().unwrap_or("-"),
                    t.date.as_deref().unwrap_or("-"),
                    t.signer.as_deref().unwrap_or("-"),
                    if t.required_for_gate {
                        "  [required]"
                    } else {
                        ""
                    }
                );
            }
            emit(&s)
        }
    }
}

/// Output formats of `pv gate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GateFormat {
    /// One line per test, then the verdict.
    #[default]
    Text,
    /// One JSON document.
    Json,
    /// JUnit XML (one testcase per falsification test).
    Junit,
    /// GitHub Actions annotations.
    Github,
}

/// Arguments of `pv gate`.
#[derive(clap::Args)]
#[command(after_help = "\
Blocks (exit 1) while any required_for_gate test of a non-retired contract is not \
DISCHARGED, or any evidence is invalid, untrusted or stale, or belongs to no test; \
says why for each. Exit 0 when the gate is open, 2 when contracts or keys cannot be read.

Example (CI):
  pv validate && pv gate --format github")]
pub struct GateArgs {
    #[command(flatten)]
    at: Where,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: GateFormat,
}

/// Why the gate blocks on one test (empty when it does not).
fn reasons(t: &TestReport) -> Vec<String> {
    let mut r = Vec::new();
    if t.enforced && t.required_for_gate && t.status != Status::Discharged {
        r.push(format!(
            "status {}; required_for_gate needs DISCHARGED",
            t.status
        ));
    }
    r.extend(t.problems.iter().map(|p| format!("invalid evidence: {p}")));
    for rec in &t.records {
        r.extend(
            rec.problems
                .iter()
                .map(|p| format!("invalid record {}: {p}", rec.path)),
        );
    }
    if t.stale && t.valid() {
        r.push(
            "the latest record is STALE: the clause changed since; run pv discharge again".into(),
        );
    }
    r
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Runs `pv gate`.
pub fn gate(a: GateArgs) -> Result<(), CliError> {
    let v = verification(&a.at)?;
    let rows: Vec<(&TestReport, Vec<String>)> = v.tests.iter().map(|t| (t, reasons(t))).collect();
    let orphan_reasons: Vec<String> = v
        .orphans
        .iter()
        .map(|o| format!("{o}: evidence for a test no contract defines"))
        .collect();
    let blocked = rows.iter().filter(|(_, r)| !r.is_empty()).count() + orphan_reasons.len();
    let verdict = if blocked == 0 {
        "gate open: every required test is DISCHARGED and all evidence verifies".to_string()
    } else {
        format!("gate BLOCKED: {blocked} problem(s)")
    };
    match a.format {
        GateFormat::Text => {
            let mut s = String::new();
            for (t, r) in &rows {
                let head = format!("{}/{}", t.contract_id, t.test_id);
                if r.is_empty() {
                    s += &format!("ok      {head}: {}\n", t.status);
                } else {
                    for why in r {
                        s += &format!("BLOCKED {head}: {why}\n");
                    }
                }
            }
            for o in &orphan_reasons {
                s += &format!("BLOCKED {o}\n");
            }
            emit(&format!("{s}{verdict}\n"))?;
        }
        GateFormat::Json => print_json(&json!({
            "open": blocked == 0,
            "tests": rows.iter().map(|(t, r)| json!({
                "contract_id": t.contract_id, "test_id": t.test_id, "status": t.status,
                "required_for_gate": t.required_for_gate, "reasons": r,
            })).collect::<Vec<_>>(),
            "orphans": v.orphans,
            "summary": verdict,
        }))?,
        GateFormat::Junit => {
            let failures = rows.iter().filter(|(_, r)| !r.is_empty()).count();
            let mut s = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"pv gate\" tests=\"{}\" failures=\"{}\">\n",
                rows.len() + orphan_reasons.len(),
                failures + orphan_reasons.len()
            );
            for (t, r) in &rows {
                s += &format!(
                    "  <testcase classname=\"{}\" name=\"{}\">",
                    xml(&t.contract_id),
                    xml(&t.test_id)
                );
                if !r.is_empty() {
                    s += &format!(
                        "<failure message=\"{}\">{}</failure>",
                        xml(&r[0]),
                        xml(&r.join("\n"))
                    );
                }
                s += "</testcase>\n";
            }
            for o in &orphan_reasons {
                s += &format!(
                    "  <testcase classname=\"orphans\" name=\"{0}\"><failure message=\"{0}\"/></testcase>\n",
                    xml(o)
                );
            }
            emit(&(s + "</testsuite>\n"))?;
        }
        GateFormat::Github => {
            let mut s = String::new();
            for (t, r) in &rows {
                for why in r {
                    s += &format!(
                        "::error title=pv gate {}::{}/{}: {}\n",
                        t.test_id,
                        t.contract_id,
                        t.test_id,
                        why.replace('\n', " ")
                    );
                }
            }
            for o in &orphan_reasons {
                s += &format!("::error title=pv gate::{o}\n");
            }
            emit(&format!("{s}{verdict}\n"))?;
        }
    }
    if blocked > 0 {
        Err(CliError::reported(1))
    } else {
        Ok(())
    }
}
