//! `pv discharge`: run a falsification test's checker and append a signed record to its
//! chain, moving its status through the transition table.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::keys::{self, TrustedKey};
use super::layout::Layout;
use super::record::{
    CodeBinding, PREDICATE_TYPE, Predicate, STATEMENT_TYPE, Statement, Subject, this_host,
};
use super::status::Status;
use super::verify::{Places, TestReport, Verifier};
use super::{EvidenceError, clause_sha256, dsse, head, ledger, sha256_file};
use crate::checkers::{self, CheckError, Context, Outcome};
use crate::contract::covers::Covers;
use crate::contract::{self, ContractError, FalsificationTest, LoadedContract};

/// One discharge request.
pub struct Request<'a> {
    /// The falsification test.
    pub test_id: &'a str,
    /// Model directory.
    pub models: &'a Path,
    /// Private key file; `None`: the default key, created if there is none.
    pub key: Option<&'a Path>,
    /// Threads for the engines.
    pub threads: usize,
    /// The commit a citation test checks.
    pub cite: Option<&'a str>,
    /// Progress reporter.
    pub progress: &'a dyn Fn(&str),
}

/// What a discharge did.
#[derive(Debug)]
pub struct Discharged {
    /// The contract.
    pub contract_id: String,
    /// What the checker found.
    pub outcome: Outcome,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// The record written.
    pub record: PathBuf,
    /// The signer's key name.
    pub signer: String,
    /// A key pair created for this run (private key, public key).
    pub created_key: Option<(PathBuf, PathBuf)>,
    /// An interrupted discharge's record whose head this run signed before appending.
    pub completed: Option<u64>,
}

/// Why a discharge did not produce a record.
#[derive(Debug, thiserror::Error)]
pub enum DischargeError {
    /// The contracts do not load.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// Evidence or keys could not be read or written.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The checker could not reach a verdict.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The test does not exist.
    #[error("no falsification test {0}; known: {1}")]
    UnknownTest(String, String),
    /// The existing evidence is invalid; appending would extend a broken chain.
    #[error("the evidence of {0} is invalid; fix it before discharging again:\n  {1}")]
    InvalidChain(String, String),
    /// The transition table refuses this outcome.
    #[error("refused, nothing recorded: {why}")]
    Refused {
        /// Current status.
        from: Status,
        /// Explanation.
        why: String,
    },
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn git_state(root: &Path) -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

/// A signing key, its trusted name, and the key pair created for it (if one was).
type Signer = (
    ed25519_dalek::SigningKey,
    String,
    Option<(PathBuf, PathBuf)>,
);

/// The signing key: the given file, or the default key (created, with its public half in
/// `keys/`, when there is none). The public half must be (or become) a trusted key.
fn signing_key(layout: &Layout, given: Option<&Path>) -> Result<Signer, EvidenceError> {
    let (path, name, mut created) = match given {
        Some(p) => {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(keys::default_key_name);
            (p.to_path_buf(), name, None)
        }
        None => {
            let name = keys::default_key_name();
            let path = keys::private_key_path(&name);
            let mut created = None;
            if !path.exists() {
                let public = keys::keygen(&name, &path, &layout.keys)?;
                created = Some((path.clone(), public));
            }
            (path, name, created)
        }
    };
    let key = keys::load_signing_key(&path)?;
    let id = dsse::key_id(&key.verifying_key());
    let trusted = keys::trusted_keys(&layout.keys)?;
    if let Some(t) = trusted.iter().find(|t| t.id == id) {
        return Ok((key, t.name.clone(), created));
    }
    // A private key whose public half is not yet in keys/: publish it under its name.
    if layout.keys.join(format!("{name}.pub")).exists() {
        return Err(EvidenceError::Usage(format!(
            "{} holds a different key than {}; pass --key with the matching private key",
            layout.keys.join(format!("{name}.pub")).display(),
            path.display()
        )));
    }
    let public = keys::publish(&name, &key.verifying_key(), &layout.keys)?;
    created.get_or_insert((path, public));
    Ok((key, name, created))
}

/// A subject's name as records keep it: relative to the repository root when it is under
/// it (as when pv runs there), so the record can be checked from any checkout.
fn relative_to(root: &Path, name: &str) -> String {
    Path::new(name)
        .strip_prefix(root)
        .map_or_else(|_| name.to_string(), |p| p.display().to_string())
}

/// The code a test exercises, bound now: its covers and the digest of every file they match.
pub fn bind_code(root: &Path, covers: &[String]) -> Result<CodeBinding, EvidenceError> {
    let files = Covers::new(covers)
        .map_err(|e| EvidenceError::Usage(e.to_string()))?
        .files(root)
        .map_err(|e| EvidenceError::io(root, e))?;
    Ok(CodeBinding {
        covers: covers.to_vec(),
        sha256: files.sha256(),
        files: files.files,
    })
}

/// The test's report as `pv verify` gives it, with `known` files (path, sha256) taken as
/// hashed already by this process.
fn test_report(
    c: &LoadedContract,
    test: &FalsificationTest,
    layout: &Layout,
    trusted: &[TrustedKey],
    known: &[(PathBuf, String)],
) -> Result<TestReport, EvidenceError> {
    let places = Places {
        root: &layout.root,
        evidence: &layout.evidence,
        trusted,
    };
    let v = Verifier::new(&places);
    for (path, digest) in known {
        v.seed_sha256(path, digest.clone());
    }
    v.verify_test(c, test, None)
}

/// Finds a test by id among `contracts`, or says which exist.
fn find<'a>(
    contracts: &'a [LoadedContract],
    test_id: &str,
) -> Result<(&'a LoadedContract, &'a FalsificationTest), DischargeError> {
    contract::find_test(contracts, test_id).ok_or_else(|| {
        let known: Vec<&str> = contracts
            .iter()
            .flat_map(|c| c.contract.falsification_tests.iter().map(|t| t.id.as_str()))
            .collect();
        DischargeError::UnknownTest(test_id.into(), known.join(", "))
    })
}

