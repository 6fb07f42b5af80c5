//! Verification of the evidence directory against the contracts, the trusted keys and the
//! files on disk, and the statuses replayed from it.
//!
//! For every record: the DSSE signature by a trusted key; the statement's type, names and
//! numbering; the hash chain; the status transition; the verdict and `passed` re-derived
//! by the checker's judge from the recorded params and measurements, and `canonical` from
//! the model subject's digest and the pinned sha256; the clause it was made under; the code
//! it bound (STALE once a covered file changed). For the chain: the signed head names the
//! last record (or lags by exactly one: an interrupted discharge). Every file is hashed at
//! most once per run.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::dsse::{self, Envelope};
use super::head::{self, HeadState};
use super::keys::TrustedKey;
use super::ledger::{self, StoredRecord};
use super::record::{PREDICATE_TYPE, STATEMENT_TYPE, Statement};
use super::status::Status;
use super::{EvidenceError, clause_sha256};
use crate::checkers::{self, Judged};
use crate::contract::covers::{Covers, changed_files, tree_sha256};
use crate::contract::{FalsificationTest, LoadedContract};
use crate::fsutil::short;

/// What verification found about one record.
#[derive(Clone, Debug, Serialize)]
pub struct RecordReport {
    /// The record file.
    pub path: String,
    /// Its sequence number.
    pub sequence: u64,
    /// sha256 of the file.
    pub sha256: String,
    /// Problems that make it invalid (empty when valid).
    pub problems: Vec<String>,
    /// Why it no longer speaks for the test as it is now (empty when fresh): the clause
    /// changed, or covered files did.
    pub stale: Vec<String>,
    /// Remarks that do not invalidate it.
    pub notes: Vec<String>,
    /// The verified statement (when the signature checked and the body parsed).
    #[serde(skip)]
    pub statement: Option<Statement>,
    /// The signing key's name (when trusted).
    pub signer: Option<String>,
}

/// A discharge that wrote its record but not the head naming it.
#[derive(Clone, Debug, Serialize)]
pub struct Interrupted {
    /// The record the head does not name yet.
    pub sequence: u64,
    /// Its file.
    pub record: String,
}

/// The evidence of one falsification test.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// The contract's id.
    pub contract_id: String,
    /// The test's id.
    pub test_id: String,
    /// Whether the contract says `pv gate` requires it discharged.
    pub required_for_gate: bool,
    /// Whether the contract is enforced (ACTIVE).
    pub enforced: bool,
    /// Status replayed from the valid records (up to the first invalid one).
    pub status: Status,
    /// Verdict of the latest valid record.
    pub verdict: Option<String>,
    /// When the latest valid record finished.
    pub date: Option<String>,
    /// Who signed the latest valid record.
    pub signer: Option<String>,
    /// Why the latest record is stale (empty when it is fresh or there is none).
    pub stale: Vec<String>,
    /// Problems with the chain as a whole (head, numbering, stray files).
    pub problems: Vec<String>,
    /// A discharge interrupted between its record and its head.
    pub interrupted: Option<Interrupted>,
    /// head.json is the unsigned form earlier versions of pv wrote, naming the last record
    /// (reported as a problem; `pv discharge TEST --complete` signs it).
    pub unsigned_head: bool,
    /// Temporary files of interrupted writes (removed by the next discharge).
    pub leftovers: Vec<String>,
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

    /// `contract/test`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.contract_id, self.test_id)
    }
}

/// The whole verification: one report per test, plus evidence that belongs to no test.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Per test, in contract order.
    pub tests: Vec<TestReport>,
    /// Evidence directories that match no contract test.
    pub orphans: Vec<String>,
    /// How many distinct files were hashed.
    pub files_hashed: usize,
}

impl Verification {
    /// The report of a test.
    pub fn test(&self, contract_id: &str, test_id: &str) -> Option<&TestReport> {
        self.tests
            .iter()
            .find(|t| t.contract_id == contract_id && t.test_id == test_id)
    }
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

/// The clause and covers a test's records are held to (the contract's own, or, in
/// `pv gate --base`, the trusted one).
#[derive(Clone, Copy)]
pub struct Clause<'a> {
    /// The test as the trusted contract states it.
    pub test: &'a FalsificationTest,
    /// Its `covers` in force.
    pub covers: &'a [String],
}

