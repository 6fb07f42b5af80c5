//! The traced forward pass: byte-identical to `forward`, every capture point filled, one
//! schema (generated from the types, committed, drift-tested, validated against), and a
//! parity check before any comparison.

mod common;

use pv::gguf::GgmlType;
use pv::model::{OwnedQuantizedModel, Slot, with_threads};
use pv::trace::{
    CaptureSpec, ForwardTrace, ParityError, TraceOptions, TracedForward, check_parity, schema_json,
};

const SCHEMA: &str = "schemas/forward-trace.schema.json";

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn validate(trace: &ForwardTrace) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::root().join(SCHEMA)).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let instance = serde_json::to_value(trace).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// FFN-GGUF-002's claim: traced logits equal `forward`'s bit for bit, at 1 thread and at all.
fn assert_traced_is_plain(model: &OwnedQuantizedModel, tokens: &[u32], what: &str) {
    for threads in [1, 0] {
        let (plain, traced) = with_threads(threads, || {
            (
                model.forward(tokens).unwrap(),
                model
                    .forward_traced_with(tokens, &TraceOptions::default())
                    .unwrap(),
            )
        });
        assert_eq!(
            bits(&plain.data),
            bits(&traced.logits.data),
            "{what} threads={threads}"
        );
        validate(&traced.trace);
    }
}

#[test]
fn committed_schema_matches_the_types() {
    let path = common::root().join(SCHEMA);
    if std::env::var("PV_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, schema_json()).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == schema_json(),
        "{SCHEMA} is stale: regenerate with PV_BLESS=1 cargo test --test trace"
    );
}

#[test]
fn traced_logits_are_bit_identical_on_synthetic_models_of_every_weight_format() {
    let tokens = [3u32, 1, 4, 1, 5, 9, 2, 6];
    for arch in ["llama", "qwen2"] {
        for ty in GgmlType::WEIGHTS {
            let model =
                OwnedQuantizedModel::from_mapped(common::synthetic_model(arch, ty, None)).unwrap();
            assert_traced_is_plain(&model, &tokens, &format!("{arch} {ty}"));
        }
    }
}

#[test]
fn smollm2_trace_is_complete_valid_and_bit_identical() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let model = OwnedQuantizedModel::open(&path).unwrap();
    let tokens = [1780u32, 314, 216, 34, 27, 34, 47];
    assert_traced_is_plain(&model, &tokens, "SmolLM2");
    let t = model.forward_traced(&tokens).unwrap();
    validate(&t);
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(
        serde_json::from_str::<ForwardTrace>(&json).unwrap(),
        t,
        "JSON round-trip"
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["layers"][3]["ffn_inner"]["all"]["stdev"] = serde_json::json!(1.0);
    assert!(
        serde_json::from_value::<ForwardTrace>(v).is_err(),
        "unknown keys are refused"
    );
    assert_eq!(t.layers.len(), 30);
    let n = tokens.len();
    for (l, layer) in t.layers.iter().enumerate() {
        for slot in Slot::layer_slots(pv::model::Arch::Llama.spec()) {
            let s = layer.get(slot).unwrap();
            let width = s.all.scope.width;
            assert_eq!(s.all.count, n * width, "layer {l} {}", slot.name());
            assert_eq!((s.all.nan, s.all.inf), (0, 0), "layer {l} {}", slot.name());
            assert_eq!((s.last.scope.first_position, s.last.count), (n - 1, width));
        }
        assert_eq!(layer.get(Slot::FfnInner).unwrap().all.scope.width, 1536);
    }
    assert_eq!(
        t.logits.top_k[0].0, 2,
        "the top token of `What is 2+2?` is <|im_end|>"
    );
}

