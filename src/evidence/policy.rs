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

#[cfg(test)]
mod tests {
    use super::super::changes::Impact;
    use super::super::verify::{Interrupted, RecordReport};
    use super::*;

    fn report(test: &str, status: Status) -> TestReport {
        TestReport {
            contract_id: "c".into(),
            test_id: test.into(),
            required_for_gate: true,
            enforced: true,
            status,
            verdict: None,
            date: None,
            signer: None,
            stale: Vec::new(),
            problems: Vec::new(),
            interrupted: None,
            unsigned_head: false,
            leftovers: Vec::new(),
            records: Vec::new(),
        }
    }

    fn record(path: &str) -> RecordReport {
        RecordReport {
            path: path.into(),
            sequence: 1,
            sha256: "0".repeat(64),
            problems: Vec::new(),
            stale: Vec::new(),
            notes: Vec::new(),
            statement: None,
            signer: Some("k".into()),
        }
    }

    fn required(test: &str) -> Required {
        Required {
            contract_id: "c".into(),
            test_id: test.into(),
            why: "required_for_gate".into(),
        }
    }

    fn fresh(test: &str, passed: bool, canonical: bool, error: Option<&str>) -> Fresh {
        Fresh {
            contract_id: "c".into(),
            test_id: test.into(),
            checker: "trace_agreement".into(),
            measured_by: "target/release/pv".into(),
            verdict: error
                .is_none()
                .then(|| if passed { "H1" } else { "H2" }.into()),
            passed,
            canonical,
            report: "the table".into(),
            error: error.map(String::from),
            record: None,
            measurements: serde_json::Value::Null,
        }
    }

    /// The facts of one gate run, with the parts a test leaves empty.
    struct World {
        v: Verification,
        required: Vec<Required>,
        fresh: Vec<Fresh>,
        ledger: Vec<LedgerChange>,
        contracts: Vec<ContractChange>,
        accept: bool,
    }

    impl World {
        fn new(tests: Vec<TestReport>) -> Self {
            World {
                v: Verification {
                    tests,
                    orphans: Vec::new(),
                    files_hashed: 0,
                },
                required: Vec::new(),
                fresh: Vec::new(),
                ledger: Vec::new(),
                contracts: Vec::new(),
                accept: false,
            }
        }

        fn blocks(&self, policy: &Policy) -> Vec<(&'static str, String, String)> {
            let f = Facts {
                verification: &self.v,
                required: &self.required,
                fresh: &self.fresh,
                ledger_changes: &self.ledger,
                contract_changes: &self.contracts,
                accept_contract_changes: self.accept,
            };
            policy
                .apply(&f)
                .into_iter()
                .map(|b| (b.rule, b.subject, b.reason))
                .collect()
        }
    }

    fn discharged(test: &str) -> TestReport {
        let mut t = report(test, Status::Discharged);
        t.records
            .push(record(&format!("evidence/c/{test}/0001.dsse.json")));
        t
    }

    #[test]
    fn the_policies_list_their_rules_in_order() {
        assert_eq!(
            Policy::verify().rules(),
            ["evidence-intact", "ledger-complete", "append-only"]
        );
        assert_eq!(
            Policy::gate().rules(),
            [
                "evidence-intact",
                "ledger-complete",
                "append-only",
                "contracts-not-weakened",
                "required-discharged"
            ]
        );
    }

    #[test]
    fn an_intact_discharged_ledger_opens_the_gate() {
        let mut w = World::new(vec![discharged("T-1")]);
        w.required.push(required("T-1"));
        assert!(w.blocks(&Policy::gate()).is_empty());
    }

    #[test]
    fn every_invalid_chain_and_record_blocks_by_name() {
        let mut t = discharged("T-1");
        t.problems
            .push("head.json names record 3, which does not exist".into());
        t.records[0]
            .problems
            .push("signed by an untrusted key".into());
        let w = World::new(vec![t]);
        let b = w.blocks(&Policy::verify());
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!((b[0].0, b[0].1.as_str()), ("evidence-intact", "c/T-1"));
        assert!(b[0].2.starts_with("invalid ledger: head.json"));
        assert_eq!(b[1].1, "evidence/c/T-1/0001.dsse.json");
        assert!(b[1].2.contains("untrusted"));
    }

