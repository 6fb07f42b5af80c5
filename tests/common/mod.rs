//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the `pv` binary in `dir` (the test's own directory when `None`): exit code, stdout,
/// stderr.
pub fn pv_in(dir: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pv"));
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    run(cmd.args(args))
}

/// Runs the `pv` binary with extra environment variables: exit code, stdout, stderr.
pub fn pv_env(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pv"));
    cmd.envs(env.iter().copied());
    run(cmd.args(args))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs the `pv` binary: exit code, stdout, stderr.
pub fn pv(args: &[&str]) -> (i32, String, String) {
    pv_in(None, args)
}

/// A scratch directory under the system's temporary directory, removed when the value is
/// dropped, also when the test fails: a suite run leaves nothing behind (a model written
/// into a leaked directory is hundreds of MiB on every run).
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pv-{tag}-"))
        .tempdir()
        .expect("a scratch directory under the temporary directory")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether a missing model, adapter, mutant or oracle fails the test rather than skipping
/// it: under `CI=true`, and under `PV_REQUIRE_INPUTS=1`, which `scripts/test.sh` sets (the
/// README's test command fetches and builds everything, so a missing input there is a bug).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("PV_REQUIRE_INPUTS").is_ok_and(|v| v == "1")
}

/// Fails the test when inputs are [`required`]; otherwise records a deliberate skip: a note
/// on stderr and a line in `target/tmp/skipped.txt`, which `scripts/test.sh` counts as
/// skipped rather than passed (the test harness itself counts an early return as a pass).
pub fn skip(what: &str, how: &str) {
    if required() {
        panic!("{what} is missing (CI=true or PV_REQUIRE_INPUTS=1): {how}");
    }
    eprintln!("SKIPPED: {what} is missing ({how})");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    let _ = std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write;
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed test")
            .to_string();
        let _ = writeln!(f, "{test}: {what} is missing ({how})");
    }
}

/// The real test model, fetched by `scripts/fetch-models.sh`. When inputs are [`required`]
/// a missing model fails the test; elsewhere the test is skipped (see [`skip`]).
pub fn real_model(name: &str) -> Option<PathBuf> {
    let p = root().join("models").join(name);
    if p.exists() {
        return Some(p);
    }
    skip(&p.display().to_string(), "run scripts/fetch-models.sh");
    None
}

