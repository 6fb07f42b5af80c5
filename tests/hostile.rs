//! Model files and other inputs from strangers: each hostile input class of the README's
//! table, crafted from a valid synthetic model, gives a one-line exit-2 error naming the
//! format, the field and (where there is one) the place, without a panic, a hang, or memory
//! out of proportion to the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pv::apr::{AprFile, AprWriter};
use pv::gguf::{Array, GgmlType, GgufFile, GgufWriter, Value, ValueType};

/// A scratch directory for this test binary.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pv-hostile-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs pv, killing it after a minute (a hang is a failure, not a wait): exit code and
/// stderr.
fn pv(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pv"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("pv {args:?} hung for a minute");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The largest resident set of any child this process has waited for, in MiB.
fn children_peak_mib() -> u64 {
    // SAFETY: getrusage writes one rusage struct into the zeroed value we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    ru.ru_maxrss as u64 / 1024
}

/// Expects exit 2 with a one-line message containing every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let (code, err) = pv(args);
    assert_eq!(code, 2, "pv {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "pv {args:?}: {err:?} lacks {n:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// A GGUF file rebuilt from `f` with its metadata edited.
fn rebuild(f: &GgufFile, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Vec<u8> {
    let mut meta = f.metadata.clone();
    edit(&mut meta);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.meta(&k, v);
    }
    for t in &f.tensors {
        w.tensor(&t.name, &t.dims, t.ggml_type, f.tensor_data(t).to_vec())
            .unwrap();
    }
    w.to_bytes()
}

fn set(meta: &mut [(String, Value)], key: &str, v: Value) {
    meta.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

/// Sets tensor `name`'s data offset in a GGUF file's tensor table.
fn patch_offset(bytes: &mut [u8], f: &GgufFile, name: &str, offset: u64) {
    let t = f.tensor(name).unwrap();
    let mut pattern = (name.len() as u64).to_le_bytes().to_vec();
    pattern.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .unwrap();
    let off = at + pattern.len() + 4 + 8 * t.dims.len() + 4;
    bytes[off..off + 8].copy_from_slice(&offset.to_le_bytes());
}

/// An APR file rebuilt with its metadata edited.
fn rewrite_apr(bytes: Vec<u8>, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let f = AprFile::from_bytes(bytes).unwrap();
    let mut meta = f.metadata.clone();
    edit(&mut meta);
    let mut w = AprWriter::new(meta);
    for t in &f.tensors {
        w.tensor(&t.name, t.dtype, &t.dims, f.tensor_data(t).to_vec())
            .unwrap();
    }
    w.to_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

/// Every row of the README's hostile-input table. One test, run in order, so that the peak
/// resident set of the children (which only grows) is checked case by case.
#[test]
fn every_hostile_input_class_is_a_one_line_exit_2_with_bounded_memory() {
    let dir = scratch("table");
    let gguf = common::synthetic_model("llama", GgmlType::Q8_0, None);
    let apr = pv::model::gguf_to_apr(&gguf, pv::model::AprDtype::F32)
        .unwrap()
        .to_bytes();
    let ceiling_mib = 400;
    let check_memory = |case: &str| {
        let peak = children_peak_mib();
        assert!(
            peak < ceiling_mib,
            "{case}: a child reached {peak} MiB (ceiling {ceiling_mib})"
        );
    };

    // APR hyperparameters: the checks GGUF files get, named by APR field.
    let hyper = |field: &str, v: serde_json::Value| {
        let bytes = rewrite_apr(apr.clone(), |m| m["hyperparameters"][field] = v);
        write(&dir, &format!("{field}.apr"), &bytes)
    };
    for (field, v) in [
        ("n_head", serde_json::json!(0)),
        ("rope_dim", serde_json::json!(66)),
        ("rope_dim", serde_json::json!(63)),
        ("rope_dim", serde_json::json!(0)),
        ("rms_eps", serde_json::json!(0.0)),
        ("rms_eps", serde_json::json!(-1.0)),
        ("rope_theta", serde_json::json!(0.0)),
        ("rope_theta", serde_json::json!(-1.0)),
        ("n_layer", serde_json::json!(3)),
        ("n_layer", serde_json::json!(1u64 << 40)),
        ("vocab_size", serde_json::json!(7)),
    ] {
        let p = hyper(field, v.clone());
        let what = format!("metadata.hyperparameters.{field}");
        refused(&["trace", &p, "-p", "hi"], &["malformed APR", &what]);
        check_memory(&format!("APR {field} = {v}"));
    }

    // APR tokenizer metadata: the GGUF path's checks, named by APR field.
    for (field, v) in [
        ("merges", serde_json::json!(["h e"])),
        ("bos", serde_json::json!(1_000_000)),
        ("token_types", serde_json::json!([1, 1])),
        ("model", serde_json::json!("unigram")),
    ] {
        let bytes = rewrite_apr(apr.clone(), |m| m["tokenizer"][field] = v.clone());
        let p = write(&dir, &format!("tokenizer-{field}.apr"), &bytes);
        let what = format!("metadata.tokenizer.{field}");
        refused(&["trace", &p, "-p", "hi"], &["malformed APR", &what]);
    }

    // An APR file missing a tensor, and one under four bytes: APR errors, not GGUF ones.
    let missing = {
        let f = AprFile::from_bytes(apr.clone()).unwrap();
        let mut w = AprWriter::new(f.metadata.clone());
        for t in f.tensors.iter().filter(|t| t.name != "blk.1.ffn_up.weight") {
            w.tensor(&t.name, t.dtype, &t.dims, f.tensor_data(t).to_vec())
                .unwrap();
        }
        write(&dir, "missing.apr", &w.to_bytes())
    };
    refused(
        &["trace", &missing, "-p", "hi"],
        &["APR", "blk.1.ffn_up.weight"],
    );
    let tiny = write(&dir, "tiny.apr", b"AP");
    refused(&["trace", &tiny, "-p", "hi"], &["too short", "APR"]);

    // GGUF: a 64 MiB array of u8 in a valid file is shown, in memory near its size.
    let big = rebuild(&gguf, |m| {
        m.push((
            "junk.bytes".into(),
            Value::Array(Array::Scalars {
                ty: ValueType::U8,
                bytes: vec![7; 64 << 20],
            }),
        ))
    });
    let big = write(&dir, "big-array.gguf", &big);
    let (code, err) = pv(&["inspect", &big]);
    assert_eq!(code, 0, "{err}");
    check_memory("a 64 MiB u8 array");
    if std::env::var_os("PV_KEEP_HOSTILE").is_none() {
        let _ = std::fs::remove_file(&big);
    }

    // GGUF block_count far beyond the tensor table: refused before anything is sized by it.
    let blocks = rebuild(&gguf, |m| set(m, "llama.block_count", Value::U32(1 << 24)));
    let blocks = write(&dir, "blocks.gguf", &blocks);
    refused(
        &["trace", &blocks, "-p", "hi"],
        &["llama.block_count", "blk groups 0..=1"],
    );
    check_memory("block_count 2^24");

    // Two tensors sharing data.
    let mut overlap = gguf.bytes().to_vec();
    let target = gguf.tensor("blk.0.attn_q.weight").unwrap().offset;
    patch_offset(&mut overlap, &gguf, "blk.0.attn_k.weight", target);
    let overlap = write(&dir, "overlap.gguf", &overlap);
    refused(
        &["inspect", &overlap],
        &[
            "malformed GGUF",
            "blk.0.attn_k.weight",
            "overlaps",
            "blk.0.attn_q.weight",
        ],
    );

    // A corrupted vocabulary string: the merge that names it is reported by key and index.
    let vocab = rebuild(&gguf, |m| {
        let tokens = m
            .iter_mut()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .unwrap();
        let Value::Array(a) = &tokens.1 else { panic!() };
        let mut strs: Vec<Value> = a.iter().collect();
        let h = strs.iter().position(|v| v.as_str() == Some("h")).unwrap();
        strs[h] = Value::String("\u{e1}".into());
        *strs.last_mut().unwrap() = Value::String("he".into());
        tokens.1 = Value::array(ValueType::String, strs);
        set(
            m,
            "tokenizer.ggml.merges",
            Value::array(ValueType::String, vec![Value::String("h e".into())]),
        );
    });
    let vocab = write(&dir, "vocab.gguf", &vocab);
    refused(
        &["tokenize", &vocab, "hello"],
        &["tokenizer.ggml.merges", "element 0", "\"h\""],
    );

    // A directory, and a FIFO, given as the model: refused by type, without blocking.
    refused(&["inspect", dir.to_str().unwrap()], &["a directory"]);
    refused(
        &["trace", dir.to_str().unwrap(), "-p", "hi"],
        &["a directory"],
    );
    #[cfg(unix)]
    {
        let fifo = dir.join("fifo.gguf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        refused(&["inspect", fifo.to_str().unwrap()], &["a FIFO"]);
        refused(&["trace", fifo.to_str().unwrap(), "-p", "hi"], &["a FIFO"]);
    }
}

/// A contract that is a link to some other file: the error quotes a line of it, not the
/// whole file.
#[test]
fn a_contract_linked_to_another_file_is_not_echoed_whole() {
    let dir = scratch("link");
    let secret: String = (0..200)
        .map(|i| format!("user{i}:x:{i}:{i}::/home:/bin/sh "))
        .collect();
    std::fs::write(dir.join("secret.txt"), &secret).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("a.yaml")).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(dir.join("secret.txt"), dir.join("a.yaml")).unwrap();
    let (code, out, _) = common::pv_in(Some(&dir), &["validate", "a.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error[schema]"), "{out}");
    assert!(out.contains("characters)"), "{out}");
    assert!(
        out.len() < 600,
        "the file was echoed: {} bytes\n{out}",
        out.len()
    );
}

/// A record whose signature decodes to 63 or 65 bytes says so, not "not valid base64".
#[test]
fn a_signature_of_the_wrong_length_is_named_as_such() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use pv::evidence::dsse::{DsseError, Envelope, EnvelopeSignature, verify};
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    for n in [63usize, 65] {
        let env = Envelope {
            payload_type: pv::evidence::dsse::PAYLOAD_TYPE.into(),
            payload: STANDARD.encode(b"{}"),
            signatures: vec![EnvelopeSignature {
                keyid: pv::evidence::dsse::key_id(&key.verifying_key()),
                sig: STANDARD.encode(vec![1u8; n]),
            }],
        };
        let e = verify(&env, [&key.verifying_key()]).unwrap_err();
        assert_eq!(e, DsseError::SignatureLength(n));
        assert!(e.to_string().contains(&format!("{n} bytes")), "{e}");
    }
}
