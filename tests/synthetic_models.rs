//! Small synthetic models of both architectures and several weight formats, built with pv's
//! GGUF writer: the engine loads them, checks their metadata, and its incremental (KV-cached)
//! evaluation agrees with the whole-prompt forward pass.

use pv::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use pv::model::{LogitsFor, NoopObserver, Observer, OwnedQuantizedModel, Slot};
use pv::quant::synth::{SplitMix, random_row};

const D: usize = 256;
const FF: usize = 512;
const VOCAB: usize = 300;

fn build(arch: &str, ty: GgmlType, drop_key: Option<&str>) -> GgufFile {
    let mut w = GgufWriter::new();
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (format!("{arch}.block_count"), Value::U32(2)),
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
    let kv = D / 2;
    mat(&mut w, "token_embd.weight", D, VOCAB, GgmlType::Q8_0);
    for l in 0..2 {
        mat(&mut w, &format!("blk.{l}.attn_q.weight"), D, D, ty);
        mat(&mut w, &format!("blk.{l}.attn_k.weight"), D, kv, ty);
        mat(&mut w, &format!("blk.{l}.attn_v.weight"), D, kv, ty);
        mat(&mut w, &format!("blk.{l}.attn_output.weight"), D, D, ty);
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
            for (name, len) in [("attn_q.bias", D), ("attn_k.bias", kv), ("attn_v.bias", kv)] {
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

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum();
    dot / (na.sqrt() * nb.sqrt())
}

struct CountSlots(Vec<(Option<usize>, Slot)>);
impl Observer for CountSlots {
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], width: usize) {
        assert_eq!(data.len() % width, 0);
        assert!(
            data.iter().all(|v| v.is_finite()),
            "{slot:?} at {layer:?} not finite"
        );
        self.0.push((layer, slot));
    }
}

#[test]
fn both_architectures_and_several_formats_run_and_cache_consistently() {
    let prompt = [1u32, 17, 42, 99, 250, 3];
    for arch in ["llama", "qwen2"] {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q2_K,
            GgmlType::F16,
        ] {
            let model = OwnedQuantizedModel::from_mapped(build(arch, ty, None)).unwrap();
            let full = model.forward(&prompt).unwrap();
            assert_eq!(full.n_positions(), prompt.len());
            let mut obs = CountSlots(Vec::new());
            let traced = model.forward_observed(&prompt, &mut obs).unwrap();
            assert!(
                full.data
                    .iter()
                    .zip(&traced.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{arch} {ty}: observer changed logits"
            );
            assert_eq!(
                obs.0.len(),
                2 * Slot::LAYER.len() + 3,
                "{arch} {ty}: every capture point once"
            );
            // Token by token through the KV cache: the same positions, computed one at a time.
            let mut cache = model.new_cache();
            for (t, &tok) in prompt.iter().enumerate() {
                let step = model
                    .forward_with_cache(&[tok], &mut cache, LogitsFor::Last, &mut NoopObserver)
                    .unwrap();
                let c = cosine(&step, full.row(t));
                assert!(c > 0.9999, "{arch} {ty}: position {t} cosine {c}");
            }
        }
    }
}

#[test]
fn wrong_metadata_fails_at_load_naming_the_key() {
    let err = OwnedQuantizedModel::from_mapped(build(
        "qwen2",
        GgmlType::Q8_0,
        Some("feed_forward_length"),
    ))
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("qwen2.feed_forward_length"),
        "{err}"
    );
    let err = OwnedQuantizedModel::from_mapped(build("gpt-neox", GgmlType::Q8_0, None))
        .err()
        .unwrap();
    assert!(err.to_string().contains("general.architecture"), "{err}");
}

#[test]
fn out_of_range_tokens_and_context_overflow_are_errors() {
    let model = OwnedQuantizedModel::from_mapped(build("llama", GgmlType::Q8_0, None)).unwrap();
    assert!(model.forward(&[VOCAB as u32]).is_err());
    assert!(model.forward(&[]).is_err());
    assert!(model.forward(&vec![1u32; 129]).is_err());
}
