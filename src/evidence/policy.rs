//! What blocks: each rule a trust decision depends on is a small type, and a policy is a
//! list of them. `pv verify` applies the integrity rules; `pv gate` applies those and the
//! rules about contracts and required tests. The command line only renders the result.

use serde::Serialize;

use super::Status;
use super::changes::{ContractChange, LedgerChange};
use super::recheck::Fresh;
use super::verify::{TestReport, Verification};

/// A test the gate requires, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Required {
    /// The contract.
    pub contract_id: String,
    /// The test.
    pub test_id: String,
    /// Why it is required (`required_for_gate`, or required at the base).
    pub why: String,
}

/// Everything the rules look at.
pub struct Facts<'a> {
    /// The verified ledger.
    pub verification: &'a Verification,
    /// The tests the gate requires.
    pub required: &'a [Required],
    /// Tests re-checked in this run.
    pub fresh: &'a [Fresh],
    /// Base records missing or altered in the tree (with `--base`).
    pub ledger_changes: &'a [LedgerChange],
    /// Contract differences against the base (with `--base`).
    pub contract_changes: &'a [ContractChange],
    /// The maintainer accepted contract changes (`--accept-contract-changes`).
    pub accept_contract_changes: bool,
}

/// One reason the gate is closed: which rule, about what, why in one line, and any table.
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    /// The rule's id.
    pub rule: &'static str,
    /// What it is about: `contract/test`, or a file.
    pub subject: String,
    /// Why, in one line.
    pub reason: String,
    /// More (a checker's table), when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A rule of a policy.
pub trait Rule {
    /// Its id, as blocks name it.
    fn id(&self) -> &'static str;
    /// The blocks it finds.
    fn check(&self, f: &Facts, out: &mut Vec<Block>);
}

fn block(rule: &'static str, subject: impl Into<String>, reason: impl Into<String>) -> Block {
    Block {
        rule,
        subject: subject.into(),
        reason: reason.into(),
        detail: None,
    }
}

/// Every record verifies (trusted signer, chain, re-derived claims) and every head checks.
pub struct EvidenceIntact;

impl Rule for EvidenceIntact {
    fn id(&self) -> &'static str {
        "evidence-intact"
    }
    fn check(&self, f: &Facts, out: &mut Vec<Block>) {
        for t in &f.verification.tests {
            for p in &t.problems {
                out.push(block(self.id(), t.name(), format!("invalid ledger: {p}")));
            }
            for r in &t.records {
                for p in &r.problems {
                    out.push(block(self.id(), &r.path, format!("invalid record: {p}")));
                }
            }
        }
    }
}

/// No discharge was left between its record and its head.
pub struct LedgerComplete;

impl Rule for LedgerComplete {
    fn id(&self) -> &'static str {
        "ledger-complete"
    }
    fn check(&self, f: &Facts, out: &mut Vec<Block>) {
        for t in &f.verification.tests {
            if let Some(i) = &t.interrupted {
                out.push(block(
                    self.id(),
                    &i.record,
                    format!(
                        "interrupted discharge: record {} was written but head.json does not name it yet; complete it with `pv discharge {} --complete`",
                        i.sequence, t.test_id
                    ),
                ));
            }
        }
    }
}

/// Every record of the base is in the tree, byte for byte, where it was.
pub struct AppendOnly;

impl Rule for AppendOnly {
    fn id(&self) -> &'static str {
        "append-only"
    }
    fn check(&self, f: &Facts, out: &mut Vec<Block>) {
        for c in f.ledger_changes {
            out.push(block(
                self.id(),
                &c.path,
                format!(
                    "a record of the base was {}; the ledger is append-only",
                    c.what
                ),
            ));
        }
    }
}

/// No gate-required test of the base is weakened or changed, unless accepted.
pub struct ContractsNotWeakened;

