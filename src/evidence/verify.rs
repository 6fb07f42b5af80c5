//! Verification of the evidence directory against the contracts, the trusted keys and
//! the files on disk, and the statuses replayed from it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::dsse::{self, Envelope};
use super::keys::TrustedKey;
use super::ledger::{self, StoredRecord};
use super::record::{PREDICATE_TYPE, STATEMENT_TYPE, Statement};
use super::status::Status;
use super::{EvidenceError, clause_sha256, sha256_file};
use crate::contract::LoadedContract;

/// What verification found about one record.
#[derive(Clone, Debug, Serialize)]
pub struct RecordReport {
    /// The record file.
    pub path: String,
    /// Its sequence number.
    pub sequence: u64,
    /// Problems that make it invalid (empty when valid).
    pub problems: Vec<String>,
    /// Its clause digest differs from the current contract's.
    pub stale: bool,
    /// Remarks that do not invalidate it.
    pub notes: Vec<String>,
    /// The verified statement (when the signature checked and the body parsed).
    #[serde(skip)]
    pub statement: Option<Statement>,
    /// The signing key's name (when trusted).
    pub signer: Option<String>,
}

/// The evidence of one falsification test.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// The contract's id.
    pub contract_id: String,
    /// The test's id.
    pub test_id: String,
    /// Whether `pv gate` requires it discharged.
    pub required_for_gate: bool,
    /// Whether the contract is enforced (not RETIRED).
    pub enforced: bool,
    /// Status replayed from the valid records (up to the first invalid one).
    pub status: Status,
    /// Verdict of the latest valid record.
    pub verdict: Option<String>,
    /// When the latest valid record finished.
    pub date: Option<String>,
    /// Who signed the latest valid record.
    pub signer: Option<String>,
    /// The latest record is stale (the clause changed since).
    pub stale: bool,
    /// Problems with the chain as a whole (head, numbering).
    pub problems: Vec<String>,
    /// Each record.
    pub records: Vec<RecordReport>,
}

impl TestReport {
    /// True when every record verifies and the chain is whole.
    pub fn valid(&self) -> bool {
        self.problems.is_empty() && self.records.iter().all(|r| r.problems.is_empty())
    }

    /// The latest valid statement.
    pub fn latest(&self) -> Option<&Statement> {
        self.records
            .iter()
            .take_while(|r| r.problems.is_empty())
            .filter_map(|r| r.statement.as_ref())
            .last()
    }
}

/// The whole verification: one report per test, plus evidence that belongs to no test.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Per test, in contract order.
    pub tests: Vec<TestReport>,
    /// Evidence directories that match no contract test.
    pub orphans: Vec<String>,
}

/// Where verification looks.
pub struct Places<'a> {
    /// The directory paths in records are relative to (where pv runs).
    pub root: &'a Path,
    /// The evidence directory.
    pub evidence: &'a Path,
    /// The trusted keys.
    pub trusted: &'a [TrustedKey],
}

/// Verifies every record of every test of `contracts`.
pub fn verify_all(
    contracts: &[LoadedContract],
    places: &Places,
) -> Result<Verification, EvidenceError> {
    let mut tests = Vec::new();
    let mut known = BTreeSet::new();
    for c in contracts {
        let cid = &c.contract.metadata.id;
        for t in &c.contract.falsification_tests {
            known.insert((cid.clone(), t.id.clone()));
            tests.push(verify_test(c, t, places)?);
        }
    }
    let mut orphans = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(places.evidence) {
        for d in dirs.flatten().filter(|d| d.path().is_dir()) {
            let cid = d.file_name().to_string_lossy().into_owned();
            for t in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let tid = t.file_name().to_string_lossy().into_owned();
                if !known.contains(&(cid.clone(), tid.clone())) {
                    orphans.push(format!("{}", t.path().display()));
                }
            }
        }
    }
    orphans.sort();
    Ok(Verification { tests, orphans })
}

