//! The published contract schema, and JSON-Schema validation of a parsed document into
//! findings with stable rule ids and file positions.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::catalog::CATALOG;
use super::report::{Finding, Severity};
use super::types::Contract;
use super::yaml::Located;

/// The contract schema: the types' schema, with `checker` limited to the registered names
/// and `params` typed per checker (`if checker = X then params: XParams`).
pub fn contract_schema() -> Value {
    let mut g = SchemaSettings::draft07().into_generator();
    let params: Vec<(&str, Value)> = CATALOG
        .iter()
        .map(|c| (c.name, (c.params_schema)(&mut g).to_value()))
        .collect();
    let mut root = g.into_root_schema_for::<Contract>().to_value();
    for table in ["models", "prompt_sets"] {
        root["properties"][table]["propertyNames"] = json!({"pattern": "^[a-z0-9][a-z0-9_.-]*$"});
    }
    let test = &mut root["definitions"]["FalsificationTest"];
    test["properties"]["checker"] = json!({
        "description": "Name of the registered checker that runs the test.",
        "type": "string",
        "enum": CATALOG.iter().map(|c| c.name).collect::<Vec<_>>(),
    });
    test["allOf"] = Value::Array(
        params
            .into_iter()
            .map(|(name, schema)| {
                json!({
                    "if": {"properties": {"checker": {"const": name}}, "required": ["checker"]},
                    "then": {"properties": {"params": schema}},
                })
            })
            .collect(),
    );
    root
}

/// [`contract_schema`] as committed in `schemas/contract.schema.json`.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&contract_schema()).expect("a schema serialises") + "\n"
}

/// The schema documents are validated against: the published one, with each "a name or the
/// thing itself" choice narrowed to the thing. The loader has replaced every name by its
/// table entry before validation (an unknown name is refused first), so errors in an
/// inline or resolved entry point at the offending field, not at an `anyOf`.
fn validation_schema() -> Value {
    let mut root = contract_schema();
    if let Some(defs) = root["definitions"].as_object_mut() {
        let narrowed: Vec<(String, Value)> = defs
            .iter()
            .filter(|(name, _)| name.starts_with("ModelRef_for_") || *name == "PromptsRef")
            .filter_map(|(name, def)| {
                let inline = def["anyOf"]
                    .as_array()?
                    .iter()
                    .find(|b| !b.to_string().contains("#/definitions/TableName"))?
                    .clone();
                Some((name.clone(), inline))
            })
            .collect();
        for (name, inline) in narrowed {
            defs.insert(name, inline);
        }
    }
    root
}

fn cached_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(validation_schema)
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::draft7::new(cached_schema()).expect("the contract schema compiles")
    })
}

/// Follows a keyword path through the schema (jumping through local `$ref`s) to the
/// subschema that raised an error, to learn which keys it allows.
fn subschema<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = root;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            node = root.pointer(target)?;
            continue;
        }
        node = match node {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The closest known key to `unknown`, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// A value as an error message quotes it: whole when short, else its first 60 characters
/// and how long it is.
fn quoted(v: &str) -> String {
    const MAX: usize = 80;
    if v.chars().count() <= MAX {
        v.to_string()
    } else {
        format!(
            "{}… ({} characters)",
            v.chars().take(60).collect::<String>(),
            v.chars().count()
        )
    }
}

/// Every schema violation of a document, each as a finding.
pub fn validate(file: &str, doc: &Located) -> Vec<Finding> {
    let schema = cached_schema();
    let mut out = Vec::new();
    for e in validator().iter_errors(&doc.value) {
        let pointer = e.instance_path().as_str().to_string();
        let mut finding = |rule: &'static str, at: &str, key: bool, message: String| {
            let pos = if key {
                doc.key_position(at)
            } else {
                doc.position(at)
            };
            out.push(Finding {
                rule,
                severity: Severity::Error,
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                pointer: at.to_string(),
                message,
            });
        };
        match e.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let path = e.schema_path().as_str();
                let parent = path.strip_suffix("/additionalProperties").unwrap_or(path);
                let known: Vec<&str> = subschema(schema, parent)
                    .and_then(|s| s.get("properties"))
                    .and_then(Value::as_object)
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                for key in unexpected {
                    let at = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                    let hint = match did_you_mean(key, known.iter().copied()) {
                        Some(k) => format!("; did you mean `{k}`?"),
                        None => format!("; known keys: {}", known.join(", ")),
                    };
                    finding(
                        "unknown-key",
                        &at,
                        true,
                        format!("unknown key `{key}`{hint}"),
                    );
                }
            }
            jsonschema::error::ValidationErrorKind::Required { property } => {
                finding(
                    "missing-key",
                    &pointer,
                    false,
                    format!("missing required key {property}"),
                );
            }
            _ => {
                let segs: Vec<&str> = pointer.split('/').collect();
                let in_test = segs.get(1) == Some(&"falsification_tests");
                let rule = match segs.get(3) {
                    Some(&"checker") if in_test && segs.len() == 4 => "unknown-checker",
                    Some(&"params") if in_test => "bad-params",
                    _ => "schema",
                };
                let allowed: Option<Vec<String>> = subschema(schema, e.schema_path().as_str())
                    .and_then(Value::as_array)
                    .and_then(|alts| {
                        alts.iter()
                            .map(|a| a.get("const").map(|c| c.to_string()))
                            .collect()
                    });
                // A message quotes the offending value, never more than a line of it (a file
                // that is not a contract at all must not be echoed whole).
                let full = e.instance().to_string();
                let value = quoted(&full);
                let message = if let Some(allowed) = allowed.filter(|_| rule != "unknown-checker") {
                    format!("{value} is not one of {}", allowed.join(", "))
                } else if rule == "unknown-checker" {
                    format!(
                        "{value} is not a registered checker; registered: {}",
                        super::catalog::names()
                    )
                } else {
                    let m = e.to_string();
                    match m.strip_prefix(full.as_str()) {
                        Some(rest) => format!("{value}{rest}"),
                        None => m,
                    }
                };
                finding(rule, &pointer, false, message);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_or_absent() {
        let known = ["metadata", "equations", "falsification_tests"];
        assert_eq!(did_you_mean("metdata", known), Some("metadata"));
        assert_eq!(
            did_you_mean("falsification_test", known),
            Some("falsification_tests")
        );
        assert_eq!(did_you_mean("colour", known), None);
    }
}
