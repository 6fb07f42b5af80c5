//! The gate as a pull-request author attacks it: someone who controls everything in the
//! pull request's tree (code, contracts, evidence, keys/) but not the base branch, and not
//! what the gate computes itself. Each attack is scripted on a scratch git repository (a
//! base commit, then a pull-request commit on top) and must block, with a one-line reason
//! naming the file, record or test; an honest change must not.

mod common;

use std::path::Path;

use common::repo::{SynRepo, b64d};
use pv::evidence::{dsse, head, keys};

/// A repository whose base commit (tagged `base`) has SYN-001 discharged, H1, canonical.
fn based(tag: &str) -> SynRepo {
    let repo = SynRepo::new(tag);
    repo.discharge().unwrap();
    repo.commit("base: SYN-001 discharged");
    repo.git(&["tag", "base"]);
    let (code, out) = repo.gate(&["--base", "base"]);
    assert_eq!(code, 0, "the base itself passes its gate: {out}");
    repo
}

/// Asserts that `pv gate ARGS` blocks and says each of `needles`; the output.
#[track_caller]
fn blocks(repo: &SynRepo, args: &[&str], needles: &[&str]) -> String {
    let (code, out) = repo.gate(args);
    assert_eq!(code, 1, "expected the gate to block:\n{out}");
    for n in needles {
        assert!(out.contains(n), "expected {n:?} in:\n{out}");
    }
    // Every reason is one line that names what it is about (a file, a test or a contract).
    for line in out.lines().filter(|l| l.starts_with("BLOCKED ")) {
        let subject = line["BLOCKED ".len()..].split(": ").next().unwrap();
        assert!(
            !subject.is_empty() && !subject.contains(' '),
            "a block names a file, test or contract: {line}"
        );
    }
    out
}

/// A key pair the attacker makes and commits to keys/.
fn attacker_key(repo: &SynRepo) -> ed25519_dalek::SigningKey {
    let private = repo.root.join("private/attacker.key");
    keys::keygen("attacker", &private, &repo.root.join("keys")).unwrap();
    keys::load_signing_key(&private).unwrap()
}

#[test]
fn a_record_signed_by_a_key_the_pull_request_adds_is_untrusted() {
    let repo = based("attack-key");
    attacker_key(&repo);
    repo.discharge_with("SYN-001", None, &repo.root.join("private/attacker.key"))
        .unwrap();
    repo.commit("pr: my key, my record");
    let out = blocks(
        &repo,
        &["--base", "base"],
        &[
            "evidence/syn-v1/SYN-001/0002.dsse.json: invalid record: signed by key",
            "which is not a trusted key (untrusted)",
            "note: keys/attacker.pub is not in base's keys/",
        ],
    );
    assert!(out.contains("trust comes from base base (commit"), "{out}");
    // In the working tree the attacker's key is trusted: this is what --base is for.
    assert_eq!(repo.gate(&[]).0, 0);
}

/// Re-signs record `seq` of SYN-001 with `key` after `edit` rewrites its statement, and
/// signs a head for it, as someone holding `key` (named `signer`) would.
fn resign(
    repo: &SynRepo,
    seq: u64,
    key: &ed25519_dalek::SigningKey,
    signer: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let path = repo.record(seq);
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut st: serde_json::Value =
        serde_json::from_slice(&b64d(env["payload"].as_str().unwrap())).unwrap();
    edit(&mut st);
    st["predicate"]["signer"] = signer.into();
    let body = serde_json::to_vec(&st).unwrap();
    let text = serde_json::to_string_pretty(&dsse::sign(&body, key)).unwrap() + "\n";
    std::fs::write(&path, &text).unwrap();
    let sha = pv::evidence::sha256_hex(text.as_bytes());
    std::fs::write(
        path.parent().unwrap().join("head.json"),
        head::sign("syn-v1", "SYN-001", seq, &sha, signer, key),
    )
    .unwrap();
}