/// With the lock held: removes leftover temporary files, signs the head of an interrupted
/// discharge (or an unsigned head naming the last record), and returns the test's
/// verified chain. The record a completed head names is returned too.
fn settle(
    c: &LoadedContract,
    test: &FalsificationTest,
    layout: &Layout,
    key: &ed25519_dalek::SigningKey,
    signer: &str,
    known: &[(PathBuf, String)],
) -> Result<(TestReport, Option<u64>), DischargeError> {
    let cid = &c.contract.metadata.id;
    let dir = ledger::test_dir(&layout.evidence, cid, &test.id);
    ledger::remove_leftovers(&dir)?;
    let trusted = keys::trusted_keys(&layout.keys)?;
    let mut report = test_report(c, test, layout, &trusted, known)?;
    let unsigned_head = report.unsigned_head
        && report.problems.len() == 1
        && report.records.iter().all(|r| r.problems.is_empty());
    let mut completed = None;
    if report.interrupted.is_some() || unsigned_head {
        let last = report
            .records
            .last()
            .expect("a head to complete names a record");
        ledger::write_head(
            &dir,
            &head::sign(cid, &test.id, last.sequence, &last.sha256, signer, key),
        )?;
        completed = Some(last.sequence);
        report = test_report(c, test, layout, &trusted, known)?;
    }
    if !report.valid() {
        let mut problems = report.problems.clone();
        for r in &report.records {
            problems.extend(r.problems.iter().map(|p| format!("{}: {p}", r.path)));
        }
        return Err(DischargeError::InvalidChain(
            test.id.clone(),
            problems.join("\n  "),
        ));
    }
    Ok((report, completed))
}

/// `pv discharge TEST --complete`: completes an interrupted discharge (signs the head for a
/// record whose head was never written, or an unsigned head of an earlier pv) and removes
/// leftover temporary files, running no checker. Returns the record the head now names.
pub fn complete(
    layout: &Layout,
    test_id: &str,
    key: Option<&Path>,
) -> Result<Option<u64>, DischargeError> {
    let contracts = contract::load_all(&layout.contracts, &layout.root)?;
    let (c, test) = find(&contracts, test_id)?;
    let (key, signer, _) = signing_key(layout, key)?;
    let _lock = ledger::lock(&layout.evidence)?;
    Ok(settle(c, test, layout, &key, &signer, &[])?.1)
}

