//! What a change does to the base's evidence and contracts: records removed, edited or
//! renumbered (the ledger is append-only), and contract edits classified by what they do to
//! a gate-required test (weakened, changed, tightened, or neither).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::ledger::MAX_RECORD_BYTES;
use super::trust::Base;
use crate::checkers::{Effect, compare_params};
use crate::contract::covers::Covers;
use crate::contract::{Contract, FalsificationTest, LoadedContract};
use crate::fsutil::{read_bounded, sha256_hex, short};

/// A base record that is not in the tree, byte for byte, where it was.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerChange {
    /// The record's path at the base.
    pub path: String,
    /// `removed`, `edited`, `renumbered to …`, or why it could not be read.
    pub what: String,
}

/// Compares the base's records with the tree's: every record at the base must be in the
/// tree, byte-identical, at the same path (records are only ever appended).
pub fn ledger_changes(base: &Base, root: &Path) -> Vec<LedgerChange> {
    let is_record = |p: &str| {
        let parts: Vec<&str> = p.split('/').collect();
        parts.len() == 4 && parts[0] == "evidence" && parts[3].ends_with(".dsse.json")
    };
    let base_records: Vec<(&str, &[u8])> = base
        .snapshot
        .under("evidence")
        .filter(|(p, _)| is_record(p))
        .collect();
    if base_records.is_empty() {
        return Vec::new();
    }
    // Where each record of the tree is, by digest, to tell a renumbering from a removal;
    // read only if some base record is missing.
    let mut here: Option<BTreeMap<String, String>> = None;
    let mut index = || -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for dir in walk_dirs(&root.join("evidence"), 2) {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.to_string_lossy().ends_with(".dsse.json")
                    && let Ok(b) = read_bounded(&p, MAX_RECORD_BYTES)
                {
                    let rel = p
                        .strip_prefix(root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    m.insert(sha256_hex(&b), rel);
                }
            }
        }
        m
    };
    let mut out = Vec::new();
    for (path, bytes) in base_records {
        let what = match read_bounded(&root.join(path), MAX_RECORD_BYTES) {
            Ok(now) if now == bytes => continue,
            Ok(_) => "edited (its bytes differ from the base's)".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match here.get_or_insert_with(&mut index).get(&sha256_hex(bytes)) {
                    Some(to) => format!("renumbered or moved to {to}"),
                    None => "removed".to_string(),
                }
            }
            Err(e) => format!("unreadable: {e}"),
        };
        out.push(LedgerChange {
            path: path.to_string(),
            what,
        });
    }
    out
}

/// Directories exactly `depth` levels below `dir` (symbolic links not followed).
fn walk_dirs(dir: &Path, depth: usize) -> Vec<std::path::PathBuf> {
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !is_dir(dir) {
        return Vec::new();
    }
    if depth == 0 {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.extend(walk_dirs(&e.path(), depth - 1));
    }
    out
}

/// What a contract edit does to the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Weakens a gate-required test: blocks unless accepted.
    Weakens,
    /// Changes what a gate-required test measures: blocks unless accepted.
    Changes,
    /// Makes a gate-required test harder to pass, or adds one.
    Tightens,
    /// Touches nothing the gate requires.
    Neutral,
}

impl Impact {
    /// Whether the change blocks the gate unless the maintainer accepts contract changes.
    pub fn blocks(self) -> bool {
        matches!(self, Impact::Weakens | Impact::Changes)
    }
}

/// One difference between the base's contracts and the tree's.
#[derive(Clone, Debug, Serialize)]
pub struct ContractChange {
    /// The contract.
    pub contract_id: String,
    /// The test, when the change is to one test.
    pub test_id: Option<String>,
    /// What changed, in words.
    pub what: String,
    /// What it does to the gate.
    pub impact: Impact,
}

impl ContractChange {
    /// `contract` or `contract/test`.
    pub fn subject(&self) -> String {
        match &self.test_id {
            Some(t) => format!("{}/{t}", self.contract_id),
            None => self.contract_id.clone(),
        }
    }
}

