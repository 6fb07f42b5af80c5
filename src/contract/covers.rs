//! `covers:`: the code a contract's tests exercise, as path globs relative to the
//! repository root (`src/model/**`, `Cargo.lock`).
//!
//! Evidence binds the sha256 of every file the globs match when the checker ran; when any
//! of those files changes, appears or disappears, the record is STALE. Each pattern starts
//! with a literal directory or file name, so finding the files walks only those places
//! (never `target/` or `models/` by accident). `*` and `?` stay within one path component;
//! `**` crosses components.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Digest and size of the set of files a `covers` list matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoveredFiles {
    /// Path (relative, `/`-separated) to the sha256 of its contents (a symbolic link: the
    /// sha256 of `symlink:` and its target).
    pub files: BTreeMap<String, String>,
}

impl CoveredFiles {
    /// One digest over the set: sha256 of the lines `<sha256>  <path>\n`, sorted by path
    /// (what `sha256sum` prints, so the value can be recomputed with standard tools).
    pub fn sha256(&self) -> String {
        tree_sha256(&self.files)
    }
}

/// The digest of a path -> sha256 map (see [`CoveredFiles::sha256`]).
pub fn tree_sha256(files: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (p, d) in files {
        text += &format!("{d}  {p}\n");
    }
    crate::fsutil::sha256_hex(text.as_bytes())
}

/// A compiled `covers` list.
#[derive(Clone, Debug)]
pub struct Covers {
    patterns: Vec<String>,
    set: GlobSet,
    starts: Vec<String>,
}

/// Why a pattern is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("covers pattern `{pattern}`: {reason}")]
pub struct PatternError {
    /// Its index in the list.
    pub index: usize,
    /// The pattern.
    pub pattern: String,
    /// What is wrong.
    pub reason: String,
}

fn is_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '!' | '\\')
}

fn glob(pattern: &str) -> Result<Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map_err(|e| e.kind().to_string())
}

impl Covers {
    /// Compiles `patterns`, refusing absolute paths, `.`/`..` components, backslashes and
    /// patterns that do not start with a literal name.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut b = GlobSetBuilder::new();
        let mut starts = Vec::new();
        for (index, p) in patterns.iter().enumerate() {
            let err = |reason: &str| PatternError {
                index,
                pattern: p.clone(),
                reason: reason.into(),
            };
            if p.is_empty() {
                return Err(err("empty"));
            }
            if p.starts_with('/') || p.contains('\\') {
                return Err(err(
                    "must be a relative path with `/` separators (relative to the repository root)",
                ));
            }
            let parts: Vec<&str> = p.split('/').collect();
            if parts
                .iter()
                .any(|c| c.is_empty() || *c == "." || *c == "..")
            {
                return Err(err("empty, `.` or `..` path components are not allowed"));
            }
            if parts[0].contains(is_meta) {
                return Err(err(
                    "must start with a literal directory or file name (e.g. `src/model/**`)",
                ));
            }
            let literal: Vec<&str> = parts
                .iter()
                .take_while(|c| !c.contains(is_meta))
                .copied()
                .collect();
            starts.push(literal.join("/"));
            b.add(glob(p).map_err(|e| err(&e))?);
        }
        let set = b.build().map_err(|e| PatternError {
            index: 0,
            pattern: patterns.join(", "),
            reason: e.to_string(),
        })?;
        starts.sort();
        starts.dedup();
        Ok(Covers {
            patterns: patterns.to_vec(),
            set,
            starts,
        })
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the relative path `rel` is covered.
    pub fn matches(&self, rel: &str) -> bool {
        self.set.is_match(rel)
    }

    /// The covered files under `root`, with their digests. Symbolic links are recorded by
    /// target and not followed; a FIFO, socket or device among them is an error (never
    /// opened).
    pub fn files(&self, root: &Path) -> std::io::Result<CoveredFiles> {
        let mut files = BTreeMap::new();
        for start in &self.starts {
            let path = root.join(start);
            match std::fs::symlink_metadata(&path) {
                Ok(_) => self.walk(&path, start.clone(), &mut files)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(CoveredFiles { files })
    }

    fn walk(
        &self,
        path: &Path,
        rel: String,
        out: &mut BTreeMap<String, String>,
    ) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        let t = meta.file_type();
        if t.is_dir() {
            let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(path)?
                .map(|e| {
                    e.map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (format!("{rel}/{name}"), e.path())
                    })
                })
                .collect::<Result<_, _>>()?;
            entries.sort();
            for (r, p) in entries {
                self.walk(&p, r, out)?;
            }
            return Ok(());
        }
        if !self.matches(&rel) || out.contains_key(&rel) {
            return Ok(());
        }
        let digest = if t.is_symlink() {
            let target = std::fs::read_link(path)?;
            crate::fsutil::sha256_hex(format!("symlink:{}", target.display()).as_bytes())
        } else if t.is_file() {
            crate::fsutil::sha256_file(path)?
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "covered path {rel} is {}, not a regular file; refused",
                    crate::fsutil::kind_name(&t)
                ),
            ));
        };
        out.insert(rel, digest);
        Ok(())
    }
}

/// What changed between the covered files a record bound and the files now: one line per
/// file (`changed`, `added`, `removed`), in path order.
pub fn changed_files(
    recorded: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, d) in recorded {
        match now.get(p) {
            None => out.push(format!("{p} removed")),
            Some(n) if n != d => out.push(format!("{p} changed")),
            _ => {}
        }
    }
    for p in now.keys().filter(|p| !recorded.contains_key(*p)) {
        out.push(format!("{p} added"));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(p: &[&str]) -> Result<Covers, PatternError> {
        Covers::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn patterns_are_relative_and_start_literally() {
        for bad in [
            "/etc/passwd",
            "../x",
            "src/../x",
            "**/*.rs",
            "*.rs",
            "src//x",
            "a\\b",
            "",
        ] {
            assert!(covers(&[bad]).is_err(), "{bad}");
        }
        let c = covers(&["src/model/**", "Cargo.lock", "src/*.rs"]).unwrap();
        assert!(c.matches("src/model/forward.rs"));
        assert!(c.matches("src/model/a/b.rs"));
        assert!(c.matches("Cargo.lock"));
        assert!(c.matches("src/lib.rs"));
        assert!(!c.matches("src/cli/mod.rs"), "* stays within a component");
        assert!(!c.matches("Cargo.toml"));
    }

    #[test]
    fn files_walk_only_the_literal_starts_and_detect_changes() {
        let root = std::env::temp_dir().join(format!("pv-covers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src/model")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(root.join("src/model/a.rs"), "a").unwrap();
        std::fs::write(root.join("src/model/b.txt"), "b").unwrap();
        std::fs::write(root.join("target/x.rs"), "x").unwrap();
        let c = covers(&["src/model/*.rs"]).unwrap();
        let before = c.files(&root).unwrap();
        assert_eq!(before.files.keys().collect::<Vec<_>>(), ["src/model/a.rs"]);
        std::fs::write(root.join("src/model/a.rs"), "A").unwrap();
        std::fs::write(root.join("src/model/c.rs"), "c").unwrap();
        let after = c.files(&root).unwrap();
        assert_ne!(before.sha256(), after.sha256());
        assert_eq!(
            changed_files(&before.files, &after.files),
            ["src/model/a.rs changed", "src/model/c.rs added"]
        );
        std::fs::remove_dir_all(&root).ok();
    }
}
