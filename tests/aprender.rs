//! aprender's APR files, tested against aprender's own container crate (`apr-format`
//! 0.72.3, whose `AprV2Writer` is what `apr import` writes with):
//!
//! - files aprender's writer makes (a whole model with GGUF names as `apr import` lays out
//!   a llama-family GGUF, tied head copied; the same under Hugging Face names in aprender's
//!   own APR_Q8 and APR_Q4, for llama, qwen2 and gemma3) are read by pv, and traced equal to
//!   pv's own file of the same weights, to the bit;
//! - files pv writes are read by `AprV2Reader` with the typed fields right and every
//!   tensor's type, shape and bytes as written, and are what `AprV2Writer` writes for the
//!   same metadata and tensors (byte for byte when the metadata has one custom key; up to
//!   the order of the flattened keys, which `AprV2Writer` takes from a randomly seeded
//!   `HashMap`, otherwise);
//! - no type pv writes is read by aprender as another, and `--dtype keep` refuses the rest;
//! - files of pv's first dialect still read, to the bit.

mod common;

use std::collections::HashMap;

use apr_format::v2::{AprV2Metadata, AprV2Reader, AprV2Writer, TensorDType};
use pv::apr::{AprFile, AprWriter, AprenderMetadata, DType, Dialect, Footer};
use pv::gguf::{GgmlType, GgufFile};
use pv::model::{AprDtype, AprTransformer, ModelConfig, OwnedQuantizedModel, gguf_to_apr};
use pv::trace::{ForwardTrace, TracedForward};
use serde_json::{Value, json};

const TOKENS: [u32; 7] = [5, 77, 3, 140, 2, 9, 41];