impl Rule for ContractsNotWeakened {
    fn id(&self) -> &'static str {
        "contracts-not-weakened"
    }
    fn check(&self, f: &Facts, out: &mut Vec<Block>) {
        if f.accept_contract_changes {
            return;
        }
        for c in f.contract_changes.iter().filter(|c| c.impact.blocks()) {
            out.push(block(
                self.id(),
                c.subject(),
                format!(
                    "contract change against the base {} a gate-required test: {}; a maintainer may pass --accept-contract-changes",
                    if c.impact == super::changes::Impact::Weakens { "weakens" } else { "changes" },
                    c.what
                ),
            ));
        }
    }
}

/// Every required test is DISCHARGED by fresh evidence: a fresh, canonical, passing latest
/// record, or a passing canonical re-check in this run.
pub struct RequiredDischarged;

impl RequiredDischarged {
    fn ledger_reason(t: &TestReport) -> Option<String> {
        if t.records.is_empty() {
            return Some(format!(
                "no evidence (status PENDING); run `pv discharge {}` or `pv gate --discharge-stale`",
                t.test_id
            ));
        }
        if !t.stale.is_empty() {
            let last = &t.records[t.records.len() - 1];
            return Some(format!(
                "the latest record {} is STALE: {}; run `pv discharge {}` or `pv gate --discharge-stale`",
                last.path,
                t.stale.join("; "),
                t.test_id
            ));
        }
        (t.status != Status::Discharged)
            .then(|| format!("status {}; required_for_gate needs DISCHARGED", t.status))
    }
}

impl Rule for RequiredDischarged {
    fn id(&self) -> &'static str {
        "required-discharged"
    }
    fn check(&self, f: &Facts, out: &mut Vec<Block>) {
        for r in f.required {
            let name = format!("{}/{}", r.contract_id, r.test_id);
            if let Some(fr) = f
                .fresh
                .iter()
                .find(|x| x.contract_id == r.contract_id && x.test_id == r.test_id)
            {
                if fr.discharges() {
                    continue;
                }
                let reason = match (&fr.error, &fr.verdict) {
                    (Some(e), _) => {
                        format!("re-checked in this run but the checker could not run: {e}")
                    }
                    (None, Some(v)) => format!(
                        "re-checked in this run ({} measured, judged here): verdict {v}{}",
                        fr.measured_by,
                        if !fr.passed {
                            " (FALSIFIED)".to_string()
                        } else {
                            " on a model that is not the pinned one (ALGORITHM_LEVEL_DISCHARGED)"
                                .to_string()
                        }
                    ),
                    (None, None) => "re-checked in this run without a verdict".into(),
                };
                out.push(Block {
                    rule: self.id(),
                    subject: name,
                    reason,
                    detail: (!fr.report.is_empty()).then(|| fr.report.clone()),
                });
                continue;
            }
            let Some(t) = f.verification.test(&r.contract_id, &r.test_id) else {
                out.push(block(
                    self.id(),
                    name,
                    format!(
                        "required ({}) but no contract in this tree defines it",
                        r.why
                    ),
                ));
                continue;
            };
            if !t.valid() {
                continue; // EvidenceIntact says why.
            }
            if let Some(why) = Self::ledger_reason(t) {
                out.push(block(self.id(), name, why));
            }
        }
    }
}

/// A list of rules.
pub struct Policy(Vec<Box<dyn Rule>>);

impl Policy {
    /// The integrity rules `pv verify` applies: intact evidence, complete ledger, and with
    /// a base, append-only.
    pub fn verify() -> Self {
        Policy(vec![
            Box::new(EvidenceIntact),
            Box::new(LedgerComplete),
            Box::new(AppendOnly),
        ])
    }

    /// What `pv gate` applies: the integrity rules, contracts not weakened against the
    /// base, and every required test discharged by fresh evidence.
    pub fn gate() -> Self {
        let mut p = Self::verify();
        p.0.push(Box::new(ContractsNotWeakened));
        p.0.push(Box::new(RequiredDischarged));
        p
    }

    /// The ids of its rules, in order.
    pub fn rules(&self) -> Vec<&'static str> {
        self.0.iter().map(|r| r.id()).collect()
    }

    /// Every block its rules find.
    pub fn apply(&self, f: &Facts) -> Vec<Block> {
        let mut out = Vec::new();
        for r in &self.0 {
            r.check(f, &mut out);
        }
        out
    }
}
