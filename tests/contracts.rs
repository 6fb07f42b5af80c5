//! Contracts: the repository's own validate clean, each broken fixture is rejected with
//! its rule id and position, the schema is the committed one, and any contract the types
//! can express validates and round-trips.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use pv::contract::report::RULES;
use pv::contract::types::*;

fn pv_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::pv_in(Some(dir), args)
}

#[test]
fn the_repository_contracts_validate_clean() {
    let (code, out, err) = pv_in(&common::root(), &["validate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("0 error(s), 0 warning(s)\n"), "{out}");
    let contracts = std::fs::read_dir(common::root().join("contracts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert!(contracts >= 4, "{contracts} contracts");
    assert!(
        out.contains(&format!("{contracts} file(s) checked")),
        "{out}"
    );
}

/// Each directory of `tests/fixtures/contracts` is one case, named for the rule it breaks;
/// `expected.txt` holds `pv validate .`'s output and exit code (`PV_BLESS=1` rewrites it).
#[test]
fn every_broken_fixture_is_rejected_with_its_rule_and_position() {
    let base = common::root().join("tests/fixtures/contracts");
    let mut seen = BTreeSet::new();
    let mut cases: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let (code, out, err) = pv_in(case, &["validate", "."]);
        let got = format!("{out}exit {code}\n");
        let expected_path = case.join("expected.txt");
        if std::env::var_os("PV_BLESS").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{name}: no expected.txt (run with PV_BLESS=1)"));
        assert_eq!(got, expected, "{name}: output changed; stderr: {err}");
        if name != "valid" {
            assert!(
                out.contains(&format!("[{name}]")),
                "case {name} does not report rule {name}:\n{out}"
            );
            let errors = out.lines().any(|l| l.contains(": error["));
            assert_eq!(code, i32::from(errors), "{name}");
        } else {
            assert_eq!(code, 0, "{out}");
        }
        for line in out.lines() {
            if let Some(rule) = line.split('[').nth(1).and_then(|r| r.split(']').next()) {
                seen.insert(rule.to_string());
                // Every finding names file:line:column with a real line.
                let pos: Vec<&str> = line.split(':').take(3).collect();
                assert!(pos[1].parse::<u64>().unwrap() >= 1, "{line}");
            }
        }
    }
    let all: BTreeSet<String> = RULES.iter().map(|(id, _)| id.to_string()).collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(missing.is_empty(), "rules with no fixture: {missing:?}");
}

#[test]
fn every_output_format_carries_the_findings() {
    let case = common::root().join("tests/fixtures/contracts/unknown-key");
    let (code, out, _) = pv_in(&case, &["validate", ".", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"], 3);
    assert_eq!(v["findings"][1]["rule"], "unknown-key");
    assert_eq!(v["findings"][1]["line"], 5);
    assert_eq!(v["findings"][1]["pointer"], "/metadata/titel");

    let (_, out, _) = pv_in(&case, &["validate", ".", "--format", "sarif"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["ruleId"], "unknown-key");
    assert_eq!(
        results[1]["locations"][0]["physicalLocation"]["region"]["startLine"],
        5
    );

    let (_, out, _) = pv_in(&case, &["validate", ".", "--format", "github"]);
    assert!(
        out.contains("::error file=./a.yaml,line=5,col=3,title=unknown-key::unknown key `titel`; did you mean `title`?"),
        "{out}"
    );
    assert!(out.ends_with("3 error(s), 0 warning(s)\n"), "{out}");
}

#[test]
fn a_missing_path_is_exit_2() {
    let (code, _, err) = pv_in(&common::root(), &["validate", "no/such/dir"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no/such/dir"), "{err}");
}

#[test]
fn the_committed_schemas_are_what_the_types_generate() {
    let root = common::root();
    let committed = std::fs::read_to_string(root.join("schemas/contract.schema.json")).unwrap();
    let generated = pv::contract::schema::schema_text();
    if std::env::var_os("PV_BLESS").is_some() {
        std::fs::write(root.join("schemas/contract.schema.json"), &generated).unwrap();
    } else {
        assert_eq!(
            committed, generated,
            "schemas/contract.schema.json is stale: regenerate with `pv schema contract > schemas/contract.schema.json`"
        );
    }
    let (code, out, _) = pv_in(&root, &["schema", "contract"]);
    assert_eq!(code, 0);
    assert_eq!(out, generated);
}

/// What an editor does with the `$schema` line: validate the YAML against the committed
/// schema file alone (no pv code), which must flag an unknown key and a wrong checker.
#[test]
fn the_committed_schema_alone_flags_an_unknown_key() {
    let root = common::root();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/contract.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let text =
        std::fs::read_to_string(root.join("contracts/trace-ffn-sub-block-gguf-v1.yaml")).unwrap();
    let good = pv::contract::yaml::parse(&text).unwrap().value;
    assert!(validator.is_valid(&good));
    for (from, to) in [
        ("  title:", "  titel:"),
        ("      layer: 3", "      layr: 3"),
        ("checker: apr_gguf_std_ratio", "checker: apr_gguf_ratio"),
    ] {
        let bad = pv::contract::yaml::parse(&text.replacen(from, to, 1))
            .unwrap()
            .value;
        assert!(!validator.is_valid(&bad), "{to} passed the schema");
    }
}

fn id(prefix: &'static str) -> impl Strategy<Value = String> {
    "[A-Z]{1,4}-[0-9]{3}".prop_map(move |s| format!("{prefix}{s}"))
}

fn text() -> impl Strategy<Value = String> {
    // Plain words, and strings YAML would otherwise read as other types.
    prop_oneof![
        "[a-zA-Z0-9 .,:#'\"-]{1,40}",
        Just("true".to_string()),
        Just("1.0".to_string()),
        Just("null".to_string()),
        Just("- item".to_string()),
    ]
}

fn contract() -> impl Strategy<Value = Contract> {
    let meta = (
        "[a-z]{1,8}(-[a-z0-9]{1,6}){0,3}",
        (0u32..20, 0u32..20, 0u32..20),
        text(),
        text(),
        prop_oneof![
            Just(ContractStatus::Proposed),
            Just(ContractStatus::Active),
            Just(ContractStatus::Retired)
        ],
        proptest::collection::vec(text(), 1..3),
    );
    let eqs = proptest::collection::btree_map(
        "[a-z_]{1,10}",
        (
            text(),
            proptest::collection::btree_map("[a-z]{1,3}", text(), 0..3),
        ),
        1..4,
    );
    let tol = prop_oneof![
        Just(None),
        Just(Some(Tolerance::Exact)),
        (1e-9f64..1.0).prop_map(|v| Some(Tolerance::Abs(v))),
        (1e-9f64..1.0).prop_map(|v| Some(Tolerance::Rel(v))),
        (0.1f64..1.0).prop_map(|v| Some(Tolerance::Band([v, 1.0 / v]))),
    ];
    (meta, eqs, id("PO-"), tol, id(""), any::<bool>(), text()).prop_map(
        |((cid, (a, b, c), title, desc, status, authors), eqs, po, tolerance, tid, gate, rule)| {
            let eq_ids: Vec<String> = eqs.keys().cloned().collect();
            Contract {
                metadata: Metadata {
                    id: cid,
                    version: format!("{a}.{b}.{c}"),
                    title,
                    description: desc,
                    status,
                    created: "2026-11-25".into(),
                    authors,
                    references: vec!["https://example.org/x".into()],
                    depends_on: vec![],
                    covers: vec!["Cargo.toml".into()],
                },
                models: Default::default(),
                prompt_sets: Default::default(),
                equations: eqs
                    .into_iter()
                    .map(|(k, (formula, where_))| {
                        (
                            k,
                            Equation {
                                formula,
                                where_,
                                invariants: vec![],
                            },
                        )
                    })
                    .collect(),
                proof_obligations: vec![ProofObligation {
                    id: po.clone(),
                    kind: ObligationType::Bound,
                    property: rule.clone(),
                    formal: None,
                    tolerance,
                    applies_to: eq_ids,
                }],
                falsification_tests: vec![FalsificationTest {
                    id: tid.clone(),
                    rule: rule.clone(),
                    prediction: rule,
                    obligations: vec![po],
                    checker: "fix_cites_hypothesis".into(),
                    params: serde_json::json!({"hypothesis_test": tid.clone()}),
                    if_fails: "x".into(),
                    required_for_gate: gate,
                    covers: None,
                }],
                implementation_stages: vec![ImplementationStage {
                    id: format!("M-{tid}"),
                    description: "d".into(),
                    discharges: vec![tid],
                }],
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the types can hold, serialised to YAML, validates clean and reads back equal.
    #[test]
    fn any_serialised_contract_validates_and_round_trips(c in contract()) {
        let tmp = common::scratch("prop");
        let dir = tmp.path().to_path_buf();
        let schema = dir.join("contract.schema.json");
        if !schema.exists() {
            std::fs::write(&schema, pv::contract::schema::schema_text()).unwrap();
        }
        let yaml = format!(
            "{}contract.schema.json\n{}",
            pv::contract::SCHEMA_COMMENT,
            serde_saphyr::to_string(&c).unwrap()
        );
        let file = dir.join("c.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let (report, loaded) = pv::contract::validate(std::slice::from_ref(&file), std::path::Path::new(".")).unwrap();
        prop_assert_eq!(report.findings.len(), 0, "{}\n{}", report.text(), yaml);
        prop_assert_eq!(&loaded[0].contract, &c);
    }
}