fn required(c: &Contract, t: &FalsificationTest) -> bool {
    c.enforced() && t.required_for_gate
}

/// Every difference between the base's contracts and the tree's. For a test the base
/// requires: removal, `required_for_gate` dropped, its contract no longer ACTIVE, a
/// replaced checker, a widened band or tolerance, a re-pinned model, dropped layers, or a
/// narrower set of covered files weakens it; any other param change changes it. Files are
/// matched in the tree at `root`.
pub fn contract_changes(base: &Base, tree: &[LoadedContract], root: &Path) -> Vec<ContractChange> {
    let mut ch = Changes::default();
    for (file, parsed) in &base.contracts {
        if let Err(e) = parsed {
            ch.push(
                file,
                None,
                format!(
                    "the base's contract cannot be read by this pv, so it cannot be compared: {e}"
                ),
                Impact::Changes,
            );
        }
    }
    let head: BTreeMap<&str, &Contract> = tree
        .iter()
        .map(|c| (c.contract.metadata.id.as_str(), &c.contract))
        .collect();
    let mut seen = BTreeSet::new();
    for bc in base.contracts.iter().filter_map(|(_, c)| c.as_ref().ok()) {
        let cid = bc.metadata.id.as_str();
        seen.insert(cid);
        match head.get(cid) {
            Some(hc) => compare_contract(&mut ch, bc, hc, root),
            None => {
                let gated = bc.falsification_tests.iter().any(|t| required(bc, t));
                ch.push(cid, None, "contract removed".into(), weakens_if(gated));
            }
        }
    }
    for (cid, hc) in head.iter().filter(|(id, _)| !seen.contains(*id)) {
        let gated = hc.falsification_tests.iter().any(|t| required(hc, t));
        ch.push(cid, None, "contract added".into(), tightens_if(gated));
    }
    ch.out
}

/// The differences found so far.
#[derive(Default)]
struct Changes {
    out: Vec<ContractChange>,
}

impl Changes {
    fn push(&mut self, cid: &str, tid: Option<&str>, what: String, impact: Impact) {
        self.out.push(ContractChange {
            contract_id: cid.into(),
            test_id: tid.map(str::to_string),
            what,
            impact,
        });
    }
}

/// Removing or loosening something the gate requires weakens it; anything else is neutral.
fn weakens_if(gated: bool) -> Impact {
    if gated {
        Impact::Weakens
    } else {
        Impact::Neutral
    }
}

/// Adding or tightening something the gate requires tightens it; anything else is neutral.
fn tightens_if(gated: bool) -> Impact {
    if gated {
        Impact::Tightens
    } else {
        Impact::Neutral
    }
}

/// One contract of the base against its version in the tree: status, version, and each
/// test removed, changed or added.
fn compare_contract(ch: &mut Changes, bc: &Contract, hc: &Contract, root: &Path) {
    let cid = bc.metadata.id.as_str();
    let gated = bc.falsification_tests.iter().any(|t| required(bc, t));
    if bc.metadata.status != hc.metadata.status {
        let impact = if bc.enforced() && !hc.enforced() {
            weakens_if(gated)
        } else if hc.enforced() {
            Impact::Tightens
        } else {
            Impact::Neutral
        };
        ch.push(
            cid,
            None,
            format!(
                "status {} -> {}",
                status_name(bc.metadata.status),
                status_name(hc.metadata.status)
            ),
            impact,
        );
    }
    if bc.metadata.version != hc.metadata.version {
        ch.push(
            cid,
            None,
            format!("version {} -> {}", bc.metadata.version, hc.metadata.version),
            Impact::Neutral,
        );
    }
    for bt in &bc.falsification_tests {
        match hc.test(&bt.id) {
            Some(ht) => compare_test(ch, bc, bt, hc, ht, root),
            None => ch.push(
                cid,
                Some(&bt.id),
                "test removed".into(),
                weakens_if(required(bc, bt)),
            ),
        }
    }
    for ht in hc
        .falsification_tests
        .iter()
        .filter(|t| bc.test(&t.id).is_none())
    {
        ch.push(
            cid,
            Some(&ht.id),
            "test added".into(),
            tightens_if(required(hc, ht)),
        );
    }
}

