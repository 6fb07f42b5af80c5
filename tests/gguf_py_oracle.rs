//! pv's dequantization against an independent implementation: the `gguf` package from PyPI
//! (installed by `.ci/run`) dequantizes every tensor of the real models and of a synthetic
//! model holding every format; pv must agree bit for bit, or within 1 ulp where the order of
//! float operations may differ.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use pv::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use pv::quant::{
    dequantize,
    synth::{SplitMix, random_row},
};

fn ulps(a: f32, b: f32) -> u32 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return u32::MAX;
    }
    a.to_bits().abs_diff(b.to_bits())
}

/// Compares every tensor of `path`; returns the types seen.
fn check_against_gguf_py(path: &Path) -> Vec<GgmlType> {
    let file = GgufFile::open(path).unwrap();
    let mut child = Command::new("python3")
        .arg(common::root().join("tests/oracle/gguf_dequant.py"))
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with the gguf package (pip install gguf)");
    let mut r = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    let mut compared = 0;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let head: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("oracle output {line:?}: {e}"));
        let name = head["name"].as_str().unwrap();
        let info = file
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} not in pv's table"));
        let n = head["n"].as_i64().unwrap();
        assert!(
            n >= 0,
            "gguf-py could not dequantize {name} ({})",
            head["type"]
        );
        assert_eq!(n as u64, info.n_elements(), "{name}: element count");
        let mut bytes = vec![0u8; n as usize * 4];
        r.read_exact(&mut bytes).unwrap();
        let ours = dequantize(info.ggml_type, file.tensor_data(info), n as usize).unwrap();
        let mut worst = 0;
        for (i, (c, &a)) in bytes.chunks_exact(4).zip(&ours).enumerate() {
            let b = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let u = ulps(a, b);
            assert!(
                u <= 1,
                "{name} ({}) value {i}: pv {a} vs gguf-py {b}",
                info.ggml_type
            );
            worst = worst.max(u);
        }
        if !seen.contains(&info.ggml_type) {
            seen.push(info.ggml_type);
        }
        compared += 1;
    }
    assert!(
        child.wait().unwrap().success(),
        "gguf-py oracle failed on {}",
        path.display()
    );
    assert_eq!(compared, file.tensors.len(), "every tensor compared");
    seen.sort();
    seen
}

#[test]
fn smollm2_every_tensor_matches_gguf_py() {
    let Some(p) = common::smollm2() else { return };
    assert_eq!(
        check_against_gguf_py(&p),
        vec![GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0]
    );
}

#[test]
fn gemma3_kquants_match_gguf_py() {
    let Some(p) = common::real_model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let seen = check_against_gguf_py(&p);
    for t in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
    ] {
        assert!(seen.contains(&t), "{t} not seen in {seen:?}");
    }
}

/// Every weight format gguf-py implements (it has no Q8_1 or Q8_K dequantizer: those are
/// activation formats, covered by pv's own round-trip tests).
#[test]
fn synthetic_model_of_every_format_matches_gguf_py() {
    let formats = GgmlType::WEIGHTS;
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("synthetic".into()));
    let mut rng = SplitMix(2024);
    for (i, ty) in formats.iter().enumerate() {
        for (j, scale) in [0.02f32, 1.0, 300.0].iter().enumerate() {
            let (cols, rows) = (512, 3);
            let data: Vec<u8> = (0..rows)
                .flat_map(|_| random_row(*ty, cols, *scale, &mut rng))
                .collect();
            w.tensor(
                &format!("t{i}.{j}.{}", ty.name()),
                &[cols as u64, rows as u64],
                *ty,
                data,
            )
            .unwrap();
        }
    }
    let tmp = common::scratch("synth");
    let dir = tmp.path().to_path_buf();
    let path = dir.join("every-format.gguf");
    w.write(&path).unwrap();
    let mut seen = check_against_gguf_py(&path);
    let mut want = formats.to_vec();
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
}
