//! Gemma 3 270M Q4_K_M through pv's GGUF engine against llama.cpp (same commit): token ids,
//! last-position top-10, and greedy continuations on twelve prompts (the shared oracle's four
//! and eight more), built by `scripts/llamacpp-figures.py` (see `tests/fixtures/README.md`).
//! The shared oracle from the AVX-512 machine agrees with those figures on its four prompts.

mod common;

use pv::model::{LogitsFor, NoopObserver, OwnedQuantizedModel, top_k};
use pv::tokenizer::Tokenizer;

fn gemma3() -> Option<std::path::PathBuf> {
    common::real_model("gemma-3-270m-q4_k_m.gguf")
}

fn here() -> common::Reference {
    common::llamacpp_reference("llamacpp_gemma3_12.json")
}

#[test]
fn token_ids_and_end_tokens_match_llamacpp() {
    let Some(path) = gemma3() else {
        return;
    };
    let file = pv::gguf::GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let common::Reference { eos, prompts, .. } = here();
    // llama.cpp ends generation at <eos>, <end_of_turn> and at `</s>` (a user-defined token it
    // promotes to an end token by its spelling).
    assert_eq!(tok.end_tokens(), eos);
    assert_eq!(prompts.len(), 12);
    for p in &prompts {
        assert_eq!(tok.encode(&p.text).unwrap(), p.tokens, "{}", p.name);
    }
}

/// Per prompt, evaluated as generation evaluates it: the last position's top-20 logits
/// bit-identical to llama.cpp's (so top-10 in the same order), and the greedy continuation of
/// 32 tokens identical, with its text. This holds because the engine reproduces the products
/// llama.cpp picks per matrix and batch: Q5_0 and Q8_0 as its tinyBLAS and `vec_dot` kernels
/// compute them, Q4_K as its repacked 8x8 kernels (one row, four rows), Q6_K as `vec_dot`
/// below a batch of 8 and as its tiled kernel from 8.
#[test]
fn top10_and_greedy_match_llamacpp() {
    let Some(path) = gemma3() else {
        return;
    };
    let model = OwnedQuantizedModel::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    let prompts = here().prompts;
    let (mut greedy_same, mut top10_same) = (0, 0);
    for p in &prompts {
        // The prompt evaluated as generation evaluates it: only the last position's logits
        // asked for (llama.cpp then runs the end of the last layer on that row alone).
        let last = model
            .forward_with_cache(
                &p.tokens,
                &mut model.new_cache(),
                LogitsFor::Last,
                &mut NoopObserver,
            )
            .unwrap();
        let ours: Vec<u32> = top_k(&last, 10).iter().map(|&(t, _)| t as u32).collect();
        let theirs: Vec<u32> = p.top20[..10].iter().map(|&(t, _)| t).collect();
        let worst = p
            .top20
            .iter()
            .map(|&(t, v)| (last[t as usize] - v).abs())
            .fold(0f32, f32::max);
        let got = model
            .generate_greedy(&p.tokens, 32, tok.end_tokens())
            .unwrap();
        let same = got == p.greedy;
        greedy_same += same as usize;
        eprintln!(
            "{:<14} top-10 {}  max |logit diff| on llama.cpp's top-20 {worst:.4}  greedy {}",
            p.name,
            if ours == theirs { "same" } else { "DIFFERENT" },
            if same {
                "same".to_string()
            } else {
                let at = got
                    .iter()
                    .zip(&p.greedy)
                    .take_while(|(a, b)| a == b)
                    .count();
                format!("differs from token {at}")
            }
        );
        top10_same += (ours == theirs) as usize;
        for &(t, v) in &p.top20 {
            assert_eq!(
                last[t as usize].to_bits(),
                v.to_bits(),
                "{}: logit {t}",
                p.name
            );
        }
        if same {
            assert_eq!(tok.decode(&got).unwrap(), p.greedy_text, "{}", p.name);
        }
    }
    eprintln!(
        "greedy-32 identical on {greedy_same} of {n}; top-10 order identical on {top10_same} of {n}",
        n = prompts.len()
    );
    assert_eq!(
        top10_same,
        prompts.len(),
        "top-10 identical on {top10_same}"
    );
    assert_eq!(
        greedy_same,
        prompts.len(),
        "greedy identical on {greedy_same}"
    );
}

