//! Contracts: strict YAML files stating equations, proof obligations and falsification
//! tests, each test bound to a registered checker.
//!
//! Loading is all-or-nothing: a contract that has any error is not a contract. The same
//! pipeline serves `pv validate` (which reports every finding) and the commands that act
//! on contracts (which refuse a contract with findings).

pub mod catalog;
pub mod covers;
pub mod models;
pub mod params;
pub mod refs;
pub mod report;
pub mod rules;
pub mod schema;
pub mod types;
pub mod yaml;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use report::{Finding, Report, Severity};
pub use types::{Contract, FalsificationTest};

/// The first line every contract carries, so editors validate it against the schema.
pub const SCHEMA_COMMENT: &str = "# yaml-language-server: $schema=";

/// A contract that passed every check, with where it came from.
#[derive(Clone, Debug)]
pub struct LoadedContract {
    /// The file.
    pub path: PathBuf,
    /// The file as shown in messages.
    pub display: String,
    /// The directory references are resolved against.
    pub dir: PathBuf,
    /// The parsed document with positions.
    pub doc: yaml::Located,
    /// The typed contract.
    pub contract: Contract,
}

/// Why contracts could not be read (as opposed to findings in them).
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// A path could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The contracts have findings.
    #[error("{}", .0.text().trim_end())]
    Invalid(Report),
}

fn io(path: &Path, source: std::io::Error) -> ContractError {
    ContractError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The contract files under `paths`: files as given, directories searched (recursively)
/// for `*.yaml` and `*.yml`, sorted.
pub fn contract_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ContractError> {
    let mut files = Vec::new();
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ContractError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .map(|e| e.map(|e| e.path()).map_err(|e| io(dir, e)))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for p in entries {
            // Symlinked directories are not followed: a link cycle must not loop forever.
            let is_link = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
            if p.is_dir() && !is_link {
                walk(&p, files)?;
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                files.push(p);
            }
        }
        Ok(())
    }
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io(p, e))?;
        if meta.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files.dedup();
    Ok(files)
}

/// Reads a file no larger than the YAML budget allows.
fn read_bounded(path: &Path) -> Result<String, ContractError> {
    let bytes = crate::fsutil::read_bounded(path, yaml::MAX_DOCUMENT_BYTES as u64)
        .map_err(|e| io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        io(
            path,
            std::io::Error::other(format!(
                "not UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            )),
        )
    })
}

/// Parses and schema-checks one file: the contract, or the findings that stop it.
fn load_one(path: &Path) -> Result<(Option<LoadedContract>, Vec<Finding>), ContractError> {
    let display = path.display().to_string();
    let text = read_bounded(path)?;
    let mut findings = Vec::new();
    let at = |rule, severity, line, column, pointer: &str, message| Finding {
        rule,
        severity,
        file: display.clone(),
        line,
        column,
        pointer: pointer.to_string(),
        message,
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    match text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(SCHEMA_COMMENT))
    {
        None => findings.push(at(
            "schema-comment",
            Severity::Warning,
            1,
            1,
            "",
            format!("the first line should be `{SCHEMA_COMMENT}<path to contract.schema.json>`"),
        )),
        Some(target) if !dir.join(target.trim()).is_file() => findings.push(at(
            "schema-comment",
            Severity::Warning,
            1,
            1,
            "",
            format!(
                "the schema `{}` does not exist beside this file",
                target.trim()
            ),
        )),
        Some(_) => {}
    }
    match parse_located(&display, &text) {
        Ok((doc, contract)) => Ok((
            Some(LoadedContract {
                path: path.to_path_buf(),
                display,
                dir,
                doc,
                contract,
            }),
            findings,
        )),
        Err(f) => {
            findings.extend(f);
            Ok((None, findings))
        }
    }
}

/// YAML (under the budget), the names of the `models` and `prompt_sets` tables resolved,
/// the schema, then the types: the contract with its positions, or
/// the findings that stop it. No file-system rule is applied.
fn parse_located(display: &str, text: &str) -> Result<(yaml::Located, Contract), Vec<Finding>> {
    let at = |rule, line, column, message| Finding {
        rule,
        severity: Severity::Error,
        file: display.to_string(),
        line,
        column,
        pointer: String::new(),
        message,
    };
    let mut doc =
        yaml::parse(text).map_err(|e| vec![at(e.rule, e.pos.line, e.pos.column, e.message)])?;
    let unresolved = refs::resolve(display, &mut doc);
    if !unresolved.is_empty() {
        return Err(unresolved);
    }
    let schema_findings = schema::validate(display, &doc);
    if !schema_findings.is_empty() {
        return Err(schema_findings);
    }
    match serde_json::from_value::<Contract>(doc.value.clone()) {
        Ok(contract) => Ok((doc, contract)),
        Err(e) => Err(vec![at("schema", 1, 1, e.to_string())]),
    }
}

/// Parses a contract held in memory (e.g. read from a git commit), with the same YAML
/// budget, schema and types as a file, but none of the rules that look at other files.
pub fn parse_text(display: &str, text: &str) -> Result<Contract, Vec<Finding>> {
    parse_located(display, text).map(|(_, c)| c)
}

/// A limits table from YAML text: the `thresholds` of the first `trace_agreement` test of a
/// contract, or a bare table (`pv calibrate -o`).
pub fn thresholds_from_yaml(text: &str) -> Result<crate::trace::Thresholds, String> {
    let doc =
        yaml::parse(text).map_err(|e| format!("{}:{}: {}", e.pos.line, e.pos.column, e.message))?;
    let table = match doc.value.get("falsification_tests") {
        Some(tests) => tests
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t.get("checker").and_then(|c| c.as_str()) == Some("trace_agreement"))
            .and_then(|t| t.pointer("/params/thresholds"))
            .ok_or("the contract has no trace_agreement test with thresholds")?
            .clone(),
        None => doc.value,
    };
    serde_json::from_value(table).map_err(|e| format!("limits table: {e}"))
}