/// A tensor's values, decoded by this test (not by pv) from the f32 bytes of `apr`.
fn f32s(apr: &AprFile, name: &str) -> Vec<f32> {
    let t = apr.tensor(name).unwrap();
    assert_eq!(t.dtype, DType::Ggml(GgmlType::F32));
    apr.tensor_data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn usizes(dims: &[u64]) -> Vec<usize> {
    dims.iter().map(|&d| d as usize).collect()
}

/// The typed fields `apr import` fills from a GGUF file (`write_apr_file`, f32 path), from
/// the model's own config, and the tokenizer keys its f32 path writes (no token types).
fn apr_import_metadata(
    gguf: &GgufFile,
    tensors: &[(String, Vec<usize>)],
    tied: bool,
) -> AprV2Metadata {
    let c = ModelConfig::try_from(gguf).unwrap();
    let mut custom: HashMap<String, Value> = HashMap::new();
    let shapes: serde_json::Map<String, Value> =
        tensors.iter().map(|(n, s)| (n.clone(), json!(s))).collect();
    custom.insert("tensor_shapes".into(), Value::Object(shapes));
    if tied {
        custom.insert("tied_embeddings".into(), json!(true));
    }
    let strings = |key: &str| -> Vec<String> {
        let a = gguf.get(key).and_then(|v| v.as_array()).unwrap();
        (0..a.len())
            .map(|i| a.str(i).unwrap().to_string())
            .collect()
    };
    let vocab = strings("tokenizer.ggml.tokens");
    custom.insert("tokenizer.vocab_size".into(), json!(vocab.len()));
    custom.insert("tokenizer.vocabulary".into(), json!(vocab));
    custom.insert("tokenizer.model_type".into(), json!("gpt2"));
    let merges = strings("tokenizer.ggml.merges");
    if !merges.is_empty() {
        custom.insert("tokenizer.merges".into(), json!(merges));
    }
    if let Some(p) = gguf.get("tokenizer.ggml.pre").and_then(|v| v.as_str()) {
        custom.insert("tokenizer.pre_type".into(), json!(p));
    }
    for (gguf_key, key) in [
        ("tokenizer.ggml.bos_token_id", "tokenizer.bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "tokenizer.eos_token_id"),
    ] {
        if let Some(id) = gguf.get(gguf_key).and_then(|v| v.as_u64()) {
            custom.insert(key.into(), json!(id));
        }
    }
    custom.insert("tokenizer.architecture".into(), json!(c.arch.name()));
    AprV2Metadata {
        model_type: "Llama".into(),
        name: Some("model".into()),
        param_count: tensors
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum(),
        custom,
        architecture: Some(c.arch.name().into()),
        hidden_size: Some(c.n_embd),
        num_layers: Some(c.n_layer),
        num_heads: Some(c.n_head),
        num_kv_heads: Some(c.n_head_kv),
        vocab_size: Some(c.vocab_size),
        intermediate_size: Some(c.n_ff),
        max_position_embeddings: Some(c.context_length),
        rope_theta: Some(c.rope_theta),
        rope_type: Some(0),
        rms_norm_eps: Some(c.rms_eps),
        // aprender's GGUF import leaves it out.
        head_dim: None,
        ..Default::default()
    }
}

/// `gguf` as `apr import` writes a Q4_1 (or other non-K) llama-family GGUF: every tensor
/// dequantized to f32 under its GGUF name, dims outermost first, an `lm_head.weight` copy of
/// the embedding when the head is tied; written by aprender's `AprV2Writer`.
fn apr_import(gguf: &GgufFile) -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = gguf
        .tensors
        .iter()
        .map(|t| {
            let n = t.dims.iter().product::<u64>() as usize;
            let values = pv::quant::dequantize(t.ggml_type, gguf.tensor_data(t), n).unwrap();
            let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
            (t.name.clone(), shape, values)
        })
        .collect();
    let tied = gguf.tensor("output.weight").is_none();
    if tied {
        let (_, shape, values) = tensors.iter().find(|t| t.0 == "token_embd.weight").unwrap();
        tensors.push(("lm_head.weight".into(), shape.clone(), values.clone()));
    }
    let shapes: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    let mut w = AprV2Writer::new(apr_import_metadata(gguf, &shapes, tied));
    for (name, shape, values) in tensors {
        w.add_f32_tensor(name, shape, &values);
    }
    w.write().unwrap()
}

/// `bytes` read by aprender's reader and written again by its writer, the metadata
/// edited by `edit` on the way.
fn rewritten_by_aprender(bytes: &[u8], edit: impl FnOnce(&mut AprV2Metadata)) -> Vec<u8> {
    let r = AprV2Reader::from_bytes(bytes).unwrap();
    let mut meta = r.metadata().clone();
    edit(&mut meta);
    let mut w = AprV2Writer::new(meta);
    for name in r.tensor_names() {
        let e = r.get_tensor(name).unwrap();
        let data = r.get_tensor_data(name).unwrap().to_vec();
        w.add_tensor(name, e.dtype, e.shape.clone(), data);
    }
    w.write().unwrap()
}

fn trace(apr: &AprTransformer, tokens: &[u32]) -> (ForwardTrace, Vec<u32>) {
    let t = apr.forward_traced(tokens).unwrap();
    let bits = apr
        .forward(tokens)
        .unwrap()
        .data
        .iter()
        .map(|x| x.to_bits())
        .collect();
    (t, bits)
}

fn load(bytes: Vec<u8>) -> AprTransformer {
    AprTransformer::load(AprFile::from_bytes(bytes).unwrap()).unwrap()
}

#[test]
fn pv_reads_apr_import_files_and_traces_them_as_its_own() {
    for arch in ["llama", "qwen3", "gemma3"] {
        let gguf = common::synthetic_model(arch, GgmlType::Q8_0, None);
        let mut theirs = apr_import(&gguf);
        let mine = gguf_to_apr(&gguf, AprDtype::F32)
            .unwrap()
            .to_bytes()
            .unwrap();
        if arch == "gemma3" {
            // aprender's import drops Gemma's sliding window: pv reads such a file as
            // attending globally, and says so; with the window in the metadata it is the
            // same model.
            let m = load(theirs.clone());
            assert_eq!(m.config.sliding_window, 0);
            assert!(
                m.notes.iter().any(|n| n.contains("no sliding_window")),
                "{:?}",
                m.notes
            );
            theirs = rewritten_by_aprender(&theirs, |meta| {
                meta.custom
                    .insert("sliding_window".into(), json!(common::GEMMA_WINDOW));
            });
        }
        let f = AprFile::from_bytes(theirs.clone()).unwrap();
        assert_eq!(f.dialect, Dialect::Aprender);
        assert!(matches!(f.footer, Footer::Verified(_)));
        let (a, b) = (load(theirs), load(mine));
        assert_eq!(a.config, b.config, "{arch}: the same hyper-parameters");
        assert_eq!(trace(&a, &TOKENS), trace(&b, &TOKENS), "{arch}: to the bit");
        // aprender's import has no token types: normal text still tokenises alike.
        let enc = |m: &AprTransformer| {
            pv::tokenizer::Tokenizer::from_spec(m.tokenizer.as_ref().unwrap())
                .unwrap()
                .encode("hello world")
                .unwrap()
        };
        assert_eq!(enc(&a), enc(&b));
        if arch == "gemma3" {
            // Its head width (128) is not width / heads (64): inferred from attn_q, said so.
            assert!(
                a.notes.iter().any(|n| n.contains("head_dim 128 inferred")),
                "{:?}",
                a.notes
            );
            // aprender's GGUF import says rope_type 0 for every family but qwen2; Gemma
            // rotates halves, which pv runs, saying so.
            assert!(
                a.notes
                    .iter()
                    .any(|n| n.contains("rope_type 0 contradicts gemma3")),
                "{:?}",
                a.notes
            );
        }
    }
}

/// A file whose metadata says little more than the family (by its Hugging Face class name),
/// the heads and the epsilon: the widths, layer count, vocabulary and KV heads are read off
/// the tensor table, each said so, and the model is the same.
#[test]
fn what_the_tensor_table_says_need_not_be_in_the_metadata() {
    let gguf = common::synthetic_model("qwen2", GgmlType::Q8_0, None);
    let full = apr_import(&gguf);
    let sparse = rewritten_by_aprender(&full, |m| {
        m.hf_architecture = Some("Qwen2ForCausalLM".into());
        m.model_type = "Auto".into();
        (m.architecture, m.hidden_size, m.num_layers) = (None, None, None);
        (m.num_kv_heads, m.vocab_size, m.intermediate_size) = (None, None, None);
        m.rope_type = Some(2);
    });
    let (a, b) = (load(sparse), load(full));
    assert_eq!(a.config, b.config);
    for key in [
        "hidden_size 256",
        "num_layers 2",
        "intermediate_size 512",
        "num_kv_heads 2",
    ] {
        assert!(
            a.notes.iter().any(|n| n.starts_with(key)),
            "{key}: {:?}",
            a.notes
        );
    }
    assert_eq!(trace(&a, &TOKENS), trace(&b, &TOKENS));
}

/// `apr import` of SmolLM2 Q4_1 as aprender writes it: pv's trace of it is pv's trace of
/// its own conversion, to the bit.
#[test]
fn smollm2_imported_by_aprenders_writer_traces_as_pvs_own_file() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let gguf = OwnedQuantizedModel::open(&path).unwrap();
    let theirs = apr_import(gguf.file());
    // aprender's reader agrees on what it wrote.
    let r = AprV2Reader::from_bytes(&theirs).unwrap();
    assert_eq!(r.metadata().num_layers, Some(30));
    let b = load(
        gguf_to_apr(gguf.file(), AprDtype::F32)
            .unwrap()
            .to_bytes()
            .unwrap(),
    );
    let tokens = [1780u32, 314, 216, 34, 27, 34, 47];
    assert_eq!(trace(&load(theirs.clone()), &tokens), trace(&b, &tokens));
    drop(b);
    // The seed's test, FFN-GGUF-003, measures the same on aprender's file as on pv's.
    let dir = tempfile::tempdir().unwrap();
    let name = path.file_name().unwrap();
    std::os::unix::fs::symlink(&path, dir.path().join(name)).unwrap();
    std::fs::write(dir.path().join("SmolLM2-135M-Instruct.Q4_1.apr"), &theirs).unwrap();
    drop(theirs);
    let params = json!({"model": {"file": name.to_str().unwrap(),
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        "prompt": "What is 2+2?", "layer": 3, "slot": "ffn_inner", "band": [0.5, 2.0]})
    .to_string();
    let measure = |models: &std::path::Path| -> Value {
        let (code, out, err) = common::pv(&[
            "measure",
            "--checker",
            "apr_gguf_std_ratio",
            "--params",
            &params,
            "--models",
            models.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()["measurements"].clone()
    };
    // (pv's own file is made in models/ when absent, as a discharge would.)
    let theirs = measure(dir.path());
    assert_eq!(theirs["apr_tokenizer_agrees"], true);
    assert_eq!(theirs, measure(path.parent().unwrap()));
}

/// The Hugging Face name of a GGUF name in `arch`: the Gemma norms differ from llama's.
fn hf(arch: &str, gguf: &str) -> String {
    if arch == "gemma3" {
        for (g, h) in [
            (
                "post_attention_norm.weight",
                "post_attention_layernorm.weight",
            ),
            ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
            ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
        ] {
            if let Some(l) = gguf.strip_prefix("blk.").and_then(|r| r.strip_suffix(g)) {
                return format!("model.layers.{l}{h}");
            }
        }
    }
    common::hf_name(gguf)
}

/// aprender's APR_Q4 and APR_Q8 decoded by this test, as `aprender-core`'s
/// `AprV2DequantExt` decodes them (scale clamp included).
fn aprender_decode(dtype: TensorDType, data: &[u8], n: usize) -> Vec<f32> {
    match dtype {
        TensorDType::AprQ8 => {
            let scale = f32::from_le_bytes(data[..4].try_into().unwrap());
            data[4..]
                .iter()
                .map(|&b| f32::from(b as i8) * scale)
                .collect()
        }
        TensorDType::AprQ4 => {
            let mut out = Vec::with_capacity(n);
            for block in data.chunks(18) {
                let s = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                let s = if s.is_finite() && s.abs() >= 6.1e-5 {
                    s
                } else {
                    0.0
                };
                for i in 0..32.min(n - out.len()) {
                    let byte = block[2 + i / 2];
                    let nib = if i % 2 == 0 { byte & 15 } else { byte >> 4 };
                    out.push(f32::from(nib as i8 - 8) * s);
                }
            }
            out
        }
        TensorDType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => panic!("{other} not expected here"),
    }
}

#[test]
fn aprenders_own_quantized_files_under_hf_names_trace_as_the_same_weights_in_f32() {
    for arch in ["llama", "qwen2", "gemma3"] {
        let gguf = common::synthetic_model(arch, GgmlType::Q8_0, None);
        let mine = AprFile::from_bytes(
            gguf_to_apr(&gguf, AprDtype::F32)
                .unwrap()
                .to_bytes()
                .unwrap(),
        )
        .unwrap();
        // aprender's file: HF names, the typed fields under realizar's aliases where it has
        // them, attention matrices APR_Q8, FFN matrices APR_Q4, the rest f32.
        let mut meta: AprV2Metadata = serde_json::from_value(mine.metadata.clone()).unwrap();
        meta.num_layers = None;
        meta.custom.insert(
            "num_hidden_layers".into(),
            json!(mine.metadata["num_layers"]),
        );
        meta.custom.remove("tensor_shapes");
        let mut theirs = AprV2Writer::new(meta);
        // pv's file of the same weights: the values aprender's format keeps, in f32.
        let mut same = AprWriter::new(&mine.metadata).unwrap();
        for t in &mine.tensors {
            let v = f32s(&mine, &t.name);
            let shape = usizes(&t.dims);
            let name = hf(arch, &t.name);
            if t.dims.len() == 2 && t.name.contains("attn_") {
                theirs.add_q8_tensor(name.clone(), shape.clone(), &v);
            } else if t.dims.len() == 2 && t.name.contains("ffn_") {
                theirs.add_q4_tensor(name.clone(), shape.clone(), &v);
            } else {
                theirs.add_f32_tensor(name.clone(), shape.clone(), &v);
            }
            let _ = name;
        }
        let theirs = theirs.write().unwrap();
        let r = AprV2Reader::from_bytes(&theirs).unwrap();
        for t in &mine.tensors {
            let name = hf(arch, &t.name);
            let e = r.get_tensor(&name).unwrap();
            let data = r.get_tensor_data(&name).unwrap();
            let v = aprender_decode(e.dtype, data, e.element_count());
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            same.tensor(&t.name, t.dtype, &t.dims, bytes).unwrap();
        }
        let f = AprFile::from_bytes(theirs.clone()).unwrap();
        let kinds: Vec<DType> = f.tensors.iter().map(|t| t.dtype).collect();
        assert!(kinds.contains(&DType::AprQ4) && kinds.contains(&DType::AprQ8));
        let (a, b) = (load(theirs), load(same.to_bytes().unwrap()));
        assert_eq!(a.config, b.config, "{arch}");
        // HF names say nothing of a llama's q/k row order: said, for llama only.
        let said = a.notes.iter().any(|n| n.contains("q/k rows"));
        assert_eq!(said, arch == "llama", "{arch}: {:?}", a.notes);
        assert_eq!(trace(&a, &TOKENS), trace(&b, &TOKENS), "{arch}: to the bit");
    }
}

#[test]
fn pvs_aprender_block_encoders_are_aprenders() {
    let values: Vec<f32> = (0..700)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
        .collect();
    let mut w = AprV2Writer::new(AprV2Metadata::new("t"));
    w.add_q4_tensor("q4", vec![7, 100], &values);
    w.add_q8_tensor("q8", vec![7, 100], &values);
    let bytes = w.write().unwrap();
    let r = AprV2Reader::from_bytes(&bytes).unwrap();
    assert_eq!(
        r.get_tensor_data("q4").unwrap(),
        pv::quant::aprq::quantize_q4(&values)
    );
    assert_eq!(
        r.get_tensor_data("q8").unwrap(),
        pv::quant::aprq::quantize_q8(&values)
    );
}

/// Reads pv's file with aprender's reader and checks what it sees.
fn aprender_sees(bytes: &[u8], config: &ModelConfig) {
    let r = AprV2Reader::from_bytes(bytes).unwrap();
    assert!(r.header().flags.is_row_major());
    let m = r.metadata();
    assert_eq!(m.architecture.as_deref(), Some(config.arch.name()));
    assert_eq!(
        (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads),
        (
            Some(config.n_embd),
            Some(config.n_layer),
            Some(config.n_head),
            Some(config.n_head_kv)
        )
    );
    assert_eq!(
        (
            m.vocab_size,
            m.intermediate_size,
            m.max_position_embeddings,
            m.head_dim
        ),
        (
            Some(config.vocab_size),
            Some(config.n_ff),
            Some(config.context_length),
            Some(config.head_dim)
        )
    );
    assert_eq!(
        (m.rope_theta, m.rms_norm_eps),
        (Some(config.rope_theta), Some(config.rms_eps))
    );
    let halves = config.arch.rope_style() == pv::model::RopeStyle::Halves;
    assert_eq!(m.rope_type, Some(if halves { 2 } else { 0 }));
    assert_eq!(
        m.custom["tokenizer.vocabulary"].as_array().map(Vec::len),
        Some(config.vocab_size)
    );
    // One spelling per value: an alias beside its key makes realizar's metadata parse fail.
    for alias in [
        "hidden_dim",
        "num_hidden_layers",
        "num_attention_heads",
        "n_vocab",
        "context_length",
    ] {
        assert!(!m.custom.contains_key(alias), "{alias}");
    }
    // Every tensor as pv wrote it: type (by aprender's own name), shape and bytes.
    let f = AprFile::from_bytes(bytes.to_vec()).unwrap();
    assert_eq!(r.tensor_names().len(), f.tensors.len());
    for t in &f.tensors {
        let e = r.get_tensor(&t.name).unwrap();
        assert_eq!(e.dtype.to_string(), t.dtype.name(), "{}", t.name);
        assert_eq!(e.shape, usizes(&t.dims), "{}", t.name);
        assert_eq!(
            r.get_tensor_data(&t.name).unwrap(),
            f.tensor_data(t),
            "{}",
            t.name
        );
    }
    // The footer aprender's writer appends, computed by aprender's CRC.
    let n = bytes.len() - 4;
    assert_eq!(bytes[n..], apr_format::crc32(&bytes[..n]).to_le_bytes());
}

/// `AprV2Writer`'s file of the metadata and tensors aprender reads back from pv's: equal
/// to pv's bytes everywhere, with the metadata equal as JSON (its flattened keys come in
/// the order of aprender's `HashMap`), and byte for byte once pv's metadata bytes stand in
/// for aprender's and the footer is recomputed.
fn aprenders_writer_agrees(bytes: &[u8]) {
    let mut theirs = rewritten_by_aprender(bytes, |_| {});
    assert_eq!(theirs.len(), bytes.len());
    let (at, len) = (
        64usize,
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize,
    );
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(&b[at..at + len]).unwrap();
    assert_eq!(parse(&theirs), parse(bytes), "the same metadata");
    theirs[at..at + len].copy_from_slice(&bytes[at..at + len]);
    let n = theirs.len() - 4;
    let crc = apr_format::crc32(&theirs[..n]).to_le_bytes();
    theirs[n..].copy_from_slice(&crc);
    assert!(
        theirs == bytes,
        "byte for byte, up to the order of the metadata keys"
    );
}

#[test]
fn aprender_reads_pvs_files_as_pv_wrote_them() {
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        let gguf = common::synthetic_model(arch, GgmlType::Q4_K, None);
        let config = ModelConfig::try_from(&gguf).unwrap();
        for how in [
            pv::model::Conversion::from(AprDtype::F32),
            AprDtype::F16.into(),
            pv::model::Conversion {
                dtype: AprDtype::Keep,
                other: Some(pv::model::OtherDtype::F32),
            },
        ] {
            let bytes = gguf_to_apr(&gguf, how).unwrap().to_bytes().unwrap();
            aprender_sees(&bytes, &config);
            aprenders_writer_agrees(&bytes);
        }
    }
}

#[test]
fn with_one_custom_key_the_bytes_are_aprenders_exactly() {
    // Deterministic on aprender's side: its HashMap has one key to order.
    let mut mine = AprenderMetadata {
        model_type: "llama".into(),
        architecture: Some("llama".into()),
        hidden_size: Some(64),
        rope_theta: Some(10_000.5),
        rms_norm_eps: Some(1e-5),
        ..Default::default()
    };
    mine.custom
        .insert("tokenizer.vocabulary".into(), json!(["a", "b"]));
    let theirs_meta: AprV2Metadata = serde_json::from_slice(&mine.to_json()).unwrap();
    let mut w = AprWriter::new(&mine).unwrap();
    let mut a = AprV2Writer::new(theirs_meta);
    let values: Vec<f32> = (0..512).map(|i| i as f32 * 0.5 - 9.0).collect();
    let q4k = pv::quant::quantize(GgmlType::Q4_K, &values).unwrap();
    for (name, dtype, dims, data) in [
        (
            "z",
            DType::Ggml(GgmlType::F32),
            vec![2u64, 3],
            vec![7u8; 24],
        ),
        ("b", DType::Ggml(GgmlType::Q4_K), vec![2, 256], q4k),
        ("e", DType::Ggml(GgmlType::F16), vec![0, 5], vec![]),
        ("m", DType::AprQ8, vec![3, 3, 3], vec![1u8; 31]),
        ("q", DType::AprQ4, vec![40], vec![3u8; 36]),
        (
            "h",
            DType::Ggml(GgmlType::BF16),
            vec![1, 1, 1, 1, 1, 1, 1, 2],
            vec![9u8; 4],
        ),
    ] {
        w.tensor(name, dtype, &dims, data.clone()).unwrap();
        let t = TensorDType::from_u8(dtype.aprender_id().unwrap()).unwrap();
        a.add_tensor(name, t, usizes(&dims), data);
    }
    assert!(w.to_bytes().unwrap() == a.write().unwrap());
}

#[test]
fn no_type_pv_writes_is_read_by_aprender_as_another() {
    let mut written = std::collections::HashSet::new();
    for t in DType::aprender_types().chain(GgmlType::ALL.into_iter().map(DType::Ggml)) {
        match pv::apr::AprEntry::new("x", t, &[1, 256]) {
            Ok(_) => {
                let id = t.aprender_id().unwrap();
                let theirs = TensorDType::from_u8(id).unwrap_or_else(|| panic!("{t}: id {id}"));
                assert_eq!(theirs.to_string(), t.name(), "id {id}");
                written.insert(t);
            }
            Err(e) => assert!(t.aprender_id().is_none(), "{t}: {e}"),
        }
    }
    assert_eq!(written.len(), 12, "aprender's whole table, nothing else");
    // pv's first dialect wrote GGML ids, which aprender reads as other types: pv no longer
    // writes them (Q4_1 would read as F64, Q8_0 as APR_Q4).
    assert_eq!(
        TensorDType::from_u8(GgmlType::Q4_1.id() as u8),
        Some(TensorDType::F64)
    );
    assert_eq!(
        TensorDType::from_u8(GgmlType::Q8_0.id() as u8),
        Some(TensorDType::AprQ4)
    );
}

/// `pv convert --dtype keep` on real files: Q4_1 is refused naming the tensor and type;
/// with `--other f32` every tensor aprender reads has the type pv wrote; a Q4_K_M file keeps
/// its K-quants.
#[test]
fn keep_files_are_read_by_aprender_as_written() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keep.apr");
    let (o, p) = (out.to_str().unwrap(), path.to_str().unwrap());
    let (code, _, err) = common::pv(&["convert", p, "-o", o, "--dtype", "keep"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("token_embd.weight") && err.contains("Q8_0") && err.contains("--other"),
        "{err}"
    );
    assert!(!out.exists());
    let mut files = vec![path.clone()];
    // The requantized Q4_K_M file (K-quant tensors kept as written) is made by the long
    // suite's llama.cpp quantizer; the default suite runs on the Q4_1 file alone.
    let q4k = common::root().join("models/formats/smollm2-Q4_K_M.gguf");
    if (q4k.exists() || std::env::var("PV_LONG").is_ok_and(|v| v == "1"))
        && let Some(k) = common::real_model("formats/smollm2-Q4_K_M.gguf")
    {
        files.push(k);
    }
    for src in files {
        let (code, _, err) = common::pv(&[
            "convert",
            src.to_str().unwrap(),
            "-o",
            o,
            "--dtype",
            "keep",
            "--other",
            "f32",
        ]);
        assert_eq!(code, 0, "{err}");
        let bytes = std::fs::read(&out).unwrap();
        let gguf = GgufFile::open(&src).unwrap();
        aprender_sees(&bytes, &ModelConfig::try_from(&gguf).unwrap());
        let f = AprFile::from_bytes(bytes).unwrap();
        for t in &gguf.tensors {
            let want = match t.ggml_type {
                GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::F16 | GgmlType::BF16 => {
                    DType::Ggml(t.ggml_type)
                }
                _ => DType::Ggml(GgmlType::F32),
            };
            assert_eq!(f.tensor(&t.name).unwrap().dtype, want, "{}", t.name);
        }
    }
}

/// pv's first dialect, as the previous pv wrote it (`tests/fixtures/apr/`, made from
/// `legacy-llama.gguf` before this dialect changed): its Q8_0 under GGML id 8 reads as Q8_0,
/// its logits are the ones that pv computed, to the bit, and equal to those of the same model
/// converted to aprender's dialect now.
#[test]
fn files_of_pvs_first_dialect_still_read_to_the_bit() {
    let legacy = AprFile::from_bytes(common::fixture("apr/legacy-llama.keep.apr")).unwrap();
    assert_eq!(legacy.dialect, Dialect::Pv);
    assert_eq!(legacy.footer, Footer::Absent);
    assert_eq!(
        legacy.tensor("blk.0.attn_q.weight").unwrap().dtype,
        DType::Ggml(GgmlType::Q8_0)
    );
    let tokens = [1u32, 40, 70, 3, 99, 12, 5];
    let old = AprTransformer::load(legacy).unwrap();
    let logits: Vec<u32> = common::fixture("apr/legacy-llama.logits.f32")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (t_old, bits) = trace(&old, &tokens);
    assert_eq!(bits, logits);
    let gguf = GgufFile::from_bytes(common::fixture("apr/legacy-llama.gguf")).unwrap();
    let new = load(
        gguf_to_apr(&gguf, AprDtype::F32)
            .unwrap()
            .to_bytes()
            .unwrap(),
    );
    assert_eq!(trace(&new, &tokens), (t_old, logits));
}
