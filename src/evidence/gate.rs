//! `pv verify` and `pv gate` as library calls: gather the facts (trust, the verified ledger,
//! changes against the base, fresh re-checks), apply a [`Policy`], and return a report the
//! command line only renders.

use std::path::PathBuf;

use serde::Serialize;

use super::changes::{self, ContractChange, LedgerChange};
use super::layout::Layout;
use super::policy::{Block, Facts, Policy, Required};
use super::recheck::{self, Fresh, Recheck, ScratchKey};
use super::record::CodeBinding;
use super::shard::{self, Due, Shard, ShardLedger};
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
    /// Re-check only this shard's share of them, and judge only that share
    /// (`pv gate --shard K/N`; the final job merges).
    pub shard: Option<Shard>,
    /// Judge the union of these shards' scratch ledgers as this run's re-checks
    /// (`pv gate --merge DIR...`).
    pub merge: &'a [PathBuf],
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
    /// With `--shard K/N`: which shard, and the due tests it took (`contract/test`, with
    /// the seconds their latest records took).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardShare>,
    /// With `--merge`: the shard ledgers read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardLedger>,
    /// Remarks that do not block (orphan evidence, leftover temporary files, new keys).
    pub notes: Vec<String>,
    /// Why the gate is closed (empty: open).
    pub blocks: Vec<Block>,
    /// Whether nothing blocks.
    pub open: bool,
}

/// A shard's share of the due re-checks.
#[derive(Clone, Debug, Serialize)]
pub struct ShardShare {
    /// Which shard of how many.
    pub shard: Shard,
    /// Its tests and their expected seconds.
    pub tests: Vec<(String, f64)>,
    /// How many tests were due in all.
    pub due: usize,
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
                clauses.push((c, t, j.clause));
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

    // The required tests to re-check: valid ledgers whose latest record is stale, or none.
    let due: Vec<Due> = clauses
        .iter()
        .filter(|(c, _, clause)| {
            verification
                .test(&c.contract.metadata.id, &clause.test.id)
                .is_some_and(|t| t.valid() && (t.records.is_empty() || !t.stale.is_empty()))
        })
        .map(|&(contract, test, clause)| Due {
            contract,
            test,
            clause,
        })
        .collect();
    let mut fresh = Vec::new();
    let mut scratch = None;
    let mut share = None;
    let mut shards = Vec::new();
    let mut merge_notes = Vec::new();
    if let (true, Some(r)) = (gate, &o.recheck) {
        let (mine, my_share) = shard_share(&due, &verification, o.shard);
        share = my_share;
        fresh = recheck_share(&mine, &verifier, &layout.root, r, o.shard)?;
        scratch = Some(r.scratch.to_path_buf());
    } else if gate && !o.merge.is_empty() {
        let m = shard::merge(&layout.root, o.merge, &due)?;
        fresh = m.fresh;
        shards = m.ledgers;
        merge_notes = m.notes;
    }
    // A shard judges its own share only; the final job judges the rest.
    if let Some(s) = &share {
        required.retain(|r| {
            s.tests
                .iter()
                .any(|(n, _)| *n == format!("{}/{}", r.contract_id, r.test_id))
        });
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
    let notes = notes(merge_notes, &verification, &trust, base, layout);
    let tests = gate_tests(&verification, &required, &fresh);
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
        shard: share,
        shards,
        notes,
        blocks,
    })
}

/// Shard `shard`'s share of the due tests (every due test without sharding): each weighed
/// by the seconds its latest record took, dealt longest first (`shard::assign`), the same
/// on every shard.
fn shard_share<'d>(
    due: &'d [Due<'d>],
    verification: &Verification,
    shard: Option<Shard>,
) -> (Vec<&'d Due<'d>>, Option<ShardShare>) {
    let Some(sh) = shard else {
        return (due.iter().collect(), None);
    };
    let weights: Vec<(String, f64)> = due
        .iter()
        .map(|d| {
            let cid = &d.contract.contract.metadata.id;
            let secs = verification
                .test(cid, &d.test.id)
                .and_then(shard::recorded_seconds)
                .unwrap_or(shard::DEFAULT_SECONDS);
            (format!("{cid}/{}", d.test.id), secs)
        })
        .collect();
    let of = shard::assign(&weights, sh.count);
    let picked: Vec<usize> = (0..due.len()).filter(|&i| of[i] == sh.index).collect();
    let share = ShardShare {
        shard: sh,
        tests: picked.iter().map(|&i| weights[i].clone()).collect(),
        due: due.len(),
    };
    (picked.iter().map(|&i| &due[i]).collect(), Some(share))
}

/// Re-checks `mine` with the trusted clauses, each bound to the covered files as the
/// verifier has just hashed them, recorded in the scratch ledger under a key made for this
/// run, with `summary.json` beside them.
fn recheck_share(
    mine: &[&Due],
    verifier: &Verifier,
    root: &std::path::Path,
    r: &Recheck,
    shard: Option<Shard>,
) -> Result<Vec<Fresh>, GateError> {
    let key = ScratchKey::create(r.scratch, shard.map(|s| s.label()).as_deref())?;
    let mut fresh = Vec::new();
    for d in mine {
        let cid = &d.contract.contract.metadata.id;
        let files = verifier
            .covered_now(d.clause.covers)
            .map_err(EvidenceError::Usage)?;
        let code = CodeBinding {
            covers: d.clause.covers.to_vec(),
            sha256: crate::contract::covers::tree_sha256(&files),
            files,
        };
        fresh.push(recheck::recheck(root, cid, d.clause.test, code, r, &key)?);
    }
    std::fs::create_dir_all(r.scratch).map_err(|e| EvidenceError::io(r.scratch, e))?;
    let summary = r.scratch.join("summary.json");
    crate::fsutil::atomic_write(
        &summary,
        (serde_json::to_string_pretty(&fresh).expect("results serialise") + "\n").as_bytes(),
    )
    .map_err(|e| EvidenceError::io(&summary, e))?;
    Ok(fresh)
}

/// What the report says besides blocks: the merge's remarks, evidence of no test, files of
/// interrupted writes, and keys the tree adds to the base's.
fn notes(
    merge_notes: Vec<String>,
    verification: &Verification,
    trust: &Trust,
    base: Option<&Base>,
    layout: &Layout,
) -> Vec<String> {
    let mut notes = merge_notes;
    notes.extend(verification.orphans.iter().map(|p| {
        format!("{p}: evidence for a test no contract defines (kept as history, not counted)")
    }));
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
    notes
}

/// Each test as the report lists it: required or not, its status, and what counted.
fn gate_tests(
    verification: &Verification,
    required: &[Required],
    fresh: &[Fresh],
) -> Vec<GateTest> {
    verification
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
        .collect()
}
