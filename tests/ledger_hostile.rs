//! Hostile ledger files: any bytes in a head, record or key give a clean error (exit 1 or 2,
//! naming the file), never a panic or a hang; special files are refused by type without
//! being opened; a long chain verifies with each file hashed once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::repo::{SynRepo, b64d};
use pv::evidence::gate::{GateOptions, run};
use pv::evidence::layout::Layout;
use pv::evidence::{dsse, head, keys};
use pv::quant::synth::SplitMix;

/// `pv ARGS --root ROOT` with a deadline: exit code and output; a process still running
/// at the deadline is killed and fails the test (it blocked).
fn pv_within(repo: &SynRepo, args: &[&str], secs: u64) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pv"))
        .args(args)
        .arg("--root")
        .arg(&repo.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes while waiting, so a long report cannot stall the child.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.join().unwrap()).into_owned()
                    + &String::from_utf8_lossy(&err.join().unwrap()),
            );
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("pv {args:?} was still running after {secs} s: it blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    let ok = Command::new("mkfifo").arg(p).status().unwrap().success();
    assert!(ok, "mkfifo {}", p.display());
}

fn head_path(repo: &SynRepo) -> PathBuf {
    repo.root.join("evidence/syn-v1/SYN-001/head.json")
}

#[test]
fn a_head_with_non_ascii_digest_bytes_is_an_error_not_a_panic() {
    let repo = SynRepo::new("hostile-head");
    repo.discharge().unwrap();
    for head in [
        format!("{{\"sequence\": 1, \"sha256\": \"{}\"}}", "é".repeat(40)),
        "{\"sequence\": 18446744073709551615, \"sha256\": \"\"}".to_string(),
        "{\"payload\": \"\u{1F600}\", \"payloadType\": \"x\", \"signatures\": []}".to_string(),
    ] {
        std::fs::write(head_path(&repo), &head).unwrap();
        for args in [
            vec!["verify"],
            vec!["gate"],
            vec!["status"],
            vec![
                "discharge",
                "SYN-001",
                "--models",
                repo.models.to_str().unwrap(),
                "--key",
                repo.key.to_str().unwrap(),
            ],
        ] {
            let (code, out) = pv_within(&repo, &args, 60);
            assert!(
                code == 1 || (args[0] == "status" && code == 0),
                "{args:?} on {head}: exit {code}\n{out}"
            );
            if args[0] != "status" {
                assert!(out.contains("head.json"), "{args:?} names the file:\n{out}");
            }
        }
    }
}

#[test]
fn special_files_in_the_ledger_or_keys_are_refused_without_blocking() {
    let repo = SynRepo::new("hostile-fifo");
    repo.discharge().unwrap();
    let rec2 = repo.record(2);
    for (fifo, want_code, says) in [
        (
            head_path(&repo),
            1,
            "head.json: a FIFO, not a regular file; refused",
        ),
        (
            rec2.clone(),
            1,
            "0002.dsse.json: invalid record: unreadable: a FIFO, not a regular file; refused",
        ),
        (
            repo.root.join("keys/x.pub"),
            2,
            "keys/x.pub: a FIFO, not a regular file; refused",
        ),
    ] {
        let saved = std::fs::read(&fifo).ok();
        mkfifo(&fifo);
        for cmd in ["verify", "gate"] {
            let (code, out) = pv_within(&repo, &[cmd], 30);
            assert_eq!(code, want_code, "{cmd} with {}:\n{out}", fifo.display());
            assert!(out.contains(says), "{cmd}: expected {says:?}:\n{out}");
        }
        std::fs::remove_file(&fifo).unwrap();
        if let Some(b) = saved {
            std::fs::write(&fifo, b).unwrap();
        }
    }
    // A directory where a record should be, too.
    std::fs::create_dir_all(&rec2).unwrap();
    let (code, out) = pv_within(&repo, &["verify"], 30);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("a directory, not a regular file"), "{out}");
    assert_eq!(pv_within(&repo, &["verify"], 30).0, 1);
}

fn random_value(rng: &mut SplitMix) -> serde_json::Value {
    use serde_json::json;
    match rng.next_u64() % 12 {
        0 => json!(null),
        1 => json!(true),
        2 => json!(u64::MAX),
        3 => json!(-1),
        4 => json!(1e308),
        5 => json!(""),
        6 => json!("é\u{0}\u{202e}..//../etc/passwd"),
        7 => json!("/dev/zero"),
        8 => json!([]),
        9 => json!({}),
        10 => json!([[[[[[[[[[[[1]]]]]]]]]]]]),
        _ => json!("a".repeat(70)),
    }
}

/// Replaces a random node of `v` with a random value.
fn mutate_json(v: &mut serde_json::Value, rng: &mut SplitMix) {
    let mut node = v;
    loop {
        let children = match node {
            serde_json::Value::Object(m) => m.len(),
            serde_json::Value::Array(a) => a.len(),
            _ => 0,
        };
        if children == 0 || rng.next_u64().is_multiple_of(3) {
            *node = random_value(rng);
            return;
        }
        let i = (rng.next_u64() as usize) % children;
        node = match node {
            serde_json::Value::Object(m) => m.values_mut().nth(i).unwrap(),
            serde_json::Value::Array(a) => &mut a[i],
            _ => unreachable!(),
        };
    }
}

