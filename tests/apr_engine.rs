//! The APR reference engine against the GGUF engine: the same model through independent
//! code (plain f32, no quantized kernels) must tell the same story.

mod common;

use pv::apr::AprFile;
use pv::gguf::GgmlType;
use pv::model::{
    AprDtype, AprTransformer, Conversion, LogitsFor, NoopObserver, OtherDtype, OwnedQuantizedModel,
    Slot, argmax, gguf_to_apr, write_apr,
};
use pv::tokenizer::Tokenizer;
use pv::trace::{TracedForward, check_parity};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum();
    dot / (na.sqrt() * nb.sqrt())
}

#[test]
fn synthetic_models_agree_across_engines_for_every_architecture() {
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        // Keep: Q4_K rows stay Q4_K; the Q8_0 embedding (not in aprender's table) is f32.
        let keep = Conversion {
            dtype: AprDtype::Keep,
            other: Some(OtherDtype::F32),
        };
        for (ty, dtype) in [
            (GgmlType::Q8_0, Conversion::from(AprDtype::F32)),
            (GgmlType::F16, AprDtype::F16.into()),
            (GgmlType::Q4_K, keep),
        ] {
            let gguf =
                OwnedQuantizedModel::from_mapped(common::synthetic_model(arch, ty, None)).unwrap();
            let apr_bytes = gguf_to_apr(gguf.file(), dtype).unwrap().to_bytes().unwrap();
            let apr = AprTransformer::load(AprFile::from_bytes(apr_bytes).unwrap()).unwrap();
            assert_eq!(apr.config, gguf.config);
            let tokens = [5u32, 77, 3, 140, 2, 9];
            let (a, b) = (
                gguf.forward(&tokens).unwrap(),
                apr.forward(&tokens).unwrap(),
            );
            for t in 0..tokens.len() {
                let c = cosine(a.row(t), b.row(t));
                assert!(c > 0.999, "{arch} {ty} {dtype:?}: position {t} cosine {c}");
            }
            let (ta, tb) = (
                gguf.forward_traced(&tokens).unwrap(),
                apr.forward_traced(&tokens).unwrap(),
            );
            check_parity(&ta, &tb).unwrap();
            assert_eq!((ta.engine.as_str(), tb.engine.as_str()), ("gguf", "apr"));
        }
    }
}

/// Gemma 3's sliding window, in both engines: positions past the window see fewer keys on the
/// local layers, so their logits change when the window is widened, and earlier positions'
/// do not; the engines agree either way, and the cached (one token at a time) pass agrees
/// with the whole-prompt pass.
#[test]
fn the_sliding_window_masks_old_positions_in_both_engines() {
    let tokens = [5u32, 77, 3, 140, 2, 9];
    let windowed = common::synthetic_pair("gemma3", GgmlType::Q8_0);
    assert_eq!(windowed.0.config.sliding_window, common::GEMMA_WINDOW);
    assert_eq!(
        (0..6)
            .map(|l| windowed.0.config.is_swa(l))
            .collect::<Vec<_>>(),
        [true, true, true, true, true, false]
    );
    let (mut wide_g, mut wide_a) = common::synthetic_pair("gemma3", GgmlType::Q8_0);
    wide_g.config.sliding_window = 1 << 20;
    wide_a.config.sliding_window = 1 << 20;
    for (name, a, b) in [
        (
            "gguf",
            windowed.0.forward(&tokens).unwrap(),
            wide_g.forward(&tokens).unwrap(),
        ),
        (
            "apr",
            windowed.1.forward(&tokens).unwrap(),
            wide_a.forward(&tokens).unwrap(),
        ),
    ] {
        for t in 0..tokens.len() {
            let same = a.row(t) == b.row(t);
            assert_eq!(same, t < common::GEMMA_WINDOW, "{name}: position {t}");
        }
    }
    let (g, a) = (
        windowed.0.forward(&tokens).unwrap(),
        windowed.1.forward(&tokens).unwrap(),
    );
    let mut cache = windowed.0.new_cache();
    for (t, &tok) in tokens.iter().enumerate() {
        assert!(
            cosine(g.row(t), a.row(t)) > 0.999,
            "engines at position {t}"
        );
        let step = windowed
            .0
            .forward_with_cache(&[tok], &mut cache, LogitsFor::Last, &mut NoopObserver)
            .unwrap();
        assert!(cosine(&step, g.row(t)) > 0.9999, "cached position {t}");
    }
}

