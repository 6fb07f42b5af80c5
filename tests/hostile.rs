//! Model files and other inputs from strangers: each hostile input class of the README's
//! table, crafted from a valid synthetic model, gives a one-line exit-2 error naming the
//! format, the field and (where there is one) the place, without a panic, a hang, or memory
//! out of proportion to the file.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pv::apr::{AprFile, AprWriter};
use pv::gguf::{Array, GgmlType, GgufFile, GgufWriter, Value, ValueType};

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
    rebuild_apr(bytes, edit, |_| true)
}

/// An APR file rebuilt with its metadata edited and only the tensors `keep` accepts.
fn rebuild_apr(
    bytes: Vec<u8>,
    edit: impl FnOnce(&mut serde_json::Value),
    keep: impl Fn(&pv::apr::AprTensor) -> bool,
) -> Vec<u8> {
    let f = AprFile::from_bytes(bytes).unwrap();
    let mut meta = f.metadata.clone();
    edit(&mut meta);
    let mut w = AprWriter::new(&meta).unwrap();
    for t in f.tensors.iter().filter(|t| keep(t)) {
        w.tensor(&t.name, t.dtype, &t.dims, f.tensor_data(t).to_vec())
            .unwrap();
    }
    w.to_bytes().unwrap()
}

/// `bytes` with the first `from` replaced by `to` (same length, so every offset holds).
fn patched(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not found"));
    let mut b = bytes.to_vec();
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
    b
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
    let tmp = common::scratch("hostile-table");
    let dir = tmp.path().to_path_buf();
    let gguf = common::synthetic_model("llama", GgmlType::Q8_0, None);
    let apr = pv::model::gguf_to_apr(&gguf, pv::model::AprDtype::F32)
        .unwrap()
        .to_bytes()
        .unwrap();
    let ceiling_mib = 400;
    let check_memory = |case: &str| {
        let peak = children_peak_mib();
        assert!(
            peak < ceiling_mib,
            "{case}: a child reached {peak} MiB (ceiling {ceiling_mib})"
        );
    };

    // APR hyper-parameters (aprender's flat keys): the checks GGUF files get, named by key.
    let hyper = |field: &str, v: serde_json::Value| {
        let bytes = rewrite_apr(apr.clone(), |m| m[field] = v);
        write(&dir, &format!("{field}.apr"), &bytes)
    };
    for (field, v) in [
        ("num_heads", serde_json::json!(0)),
        ("rope_dim", serde_json::json!(66)),
        ("rope_dim", serde_json::json!(63)),
        ("rope_dim", serde_json::json!(0)),
        ("rms_norm_eps", serde_json::json!(0.0)),
        ("rms_norm_eps", serde_json::json!(-1.0)),
        ("rope_theta", serde_json::json!(0.0)),
        ("rope_theta", serde_json::json!(-1.0)),
        ("num_layers", serde_json::json!(3)),
        ("num_layers", serde_json::json!(1u64 << 40)),
        ("vocab_size", serde_json::json!(7)),
        ("hidden_size", serde_json::json!("256")),
        ("architecture", serde_json::json!("mamba")),
    ] {
        let p = hyper(field, v.clone());
        let what = format!("metadata.{field}");
        refused(&["trace", &p, "-p", "hi"], &["malformed APR", &what]);
        check_memory(&format!("APR {field} = {v}"));
    }
    // A required key missing, and an alias that contradicts its key (realizar's readers
    // would take one or the other).
    let p = write(
        &dir,
        "no-heads.apr",
        &rewrite_apr(apr.clone(), |m| {
            m.as_object_mut().unwrap().remove("num_heads");
        }),
    );
    refused(
        &["trace", &p, "-p", "hi"],
        &["metadata.num_heads", "missing"],
    );
    let p = write(
        &dir,
        "alias.apr",
        &rewrite_apr(apr.clone(), |m| m["hidden_dim"] = serde_json::json!(128)),
    );
    refused(
        &["trace", &p, "-p", "hi"],
        &["metadata.hidden_size", "hidden_dim gives 128"],
    );

    // APR tokenizer metadata: the GGUF path's checks, named by aprender's key.
    for (field, v) in [
        ("tokenizer.merges", serde_json::json!(["h e"])),
        ("tokenizer.bos_token_id", serde_json::json!(1_000_000)),
        ("tokenizer.token_type", serde_json::json!([1, 1])),
        ("tokenizer.model", serde_json::json!("unigram")),
        ("tokenizer.vocabulary", serde_json::json!("abc")),
    ] {
        let bytes = rewrite_apr(apr.clone(), |m| m[field] = v.clone());
        let p = write(&dir, &format!("{field}.apr"), &bytes);
        let what = format!("metadata.{field}");
        refused(&["trace", &p, "-p", "hi"], &["malformed APR", &what]);
    }

    // pv's first dialect (nested metadata, GGML ids), still read, checked the same way and
    // named by its own fields.
    let legacy = common::fixture("apr/legacy-llama.keep.apr");
    let p = write(
        &dir,
        "legacy-heads.apr",
        &patched(&legacy, "\"n_head\":4", "\"n_head\":0"),
    );
    refused(
        &["trace", &p, "-p", "hi"],
        &["malformed APR", "metadata.hyperparameters.n_head"],
    );

    // An APR file missing a tensor, one with a tensor pv does not know, one naming the LM
    // head twice, a weight of a type that cannot hold weights, and one under four bytes: APR
    // errors, not GGUF ones.
    let missing = rebuild_apr(apr.clone(), |_| {}, |t| t.name != "blk.1.ffn_up.weight");
    let missing = write(&dir, "missing.apr", &missing);
    refused(
        &["trace", &missing, "-p", "hi"],
        &["APR", "blk.1.ffn_up.weight", "missing"],
    );
    let f = AprFile::from_bytes(apr.clone()).unwrap();
    let head = f.tensor("lm_head.weight").unwrap();
    let extra = |name: &str, dims: &[u64], data: Vec<u8>| {
        let mut w = AprWriter::new(&f.metadata).unwrap();
        for t in &f.tensors {
            w.tensor(&t.name, t.dtype, &t.dims, f.tensor_data(t).to_vec())
                .unwrap();
        }
        w.tensor(name, head.dtype, dims, data).unwrap();
        w.to_bytes().unwrap()
    };
    let twice = extra("output.weight", &head.dims, f.tensor_data(head).to_vec());
    let twice = write(&dir, "twice.apr", &twice);
    refused(
        &["trace", &twice, "-p", "hi"],
        &["output.weight", "names the same weight as lm_head.weight"],
    );
    let unknown = write(
        &dir,
        "unknown.apr",
        &extra("blk.0.attn_o_gate.weight", &[1, 4], vec![0; 16]),
    );
    refused(
        &["trace", &unknown, "-p", "hi"],
        &["blk.0.attn_o_gate.weight", "not a tensor of a llama model"],
    );
    let mut w = AprWriter::new(&f.metadata).unwrap();
    for t in &f.tensors {
        let (dtype, data) = if t.name == "blk.0.ffn_up.weight" {
            // The same bytes as half as many f64 values, dims adjusted.
            (pv::apr::DType::F64, f.tensor_data(t).to_vec())
        } else {
            (t.dtype, f.tensor_data(t).to_vec())
        };
        let mut dims = t.dims.clone();
        if dtype == pv::apr::DType::F64 {
            dims[1] /= 2;
        }
        w.tensor(&t.name, dtype, &dims, data).unwrap();
    }
    let f64s = write(&dir, "f64.apr", &w.to_bytes().unwrap());
    refused(&["trace", &f64s, "-p", "hi"], &["blk.0.ffn_up.weight"]);
    let tiny = write(&dir, "tiny.apr", b"AP");
    refused(&["trace", &tiny, "-p", "hi"], &["too short", "APR"]);

    // The container: a column-major or compressed file, a footer that does not match, and
    // aprender's own quantized blocks cut short.
    let mut flagged = apr.clone();
    flagged[6..8].copy_from_slice(&0x0c00u16.to_le_bytes());
    let crc = {
        let mut c = crc32fast::Hasher::new();
        c.update(&flagged[..40]);
        c.update(&flagged[44..64]);
        c.finalize()
    };
    flagged[40..44].copy_from_slice(&crc.to_le_bytes());
    let p = write(&dir, "column-major.apr", &flagged);
    refused(
        &["inspect", &p],
        &["malformed APR", "`flags`", "column-major", "LAYOUT-002"],
    );
    let mut foot = apr.clone();
    let at = foot.len() - 100;
    foot[at] ^= 0x40;
    let p = write(&dir, "footer.apr", &foot);
    refused(
        &["trace", &p, "-p", "hi"],
        &["malformed APR", "`footer_crc32`"],
    );
    let quantized = common::aprender_quantized(&gguf);
    let q = AprFile::from_bytes(quantized.clone()).unwrap();
    let q4 = q
        .tensors
        .iter()
        .find(|t| t.dtype == pv::apr::DType::AprQ4)
        .unwrap();
    let short = rebuild_apr(quantized.clone(), |_| {}, |t| t.name != q4.name);
    let mut w = AprWriter::new(&q.metadata).unwrap();
    let sf = AprFile::from_bytes(short).unwrap();
    for t in &sf.tensors {
        w.tensor(&t.name, t.dtype, &t.dims, sf.tensor_data(t).to_vec())
            .unwrap();
    }
    let mut dims = q4.dims.clone();
    dims[0] += 1; // one row more than the blocks hold
    let err = w
        .tensor(&q4.name, q4.dtype, &dims, q.tensor_data(q4).to_vec())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&q4.name) && err.contains("APR_Q4"), "{err}");
    // The same cut made in the file's bytes (size field left as it was): refused on read.
    let at = quantized
        .windows(q4.name.len())
        .position(|w| w == q4.name.as_bytes())
        .unwrap()
        + q4.name.len()
        + 2;
    let mut cut = quantized.clone();
    cut[at..at + 8].copy_from_slice(&(q4.dims[0] + 1).to_le_bytes());
    let crc = crc32fast::hash(&cut[..cut.len() - 4]);
    let n = cut.len();
    cut[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let p = write(&dir, "q4-short.apr", &cut);
    refused(&["inspect", &p], &["malformed APR", "size", "APR_Q4"]);
    check_memory("the container cases");

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
    let tmp = common::scratch("hostile-link");
    let dir = tmp.path().to_path_buf();
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