/// Verifies the records of one test of contract `c`.
pub fn verify_test(
    c: &LoadedContract,
    t: &crate::contract::FalsificationTest,
    places: &Places,
) -> Result<TestReport, EvidenceError> {
    let cid = &c.contract.metadata.id;
    let dir = ledger::test_dir(places.evidence, cid, &t.id);
    let stored = ledger::read_records(&dir)?;
    let clause = clause_sha256(t);
    let mut problems = Vec::new();
    let head = match ledger::read_head(&dir) {
        Ok(h) => h,
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    match (stored.last(), &head) {
        (None, Some(h)) => problems.push(format!(
            "head.json names record {} but there are no records (deleted?)",
            h.sequence
        )),
        (Some(last), None) => problems.push(format!(
            "record {} exists but head.json is missing",
            last.sequence
        )),
        (Some(last), Some(h)) if (last.sequence, &last.sha256) != (h.sequence, &h.sha256) => {
            problems.push(format!(
                "head.json names record {} (sha256 {}…) but the last record is {} (sha256 {}…): a record was deleted, replaced or added by hand",
                h.sequence,
                &h.sha256[..h.sha256.len().min(12)],
                last.sequence,
                &last.sha256[..12]
            ))
        }
        _ => {}
    }
    let mut status = Status::Pending;
    let mut records = Vec::new();
    let mut prev: Option<&StoredRecord> = None;
    let mut broken = false;
    for (i, r) in stored.iter().enumerate() {
        let mut rep = check_record(r, i as u64 + 1, prev, status, c, &t.id, &clause, places);
        if broken && rep.problems.is_empty() {
            rep.notes
                .push("follows an invalid record; not counted".into());
        }
        if rep.problems.is_empty() && !broken {
            if let Some(s) = &rep.statement {
                status = s.predicate.to_status;
            }
        } else {
            broken = true;
        }
        records.push(rep);
        prev = Some(r);
    }
    let mut report = TestReport {
        contract_id: cid.clone(),
        test_id: t.id.clone(),
        required_for_gate: t.required_for_gate,
        enforced: c.contract.metadata.status != crate::contract::types::ContractStatus::Retired,
        status,
        verdict: None,
        date: None,
        signer: None,
        stale: records.last().is_some_and(|r| r.stale),
        problems,
        records,
    };
    if let Some(p) = report.latest().map(|s| s.predicate.clone()) {
        report.verdict = Some(p.verdict);
        report.date = Some(p.finished_at);
        report.signer = Some(p.signer);
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn check_record(
    r: &StoredRecord,
    expected_seq: u64,
    prev: Option<&StoredRecord>,
    status: Status,
    c: &LoadedContract,
    test_id: &str,
    clause: &str,
    places: &Places,
) -> RecordReport {
    let mut rep = RecordReport {
        path: r.path.display().to_string(),
        sequence: r.sequence,
        problems: Vec::new(),
        stale: false,
        notes: Vec::new(),
        statement: None,
        signer: None,
    };
    if r.sequence != expected_seq {
        rep.problems.push(format!(
            "sequence gap: expected record {expected_seq}, found {} (a record was deleted?)",
            r.sequence
        ));
    }
    let env: Envelope = match serde_json::from_slice(&r.bytes) {
        Ok(e) => e,
        Err(e) => {
            rep.problems.push(format!(
                "not a DSSE envelope (line {} column {}): {e}",
                e.line(),
                e.column()
            ));
            return rep;
        }
    };
    let (body, keyid) = match dsse::verify(&env, places.trusted.iter().map(|k| &k.key)) {
        Ok(v) => v,
        Err(e) => {
            rep.problems.push(e.to_string());
            return rep;
        }
    };
    let signer = places
        .trusted
        .iter()
        .find(|k| k.id == keyid)
        .map(|k| k.name.clone());
    rep.signer = signer.clone();
    let st: Statement = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            rep.problems
                .push(format!("signed body is not a pv statement: {e}"));
            return rep;
        }
    };
    let p = &st.predicate;
    let mut bad = |m: String| rep.problems.push(m);
    if st.type_ != STATEMENT_TYPE || st.predicate_type != PREDICATE_TYPE {
        bad(format!(
            "statement type {:?} / predicate type {:?} are not pv evidence",
            st.type_, st.predicate_type
        ));
    }
    if p.contract_id != c.contract.metadata.id || p.test_id != test_id {
        bad(format!(
            "record is for {}/{} but is filed under {}/{test_id}",
            p.contract_id, p.test_id, c.contract.metadata.id
        ));
    }
    if p.sequence != r.sequence {
        bad(format!(
            "record says sequence {} but its file is number {}",
            p.sequence, r.sequence
        ));
    }
    let want_prev = prev.map(|p| p.sha256.clone());
    if p.previous_record_sha256 != want_prev {
        bad(format!(
            "hash chain broken: previous_record_sha256 is {:?}, the previous record's sha256 is {:?}",
            p.previous_record_sha256, want_prev
        ));
    }
    if p.from_status != status {
        bad(format!(
            "from_status {} but the chain before it gives {status}",
            p.from_status
        ));
    }
    if p.from_status.after(p.passed, p.canonical) != Some(p.to_status) {
        bad(format!(
            "{} -> {} is not a transition for passed={}, canonical={}",
            p.from_status, p.to_status, p.passed, p.canonical
        ));
    }
    if signer.as_deref() != Some(p.signer.as_str()) {
        bad(format!(
            "record names signer {:?} but was signed by {:?}",
            p.signer, signer
        ));
    }
    if p.clause_sha256 != clause {
        rep.stale = true;
        rep.notes.push(format!(
            "STALE: the clause of {test_id} changed since this record (clause sha256 {}…, now {}…)",
            &p.clause_sha256[..p.clause_sha256.len().min(12)],
            &clause[..12]
        ));
    }
    for s in &st.subject {
        let (Some(want), path) = (s.digest.get("sha256"), places.root.join(&s.name)) else {
            continue;
        };
        if !path.is_file() {
            rep.notes.push(format!(
                "subject {} is not on disk; digest not checked",
                s.name
            ));
            continue;
        }
        match sha256_file(&path) {
            Ok(got) if &got == want => {}
            // The contract file changes whenever any of its tests does; the clause digest
            // (above) is what decides whether this record still speaks for its test.
            Ok(_) if s.name == p.contract_file => rep.notes.push(format!(
                "contract file {} changed since this record{}",
                s.name,
                if rep.stale {
                    ""
                } else {
                    " (not this test's clause)"
                }
            )),
            Ok(got) => rep.problems.push(format!(
                "subject {} has sha256 {}… on disk, the record says {}…",
                s.name,
                &got[..12],
                &want[..want.len().min(12)]
            )),
            Err(e) => rep.problems.push(e.to_string()),
        }
    }
    rep.statement = Some(st);
    rep
}
