//! Names stated once per contract: the `models` table (file and sha256) and the
//! `prompt_sets` table. A test's params may give a name where a model (`model`, a side's
//! `model`, or a pinned APR `reference`) or a prompt list (`prompts`) is expected; the loader replaces each name by its
//! entry before the schema and the types see the document. So everything downstream (the
//! checkers, evidence records, `pv verify`'s comparison of a record's params with the
//! contract's) sees the pinned file and the list itself, and moving a pin into the table
//! changes no record's params.

use serde_json::Value;

use super::report::{Finding, Severity};
use super::schema::did_you_mean;
use super::yaml::Located;

/// A table of named entries and the params key whose string value names one.
struct Table {
    /// The top-level key holding the table.
    name: &'static str,
    /// The params keys a name may stand in for.
    keys: &'static [&'static str],
    /// The rule id of a name that is not in the table.
    rule: &'static str,
}

const TABLES: [Table; 2] = [
    Table {
        name: "models",
        keys: &["model", "reference"],
        rule: "unknown-model",
    },
    Table {
        name: "prompt_sets",
        keys: &["prompts"],
        rule: "unknown-prompt-set",
    },
];

/// Replaces every name in the tests' params by its table entry; a name that is not in its
/// table is an error finding at the name. Tables that are not maps are left to the schema.
pub fn resolve(display: &str, doc: &mut Located) -> Vec<Finding> {
    let tables: Vec<Option<serde_json::Map<String, Value>>> = TABLES
        .iter()
        .map(|t| doc.value.get(t.name).and_then(Value::as_object).cloned())
        .collect();
    let mut unknown: Vec<(String, String)> = Vec::new();
    if let Some(tests) = doc
        .value
        .get_mut("falsification_tests")
        .and_then(Value::as_array_mut)
    {
        for (i, t) in tests.iter_mut().enumerate() {
            if let Some(params) = t.get_mut("params") {
                walk(
                    params,
                    &format!("/falsification_tests/{i}/params"),
                    &tables,
                    &mut unknown,
                );
            }
        }
    }
    unknown
        .into_iter()
        .map(|(pointer, message)| {
            let pos = doc.position(&pointer);
            let key = pointer.rsplit('/').next().unwrap_or_default();
            Finding {
                rule: TABLES
                    .iter()
                    .find(|t| t.keys.contains(&key))
                    .map_or("unknown-model", |t| t.rule),
                severity: Severity::Error,
                file: display.to_string(),
                line: pos.line,
                column: pos.column,
                pointer,
                message,
            }
        })
        .collect()
}

fn walk(
    v: &mut Value,
    pointer: &str,
    tables: &[Option<serde_json::Map<String, Value>>],
    unknown: &mut Vec<(String, String)>,
) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                let here = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                let slot = TABLES
                    .iter()
                    .zip(tables)
                    .find(|(t, _)| t.keys.contains(&k.as_str()));
                match (slot, child.as_str()) {
                    (Some((t, table)), Some(name)) => {
                        match table.as_ref().and_then(|tb| tb.get(name)) {
                            Some(entry) => {
                                *child = entry.clone();
                                // Where a model comes from is not part of the test.
                                if t.name == "models"
                                    && let Some(m) = child.as_object_mut()
                                {
                                    m.remove("source");
                                }
                            }
                            None => {
                                let names: Vec<&str> = table
                                    .iter()
                                    .flat_map(|tb| tb.keys().map(String::as_str))
                                    .collect();
                                let hint = did_you_mean(name, names.iter().copied())
                                    .map(|n| format!(" (did you mean `{n}`?)"))
                                    .unwrap_or_default();
                                unknown.push((
                                    here,
                                    format!(
                                        "`{name}` is not in this contract's `{}` table{hint}; it has: {}",
                                        t.name,
                                        if names.is_empty() {
                                            "nothing".to_string()
                                        } else {
                                            names.join(", ")
                                        }
                                    ),
                                ));
                            }
                        }
                    }
                    _ => walk(child, &here, tables, unknown),
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                walk(child, &format!("{pointer}/{i}"), tables, unknown);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::yaml;

    const DOC: &str = "models:\n  small:\n    file: a.gguf\n    sha256: ab\n    source: {pypi: {packages: [x==1], member: a.gguf}}\nprompt_sets:\n  two: [p, q]\nfalsification_tests:\n  - params:\n      model: small\n      prompts: two\n      sides: [gguf, {engine: gguf, model: small}]\n  - params:\n      model: big\n      prompts: [z]\n";

    #[test]
    fn names_are_replaced_by_their_entries_and_unknown_names_are_errors_at_the_name() {
        let mut doc = yaml::parse(DOC).unwrap();
        let f = resolve("c.yaml", &mut doc);
        let p = &doc.value["falsification_tests"][0]["params"];
        assert_eq!(p["model"]["file"], "a.gguf");
        assert_eq!(p["prompts"], serde_json::json!(["p", "q"]));
        assert_eq!(p["sides"][1]["model"]["sha256"], "ab");
        assert_eq!(
            doc.value["falsification_tests"][1]["params"]["prompts"],
            serde_json::json!(["z"])
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "unknown-model");
        assert!(
            p["model"].get("source").is_none(),
            "a source is not part of params"
        );
        assert_eq!(f[0].line, 14);
        assert_eq!(f[0].pointer, "/falsification_tests/1/params/model");
        assert!(f[0].message.contains("it has: small"), "{}", f[0].message);
    }
}
