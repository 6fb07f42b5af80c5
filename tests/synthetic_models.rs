//! Small synthetic models of both architectures and several weight formats, built with pv's
//! GGUF writer: the engine loads them, checks their metadata, and its incremental (KV-cached)
//! evaluation agrees with the whole-prompt forward pass.

mod common;

use common::{VOCAB, synthetic_model as build};
use pv::gguf::GgmlType;
use pv::model::{LogitsFor, NoopObserver, Observer, OwnedQuantizedModel, Slot};

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
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
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
                model.config.n_layer * Slot::layer_slots(model.config.spec()).len() + 3,
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

/// `pv synth` writes the bytes `contracts/synthetic-scaling-v1.yaml` pins, so the scaling
/// tests discharge on any machine (and a change to the generator that would silently turn
/// them into algorithm-level discharges fails here). The smallest shape stands for the six;
/// the generated model loads, converts to f16 APR and runs in both engines.
#[test]
fn pv_synth_writes_the_pinned_bytes_and_the_model_runs() {
    let text = std::fs::read_to_string(common::root().join("contracts/synthetic-scaling-v1.yaml"))
        .unwrap();
    let contract = pv::contract::parse_text("synthetic-scaling-v1.yaml", &text).unwrap();
    let pin = &contract.models["qwen2-0_5b"];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&pin.file);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pv"))
        .args(["synth", "qwen2-0.5b", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pv::evidence::sha256_file(&path).unwrap(), pin.sha256);

    let gguf = OwnedQuantizedModel::open(&path).unwrap();
    let apr_path = dir.path().join("m.f16.apr");
    pv::model::write_apr(
        gguf.file(),
        pv::model::AprDtype::F16,
        &apr_path,
        &mut |_, _| {},
    )
    .unwrap();
    let apr = pv::model::AprTransformer::load(pv::apr::AprFile::open(&apr_path).unwrap()).unwrap();
    let tokens = [5u32, 77, 3];
    let (a, b) = (
        gguf.forward(&tokens).unwrap(),
        apr.forward(&tokens).unwrap(),
    );
    assert!(
        cosine(a.row(2), b.row(2)) > 0.99,
        "{}",
        cosine(a.row(2), b.row(2))
    );
}
