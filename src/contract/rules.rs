//! The semantic rules `pv validate` applies once every file has passed the schema: ids
//! unique across all contracts, references that resolve, no dependency cycles, and
//! params that type-check against their checker.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use super::LoadedContract;
use super::catalog;
use super::covers::Covers;
use super::report::{Finding, Severity};

struct Sink<'a> {
    out: Vec<Finding>,
    c: &'a LoadedContract,
}

impl Sink<'_> {
    fn push(&mut self, rule: &'static str, severity: Severity, pointer: String, message: String) {
        let pos = self.c.doc.position(&pointer);
        self.out.push(Finding {
            rule,
            severity,
            file: self.c.display.clone(),
            line: pos.line,
            column: pos.column,
            pointer,
            message,
        });
    }
}

/// Every id a contract defines, with its JSON pointer.
fn ids(c: &LoadedContract) -> Vec<(String, String)> {
    let k = &c.contract;
    let mut v = vec![(k.metadata.id.clone(), "/metadata/id".to_string())];
    v.extend(
        k.proof_obligations
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.clone(), format!("/proof_obligations/{i}/id"))),
    );
    v.extend(
        k.falsification_tests
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), format!("/falsification_tests/{i}/id"))),
    );
    v.extend(
        k.implementation_stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), format!("/implementation_stages/{i}/id"))),
    );
    v
}

/// Applies every semantic rule to `all`; findings are reported for the contracts whose
/// index is in `report` (the rest are context, e.g. siblings a dependency names). `covers`
/// patterns are resolved against the repository root `root`.
pub fn check(all: &[LoadedContract], report: &BTreeSet<usize>, root: &Path) -> Vec<Finding> {
    let index = Index::of(all);
    let mut out = Vec::new();
    let mut matched = BTreeMap::new();
    for (ci, c) in all.iter().enumerate() {
        if !report.contains(&ci) {
            continue;
        }
        let mut s = Sink { out: Vec::new(), c };
        check_duplicates(&mut s, all, &index, ci);
        check_references(&mut s);
        check_dependencies(&mut s, all, &index, ci);
        let cited = check_tests(&mut s);
        check_tolerances(&mut s);
        check_tables(&mut s);
        check_obligations(&mut s, &cited);
        check_covers(&mut s, root, &mut matched);
        check_stages(&mut s, &index);
        out.extend(s.out);
    }
    out
}

/// What the rules look up across all contracts: where each id was first defined (and the
/// ids defined again), every contract by id, and every test id.
struct Index<'a> {
    /// `(contract, id, pointer, first contract, first pointer)` of each repeated id.
    duplicates: Vec<(usize, String, String, usize, String)>,
    contracts: BTreeMap<&'a str, usize>,
    tests: BTreeSet<&'a str>,
}

impl<'a> Index<'a> {
    fn of(all: &'a [LoadedContract]) -> Self {
        let mut first: BTreeMap<String, (usize, String)> = BTreeMap::new();
        let mut duplicates = Vec::new();
        for (ci, c) in all.iter().enumerate() {
            for (id, ptr) in ids(c) {
                match first.get(&id) {
                    Some((fi, fptr)) => duplicates.push((ci, id, ptr, *fi, fptr.clone())),
                    None => {
                        first.insert(id, (ci, ptr));
                    }
                }
            }
        }
        Index {
            duplicates,
            contracts: all
                .iter()
                .enumerate()
                .map(|(i, c)| (c.contract.metadata.id.as_str(), i))
                .collect(),
            tests: all
                .iter()
                .flat_map(|c| c.contract.falsification_tests.iter().map(|t| t.id.as_str()))
                .collect(),
        }
    }
}

/// `duplicate-id`: an id defined again, pointing at its first definition.
fn check_duplicates(s: &mut Sink, all: &[LoadedContract], index: &Index, ci: usize) {
    for (_, id, ptr, fi, fptr) in index.duplicates.iter().filter(|d| d.0 == ci) {
        let at = &all[*fi];
        let pos = at.doc.position(fptr);
        s.push(
            "duplicate-id",
            Severity::Error,
            ptr.clone(),
            format!(
                "id `{id}` is already defined at {}:{}:{}",
                at.display, pos.line, pos.column
            ),
        );
    }
}

