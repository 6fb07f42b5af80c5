//! Files of a commit, read from git's object store rather than the working tree: what
//! `pv gate --base REV` trusts (the keys, the ledger and the contracts as the target branch
//! has them), so nothing a pull request writes into its own tree can change them.
//!
//! Uses the `git` command (plumbing only: `rev-parse`, `ls-tree`, `cat-file --batch`); sizes
//! come from the tree listing and are checked before any blob is read.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Why a commit's files could not be read.
#[derive(Debug, thiserror::Error)]
#[error("git: {0}")]
pub struct GitError(pub String);

/// The regular files under some directories of one commit.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The revision as given (`origin/main`).
    pub rev: String,
    /// The full commit id it resolved to.
    pub commit: String,
    /// Path relative to the pv root (`keys/alice.pub`) to contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Entries under those directories that are not regular files (symlinks, submodules),
    /// with what they are; never read.
    pub skipped: Vec<(String, String)>,
}

impl Snapshot {
    /// The files directly or indirectly under `dir` (`keys`), by path.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = format!("{dir}/");
        self.files
            .iter()
            .filter(move |(p, _)| p.starts_with(&prefix))
            .map(|(p, b)| (p.as_str(), b.as_slice()))
    }
}

fn git(root: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GitError(format!("running git {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(GitError(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).trim().to_string()
}

/// Resolves `rev` to a full commit id in the repository holding `root`.
pub fn resolve_commit(root: &Path, rev: &str) -> Result<String, GitError> {
    if rev.is_empty() || rev.starts_with('-') || rev.contains(char::is_whitespace) {
        return Err(GitError(format!("{rev:?} is not a revision")));
    }
    Ok(text(
        git(
            root,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ],
        )
        .map_err(|_| GitError(format!("{rev:?} names no commit in this repository")))?,
    ))
}

/// Reads the regular files under `dirs` (relative to `root`, which may be a subdirectory of
/// the repository) as of `rev`. A file larger than `max_file`, or more than `max_total`
/// bytes in all, is an error before anything is read.
pub fn snapshot(
    root: &Path,
    rev: &str,
    dirs: &[&str],
    max_file: u64,
    max_total: u64,
) -> Result<Snapshot, GitError> {
    let commit = resolve_commit(root, rev)?;
    let prefix = text(git(root, &["rev-parse", "--show-prefix"])?);
    let mut args = vec!["ls-tree", "-r", "-l", "-z", "--full-tree", &commit, "--"];
    let specs: Vec<String> = dirs.iter().map(|d| format!("{prefix}{d}")).collect();
    args.extend(specs.iter().map(String::as_str));
    let listing = git(root, &args)?;
    let mut snap = Snapshot {
        rev: rev.to_string(),
        commit: commit.clone(),
        ..Default::default()
    };
    let mut wanted: Vec<(String, String, u64)> = Vec::new();
    let mut total = 0u64;
    for entry in listing.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        // `<mode> SP <type> SP <object> SP+ <size> TAB <path>`
        let bad = || {
            GitError(format!(
                "unexpected ls-tree line {:?}",
                String::from_utf8_lossy(entry)
            ))
        };
        let tab = entry.iter().position(|&b| b == b'\t').ok_or_else(bad)?;
        let head = std::str::from_utf8(&entry[..tab]).map_err(|_| bad())?;
        let path = String::from_utf8(entry[tab + 1..].to_vec())
            .map_err(|_| GitError(format!("a path under {dirs:?} at {rev} is not UTF-8")))?;
        let Some(rel) = path.strip_prefix(&prefix).map(str::to_string) else {
            continue;
        };
        let fields: Vec<&str> = head.split_whitespace().collect();
        let [mode, kind, oid, size] = fields[..] else {
            return Err(bad());
        };
        if kind != "blob" || !(mode == "100644" || mode == "100755") {
            let what = match mode {
                "120000" => "a symbolic link",
                "160000" => "a submodule",
                _ => "not a regular file",
            };
            snap.skipped.push((rel, what.into()));
            continue;
        }
        let size: u64 = size.parse().map_err(|_| bad())?;
        if size > max_file {
            return Err(GitError(format!(
                "{rel} at {rev} is {size} bytes; the limit for this file is {max_file}"
            )));
        }
        total += size;
        if total > max_total {
            return Err(GitError(format!(
                "the files under {dirs:?} at {rev} exceed {max_total} bytes in all"
            )));
        }
        wanted.push((rel, oid.to_string(), size));
    }
    for ((rel, _, _), bytes) in wanted.iter().zip(read_blobs(root, &wanted)?) {
        snap.files.insert(rel.clone(), bytes);
    }
    Ok(snap)
}

/// Reads blobs through one `git cat-file --batch`, each checked against its listed size.
fn read_blobs(root: &Path, wanted: &[(String, String, u64)]) -> Result<Vec<Vec<u8>>, GitError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new("git")
        .current_dir(root)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| GitError(format!("running git cat-file: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let ids: String = wanted
        .iter()
        .map(|(_, oid, _)| format!("{oid}\n"))
        .collect();
    // A writer thread, so a long list cannot deadlock against unread output.
    let writer = std::thread::spawn(move || stdin.write_all(ids.as_bytes()));
    let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut blobs = Vec::with_capacity(wanted.len());
    let mut result = Ok(());
    for (rel, oid, size) in wanted {
        let mut header = String::new();
        if out.read_line(&mut header).is_err() {
            result = Err(GitError(format!("reading {rel}")));
            break;
        }
        let expect = format!("{oid} blob {size}");
        if header.trim_end() != expect {
            result = Err(GitError(format!(
                "cat-file answered {:?} for {rel}, expected {expect:?}",
                header.trim_end()
            )));
            break;
        }
        let mut buf = vec![0u8; *size as usize];
        let mut nl = [0u8; 1];
        if out
            .read_exact(&mut buf)
            .and_then(|()| out.read_exact(&mut nl))
            .is_err()
        {
            result = Err(GitError(format!("{rel}: blob ended early")));
            break;
        }
        blobs.push(buf);
    }
    drop(out);
    let _ = writer.join();
    let _ = child.wait();
    result.map(|()| blobs)
}
