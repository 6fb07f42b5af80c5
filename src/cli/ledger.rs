//! `pv verify`, `pv status` and `pv gate`: what the evidence proves. The decisions are made
//! in the library ([`crate::evidence::gate`]); this file parses arguments and renders.

use serde_json::json;
use std::path::PathBuf;

use super::{CliError, Format, emit, print_json};
use crate::contract::report::{gh_message, gh_property};
use crate::evidence::gate::{GateError, GateOptions, GateReport, run};
use crate::evidence::layout::Layout;
use crate::evidence::policy::Block;
use crate::evidence::recheck::{Recheck, default_scratch};
use crate::evidence::shard::Shard;
use crate::evidence::verify::TestReport;

/// Where the evidence commands look, and what they trust.
#[derive(clap::Args)]
pub struct Where {
    /// The repository root (contracts/, evidence/, keys/ beneath it; record subjects and
    /// covers patterns are relative to it).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Root trust in this git revision (e.g. origin/main): its keys/ are the trusted
    /// signers and its records must all still be here, byte for byte. Without it, trust
    /// comes from the working tree.
    #[arg(long, value_name = "REV")]
    base: Option<String>,
}

fn input(e: GateError) -> CliError {
    CliError::input(e.to_string())
}

/// How the gate gets its re-check results: none, re-checked here (all, or one shard's
/// share), or merged from shards.
#[derive(Default)]
struct Rechecks<'a> {
    here: Option<Recheck<'a>>,
    shard: Option<Shard>,
    merge: &'a [PathBuf],
}

fn report(w: &Where, gate: bool, r: Rechecks, accept: bool) -> Result<GateReport, CliError> {
    run(
        &GateOptions {
            layout: &Layout::at(&w.root),
            base: w.base.as_deref(),
            accept_contract_changes: accept,
            recheck: r.here,
            shard: r.shard,
            merge: r.merge,
        },
        gate,
    )
    .map_err(input)
}

/// Arguments of `pv verify`.
#[derive(clap::Args)]
#[command(after_help = "\
For every record: the DSSE signature checks against a trusted key; the hash chain and \
numbering are unbroken; the signed head.json names the last record (or lags by one: an \
interrupted discharge); the status transition is one the table allows; the verdict, \
`passed` and `canonical` are re-derived from the recorded measurements by the checker's \
own judge and from the model's digest; and the record is STALE when its clause or any \
file its contract covers changed since. With --base, trust comes from that revision and \
every record it has must still be here, unchanged.

Exit status: 0 the ledger is intact (stale records are reported, not failed: the gate \
decides about them), 1 any invalid, untrusted or interrupted evidence or a base record \
removed or altered, 2 unreadable contracts, keys or base.

Examples:
  pv verify
  pv verify --base origin/main --format json")]
pub struct VerifyArgs {
    #[command(flatten)]
    at: Where,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn record_state(t: &TestReport, i: usize) -> String {
    let r = &t.records[i];
    if !r.problems.is_empty() {
        return format!("INVALID: {}", r.problems.join("; "));
    }
    let signed = format!("ok, signed by {}", r.signer.as_deref().unwrap_or("?"));
    if i + 1 == t.records.len() && !r.stale.is_empty() {
        format!("{signed}; STALE: {}", r.stale.join("; "))
    } else {
        signed
    }
}

/// Runs `pv verify`.
pub fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let g = report(&a.at, false, Rechecks::default(), false)?;
    let v = &g.verification;
    let n: usize = v.tests.iter().map(|t| t.records.len()).sum();
    let stale = v.tests.iter().filter(|t| !t.stale.is_empty()).count();
    match a.format {
        Format::Json => print_json(&json!({
            "trust": g.trust,
            "tests": v.tests,
            "orphans": v.orphans,
            "ledger_changes": g.ledger_changes,
            "contract_changes": g.contract_changes,
            "records": n,
            "stale_tests": stale,
            "files_hashed": v.files_hashed,
            "problems": g.blocks,
            "notes": g.notes,
        }))?,
        Format::Text => {
            let mut s = format!("trust: {}\n", g.trust.text);
            for t in &v.tests {
                for i in 0..t.records.len() {
                    s += &format!("{}: {}\n", t.records[i].path, record_state(t, i));
                    for note in &t.records[i].notes {
                        s += &format!("    note: {note}\n");
                    }
                }
            }
            s += &render_blocks(&g.blocks);
            for note in &g.notes {
                s += &format!("note: {note}\n");
            }
            s += &format!(
                "{n} record(s) checked; {} problem(s); {stale} test(s) with a stale latest record\n",
                g.blocks.len()
            );
            emit(&s)?;
        }
    }
    if g.open {
        Ok(())
    } else {
        Err(CliError::reported(1))
    }
}