#[test]
fn a_record_whose_measurements_were_edited_is_rejected_whoever_signs_it() {
    let repo = based("attack-resign");
    let key = attacker_key(&repo);
    // Layer 1's APR std made 50x the GGUF one, the ratios recomputed to match, the verdict
    // left at H1.
    resign(&repo, 1, &key, "attacker", |st| {
        let m = &mut st["predicate"]["measurements"];
        let g = m["per_layer"][1]["gguf_std_all"].as_f64().unwrap();
        let a = 50.0 * g;
        m["per_layer"][1]["apr_std_all"] = a.into();
        m["per_layer"][1]["ratio_all"] = (a / g).into();
        m["ratio_all"] = (a / g).into();
    });
    repo.commit("pr: a better ratio");
    blocks(
        &repo,
        &["--base", "base"],
        &[
            "0001.dsse.json: a record of the base was edited (its bytes differ from the base's); the ledger is append-only [append-only]",
            "which is not a trusted key (untrusted)",
        ],
    );
    // Even where the attacker's key is trusted (no --base), the claim is re-derived.
    blocks(
        &repo,
        &[],
        &[
            "0001.dsse.json: invalid record: it records verdict H1 (passed=true) but its measurements give H2 (passed=false)",
        ],
    );
    // A ratio that disagrees with the stds it was computed from is refused as such.
    resign(&repo, 1, &key, "attacker", |st| {
        st["predicate"]["measurements"]["ratio_all"] = 0.99.into();
    });
    blocks(
        &repo,
        &[],
        &["its measurements cannot be judged: ratio_all is recorded as 0.99"],
    );
}

#[test]
fn a_falsified_record_cannot_be_removed() {
    let repo = SynRepo::new("attack-falsified");
    repo.discharge().unwrap();
    repo.commit("H1");
    let old_head = repo.git(&["show", "HEAD:evidence/syn-v1/SYN-001/head.json"]);
    // An honest FALSIFIED record: the band tightened past what the model does.
    repo.contract(&repo.sha, [3.0, 4.0]);
    let d = repo.discharge().unwrap();
    assert_eq!(d.outcome.verdict, "H2");
    repo.commit("base: SYN-001 falsified");
    repo.git(&["tag", "base"]);
    blocks(&repo, &["--base", "base"], &["status FALSIFIED"]);

    // Delete it and write an unsigned head naming the record before (no key needed).
    std::fs::remove_file(repo.record(2)).unwrap();
    let sha1 = pv::evidence::sha256_file(&repo.record(1)).unwrap();
    let dir = repo.record(1).parent().unwrap().to_path_buf();
    std::fs::write(
        dir.join("head.json"),
        format!("{{\"sequence\": 1, \"sha256\": \"{sha1}\"}}\n"),
    )
    .unwrap();
    repo.commit("pr: forget the falsification");
    blocks(
        &repo,
        &["--base", "base"],
        &[
            "SYN-001/0002.dsse.json: a record of the base was removed; the ledger is append-only [append-only]",
        ],
    );
    blocks(
        &repo,
        &[],
        &["head.json is unsigned (written by an earlier pv), so it proves nothing"],
    );

    // Replaying the head the chain had before (signed by a trusted key, from history):
    // only the base can tell, and it does.
    std::fs::write(dir.join("head.json"), old_head).unwrap();
    repo.commit("pr: the old head");
    blocks(
        &repo,
        &["--base", "base"],
        &["SYN-001/0002.dsse.json: a record of the base was removed"],
    );
}