/// Flips, truncates, inserts or overwrites bytes.
fn mutate_bytes(b: &mut Vec<u8>, rng: &mut SplitMix) {
    for _ in 0..1 + rng.next_u64() % 4 {
        if b.is_empty() {
            b.push(rng.next_u64() as u8);
            continue;
        }
        let i = (rng.next_u64() as usize) % b.len();
        match rng.next_u64() % 4 {
            0 => b[i] ^= 1 << (rng.next_u64() % 8),
            1 => b.truncate(i),
            2 => b.insert(
                i,
                [b'"', b'{', 0xff, 0xc3, b'\\', b'9'][(rng.next_u64() % 6) as usize],
            ),
            _ => b[i] = rng.next_u64() as u8,
        }
    }
}

/// A seeded fuzz over heads, records and keys: raw byte mutations, and structural ones
/// re-signed with the trusted key (so the verifier's logic, not just its parser, sees
/// hostile values). Every outcome is a report or a typed error; a panic fails the test.
#[test]
fn fuzzed_heads_records_and_keys_give_clean_errors() {
    let repo = SynRepo::new("hostile-fuzz");
    repo.discharge().unwrap();
    repo.discharge().unwrap();
    let key = keys::load_signing_key(&repo.key).unwrap();
    let layout = Layout::at(&repo.root);
    let files = [
        repo.record(1),
        repo.record(2),
        head_path(&repo),
        repo.root.join("keys/tester.pub"),
    ];
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut rng = SplitMix(20261126);
    let (mut reports, mut errors) = (0, 0);
    for iter in 0..1200 {
        let which = (rng.next_u64() as usize) % files.len();
        let mut bytes = originals[which].clone();
        let structural = which < 3 && rng.next_u64().is_multiple_of(2);
        if structural {
            let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let ptype = env["payloadType"].as_str().unwrap().to_string();
            let mut body: serde_json::Value =
                serde_json::from_slice(&b64d(env["payload"].as_str().unwrap())).unwrap();
            mutate_json(&mut body, &mut rng);
            let signed = dsse::sign_typed(&ptype, &serde_json::to_vec(&body).unwrap(), &key);
            bytes = serde_json::to_vec_pretty(&signed).unwrap();
        } else {
            mutate_bytes(&mut bytes, &mut rng);
        }
        std::fs::write(&files[which], &bytes).unwrap();
        let opts = GateOptions {
            layout: &layout,
            base: None,
            accept_contract_changes: false,
            recheck: None,
            shard: None,
            merge: &[],
        };
        match run(&opts, iter % 2 == 0) {
            Ok(r) => {
                reports += 1;
                if bytes != originals[which] && which < 3 {
                    assert!(
                        !r.open,
                        "mutation {iter} of {} went unnoticed",
                        files[which].display()
                    );
                }
            }
            Err(e) => {
                errors += 1;
                assert!(!e.to_string().is_empty());
            }
        }
        std::fs::write(&files[which], &originals[which]).unwrap();
    }
    assert!(
        reports > 0 && errors > 0,
        "{reports} reports, {errors} errors"
    );
    // A trusted signer's head that names an absurd record is an invalid ledger, by CLI too.
    let h = head::sign(
        "syn-v1",
        "SYN-001",
        u64::MAX,
        &"0".repeat(64),
        "tester",
        &key,
    );
    std::fs::write(head_path(&repo), h).unwrap();
    let (code, out) = pv_within(&repo, &["verify"], 30);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("head.json names record 18446744073709551615"),
        "{out}"
    );
}

/// A chain of `n` records of SYN-001, signed by the tester: the first made by a real
/// discharge, the rest its statement renumbered and re-chained (what n discharges would
/// write, without running the checker n times).
fn chain(repo: &SynRepo, n: u64) {
    let d = repo.discharge().unwrap();
    let key = keys::load_signing_key(&repo.key).unwrap();
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&d.record).unwrap()).unwrap();
    let mut st: serde_json::Value =
        serde_json::from_slice(&b64d(env["payload"].as_str().unwrap())).unwrap();
    let mut prev = pv::evidence::sha256_file(&d.record).unwrap();
    let dir = d.record.parent().unwrap().to_path_buf();
    st["predicate"]["from_status"] = "DISCHARGED".into();
    for seq in 2..=n {
        st["predicate"]["sequence"] = seq.into();
        st["predicate"]["previous_record_sha256"] = prev.clone().into();
        let text =
            serde_json::to_string_pretty(&dsse::sign(&serde_json::to_vec(&st).unwrap(), &key))
                .unwrap()
                + "\n";
        std::fs::write(dir.join(format!("{seq:04}.dsse.json")), &text).unwrap();
        prev = pv::evidence::sha256_hex(text.as_bytes());
    }
    std::fs::write(
        dir.join("head.json"),
        head::sign("syn-v1", "SYN-001", n, &prev, "tester", &key),
    )
    .unwrap();
}

#[test]
fn a_thousand_records_verify_with_each_file_hashed_once() {
    let repo = SynRepo::new("hostile-long");
    chain(&repo, 1000);
    let (code, out) = pv_within(&repo, &["verify", "--format", "json"], 120);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["records"], 1000);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    // The model, its APR sibling, the contract file and the one covered file: four files,
    // hashed once each for a thousand records that all name them.
    assert_eq!(v["files_hashed"], 4, "{}", v["files_hashed"]);
    let (code, out) = pv_within(&repo, &["gate"], 120);
    assert_eq!(code, 0, "{out}");
}
