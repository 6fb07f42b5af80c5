//! The engine protocol (`pv-engine/1`): pv speaks it itself (`pv engine-trace`), `pv trace
//! --engine` runs any engine that speaks it, answers that break it are refused naming how,
//! and realizar's adapter (`scripts/engines.sh realizar`) answers it from realizar's own
//! GGUF and APR paths.

mod common;

use std::path::{Path, PathBuf};

use pv::gguf::GgmlType;
use pv::trace::ForwardTrace;

/// The synthetic llama model and its APR conversion, in a scratch directory.
fn models(dir: &Path) -> (String, String) {
    let gguf = common::synthetic_model("llama", GgmlType::Q8_0, None);
    let g = dir.join("m.gguf");
    std::fs::write(&g, gguf.bytes()).unwrap();
    let a = dir.join("m.apr");
    pv::model::gguf_to_apr(&gguf, pv::model::AprDtype::F32)
        .unwrap()
        .write(&a)
        .unwrap();
    (g.display().to_string(), a.display().to_string())
}

fn trace_json(args: &[&str]) -> ForwardTrace {
    let (code, out, err) = common::pv(args);
    assert_eq!(code, 0, "pv {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// An executable script in `dir` that runs `body` (sh).
fn script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p.display().to_string()
}

#[test]
fn pv_is_an_engine_of_its_own_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (g, a) = models(dir.path());
    let pv = env!("CARGO_BIN_EXE_pv");
    for m in [&g, &a] {
        let own = trace_json(&["trace", m, "-p", "hello world", "--format", "json"]);
        let via = trace_json(&[
            "trace",
            m,
            "-p",
            "hello world",
            "--format",
            "json",
            "--engine",
            pv,
        ]);
        assert_eq!(own, via, "{m}: the same pass through the protocol");
        // Dumps through the protocol are the ones pv writes itself.
        let (d1, d2) = (dir.path().join("d1"), dir.path().join("d2"));
        for (d, engine) in [(&d1, "pv"), (&d2, pv)] {
            let (code, _, err) = common::pv(&[
                "trace",
                m,
                "-p",
                "hello world",
                "--dump",
                d.to_str().unwrap(),
                "--slots",
                "ffn_inner,logits",
                "--layers",
                "1",
                "--engine",
                engine,
            ]);
            assert_eq!(code, 0, "{err}");
        }
        let mut names: Vec<_> = std::fs::read_dir(&d1)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["ffn_inner-1.npy", "logits.npy"]);
        for n in names {
            assert_eq!(
                std::fs::read(d1.join(&n)).unwrap(),
                std::fs::read(d2.join(&n)).unwrap()
            );
        }
    }
}