/// The canonical test model.
pub fn smollm2() -> Option<PathBuf> {
    real_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Reads a fixture.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures").join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// One prompt of a llama.cpp reference fixture (`tests/fixtures/llamacpp_*.json`).
pub struct RefPrompt {
    pub name: String,
    pub text: String,
    /// Token ids, BOS included.
    pub tokens: Vec<u32>,
    /// The last position's 20 largest logits as (id, value), largest first.
    pub top20: Vec<(u32, f32)>,
    /// The greedy continuation (32 tokens, or fewer when an end token came).
    pub greedy: Vec<u32>,
    pub greedy_text: String,
}

/// A llama.cpp reference fixture.
pub struct Reference {
    pub source: String,
    /// End-of-generation token ids.
    pub eos: Vec<u32>,
    pub prompts: Vec<RefPrompt>,
}

/// A JSON array of token ids.
pub fn json_ids(x: &serde_json::Value) -> Vec<u32> {
    x.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

/// Reads the llama.cpp reference fixture `name`.
pub fn llamacpp_reference(name: &str) -> Reference {
    let v: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
    let ids = json_ids;
    let prompts = v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| RefPrompt {
            name: p["name"].as_str().unwrap().into(),
            text: p["text"].as_str().unwrap().into(),
            tokens: ids(&p["tokens"]),
            top20: p["top20"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
                .collect(),
            greedy: ids(&p["greedy"]),
            greedy_text: p["greedy_text"].as_str().unwrap().into(),
        })
        .collect();
    Reference {
        source: v["source"].as_str().unwrap().into(),
        eos: ids(&v["eos"]),
        prompts,
    }
}

use pv::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use pv::quant::synth::{SplitMix, random_row};

pub const D: usize = 256;
pub const FF: usize = 512;
pub const VOCAB: usize = 300;

/// Head width of the synthetic Gemma 3 model: its 4 query heads span 512, twice the width.
pub const GEMMA_HEAD: usize = 128;
/// Sliding window of the synthetic Gemma 3 model (short, so a six-token prompt crosses it).
pub const GEMMA_WINDOW: usize = 3;

/// A small model of `arch` (llama, qwen2, qwen3: two layers; gemma3: six, so that the last is
/// a global-attention layer) with weights of format `ty`, built in memory; `drop_key` leaves
/// out the metadata key ending with it.
pub fn synthetic_model(arch: &str, ty: GgmlType, drop_key: Option<&str>) -> GgufFile {
    let gemma = arch == "gemma3";
    let n_layer = if gemma { 6 } else { 2 };
    let head = if gemma { GEMMA_HEAD } else { D / 4 };
    let mut w = GgufWriter::new();
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (format!("{arch}.block_count"), Value::U32(n_layer as u32)),
        (format!("{arch}.embedding_length"), Value::U32(D as u32)),
        (format!("{arch}.feed_forward_length"), Value::U32(FF as u32)),
        (format!("{arch}.attention.head_count"), Value::U32(4)),
        (format!("{arch}.attention.head_count_kv"), Value::U32(2)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
        (format!("{arch}.context_length"), Value::U32(128)),
        (format!("{arch}.vocab_size"), Value::U32(VOCAB as u32)),
    ];
    if gemma {
        meta.push((
            format!("{arch}.attention.key_length"),
            Value::U32(head as u32),
        ));
        meta.push((
            format!("{arch}.attention.value_length"),
            Value::U32(head as u32),
        ));
        meta.push((
            format!("{arch}.attention.sliding_window"),
            Value::U32(GEMMA_WINDOW as u32),
        ));
    }
    // A minimal byte-level vocabulary so the model is complete (and converts to APR): the
    // printable ASCII bytes as GPT-2's byte-level alphabet spells them ('Ġ' is the space),
    // so any ASCII prompt tokenises, then filler tokens.
    let tokens: Vec<Value> = std::iter::once("\u{120}".to_string())
        .chain((0x21u8..=0x7e).map(|b| (b as char).to_string()))
        .chain((95..VOCAB).map(|i| format!("t{i}")))
        .map(Value::String)
        .collect();
    meta.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    meta.push(("tokenizer.ggml.pre".into(), Value::String("gpt2".into())));
    meta.push((
        "tokenizer.ggml.tokens".into(),
        Value::array(pv::gguf::ValueType::String, tokens),
    ));
    meta.push((
        "tokenizer.ggml.merges".into(),
        Value::array(pv::gguf::ValueType::String, vec![]),
    ));
    if let Some(k) = drop_key {
        meta.retain(|(key, _)| !key.ends_with(k));
    }
    for (k, v) in meta {
        w.meta(&k, v);
    }
    let mut rng = SplitMix(9);
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize, ty: GgmlType| {
        let data: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(ty, cols, 0.05, &mut rng))
            .collect();
        w.tensor(name, &[cols as u64, rows as u64], ty, data)
            .unwrap();
    };
    let (q, kv) = (4 * head, 2 * head);
    mat(&mut w, "token_embd.weight", D, VOCAB, GgmlType::Q8_0);
    let norm = |w: &mut GgufWriter, name: String, len: usize, base: f32| {
        let v: Vec<u8> = (0..len)
            .flat_map(|i| (base + (i % 7) as f32 * 0.01).to_le_bytes())
            .collect();
        w.tensor(&name, &[len as u64], GgmlType::F32, v).unwrap();
    };
    for l in 0..n_layer {
        mat(&mut w, &format!("blk.{l}.attn_q.weight"), D, q, ty);
        mat(&mut w, &format!("blk.{l}.attn_k.weight"), D, kv, ty);
        mat(&mut w, &format!("blk.{l}.attn_v.weight"), D, kv, ty);
        mat(&mut w, &format!("blk.{l}.attn_output.weight"), q, D, ty);
        if arch == "qwen3" || gemma {
            norm(&mut w, format!("blk.{l}.attn_q_norm.weight"), head, 1.0);
            norm(&mut w, format!("blk.{l}.attn_k_norm.weight"), head, 1.0);
        }
        if gemma {
            // Post-norms scaled down, as trained Gemma models have them, so the residual
            // stream does not double every layer.
            norm(
                &mut w,
                format!("blk.{l}.post_attention_norm.weight"),
                D,
                0.3,
            );
            norm(&mut w, format!("blk.{l}.post_ffw_norm.weight"), D, 0.3);
        }
        mat(&mut w, &format!("blk.{l}.ffn_gate.weight"), D, FF, ty);
        mat(&mut w, &format!("blk.{l}.ffn_up.weight"), D, FF, ty);
        mat(&mut w, &format!("blk.{l}.ffn_down.weight"), FF, D, ty);
        for (name, len) in [("attn_norm.weight", D), ("ffn_norm.weight", D)] {
            let v: Vec<u8> = (0..len)
                .flat_map(|i| (1.0f32 + (i % 7) as f32 * 0.01).to_le_bytes())
                .collect();
            w.tensor(&format!("blk.{l}.{name}"), &[len as u64], GgmlType::F32, v)
                .unwrap();
        }
        if arch == "qwen2" {
            for (name, len) in [("attn_q.bias", q), ("attn_k.bias", kv), ("attn_v.bias", kv)] {
                let v: Vec<u8> = (0..len)
                    .flat_map(|i| ((i % 5) as f32 * 0.02 - 0.04).to_le_bytes())
                    .collect();
                w.tensor(&format!("blk.{l}.{name}"), &[len as u64], GgmlType::F32, v)
                    .unwrap();
            }
        }
    }
    let v: Vec<u8> = (0..D).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    w.tensor("output_norm.weight", &[D as u64], GgmlType::F32, v)
        .unwrap();
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

/// The synthetic `arch` model in format `ty` in both engines: pv's GGUF engine, and the
/// f32 APR reference engine on its conversion.
pub fn synthetic_pair(
    arch: &str,
    ty: GgmlType,
) -> (pv::model::OwnedQuantizedModel, pv::model::AprTransformer) {
    let gguf =
        pv::model::OwnedQuantizedModel::from_mapped(synthetic_model(arch, ty, None)).unwrap();
    let apr_bytes = pv::model::gguf_to_apr(gguf.file(), pv::model::AprDtype::F32)
        .unwrap()
        .to_bytes()
        .unwrap();
    let apr =
        pv::model::AprTransformer::load(pv::apr::AprFile::from_bytes(apr_bytes).unwrap()).unwrap();
    (gguf, apr)
}

/// A Llama-2-style SentencePiece vocabulary as GGUF metadata (`tokenizer.ggml.model =
/// "llama"`): `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0xXX>` (score 0), then `pieces`
/// (normal tokens with their scores). No merges, no BOS or space-prefix keys: llama.cpp's
/// defaults apply. Returns the file and the vocabulary, so tests can look ids up.
pub fn spm_vocabulary(pieces: &[(&str, f32)]) -> (GgufFile, Vec<String>) {
    use pv::gguf::ValueType;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    let mut scores = vec![Value::F32(0.0); 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(Value::I32(6));
        scores.push(Value::F32(0.0));
    }
    for &(p, score) in pieces {
        tokens.push(p.into());
        types.push(Value::I32(1));
        scores.push(Value::F32(score));
    }
    let strs = Value::array(
        ValueType::String,
        tokens.iter().cloned().map(Value::String).collect(),
    );
    let mut w = GgufWriter::new();
    w.meta("tokenizer.ggml.model", Value::String("llama".into()))
        .meta("tokenizer.ggml.tokens", strs)
        .meta(
            "tokenizer.ggml.scores",
            Value::array(ValueType::F32, scores),
        )
        .meta(
            "tokenizer.ggml.token_type",
            Value::array(ValueType::I32, types),
        );
    (GgufFile::from_bytes(w.to_bytes()).unwrap(), tokens)
}

pub mod repo;

/// The Hugging Face name of a GGUF tensor name of a llama/qwen model, written out here
/// (not taken from pv's table) so tests check pv's mapping against an independent one.
pub fn hf_name(gguf: &str) -> String {
    let whole = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, hf)) = whole.iter().find(|(g, _)| *g == gguf) {
        return hf.to_string();
    }
    let Some((layer, rest)) = gguf.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
        return gguf.to_string();
    };
    let suffix = match rest {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        other => other,
    };
    format!("model.layers.{layer}.{suffix}")
}

