//! `pv validate` on 1,000 generated contracts (the target is under one second).
//!
//! Run with `cargo bench --bench validate`.

use criterion::{Criterion, criterion_group, criterion_main};

fn thousand_contracts(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let template =
        std::fs::read_to_string(root.join("contracts/trace-ffn-sub-block-gguf-v1.yaml")).unwrap();
    let dir = std::env::temp_dir().join(format!("pv-bench-validate-{}", std::process::id()));
    let contracts = dir.join("contracts");
    std::fs::create_dir_all(&contracts).unwrap();
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(
        dir.join("schemas/contract.schema.json"),
        pv::contract::schema::schema_text(),
    )
    .unwrap();
    for i in 0..1000 {
        // Unique ids per copy; references and depends_on dropped (they name repository files).
        let text = template
            .replace("trace-ffn-sub-block-gguf-v1", &format!("generated-{i}-v1"))
            .replace("FFN-GGUF-", &format!("G{i}-"))
            .replace("PO-FFN-GGUF-", &format!("PO-G{i}-"))
            .replace("M-FFN-GGUF-", &format!("M-G{i}-"))
            .replace("[FFN-APR-001]", &format!("[G{i}-001]"));
        let text: String = text
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with("- ../") && !l.contains("trace-ffn-sub-block-v1")
            })
            .filter(|l| {
                !l.trim_start().starts_with("references:")
                    && !l.trim_start().starts_with("depends_on:")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(contracts.join(format!("c{i:04}.yaml")), text).unwrap();
    }
    let (report, _) =
        pv::contract::validate(std::slice::from_ref(&contracts), std::path::Path::new("."))
            .unwrap();
    assert_eq!(report.errors(), 0, "{}", report.text());
    let mut g = c.benchmark_group("validate");
    g.sample_size(10);
    g.bench_function("1000_contracts", |b| {
        b.iter(|| {
            pv::contract::validate(std::slice::from_ref(&contracts), std::path::Path::new("."))
                .unwrap()
        })
    });
    g.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, thousand_contracts);
criterion_main!(benches);
