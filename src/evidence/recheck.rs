//! Re-checking in the gate run (`pv gate --discharge-stale`): the checkers of required tests
//! whose latest record is stale or missing run now, with the trusted clause's params, and
//! the gate decides on these fresh results. They are trusted because this process computed
//! the verdicts: the measurements come from this process or, with `--engine`, from another
//! build of pv (the code under test, `ENGINE measure …`), but the judge, the model digests
//! and the params are this process's own.
//!
//! Fresh results are kept in a scratch ledger (`evidence/<contract>/<test>/0001.dsse.json`
//! under the scratch directory, signed by a key made for this run, its public half in
//! `keys/`), with `summary.json`: CI artifacts anyone can check.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::{
    CodeBinding, PREDICATE_TYPE, Predicate, STATEMENT_TYPE, Statement, Subject, this_host,
};
use super::status::Status;
use super::{EvidenceError, clause_sha256, dsse, head, keys, ledger};
use crate::checkers::{self, CheckError, Context, Input, Judged};
use crate::contract::FalsificationTest;

/// Largest `measure` output read from an engine, in bytes.
const MAX_ENGINE_OUTPUT: u64 = 256 << 20;

/// How to re-check.
pub struct Recheck<'a> {
    /// The models directory.
    pub models: &'a Path,
    /// Another pv build to take measurements from (the code under test); this process when
    /// `None`.
    pub engine: Option<&'a Path>,
    /// Where the scratch ledger goes.
    pub scratch: &'a Path,
    /// Threads for the engines.
    pub threads: usize,
    /// Progress reporter.
    pub progress: &'a dyn Fn(&str),
}

/// One test re-checked in this run.
#[derive(Clone, Debug, Serialize)]
pub struct Fresh {
    /// The contract.
    pub contract_id: String,
    /// The test.
    pub test_id: String,
    /// The checker that ran.
    pub checker: String,
    /// Who measured: `this pv` or the engine's path.
    pub measured_by: String,
    /// The judge's verdict (`None` when the checker could not run).
    pub verdict: Option<String>,
    /// Whether the prediction held.
    pub passed: bool,
    /// Whether the model was the pinned one (hashed by this process).
    pub canonical: bool,
    /// The judge's report (the table).
    pub report: String,
    /// Why the checker could not run.
    pub error: Option<String>,
    /// The scratch record.
    pub record: Option<String>,
    /// The measurements.
    #[serde(skip)]
    pub measurements: Value,
}

impl Fresh {
    /// One line: the test, its verdict, who measured, and that this process judged.
    pub fn summary(&self) -> String {
        format!(
            "{}/{}: {} (measured by {}, judged here{})",
            self.contract_id,
            self.test_id,
            self.verdict.as_deref().unwrap_or("no verdict"),
            self.measured_by,
            if self.canonical {
                ", canonical model"
            } else {
                ""
            }
        )
    }

    /// Whether this result lets the gate count the test as discharged.
    pub fn discharges(&self) -> bool {
        self.error.is_none() && self.passed && self.canonical
    }
}

/// What `pv measure` prints: the measurements of one checker run, and the files it read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureOutput {
    /// The checker.
    pub checker: String,
    /// Its measurements.
    pub measurements: Value,
    /// Files it read (path as given, algorithm to digest).
    pub inputs: Vec<MeasuredInput>,
}

/// A file a `measure` run read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredInput {
    /// Its path as given.
    pub name: String,
    /// Algorithm to lower-case hex digest.
    pub digest: std::collections::BTreeMap<String, String>,
}

impl From<&Input> for MeasuredInput {
    fn from(i: &Input) -> Self {
        MeasuredInput {
            name: i.name.clone(),
            digest: i.digest.clone(),
        }
    }
}

/// The scratch ledger's signing key, made for this run.
pub struct ScratchKey {
    key: ed25519_dalek::SigningKey,
    name: String,
}

impl ScratchKey {
    /// A new key, its public half written to `scratch/keys/NAME.pub`; `label` (which shard
    /// made it, if one did: `2of4`) goes into the name.
    pub fn create(scratch: &Path, label: Option<&str>) -> Result<Self, EvidenceError> {
        let key = keys::random_key()?;
        let name = match label {
            None => format!("pv-gate-{}", std::process::id()),
            Some(l) => format!("pv-gate-{l}-{}", std::process::id()),
        };
        let dir = scratch.join("keys");
        let _ = std::fs::remove_file(dir.join(format!("{name}.pub")));
        keys::publish(&name, &key.verifying_key(), &dir)?;
        Ok(ScratchKey { key, name })
    }
}

fn failed(cid: &str, test: &FalsificationTest, by: &str, e: String) -> Fresh {
    Fresh {
        contract_id: cid.into(),
        test_id: test.id.clone(),
        checker: test.checker.clone(),
        measured_by: by.into(),
        verdict: None,
        passed: false,
        canonical: false,
        report: String::new(),
        error: Some(e),
        record: None,
        measurements: Value::Null,
    }
}