/// `gguf` in aprender's own formats under Hugging Face names, as pv's writer lays out an
/// aprender file: attention matrices APR_Q8, FFN matrices APR_Q4, the LM head Q4_K, the
/// rest f32 (pv's f32 conversion, requantized).
pub fn aprender_quantized(gguf: &GgufFile) -> Vec<u8> {
    use pv::apr::DType;
    use pv::quant::aprq;
    let f32_file = pv::apr::AprFile::from_bytes(
        pv::model::gguf_to_apr(gguf, pv::model::AprDtype::F32)
            .unwrap()
            .to_bytes()
            .unwrap(),
    )
    .unwrap();
    let mut w = pv::apr::AprWriter::new(&f32_file.metadata).unwrap();
    for t in &f32_file.tensors {
        let values: Vec<f32> = f32_file
            .tensor_data(t)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (dtype, data) = if t.dims.len() == 1 {
            (t.dtype, f32_file.tensor_data(t).to_vec())
        } else if t.name.contains("attn_") {
            (DType::AprQ8, aprq::quantize_q8(&values))
        } else if t.name.contains("ffn_") {
            (DType::AprQ4, aprq::quantize_q4(&values))
        } else if t.name == "lm_head.weight" {
            (
                DType::Ggml(GgmlType::Q4_K),
                pv::quant::quantize(GgmlType::Q4_K, &values).unwrap(),
            )
        } else {
            (t.dtype, f32_file.tensor_data(t).to_vec())
        };
        w.tensor(&hf_name(&t.name), dtype, &t.dims, data).unwrap();
    }
    w.to_bytes().unwrap()
}
