//! A tokenizer description as aprender's APR files hold it: flat `tokenizer.*` keys of the
//! metadata (`tokenizer.vocabulary`, `tokenizer.merges`, `tokenizer.bos_token_id`, ...), as
//! `apr import` writes them from a GGUF file's `tokenizer.ggml.*` keys.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{SpecError, TokenizerSpec};

/// Each field of [`TokenizerSpec`] and the keys aprender's metadata gives it, the one pv
/// writes first.
const KEYS: [(&str, &[&str]); 15] = [
    ("model", &["tokenizer.model", "tokenizer.model_type"]),
    ("pre", &["tokenizer.pre_type"]),
    ("tokens", &["tokenizer.vocabulary"]),
    ("merges", &["tokenizer.merges"]),
    ("token_types", &["tokenizer.token_type"]),
    ("bos", &["tokenizer.bos_token_id"]),
    ("eos", &["tokenizer.eos_token_id"]),
    ("eot", &["tokenizer.eot_token_id"]),
    ("eom", &["tokenizer.eom_token_id"]),
    ("fim_pad", &["tokenizer.fim_pad_token_id"]),
    ("fim_rep", &["tokenizer.fim_rep_token_id"]),
    ("fim_sep", &["tokenizer.fim_sep_token_id"]),
    ("add_bos", &["tokenizer.add_bos_token"]),
    ("scores", &["tokenizer.scores"]),
    ("add_space_prefix", &["tokenizer.add_space_prefix"]),
];

fn keys(field: &str) -> &'static [&'static str] {
    KEYS.iter()
        .find(|(f, _)| *f == field)
        .map_or(&[], |(_, k)| k)
}

impl SpecError {
    /// The aprender metadata key that holds the field.
    pub fn aprender_key(&self) -> &'static str {
        keys(self.field).first().copied().unwrap_or("tokenizer")
    }
}

/// The first of `field`'s keys present (and not null) in `meta`.
fn get<'a>(meta: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    keys(field)
        .iter()
        .find_map(|k| meta.get(*k).filter(|v| !v.is_null()))
}

fn bad(field: &'static str, reason: String) -> SpecError {
    SpecError { field, reason }
}

fn array<'a>(meta: &'a Map<String, Value>, field: &'static str) -> Result<&'a [Value], SpecError> {
    match get(meta, field) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(bad(field, format!("expected an array, found {}", kind(v)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn strings(meta: &Map<String, Value>, field: &'static str) -> Result<Vec<String>, SpecError> {
    array(meta, field)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(String::from)
                .ok_or_else(|| bad(field, format!("element {i} is {}, not a string", kind(v))))
        })
        .collect()
}

fn id(meta: &Map<String, Value>, field: &'static str) -> Result<Option<u32>, SpecError> {
    get(meta, field)
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(field, format!("expected a token id, found {v}")))
        })
        .transpose()
}

fn flag(meta: &Map<String, Value>, field: &'static str, default: bool) -> Result<bool, SpecError> {
    match get(meta, field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(field, format!("expected a boolean, found {v}"))),
    }
}

impl TokenizerSpec {
    /// The tokenizer an aprender-dialect file describes, or `None` when it holds no
    /// vocabulary. Missing keys take the GGUF defaults (every token normal text when no
    /// `tokenizer.token_type` is given, BOS 1 and EOS 2 and a space prefix for a SentencePiece
    /// vocabulary); the model is `tokenizer.model` (`apr import` of a quantized GGUF) or
    /// `tokenizer.model_type` (of an f32 one), else BPE unless scores are given.
    pub fn from_aprender(meta: &Map<String, Value>) -> Result<Option<Self>, SpecError> {
        if get(meta, "tokens").is_none() {
            return Ok(None);
        }
        let tokens = strings(meta, "tokens")?;
        let n = tokens.len();
        let scores: Vec<f32> = array(meta, "scores")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64().map(|x| x as f32).ok_or_else(|| {
                    bad(
                        "scores",
                        format!("element {i} is {}, not a number", kind(v)),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let model = match get(meta, "model") {
            None if scores.is_empty() => "gpt2".to_string(),
            None => "llama".to_string(),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "gpt2" | "bpe" => "gpt2".to_string(),
                "llama" | "spm" | "sentencepiece" => "llama".to_string(),
                _ => s.clone(),
            },
            Some(v) => return Err(bad("model", format!("expected a string, found {v}"))),
        };
        let spm = model == "llama";
        // A SentencePiece vocabulary's BOS and EOS default to 1 and 2 when the keys are
        // absent, as in GGUF; an explicit null says it has none.
        let special = |field: &'static str, default: u32| -> Result<Option<u32>, SpecError> {
            let explicit_null = keys(field)
                .iter()
                .find_map(|k| meta.get(*k))
                .is_some_and(Value::is_null);
            Ok(id(meta, field)?
                .or((spm && !explicit_null && (default as usize) < n).then_some(default)))
        };
        let token_types = match get(meta, "token_types") {
            None => vec![1; n],
            Some(_) => array(meta, "token_types")?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64()
                        .and_then(|t| i32::try_from(t).ok())
                        .ok_or_else(|| {
                            bad(
                                "token_types",
                                format!("element {i} is {v}, not a token type"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let pre = match get(meta, "pre") {
            None => "default".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(bad("pre", format!("expected a string, found {v}"))),
        };
        Ok(Some(TokenizerSpec {
            pre,
            merges: strings(meta, "merges")?,
            token_types,
            bos: special("bos", 1)?,
            eos: special("eos", 2)?,
            eot: id(meta, "eot")?,
            eom: id(meta, "eom")?,
            fim_pad: id(meta, "fim_pad")?,
            fim_rep: id(meta, "fim_rep")?,
            fim_sep: id(meta, "fim_sep")?,
            add_bos: flag(meta, "add_bos", spm)?,
            scores: if spm { scores } else { Vec::new() },
            add_space_prefix: spm && flag(meta, "add_space_prefix", true)?,
            tokens,
            model,
        }))
    }

    /// The description as aprender's flat keys, every field written explicitly (so no
    /// reader has to know a default).
    pub fn to_aprender(&self) -> BTreeMap<String, Value> {
        let spm = self.model == "llama";
        let mut out = BTreeMap::new();
        let mut put = |field: &str, v: Value| {
            out.insert(keys(field)[0].to_string(), v);
        };
        put("model", Value::from(self.model.clone()));
        put("pre", Value::from(self.pre.clone()));
        put("tokens", Value::from(self.tokens.clone()));
        if !self.merges.is_empty() {
            put("merges", Value::from(self.merges.clone()));
        }
        put("token_types", Value::from(self.token_types.clone()));
        for (field, id) in self.special_ids() {
            match id {
                Some(id) => put(field, Value::from(id)),
                // Absent would mean "the default" for these two.
                None if spm && matches!(field, "bos" | "eos") => put(field, Value::Null),
                None => {}
            }
        }
        put("add_bos", Value::from(self.add_bos));
        if !self.scores.is_empty() {
            put(
                "scores",
                Value::Array(
                    self.scores
                        .iter()
                        .map(|&s| crate::apr::metadata::f32_number(s))
                        .collect(),
                ),
            );
        }
        if spm {
            put("add_space_prefix", Value::from(self.add_space_prefix));
        }
        out.insert(
            "tokenizer.vocab_size".into(),
            Value::from(self.tokens.len()),
        );
        out
    }
}
