//! Where trust comes from: the working tree (anyone who can edit it can add a key), or a
//! base commit read from git's object store (`pv gate --base origin/main`): its `keys/`
//! are the trusted signers, its ledger the records that must survive, its contracts the
//! claims a change may not weaken.

use serde::Serialize;

use super::EvidenceError;
use super::keys::{self, TrustedKey};
use super::layout::Layout;
use crate::contract::{self, Contract};
use crate::gitrepo::{self, Snapshot};

/// Largest key, record, head or contract read from the base commit, in bytes.
const MAX_BASE_FILE: u64 = 8 << 20;
/// Largest total read from the base commit, in bytes.
const MAX_BASE_TOTAL: u64 = 1 << 30;

/// The base commit's side of the gate.
#[derive(Clone, Debug)]
pub struct Base {
    /// Its `keys/`, `evidence/` and `contracts/`.
    pub snapshot: Snapshot,
    /// Its contracts: file and contract, or why this pv cannot read it.
    pub contracts: Vec<(String, Result<Contract, String>)>,
}

impl Base {
    /// The base's contract of this id.
    pub fn contract(&self, id: &str) -> Option<&Contract> {
        self.contracts
            .iter()
            .filter_map(|(_, c)| c.as_ref().ok())
            .find(|c| c.metadata.id == id)
    }
}

/// The trusted signers, and the base they came from (if any).
#[derive(Clone, Debug)]
pub struct Trust {
    /// The keys whose signatures count.
    pub keys: Vec<TrustedKey>,
    /// The base commit, with `--base`.
    pub base: Option<Base>,
}

/// What a report says about trust, in one place.
#[derive(Clone, Debug, Serialize)]
pub struct TrustSummary {
    /// `working-tree` or `base`.
    pub source: &'static str,
    /// The revision as given, with `--base`.
    pub rev: Option<String>,
    /// The commit it resolved to.
    pub commit: Option<String>,
    /// The trusted key names.
    pub keys: Vec<String>,
    /// One sentence.
    pub text: String,
}

impl Trust {
    /// Trust in the working tree's `keys/`.
    pub fn working_tree(layout: &Layout) -> Result<Self, EvidenceError> {
        Ok(Trust {
            keys: keys::trusted_keys(&layout.keys)?,
            base: None,
        })
    }

    /// Trust in commit `rev` of the repository holding `layout.root`.
    pub fn base(layout: &Layout, rev: &str) -> Result<Self, EvidenceError> {
        let snapshot = gitrepo::snapshot(
            &layout.root,
            rev,
            &["keys", "evidence", "contracts"],
            MAX_BASE_FILE,
            MAX_BASE_TOTAL,
        )
        .map_err(|e| EvidenceError::Usage(e.to_string()))?;
        let keys = keys::trusted_keys_at(&snapshot)?;
        let contracts = snapshot
            .under("contracts")
            .filter(|(p, _)| p.ends_with(".yaml") || p.ends_with(".yml"))
            .map(|(p, bytes)| {
                let display = format!("{p} (at {rev})");
                let parsed = std::str::from_utf8(bytes)
                    .map_err(|_| "not UTF-8".to_string())
                    .and_then(|text| {
                        contract::parse_text(&display, text).map_err(|f| {
                            f.iter()
                                .map(|f| format!("{}:{}: {}", f.line, f.column, f.message))
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    });
                (display, parsed)
            })
            .collect();
        Ok(Trust {
            keys,
            base: Some(Base {
                snapshot,
                contracts,
            }),
        })
    }

    /// What this trust is, for reports.
    pub fn summary(&self) -> TrustSummary {
        let keys: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        match &self.base {
            None => TrustSummary {
                source: "working-tree",
                rev: None,
                commit: None,
                text: format!(
                    "trust comes from the working tree: signers are keys/ as checked out ({}); anyone who can edit this tree can add a signer. Pass --base REV to root trust in the target branch",
                    if keys.is_empty() {
                        "none".into()
                    } else {
                        keys.join(", ")
                    }
                ),
                keys,
            },
            Some(b) => TrustSummary {
                source: "base",
                rev: Some(b.snapshot.rev.clone()),
                commit: Some(b.snapshot.commit.clone()),
                text: format!(
                    "trust comes from base {}, read from git: signers are its keys/ ({}), its records must all be here unchanged, its contracts may not be weakened",
                    if b.snapshot.commit.starts_with(&b.snapshot.rev) {
                        crate::fsutil::short(&b.snapshot.commit, 12)
                    } else {
                        format!(
                            "{} (commit {})",
                            b.snapshot.rev,
                            crate::fsutil::short(&b.snapshot.commit, 12)
                        )
                    },
                    if keys.is_empty() {
                        "none".into()
                    } else {
                        keys.join(", ")
                    }
                ),
                keys,
            },
        }
    }
}
