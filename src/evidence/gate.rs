//! `pv verify` and `pv gate` as library calls: gather the facts (trust, the verified ledger,
//! changes against the base, fresh re-checks), apply a [`Policy`], and return a report the
//! command line only renders.

use std::path::PathBuf;

use serde::Serialize;

use super::changes::{self, ContractChange, LedgerChange};
use super::discharge::Layout;
use super::policy::{Block, Facts, Policy, Required};
use super::recheck::{self, Fresh, Recheck, ScratchKey};
use super::record::CodeBinding;
use super::trust::{Base, Trust, TrustSummary};
use super::verify::{Clause, Places, Verification, Verifier};
use super::{EvidenceError, Status};
use crate::contract::{self, Contract, ContractError, FalsificationTest, LoadedContract};

/// Why a verification or gate could not run (bad input: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The tree's contracts do not load.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// Keys, evidence, the base or a model could not be read.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

/// What to verify or gate, and how.
pub struct GateOptions<'a> {
    /// The repository.
    pub layout: &'a Layout,
    /// The base revision trust is rooted in (`None`: the working tree).
    pub base: Option<&'a str>,
    /// The maintainer accepts contract changes against the base.
    pub accept_contract_changes: bool,
    /// Re-check stale or missing required tests in this run.
    pub recheck: Option<Recheck<'a>>,
}

/// One test as the gate sees it.
#[derive(Clone, Debug, Serialize)]
pub struct GateTest {
    /// The contract.
    pub contract_id: String,
    /// The test.
    pub test_id: String,
    /// Whether the gate requires it.
    pub required: bool,
    /// Status replayed from the ledger.
    pub status: Status,
    /// Verdict of the latest valid record.
    pub verdict: Option<String>,
    /// Why its latest record is stale (empty when fresh).
    pub stale: Vec<String>,
    /// What the gate counts: the ledger's status, or the fresh result.
    pub counted: String,
}

/// The outcome of `pv verify` or `pv gate`.
#[derive(Clone, Debug, Serialize)]
pub struct GateReport {
    /// What was trusted.
    pub trust: TrustSummary,
    /// The rules applied.
    pub rules: Vec<&'static str>,
    /// The verified ledger.
    pub verification: Verification,
    /// Contract differences against the base.
    pub contract_changes: Vec<ContractChange>,
    /// Base records missing or altered.
    pub ledger_changes: Vec<LedgerChange>,
    /// Per test.
    pub tests: Vec<GateTest>,
    /// Tests re-checked in this run.
    pub fresh: Vec<Fresh>,
    /// Where the fresh results were recorded.
    pub scratch: Option<PathBuf>,
    /// Remarks that do not block (orphan evidence, leftover temporary files, new keys).
    pub notes: Vec<String>,
    /// Why the gate is closed (empty: open).
    pub blocks: Vec<Block>,
    /// Whether nothing blocks.
    pub open: bool,
}

/// The clause a test is held to, and whether the gate requires it: with a base, a test
/// the base requires stays required, under the base's clause, when the tree weakens or
/// changes it and the change is not accepted.
struct Terms<'a> {
    clause: Clause<'a>,
    required: Option<String>,
}

fn clause_for<'a>(
    c: &'a LoadedContract,
    t: &'a FalsificationTest,
    base: Option<&'a Base>,
    changes: &[ContractChange],
    accept: bool,
) -> Terms<'a> {
    let head = Clause {
        test: t,
        covers: c.contract.covers_of(t),
    };
    let cid = &c.contract.metadata.id;
    let head_required = (c.contract.enforced() && t.required_for_gate)
        .then(|| "required_for_gate in this tree".to_string());
    let base_test: Option<(&Contract, &FalsificationTest)> = base
        .and_then(|b| b.contract(cid))
        .and_then(|bc| bc.test(&t.id).map(|bt| (bc, bt)));
    let Some((bc, bt)) = base_test.filter(|(bc, bt)| bc.enforced() && bt.required_for_gate) else {
        return Terms {
            clause: head,
            required: head_required,
        };
    };
    let blocked = !accept
        && changes.iter().any(|ch| {
            ch.impact.blocks()
                && &ch.contract_id == cid
                && ch.test_id.as_deref().is_none_or(|x| x == t.id)
        });
    if blocked {
        Terms {
            clause: Clause {
                test: bt,
                covers: bc.covers_of(bt),
            },
            required: Some("required at the base; judged under the base's clause".into()),
        }
    } else {
        Terms {
            clause: head,
            required: head_required.or_else(|| (!accept).then(|| "required at the base".into())),
        }
    }
}

