//! What an evidence record says: an in-toto Statement v1 whose subjects are the files the
//! run read (model files, the contract) and whose predicate is the run itself.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::Status;

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The predicate type of pv evidence.
pub const PREDICATE_TYPE: &str = "https://pv.dev/evidence/v1";

/// An in-toto Statement v1 carrying a pv [`Predicate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The files the run read, by digest.
    pub subject: Vec<Subject>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What was run and what it found.
    pub predicate: Predicate,
}

/// A file (or commit) the run depended on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Path relative to the directory pv ran in (`models/…`, `contracts/…`), or
    /// `git:REV` for a cited commit.
    pub name: String,
    /// Algorithm to lower-case hex digest (`sha256`, or `gitCommit`).
    pub digest: BTreeMap<String, String>,
}

/// The machine a run happened on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`x86_64`).
    pub arch: String,
    /// CPU model name, where the OS says.
    pub cpu: String,
    /// Worker threads the checker used.
    pub threads: usize,
}

/// One discharge run: which clause, which checker with which params, what it found, and
/// the status transition it causes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// The contract's id.
    pub contract_id: String,
    /// The contract's version.
    pub contract_version: String,
    /// The contract file, relative to where pv ran.
    pub contract_file: String,
    /// The falsification test's id.
    pub test_id: String,
    /// sha256 of the test's clause as canonical JSON (sorted keys, no spaces): the record
    /// is stale once the clause changes.
    pub clause_sha256: String,
    /// The checker that ran.
    pub checker: String,
    /// Its params, as the contract gave them.
    pub params: Value,
    /// The checker's verdict (`PASS`/`FAIL`, or a hypothesis such as `H1`/`H2`).
    pub verdict: String,
    /// Whether the prediction held.
    pub passed: bool,
    /// Whether the run used the contract's canonical model (matched by sha256).
    pub canonical: bool,
    /// What the checker measured.
    pub measurements: Value,
    /// Status before this record.
    pub from_status: Status,
    /// Status after this record.
    pub to_status: Status,
    /// Position in this test's chain, from 1.
    pub sequence: u64,
    /// sha256 of the previous record file of this test (none for the first).
    pub previous_record_sha256: Option<String>,
    /// pv's version.
    pub pv_version: String,
    /// The git commit pv ran from (`unknown` outside a repository).
    pub git_commit: String,
    /// Whether the working tree had uncommitted changes.
    pub git_dirty: bool,
    /// Where it ran.
    pub host: Host,
    /// When the checker started (RFC 3339, UTC).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Name of the signing key (as in `keys/NAME.pub`).
    pub signer: String,
    /// The code the run exercised: the test's `covers` and the sha256 of every file they
    /// matched. Absent in records made before pv bound evidence to code (always STALE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeBinding>,
}

/// The covered code a record speaks for: once any of these files changes, appears or
/// disappears, the record is STALE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBinding {
    /// The `covers` patterns in force (the test's, else its contract's).
    pub covers: Vec<String>,
    /// sha256 over the set: of the lines `<sha256>  <path>` sorted by path, as `sha256sum`
    /// prints them.
    pub sha256: String,
    /// Each covered file (relative path) and the sha256 of its contents.
    pub files: BTreeMap<String, String>,
}

/// The evidence schema, as committed in `schemas/evidence.schema.json`.
pub fn schema_text() -> String {
    let schema = schemars::schema_for!(Statement);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

/// The host this process runs on.
pub fn this_host(threads: usize) -> Host {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Host {
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        cpu,
        threads,
    }
}
