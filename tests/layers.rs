//! The house's shape, held by a test: `src/`'s folders follow the data path, every import
//! points down it, and no module imports one that imports it (directly or round a circle).
//!
//! The graph is read from the sources: every `crate::a::b` path and every `super::x` path
//! (including `use super::{x, y}` lists) in a module's code outside its `#[cfg(test)]`
//! tests, resolved to the longest module that exists. A child naming its own parent
//! (`super::Type`) is the module's own interface, not an arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders in data-path order; an import may only point to the same or an earlier one.
const LAYERS: [&str; 10] = [
    "quant",
    "gguf",
    "apr",
    "tokenizer",
    "model",
    "trace",
    "contract",
    "checkers",
    "evidence",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path (`quant::kernels`) of a file under `src/`; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (parts != ["lib"] && parts != ["main"]).then(|| parts.join("::"))
}

/// The code of a file without its trailing `#[cfg(test)] mod tests { ... }` block(s).
fn without_tests(code: &str) -> &str {
    match code.find("#[cfg(test)]\nmod ") {
        Some(i) => &code[..i],
        None => code,
    }
}

/// Identifiers following `prefix` in `code`: `a::b::c` paths, and each item of a
/// `prefix{x, y::z}` list.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            out.extend(
                list[..end]
                    .split(',')
                    .map(|s| ident(s.trim()))
                    .filter(|s| !s.is_empty()),
            );
        } else {
            let p = ident(rest);
            if !p.is_empty() {
                out.push(p);
            }
        }
    }
    out
}

/// The longest existing module a path names.
fn resolve(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mods: BTreeMap<String, PathBuf> = files
        .iter()
        .filter_map(|f| Some((module_of(&src, f)?, f.clone())))
        .collect();
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &mods {
        let code = std::fs::read_to_string(file).unwrap();
        let code = without_tests(&code);
        // `super` of module `a::b` is `a`, whether it is a/b.rs or a/b/mod.rs.
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets: Vec<String> = paths_after(code, "crate::");
        targets.extend(paths_after(code, "super::").into_iter().map(|p| {
            if parent.is_empty() {
                p
            } else {
                format!("{parent}::{p}")
            }
        }));
        for t in targets {
            if let Some(r) = resolve(&names, &t)
                && r != *m
                && !m.starts_with(&format!("{r}::"))
            {
                edges.entry(m.clone()).or_default().insert(r);
            }
        }
    }
    edges
}

/// Strongly connected components of more than one module (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct S<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = S {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let edges = graph();
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the import graph was not read"
    );
    let found = circles(&edges);
    assert!(found.is_empty(), "import circles in src/: {found:?}");
}

#[test]
fn imports_point_down_the_data_path() {
    let layer = |m: &str| LAYERS.iter().position(|l| m.split("::").next() == Some(*l));
    let mut upward = Vec::new();
    for (m, targets) in graph() {
        for t in targets {
            if let (Some(a), Some(b)) = (layer(&m), layer(&t))
                && b > a
            {
                upward.push(format!("{m} -> {t}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports up the data path: {upward:?}");
}

/// The test's own reader finds a circle where there is one.
#[test]
fn the_reader_sees_a_circle() {
    let e: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circles(&e), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        paths_after("use super::{x, y::Z};\nlet q = super::w::f();", "super::"),
        ["x", "y::Z", "w::f"]
    );
}
