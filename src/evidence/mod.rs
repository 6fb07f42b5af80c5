//! Evidence: signed, hash-chained records of discharge runs, and the statuses computed
//! from them.
//!
//! A record is a DSSE envelope ([`dsse`]) around an in-toto statement ([`record`]), signed
//! with Ed25519 by a trusted key ([`keys`]), bound to the code its test covers, stored
//! atomically under a lock in `evidence/<contract>/<test>/` with a signed head ([`ledger`],
//! [`head`]). Statuses are replayed from verified records through a fixed transition table
//! ([`status`]), and every claim a record makes is re-derived ([`verify`]). Trust comes from
//! the working tree or a base commit ([`trust`]); what blocks is a [`policy`] of small rules
//! over the ledger, the changes against the base ([`changes`]) and fresh re-checks
//! ([`recheck`]), put together by [`gate`].

pub mod changes;
pub mod discharge;
pub mod dsse;
pub mod gate;
pub mod head;
pub mod keys;
pub mod layout;
pub mod ledger;
pub mod policy;
pub mod recheck;
pub mod record;
pub mod shard;
pub mod status;
pub mod trust;
pub mod verify;

use std::path::Path;

use serde_json::Value;

pub use record::schema_text;
pub use status::Status;

/// Why an evidence operation could not run (as opposed to what verification finds).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A key or record file is malformed.
    #[error("{file}: {at}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// Where in it.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A request that cannot be met (bad name, existing key, refused transition, ...).
    #[error("{0}")]
    Usage(String),
}

impl EvidenceError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EvidenceError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub use crate::fsutil::sha256_hex;

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, EvidenceError> {
    crate::fsutil::sha256_file(path).map_err(|e| EvidenceError::io(path, e))
}

/// Canonical JSON: object keys sorted, no insignificant whitespace.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// sha256 of a falsification test's clause as canonical JSON.
pub fn clause_sha256(test: &crate::contract::FalsificationTest) -> String {
    let v = serde_json::to_value(test).expect("a test serialises");
    sha256_hex(canonical_json(&v).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, {"z": 1, "a": "x"}], "a": null}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":[1,{"a":"x","z":1}]}"#);
    }
}