/// Arguments of `pv status`.
#[derive(clap::Args)]
#[command(
    after_help = "Statuses are replayed from verified records, never read from the contracts. \
A test is marked STALE when its latest record no longer speaks for the contract or the code \
as they are, INVALID when its evidence does not verify, INTERRUPTED when a discharge wrote \
its record but not its head."
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
    let g = report(&a.at, false, Rechecks::default(), false)?;
    let v = &g.verification;
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
                    "enforced": t.enforced,
                    "valid": t.valid(),
                    "stale": t.stale,
                    "interrupted": t.interrupted,
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
                } else if t.interrupted.is_some() {
                    status += " (INTERRUPTED)";
                } else if !t.stale.is_empty() {
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
                    if t.required_for_gate && t.enforced {
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
    /// What was trusted, contract changes, re-checks, one line per test or problem, verdict.
    #[default]
    Text,
    /// One JSON document (the whole report).
    Json,
    /// JUnit XML (one testcase per falsification test, plus one per other problem).
    Junit,
    /// GitHub Actions workflow commands (annotations), escaped as they require.
    Github,
}

/// Arguments of `pv gate`.
#[derive(clap::Args)]
#[command(after_help = "\
Blocks (exit 1) while any gate-required test of an ACTIVE contract is not DISCHARGED by \
fresh evidence (a latest record that is valid, not STALE, canonical and passing, or a \
passing canonical re-check in this run), or any evidence is invalid, untrusted or \
interrupted. With --base REV (CI: the target branch) trust comes from REV as git has it, \
not from this tree: its keys/ are the signers, its records must all be here unchanged, \
and a change to its contracts that weakens or alters a gate-required test (removed, \
required_for_gate dropped, no longer ACTIVE, band or tolerance widened, model re-pinned, \
covers narrowed, checker or params changed) blocks unless --accept-contract-changes.

--discharge-stale runs, in this process, the checkers of required tests whose latest \
record is stale or missing, with the trusted params, and decides on those results \
(recorded under --scratch, signed by a key made for the run). --engine PATH takes the \
measurements from another pv build (the code under test: `PATH measure ...`) and judges \
them here, so the pull request's code is measured but never judges itself.

Exit status: 0 open, 1 blocked, 2 contracts, keys, base or models cannot be read.

Examples:
  pv gate
  pv gate --base origin/main --discharge-stale --models models --format github
  judge/pv gate --base origin/main --discharge-stale --engine target/release/pv")]
pub struct GateArgs {
    #[command(flatten)]
    at: Where,
    /// Accept contract changes against --base that weaken or alter gate-required tests
    /// (a maintainer's decision; they are still listed).
    #[arg(long)]
    accept_contract_changes: bool,
    /// Re-run the checkers of required tests whose latest record is stale or missing, and
    /// decide on the fresh results.
    #[arg(long)]
    discharge_stale: bool,
    /// Model directory for --discharge-stale.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// A pv build to measure with (`ENGINE measure ...`) instead of this process; the
    /// verdicts are still this process's.
    #[arg(long, value_name = "PATH", requires = "discharge_stale")]
    engine: Option<PathBuf>,
    /// Where re-check records and summary.json go (default: ROOT/target/pv-gate).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Re-check only shard K of N of the due tests (dealt by the seconds their latest
    /// records took, the same split in every shard) and judge only those; a final `pv gate
    /// --merge` judges the whole.
    #[arg(long, value_name = "K/N", requires = "discharge_stale")]
    shard: Option<Shard>,
    /// Judge the union of these shards' scratch directories (each a shard's --scratch, its
    /// records signed by that shard's run key) as this run's re-checks.
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with = "discharge_stale")]
    merge: Vec<PathBuf>,
    /// Worker threads for re-checks (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: GateFormat,
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_blocks(blocks: &[Block]) -> String {
    let mut s = String::new();
    for b in blocks {
        s += &format!("BLOCKED {}: {} [{}]\n", b.subject, b.reason, b.rule);
        if let Some(d) = &b.detail {
            for line in d.lines() {
                s += &format!("        | {line}\n");
            }
        }
    }
    s
}