/// The shared oracle and the twelve-prompt figures (two AVX-512 builds of the same commit on
/// different machines) agree exactly on the oracle's four prompts: ids, top-20 values, greedy.
#[test]
fn shared_oracle_equals_the_figures_built_here() {
    let theirs = common::llamacpp_reference("llamacpp_gemma3.json").prompts;
    let ours = here().prompts;
    assert_eq!(theirs.len(), 4);
    for (a, b) in theirs.iter().zip(&ours) {
        assert_eq!(a.text, b.text);
        assert_eq!(a.tokens, b.tokens, "{}", a.name);
        assert_eq!(a.top20, b.top20, "{}", a.name);
        assert_eq!(a.greedy, b.greedy, "{}", a.name);
    }
}

/// The Gemma contract's layer-local limits (GEMMA-005) on the real model: the intact engine
/// raises no alarm, and a fault injected at one of Gemma's own slots (the q/k norms, the
/// post-norms, GeGLU's activation) or a shared one is caught at exactly that slot and layer.
#[test]
fn gemma_contract_limits_catch_faults_where_injected() {
    use pv::apr::AprFile;
    use pv::model::{AprDtype, AprTransformer, Fault, Slot, gguf_to_apr};
    use pv::trace::{
        CompareMode, Thresholds, compare_with_reference, judge_summary, reference_pass, summarize,
    };
    let Some(path) = gemma3() else {
        return;
    };
    let text =
        std::fs::read_to_string(common::root().join("contracts/gemma3-forward-v1.yaml")).unwrap();
    let contract = pv::contract::parse_text("gemma3-forward-v1.yaml", &text).unwrap();
    let params = &contract.test("GEMMA-005").unwrap().params;
    let limits: Thresholds = serde_json::from_value(params["thresholds"].clone()).unwrap();
    let gguf = OwnedQuantizedModel::open(&path).unwrap();
    let apr = AprFile::from_bytes(
        gguf_to_apr(gguf.file(), AprDtype::F32)
            .unwrap()
            .to_bytes()
            .unwrap(),
    )
    .unwrap();
    let apr = AprTransformer::load(apr).unwrap();
    let tok = Tokenizer::from_gguf(gguf.file()).unwrap();
    // The contract's twelve held-out prompts, judged together as GEMMA-005 judges them: the
    // geometric-mean bound of a set is what places a 3% zeroed at the last layer (with six
    // prompts it is first seen at `l_out`, with one or two not at all).
    let references: Vec<_> = params["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| reference_pass(&apr, &tok.encode(p.as_str().unwrap()).unwrap()).unwrap())
        .collect();
    let first = |fault: Option<Fault>| {
        let diffs: Vec<_> = references
            .iter()
            .map(|r| {
                compare_with_reference(&gguf, r, fault, CompareMode::Local, &Thresholds::default())
                    .unwrap()
            })
            .collect();
        judge_summary(&summarize(&diffs), &limits)
            .first()
            .map(|v| (v.slot, v.layer))
    };
    assert_eq!(first(None), None, "the intact model raised an alarm");
    for (fault, slot, layer) in [
        ("q_norm@11:zero-channel=7", Slot::QNorm, 11),
        ("attn_post_norm@5:negate", Slot::AttnPostNorm, 5),
        ("ffn_act@4:scale=1.05", Slot::FfnAct, 4),
        ("ffn_post_norm@17:zero-fraction=0.03", Slot::FfnPostNorm, 17),
    ] {
        let got = first(Some(fault.parse().unwrap()));
        eprintln!("{fault}: first outside limits {got:?}");
        assert_eq!(got, Some((slot, Some(layer))), "{fault}");
    }
}
