//! Evidence end to end: discharges through the status machine on a synthetic model, the
//! gate on the repository and on tampered copies of it, concurrent discharges, interrupted
//! writes, every flipped byte, and verification by an independent DSSE implementation.

mod common;

use std::path::Path;
use std::process::Command;

use common::repo::{SynRepo, b64d as base64_decode, b64e as base64_encode, copy_dir, fresh_dir};
use pv::evidence::Status;
use pv::evidence::discharge::DischargeError;
use pv::evidence::keys;
use pv::evidence::verify::{Places, verify_all};

/// `pv ARGS --root ROOT`.
fn pv_at(root: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--root", root.to_str().unwrap()]);
    common::pv(&all)
}

#[test]
fn the_status_machine_on_a_synthetic_model() {
    let repo = SynRepo::new("machine");
    let (code, out) = repo.gate(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no evidence (status PENDING)"), "{out}");

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
    assert_eq!(repo.gate(&[]).0, 1);

    // The canonical model: the clause changed (the digest), so the record before is stale
    // history, and the new one discharges.
    repo.contract(&repo.sha, [0.5, 2.0]);
    let d = repo.discharge().unwrap();
    assert_eq!(
        (d.from, d.to),
        (Status::AlgorithmLevelDischarged, Status::Discharged)
    );
    let (code, out) = repo.gate(&[]);
    assert_eq!(code, 0, "{out}");

    // A band that excludes the measured ratio: H2, falsified, and the gate blocks.
    repo.contract(&repo.sha, [3.0, 4.0]);
    let d = repo.discharge().unwrap();
    assert_eq!(d.outcome.verdict, "H2");
    assert_eq!((d.from, d.to), (Status::Discharged, Status::Falsified));
    let (code, out) = repo.gate(&[]);
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
    assert_eq!(repo.gate(&[]).0, 0);

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

/// A contract naming its models and prompts once, and tests whose sides are model files of
/// their own: two GGUF files on one engine, and a GGUF against an APR file that is no GGUF's
/// sibling. The record reads every file, is canonical only while every pin holds, and
/// reports each side by its file.
#[test]
fn sides_as_two_model_files_named_once_in_the_contract() {
    let repo = SynRepo::new("sides");
    std::fs::copy(repo.models.join("syn.gguf"), repo.models.join("copy.gguf")).unwrap();
    let q8 = pv::gguf::GgufFile::open(&repo.models.join("syn.gguf")).unwrap();
    pv::model::gguf_to_apr(&q8, pv::model::AprDtype::F32)
        .unwrap()
        .write(&repo.models.join("reference.apr"))
        .unwrap();
    let sha = |f: &str| pv::evidence::sha256_file(&repo.models.join(f)).unwrap();
    let write = |copy_pin: &str, reference: &str| {
        let text = format!(
            "# yaml-language-server: $schema=../schemas/contract.schema.json
metadata:
  id: pair-v1
  version: 1.0.0
  title: Two files
  description: Sides as model files.
  status: ACTIVE
  created: 2026-11-27
  authors: [tests]
  covers: [engine/**]
models:
  q8: {{file: syn.gguf, sha256: {}}}
  copy: {{file: copy.gguf, sha256: {copy_pin}}}
  reference: {{file: reference.apr, sha256: {}}}
prompt_sets:
  two: [\"What is 2+2?\", \"Hello, world\"]
proof_obligations:
  - id: PO-PAIR-001
    type: bound
    property: the engines agree up to Q8_0 quantization
    tolerance:
      limits: {{max_kl: 0.01, min_top1: 0.75}}
  - id: PO-PAIR-002
    type: bound
    property: every capture point agrees
falsification_tests:
  - id: PAIR-001
    rule: logits agree
    prediction: H1
    obligations: [PO-PAIR-001]
    checker: logits_agreement
    params:
      model: q8
      sides: [{{engine: gguf, model: copy}}, {{engine: apr, model: reference}}]
      prompts: two
      max_kl: 0.01
      min_top1: 0.75
      top_k: 2
      verdicts: {{pass: H1, fail: H2}}
    if_fails: bisect
    required_for_gate: false
  - id: PAIR-002
    rule: every capture point agrees
    prediction: H1
    obligations: [PO-PAIR-002]
    checker: trace_agreement
    params:
      model: q8
      sides: [{{engine: gguf, model: copy}}, {reference}]
      prompts: two
      mode: end_to_end
      thresholds:
        slots:
          attn_norm: {{cosine_gap: 1.0e-12}}
          q: {{cosine_gap: 1.0e-12}}
          l_out: {{cosine_gap: 1.0e-12}}
      verdicts: {{pass: H1, fail: H2}}
    if_fails: bisect
    required_for_gate: false
",
            sha("syn.gguf"),
            sha("reference.apr"),
        );
        std::fs::write(repo.root.join("contracts/pair-v1.yaml"), text).unwrap();
    };
    // Two GGUF files (the same bytes) on one engine: every slot identical.
    write(&sha("copy.gguf"), "gguf");
    let (code, out, err) = repo.pv(&["validate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 file(s) checked"), "{out}");
    let d = repo.discharge_test("PAIR-002", None).unwrap();
    assert_eq!(d.outcome.verdict, "H1", "{}", d.outcome.report);
    assert!(d.outcome.canonical);
    assert!(
        d.outcome
            .report
            .starts_with("gguf:copy.gguf vs gguf, 2 prompts"),
        "{}",
        d.outcome.report
    );
    // The GGUF copy against the named APR file: no quantized path meets 1e-12, and the first
    // capture point past the embedding's exact rows is named.
    write(&sha("copy.gguf"), "{engine: apr, model: reference}");
    let d = repo.discharge_test("PAIR-002", None).unwrap();
    assert_eq!(d.outcome.verdict, "H2", "{}", d.outcome.report);
    assert!(
        d.outcome
            .report
            .contains("first outside limits: q at layer 0"),
        "{}",
        d.outcome.report
    );
    // One side's file pinned to another digest: the run is not on the contract's models.
    write(&"ab".repeat(32), "{engine: apr, model: reference}");
    let d = repo.discharge_test("PAIR-001", None).unwrap();
    assert!(d.outcome.passed && !d.outcome.canonical);
    assert_eq!(d.to, Status::AlgorithmLevelDischarged);

    // Pinned as the files are: the run is.
    write(&sha("copy.gguf"), "{engine: apr, model: reference}");
    let d = repo.discharge_test("PAIR-001", None).unwrap();
    assert!(
        d.outcome.passed && d.outcome.canonical,
        "{}",
        d.outcome.report
    );
    assert!(
        d.outcome
            .report
            .starts_with("gguf:copy.gguf vs apr:reference.apr, 2 prompts"),
        "{}",
        d.outcome.report
    );
    let read: Vec<String> = d.outcome.inputs.iter().map(|i| i.name.clone()).collect();
    for f in ["syn.gguf", "copy.gguf", "reference.apr"] {
        assert!(read.iter().any(|n| n.ends_with(f)), "{f} not in {read:?}");
    }
    assert_eq!(
        (d.from, d.to),
        (Status::AlgorithmLevelDischarged, Status::Discharged)
    );

    // A side whose engine cannot run its file is refused.
    let text = std::fs::read_to_string(repo.root.join("contracts/pair-v1.yaml")).unwrap();
    std::fs::write(
        repo.root.join("contracts/pair-v1.yaml"),
        text.replace(
            "{engine: apr, model: reference}]",
            "{engine: gguf, model: reference}]",
        ),
    )
    .unwrap();
    let e = repo
        .discharge_test("PAIR-001", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("engine gguf runs .gguf files, not reference.apr"),
        "{e}"
    );
    let (code, out, _) = repo.pv(&["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error[bad-params]"), "{out}");
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

/// `pv discharge SYN-001` as a process, killed (aborted) at `moment` when given.
fn discharge_killed_at(repo: &SynRepo, moment: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pv"));
    cmd.args(["discharge", "SYN-001", "--threads", "1", "--root"])
        .arg(&repo.root)
        .arg("--models")
        .arg(&repo.models)
        .arg("--key")
        .arg(&repo.key);
    if let Some(m) = moment {
        cmd.env("PV_CRASH_AT", m);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A discharge killed at each moment of its write leaves a ledger that verifies, or one
/// that reports an interrupted discharge with the command that completes it; the next
/// discharge (or `--complete`) completes it, and no temporary file survives it.
#[test]
fn kills_at_every_moment_of_a_discharge_leave_a_ledger_that_verifies_or_says_how_to_complete() {
    let repo = SynRepo::new("killed");
    let dir = repo.root.join("evidence/syn-v1/SYN-001");
    assert_eq!(discharge_killed_at(&repo, None).0, 0);

    // Killed with the record only in its temporary file: not evidence; verify is clean and
    // notes the leftover; the next discharge removes it and takes the next number.
    let (code, _) = discharge_killed_at(&repo, Some("record-temp"));
    assert_ne!(code, 0, "the process was aborted");
    assert!(
        files_in(&dir).iter().any(|f| f.ends_with(".tmp")),
        "{:?}",
        files_in(&dir)
    );
    let (code, out, _) = repo.pv(&["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("temporary file of an interrupted write"),
        "{out}"
    );
    assert_eq!(discharge_killed_at(&repo, None).0, 0);
    assert_eq!(
        files_in(&dir),
        ["0001.dsse.json", "0002.dsse.json", "head.json"]
    );

    // Killed between the record and its head: an interrupted discharge, named with the
    // command that completes it, blocking the gate; the next discharge completes it first.
    let (code, _) = discharge_killed_at(&repo, Some("record"));
    assert_ne!(code, 0);
    let (code, out, _) = repo.pv(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("interrupted discharge: record 3 was written but head.json does not name it yet; complete it with `pv discharge SYN-001 --complete`"),
        "{out}"
    );
    let (_, out, _) = repo.pv(&["status"]);
    assert!(out.contains("DISCHARGED (INTERRUPTED)"), "{out}");
    let (code, out) = repo.gate(&[]);
    assert_eq!(code, 1);
    assert!(out.contains("[ledger-complete]"), "{out}");
    let (code, out) = discharge_killed_at(&repo, None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("completed an interrupted discharge: head.json now names record 3"),
        "{out}"
    );
    assert!(out.contains("0004.dsse.json"), "{out}");
    assert_eq!(repo.pv(&["verify"]).0, 0);

    // Killed while replacing the head: the record is in place, the new head only in a
    // temporary file. `--complete` signs the head and removes the leftover, running nothing.
    let (code, _) = discharge_killed_at(&repo, Some("head-temp"));
    assert_ne!(code, 0);
    let (code, out, _) = repo.pv(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("record 5 was written but head.json does not name it yet"),
        "{out}"
    );
    let (code, out, _) = repo.pv(&[
        "discharge",
        "SYN-001",
        "--complete",
        "--key",
        repo.key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("head.json now names record 5"), "{out}");
    assert_eq!(
        files_in(&dir),
        [
            "0001.dsse.json",
            "0002.dsse.json",
            "0003.dsse.json",
            "0004.dsse.json",
            "0005.dsse.json",
            "head.json"
        ]
    );
    let (code, out, _) = repo.pv(&["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 record(s) checked; 0 problem(s)"), "{out}");
}

/// The repository as committed at HEAD (not the working tree, whose ledger the README's
/// main job may have extended), in a fresh directory, with the models linked in.
fn committed_tree(tag: &str) -> common::repo::Scratch {
    let root = common::root();
    let d = fresh_dir(tag);
    let archive = Command::new("git")
        .current_dir(&root)
        .args(["archive", "--format=tar", "HEAD"])
        .output()
        .unwrap();
    assert!(archive.status.success(), "git archive HEAD");
    let mut tar = Command::new("tar")
        .current_dir(&d)
        .args(["-xf", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    tar.stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    assert!(tar.wait().unwrap().success());
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("models"), d.join("models")).unwrap();
    d
}

/// The repository's committed evidence: `pv gate` (re-checking what the committed code
/// made stale) is open on it, and closes, saying why, when a record is deleted, tampered
/// with, signed by an unknown key, or its clause edited.
#[test]
fn the_repository_gate_and_what_closes_it() {
    if common::smollm2().is_none() {
        return;
    }
    let copy = |tag: &str| committed_tree(tag);
    let d = copy("repo-open");
    let (code, out, err) = pv_at(
        &d,
        &[
            "gate",
            "--discharge-stale",
            "--models",
            d.join("models").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    for t in ["FFN-GGUF-001", "FFN-GGUF-002", "FFN-GGUF-003"] {
        assert!(
            out.contains(&format!("ok      trace-ffn-sub-block-gguf-v1/{t}: ")),
            "{out}"
        );
    }
    let rec = "evidence/trace-ffn-sub-block-gguf-v1/FFN-GGUF-003/0001.dsse.json";

    let d = copy("repo-deleted");
    std::fs::remove_file(d.join(rec)).unwrap();
    let (code, out, _) = pv_at(&d, &["gate"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("BLOCKED evidence/trace-ffn-sub-block-gguf-v1/FFN-GGUF-003/0002.dsse.json: invalid record: sequence gap: expected record 1, found 2"),
        "paths are shown relative to the root: {out}"
    );
    // Deleting the latest record instead: the signed head names what is gone.
    let d = copy("repo-deleted-latest");
    let dir = d.join("evidence/trace-ffn-sub-block-gguf-v1/FFN-GGUF-003");
    let latest = pv::evidence::ledger::read_records(&dir)
        .unwrap()
        .last()
        .unwrap()
        .sequence;
    std::fs::remove_file(dir.join(pv::evidence::ledger::record_name(latest))).unwrap();
    let (code, out, _) = pv_at(&d, &["gate"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("head.json names record {latest} (sha256")),
        "{out}"
    );

    let d = copy("repo-tampered");
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
        out.contains(&format!(
            "::error file={},title=pv gate evidence-intact::",
            rec.replace(':', "%3A")
        )) && out.contains("signature does not verify"),
        "{out}"
    );

    let d = copy("repo-untrusted");
    for e in std::fs::read_dir(d.join("keys")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    keys::keygen("stranger", &d.join("private/stranger.key"), &d.join("keys")).unwrap();
    let (code, out, _) = pv_at(&d, &["gate", "--format", "junit"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("<failure") && out.contains("which is not a trusted key (untrusted)"),
        "{out}"
    );

    let d = copy("repo-clause");
    let c = d.join("contracts/trace-ffn-sub-block-gguf-v1.yaml");
    let text = std::fs::read_to_string(&c).unwrap();
    std::fs::write(&c, text.replace("      layer: 3\n", "      layer: 4\n")).unwrap();
    let (code, out, _) = pv_at(&d, &["gate", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let blocks = v["blocks"].as_array().unwrap();
    assert!(
        blocks.iter().any(
            |b| b["subject"] == "trace-ffn-sub-block-gguf-v1/FFN-GGUF-003"
                && b["reason"]
                    .as_str()
                    .unwrap()
                    .contains("the clause of FFN-GGUF-003 changed")
        ),
        "{out}"
    );
}

#[test]
fn every_flipped_byte_makes_verification_fail() {
    let repo = SynRepo::new("flip");
    let d = repo.discharge().unwrap();
    let original = std::fs::read(&d.record).unwrap();
    let contracts = pv::contract::load_all(&repo.root.join("contracts"), &repo.root).unwrap();
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

/// Runs the securesystemslib interop script on `records` with the keys in `keys_dir`: its
/// exit code and output.
fn sslib_verify(records: &[std::path::PathBuf], keys_dir: &Path) -> (bool, String) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(common::root().join("tests/interop/verify_dsse.py"))
        .arg(keys_dir)
        .args(records)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// securesystemslib (the in-toto reference implementation's signing library, from PyPI)
/// verifies the committed records and heads, and a fresh record with its head, with its own
/// DSSE envelope and key classes reading pv's PEM keys; and rejects an edited record.
#[test]
fn securesystemslib_verifies_pv_records_and_heads() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args([
            "-c",
            "import securesystemslib.dsse, securesystemslib.signer",
        ])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        common::skip(
            "Python `securesystemslib`",
            "scripts/test.sh installs it with pip",
        );
        return;
    }
    let d = committed_tree("interop-committed");
    let mut files = Vec::new();
    for c in std::fs::read_dir(d.join("evidence")).unwrap() {
        let c = c.unwrap().path();
        if !c.is_dir() {
            continue;
        }
        for t in std::fs::read_dir(c).unwrap() {
            for f in std::fs::read_dir(t.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
    }
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let (ok, out) = sslib_verify(&files, &d.join("keys"));
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{out}"
    );

    let repo = SynRepo::new("interop");
    let fresh = repo.discharge().unwrap().record;
    let head = fresh.parent().unwrap().join("head.json");
    let (ok, out) = sslib_verify(&[fresh.clone(), head], &repo.root.join("keys"));
    assert!(ok, "{out}");
    // And it rejects a record whose payload was changed.
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    let body = String::from_utf8(base64_decode(env["payload"].as_str().unwrap())).unwrap();
    env["payload"] = base64_encode(body.replace("\"H1\"", "\"H2\"").as_bytes()).into();
    std::fs::write(&fresh, serde_json::to_vec(&env).unwrap()).unwrap();
    let (ok, out) = sslib_verify(&[fresh], &repo.root.join("keys"));
    assert!(!ok, "{out}");
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
    // What the contracts reference must exist: the sources (pv's and the engine adapters'),
    // scripts, schemas, prompt sets and reference figures.
    for sub in [
        "contracts",
        "schemas",
        "src",
        "engines",
        "scripts",
        "tests/fixtures",
    ] {
        copy_dir(&root.join(sub), &d.join(sub));
    }
    std::fs::copy(root.join("Cargo.lock"), d.join("Cargo.lock")).unwrap();
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