/// Whether block `b` is about test `c/t` (by name, or by a file in its evidence).
fn about(b: &Block, c: &str, t: &str) -> bool {
    b.subject == format!("{c}/{t}") || b.subject.contains(&format!("/{c}/{t}/"))
}

fn verdict_line(g: &GateReport) -> String {
    if g.open {
        "gate open: every required test is DISCHARGED by fresh evidence and all evidence verifies"
            .into()
    } else {
        format!("gate BLOCKED: {} problem(s)", g.blocks.len())
    }
}

fn text(g: &GateReport) -> String {
    let mut s = format!("trust: {}\n", g.trust.text);
    if let Some(rev) = &g.trust.rev {
        if g.contract_changes.is_empty() {
            s += &format!("contract changes against {rev}: none\n");
        } else {
            s += &format!("contract changes against {rev}:\n");
            for c in &g.contract_changes {
                let tag = match c.impact {
                    crate::evidence::changes::Impact::Weakens => "WEAKENS ",
                    crate::evidence::changes::Impact::Changes => "CHANGES ",
                    crate::evidence::changes::Impact::Tightens => "tightens",
                    crate::evidence::changes::Impact::Neutral => "        ",
                };
                s += &format!("  {tag} {}: {}\n", c.subject(), c.what);
            }
        }
    }
    if let Some(sh) = &g.shard {
        s += &format!(
            "shard {}/{}: {} of the {} due test(s), about {:.0} s by their latest records\n",
            sh.shard.index,
            sh.shard.count,
            sh.tests.len(),
            sh.due,
            sh.tests.iter().map(|t| t.1).sum::<f64>()
        );
    }
    for l in &g.shards {
        s += &format!(
            "shard ledger {} (keys {}): {}\n",
            l.dir.display(),
            if l.keys.is_empty() {
                "none".to_string()
            } else {
                l.keys.join(", ")
            },
            if l.tests.is_empty() {
                "no records".to_string()
            } else {
                l.tests.join(", ")
            }
        );
    }
    if g.scratch.is_some() || !g.shards.is_empty() {
        match &g.scratch {
            Some(dir) => s += &format!("re-checked in this run (recorded in {}):\n", dir.display()),
            None => s += "re-checked by the shards, judged here:\n",
        }
        if g.fresh.is_empty() {
            s += "  nothing was stale or missing\n";
        }
        for f in &g.fresh {
            s += &format!("  {}\n", f.summary());
        }
    }
    for t in g.tests.iter().filter(|t| t.required) {
        if !g
            .blocks
            .iter()
            .any(|b| about(b, &t.contract_id, &t.test_id))
        {
            s += &format!("ok      {}/{}: {}\n", t.contract_id, t.test_id, t.counted);
        }
    }
    s += &render_blocks(&g.blocks);
    for n in &g.notes {
        s += &format!("note: {n}\n");
    }
    s + &verdict_line(g) + "\n"
}