/// Validates the contracts under `paths`. Sibling contracts in the same directories are
/// loaded as context (so a `depends_on` resolves) but only the named files are reported.
/// `covers` patterns are resolved against the repository root `root`.
pub fn validate(
    paths: &[PathBuf],
    root: &Path,
) -> Result<(Report, Vec<LoadedContract>), ContractError> {
    let targets = contract_files(paths)?;
    let dirs: BTreeSet<PathBuf> = targets
        .iter()
        // A bare file name's parent is "": its directory is the current one.
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    // The same file may be spelt `a.yaml` and `./a.yaml`: compare where they lead.
    let same = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let target_set: BTreeSet<PathBuf> = targets.iter().map(|p| same(p)).collect();
    let context: Vec<PathBuf> = contract_files(&dirs.into_iter().collect::<Vec<_>>())?
        .into_iter()
        .filter(|p| !target_set.contains(&same(p)))
        .collect();
    let mut report = Report {
        files: targets.iter().map(|p| p.display().to_string()).collect(),
        findings: Vec::new(),
    };
    let mut loaded = Vec::new();
    let mut reported = BTreeSet::new();
    // Files are independent until the cross-contract rules: parse them in parallel, keep
    // their order.
    let results: Vec<_> = targets.par_iter().map(|p| load_one(p)).collect();
    for r in results {
        let (c, f) = r?;
        report.findings.extend(f);
        if let Some(c) = c {
            reported.insert(loaded.len());
            loaded.push(c);
        }
    }
    let context: Vec<_> = context.par_iter().map(|p| load_one(p)).collect();
    loaded.extend(
        context
            .into_iter()
            .filter_map(|r| r.ok().and_then(|(c, _)| c)),
    );
    report
        .findings
        .extend(rules::check(&loaded, &reported, root));
    report
        .findings
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    let keep: Vec<LoadedContract> = loaded
        .into_iter()
        .enumerate()
        .filter(|(i, _)| reported.contains(i))
        .map(|(_, c)| c)
        .collect();
    Ok((report, keep))
}

/// Loads every contract under `dir` for acting on them: any error in any contract refuses
/// the lot (warnings are allowed). `root` is the repository root `covers` is relative to.
pub fn load_all(dir: &Path, root: &Path) -> Result<Vec<LoadedContract>, ContractError> {
    let (report, loaded) = validate(&[dir.to_path_buf()], root)?;
    if report.errors() > 0 {
        return Err(ContractError::Invalid(report));
    }
    Ok(loaded)
}

/// The contract defining falsification test `test_id`, and the test.
pub fn find_test<'a>(
    contracts: &'a [LoadedContract],
    test_id: &str,
) -> Option<(&'a LoadedContract, &'a FalsificationTest)> {
    contracts
        .iter()
        .find_map(|c| c.contract.test(test_id).map(|t| (c, t)))
}