/// Runs the checker of `req.test_id` and records the result.
pub fn discharge(layout: &Layout, req: &Request) -> Result<Discharged, DischargeError> {
    let contracts = contract::load_all(&layout.contracts, &layout.root)?;
    let (c, test) = find(&contracts, req.test_id)?;
    let cid = c.contract.metadata.id.clone();
    let checker =
        checkers::find(&test.checker).expect("validated contracts name registered checkers");
    let (key, signer, created_key) = signing_key(layout, req.key)?;
    let trusted = keys::trusted_keys(&layout.keys)?;

    // Earlier verdicts, for checkers that depend on them (citations).
    let latest_verdict = |tid: &str| -> Option<String> {
        let (c, t) = contract::find_test(&contracts, tid)?;
        let r = test_report(c, t, layout, &trusted, &[]).ok()?;
        r.valid().then(|| r.verdict.clone()).flatten()
    };
    let ctx = Context {
        models: req.models,
        threads: req.threads,
        cite: req.cite,
        repo: &layout.root,
        contract_id: &cid,
        latest_verdict: &latest_verdict,
        progress: req.progress,
        fault: None,
    };
    (req.progress)("hashing the covered code");
    let code = bind_code(&layout.root, c.contract.covers_of(test))?;
    let started_at = now();
    let outcome = checkers::run(&checker, &test.params, &ctx)?;
    let finished_at = now();

    (req.progress)("signing and recording");
    let _lock = ledger::lock(&layout.evidence)?;
    let dir = ledger::test_dir(&layout.evidence, &cid, &test.id);
    // The model files the checker just hashed (from their mapped bytes) need not be read
    // again to check the earlier records' subjects.
    let known: Vec<(PathBuf, String)> = outcome
        .inputs
        .iter()
        .filter_map(|i| Some((PathBuf::from(&i.name), i.digest.get("sha256")?.clone())))
        .collect();
    let (current, completed) = settle(c, test, layout, &key, &signer, &known)?;
    let from = current.status;
    let to = from.after(outcome.passed, outcome.canonical).ok_or_else(|| DischargeError::Refused {
        from,
        why: format!(
            "{} is {from}; a pass on a model that is not the contract's canonical one (by sha256) \
             cannot change that. Run it on the canonical model.",
            test.id
        ),
    })?;
    let last = current.records.last();
    let sequence = last.map_or(1, |r| r.sequence + 1);
    let (git_commit, git_dirty) = git_state(&layout.root);
    let mut subject: Vec<Subject> = outcome
        .inputs
        .iter()
        .map(|i| Subject {
            name: relative_to(&layout.root, &i.name),
            digest: i.digest.clone(),
        })
        .collect();
    let contract_file = relative_to(&layout.root, &c.display);
    subject.push(Subject {
        name: contract_file.clone(),
        digest: [("sha256".to_string(), sha256_file(&c.path)?)].into(),
    });
    let statement = Statement {
        type_: STATEMENT_TYPE.into(),
        subject,
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            contract_id: cid.clone(),
            contract_version: c.contract.metadata.version.clone(),
            contract_file,
            test_id: test.id.clone(),
            clause_sha256: clause_sha256(test),
            checker: checker.name.into(),
            params: test.params.clone(),
            verdict: outcome.verdict.clone(),
            passed: outcome.passed,
            canonical: outcome.canonical,
            measurements: outcome.measurements.clone(),
            from_status: from,
            to_status: to,
            sequence,
            previous_record_sha256: last.map(|r| r.sha256.clone()),
            pv_version: env!("CARGO_PKG_VERSION").into(),
            git_commit,
            git_dirty,
            host: this_host(req.threads),
            started_at,
            finished_at,
            signer: signer.clone(),
            code: Some(code),
        },
    };
    let body = serde_json::to_vec(&statement).expect("a statement serialises");
    let envelope = dsse::sign(&body, &key);
    let text = serde_json::to_string_pretty(&envelope).expect("an envelope serialises") + "\n";
    let record = ledger::append(&dir, sequence, text.as_bytes(), |sha| {
        head::sign(&cid, &test.id, sequence, sha, &signer, &key)
    })?;
    Ok(Discharged {
        contract_id: cid,
        outcome,
        from,
        to,
        record,
        signer,
        created_key,
        completed,
    })
}
