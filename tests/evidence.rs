//! Evidence end to end: discharges through the status machine on a synthetic model, the
//! gate on the repository and on tampered copies of it, concurrent discharges, interrupted
//! writes, every flipped byte, and verification by an independent DSSE implementation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pv::evidence::Status;
use pv::evidence::discharge::{DischargeError, Layout, Request, discharge};
use pv::evidence::keys;
use pv::evidence::verify::{Places, verify_all};
use pv::gguf::GgmlType;

/// `pv ARGS --root ROOT`.
fn pv_at(root: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--root", root.to_str().unwrap()]);
    common::pv(&all)
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pv-evidence-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// A repository with one contract whose only test is the APR/GGUF std ratio on a
/// synthetic two-layer llama model, a key pair, and no evidence.
struct SynRepo {
    root: PathBuf,
    models: PathBuf,
    key: PathBuf,
    sha: String,
}

impl SynRepo {
    fn new(tag: &str) -> Self {
        let root = fresh_dir(tag);
        let models = root.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let gguf = common::synthetic_model("llama", GgmlType::Q8_0, None);
        std::fs::write(models.join("syn.gguf"), gguf.bytes()).unwrap();
        let sha = pv::evidence::sha256_file(&models.join("syn.gguf")).unwrap();
        std::fs::create_dir_all(root.join("schemas")).unwrap();
        std::fs::write(
            root.join("schemas/contract.schema.json"),
            pv::contract::schema::schema_text(),
        )
        .unwrap();
        let key = root.join("private/tester.key");
        keys::keygen("tester", &key, &root.join("keys")).unwrap();
        let repo = SynRepo {
            root,
            models,
            key,
            sha,
        };
        repo.contract(&repo.sha.clone(), [0.5, 2.0]);
        repo
    }

    fn contract(&self, sha: &str, band: [f64; 2]) {
        std::fs::create_dir_all(self.root.join("contracts")).unwrap();
        let text = format!(
            "# yaml-language-server: $schema=../schemas/contract.schema.json
metadata:
  id: syn-v1
  version: 1.0.0
  title: Synthetic
  description: The std ratio on a synthetic model.
  status: ACTIVE
  created: 2026-11-25
  authors: [tests]
proof_obligations:
  - id: PO-SYN-001
    type: bound
    property: APR and GGUF agree up to quantization.
falsification_tests:
  - id: SYN-001
    rule: ratio in band
    prediction: H1
    obligations: [PO-SYN-001]
    checker: apr_gguf_std_ratio
    params:
      model: {{file: syn.gguf, sha256: {sha}}}
      prompt: What is 2+2?
      layer: 1
      slot: ffn_inner
      band: [{}, {}]
    if_fails: bisect
    required_for_gate: true
  - id: SYN-002
    rule: the fix cites the hypothesis
    prediction: the cited commit names syn-v1 and SYN-001's verdict
    obligations: [PO-SYN-001]
    checker: fix_cites_hypothesis
    params:
      hypothesis_test: SYN-001
    if_fails: amend the message
    required_for_gate: false
",
            band[0], band[1]
        );
        std::fs::write(self.root.join("contracts/syn-v1.yaml"), text).unwrap();
    }

    fn discharge(&self) -> Result<pv::evidence::discharge::Discharged, DischargeError> {
        self.discharge_test("SYN-001", None)
    }

    fn discharge_test(
        &self,
        test_id: &str,
        cite: Option<&str>,
    ) -> Result<pv::evidence::discharge::Discharged, DischargeError> {
        discharge(
            &Layout::at(&self.root),
            &Request {
                test_id,
                models: &self.models,
                key: Some(&self.key),
                threads: 1,
                cite,
                progress: &|_| {},
            },
        )
    }

    fn gate(&self) -> (i32, String) {
        let (code, out, err) = pv_at(&self.root, &["gate"]);
        (code, out + &err)
    }
}

#[test]
fn the_status_machine_on_a_synthetic_model() {
    let repo = SynRepo::new("machine");
    let (code, out) = repo.gate();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("status PENDING; required_for_gate needs DISCHARGED"),
        "{out}"
    );

    // A pass on a model that is not the canonical one (the digest differs).
    let other = "ab".repeat(32);
    repo.contract(&other, [0.5, 2.0]);
    let d = repo.discharge().unwrap();
    assert_eq!(d.outcome.verdict, "H1");
    assert!(!d.outcome.canonical);
    assert_eq!(
        (d.from, d.to),
        (Status::Pending, Status::AlgorithmLevelDischarged)
    );
    assert_eq!(repo.gate().0, 1);

    // The canonical model: the clause changed (the digest), so the record before is stale
    // history, and the new one discharges.
    repo.contract(&repo.sha, [0.5, 2.0]);
    let d = repo.discharge().unwrap();
    assert_eq!(
        (d.from, d.to),
        (Status::AlgorithmLevelDischarged, Status::Discharged)
    );
    let (code, out) = repo.gate();
    assert_eq!(code, 0, "{out}");

    // A band that excludes the measured ratio: H2, falsified, and the gate blocks.
    repo.contract(&repo.sha, [3.0, 4.0]);
    let d = repo.discharge().unwrap();
    assert_eq!(d.outcome.verdict, "H2");
    assert_eq!((d.from, d.to), (Status::Discharged, Status::Falsified));
    let (code, out) = repo.gate();
    assert_eq!(code, 1);
    assert!(out.contains("status FALSIFIED"), "{out}");

    // From FALSIFIED, a pass on another model is refused; only a canonical pass clears it.
    repo.contract(&other, [0.5, 2.0]);
    let e = repo.discharge().unwrap_err();
    assert!(
        matches!(
            e,
            DischargeError::Refused {
                from: Status::Falsified,
                ..
            }
        ),
        "{e}"
    );
    repo.contract(&repo.sha, [0.5, 2.0]);
    let d = repo.discharge().unwrap();
    assert_eq!((d.from, d.to), (Status::Falsified, Status::Discharged));
    assert_eq!(repo.gate().0, 0);

    // pv status reports what the chain says: four records, DISCHARGED, signer tester.
    let (code, out, _) = pv_at(&repo.root, &["status", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["status"], "DISCHARGED");
    assert_eq!(v[0]["records"], 4);
    assert_eq!(v[0]["signer"], "tester");
    assert_eq!(v[0]["verdict"], "H1");
}

#[test]
fn a_fix_must_cite_the_contract_and_the_recorded_hypothesis() {
    let repo = SynRepo::new("cite");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(&repo.root)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "Fix the gate projection (syn-v1, H1)",
    ]);
    // No evidence of SYN-001 yet: nothing to cite.
    let e = repo.discharge_test("SYN-002", Some("HEAD")).unwrap_err();
    assert!(
        e.to_string().contains("SYN-001 has no valid evidence yet"),
        "{e}"
    );
    assert_eq!(repo.discharge().unwrap().outcome.verdict, "H1");
    let d = repo.discharge_test("SYN-002", Some("HEAD")).unwrap();
    assert!(d.outcome.passed, "{}", d.outcome.report);
    assert_eq!(d.to, Status::Discharged);
    assert!(d.outcome.inputs[0].name == "git:HEAD");
    // A message citing the wrong hypothesis (or none) falsifies it.
    git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "Fix something (syn-v1, H2)",
    ]);
    let d = repo.discharge_test("SYN-002", Some("HEAD")).unwrap();
    assert!(!d.outcome.passed);
    assert_eq!(d.outcome.measurements["cites_hypothesis"], false);
    assert_eq!(d.to, Status::Falsified);
    let e = repo.discharge_test("SYN-002", None).unwrap_err();
    assert!(e.to_string().contains("--cite"), "{e}");
}

