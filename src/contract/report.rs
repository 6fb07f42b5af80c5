//! Findings of `pv validate` and the four ways of printing them: text for people, JSON for
//! scripts, SARIF for code-scanning tools, GitHub workflow commands for annotations.

use serde::Serialize;
use serde_json::{Value, json};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails validation.
    Error,
    /// Reported; does not fail validation.
    Warning,
}

/// One problem, at one place, under one stable rule id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id (see [`RULES`]).
    pub rule: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The contract file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// JSON pointer to the offending node (empty for the whole document).
    pub pointer: String,
    /// What is wrong, and how to put it right.
    pub message: String,
}

/// Every rule id `pv validate` can report, with what it means.
pub const RULES: &[(&str, &str)] = &[
    ("yaml-syntax", "the file is not well-formed YAML"),
    ("yaml-duplicate-key", "a mapping repeats a key"),
    (
        "yaml-budget",
        "the document exceeds the size, depth or alias budget",
    ),
    ("schema", "a value violates the contract schema"),
    ("missing-key", "a required key is absent"),
    ("unknown-key", "a key the schema does not define"),
    (
        "unknown-checker",
        "a falsification test names no registered checker",
    ),
    ("bad-params", "params do not type-check against the checker"),
    ("duplicate-id", "an id is used twice across all contracts"),
    (
        "missing-reference",
        "a referenced file does not exist (paths are relative to the contract)",
    ),
    ("unknown-contract", "depends_on names no known contract"),
    ("dependency-cycle", "depends_on forms a cycle"),
    (
        "unknown-test",
        "a stage discharges a falsification test that does not exist",
    ),
    (
        "unknown-obligation",
        "a test cites an obligation that does not exist",
    ),
    (
        "unknown-equation",
        "an obligation applies to an equation that does not exist",
    ),
    (
        "schema-comment",
        "the file lacks the yaml-language-server $schema line editors validate with",
    ),
    (
        "untested-obligation",
        "no falsification test cites this obligation",
    ),
    (
        "bad-covers",
        "a covers pattern is not a relative glob starting with a literal name, or cannot be read",
    ),
    (
        "uncovered-required-test",
        "a gate-required test of an ACTIVE contract has no covers: its evidence could never go stale",
    ),
    ("covers-nothing", "a covers pattern matches no file"),
    (
        "unknown-model",
        "a test names a model that is not in the contract's models table",
    ),
    (
        "unknown-prompt-set",
        "a test names a prompt set that is not in the contract's prompt_sets table",
    ),
    (
        "tolerance-mismatch",
        "a test's params state another limit than an obligation it cites",
    ),
    (
        "bad-model-source",
        "a models entry's source converts an entry the table lacks, or is not GGUF to APR",
    ),
    (
        "unused-model",
        "no test uses this entry of the models table",
    ),
    (
        "unused-prompt-set",
        "no test uses this entry of the prompt_sets table",
    ),
];

/// Text escaped for the message of a GitHub Actions workflow command (`::error ...::MESSAGE`):
/// `%`, CR and LF, as the runner decodes them.
pub fn gh_message(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Text escaped for a property of a workflow command (`file=`, `title=`): the message
/// escapes plus `:` and `,`, which end a property.
pub fn gh_property(s: &str) -> String {
    gh_message(s).replace(':', "%3A").replace(',', "%2C")
}

/// The outcome of one validation run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Files validated.
    pub files: Vec<String>,
    /// Findings, sorted by file, line, column.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// The closing line every format's text ends with.
    pub fn summary(&self) -> String {
        format!("{} error(s), {} warning(s)", self.errors(), self.warnings())
    }

    /// `file:line:column: error[rule]: message (at /json/pointer)` lines, then the summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let at = if f.pointer.is_empty() {
                String::new()
            } else {
                format!(" (at {})", f.pointer)
            };
            s += &format!(
                "{}:{}:{}: {sev}[{}]: {}{at}\n",
                f.file, f.line, f.column, f.rule, f.message
            );
        }
        s += &format!("{} file(s) checked; {}\n", self.files.len(), self.summary());
        s
    }

    /// One JSON document.
    pub fn json(&self) -> Value {
        json!({
            "files": self.files,
            "findings": self.findings,
            "errors": self.errors(),
            "warnings": self.warnings(),
            "summary": self.summary(),
        })
    }

    /// SARIF 2.1.0, for code-scanning uploads.
    pub fn sarif(&self) -> Value {
        let rules: Vec<Value> = RULES
            .iter()
            .map(|(id, text)| json!({"id": id, "shortDescription": {"text": text}}))
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "ruleId": f.rule,
                    "ruleIndex": RULES.iter().position(|(id, _)| *id == f.rule),
                    "level": match f.severity { Severity::Error => "error", Severity::Warning => "warning" },
                    "message": {"text": f.message},
                    "locations": [{"physicalLocation": {
                        "artifactLocation": {"uri": f.file},
                        "region": {"startLine": f.line.max(1), "startColumn": f.column.max(1)},
                    }}],
                })
            })
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "pv",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://github.com/",
                    "rules": rules,
                }},
                "results": results,
            }],
        })
    }

    /// GitHub Actions workflow commands (annotations), then the summary.
    pub fn github(&self) -> String {
        let (esc, prop) = (gh_message, gh_property);
        let mut s = String::new();
        for f in &self.findings {
            let kind = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            s += &format!(
                "::{kind} file={},line={},col={},title={}::{}\n",
                prop(&f.file),
                f.line.max(1),
                f.column.max(1),
                prop(f.rule),
                esc(&f.message)
            );
        }
        s += &format!("{}\n", self.summary());
        s
    }
}