#[test]
fn answers_that_break_the_protocol_are_refused_naming_how() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _) = models(dir.path());
    let pv = env!("CARGO_BIN_EXE_pv");
    // A real answer of pv's, for engines that tamper with it.
    let good = dir.path().join("good.json");
    let (_, out, _) = common::pv(&["trace", &g, "-p", "hi", "--format", "json"]);
    let trace: ForwardTrace = serde_json::from_str(&out).unwrap();
    std::fs::write(&good, serde_json::to_string(&trace).unwrap()).unwrap();
    let good = good.display();
    let cases: [(&str, String, i32, &str); 7] = [
        (
            "refuses",
            "echo 'error: no such tensor' >&2; exit 2".into(),
            2,
            "refused",
        ),
        (
            "crashes",
            "echo 'boom' >&2; exit 3".into(),
            1,
            "exit 3: boom",
        ),
        ("babbles", "echo hello".into(), 1, "is not a pv trace"),
        (
            "wrong-tokens",
            format!("sed 's/\"tokens\":\\[[0-9,]*\\]/\"tokens\":[1]/' {good}"),
            1,
            "traced 1 tokens",
        ),
        (
            "anonymous",
            format!("sed 's/\"engine\":\"gguf\"/\"engine\":\" \"/' {good}"),
            1,
            "does not name the engine",
        ),
        (
            "bad-dump",
            format!(
                "cat {good}; while [ $# -gt 0 ]; do [ \"$1\" = --dump ] && mkdir -p \"$2\" && \
                 printf junk > \"$2/logits.npy\"; shift; done"
            ),
            1,
            "dump logits.npy",
        ),
        ("sleeps", "sleep 30".into(), 1, "no answer in 1 s"),
    ];
    for (name, body, code, says) in cases {
        let engine = script(dir.path(), name, &body);
        let mut args = vec!["trace", g.as_str(), "-p", "hi", "--engine", engine.as_str()];
        if name == "bad-dump" {
            args.extend(["--dump", "/tmp/pv-engines-unused", "--slots", "logits"]);
        }
        let out = std::process::Command::new(pv)
            .args(&args)
            .env("PV_ENGINE_TIMEOUT", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(says) && err.contains(&engine), "{name}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Engines by name: unknown, and known but not built here.
    let (code, _, err) = common::pv(&["trace", &g, "-p", "hi", "--engine", "vllm"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown engine") && err.contains("realizar"),
        "{err}"
    );
    let out = std::process::Command::new(pv)
        .args(["trace", &g, "-p", "hi", "--engine", "realizar"])
        .env("PV_ENGINE_REALIZAR", dir.path().join("nowhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("scripts/engines.sh realizar"), "{err}");
}

/// realizar's adapter, when built (`scripts/engines.sh realizar`; `scripts/test.sh` builds
/// it): its APR path on pv's file of SmolLM2 agrees with pv's f32 reference slot by slot; its
/// production GGUF path fuses the FFN's gate, up and activation, which it therefore does not
/// report, and nothing else is missing.
#[test]
fn realizar_answers_the_protocol_from_its_own_paths() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let Some(engine) = realizar() else {
        return;
    };
    let apr = gguf.with_extension("apr");
    if !apr.exists() {
        let (code, _, err) = common::pv(&[
            "convert",
            gguf.to_str().unwrap(),
            "-o",
            apr.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    let prompt = "What is 2+2?";
    let engine = engine.display().to_string();
    let pv_apr = trace_json(&[
        "trace",
        apr.to_str().unwrap(),
        "-p",
        prompt,
        "--format",
        "json",
    ]);
    let r_apr = trace_json(&[
        "trace",
        apr.to_str().unwrap(),
        "-p",
        prompt,
        "--format",
        "json",
        "--engine",
        &engine,
    ]);
    assert!(r_apr.engine.starts_with("realizar"), "{}", r_apr.engine);
    assert_eq!(r_apr.tokens, pv_apr.tokens);
    for (l, (a, b)) in pv_apr.layers.iter().zip(&r_apr.layers).enumerate() {
        for (slot, sa) in a.slots() {
            let sb = b
                .get(slot)
                .unwrap_or_else(|| panic!("realizar's APR path lacks {} at {l}", slot.name()));
            let rel = (sb.all.std / sa.all.std - 1.0).abs();
            assert!(
                rel < 1e-3,
                "layer {l} {}: std {} vs {}",
                slot.name(),
                sb.all.std,
                sa.all.std
            );
        }
    }
    assert_eq!(r_apr.logits.top_k[0].0, pv_apr.logits.top_k[0].0);
    let r_gguf = trace_json(&[
        "trace",
        gguf.to_str().unwrap(),
        "-p",
        prompt,
        "--format",
        "json",
        "--engine",
        &engine,
    ]);
    let pv_gguf = trace_json(&[
        "trace",
        gguf.to_str().unwrap(),
        "-p",
        prompt,
        "--format",
        "json",
    ]);
    let missing: Vec<&str> = pv_gguf.layers[0]
        .slots()
        .filter(|(s, _)| r_gguf.layers[0].get(*s).is_none())
        .map(|(s, _)| s.name())
        .collect();
    assert_eq!(missing, ["ffn_gate", "ffn_up", "ffn_act"]);
    assert_eq!(r_gguf.logits.top_k[0].0, pv_gguf.logits.top_k[0].0);
}

/// The built adapter, or `None` (a note) when it is not built; under `CI=true` it must be.
fn realizar() -> Option<PathBuf> {
    let p = common::root().join("target/engines/bin/pv-engine-realizar");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing under CI=true: scripts/test.sh builds it",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run scripts/engines.sh realizar)",
        p.display()
    );
    None
}