/// `missing-reference`: a reference that is neither a URL nor a file beside the contract.
fn check_references(s: &mut Sink) {
    let c = s.c;
    for (i, r) in c.contract.metadata.references.iter().enumerate() {
        let ptr = format!("/metadata/references/{i}");
        if let Some(rest) = r
            .strip_prefix("https://")
            .or_else(|| r.strip_prefix("http://"))
        {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                s.push(
                    "missing-reference",
                    Severity::Error,
                    ptr,
                    format!("`{r}` is not a URL"),
                );
            }
        } else if !c.dir.join(r).exists() {
            s.push(
                "missing-reference",
                Severity::Error,
                ptr,
                format!(
                    "`{r}` does not exist (looked for {})",
                    c.dir.join(r).display()
                ),
            );
        }
    }
}

/// `unknown-contract` and `dependency-cycle`: `depends_on` names known contracts, without a
/// cycle.
fn check_dependencies(s: &mut Sink, all: &[LoadedContract], index: &Index, ci: usize) {
    for (i, d) in s.c.contract.metadata.depends_on.iter().enumerate() {
        if !index.contracts.contains_key(d.as_str()) {
            s.push(
                "unknown-contract",
                Severity::Error,
                format!("/metadata/depends_on/{i}"),
                format!(
                    "depends_on `{d}` names no known contract; known: {}",
                    index
                        .contracts
                        .keys()
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    if let Some(cycle) = cycle_from(all, &index.contracts, ci) {
        s.push(
            "dependency-cycle",
            Severity::Error,
            "/metadata/depends_on".into(),
            format!("depends_on cycle: {}", cycle.join(" -> ")),
        );
    }
}

/// `unknown-obligation`, `unknown-checker` and `bad-params`: each test cites obligations of
/// its contract and names a catalogued checker with params that type-check. Returns the
/// obligations cited.
fn check_tests<'a>(s: &mut Sink<'a>) -> BTreeSet<&'a str> {
    let k = &s.c.contract;
    let obligations: BTreeSet<&str> = k.proof_obligations.iter().map(|o| o.id.as_str()).collect();
    let mut cited = BTreeSet::new();
    for (ti, t) in k.falsification_tests.iter().enumerate() {
        for (oi, o) in t.obligations.iter().enumerate() {
            cited.insert(o.as_str());
            if !obligations.contains(o.as_str()) {
                s.push(
                    "unknown-obligation",
                    Severity::Error,
                    format!("/falsification_tests/{ti}/obligations/{oi}"),
                    format!("obligation `{o}` is not defined in this contract"),
                );
            }
        }
        match catalog::find(&t.checker) {
            None => s.push(
                "unknown-checker",
                Severity::Error,
                format!("/falsification_tests/{ti}/checker"),
                format!(
                    "`{}` is not a registered checker; registered: {}",
                    t.checker,
                    catalog::names()
                ),
            ),
            Some(ch) => {
                if let Err(e) = (ch.check_params)(&t.params) {
                    s.push(
                        "bad-params",
                        Severity::Error,
                        format!("/falsification_tests/{ti}/params"),
                        format!("params for checker `{}`: {e}", ch.name),
                    );
                }
            }
        }
    }
    cited
}

/// `unknown-equation` and `untested-obligation`: obligations apply to equations of the
/// contract, and some test cites each.
fn check_obligations(s: &mut Sink, cited: &BTreeSet<&str>) {
    let k = &s.c.contract;
    for (oi, o) in k.proof_obligations.iter().enumerate() {
        for (ei, e) in o.applies_to.iter().enumerate() {
            if !k.equations.contains_key(e) {
                s.push(
                    "unknown-equation",
                    Severity::Error,
                    format!("/proof_obligations/{oi}/applies_to/{ei}"),
                    format!(
                        "equation `{e}` is not defined in this contract; defined: {}",
                        k.equations.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        if !cited.contains(o.id.as_str()) {
            s.push(
                "untested-obligation",
                Severity::Warning,
                format!("/proof_obligations/{oi}/id"),
                format!("no falsification test cites obligation `{}`", o.id),
            );
        }
    }
}

/// `unknown-test`: an implementation stage discharges tests some contract defines.
fn check_stages(s: &mut Sink, index: &Index) {
    let k = &s.c.contract;
    for (si, st) in k.implementation_stages.iter().enumerate() {
        for (di, d) in st.discharges.iter().enumerate() {
            if !index.tests.contains(d.as_str()) {
                s.push(
                    "unknown-test",
                    Severity::Error,
                    format!("/implementation_stages/{si}/discharges/{di}"),
                    format!(
                        "stage `{}` discharges `{d}`, which no contract defines",
                        st.id
                    ),
                );
            }
        }
    }
}

/// Each test states the limits of the obligations it cites as they state them (rule
/// `tolerance-mismatch`): an obligation's `band` is the params' `band`, `abs`/`rel` the
/// params' `tolerance` (when the params have one), and every entry of `limits` a param of
/// that name with that value.
fn check_tolerances(s: &mut Sink) {
    use super::types::Tolerance;
    let k = &s.c.contract;
    let mut found = Vec::new();
    for (ti, t) in k.falsification_tests.iter().enumerate() {
        for o in k
            .proof_obligations
            .iter()
            .filter(|o| t.obligations.contains(&o.id))
        {
            let expected: Vec<(&str, serde_json::Value, bool)> = match &o.tolerance {
                None | Some(Tolerance::Exact) => Vec::new(),
                Some(Tolerance::Band(b)) => vec![("band", serde_json::json!(b), false)],
                Some(Tolerance::Abs(x) | Tolerance::Rel(x)) => {
                    vec![("tolerance", serde_json::json!(x), false)]
                }
                Some(Tolerance::Limits(m)) => m
                    .iter()
                    .map(|(name, v)| (name.as_str(), serde_json::json!(v), true))
                    .collect(),
            };
            for (name, want, required) in expected {
                let pointer = format!("/falsification_tests/{ti}/params/{name}");
                match t.params.get(name) {
                    None if required => found.push((
                        pointer,
                        format!(
                            "obligation `{}` states {name} = {want}; test `{}` has no param `{name}`",
                            o.id, t.id
                        ),
                    )),
                    None => {}
                    Some(have) if same_numbers(have, &want) => {}
                    Some(have) => found.push((
                        pointer,
                        format!(
                            "test `{}` has {name} = {have}; obligation `{}` states {name} = {want}: state the limit once, or make them agree",
                            t.id, o.id
                        ),
                    )),
                }
            }
        }
    }
    for (pointer, message) in found {
        s.push("tolerance-mismatch", Severity::Error, pointer, message);
    }
}

/// Whether two JSON values are the same numbers (or arrays of them), however written.
fn same_numbers(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_numbers(a, b))
        }
        _ => matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y),
    }
}

/// Every entry of the `models` and `prompt_sets` tables is used by some test (warnings
/// `unused-model`, `unused-prompt-set`): names are resolved on load, so an entry is used when
/// a test's params hold it.
fn check_tables(s: &mut Sink) {
    let k = &s.c.contract;
    let holds = |key: &str, entry: &serde_json::Value| {
        k.falsification_tests.iter().any(|t| {
            t.params.get(key) == Some(entry)
                || t.params
                    .get("sides")
                    .and_then(|v| v.as_array())
                    .is_some_and(|sides| sides.iter().any(|x| x.get(key) == Some(entry)))
        })
    };
    let mut found = Vec::new();
    for (name, pin) in &k.models {
        let v = serde_json::to_value(pin.pin()).unwrap_or_default();
        if !holds("model", &v) && !holds("reference", &v) {
            found.push(("unused-model", format!("/models/{name}"), name));
        }
    }
    for (name, entry) in &k.models {
        let Some(super::models::ModelSource::Convert { from, .. }) = &entry.source else {
            continue;
        };
        let problem = match k.models.get(from) {
            None => Some(format!(
                "`{name}` is converted from `{from}`, which is not in this contract's models table"
            )),
            Some(src) if !src.file.ends_with(".gguf") => Some(format!(
                "`{name}` is converted from `{from}` ({}), which is not a GGUF file",
                src.file
            )),
            Some(_) if !entry.file.ends_with(".apr") => Some(format!(
                "`{name}` ({}) has a convert source, which makes APR files only",
                entry.file
            )),
            Some(_) => None,
        };
        if let Some(m) = problem {
            s.push(
                "bad-model-source",
                Severity::Error,
                format!("/models/{name}/source"),
                m,
            );
        }
    }
    for (name, set) in &k.prompt_sets {
        if !holds("prompts", &serde_json::json!(set)) {
            found.push(("unused-prompt-set", format!("/prompt_sets/{name}"), name));
        }
    }
    for (rule, pointer, name) in found {
        s.push(
            rule,
            Severity::Warning,
            pointer,
            format!("no test uses `{name}`"),
        );
    }
}

/// `covers`: patterns that compile and match something; every gate-required test of an
/// ACTIVE contract says what code it exercises (else its evidence could never go stale).
/// `matched` remembers, per pattern, whether it matched anything (or why it could not be
/// resolved), so each pattern walks the tree once per run however many contracts use it.
fn check_covers(s: &mut Sink, root: &Path, matched: &mut BTreeMap<String, Result<bool, String>>) {
    let k = &s.c.contract;
    let mut lists = vec![("/metadata/covers".to_string(), &k.metadata.covers)];
    for (ti, t) in k.falsification_tests.iter().enumerate() {
        if let Some(c) = &t.covers {
            lists.push((format!("/falsification_tests/{ti}/covers"), c));
        }
        if k.enforced() && t.required_for_gate && k.covers_of(t).is_empty() {
            s.push(
                "uncovered-required-test",
                Severity::Error,
                format!("/falsification_tests/{ti}/required_for_gate"),
                format!(
                    "{} is required for the gate but no `covers` says which code it exercises \
                     (metadata.covers or the test's own), so its evidence would never go stale",
                    t.id
                ),
            );
        }
    }
    for (ptr, list) in lists {
        for (i, p) in list.iter().enumerate() {
            let one = match Covers::new(std::slice::from_ref(p)) {
                Ok(c) => c,
                Err(e) => {
                    s.push(
                        "bad-covers",
                        Severity::Error,
                        format!("{ptr}/{i}"),
                        e.to_string(),
                    );
                    continue;
                }
            };
            let found = matched
                .entry(p.clone())
                .or_insert_with(|| {
                    one.files(root)
                        .map(|f| !f.files.is_empty())
                        .map_err(|e| e.to_string())
                })
                .clone();
            match found {
                Ok(false) => s.push(
                    "covers-nothing",
                    Severity::Warning,
                    format!("{ptr}/{i}"),
                    format!(
                        "covers pattern `{p}` matches no file under {} (patterns are relative to the repository root)",
                        root.display()
                    ),
                ),
                Ok(true) => {}
                Err(e) => s.push(
                    "bad-covers",
                    Severity::Error,
                    format!("{ptr}/{i}"),
                    format!("covers pattern `{p}`: {e}"),
                ),
            }
        }
    }
}

/// A depends_on cycle through contract `start`, if there is one (as a list of ids).
fn cycle_from(
    all: &[LoadedContract],
    index: &BTreeMap<&str, usize>,
    start: usize,
) -> Option<Vec<String>> {
    // Depth-first search with an explicit stack of (contract, next dependency to visit).
    let mut path = vec![start];
    let mut next = vec![0usize];
    let mut done = BTreeSet::new();
    while let Some(&at) = path.last() {
        let deps = &all[at].contract.metadata.depends_on;
        let i = next.last_mut().expect("same depth as path");
        if *i == deps.len() {
            done.insert(at);
            path.pop();
            next.pop();
            continue;
        }
        let dep = &deps[*i];
        *i += 1;
        let Some(&d) = index.get(dep.as_str()) else {
            continue;
        };
        if d == start {
            let mut ids: Vec<String> = path
                .iter()
                .map(|&p| all[p].contract.metadata.id.clone())
                .collect();
            ids.push(all[start].contract.metadata.id.clone());
            return Some(ids);
        }
        if !done.contains(&d) && !path.contains(&d) {
            path.push(d);
            next.push(0);
        }
    }
    None
}
