//! The `pv` commands end to end: output formats and exit codes.

mod common;

use common::{pv, pv_env};

#[test]
fn malformed_model_is_exit_2_with_one_line_naming_the_field() {
    let tmp = common::scratch("cli");
    let dir = tmp.path().to_path_buf();
    let bad = dir.join("bad.gguf");
    std::fs::write(
        &bad,
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    for cmd in ["inspect", "tokenize", "run"] {
        let mut args = vec![cmd, bad.to_str().unwrap()];
        match cmd {
            "tokenize" => args.push("hi"),
            "run" => args.extend(["--prompt", "hi"]),
            _ => {}
        }
        let (code, _, err) = pv(&args);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("tensor_count") && err.contains("byte offset 8"),
            "{cmd}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
    }
    let (code, _, err) = pv(&[
        "run",
        dir.join("missing.gguf").to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = pv(&["run"]);
    assert_eq!(code, 2);
}

#[test]
fn json_outputs_on_the_real_model() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let m = path.to_str().unwrap();
    let (code, out, err) = pv(&["tokenize", m, "What is 2+2?", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<u32> = serde_json::from_str(&out).unwrap();
    assert_eq!(ids, [1780, 314, 216, 34, 27, 34, 47]);

    let (code, out, err) = pv(&[
        "run",
        m,
        "--prompt",
        "The capital of France is",
        "-n",
        "3",
        "--format",
        "json",
        "--threads",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["prompt_tokens"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(v["generated_tokens"], serde_json::json!([7042, 30, 198]));
    assert_eq!(v["text"], " Paris.\n");

    let (code, out, err) = pv(&["inspect", m, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["config"]["n_layer"], 30);
    assert_eq!(v["config"]["n_head_kv"], 3);
    assert_eq!(v["tokenizer"]["pre"], "smollm");
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);

    // A short `pv bench`, with extra arguments and environment.
    let bench = |extra: &[&str], env: &[(&str, &str)]| -> serde_json::Value {
        let mut args = vec![
            "bench",
            m,
            "--prompt-tokens",
            "4",
            "--gen-tokens",
            "2",
            "-r",
            "1",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--format", "json"]);
        let (code, out, err) = pv_env(env, &args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let v = bench(&[], &[]);
    assert!(
        v["pp_tokens_per_s"].as_f64().unwrap() > 0.0
            && v["tg_tokens_per_s"].as_f64().unwrap() > 0.0
    );
    assert_eq!(v["flavor"], "avx512");

    // A core that splits 512-bit operations in two (Zen 4; forced with PV_CPU=avx512-half)
    // never gets the table with two outputs per 512-bit register.
    let v = bench(&[], &[("PV_CPU", "avx512-half")]);
    assert_ne!(v["isa"], "avx512-vnni-wide");

    // As on a CPU without AVX-512, reproducing llama.cpp's AVX2 build: the settings say so.
    // With the roofline: SmolLM2's 30 layers multiply 576x576 (q, o), 576x192 (k, v) and
    // three 576x1536 matrices a token, and both shares are fractions of a measured peak.
    let v = bench(&["--flavor", "avx2", "--roofline"], &[("PV_CPU", "avx2")]);
    assert_eq!(v["flavor"], "avx2");
    let isa = v["isa"].as_str().unwrap();
    assert!(isa == "avx2" || isa == "portable", "PV_CPU=avx2 ran {isa}");
    assert_eq!(
        v["int8_macs_per_prompt_token"],
        30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    );
    let share = |k: &str| v[k].as_f64().unwrap();
    assert!(share("read_gb_per_s") > 0.0 && share("tg_share_of_read_bandwidth") > 0.0);
    if isa == "avx2" {
        assert!(share("int8_peak_macs_per_s") > 1e9, "{v}");
        assert!((0.0..1.0).contains(&share("pp_share_of_int8_peak")), "{v}");
    } else {
        assert!(
            v["int8_peak_macs_per_s"].is_null(),
            "portable has no int8 peak: {v}"
        );
    }
}

#[test]
fn trace_json_table_and_dump() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let m = path.to_str().unwrap();
    let (code, out, err) = pv(&["trace", m, "--prompt", "What is 2+2?", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let t: pv::trace::ForwardTrace = serde_json::from_str(&out).unwrap();
    assert_eq!(t.tokens, [1780, 314, 216, 34, 27, 34, 47]);
    assert_eq!(t.layers.len(), 30);

    let (code, out, err) = pv(&["trace", m, "--prompt", "What is 2+2?", "--layers", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("3 ")),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("4 ")),
        "{out}"
    );

    let tmp = common::scratch("trace");
    let dir = tmp.path().to_path_buf();
    let (code, _, err) = pv(&[
        "trace",
        m,
        "--prompt",
        "What is 2+2?",
        "--dump",
        dir.to_str().unwrap(),
        "--slots",
        "ffn_inner",
        "--layers",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let npy = std::fs::read(dir.join("ffn_inner-3.npy")).unwrap();
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert!(
        std::str::from_utf8(&npy[10..10 + hlen])
            .unwrap()
            .contains("(7, 1536)")
    );
    assert_eq!(npy.len(), 10 + hlen + 7 * 1536 * 4);

    let (code, _, err) = pv(&[
        "trace", m, "--prompt", "x", "--dump", "/tmp/x", "--slots", "ffn_innr",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ffn_innr"), "{err}");
    let (code, _, err) = pv(&["trace", m, "--prompt", "x", "--layers", "30"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn convert_then_trace_the_apr_file() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let tmp = common::scratch("convert");
    let dir = tmp.path().to_path_buf();
    let apr = dir.join("smollm2-keep.apr");
    let (code, _, err) = pv(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        apr.to_str().unwrap(),
        "--dtype",
        "keep",
        // Q4_1 and Q8_0 are not in aprender's type table: stored as f16.
        "--other",
        "f16",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pv(&[
        "trace",
        apr.to_str().unwrap(),
        "--prompt",
        "What is 2+2?",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let t: pv::trace::ForwardTrace = serde_json::from_str(&out).unwrap();
    assert_eq!((t.engine.as_str(), t.layers.len()), ("apr", 30));
    // A corrupted APR file is an input error naming the field.
    let mut bytes = std::fs::read(&apr).unwrap();
    bytes[41] ^= 0xff;
    std::fs::write(&apr, bytes).unwrap();
    let (code, _, err) = pv(&["trace", apr.to_str().unwrap(), "--prompt", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("crc32"), "{err}");
}

/// `pv diff` is usable in CI: exit 0 when every slot is within tolerance, 1 when one is not
/// (naming its slot and plain layer number), 2 for bad input.
#[test]
fn diff_exit_codes_and_the_first_divergent_slot() {
    let tmp = common::scratch("cli-diff");
    let dir = tmp.path().to_path_buf();
    let gguf = dir.join("syn.gguf");
    let model = common::synthetic_model("llama", pv::gguf::GgmlType::Q8_0, None);
    std::fs::write(&gguf, model.bytes()).unwrap();
    let apr = dir.join("syn.apr");
    let (code, _, err) = pv(&[
        "convert",
        gguf.to_str().unwrap(),
        "-o",
        apr.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (gguf.to_str().unwrap(), apr.to_str().unwrap());
    let (code, out, _) = pv(&["diff", a, b, "--prompt", "What is 2+2?"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every slot within the coarse limits"), "{out}");
    let svg = dir.join("diff.svg");
    let (code, out, _) = pv(&[
        "diff",
        a,
        b,
        "--prompt",
        "What is 2+2?",
        "--min-cosine",
        "1",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    assert!(
        drawn.contains("first outside limits: "),
        "the divergence is named in the plot"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("first slot outside limits: "))
        .expect("the first slot is named");
    let place = line.trim_start_matches("first slot outside limits: ");
    // A per-layer slot is drawn bold and named in the legend; a once-per-pass one (here the
    // Q8_0 embedding lookup) is named in the heading only.
    if let Some((slot, _)) = place.split_once(" at layer ") {
        assert!(drawn.contains(&format!("{slot} (outside)")), "{place}");
    }
    assert!(drawn.contains(place), "the heading names {place}");
    assert!(
        drawn.contains("other slots"),
        "the legend counts the faded rest"
    );
    assert!(
        place.contains(" at layer ") || ["embd", "final_norm", "logits"].contains(&place),
        "{line}"
    );
    assert!(!out.contains("Some("), "{out}");
    // Calibrated, layer-local limits: the intact pair is within them on held-out prompts,
    // and a zeroed channel is named with its slot, layer and channel.
    let cal = dir.join("cal.txt");
    std::fs::write(
        &cal,
        "# calibration\nWhat is 2+2?\nThe sky is\nOnce upon a time\n",
    )
    .unwrap();
    let held = dir.join("held.txt");
    std::fs::write(&held, "Hello there\n1, 2, 3,\n").unwrap();
    let limits = dir.join("limits.yaml");
    let (code, out, err) = pv(&[
        "calibrate",
        a,
        b,
        "--local",
        "--prompts",
        cal.to_str().unwrap(),
        "--check",
        held.to_str().unwrap(),
        "--margin",
        "4",
        "-o",
        limits.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("false alarms: 0 of 2 held-out prompts"),
        "{out}"
    );
    let table = std::fs::read_to_string(&limits).unwrap();
    assert!(
        table.contains("local: true") && table.contains("channel_err:"),
        "{table}"
    );
    let diff = |extra: &[&str]| {
        let mut args = vec!["diff", a, b, "--prompts", held.to_str().unwrap(), "--local"];
        args.extend(["--thresholds", limits.to_str().unwrap()]);
        args.extend(extra);
        pv(&args)
    };
    let (code, out, err) = diff(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every slot within limits"), "{out}");
    let (code, out, _) = diff(&["--fault", "v@1:zero-channel=3"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("first slot outside limits: v at layer 1"),
        "{out}"
    );
    assert!(out.contains("(channel 3)"), "{out}");
    // A table calibrated for one mode is refused for the other.
    let (code, _, err) = pv(&[
        "diff",
        a,
        b,
        "-p",
        "x",
        "--thresholds",
        limits.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = pv(&[
        "diff",
        a,
        dir.join("none.apr").to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert_eq!(code, 2);
}

/// `pv calibrate --save-measurements` keeps what it measured; `--measurements` derives the
/// same table from it without the models; a file that is not saved measurements is exit 2
/// naming its line.
#[test]
fn calibrate_saves_and_reuses_its_measurements() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let m = path.to_str().unwrap();
    let tmp = common::scratch("cli-cal");
    let dir = tmp.path().to_path_buf();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cal = file("cal.txt", "What is 2+2?\nHello there\nfn main() {}\n");
    let held = file("held.txt", "Hi\n");
    let saved = dir.join("saved.json");
    let (t1, t2) = (dir.join("t1.yaml"), dir.join("t2.yaml"));
    let (code, _, err) = pv(&[
        "calibrate",
        m,
        m,
        "--prompts",
        &cal,
        "--check",
        &held,
        "--false-alarm",
        "1e-3",
        "--save-measurements",
        saved.to_str().unwrap(),
        "-o",
        t1.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pv(&[
        "calibrate",
        "--measurements",
        saved.to_str().unwrap(),
        "--false-alarm",
        "1e-3",
        "-o",
        t2.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let table = std::fs::read_to_string(&t1).unwrap();
    assert!(table.contains("prediction:"), "{table}");
    assert_eq!(table, std::fs::read_to_string(&t2).unwrap());
    let bad = file("bad.json", "{\n  \"a\": 1\n}\n");
    let (code, _, err) = pv(&["calibrate", "--measurements", &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.json:") && err.contains("not saved measurements"),
        "{err}"
    );
    drop(tmp);
}