#[test]
fn smollm2_apr_reference_matches_the_gguf_engine() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let gguf = OwnedQuantizedModel::open(&path).unwrap();
    let tmp = common::scratch("apr");
    let dir = tmp.path().to_path_buf();
    let apr_path = dir.join("smollm2.apr");
    let mut calls = 0;
    write_apr(gguf.file(), AprDtype::F32, &apr_path, &mut |done, total| {
        assert!(done <= total);
        calls += 1;
    })
    .unwrap();
    assert!(calls > 2, "progress is reported as the file is written");
    let in_memory = gguf_to_apr(gguf.file(), AprDtype::F32)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert!(
        std::fs::read(&apr_path).unwrap() == in_memory,
        "the streamed conversion is the in-memory one, byte for byte"
    );
    drop(in_memory);
    let apr = AprTransformer::load(AprFile::open(&apr_path).unwrap()).unwrap();
    drop(tmp);
    let tok = Tokenizer::from_spec(apr.tokenizer.as_ref().unwrap()).unwrap();
    assert_eq!(
        tok.encode("What is 2+2?").unwrap(),
        Tokenizer::from_gguf(gguf.file())
            .unwrap()
            .encode("What is 2+2?")
            .unwrap()
    );

    // Every layer's ffn_inner std (scope all) within 2%; report the worst deviation per slot.
    let tokens = tok.encode("What is 2+2?").unwrap();
    let (ta, tb) = (
        gguf.forward_traced(&tokens).unwrap(),
        apr.forward_traced(&tokens).unwrap(),
    );
    check_parity(&ta, &tb).unwrap();
    for slot in Slot::layer_slots(pv::model::Arch::Llama.spec()) {
        let worst = ta
            .layers
            .iter()
            .zip(&tb.layers)
            .map(|(la, lb)| {
                (lb.get(slot).unwrap().all.std / la.get(slot).unwrap().all.std - 1.0).abs()
            })
            .fold(0f64, f64::max);
        eprintln!(
            "{:>10}: max |std(apr)/std(gguf) - 1| over layers = {:.4}",
            slot.name(),
            worst
        );
        if slot == Slot::FfnInner {
            assert!(worst < 0.02, "ffn_inner std deviates by {worst}");
        }
    }

    // Greedy continuation of the chat prompt: the APR engine recomputes the whole sequence
    // at every step (no KV cache), and must pick the GGUF engine's tokens.
    let chat = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    let prompt = tok.encode(chat).unwrap();
    let want = gguf.generate_greedy(&prompt, 16, tok.end_tokens()).unwrap();
    let mut seq = prompt.clone();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let next = argmax(apr.forward(&seq).unwrap().last()) as u32;
        got.push(next);
        seq.push(next);
        if tok.end_tokens().contains(&next) {
            break;
        }
    }
    assert_eq!(
        got,
        want,
        "APR {:?} vs GGUF {:?}",
        tok.decode(&got),
        tok.decode(&want)
    );
}

#[test]
fn diff_compares_every_slot_and_names_the_first_divergence() {
    use pv::trace::{Metric, Thresholds, TraceOptions, capture_all, diff};
    let (gguf, apr) = common::synthetic_pair("llama", GgmlType::Q8_0);
    let tokens = [4u32, 8, 15, 16, 23, 42];
    let opts = TraceOptions {
        capture: Some(capture_all()),
        ..Default::default()
    };
    let a = gguf.forward_traced_with(&tokens, &opts).unwrap();
    let b = apr.forward_traced_with(&tokens, &opts).unwrap();
    let same = diff(&a, &a).unwrap().judged(&Thresholds::coarse());
    assert_eq!(same.slots.len(), 2 * 15 + 3);
    assert!(
        same.slots
            .iter()
            .all(|s| s.cosine > 1.0 - 1e-12 && s.max_abs_diff == 0.0 && s.nmse == 0.0)
    );
    assert_eq!(same.first_divergent, None);
    assert!(same.logits.kl.iter().all(|&k| k.abs() < 1e-12));
    let cross = diff(&a, &b).unwrap().judged(&Thresholds::coarse());
    assert_eq!(cross.engines, ("gguf".to_string(), "apr".to_string()));
    assert_eq!(
        cross.first_divergent,
        None,
        "{:?}",
        cross.slots.iter().map(|s| s.cosine).collect::<Vec<_>>()
    );
    // An impossible tolerance names the very first slot whose tensors differ at all.
    let strict = diff(&a, &b).unwrap().judged(&Thresholds::uniform(&[
        (Metric::StdRatio, 0.0),
        (Metric::CosineGap, 0.0),
    ]));
    let first = &strict.slots[strict.first_divergent.unwrap()];
    assert!(first.cosine < 1.0 || (first.std_ratio_all - 1.0).abs() > 0.0);
    // Traces over different tokens are refused.
    let other = apr.forward_traced_with(&tokens[..5], &opts).unwrap();
    assert!(diff(&a, &other).is_err());
}

/// The APR engine splits its matrix products across threads by output rows, each output one
/// dot product in a fixed order: its logits and trace are the same bits on 1, 2 and 3
/// threads, for every architecture.
#[test]
fn the_apr_engine_is_independent_of_the_thread_count() {
    let tokens = [1u32, 5, 9, 2, 7, 3, 11, 4, 6];
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        let (_, apr) = common::synthetic_pair(arch, GgmlType::Q8_0);
        let run = |threads| {
            pv::model::with_threads(threads, || {
                let logits = apr.forward(&tokens).unwrap();
                let trace = apr.forward_traced(&tokens).unwrap();
                (logits, serde_json::to_string(&trace).unwrap())
            })
        };
        let (one, one_trace) = run(1);
        for threads in [2, 3] {
            let (many, many_trace) = run(threads);
            let same = (one.data.iter().zip(&many.data)).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{arch}: logits on {threads} threads differ from 1 thread"
            );
            assert_eq!(one_trace, many_trace, "{arch}: trace on {threads} threads");
        }
    }
}
