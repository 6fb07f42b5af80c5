//! Faults injected through the observer seam change exactly what they name: on one engine,
//! a faulted pass equals the clean one bit for bit up to the injected capture point, differs
//! there, and the rest of the pass computes on the changed values. With no fault, traced
//! logits are forward's (the byte-identity tests hold that for the production path).

mod common;

use pv::gguf::GgmlType;
use pv::model::{Fault, OwnedQuantizedModel, Slot};
use pv::trace::{TraceOptions, Traced, TracedForward, capture_all};

fn traced(m: &dyn TracedForward, fault: Option<Fault>) -> Traced {
    let opts = TraceOptions {
        capture: Some(capture_all()),
        fault,
        ..Default::default()
    };
    m.forward_traced_with(&[4u32, 8, 15, 16, 23, 42], &opts)
        .unwrap()
}

/// Index of the first capture point whose tensor differs in any bit.
fn first_difference(a: &Traced, b: &Traced) -> Option<(Option<usize>, Slot)> {
    a.captured
        .iter()
        .zip(&b.captured)
        .find(|(x, y)| {
            x.data.len() != y.data.len()
                || x.data
                    .iter()
                    .zip(&y.data)
                    .any(|(p, q)| p.to_bits() != q.to_bits())
        })
        .map(|(x, _)| (x.layer, x.slot))
}

#[test]
fn a_fault_changes_its_capture_point_first_in_both_engines() {
    let (gguf, apr) = common::synthetic_pair("llama", GgmlType::Q8_0);
    for engine in [&gguf as &dyn TracedForward, &apr] {
        let clean = traced(engine, None);
        assert_eq!(first_difference(&clean, &traced(engine, None)), None);
        for spec in [
            "attn_norm@0:scale=1.02",
            "q@1:zero-channel=7",
            "k@0:swap-channels=1,2",
            "v@1:negate",
            "attn_out@0:zero-fraction=0.03",
            "ffn_inp@1:drop-residual",
            "ffn_gate@0:scale=2",
            "ffn_up@1:negate",
            "ffn_inner@0:zero-channel=3",
            "ffn_down@1:scale=1.05",
            "l_out@0:drop-residual",
            "final_norm:scale=1.1",
            "logits:negate",
        ] {
            let f: Fault = spec.parse().unwrap();
            let faulty = traced(engine, Some(f));
            assert_eq!(
                first_difference(&clean, &faulty),
                Some((f.layer, f.slot)),
                "{spec}"
            );
            // Everything after a per-layer fault computes on the changed values: the
            // logits move too (except where the fault is the logits themselves).
            assert_ne!(
                clean.logits.data, faulty.logits.data,
                "{spec}: the fault propagates"
            );
        }
    }
}

#[test]
fn a_dropped_residual_leaves_the_sublayer_output_alone() {
    let gguf =
        OwnedQuantizedModel::from_mapped(common::synthetic_model("qwen2", GgmlType::Q8_0, None))
            .unwrap();
    let t = traced(&gguf, Some("ffn_inp@1:drop-residual".parse().unwrap()));
    let get = |slot| {
        &t.captured
            .iter()
            .find(|c| c.layer == Some(1) && c.slot == slot)
            .unwrap()
            .data
    };
    assert_eq!(get(Slot::FfnInp), get(Slot::AttnOut));
}