#[test]
fn a_missing_model_is_exit_2_naming_the_file_and_how_to_get_it() {
    let repo = SynRepo::new("missing");
    std::fs::remove_file(repo.models.join("syn.gguf")).unwrap();
    let key = repo.key.to_str().unwrap();
    let models = repo.models.to_str().unwrap();
    let (code, _, err) = pv_at(
        &repo.root,
        &["discharge", "SYN-001", "--models", models, "--key", key],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("syn.gguf not found") && err.contains("scripts/fetch-models.sh"),
        "{err}"
    );
    assert!(!repo.root.join("evidence/syn-v1/SYN-001").exists());
}

#[test]
fn concurrent_discharges_keep_one_unbroken_chain() {
    let repo = SynRepo::new("concurrent");
    std::thread::scope(|s| {
        let a = s.spawn(|| repo.discharge());
        let b = s.spawn(|| repo.discharge());
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    let dir = repo.root.join("evidence/syn-v1/SYN-001");
    let records = pv::evidence::ledger::read_records(&dir).unwrap();
    assert_eq!(
        records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2]
    );
    let (code, out, _) = pv_at(&repo.root, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 record(s) checked; 0 problem(s)"), "{out}");
}

#[test]
fn an_interrupted_discharge_leaves_no_partial_record() {
    let repo = SynRepo::new("interrupted");
    repo.discharge().unwrap();
    let dir = repo.root.join("evidence/syn-v1/SYN-001");
    // Killed while writing: only atomic_write's temporary file exists, half written.
    std::fs::write(
        dir.join(".0002.dsse.json.4242.tmp"),
        b"{\"payload\": \"eyJf",
    )
    .unwrap();
    let (code, out, _) = pv_at(&repo.root, &["verify"]);
    assert_eq!(code, 0, "a temporary file is not a record: {out}");
    // Killed between the record and head.json: verify says so, the next discharge repairs
    // the head and continues the chain.
    let head = std::fs::read(dir.join("head.json")).unwrap();
    repo.discharge().unwrap();
    std::fs::write(dir.join("head.json"), head).unwrap();
    let (code, out, _) = pv_at(&repo.root, &["verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("head.json names record 1"), "{out}");
    let d = repo.discharge().unwrap();
    assert!(d.record.ends_with("0003.dsse.json"));
    let (code, out, _) = pv_at(&repo.root, &["verify"]);
    assert_eq!(code, 0, "{out}");
}

/// The repository's committed evidence: `pv gate` is open on it, and closes, saying why,
/// when a record is deleted, tampered with, signed by an unknown key, or its clause edited.
#[test]
fn the_repository_gate_and_what_closes_it() {
    let root = common::root();
    let (code, out, err) = pv_at(&root, &["gate"]);
    assert_eq!(code, 0, "{out}{err}");
    for t in ["FFN-GGUF-001", "FFN-GGUF-002", "FFN-GGUF-003"] {
        assert!(
            out.contains(&format!(
                "ok      trace-ffn-sub-block-gguf-v1/{t}: DISCHARGED"
            )),
            "{out}"
        );
    }

    let copy = |tag: &str| {
        let d = fresh_dir(tag);
        for sub in ["contracts", "schemas", "keys", "evidence", "src"] {
            copy_dir(&root.join(sub), &d.join(sub));
        }
        let (code, out, err) = pv_at(&d, &["gate"]);
        assert_eq!(code, 0, "the copy starts open: {out}{err}");
        d
    };
    let rec = "evidence/trace-ffn-sub-block-gguf-v1/FFN-GGUF-003/0001.dsse.json";

    let d = copy("deleted");
    std::fs::remove_file(d.join(rec)).unwrap();
    let (code, out, _) = pv_at(&d, &["gate"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("FFN-GGUF-003: invalid evidence: head.json names record 1")
            && out.contains("deleted"),
        "{out}"
    );

    let d = copy("tampered");
    let text = std::fs::read_to_string(d.join(rec)).unwrap();
    let mut env: serde_json::Value = serde_json::from_str(&text).unwrap();
    let payload = env["payload"].as_str().unwrap().to_string();
    let body = String::from_utf8(base64_decode(&payload))
        .unwrap()
        .replace("\"H1\"", "\"H2\"");
    env["payload"] = base64_encode(body.as_bytes()).into();
    std::fs::write(d.join(rec), serde_json::to_string_pretty(&env).unwrap()).unwrap();
    let (code, out, _) = pv_at(&d, &["gate", "--format", "github"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("::error title=pv gate FFN-GGUF-003::")
            && out.contains("signature does not verify"),
        "{out}"
    );

    let d = copy("untrusted");
    for e in std::fs::read_dir(d.join("keys")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    keys::keygen("stranger", &d.join("private/stranger.key"), &d.join("keys")).unwrap();
    let (code, out, _) = pv_at(&d, &["gate", "--format", "junit"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("<failure") && out.contains("which is not in keys/ (untrusted)"),
        "{out}"
    );

    let d = copy("clause");
    let c = d.join("contracts/trace-ffn-sub-block-gguf-v1.yaml");
    let text = std::fs::read_to_string(&c).unwrap();
    std::fs::write(&c, text.replace("      layer: 3\n", "      layer: 4\n")).unwrap();
    let (code, out, _) = pv_at(&d, &["gate", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test_id"] == "FFN-GGUF-003")
        .unwrap();
    assert!(t["reasons"][0].as_str().unwrap().contains("STALE"), "{t}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn every_flipped_byte_makes_verification_fail() {
    let repo = SynRepo::new("flip");
    let d = repo.discharge().unwrap();
    let original = std::fs::read(&d.record).unwrap();
    let contracts = pv::contract::load_all(&repo.root.join("contracts")).unwrap();
    let trusted = keys::trusted_keys(&repo.root.join("keys")).unwrap();
    let evidence = repo.root.join("evidence");
    let places = Places {
        root: &repo.root,
        evidence: &evidence,
        trusted: &trusted,
    };
    let ok = |v: &pv::evidence::verify::Verification| v.tests.iter().all(|t| t.valid());
    assert!(ok(&verify_all(&contracts, &places).unwrap()));
    for i in 0..original.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[i] ^= bit;
            std::fs::write(&d.record, &bytes).unwrap();
            let v = verify_all(&contracts, &places).unwrap();
            assert!(!ok(&v), "flipping bit {bit:#x} of byte {i} went unnoticed");
        }
    }
    std::fs::write(&d.record, &original).unwrap();
    assert!(ok(&verify_all(&contracts, &places).unwrap()));
}

#[test]
fn an_independent_dsse_implementation_verifies_pv_records() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import cryptography"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Python `cryptography` is required under CI (scripts/test.sh installs it)"
        );
        eprintln!("skipping: no Python `cryptography`");
        return;
    }
    let root = common::root();
    let script = root.join("tests/interop/verify_dsse.py");
    let mut records = Vec::new();
    for c in std::fs::read_dir(root.join("evidence")).unwrap() {
        let c = c.unwrap().path();
        if !c.is_dir() {
            continue;
        }
        for t in std::fs::read_dir(c).unwrap() {
            records.push(t.unwrap().path().join("0001.dsse.json"));
        }
    }
    assert!(records.len() >= 3, "{records:?}");
    let repo = SynRepo::new("interop");
    let fresh = repo.discharge().unwrap().record;
    let cases = records
        .iter()
        .map(|r| (r.clone(), root.join("keys")))
        .chain([(fresh.clone(), repo.root.join("keys"))]);
    for (rec, keys_dir) in cases {
        let out = Command::new(&python)
            .arg(&script)
            .arg(&rec)
            .arg(&keys_dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.starts_with("ok "),
            "{}: {text}{}",
            rec.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And it rejects a record whose payload was changed.
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    let body = String::from_utf8(base64_decode(env["payload"].as_str().unwrap())).unwrap();
    env["payload"] = base64_encode(body.replace("\"H1\"", "\"H2\"").as_bytes()).into();
    std::fs::write(&fresh, serde_json::to_vec(&env).unwrap()).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(&fresh)
        .arg(repo.root.join("keys"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_committed_evidence_schema_is_generated_and_records_follow_it() {
    let root = common::root();
    let committed = std::fs::read_to_string(root.join("schemas/evidence.schema.json")).unwrap();
    let generated = pv::evidence::schema_text();
    if std::env::var_os("PV_BLESS").is_some() {
        std::fs::write(root.join("schemas/evidence.schema.json"), &generated).unwrap();
    } else {
        assert_eq!(
            committed, generated,
            "regenerate with `pv schema evidence > schemas/evidence.schema.json`"
        );
    }
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let repo = SynRepo::new("schema");
    let rec = repo.discharge().unwrap().record;
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&base64_decode(env["payload"].as_str().unwrap())).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// The README's main job, on the real model, into a scratch repository: convert to APR
/// when absent, create a key when there is none, discharge FFN-GGUF-003 canonically.
#[test]
fn the_main_job_discharges_ffn_gguf_003_on_smollm2() {
    let Some(model) = common::smollm2() else {
        return;
    };
    let root = common::root();
    let d = fresh_dir("mainjob");
    // What the contracts reference must exist: the sources and schemas.
    for sub in ["contracts", "schemas", "src"] {
        copy_dir(&root.join(sub), &d.join(sub));
    }
    let models = d.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(&model, models.join(model.file_name().unwrap())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pv"))
        .current_dir(&d)
        .env("PV_KEY_DIR", d.join("private"))
        .env("PV_KEY_NAME", "newcomer")
        .args(["discharge", "FFN-GGUF-003", "--models", "models"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("verdict H1 (canonical model)"), "{stdout}");
    assert!(stdout.contains("status PENDING -> DISCHARGED"), "{stdout}");
    assert!(
        stdout.contains("record evidence/trace-ffn-sub-block-gguf-v1/FFN-GGUF-003/0001.dsse.json"),
        "{stdout}"
    );
    assert!(
        stdout.contains("   3*"),
        "the per-layer table marks layer 3: {stdout}"
    );
    assert!(stderr.contains("created signing key"), "{stderr}");
    assert!(models.join("SmolLM2-135M-Instruct.Q4_1.apr").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("private/newcomer.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, out, _) = pv_at(&d, &["verify"]);
    assert_eq!(code, 0, "{out}");
}