    #[test]
    fn an_interrupted_discharge_blocks_with_the_command_that_completes_it() {
        let mut t = discharged("T-1");
        t.interrupted = Some(Interrupted {
            sequence: 2,
            record: "evidence/c/T-1/0002.dsse.json".into(),
        });
        let b = World::new(vec![t]).blocks(&Policy::verify());
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "ledger-complete");
        assert!(b[0].2.contains("pv discharge T-1 --complete"), "{}", b[0].2);
    }

    #[test]
    fn a_base_record_removed_or_edited_blocks() {
        let mut w = World::new(vec![discharged("T-1")]);
        w.ledger.push(LedgerChange {
            path: "evidence/c/T-1/0001.dsse.json".into(),
            what: "edited".into(),
        });
        let b = w.blocks(&Policy::verify());
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "append-only");
        assert!(b[0].2.contains("was edited"));
    }

    #[test]
    fn weakened_or_changed_contracts_block_unless_accepted_and_tightening_never_does() {
        let change = |impact| ContractChange {
            contract_id: "c".into(),
            test_id: Some("T-1".into()),
            what: "band widened or moved".into(),
            impact,
        };
        let mut w = World::new(vec![discharged("T-1")]);
        w.contracts = vec![
            change(Impact::Weakens),
            change(Impact::Changes),
            change(Impact::Tightens),
            change(Impact::Neutral),
        ];
        let b = w.blocks(&Policy::gate());
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].2.contains("weakens a gate-required test"));
        assert!(b[1].2.contains("changes a gate-required test"));
        w.accept = true;
        assert!(w.blocks(&Policy::gate()).is_empty());
        // pv verify does not judge contracts.
        w.accept = false;
        assert!(w.blocks(&Policy::verify()).is_empty());
    }

    #[test]
    fn a_required_test_needs_fresh_canonical_passing_evidence() {
        let mut stale = discharged("STALE");
        stale
            .stale
            .push("covered code changed: src/model/forward.rs".into());
        let tests = vec![
            report("PENDING", Status::Pending),
            stale,
            {
                let mut t = discharged("FALSIFIED");
                t.status = Status::Falsified;
                t
            },
            {
                let mut t = discharged("ALGO");
                t.status = Status::AlgorithmLevelDischarged;
                t
            },
            discharged("OK"),
        ];
        let mut w = World::new(tests);
        for t in ["PENDING", "STALE", "FALSIFIED", "ALGO", "OK", "GONE"] {
            w.required.push(required(t));
        }
        let b = w.blocks(&Policy::gate());
        let said: Vec<(&str, &str)> = b.iter().map(|b| (b.1.as_str(), b.2.as_str())).collect();
        assert_eq!(said.len(), 5, "{said:?}");
        assert!(said[0].1.starts_with("no evidence (status PENDING)"));
        assert!(said[1].1.contains("is STALE: covered code changed"));
        assert!(said[2].1.contains("status FALSIFIED"));
        assert!(said[3].1.contains("ALGORITHM_LEVEL_DISCHARGED"));
        assert_eq!(said[4].0, "c/GONE");
        assert!(said[4].1.contains("no contract in this tree defines it"));
        assert!(b.iter().all(|b| b.0 == "required-discharged"));
        // A test nobody requires never blocks on its status.
        w.required.clear();
        assert!(w.blocks(&Policy::gate()).is_empty());
    }

    #[test]
    fn a_recheck_in_this_run_decides_over_the_ledger() {
        let mut stale = discharged("T-1");
        stale.stale.push("covered code changed".into());
        let mut w = World::new(vec![stale]);
        w.required.push(required("T-1"));
        // A passing canonical re-check discharges the stale test.
        w.fresh = vec![fresh("T-1", true, true, None)];
        assert!(w.blocks(&Policy::gate()).is_empty());
        // A falsifying one blocks with the verdict; the table goes in the detail.
        w.fresh = vec![fresh("T-1", false, true, None)];
        let f = Facts {
            verification: &w.v,
            required: &w.required,
            fresh: &w.fresh,
            ledger_changes: &[],
            contract_changes: &[],
            accept_contract_changes: false,
        };
        let b = Policy::gate().apply(&f);
        assert_eq!(b.len(), 1);
        assert!(
            b[0].reason.contains("verdict H2 (FALSIFIED)"),
            "{}",
            b[0].reason
        );
        assert_eq!(b[0].detail.as_deref(), Some("the table"));
        // On another model than the pinned one, or when the checker could not run.
        w.fresh = vec![fresh("T-1", true, false, None)];
        assert!(
            w.blocks(&Policy::gate())[0]
                .2
                .contains("not the pinned one")
        );
        w.fresh = vec![fresh("T-1", false, false, Some("model file missing"))];
        assert!(
            w.blocks(&Policy::gate())[0]
                .2
                .contains("could not run: model file missing")
        );
    }

    #[test]
    fn an_invalid_ledger_is_reported_once_by_the_integrity_rule() {
        let mut t = discharged("T-1");
        t.records[0].problems.push("bad signature".into());
        let mut w = World::new(vec![t]);
        w.required.push(required("T-1"));
        let b = w.blocks(&Policy::gate());
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].0, "evidence-intact");
    }
}