/// Runs `test` (the trusted clause) and judges it; records the result, bound to `code`
/// (the covered files as they are now), in the scratch ledger. A missing model is an error
/// (bad input), any other failure a result that blocks.
pub fn recheck(
    root: &Path,
    cid: &str,
    test: &FalsificationTest,
    code: CodeBinding,
    r: &Recheck,
    key: &ScratchKey,
) -> Result<Fresh, EvidenceError> {
    let by = r
        .engine
        .map_or("this pv".to_string(), |e| e.display().to_string());
    let Some(checker) = checkers::find(&test.checker) else {
        return Ok(failed(
            cid,
            test,
            &by,
            format!("checker {} is not registered in this pv", test.checker),
        ));
    };
    (r.progress)(&format!(
        "re-checking {}/{} ({})",
        cid, test.id, test.checker
    ));
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let measured = match r.engine {
        None => {
            let none = |_: &str| None;
            let ctx = Context {
                models: r.models,
                threads: r.threads,
                cite: None,
                repo: root,
                contract_id: cid,
                latest_verdict: &none,
                progress: r.progress,
                fault: None,
            };
            match (checker.measure)(&test.params, &ctx) {
                Ok(m) => Ok((
                    m.measurements,
                    m.inputs.iter().map(MeasuredInput::from).collect(),
                )),
                Err(e @ CheckError::Missing { .. }) => {
                    return Err(EvidenceError::Usage(e.to_string()));
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Some(engine) => run_engine(engine, root, &test.checker, &test.params, r)
            .map(|o| (o.measurements, o.inputs)),
    };
    let (measurements, inputs) = match measured {
        Ok(m) => m,
        Err(e) => return Ok(failed(cid, test, &by, e)),
    };
    let judged = (checker.judge)(&Judged {
        contract_id: cid,
        params: &test.params,
        measurements: &measurements,
    });
    let j = match judged {
        Ok(j) => j,
        Err(e) => {
            return Ok(failed(
                cid,
                test,
                &by,
                format!("its measurements cannot be judged: {e}"),
            ));
        }
    };
    // This process hashes the files: the canonical model by its pinned name, and any other
    // input the run names that is in the models directory.
    let own = |name: &str| crate::fsutil::sha256_file(&r.models.join(name)).ok();
    let canonical = checkers::canonical(&test.params, own);
    let subjects: Vec<Subject> = inputs
        .iter()
        .filter_map(|i| {
            let file = Path::new(&i.name).file_name()?.to_str()?;
            Some(Subject {
                name: r.models.join(file).display().to_string(),
                digest: [("sha256".to_string(), own(file)?)].into(),
            })
        })
        .collect();
    let mut fresh = Fresh {
        contract_id: cid.into(),
        test_id: test.id.clone(),
        checker: test.checker.clone(),
        measured_by: by,
        verdict: Some(j.verdict.clone()),
        passed: j.passed,
        canonical,
        report: j.report,
        error: None,
        record: None,
        measurements: measurements.clone(),
    };
    let to = Status::Pending
        .after(fresh.passed, canonical)
        .expect("every outcome moves a test out of PENDING");
    let statement = Statement {
        type_: STATEMENT_TYPE.into(),
        subject: subjects,
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            contract_id: cid.into(),
            contract_version: String::new(),
            contract_file: String::new(),
            test_id: test.id.clone(),
            clause_sha256: clause_sha256(test),
            checker: test.checker.clone(),
            params: test.params.clone(),
            verdict: j.verdict,
            passed: fresh.passed,
            canonical,
            measurements,
            from_status: Status::Pending,
            to_status: to,
            sequence: 1,
            previous_record_sha256: None,
            pv_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: String::new(),
            git_dirty: false,
            host: this_host(r.threads),
            started_at,
            finished_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            signer: key.name.clone(),
            code: Some(code),
        },
    };
    let body = serde_json::to_vec(&statement).expect("a statement serialises");
    let text = serde_json::to_string_pretty(&dsse::sign(&body, &key.key))
        .expect("an envelope serialises")
        + "\n";
    let dir = ledger::test_dir(&r.scratch.join("evidence"), cid, &test.id);
    let _ = std::fs::remove_dir_all(&dir);
    let path = ledger::append(&dir, 1, text.as_bytes(), |sha| {
        head::sign(cid, &test.id, 1, sha, &key.name, &key.key)
    })?;
    fresh.record = Some(path.display().to_string());
    Ok(fresh)
}

/// `ENGINE measure --checker C --params JSON --models DIR …`: the engine's measurements.
fn run_engine(
    engine: &Path,
    root: &Path,
    checker: &str,
    params: &Value,
    r: &Recheck,
) -> Result<MeasureOutput, String> {
    let mut child = Command::new(engine)
        .args(["measure", "--checker", checker, "--params"])
        .arg(params.to_string())
        .arg("--models")
        .arg(r.models)
        .arg("--root")
        .arg(root)
        .args(["--threads", &r.threads.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", engine.display()))?;
    let mut out = Vec::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errs = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut s);
        s
    });
    stdout
        .take(MAX_ENGINE_OUTPUT + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("reading {}'s output: {e}", engine.display()))?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&errs.join().unwrap_or_default())
        .trim()
        .to_string();
    if !status.success() {
        return Err(format!(
            "{} measure failed ({status}): {}",
            engine.display(),
            err.lines().last().unwrap_or("")
        ));
    }
    if out.len() as u64 > MAX_ENGINE_OUTPUT {
        return Err(format!(
            "{} printed more than {MAX_ENGINE_OUTPUT} bytes",
            engine.display()
        ));
    }
    let o: MeasureOutput = serde_json::from_slice(&out)
        .map_err(|e| format!("{}'s measure output is not valid: {e}", engine.display()))?;
    if o.checker != checker {
        return Err(format!(
            "{} measured checker {:?}, not {checker}",
            engine.display(),
            crate::fsutil::short(&o.checker, 80)
        ));
    }
    Ok(o)
}

/// Where scratch ledgers go by default: `target/pv-gate/` under the repository root.
pub fn default_scratch(root: &Path) -> PathBuf {
    root.join("target").join("pv-gate")
}
