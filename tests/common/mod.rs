//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real test model, fetched by `scripts/fetch-models.sh`. Under `CI=true` a missing model
/// fails the test; elsewhere the test is skipped with a note saying how to fetch it.
pub fn real_model(name: &str) -> Option<PathBuf> {
    let p = root().join("models").join(name);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing under CI=true: run scripts/fetch-models.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run scripts/fetch-models.sh)",
        p.display()
    );
    None
}

/// The canonical test model.
pub fn smollm2() -> Option<PathBuf> {
    real_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Reads a fixture.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures").join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
