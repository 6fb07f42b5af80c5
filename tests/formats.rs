//! Agreement of pv's GGUF engine with llama.cpp in every weight format llama.cpp's quantizer
//! makes of SmolLM2: Q4_1 (the published file) and nine requantizations of it.
//!
//! The figures (`tests/fixtures/formats/smollm2-<FORMAT>.json`, see the fixtures README) are
//! llama.cpp's on an AVX-512 machine, so pv runs in `Flavor::Avx512`. For each of twelve
//! prompts pv must give the same token ids, the same last-position top-20 logits bit for bit,
//! and the same greedy continuation of 32 tokens.
//!
//! The requantized files come from `scripts/fetch-models.sh formats` (llama.cpp's own
//! `llama-quantize`, built from the PyPI sdist); their sha256 must equal the fixture's, or the
//! figures do not apply to them.

mod common;

use std::path::PathBuf;

use pv::model::{Flavor, OwnedQuantizedModel, top_k};
use pv::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

const FORMATS: [&str; 10] = [
    "Q4_1", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K",
];

/// The model file of `format`: the published Q4_1 file, or a requantization in
/// `models/formats/`. Missing files fail the test under `CI=true` and skip it elsewhere.
fn model_file(format: &str) -> Option<PathBuf> {
    if format == "Q4_1" {
        return common::smollm2();
    }
    common::real_model(&format!("formats/smollm2-{format}.gguf"))
}

/// One format's agreement: prompts whose top-20 logits are bit-identical, prompts whose greedy
/// continuation is identical, and a note per disagreeing prompt.
struct Agreement {
    top20: usize,
    greedy: usize,
    prompts: usize,
    notes: Vec<String>,
}

fn agreement(format: &str, path: &std::path::Path) -> Agreement {
    let fixture = format!("formats/smollm2-{format}.json");
    let v: serde_json::Value = serde_json::from_slice(&common::fixture(&fixture)).unwrap();
    let sha = hex(&Sha256::digest(std::fs::read(path).unwrap()));
    assert_eq!(
        sha,
        v["sha256"].as_str().unwrap(),
        "{}: not the file the figures were made from (another llama-quantize build?)",
        path.display()
    );
    let reference = common::llamacpp_reference(&fixture);
    let mut model = OwnedQuantizedModel::open(path).unwrap();
    model.flavor = Flavor::Avx512;
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    assert_eq!(tok.end_tokens(), reference.eos, "{format}: end tokens");
    let mut a = Agreement {
        top20: 0,
        greedy: 0,
        prompts: reference.prompts.len(),
        notes: vec![],
    };
    for p in &reference.prompts {
        assert_eq!(
            tok.encode(&p.text).unwrap(),
            p.tokens,
            "{format} {}",
            p.name
        );
        let logits = model.forward(&p.tokens).unwrap();
        let top: Vec<(u32, f32)> = top_k(logits.last(), 20)
            .iter()
            .map(|&(t, v)| (t as u32, v))
            .collect();
        let same_top = top.len() == p.top20.len()
            && top
                .iter()
                .zip(&p.top20)
                .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits());
        if same_top {
            a.top20 += 1;
        } else {
            let worst = top
                .iter()
                .zip(&p.top20)
                .map(|(a, b)| (a.1 - b.1).abs())
                .fold(0f32, f32::max);
            a.notes
                .push(format!("{}: top-20 differ (max |diff| {worst:e})", p.name));
        }
        let got = model
            .generate_greedy(&p.tokens, 32, tok.end_tokens())
            .unwrap();
        if got == p.greedy {
            a.greedy += 1;
        } else {
            let at = got
                .iter()
                .zip(&p.greedy)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(p.greedy.len()));
            a.notes
                .push(format!("{}: greedy parts at token {at}", p.name));
        }
    }
    a
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
#[ignore = "long suite (scripts/test.sh --long): needs the nine requantized files (llama-quantize built from source)"]
fn every_format_agrees_with_llamacpp() {
    // PV_FORMATS=Q4_0,Q2_K narrows the run while working on one format's kernels.
    let only = std::env::var("PV_FORMATS").ok();
    // A filter that names no format (or a format not listed) would compare nothing or less
    // than asked: a typo, not a pass.
    if let Some(o) = &only {
        for f in o.split(',') {
            assert!(
                FORMATS.contains(&f),
                "PV_FORMATS: {f:?} is none of {FORMATS:?}"
            );
        }
    }
    let mut rows = vec![];
    for format in FORMATS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|f| f == format))
        {
            continue;
        }
        let Some(path) = model_file(format) else {
            continue;
        };
        let a = agreement(format, &path);
        eprintln!(
            "{format:<7} top-20 bit-identical {:>2}/{}  greedy identical {:>2}/{}",
            a.top20, a.prompts, a.greedy, a.prompts
        );
        for n in &a.notes {
            eprintln!("        {n}");
        }
        rows.push((format, a));
    }
    for (format, a) in &rows {
        assert_eq!(
            (a.top20, a.greedy),
            (a.prompts, a.prompts),
            "{format}: {:?}",
            a.notes
        );
    }
}

/// The portable kernels compute what the SIMD ones do, bit for bit, on the real weights of
/// every format: the same logits for one prompt through each table, in both flavours.
#[test]
#[ignore = "long suite (scripts/test.sh --long): needs the nine requantized files (llama-quantize built from source)"]
fn portable_kernels_equal_simd_kernels_on_every_format() {
    use pv::quant::Isa;
    if Isa::best() == Isa::Portable {
        eprintln!("no SIMD kernels on this CPU: nothing to compare");
        return;
    }
    let tokens = [1u32, 504, 3458, 282, 4649, 314, 2114, 28, 1041];
    for format in FORMATS {
        let Some(path) = model_file(format) else {
            continue;
        };
        let open = |k| {
            OwnedQuantizedModel::from_mapped_with_isa(pv::gguf::GgufFile::open(&path).unwrap(), k)
                .unwrap()
        };
        let mut portable = open(Isa::Portable);
        // Every table this CPU runs, not only the one `best` picks here (the AVX-512 tables
        // differ in their tiles: one output per 256-bit register, or two per 512-bit one).
        for isa in Isa::available().into_iter().skip(1) {
            let mut simd = open(isa);
            for flavor in [Flavor::Avx512, Flavor::Avx2] {
                simd.flavor = flavor;
                portable.flavor = flavor;
                let a = simd.forward(&tokens).unwrap();
                let b = portable.forward(&tokens).unwrap();
                let differing = (a.last().iter().zip(b.last()))
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
                assert_eq!(differing, 0, "{format} {isa:?} {flavor:?}: logits differ");
            }
        }
    }
}
