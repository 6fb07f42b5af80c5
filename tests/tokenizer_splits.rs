//! The pre-tokenizer splits `tokenizer.ggml.pre` selects, on a small synthetic byte-level
//! vocabulary: digits alone (smollm, qwen2), digits in threes (llama-bpe), digit runs (gpt2);
//! special tokens kept whole; BOS only when the metadata asks.

mod common;

use pv::gguf::{GgufFile, GgufWriter, Value, ValueType};
use pv::tokenizer::Tokenizer;

/// GPT-2's byte-to-unicode map for printable ASCII is the identity; space is 'Ġ'.
fn vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
    tokens.extend((b'!'..=b'~').map(|c| (c as char).to_string()));
    tokens.push("Ġ".into());
    let merges = ["1 2", "12 3", "Ġ a", "Ġa b", "4 5"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    (tokens, merges.iter().map(|s| s.to_string()).collect())
}

fn tokenizer(pre: &str, add_bos: bool) -> Tokenizer {
    let (tokens, merges) = vocab();
    let mut types = vec![Value::I32(1); tokens.len()];
    types[0] = Value::I32(3);
    types[1] = Value::I32(3);
    let strs = |v: Vec<String>| {
        Value::array(
            ValueType::String,
            v.into_iter().map(Value::String).collect(),
        )
    };
    let mut w = GgufWriter::new();
    w.meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String(pre.into()))
        .meta("tokenizer.ggml.tokens", strs(tokens))
        .meta("tokenizer.ggml.merges", strs(merges))
        .meta(
            "tokenizer.ggml.token_type",
            Value::array(ValueType::I32, types),
        )
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(0))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(add_bos));
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap()
}

fn pieces(t: &Tokenizer, text: &str) -> Vec<String> {
    t.encode(text)
        .unwrap()
        .iter()
        .map(|&id| t.piece(id))
        .collect()
}

#[test]
fn digit_splitting_follows_the_named_pre_tokenizer() {
    assert_eq!(
        pieces(&tokenizer("smollm", false), "12345"),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(
        pieces(&tokenizer("qwen2", false), "12345"),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(
        pieces(&tokenizer("llama-bpe", false), "12345"),
        ["123", "45"]
    );
    assert_eq!(pieces(&tokenizer("gpt2", false), "12345"), ["123", "45"]);
}

#[test]
fn words_merge_with_their_leading_space_and_special_tokens_stay_whole() {
    for pre in ["smollm", "qwen2", "llama-bpe", "gpt2"] {
        let t = tokenizer(pre, false);
        assert_eq!(pieces(&t, "x ab"), ["x", " ab"], "{pre}");
        assert_eq!(
            pieces(&t, "<|im_start|>ab"),
            ["<|im_start|>", "a", "b"],
            "{pre}"
        );
        assert_eq!(
            t.decode(&t.encode("x ab<|endoftext|>").unwrap()).unwrap(),
            "x ab",
            "{pre}"
        );
    }
}

#[test]
fn bos_only_when_the_metadata_asks_and_unknown_pre_is_an_error() {
    assert_eq!(tokenizer("gpt2", true).encode("a").unwrap()[0], 1);
    assert_ne!(tokenizer("gpt2", false).encode("a").unwrap()[0], 1);
    let mut w = GgufWriter::new();
    w.meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("mystery".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Value::array(ValueType::String, vec![Value::String("a".into())]),
        )
        .meta(
            "tokenizer.ggml.merges",
            Value::array(ValueType::String, vec![]),
        );
    let err = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("mystery"), "{err}");
}

/// A Llama-2-style SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`): scores, byte
/// tokens, no merges, and llama.cpp's defaults when keys are absent (BOS 1 added, a space put
/// in front of the text).
#[test]
fn sentencepiece_vocabularies_merge_by_score_with_byte_fallback() {
    let (file, tokens) = common::spm_vocabulary(&[
        ("▁", -2.0),
        ("a", -6.0),
        ("b", -6.0),
        ("ab", -4.0),
        ("▁a", -3.0),
        ("▁ab", -1.0),
        ("ba", -0.5),
    ]);
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    let t = Tokenizer::from_gguf(&file).unwrap();
    // "▁ab" outscores "▁a" + "b"; then "ba" (-0.5) beats "▁a" (-3) in "▁aba": the
    // highest-scoring pair merges first, wherever it is.
    assert_eq!(t.encode("ab").unwrap(), vec![1, id("▁ab")]);
    assert_eq!(t.encode("aba").unwrap(), vec![1, id("▁a"), id("ba")]);
    // 'z' is in no piece: its byte token.
    assert_eq!(t.encode("z").unwrap(), vec![1, id("▁"), id("<0x7A>")]);
    assert_eq!(t.decode(&t.encode("ab z").unwrap()).unwrap(), "ab z");
    assert_eq!(t.end_tokens(), [2]);
}
