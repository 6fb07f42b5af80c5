//! Agreement of pv's GGUF engine with llama.cpp on SmolLM2-135M-Instruct Q4_1.
//!
//! Two llama.cpp references, same commit, two CPUs (see `tests/fixtures/README.md`): the
//! shared oracle from an AVX-512 machine and a build on an AVX2-only machine. They agree on
//! token ids but not bit for bit on logits (llama.cpp's `exp` and reduction widths differ
//! between its SIMD builds) and their greedy continuations differ on the `code` prompt. pv
//! reproduces either build's arithmetic (`Flavor`), and is held to it exactly: identical
//! token ids, bit-identical last-position logits (so identical top-10 order), and identical
//! greedy continuations and text, for every prompt, against each build in its flavour.

mod common;

use pv::model::{Flavor, OwnedQuantizedModel, top_k};
use pv::tokenizer::Tokenizer;

/// A reference fixture with each prompt's full last-position logits
/// (`{logits_prefix}{i}.f32`, raw little-endian f32).
struct Reference {
    source: String,
    eos: Vec<u32>,
    prompts: Vec<(common::RefPrompt, Vec<f32>)>,
}

fn reference(json: &str, logits_prefix: &str) -> Reference {
    let r = common::llamacpp_reference(json);
    let prompts = r
        .prompts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let logits = common::fixture(&format!("{logits_prefix}{i}.f32"))
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (p, logits)
        })
        .collect();
    Reference {
        source: r.source,
        eos: r.eos,
        prompts,
    }
}

fn references() -> [Reference; 2] {
    let a = reference("llamacpp_smollm2.json", "llamacpp_smollm2_logits_p");
    let b = reference(
        "llamacpp_avx2_smollm2.json",
        "llamacpp_avx2_smollm2_logits_p",
    );
    assert_eq!(a.prompts.len(), b.prompts.len());
    [a, b]
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    dot / (na.sqrt() * nb.sqrt())
}

#[test]
fn token_ids_match_llamacpp_exactly() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let file = pv::gguf::GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let [oracle, _] = references();
    // llama.cpp's whole end-of-generation set (`llama_vocab_is_eog`, listed by
    // scripts/llamacpp-figures.py): the shared oracle lists EOS and EOT only, [0, 2], but
    // llama.cpp also ends on `<reponame>` (4), found by its spelling as the FIM repository
    // token.
    let figures = common::llamacpp_reference("formats/smollm2-Q4_1.json");
    assert_eq!(oracle.eos, [0, 2]);
    assert_eq!(tok.end_tokens(), figures.eos, "end-of-generation tokens");
    assert_eq!(figures.eos, [0, 2, 4]);
    for (p, _) in &oracle.prompts {
        assert_eq!(tok.encode(&p.text).unwrap(), p.tokens, "prompt {}", p.name);
    }
}

#[test]
fn last_position_logits_are_bit_identical_to_llamacpp() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let mut model = OwnedQuantizedModel::open(&path).unwrap();
    for (r, flavor) in references().iter().zip([Flavor::Avx512, Flavor::Avx2]) {
        model.flavor = flavor;
        for (p, reference) in &r.prompts {
            let logits = model.forward(&p.tokens).unwrap();
            let ours = logits.last();
            let differing = ours
                .iter()
                .zip(reference)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let worst = ours
                .iter()
                .zip(reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!(
                "{flavor:?} {}: {differing} of {} logits differ (max |diff| {worst}, cosine {:.7})",
                p.name,
                ours.len(),
                cosine(ours, reference)
            );
            let top: Vec<(u32, f32)> = top_k(ours, 10)
                .iter()
                .map(|&(t, v)| (t as u32, v))
                .collect();
            assert_eq!(
                top,
                p.top20[..10],
                "{flavor:?} {}: top-10 vs {}",
                p.name,
                r.source
            );
            assert_eq!(
                differing, 0,
                "{flavor:?} {}: logits vs {}",
                p.name, r.source
            );
        }
    }
}

#[test]
fn greedy_continuations_are_identical_to_llamacpp() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let mut model = OwnedQuantizedModel::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    for (r, flavor) in references().iter().zip([Flavor::Avx512, Flavor::Avx2]) {
        model.flavor = flavor;
        for (p, _) in &r.prompts {
            let got = model
                .generate_greedy(&p.tokens, 32, tok.end_tokens())
                .unwrap();
            assert_eq!(got, p.greedy, "{flavor:?} {}: vs {}", p.name, r.source);
            assert_eq!(
                tok.decode(&got).unwrap(),
                p.greedy_text,
                "{flavor:?} {}",
                p.name
            );
        }
    }
}

/// Prompts longer than one llama.cpp micro-batch (512 tokens), evaluated as llama.cpp
/// evaluates them (`OwnedQuantizedModel::prefill`: pieces of 512 through the KV cache), give
/// llama.cpp's bits. Only the prompts whose last piece is shorter than 8 tokens are run here
/// (it takes the untiled or single-token kernels, where one batch and pieces part ways; the
/// Gemma ones are 513 and 1,029 tokens, the last piece past the sliding window); the
/// contract llamacpp-reference-v1 (REFERENCE-004/005) holds all fifteen long prompts.
#[test]
fn long_prompts_split_into_micro_batches_match_llamacpp() {
    let (Some(smollm2), Some(gemma)) = (
        common::smollm2(),
        common::real_model("gemma-3-270m-q4_k_m.gguf"),
    ) else {
        return;
    };
    let mut checked = 0;
    for (path, fixture) in [
        (smollm2, "llamacpp_smollm2_long.json"),
        (gemma, "llamacpp_gemma3_long.json"),
    ] {
        let model = OwnedQuantizedModel::open(&path).unwrap();
        let r = common::llamacpp_reference(fixture);
        for p in r.prompts.iter().filter(|p| {
            let tail = p.tokens.len() % pv::model::N_UBATCH;
            p.tokens.len() > pv::model::N_UBATCH && (1..8).contains(&tail)
        }) {
            let (greedy, last) = model
                .generate_greedy_observed(&p.tokens, 32, &r.eos, &mut pv::model::NoopObserver)
                .unwrap();
            let top: Vec<(u32, f32)> = top_k(&last, 10)
                .iter()
                .map(|&(t, v)| (t as u32, v))
                .collect();
            assert_eq!(top, p.top20[..10], "{fixture} {}: top-10", p.name);
            assert_eq!(greedy, p.greedy, "{fixture} {}: greedy", p.name);
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "the fixtures' short-tailed long prompts");
}
