//! The evidence directory: `evidence/<contract>/<test>/NNNN.dsse.json` records, numbered
//! from 1, and `head.json` naming the latest (so a deleted record is noticed), all
//! written atomically while holding `evidence/.lock`.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EvidenceError, sha256_hex};
use crate::fsutil::atomic_write;

/// Largest record read, in bytes (records are a few kilobytes).
pub const MAX_RECORD_BYTES: u64 = 8 << 20;

/// The directory of one test's records.
pub fn test_dir(evidence: &Path, contract_id: &str, test_id: &str) -> PathBuf {
    evidence.join(contract_id).join(test_id)
}

/// The file name of record `seq`.
pub fn record_name(seq: u64) -> String {
    format!("{seq:04}.dsse.json")
}

/// `head.json`: the latest record of a test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Its sequence number.
    pub sequence: u64,
    /// sha256 of its file.
    pub sha256: String,
}

/// One record file as stored.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Sequence number from the file name.
    pub sequence: u64,
    /// The file.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// sha256 of the bytes.
    pub sha256: String,
}

/// An exclusive lock on the evidence directory, released on drop.
pub struct Lock(File);

/// Takes the evidence lock, waiting for any other discharge to finish.
pub fn lock(evidence: &Path) -> Result<Lock, EvidenceError> {
    std::fs::create_dir_all(evidence).map_err(|e| EvidenceError::io(evidence, e))?;
    let path = evidence.join(".lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EvidenceError::io(&path, e))?;
    f.lock().map_err(|e| EvidenceError::io(&path, e))?;
    Ok(Lock(f))
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The records of one test, in sequence order; files that are not records (temporary
/// files of an interrupted write) are ignored.
pub fn read_records(dir: &Path) -> Result<Vec<StoredRecord>, EvidenceError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(|e| EvidenceError::io(dir, e))?.path();
        let Some(seq) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".dsse.json"))
            .filter(|s| s.len() >= 4 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = crate::fsutil::read_bounded(&path, MAX_RECORD_BYTES)
            .map_err(|e| EvidenceError::io(&path, e))?;
        out.push(StoredRecord {
            sequence: seq,
            sha256: sha256_hex(&bytes),
            path,
            bytes,
        });
    }
    out.sort_by_key(|r| r.sequence);
    Ok(out)
}

/// Reads `head.json` (`None` if absent).
pub fn read_head(dir: &Path) -> Result<Option<Head>, EvidenceError> {
    let path = dir.join("head.json");
    match crate::fsutil::read_bounded(&path, 4096) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| EvidenceError::Malformed {
                file: path.display().to_string(),
                at: format!("line {} column {}", e.line(), e.column()),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EvidenceError::io(&path, e)),
    }
}

/// Writes record `seq` and then moves `head.json` to it, each atomically. Call with the
/// lock held. A crash between the two leaves a complete record with a lagging head,
/// which [`repair_head`] (run by the next discharge) brings forward.
pub fn append(dir: &Path, seq: u64, bytes: &[u8]) -> Result<PathBuf, EvidenceError> {
    std::fs::create_dir_all(dir).map_err(|e| EvidenceError::io(dir, e))?;
    let path = dir.join(record_name(seq));
    if path.exists() {
        return Err(EvidenceError::Usage(format!(
            "{} already exists; refusing to overwrite evidence",
            path.display()
        )));
    }
    atomic_write(&path, bytes).map_err(|e| EvidenceError::io(&path, e))?;
    write_head(
        dir,
        &Head {
            sequence: seq,
            sha256: sha256_hex(bytes),
        },
    )?;
    Ok(path)
}

fn write_head(dir: &Path, head: &Head) -> Result<(), EvidenceError> {
    let path = dir.join("head.json");
    let text = serde_json::to_string_pretty(head).expect("a head serialises") + "\n";
    atomic_write(&path, text.as_bytes()).map_err(|e| EvidenceError::io(&path, e))
}

/// Brings `head.json` forward to the last record when it lags by exactly one (an
/// interrupted discharge); any other mismatch is left for `pv verify` to report.
pub fn repair_head(dir: &Path, records: &[StoredRecord]) -> Result<(), EvidenceError> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    let head = read_head(dir)?;
    let lagging = match &head {
        None => records.len() == 1,
        Some(h) => {
            h.sequence + 1 == last.sequence
                && records.len() >= 2
                && records[records.len() - 2].sha256 == h.sha256
        }
    };
    if lagging {
        write_head(
            dir,
            &Head {
                sequence: last.sequence,
                sha256: last.sha256.clone(),
            },
        )?;
    }
    Ok(())
}