/// Relative path to sha256, for the files a `covers` list matches.
type FileDigests = BTreeMap<String, String>;

/// Verification state for one run: the places, and caches so that each file is hashed and
/// each `covers` list resolved once however many records name them.
pub struct Verifier<'a> {
    places: &'a Places<'a>,
    hashes: RefCell<HashMap<PathBuf, Result<String, String>>>,
    covered: RefCell<HashMap<Vec<String>, Result<FileDigests, String>>>,
    hashed: Cell<usize>,
}

impl<'a> Verifier<'a> {
    /// A verifier over `places`.
    pub fn new(places: &'a Places<'a>) -> Self {
        Verifier {
            places,
            hashes: RefCell::default(),
            covered: RefCell::default(),
            hashed: Cell::new(0),
        }
    }

    /// The root record subjects and covers are relative to.
    pub fn root(&self) -> &Path {
        self.places.root
    }

    /// The trusted keys.
    pub fn trusted(&self) -> &[TrustedKey] {
        self.places.trusted
    }

    /// `p` relative to the root, as reports show it (GitHub annotations need it so).
    pub fn show(&self, p: &Path) -> String {
        p.strip_prefix(self.places.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    /// How many distinct files this verifier hashed so far.
    pub fn files_hashed(&self) -> usize {
        self.hashed.get()
    }

    /// Takes `digest` as the sha256 of the file at `path` for this run, without reading it:
    /// for files this process has just hashed itself (a discharge's model files, hashed by
    /// the checker from their mapped bytes), so that they are not read and hashed twice.
    /// Keyed by the canonical path, as [`Verifier::file_sha256`] looks it up.
    pub fn seed_sha256(&self, path: &Path, digest: String) {
        if let Ok(p) = std::fs::canonicalize(path) {
            self.hashes.borrow_mut().insert(p, Ok(digest));
        }
    }

    /// sha256 of a regular file, once per run (`Err(NotFound)` kept as "not on disk").
    pub fn file_sha256(&self, path: &Path) -> Result<String, String> {
        if let Some(r) = self.hashes.borrow().get(path) {
            return r.clone();
        }
        if let Some(r) = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| self.hashes.borrow().get(&p).cloned())
        {
            return r;
        }
        let r = match crate::fsutil::sha256_file(path) {
            Ok(d) => {
                self.hashed.set(self.hashed.get() + 1);
                Ok(d)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("not on disk".into()),
            Err(e) => Err(e.to_string()),
        };
        self.hashes
            .borrow_mut()
            .insert(path.to_path_buf(), r.clone());
        r
    }

    /// The files `covers` matches now, with their digests, once per run.
    pub fn covered_now(&self, covers: &[String]) -> Result<FileDigests, String> {
        if let Some(r) = self.covered.borrow().get(covers) {
            return r.clone();
        }
        let r = Covers::new(covers)
            .map_err(|e| e.to_string())
            .and_then(|c| c.files(self.places.root).map_err(|e| e.to_string()))
            .map(|f| {
                self.hashed.set(self.hashed.get() + f.files.len());
                f.files
            });
        self.covered.borrow_mut().insert(covers.to_vec(), r.clone());
        r
    }

    /// Verifies every record of every test of `contracts`.
    pub fn verify_all(&self, contracts: &[LoadedContract]) -> Result<Verification, EvidenceError> {
        let mut tests = Vec::new();
        let mut known = BTreeSet::new();
        for c in contracts {
            for t in &c.contract.falsification_tests {
                known.insert((c.contract.metadata.id.clone(), t.id.clone()));
                tests.push(self.verify_test(c, t, None)?);
            }
        }
        Ok(Verification {
            tests,
            orphans: orphans(self.places.evidence, &known),
            files_hashed: self.hashed.get(),
        })
    }

    /// Verifies the records of test `t` of contract `c`, holding them to `clause` (the
    /// contract's own when `None`).
    pub fn verify_test(
        &self,
        c: &LoadedContract,
        t: &FalsificationTest,
        clause: Option<Clause>,
    ) -> Result<TestReport, EvidenceError> {
        let cid = &c.contract.metadata.id;
        let clause = clause.unwrap_or(Clause {
            test: t,
            covers: c.contract.covers_of(t),
        });
        let dir = ledger::test_dir(self.places.evidence, cid, &t.id);
        let stored = ledger::read_test_dir(&dir)?;
        let mut problems: Vec<String> = stored
            .strays
            .iter()
            .map(|(p, why)| format!("unexpected file {}: {why}", self.show(p)))
            .collect();
        let ctx = RecordContext {
            contract: c,
            test_id: &t.id,
            clause,
            clause_sha256: clause_sha256(clause.test),
        };
        let mut status = Status::Pending;
        let mut records = Vec::new();
        let mut prev: Option<&StoredRecord> = None;
        let mut broken = false;
        for (i, r) in stored.records.iter().enumerate() {
            let mut rep = self.check_record(r, i as u64 + 1, prev, status, &ctx);
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
        let head = match &stored.head {
            None => HeadState::Missing,
            Some(Err(e)) => HeadState::Bad(e.clone()),
            Some(Ok(bytes)) => head::parse(bytes, cid, &t.id, self.places.trusted),
        };
        let interrupted =
            chain_head(&head, &stored.records, &records, &t.id, &mut problems).map(|i| {
                Interrupted {
                    record: self.show(Path::new(&i.record)),
                    ..i
                }
            });
        let unsigned_head = matches!(&head, HeadState::Unsigned { sequence, sha256 }
            if stored.records.last().is_some_and(|l| (l.sequence, &l.sha256) == (*sequence, sha256)));
        let mut report = TestReport {
            contract_id: cid.clone(),
            test_id: t.id.clone(),
            required_for_gate: t.required_for_gate,
            enforced: c.contract.enforced(),
            status,
            verdict: None,
            date: None,
            signer: None,
            stale: records.last().map(|r| r.stale.clone()).unwrap_or_default(),
            problems,
            interrupted,
            unsigned_head,
            leftovers: stored.leftovers.iter().map(|p| self.show(p)).collect(),
            records,
        };
        if let Some(p) = report.latest().map(|s| s.predicate.clone()) {
            report.verdict = Some(p.verdict);
            report.date = Some(p.finished_at);
            report.signer = Some(p.signer);
        }
        Ok(report)
    }

    fn check_record(
        &self,
        r: &StoredRecord,
        expected_seq: u64,
        prev: Option<&StoredRecord>,
        status: Status,
        ctx: &RecordContext,
    ) -> RecordReport {
        let mut rep = RecordReport {
            path: self.show(&r.path),
            sequence: r.sequence,
            sha256: r.sha256.clone(),
            problems: Vec::new(),
            stale: Vec::new(),
            notes: Vec::new(),
            statement: None,
            signer: None,
        };
        if let Some(why) = &r.unreadable {
            rep.problems.push(format!("unreadable: {why}"));
            return rep;
        }
        if r.sequence != expected_seq {
            rep.problems.push(format!(
                "sequence gap: expected record {expected_seq}, found {} (a record was deleted or renumbered?)",
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
        let (body, keyid) = match dsse::verify(&env, self.places.trusted.iter().map(|k| &k.key)) {
            Ok(v) => v,
            Err(e) => {
                rep.problems.push(e.to_string());
                return rep;
            }
        };
        let signer = self
            .places
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
        let test_id = ctx.test_id;
        let cid = &ctx.contract.contract.metadata.id;
        let mut bad = |m: String| rep.problems.push(m);
        if st.type_ != STATEMENT_TYPE || st.predicate_type != PREDICATE_TYPE {
            bad(format!(
                "statement type {:?} / predicate type {:?} are not pv evidence",
                short(&st.type_, 80),
                short(&st.predicate_type, 80)
            ));
        }
        if &p.contract_id != cid || p.test_id != test_id {
            bad(format!(
                "record is for {}/{} but is filed under {cid}/{test_id}",
                short(&p.contract_id, 80),
                short(&p.test_id, 80)
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
                p.previous_record_sha256.as_deref().map(|s| short(s, 64)),
                want_prev
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
                short(&p.signer, 64),
                signer
            ));
        }
        rep.problems.extend(rederive(&st));
        let (stale, problems) = self.staleness(&st, ctx);
        rep.stale = stale;
        rep.problems.extend(problems);
        rep.notes
            .extend(self.subject_notes(&st, !rep.stale.is_empty()));
        rep.statement = Some(st);
        rep
    }
    /// Whether the record still speaks for the test as it is: its clause is the one in
    /// force (and then it must carry that clause's checker and params), and the covered
    /// files are those it bound. Returns why it is stale, and any problem found.
    fn staleness(&self, st: &Statement, ctx: &RecordContext) -> (Vec<String>, Vec<String>) {
        let p = &st.predicate;
        let (clause, test_id) = (ctx.clause, ctx.test_id);
        let (mut stale, mut problems) = (Vec::new(), Vec::new());
        if p.clause_sha256 == ctx.clause_sha256 {
            if p.checker != clause.test.checker || p.params != clause.test.params {
                problems.push(
                    "it claims the current clause's digest but records another checker or params"
                        .into(),
                );
            }
        } else {
            stale.push(format!(
                "the clause of {test_id} changed since this record (clause sha256 {}…, now {}…)",
                short(&p.clause_sha256, 12),
                short(&ctx.clause_sha256, 12)
            ));
        }
        let Some(code) = &p.code else {
            stale.push(
                "it binds no code (made before pv bound evidence to the files a contract covers)"
                    .into(),
            );
            return (stale, problems);
        };
        if tree_sha256(&code.files) != code.sha256 {
            problems.push("its code digest is not the digest of the files it lists".into());
        }
        if code.covers != clause.covers {
            stale.push(format!(
                "covers changed since this record ({:?}, now {:?})",
                code.covers, clause.covers
            ));
            return (stale, problems);
        }
        match self.covered_now(clause.covers) {
            Err(e) => problems.push(format!("covered files: {e}")),
            Ok(now) => {
                let changed = changed_files(&code.files, &now);
                if !changed.is_empty() {
                    let shown: Vec<&str> = changed.iter().take(8).map(String::as_str).collect();
                    stale.push(format!(
                        "covered code changed since this record: {}{}",
                        shown.join(", "),
                        if changed.len() > 8 {
                            format!(" and {} more", changed.len() - 8)
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
        (stale, problems)
    }

    /// Notes on subject files inside the repository whose bytes on disk are not the ones
    /// measured (the record still speaks for those, by digest).
    fn subject_notes(&self, st: &Statement, stale: bool) -> Vec<String> {
        let p = &st.predicate;
        let mut notes = Vec::new();
        for s in &st.subject {
            let Some(want) = s.digest.get("sha256") else {
                continue;
            };
            if !inside_root(&s.name) {
                notes.push(format!(
                    "subject {} is not a path inside the repository; digest not checked",
                    short(&s.name, 200)
                ));
                continue;
            }
            match self.file_sha256(&self.places.root.join(&s.name)) {
                Ok(got) if &got == want => {}
                Ok(_) if s.name == p.contract_file => notes.push(format!(
                    "contract file {} changed since this record{}",
                    s.name,
                    if stale {
                        ""
                    } else {
                        " (not this test's clause)"
                    }
                )),
                Ok(got) => notes.push(format!(
                    "subject {} on disk has sha256 {}…, the record measured {}…",
                    short(&s.name, 200),
                    short(&got, 12),
                    short(want, 12)
                )),
                Err(e) => notes.push(format!(
                    "subject {}: {e}; digest not checked",
                    short(&s.name, 200)
                )),
            }
        }
        notes
    }
}

/// The claims a record makes, re-derived: its verdict and `passed` by the checker's own
/// judge from the recorded params and measurements, and `canonical` from the model
/// subject's digest and the pin in those params. The disagreements found.
fn rederive(st: &Statement) -> Vec<String> {
    let p = &st.predicate;
    let mut problems = Vec::new();
    match checkers::find(&p.checker) {
        None => problems.push(format!(
            "checker {:?} is not registered",
            short(&p.checker, 80)
        )),
        Some(ch) => match (ch.judge)(&Judged {
            contract_id: &p.contract_id,
            params: &p.params,
            measurements: &p.measurements,
        }) {
            Err(e) => problems.push(format!("its measurements cannot be judged: {e}")),
            Ok(j) if j.verdict != p.verdict || j.passed != p.passed => problems.push(format!(
                "it records verdict {} (passed={}) but its measurements give {} (passed={})",
                short(&p.verdict, 40),
                p.passed,
                j.verdict,
                j.passed
            )),
            Ok(_) => {}
        },
    }
    let subject_digest = |file: &str| {
        st.subject
            .iter()
            .find(|s| Path::new(&s.name).file_name().is_some_and(|n| n == file))
            .and_then(|s| s.digest.get("sha256").cloned())
    };
    let canonical = checkers::canonical(&p.params, subject_digest);
    if canonical != p.canonical {
        problems.push(format!(
            "it records canonical={} but its model subject's sha256 {} the pinned one",
            p.canonical,
            if canonical { "equals" } else { "is not" }
        ));
    }
    problems
}

/// Whether a subject name is a relative path that stays inside the root (no `..`, no
/// root or prefix): only such files are hashed, whatever a record names.
fn inside_root(name: &str) -> bool {
    let p = Path::new(name);
    p.components().next().is_some()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// What a record is checked against.
struct RecordContext<'a> {
    contract: &'a LoadedContract,
    test_id: &'a str,
    clause: Clause<'a>,
    clause_sha256: String,
}

/// Checks the head against the records: whole, interrupted (head lagging by exactly one
/// valid record), or broken (a problem).
fn chain_head(
    head: &HeadState,
    stored: &[StoredRecord],
    records: &[RecordReport],
    test_id: &str,
    problems: &mut Vec<String>,
) -> Option<Interrupted> {
    let last = stored.last();
    let last_valid = records.last().is_some_and(|r| r.problems.is_empty());
    let interrupted = |l: &StoredRecord| Interrupted {
        sequence: l.sequence,
        record: l.path.display().to_string(),
    };
    match (head, last) {
        (HeadState::Missing, None) => None,
        (HeadState::Missing, Some(l)) if stored.len() == 1 && last_valid => Some(interrupted(l)),
        (HeadState::Missing, Some(l)) => {
            problems.push(format!(
                "record {} exists but head.json is missing",
                l.sequence
            ));
            None
        }
        (HeadState::Bad(why), _) => {
            problems.push(why.clone());
            None
        }
        (HeadState::Unsigned { sequence, sha256 }, Some(l))
            if (*sequence, sha256) == (l.sequence, &l.sha256) =>
        {
            problems.push(format!(
                "head.json is unsigned (written by an earlier pv), so it proves nothing; sign it with `pv discharge {test_id} --complete`"
            ));
            None
        }
        (HeadState::Unsigned { sequence, .. }, _) => {
            problems.push(format!(
                "head.json (unsigned) names record {sequence}, which is not the last record"
            ));
            None
        }
        (HeadState::Signed(c), None) => {
            problems.push(format!(
                "head.json names record {} but there are no records (deleted?)",
                c.sequence
            ));
            None
        }
        (HeadState::Signed(c), Some(l))
            if (c.sequence, &c.record_sha256) == (l.sequence, &l.sha256) =>
        {
            None
        }
        (HeadState::Signed(c), Some(l))
            if l.sequence == c.sequence + 1
                && stored.len() >= 2
                && stored[stored.len() - 2].sequence == c.sequence
                && stored[stored.len() - 2].sha256 == c.record_sha256
                && last_valid =>
        {
            Some(interrupted(l))
        }
        (HeadState::Signed(c), Some(l)) => {
            problems.push(format!(
                "head.json names record {} (sha256 {}…) but the last record is {} (sha256 {}…): a record was deleted, replaced or added by hand",
                c.sequence,
                short(&c.record_sha256, 12),
                l.sequence,
                short(&l.sha256, 12)
            ));
            None
        }
    }
}

/// Evidence directories under `evidence` for no known test (symbolic links not followed).
pub fn orphans(evidence: &Path, known: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut out = Vec::new();
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if let Ok(dirs) = std::fs::read_dir(evidence) {
        for d in dirs.flatten().filter(|d| is_dir(&d.path())) {
            let cid = d.file_name().to_string_lossy().into_owned();
            for t in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let tid = t.file_name().to_string_lossy().into_owned();
                if !known.contains(&(cid.clone(), tid)) {
                    out.push(t.path().display().to_string());
                }
            }
        }
    }
    out.sort();
    out
}

/// Verifies every record of every test of `contracts`.
pub fn verify_all(
    contracts: &[LoadedContract],
    places: &Places,
) -> Result<Verification, EvidenceError> {
    Verifier::new(places).verify_all(contracts)
}

/// Verifies the records of one test of contract `c`.
pub fn verify_test(
    c: &LoadedContract,
    t: &FalsificationTest,
    places: &Places,
) -> Result<TestReport, EvidenceError> {
    Verifier::new(places).verify_test(c, t, None)
}
