//! `pv verify` on a 1,000-record chain whose every record names the same 16 MiB model file
//! (the target is well under one second: each file is hashed once per run, not per record).
//!
//! Run with `cargo bench --bench ledger`.

use criterion::{Criterion, criterion_group, criterion_main};
use pv::evidence::discharge::bind_code;
use pv::evidence::gate::{GateOptions, run};
use pv::evidence::layout::Layout;
use pv::evidence::record::{
    PREDICATE_TYPE, Predicate, STATEMENT_TYPE, Statement, Subject, this_host,
};
use pv::evidence::{Status, dsse, head, keys, ledger};

const RECORDS: u64 = 1000;

/// A repository with one contract (a citation test: no engine needed to judge it), one key,
/// and a chain of RECORDS records of it, each naming a 16 MiB model file as a subject.
fn repository() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pv-bench-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["contracts", "schemas", "engine", "models"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("schemas/contract.schema.json"),
        pv::contract::schema::schema_text(),
    )
    .unwrap();
    std::fs::write(dir.join("engine/code.rs"), "fn f() {}\n").unwrap();
    std::fs::write(dir.join("models/big.bin"), vec![7u8; 16 << 20]).unwrap();
    std::fs::write(
        dir.join("contracts/bench-v1.yaml"),
        "# yaml-language-server: $schema=../schemas/contract.schema.json
metadata:
  id: bench-v1
  version: 1.0.0
  title: Bench
  description: A long chain.
  status: ACTIVE
  created: 2026-11-26
  authors: [bench]
  covers: [engine/**]
falsification_tests:
  - id: BENCH-001
    rule: cites
    prediction: cites
    checker: fix_cites_hypothesis
    params: {hypothesis_test: BENCH-001}
    if_fails: amend
    required_for_gate: true
",
    )
    .unwrap();
    keys::keygen("bench", &dir.join("private/bench.key"), &dir.join("keys")).unwrap();
    let key = keys::load_signing_key(&dir.join("private/bench.key")).unwrap();
    let layout = Layout::at(&dir);
    let contracts = pv::contract::load_all(&layout.contracts, &dir).unwrap();
    let test = &contracts[0].contract.falsification_tests[0];
    let code = bind_code(&dir, &["engine/**".to_string()]).unwrap();
    let model_sha = pv::evidence::sha256_file(&dir.join("models/big.bin")).unwrap();
    let tdir = ledger::test_dir(&layout.evidence, "bench-v1", "BENCH-001");
    std::fs::create_dir_all(&tdir).unwrap();
    let mut prev: Option<String> = None;
    for seq in 1..=RECORDS {
        let message = "Fix it (bench-v1, H1)\n";
        let st = Statement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: "models/big.bin".into(),
                digest: [("sha256".to_string(), model_sha.clone())].into(),
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Predicate {
                contract_id: "bench-v1".into(),
                contract_version: "1.0.0".into(),
                contract_file: "contracts/bench-v1.yaml".into(),
                test_id: "BENCH-001".into(),
                clause_sha256: pv::evidence::clause_sha256(test),
                checker: test.checker.clone(),
                params: test.params.clone(),
                verdict: "PASS".into(),
                passed: true,
                canonical: true,
                measurements: serde_json::json!({
                    "commit": "0".repeat(40), "message": message, "hypothesis_test": "BENCH-001",
                    "hypothesis": "H1", "cites_contract": true, "cites_hypothesis": true,
                }),
                from_status: if seq == 1 {
                    Status::Pending
                } else {
                    Status::Discharged
                },
                to_status: Status::Discharged,
                sequence: seq,
                previous_record_sha256: prev.clone(),
                pv_version: "bench".into(),
                git_commit: "unknown".into(),
                git_dirty: false,
                host: this_host(1),
                started_at: "2026-11-26T00:00:00Z".into(),
                finished_at: "2026-11-26T00:00:00Z".into(),
                signer: "bench".into(),
                code: Some(code.clone()),
            },
        };
        let text =
            serde_json::to_string_pretty(&dsse::sign(&serde_json::to_vec(&st).unwrap(), &key))
                .unwrap()
                + "\n";
        std::fs::write(tdir.join(ledger::record_name(seq)), &text).unwrap();
        prev = Some(pv::evidence::sha256_hex(text.as_bytes()));
    }
    let last = prev.unwrap();
    ledger::write_head(
        &tdir,
        &head::sign("bench-v1", "BENCH-001", RECORDS, &last, "bench", &key),
    )
    .unwrap();
    dir
}

fn thousand_records(c: &mut Criterion) {
    let dir = repository();
    let layout = Layout::at(&dir);
    let opts = GateOptions {
        layout: &layout,
        base: None,
        accept_contract_changes: false,
        recheck: None,
        shard: None,
        merge: &[],
    };
    let r = run(&opts, false).unwrap();
    assert!(r.open, "{:?}", r.blocks);
    assert_eq!(r.verification.tests[0].records.len(), RECORDS as usize);
    let mut g = c.benchmark_group("ledger");
    g.sample_size(10);
    g.bench_function("verify 1000 records, 16 MiB subject", |b| {
        b.iter(|| run(&opts, false).unwrap())
    });
    g.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, thousand_records);
criterion_main!(benches);
