//! The evidence directory: `evidence/<contract>/<test>/NNNN.dsse.json` records, numbered
//! from 1, and a signed `head.json` naming the latest (see [`super::head`]), all written
//! atomically while holding `evidence/.lock`.
//!
//! A discharge writes the record, then the head. A crash between the two leaves a complete
//! record whose head lags by one: an *interrupted discharge*, which `pv verify` reports and
//! the next discharge (or `pv discharge TEST --complete`) completes. A crash during either
//! write leaves only a temporary file, which is never read as evidence and is removed by the
//! next discharge.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{EvidenceError, sha256_hex};
use crate::fsutil::{is_temp_for, kind_name, read_bounded, write_temp};

/// Largest record read, in bytes (records are tens of kilobytes).
pub const MAX_RECORD_BYTES: u64 = 8 << 20;

/// Largest head read, in bytes.
pub const MAX_HEAD_BYTES: u64 = 64 << 10;

/// The directory of one test's records.
pub fn test_dir(evidence: &Path, contract_id: &str, test_id: &str) -> PathBuf {
    evidence.join(contract_id).join(test_id)
}

/// The file name of record `seq`.
pub fn record_name(seq: u64) -> String {
    format!("{seq:04}.dsse.json")
}

/// One record file as stored.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Sequence number from the file name.
    pub sequence: u64,
    /// The file.
    pub path: PathBuf,
    /// Its bytes (empty when unreadable).
    pub bytes: Vec<u8>,
    /// sha256 of the bytes.
    pub sha256: String,
    /// Why it could not be read (a FIFO, too large, ...).
    pub unreadable: Option<String>,
}

/// What one test's directory holds.
#[derive(Clone, Debug, Default)]
pub struct TestDir {
    /// Records, in sequence order.
    pub records: Vec<StoredRecord>,
    /// `head.json`: `None` when absent, else its bytes or why they could not be read.
    pub head: Option<Result<Vec<u8>, String>>,
    /// Temporary files an interrupted write left behind.
    pub leftovers: Vec<PathBuf>,
    /// Files that are neither records, nor the head, nor leftovers, and why they matter.
    pub strays: Vec<(PathBuf, String)>,
}

/// Reads a test's directory. Nothing is opened before its type is known: a record or head
/// that is a FIFO, device or directory is reported, not read.
pub fn read_test_dir(dir: &Path) -> Result<TestDir, EvidenceError> {
    let mut out = TestDir::default();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(EvidenceError::io(dir, e)),
        Ok(m) if !m.is_dir() => {
            out.strays.push((
                dir.to_path_buf(),
                format!(
                    "{}, where the test's evidence directory should be",
                    kind_name(&m.file_type())
                ),
            ));
            return Ok(out);
        }
        Ok(_) => {}
    }
    let entries = std::fs::read_dir(dir).map_err(|e| EvidenceError::io(dir, e))?;
    for e in entries {
        let e = e.map_err(|e| EvidenceError::io(dir, e))?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "head.json" {
            out.head =
                Some(read_bounded(&path, MAX_HEAD_BYTES).map_err(|e| format!("head.json: {e}")));
            continue;
        }
        if is_temp_for(&name, None) {
            out.leftovers.push(path);
            continue;
        }
        let Some(stem) = name.strip_suffix(".dsse.json") else {
            out.strays
                .push((path, "not a record, a head or a temporary file".into()));
            continue;
        };
        let seq = stem
            .parse::<u64>()
            .ok()
            .filter(|s| stem.bytes().all(|b| b.is_ascii_digit()) && record_name(*s) == name);
        let Some(sequence) = seq else {
            out.strays.push((
                path,
                "named like a record but not NNNN.dsse.json (four or more digits, no extra zeros)"
                    .into(),
            ));
            continue;
        };
        let (bytes, unreadable) = match read_bounded(&path, MAX_RECORD_BYTES) {
            Ok(b) => (b, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        out.records.push(StoredRecord {
            sequence,
            sha256: sha256_hex(&bytes),
            path,
            bytes,
            unreadable,
        });
    }
    out.records.sort_by_key(|r| r.sequence);
    out.leftovers.sort();
    out.strays.sort();
    Ok(out)
}

/// The records of one test, in sequence order.
pub fn read_records(dir: &Path) -> Result<Vec<StoredRecord>, EvidenceError> {
    Ok(read_test_dir(dir)?.records)
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

/// Stops the process at a named moment of a discharge when `PV_CRASH_AT` names it: how the
/// tests kill a discharge at a known point (abort runs no destructors and no cleanup, as a
/// kill would). The moments: `record-temp` (record written to its temporary file),
/// `record` (record in place, head not yet written), `head-temp` (new head in its
/// temporary file).
pub fn crash_point(moment: &str) {
    if std::env::var("PV_CRASH_AT").is_ok_and(|m| m == moment) {
        std::process::abort();
    }
}

/// Removes the temporary files interrupted writes left in `dir`. Call with the lock held:
/// then no other writer can own one.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<PathBuf>, EvidenceError> {
    let leftovers = read_test_dir(dir)?.leftovers;
    for p in &leftovers {
        std::fs::remove_file(p).map_err(|e| EvidenceError::io(p, e))?;
    }
    Ok(leftovers)
}

/// Writes record `seq`, then the head `head(sha256 of the record)` makes, each atomically.
/// Call with the lock held.
pub fn append(
    dir: &Path,
    seq: u64,
    bytes: &[u8],
    head: impl FnOnce(&str) -> Vec<u8>,
) -> Result<PathBuf, EvidenceError> {
    std::fs::create_dir_all(dir).map_err(|e| EvidenceError::io(dir, e))?;
    let path = dir.join(record_name(seq));
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(EvidenceError::Usage(format!(
            "{} already exists; refusing to overwrite evidence",
            path.display()
        )));
    }
    let tmp = write_temp(&path, bytes).map_err(|e| EvidenceError::io(&path, e))?;
    crash_point("record-temp");
    tmp.persist().map_err(|e| EvidenceError::io(&path, e))?;
    crash_point("record");
    write_head(dir, &head(&sha256_hex(bytes)))?;
    Ok(path)
}

/// Replaces `head.json` atomically.
pub fn write_head(dir: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let path = dir.join("head.json");
    let tmp = write_temp(&path, bytes).map_err(|e| EvidenceError::io(&path, e))?;
    crash_point("head-temp");
    tmp.persist().map_err(|e| EvidenceError::io(&path, e))
}