/// A slot only one trace records is refused between pv's engines, and listed as not
/// captured (by the engine lacking it) when that side may leave slots out; its scopes and
/// everything else must still agree.
#[test]
fn parity_lists_what_a_partial_engine_did_not_capture() {
    let model =
        OwnedQuantizedModel::from_mapped(common::synthetic_model("llama", GgmlType::Q8_0, None))
            .unwrap();
    let a = model.forward_traced(&[1, 2, 3]).unwrap();
    let mut b = a.clone();
    b.engine = "other 1.0".into();
    for l in &mut b.layers {
        l.0.remove(&Slot::FfnGate);
    }
    assert!(matches!(
        check_parity(&a, &b),
        Err(ParityError::Slot { .. })
    ));
    assert!(pv::trace::parity(&a, &b, [true, false]).is_err());
    let missing = pv::trace::parity(&a, &b, [false, true])
        .unwrap()
        .not_captured;
    let got: Vec<(Option<usize>, Slot, &str)> = missing
        .iter()
        .map(|m| (m.layer, m.slot, m.engine.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(0), Slot::FfnGate, "other 1.0"),
            (Some(1), Slot::FfnGate, "other 1.0")
        ]
    );
    // The once-per-pass slots too: a partial engine may lack the final norm (listed with no
    // layer), pv's engines may not.
    let mut d = b.clone();
    d.final_norm = None;
    assert!(matches!(
        pv::trace::parity(&a, &d, [true, false]),
        Err(ParityError::Slot { .. })
    ));
    let missing = pv::trace::parity(&a, &d, [false, true])
        .unwrap()
        .not_captured;
    assert_eq!(
        missing.last().map(|m| (m.layer, m.slot)),
        Some((None, Slot::FinalNorm))
    );
    let mut c = b.clone();
    let inner = c.layers[1].get_mut(Slot::FfnInner).unwrap();
    inner.last = inner.all.clone();
    assert!(matches!(
        pv::trace::parity(&a, &c, [false, true]),
        Err(ParityError::Scope { .. })
    ));
}

#[test]
fn parity_refuses_unlike_traces_and_capture_keeps_whole_tensors() {
    let model =
        OwnedQuantizedModel::from_mapped(common::synthetic_model("llama", GgmlType::Q8_0, None))
            .unwrap();
    let a = model.forward_traced(&[1, 2, 3]).unwrap();
    assert_eq!(check_parity(&a, &a.clone()), Ok(()));
    let b = model.forward_traced(&[1, 2, 3, 4]).unwrap();
    assert!(matches!(
        check_parity(&a, &b),
        Err(ParityError::Tokens { .. })
    ));
    let mut c = a.clone();
    let inner = c.layers[1].get_mut(Slot::FfnInner).unwrap();
    inner.last = inner.all.clone();
    let err = check_parity(&a, &c).unwrap_err();
    assert!(
        err.to_string().contains("layers[1].ffn_inner: scope last"),
        "{err}"
    );
    let per_token = model
        .forward_traced_with(
            &[1, 2, 3],
            &TraceOptions {
                per_token: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        check_parity(&a, &per_token.trace),
        Err(ParityError::PerToken { .. })
    ));
    assert_eq!(
        per_token.trace.layers[0]
            .get(Slot::Q)
            .unwrap()
            .per_token
            .as_ref()
            .unwrap()
            .len(),
        3
    );

    let opts = TraceOptions {
        capture: Some(CaptureSpec {
            slots: vec![Slot::FfnInner, Slot::LOut],
            layers: Some(vec![1]),
        }),
        ..Default::default()
    };
    let t = model.forward_traced_with(&[1, 2, 3], &opts).unwrap();
    assert_eq!(t.captured.len(), 2);
    assert!(
        t.captured
            .iter()
            .all(|c| c.layer == Some(1) && c.data.len() == 3 * c.width)
    );
    // The captured tensor is what the statistics describe.
    let inner = t
        .captured
        .iter()
        .find(|c| c.slot == Slot::FfnInner)
        .unwrap();
    let mean = inner.data.iter().map(|&v| v as f64).sum::<f64>() / inner.data.len() as f64;
    assert!((mean - t.trace.layers[1].get(Slot::FfnInner).unwrap().all.mean).abs() < 1e-9);
}