/// Verifies the ledger (and, with a base, that it only grew) and, for `pv gate`, decides.
/// `gate: false` applies the integrity rules only.
pub fn run(o: &GateOptions, gate: bool) -> Result<GateReport, GateError> {
    let layout = o.layout;
    let contracts = contract::load_all(&layout.contracts, &layout.root)?;
    let trust = match o.base {
        None => Trust::working_tree(layout)?,
        Some(rev) => Trust::base(layout, rev)?,
    };
    let base = trust.base.as_ref();
    let (contract_changes, ledger_changes) = match base {
        None => (Vec::new(), Vec::new()),
        Some(b) => (
            changes::contract_changes(b, &contracts, &layout.root),
            changes::ledger_changes(b, &layout.root),
        ),
    };
    let places = Places {
        root: &layout.root,
        evidence: &layout.evidence,
        trusted: &trust.keys,
    };
    let verifier = Verifier::new(&places);
    let mut verification = Verification {
        tests: Vec::new(),
        orphans: Vec::new(),
        files_hashed: 0,
    };
    let mut required = Vec::new();
    let mut clauses = Vec::new();
    for c in &contracts {
        for t in &c.contract.falsification_tests {
            let j = clause_for(c, t, base, &contract_changes, o.accept_contract_changes);
            verification
                .tests
                .push(verifier.verify_test(c, t, Some(j.clause))?);
            if let Some(why) = j.required.filter(|_| gate) {
                required.push(Required {
                    contract_id: c.contract.metadata.id.clone(),
                    test_id: t.id.clone(),
                    why,
                });
                clauses.push((c.contract.metadata.id.clone(), j.clause));
            }
        }
    }
    let known = contracts
        .iter()
        .flat_map(|c| {
            c.contract
                .falsification_tests
                .iter()
                .map(|t| (c.contract.metadata.id.clone(), t.id.clone()))
        })
        .collect();
    verification.orphans = super::verify::orphans(&layout.evidence, &known);

    let mut fresh = Vec::new();
    let mut scratch = None;
    if let (true, Some(r)) = (gate, &o.recheck) {
        let key = ScratchKey::create(r.scratch)?;
        for (cid, clause) in &clauses {
            let Some(t) = verification.test(cid, &clause.test.id) else {
                continue;
            };
            let due = t.valid() && (t.records.is_empty() || !t.stale.is_empty());
            if due {
                // The verifier has just hashed these files; bind the re-check to that.
                let files = verifier
                    .covered_now(clause.covers)
                    .map_err(EvidenceError::Usage)?;
                let code = CodeBinding {
                    covers: clause.covers.to_vec(),
                    sha256: crate::contract::covers::tree_sha256(&files),
                    files,
                };
                fresh.push(recheck::recheck(
                    &layout.root,
                    cid,
                    clause.test,
                    code,
                    r,
                    &key,
                )?);
            }
        }
        std::fs::create_dir_all(r.scratch).map_err(|e| EvidenceError::io(r.scratch, e))?;
        let summary = r.scratch.join("summary.json");
        crate::fsutil::atomic_write(
            &summary,
            (serde_json::to_string_pretty(&fresh).expect("results serialise") + "\n").as_bytes(),
        )
        .map_err(|e| EvidenceError::io(&summary, e))?;
        scratch = Some(r.scratch.to_path_buf());
    }
    verification.files_hashed = verifier.files_hashed();

    let policy = if gate {
        Policy::gate()
    } else {
        Policy::verify()
    };
    let blocks = policy.apply(&Facts {
        verification: &verification,
        required: &required,
        fresh: &fresh,
        ledger_changes: &ledger_changes,
        contract_changes: &contract_changes,
        accept_contract_changes: o.accept_contract_changes,
    });
    let mut notes: Vec<String> = verification
        .orphans
        .iter()
        .map(|p| {
            format!("{p}: evidence for a test no contract defines (kept as history, not counted)")
        })
        .collect();
    for t in &verification.tests {
        notes.extend(t.leftovers.iter().map(|p| {
            format!("{p}: temporary file of an interrupted write (not evidence; the next discharge removes it)")
        }));
    }
    if let Some(b) = base {
        let at_base: Vec<&str> = trust.keys.iter().map(|k| k.name.as_str()).collect();
        if let Ok(here) = super::keys::trusted_keys(&layout.keys) {
            for k in here.iter().filter(|k| !at_base.contains(&k.name.as_str())) {
                notes.push(format!(
                    "keys/{}.pub is not in {}'s keys/: its signatures count only once a maintainer merges it",
                    k.name, b.snapshot.rev
                ));
            }
        }
    }
    let tests = verification
        .tests
        .iter()
        .map(|t| {
            let req = required
                .iter()
                .any(|r| r.contract_id == t.contract_id && r.test_id == t.test_id);
            let fr = fresh
                .iter()
                .find(|f| f.contract_id == t.contract_id && f.test_id == t.test_id);
            GateTest {
                contract_id: t.contract_id.clone(),
                test_id: t.test_id.clone(),
                required: req,
                status: t.status,
                verdict: t.verdict.clone(),
                stale: t.stale.clone(),
                counted: match fr {
                    Some(f) => format!(
                        "re-checked: {}",
                        f.verdict.as_deref().unwrap_or("no verdict")
                    ),
                    None if !t.stale.is_empty() => format!("{} (STALE)", t.status),
                    None => t.status.to_string(),
                },
            }
        })
        .collect();
    Ok(GateReport {
        trust: trust.summary(),
        rules: policy.rules(),
        open: blocks.is_empty(),
        verification,
        contract_changes,
        ledger_changes,
        tests,
        fresh,
        scratch,
        notes,
        blocks,
    })
}
