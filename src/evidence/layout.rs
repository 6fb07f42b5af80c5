//! A repository as pv sees it: where its contracts, evidence and trusted keys are. Every
//! command that reads or writes evidence (discharge, verify, status, gate) starts here.

use std::path::{Path, PathBuf};

/// Where pv finds a repository's contracts, evidence and trusted keys.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory pv runs in; record subjects are relative to it.
    pub root: PathBuf,
    /// Contracts (`contracts/`).
    pub contracts: PathBuf,
    /// Evidence (`evidence/`).
    pub evidence: PathBuf,
    /// Trusted public keys (`keys/`).
    pub keys: PathBuf,
}

impl Layout {
    /// The conventional layout under `root`.
    pub fn at(root: &Path) -> Self {
        // Relative names when run from the root, so records name `models/…`, not `./models/…`.
        let under = |n: &str| {
            if root == Path::new(".") {
                PathBuf::from(n)
            } else {
                root.join(n)
            }
        };
        Layout {
            root: root.to_path_buf(),
            contracts: under("contracts"),
            evidence: under("evidence"),
            keys: under("keys"),
        }
    }
}
