//! Reading a contract's YAML with a resource budget, keeping where every value came from.
//!
//! The document is read once into a JSON value (what the JSON Schema validates and the
//! typed contract is built from) plus a table from JSON pointer to line and column, so a
//! schema error deep in the tree still names `file:line:column`. Duplicate keys, aliases
//! beyond the budget, nesting deeper than the budget and documents larger than
//! [`MAX_DOCUMENT_BYTES`] are errors, not memory.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Budget, Options, Spanned};

/// Largest contract file read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// A 1-based position in the YAML text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1 (0 when unknown).
    pub line: u64,
    /// Column, from 1 (0 when unknown).
    pub column: u64,
}

/// A parsed document: its value and the position of every node, by JSON pointer.
#[derive(Clone, Debug)]
pub struct Located {
    /// The document as JSON.
    pub value: Value,
    /// JSON pointer (`/falsification_tests/0/params`) to the node's position; keys of a
    /// mapping are recorded under the pointer of their value with `#key` appended.
    pub positions: BTreeMap<String, Pos>,
}

impl Located {
    /// The position of the node at `pointer`, or of its nearest recorded ancestor.
    pub fn position(&self, pointer: &str) -> Pos {
        let mut p = pointer.to_string();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return Pos::default(),
            }
        }
    }

    /// The position of the key naming the member at `pointer` (falls back to the value's).
    pub fn key_position(&self, pointer: &str) -> Pos {
        self.positions
            .get(&format!("{pointer}#key"))
            .copied()
            .unwrap_or_else(|| self.position(pointer))
    }
}

/// A YAML error with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
    /// Which rule: `yaml-syntax`, `yaml-duplicate-key` or `yaml-budget`.
    pub rule: &'static str,
}

/// One YAML node with the positions of its children.
enum Node {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Num(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Number::from_f64(v)
            .map(Node::Num)
            .ok_or_else(|| E::custom("non-finite numbers are not allowed"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(entry) = map.next_entry()? {
            items.push(entry);
        }
        Ok(Node::Map(items))
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

fn convert(
    node: Spanned<Node>,
    pointer: String,
    positions: &mut BTreeMap<String, Pos>,
) -> Result<Value, YamlError> {
    positions.insert(pointer.clone(), pos_of(&node));
    Ok(match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Num(n) => Value::Number(n),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, format!("{pointer}/{i}"), positions))
                .collect::<Result<_, _>>()?,
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key_pos = pos_of(&key);
                let Node::Str(name) = key.value else {
                    return Err(YamlError {
                        pos: key_pos,
                        message: "mapping keys must be strings".into(),
                        rule: "yaml-syntax",
                    });
                };
                let child = format!("{pointer}/{}", escape(&name));
                positions.insert(format!("{child}#key"), key_pos);
                let v = convert(value, child, positions)?;
                map.insert(name, v);
            }
            Value::Object(map)
        }
    })
}

/// The budget a contract is parsed under: generous for any real contract, small enough
/// that a YAML bomb fails fast.
fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = 32;
    budget.max_aliases = 256;
    budget.max_anchors = 256;
    budget.max_events = 200_000;
    budget.max_recorded_anchor_events = 20_000;
    budget.max_recorded_anchor_bytes = 1 << 20;
    let mut options = Options::default();
    options.budget = Some(budget);
    options
}

/// Parses one YAML document.
///
/// # Errors
/// A [`YamlError`] with the position of the first problem.
pub fn parse(text: &str) -> Result<Located, YamlError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(YamlError {
            pos: Pos::default(),
            message: format!(
                "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                text.len()
            ),
            rule: "yaml-budget",
        });
    }
    let node: Spanned<Node> =
        serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
            let pos = e.location().map_or(Pos::default(), |l| Pos {
                line: l.line(),
                column: l.column(),
            });
            let message = first_line(&e.without_snippet().to_string());
            let lower = message.to_lowercase();
            let rule = if lower.contains("duplicate") {
                "yaml-duplicate-key"
            } else if lower.contains("budget") || lower.contains("limit") {
                "yaml-budget"
            } else {
                "yaml-syntax"
            };
            YamlError { pos, message, rule }
        })?;
    let mut positions = BTreeMap::new();
    let value = convert(node, String::new(), &mut positions)?;
    Ok(Located { value, positions })
}

/// The library's message without its position suffix (the position is reported apart)
/// and without advice about its own options.
fn first_line(s: &str) -> String {
    let mut m = s.lines().next().unwrap_or("").trim().to_string();
    if let Some(i) = m.find(" at line ") {
        m.truncate(i);
    }
    if let Some(key) = m.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        m = format!("duplicate key `{key}` (each key may appear once per mapping)");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_values() {
        let doc = parse("a:\n  b: [1, 2]\n  c:\n    - x: true\n").unwrap();
        assert_eq!(doc.value["a"]["c"][0]["x"], Value::Bool(true));
        assert_eq!(doc.position("/a/c/0/x").line, 4);
        assert_eq!(doc.key_position("/a/c").line, 3);
        assert_eq!(doc.position("/a/b/1/nonexistent").line, 2);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.rule, "yaml-duplicate-key", "{e:?}");
        assert_eq!(e.pos.line, 3);
    }

    #[test]
    fn a_billion_laughs_is_an_error() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse(&doc).unwrap_err();
        assert_eq!(e.rule, "yaml-budget", "{e:?}");
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let doc = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&doc).is_err());
    }
}