fn junit(g: &GateReport) -> String {
    let mut cases = String::new();
    let mut failures = 0;
    let mut used = vec![false; g.blocks.len()];
    for t in &g.tests {
        let mine: Vec<&Block> = g
            .blocks
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                let m = about(b, &t.contract_id, &t.test_id);
                if m {
                    used[*i] = true;
                }
                m
            })
            .map(|(_, b)| b)
            .collect();
        cases += &format!(
            "  <testcase classname=\"{}\" name=\"{}\">",
            xml(&t.contract_id),
            xml(&t.test_id)
        );
        if let Some(first) = mine.first() {
            failures += 1;
            let body: Vec<String> = mine
                .iter()
                .map(|b| {
                    format!(
                        "{}{}",
                        b.reason,
                        b.detail
                            .as_deref()
                            .map(|d| format!("\n{d}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            cases += &format!(
                "<failure message=\"{}\">{}</failure>",
                xml(&first.reason),
                xml(&body.join("\n"))
            );
        }
        cases += "</testcase>\n";
    }
    let others: Vec<&Block> = g
        .blocks
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(b, _)| b)
        .collect();
    for b in &others {
        failures += 1;
        cases += &format!(
            "  <testcase classname=\"{}\" name=\"{}\"><failure message=\"{}\"/></testcase>\n",
            xml(b.rule),
            xml(&b.subject),
            xml(&b.reason)
        );
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"pv gate\" tests=\"{}\" failures=\"{failures}\">\n{cases}</testsuite>\n",
        g.tests.len() + others.len()
    )
}

fn github(g: &GateReport) -> String {
    let mut s = format!(
        "::notice title=pv gate trust::{}\n",
        gh_message(&g.trust.text)
    );
    for c in g.contract_changes.iter().filter(|c| c.impact.blocks()) {
        s += &format!(
            "::warning title={}::{}\n",
            gh_property(&format!("contract change {}", c.subject())),
            gh_message(&c.what)
        );
    }
    for f in &g.fresh {
        s += &format!(
            "::notice title={}::{}\n",
            gh_property(&format!("pv gate re-checked {}", f.test_id)),
            gh_message(&f.summary())
        );
    }
    for b in &g.blocks {
        let file = if b.subject.contains('/') && b.subject.ends_with(".json") {
            format!("file={},", gh_property(&b.subject))
        } else {
            String::new()
        };
        let msg = match &b.detail {
            Some(d) => format!("{}: {}\n{d}", b.subject, b.reason),
            None => format!("{}: {}", b.subject, b.reason),
        };
        s += &format!(
            "::error {file}title={}::{}\n",
            gh_property(&format!("pv gate {}", b.rule)),
            gh_message(&msg)
        );
    }
    for n in &g.notes {
        s += &format!("::notice title=pv gate::{}\n", gh_message(n));
    }
    s + &verdict_line(g) + "\n"
}

/// Runs `pv gate`.
pub fn gate(a: GateArgs) -> Result<(), CliError> {
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };
    let bar = super::spinner();
    let progress = |m: &str| bar.set_message(m.to_string());
    let scratch = a
        .scratch
        .clone()
        .unwrap_or_else(|| default_scratch(&a.at.root));
    let recheck = a.discharge_stale.then(|| Recheck {
        models: &a.models,
        engine: a.engine.as_deref(),
        scratch: &scratch,
        threads,
        progress: &progress,
    });
    let result = report(
        &a.at,
        true,
        Rechecks {
            here: recheck,
            shard: a.shard,
            merge: &a.merge,
        },
        a.accept_contract_changes,
    );
    bar.finish_and_clear();
    let g = result?;
    match a.format {
        GateFormat::Text => emit(&text(&g))?,
        GateFormat::Json => {
            print_json(&serde_json::to_value(&g).map_err(|e| CliError::other(e.to_string()))?)?
        }
        GateFormat::Junit => emit(&junit(&g))?,
        GateFormat::Github => emit(&github(&g))?,
    }
    if g.open {
        Ok(())
    } else {
        Err(CliError::reported(1))
    }
}