#[test]
fn a_change_to_covered_code_makes_evidence_stale_and_a_recheck_decides() {
    let repo = based("honest-code-change");
    std::fs::write(
        repo.root.join("engine/forward.rs"),
        "fn forward() { /* faster */ }\n",
    )
    .unwrap();
    repo.commit("pr: a faster forward");
    blocks(
        &repo,
        &["--base", "base"],
        &[
            "the latest record",
            "is STALE: covered code changed since this record: engine/forward.rs changed",
        ],
    );
    let models = repo.models.to_str().unwrap();
    let (code, out) = repo.gate(&["--base", "base", "--discharge-stale", "--models", models]);
    assert_eq!(code, 0, "an honest change opens once re-checked: {out}");
    assert!(
        out.contains("syn-v1/SYN-001: H1 (measured by this pv, judged here, canonical model)"),
        "{out}"
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.root.join("target/pv-gate/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary[0]["verdict"], "H1");
    // The scratch record verifies against the scratch key.
    let rec = repo
        .root
        .join("target/pv-gate/evidence/syn-v1/SYN-001/0001.dsse.json");
    let scratch_keys = keys::trusted_keys(&repo.root.join("target/pv-gate/keys")).unwrap();
    let env: dsse::Envelope = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    assert!(dsse::verify(&env, scratch_keys.iter().map(|k| &k.key)).is_ok());
    // Adding a file under covers is a change too.
    std::fs::write(repo.root.join("engine/extra.rs"), "\n").unwrap();
    blocks(&repo, &[], &["engine/extra.rs added"]);
}

#[test]
fn re_pinning_the_model_is_a_contract_change_that_blocks() {
    let repo = based("attack-repin");
    let evil = common::synthetic_model("qwen2", pv::gguf::GgmlType::Q8_0, None);
    std::fs::write(repo.models.join("evil.gguf"), evil.bytes()).unwrap();
    let sha = pv::evidence::sha256_file(&repo.models.join("evil.gguf")).unwrap();
    let text = std::fs::read_to_string(repo.root.join("contracts/syn-v1.yaml"))
        .unwrap()
        .replace(
            &format!("file: syn.gguf, sha256: {}", repo.sha),
            &format!("file: evil.gguf, sha256: {sha}"),
        );
    std::fs::write(repo.root.join("contracts/syn-v1.yaml"), text).unwrap();
    attacker_key(&repo);
    let d = repo
        .discharge_with("SYN-001", None, &repo.root.join("private/attacker.key"))
        .unwrap();
    assert!(d.outcome.canonical, "canonical by its own contract");
    repo.commit("pr: my model");
    let out = blocks(
        &repo,
        &["--base", "base"],
        &[
            "WEAKENS  syn-v1/SYN-001: model re-pinned",
            "BLOCKED syn-v1/SYN-001: contract change against the base weakens a gate-required test: model re-pinned",
        ],
    );
    assert!(out.contains("--accept-contract-changes"), "{out}");
    // Accepting the re-pin leaves the attacker's record untrusted all the same.
    blocks(
        &repo,
        &["--base", "base", "--accept-contract-changes"],
        &["(untrusted)"],
    );
}

#[test]
fn dropping_a_requirement_or_retiring_the_contract_and_deleting_evidence_blocks() {
    for (tag, spec_edit, reason) in [
        (
            "attack-unrequire",
            (|s: &mut common::repo::Spec| s.required = false) as fn(&mut common::repo::Spec),
            "syn-v1/SYN-001: contract change against the base weakens a gate-required test: required_for_gate dropped",
        ),
        (
            "attack-retire",
            |s: &mut common::repo::Spec| s.status = "RETIRED",
            "syn-v1: contract change against the base weakens a gate-required test: status ACTIVE -> RETIRED",
        ),
        (
            "attack-narrow",
            |s: &mut common::repo::Spec| s.covers = vec!["engine/none/**"],
            "covered paths narrowed",
        ),
        (
            "attack-widen",
            |s: &mut common::repo::Spec| s.band = [0.01, 100.0],
            "band widened or moved: [0.5,2] -> [0.01,100]",
        ),
    ] {
        let repo = based(tag);
        let mut spec = repo.spec();
        spec_edit(&mut spec);
        repo.write(&spec);
        std::fs::remove_dir_all(repo.root.join("evidence/syn-v1/SYN-001")).unwrap();
        repo.commit("pr: less to prove");
        blocks(
            &repo,
            &["--base", "base"],
            &[reason, "0001.dsse.json: a record of the base was removed"],
        );
        // A maintainer may accept the contract change; the removed record still blocks.
        let out = blocks(
            &repo,
            &["--base", "base", "--accept-contract-changes"],
            &["was removed"],
        );
        assert!(!out.contains("[contracts-not-weakened]"), "{out}");
    }
}

#[test]
fn tightening_a_band_is_listed_and_needs_only_fresh_evidence() {
    let repo = based("tighten");
    repo.contract(&repo.sha, [0.8, 1.25]);
    repo.discharge().unwrap();
    repo.commit("pr: a narrower band");
    let (code, out) = repo.gate(&["--base", "base"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("tightens syn-v1/SYN-001: band narrowed: [0.5,2] -> [0.8,1.25]"),
        "{out}"
    );
}

#[test]
fn the_github_format_escapes_what_workflow_commands_require() {
    let repo = based("github");
    std::fs::write(repo.root.join("engine/forward.rs"), "changed\n").unwrap();
    let (code, out) = repo.gate(&["--format", "github"]);
    assert_eq!(code, 1);
    let error = out.lines().find(|l| l.starts_with("::error ")).unwrap();
    assert!(
        error.starts_with("::error title=pv gate required-discharged::syn-v1/SYN-001: "),
        "{error}"
    );
    assert!(
        !error["::error title=".len()..]
            .split("::")
            .next()
            .unwrap()
            .contains(':'),
        "{error}"
    );
    let (_, json) = repo.gate(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["open"], false);
    assert_eq!(v["blocks"][0]["rule"], "required-discharged");
}

/// The real repository, at HEAD, as a base; a pull request that swaps the gate and up
/// projections in the GGUF engine (tests/mutants/swap-gate-up.patch). The judge is this
/// pv; the code under test is the same source with the patch, built by
/// `scripts/build-mutant.sh swap-gate-up`. FFN-GGUF-003 must come back H2 and block.
#[test]
#[ignore = "long suite (scripts/test.sh --long): builds a second pv and re-checks every required test with it"]
fn a_pull_request_that_swaps_gate_and_up_is_blocked_with_h2() {
    let Some(model) = common::smollm2() else {
        return;
    };
    let mutant = common::root().join("target/release/pv-mutant-swap-gate-up");
    if !mutant.exists() {
        common::skip(
            &mutant.display().to_string(),
            "scripts/build-mutant.sh swap-gate-up",
        );
        return;
    }
    let d = common::repo::fresh_dir("mutant-pr");
    let tree = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C {} archive --format=tar HEAD | tar -x -C {}",
            common::root().display(),
            d.display()
        ))
        .status()
        .unwrap();
    assert!(tree.success());
    let repo = SynRepo {
        root: d.to_path_buf(),
        models: model.parent().unwrap().to_path_buf(),
        key: d.join("unused"),
        sha: String::new(),
        scratch: d,
    };
    repo.commit("base: the repository at HEAD");
    repo.git(&["tag", "base"]);
    repo.git(&[
        "apply",
        common::root()
            .join("tests/mutants/swap-gate-up.patch")
            .to_str()
            .unwrap(),
    ]);
    repo.commit("pr: swiglu(up, gate)");
    let models = repo.models.to_str().unwrap();
    let (code, out) = repo.gate(&[
        "--base",
        "base",
        "--discharge-stale",
        "--models",
        models,
        "--engine",
        mutant.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BLOCKED trace-ffn-sub-block-gguf-v1/FFN-GGUF-003: re-checked in this run")
            && out.contains("verdict H2 (FALSIFIED)"),
        "{out}"
    );
    assert!(
        out.contains("        |    3* "),
        "the table marks layer 3: {out}"
    );
    assert!(Path::new(&repo.root.join("target/pv-gate/summary.json")).exists());
}

/// Every deliberate bug in tests/mutants still applies to the source as it is: a patch
/// whose context drifted would otherwise only fail when scripts/test.sh builds the mutant.
#[test]
fn every_mutant_patch_applies_to_the_current_source() {
    let root = common::root();
    let mut n = 0;
    for e in std::fs::read_dir(root.join("tests/mutants")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "patch") {
            continue;
        }
        n += 1;
        let out = std::process::Command::new("patch")
            .current_dir(&root)
            .args(["--dry-run", "--quiet", "-p1", "-i"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} no longer applies; regenerate it against the current source: {}",
            p.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(n >= 1, "no mutants found");
}

/// A based repository with four required tests (SYN-001 and SYN-003..005), all discharged
/// at the base, then a pull request that changes covered code: all four are due.
fn four_due(tag: &str) -> SynRepo {
    let repo = SynRepo::new(tag);
    let path = repo.root.join("contracts/syn-v1.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let extra: String = (3..=5)
        .map(|i| {
            format!(
                "  - id: SYN-00{i}\n    rule: ratio in band\n    prediction: H1\n    \
                 obligations: [PO-SYN-001]\n    checker: apr_gguf_std_ratio\n    params:\n      \
                 model: {{file: syn.gguf, sha256: {}}}\n      prompt: Count to {i}.\n      \
                 layer: {}\n      slot: ffn_inner\n      band: [0.5, 2]\n    if_fails: bisect\n    \
                 required_for_gate: true\n",
                repo.sha,
                i % 2
            )
        })
        .collect();
    std::fs::write(
        &path,
        text.replace(
            "falsification_tests:\n",
            &format!("falsification_tests:\n{extra}"),
        ),
    )
    .unwrap();
    for t in ["SYN-001", "SYN-003", "SYN-004", "SYN-005"] {
        repo.discharge_test(t, None).unwrap();
    }
    repo.commit("base: four tests discharged");
    repo.git(&["tag", "base"]);
    std::fs::write(
        repo.root.join("engine/forward.rs"),
        "fn forward() { /* faster */ }\n",
    )
    .unwrap();
    repo.commit("pr: a faster forward");
    repo
}

/// `pv gate --shard K/N` into `dir`: exit code, output, and the tests it re-checked.
fn shard(repo: &SynRepo, k: &str, dir: &Path) -> (i32, String, Vec<String>) {
    let models = repo.models.to_str().unwrap();
    let (code, out) = repo.gate(&[
        "--base",
        "base",
        "--discharge-stale",
        "--models",
        models,
        "--shard",
        k,
        "--scratch",
        dir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&out[..out.rfind('}').map_or(out.len(), |i| i + 1)])
            .unwrap_or_else(|e| panic!("{e}: {out}"));
    let tests = json["fresh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["test_id"].as_str().unwrap().to_string())
        .collect();
    (code, out, tests)
}

#[test]
fn shards_split_the_rechecks_and_the_merge_judges_their_union() {
    let repo = four_due("shards");
    let dirs: Vec<_> = (1..=3)
        .map(|k| repo.root.join(format!("target/s{k}")))
        .collect();
    let mut all = Vec::new();
    for (k, dir) in dirs.iter().enumerate() {
        let (code, out, tests) = shard(&repo, &format!("{}/3", k + 1), dir);
        // A shard judges its own share: open when that share passes.
        assert_eq!(code, 0, "shard {}: {out}", k + 1);
        assert!(
            !tests.is_empty(),
            "4 tests over 3 shards: each takes one: {out}"
        );
        all.extend(tests);
    }
    all.sort();
    assert_eq!(
        all,
        ["SYN-001", "SYN-003", "SYN-004", "SYN-005"],
        "each test once"
    );
    // The same split every time (every shard computes it alone).
    let (_, _, again) = shard(&repo, "1/3", &repo.root.join("target/again"));
    let (_, _, first) = shard(&repo, "1/3", &dirs[0]);
    assert_eq!(again, first);

    let d: Vec<&str> = dirs.iter().map(|p| p.to_str().unwrap()).collect();
    let (code, out) = repo.gate(&["--base", "base", "--merge", d[0], d[1], d[2]]);
    assert_eq!(code, 0, "the union opens the gate: {out}");
    for t in ["SYN-001", "SYN-003", "SYN-004", "SYN-005"] {
        assert!(
            out.contains(&format!("syn-v1/{t}: H1 (measured by shard")),
            "{t}: {out}"
        );
    }

    // A shard missing from the union: its tests stay stale, and the gate says so.
    let missing = shard(&repo, "1/3", &dirs[0]).2;
    let out = blocks(
        &repo,
        &["--base", "base", "--merge", d[1], d[2]],
        &["no shard ledger holds a record of it", "is STALE"],
    );
    assert!(out.contains(&format!("syn-v1/{}", missing[0])), "{out}");

    // Measurements edited in transit (re-signed by a key of the attacker's, put in the
    // shard's keys/): the verdict is re-derived from the clause's params and the edited
    // measurements... and a record the shard did not sign for this code does not verify.
    let rec = std::fs::read_dir(dirs[1].join("evidence/syn-v1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("0001.dsse.json");
    let bytes = std::fs::read(&rec).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let body = b64d(env["payload"].as_str().unwrap());
    let mut st: serde_json::Value = serde_json::from_slice(&body).unwrap();
    st["predicate"]["verdict"] = "H1".into();
    st["predicate"]["measurements"] = serde_json::json!({"forged": true});
    env["payload"] = common::repo::b64e(&serde_json::to_vec(&st).unwrap()).into();
    std::fs::write(&rec, serde_json::to_vec(&env).unwrap()).unwrap();
    blocks(
        &repo,
        &["--base", "base", "--merge", d[0], d[1], d[2]],
        &["its shard record does not verify"],
    );
    std::fs::write(&rec, &bytes).unwrap();

    // Records made for other code: the pull request changes again after the shards ran.
    std::fs::write(
        repo.root.join("engine/forward.rs"),
        "fn forward() { /* again */ }\n",
    )
    .unwrap();
    repo.commit("pr: another change");
    blocks(
        &repo,
        &["--base", "base", "--merge", d[0], d[1], d[2]],
        &["does not speak for this tree", "engine/forward.rs changed"],
    );
}
