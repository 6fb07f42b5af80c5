//! Gemma 3's SentencePiece tokenizer against llama.cpp's token ids: the shared oracle's
//! prompts and a set of hard cases (spaces, newlines, tabs, special tokens in and around
//! text, byte fallback, scripts and emoji), tokenised by the same llama.cpp commit
//! (`tests/fixtures/llamacpp_gemma3_tokens.json`, provenance in the fixtures README).

mod common;

use pv::gguf::GgufFile;
use pv::tokenizer::Tokenizer;

#[test]
fn gemma3_token_ids_are_llama_cpps() {
    let Some(path) = common::real_model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("tests/fixtures/llamacpp_gemma3_tokens.json"))
            .unwrap(),
    )
    .unwrap();
    let ids = common::json_ids;
    assert_eq!(
        tok.end_tokens(),
        ids(&fixture["eos"]),
        "end-of-generation tokens"
    );
    let prompts = fixture["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 4);
    let mut wrong = Vec::new();
    for p in prompts {
        let text = p["text"].as_str().unwrap();
        let want = ids(&p["tokens"]);
        let got = tok.encode(text).unwrap();
        if got != want {
            wrong.push(format!(
                "{text:?}:\n  pv        {got:?}\n  llama.cpp {want:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} prompts differ:\n{}",
        wrong.len(),
        prompts.len(),
        wrong.join("\n")
    );
}