/// One test of the base against its version in the tree: whether the gate requires it, its
/// checker, each param (judged tighter, looser or changed by the checker's own rules), the
/// code it covers, and its wording.
fn compare_test(
    ch: &mut Changes,
    bc: &Contract,
    bt: &FalsificationTest,
    hc: &Contract,
    ht: &FalsificationTest,
    root: &Path,
) {
    let (cid, tid) = (bc.metadata.id.as_str(), Some(bt.id.as_str()));
    let req = required(bc, bt);
    if req && !ht.required_for_gate {
        ch.push(
            cid,
            tid,
            "required_for_gate dropped".into(),
            Impact::Weakens,
        );
    } else if !bt.required_for_gate && ht.required_for_gate {
        ch.push(cid, tid, "required_for_gate added".into(), Impact::Tightens);
    }
    if bt.checker != ht.checker {
        ch.push(
            cid,
            tid,
            format!("checker {} -> {}", bt.checker, ht.checker),
            if req {
                Impact::Changes
            } else {
                Impact::Neutral
            },
        );
    }
    for pc in compare_params(&bt.params, &ht.params) {
        let impact = match (req, pc.effect) {
            (false, _) => Impact::Neutral,
            (true, Effect::Tightened) => Impact::Tightens,
            (true, Effect::Changed) => Impact::Changes,
            (true, Effect::Weakened) => Impact::Weakens,
        };
        ch.push(
            cid,
            tid,
            format!("{}: {} -> {}", pc.what, show(&pc.from), show(&pc.to)),
            impact,
        );
    }
    let (bcov, hcov) = (bc.covers_of(bt), hc.covers_of(ht));
    if bcov != hcov {
        let (what, narrowed) = narrowing(bcov, hcov, root);
        let impact = match (req, narrowed) {
            (true, true) => Impact::Weakens,
            (true, false) => Impact::Tightens,
            (false, _) => Impact::Neutral,
        };
        ch.push(cid, tid, what, impact);
    }
    if (&bt.rule, &bt.prediction, &bt.if_fails, &bt.obligations)
        != (&ht.rule, &ht.prediction, &ht.if_fails, &ht.obligations)
    {
        ch.push(
            cid,
            tid,
            "wording changed (rule, prediction, if_fails or obligations)".into(),
            Impact::Neutral,
        );
    }
}

fn status_name(s: crate::contract::types::ContractStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn show(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", short(&s, 120))
    } else {
        s
    }
}

/// Describes a covers change, and whether some file the base's covers match in the tree is
/// no longer matched.
fn narrowing(base: &[String], head: &[String], root: &Path) -> (String, bool) {
    let files = |p: &[String]| -> Option<BTreeSet<String>> {
        Some(
            Covers::new(p)
                .ok()?
                .files(root)
                .ok()?
                .files
                .into_keys()
                .collect(),
        )
    };
    match (files(base), files(head)) {
        (Some(b), Some(h)) => {
            let lost: Vec<&String> = b.difference(&h).collect();
            if lost.is_empty() {
                (
                    format!("covers {base:?} -> {head:?} (no covered file dropped)"),
                    false,
                )
            } else {
                let shown: Vec<&str> = lost.iter().take(5).map(|s| s.as_str()).collect();
                (
                    format!(
                        "covered paths narrowed: {base:?} -> {head:?}; {} file(s) no longer covered ({}{})",
                        lost.len(),
                        shown.join(", "),
                        if lost.len() > 5 { ", …" } else { "" }
                    ),
                    true,
                )
            }
        }
        _ => (
            format!("covers {base:?} -> {head:?} (cannot be resolved)"),
            true,
        ),
    }
}
