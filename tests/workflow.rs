//! The pull-request workflow as written, checked without running it:
//! `scripts/run-workflow.py --check` orders its jobs, expands the shard matrix, evaluates its
//! expressions and refuses any action it could not run; this test then holds the plan to
//! what the gate needs (every shard once, artifacts that the gate job collects, the merge)
//! and every pv command the workflow runs to pv's own command line. The workflow itself is
//! run, on an honest and a buggy pull request, by `scripts/workflow-check.sh` (the longer
//! suite).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

fn python_with_yaml() -> bool {
    Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn plan(workflow: &str) -> (i32, String, String) {
    let root = common::root();
    let out = Command::new("python3")
        .arg(root.join("scripts/run-workflow.py"))
        .arg(workflow)
        .args([
            "--repo",
            root.to_str().unwrap(),
            "--base",
            "HEAD",
            "--head",
            "HEAD",
            "--check",
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn runs(job: &Value) -> Vec<String> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_gate_workflow_shards_once_each_and_merges_what_the_shards_upload() {
    if !python_with_yaml() {
        return common::skip("python3 with PyYAML", "pip install pyyaml==6.0.3");
    }
    let wf = common::root().join(".github/workflows/pv-gate.yml");
    let (code, out, err) = plan(wf.to_str().unwrap());
    assert_eq!(code, 0, "the runner refuses the workflow: {err}");
    let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let shards: Vec<&Value> = jobs.iter().filter(|j| j["job"] == "recheck").collect();
    let gate: Vec<&Value> = jobs.iter().filter(|j| j["job"] == "gate").collect();
    assert_eq!(gate.len(), 1);
    let gate = gate[0];
    assert_eq!(
        jobs.last().unwrap()["job"],
        "gate",
        "the gate job runs last"
    );
    assert_eq!(gate["needs"], serde_json::json!(["recheck"]));
    assert_eq!(
        gate["if"], "always()",
        "the gate judges even when a shard failed"
    );

    // SHARDS is the matrix's size, and each shard re-checks its own K of N, once.
    let n: usize = shards[0]["env"]["SHARDS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(shards.len(), n, "SHARDS matches the matrix");
    let mut ks = BTreeSet::new();
    let mut uploads = BTreeSet::new();
    for s in &shards {
        let k = s["matrix"]["shard"].as_u64().unwrap();
        ks.insert(k);
        let all = runs(s).join("\n");
        assert!(all.contains(&format!("--shard \"{k}/$SHARDS\"")), "{all}");
        assert!(
            all.contains("--discharge-stale --engine ./target/release/pv"),
            "{all}"
        );
        assert!(
            all.contains("fetch-models --dir"),
            "the models come from pv fetch-models: {all}"
        );
        for st in s["steps"].as_array().unwrap() {
            if st["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
            {
                assert_eq!(st["with"]["path"], "gate-results/");
                assert_eq!(st["if"], "always()", "a failing shard still uploads");
                uploads.insert(st["with"]["name"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(ks, (1..=n as u64).collect(), "every shard once");
    assert_eq!(uploads.len(), n, "one artifact per shard: {uploads:?}");

    // The gate job collects every shard's artifact into shards/ and merges them; it never
    // builds the pull request's code (only the judge, from the base).
    let dl: Vec<&Value> = gate["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| {
            st["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/download-artifact"))
        })
        .collect();
    assert_eq!(dl.len(), 1);
    let pattern = dl[0]["with"]["pattern"].as_str().unwrap();
    let prefix = pattern.strip_suffix('*').expect("a prefix pattern");
    assert!(
        uploads.iter().all(|u| u.starts_with(prefix)),
        "{pattern} collects {uploads:?}"
    );
    assert_eq!(dl[0]["with"]["path"], "shards");
    let all = runs(gate).join("\n");
    assert!(all.contains("--merge shards/*"), "{all}");
    assert!(
        !all.contains("cargo build --release --locked --bin pv\n"),
        "{all}"
    );
    for line in all.lines().filter(|l| l.contains("cargo build")) {
        assert!(
            line.contains("CARGO_HOME=\"$RUNNER_TEMP/judge-cargo\""),
            "{line}"
        );
    }

    // Every pv command and flag the workflow uses is one pv has.
    let mut checked = 0;
    for job in &jobs {
        let text = runs(job).join("\n").replace("\\\n", " ");
        for cmd in text.split("release/pv\"").skip(1) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let sub = words[0];
            let (code, help, _) = common::pv(&[sub, "--help"]);
            assert_eq!(code, 0, "pv {sub} is not a command");
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                assert!(help.contains(flag), "pv {sub} has no {flag}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked} flags checked");
}

#[test]
fn the_runner_refuses_an_action_it_cannot_run() {
    if !python_with_yaml() {
        return common::skip("python3 with PyYAML", "pip install pyyaml==6.0.3");
    }
    let dir = common::repo::fresh_dir("workflow");
    let wf = dir.join("w.yml");
    std::fs::write(
        &wf,
        "on: {pull_request: {}}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: someone/else@v1\n",
    )
    .unwrap();
    let (code, _, err) = plan(wf.to_str().unwrap());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot run: action someone/else@v1"), "{err}");
}
