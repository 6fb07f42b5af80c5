//! Text to token ids and back, built from the model's own GGUF metadata
//! (`tokenizer.ggml.*`): for `gpt2` models, byte-level BPE on top of the `tokenizers` crate
//! from the stored vocabulary and merges, with the pre-tokenizer split that
//! `tokenizer.ggml.pre` names (as llama.cpp chooses it); for `llama` models (Llama 2,
//! Gemma), SentencePiece-style merging by score with byte fallback ([`spm`]). Control and
//! user-defined tokens are kept whole in both.

mod aprender;
pub mod spm;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::gguf::{GgufError, GgufFile, Value, ValueType};

/// Qwen2's split: letters with one leading non-letter, single digits, punctuation runs,
/// newlines kept apart.
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split: as Qwen2's but digits in runs of up to three.
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Texts llama.cpp treats as end-of-generation when they are control tokens.
const END_TEXTS: [&str; 22] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// Spellings by which llama.cpp finds a vocabulary's fill-in-the-middle pad, repository and
/// file-separator tokens (in that order) when the file does not name them; all three end
/// generation.
const FIM_END_TEXTS: [&[&str]; 3] = [
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

/// GGUF token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Metadata is missing or malformed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The metadata names something pv does not implement.
    #[error("tokenizer: {0}")]
    Unsupported(String),
    /// A description (e.g. an APR file's) that cannot be a tokenizer.
    #[error("tokenizer field `{field}`: {reason}")]
    Spec {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizers library failed.
    #[error("tokenizer: {0}")]
    Library(String),
}

/// How a vocabulary turns text into pieces.
enum Inner {
    /// Byte-level BPE (`gpt2`), through the `tokenizers` crate.
    Bpe(Box<HfTokenizer>),
    /// SentencePiece-style merging by score (`llama`).
    Spm(spm::Spm),
}

/// A model's tokenizer.
pub struct Tokenizer {
    inner: Inner,
    bos: Option<u32>,
    add_bos: bool,
    end_tokens: Vec<u32>,
    pre: String,
}

/// The array under `key`, and a maker of errors naming that key.
fn array<'a>(
    f: &'a GgufFile,
    key: &str,
) -> Result<(&'a crate::gguf::Array, impl Fn(String) -> GgufError), GgufError> {
    let owned = key.to_string();
    let bad = move |reason: String| GgufError::Metadata {
        key: owned.clone(),
        reason,
    };
    match f.require(key)?.as_array() {
        Some(a) => Ok((a, bad)),
        None => Err(bad("expected an array".into())),
    }
}

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<&'a str>, GgufError> {
    let (items, bad) = array(f, key)?;
    if items.elem_type() != ValueType::String {
        return Err(bad(format!(
            "expected an array of strings, found one of {:?}",
            items.elem_type()
        )));
    }
    Ok((0..items.len())
        .map(|i| items.str(i).unwrap_or_default())
        .collect())
}

fn token_id(f: &GgufFile, key: &str, vocab: usize) -> Result<Option<u32>, GgufError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
            _ => Err(GgufError::Metadata {
                key: key.into(),
                reason: format!("{} is not a token id below {vocab}", v.summary()),
            }),
        },
    }
}

/// Everything needed to rebuild a model's tokenizer, as stored in GGUF metadata
/// (`tokenizer.ggml.*`) or in an APR file's JSON metadata, checked on construction.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer split.
    pub pre: String,
    /// The vocabulary in id order.
    pub tokens: Vec<String>,
    /// Merges as `"a b"`, highest priority first.
    pub merges: Vec<String>,
    /// GGUF token types per id (1 normal, 3 control, 4 user-defined, ...).
    pub token_types: Vec<i32>,
    /// BOS id.
    pub bos: Option<u32>,
    /// EOS, EOT and EOM ids, as given.
    pub eos: Option<u32>,
    /// End-of-turn id.
    pub eot: Option<u32>,
    /// End-of-message id.
    pub eom: Option<u32>,
    /// Fill-in-the-middle pad, repository and file-separator ids, as given
    /// (`tokenizer.ggml.fim_pad_token_id`, ...); found by spelling when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fim_pad: Option<u32>,
    /// See `fim_pad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fim_rep: Option<u32>,
    /// See `fim_pad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fim_sep: Option<u32>,
    /// Whether BOS is prepended.
    pub add_bos: bool,
    /// `tokenizer.ggml.scores`: merge priorities of a SentencePiece vocabulary (empty for
    /// BPE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.add_space_prefix`: a SentencePiece vocabulary puts a space before
    /// text that starts the input or follows a special token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add_space_prefix: bool,
}

/// What is wrong with a tokenizer description: the field (as [`TokenizerSpec`] names it,
/// which is also its key in an APR file's `tokenizer` metadata) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The field (`merges`, `bos`, ...).
    pub field: &'static str,
    /// What is wrong, naming the element when there is one.
    pub reason: String,
}

impl SpecError {
    /// The GGUF metadata key that holds the field.
    pub fn gguf_key(&self) -> &'static str {
        match self.field {
            "model" => "tokenizer.ggml.model",
            "scores" => "tokenizer.ggml.scores",
            "tokens" => "tokenizer.ggml.tokens",
            "merges" => "tokenizer.ggml.merges",
            "token_types" => "tokenizer.ggml.token_type",
            "bos" => "tokenizer.ggml.bos_token_id",
            "eos" => "tokenizer.ggml.eos_token_id",
            "eot" => "tokenizer.ggml.eot_token_id",
            "eom" => "tokenizer.ggml.eom_token_id",
            "fim_pad" => "tokenizer.ggml.fim_pad_token_id",
            "fim_rep" => "tokenizer.ggml.fim_rep_token_id",
            "fim_sep" => "tokenizer.ggml.fim_sep_token_id",
            _ => "tokenizer.ggml",
        }
    }
}

impl TokenizerSpec {
    /// The special token ids, each with its field's name.
    pub fn special_ids(&self) -> [(&'static str, Option<u32>); 7] {
        [
            ("bos", self.bos),
            ("eos", self.eos),
            ("eot", self.eot),
            ("eom", self.eom),
            ("fim_pad", self.fim_pad),
            ("fim_rep", self.fim_rep),
            ("fim_sep", self.fim_sep),
        ]
    }

    /// The checks a description must pass before a tokenizer is built from it, the same for
    /// both formats (each names the field its own way): a supported model, special ids
    /// below the vocabulary size, one type per token, and merges that join two tokens of the
    /// vocabulary into a third.
    pub fn check(&self) -> Result<(), SpecError> {
        let err = |field, reason| Err(SpecError { field, reason });
        let n = self.tokens.len();
        match self.model.as_str() {
            "gpt2" => {}
            "llama" if self.scores.len() == n => {}
            "llama" => {
                return err(
                    "scores",
                    format!("{} scores for {n} tokens", self.scores.len()),
                );
            }
            other => {
                return err(
                    "model",
                    format!(
                        "{other:?} is not supported (\"gpt2\" byte-level BPE, \"llama\" SentencePiece)"
                    ),
                );
            }
        }
        for (field, id) in self.special_ids() {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return err(
                    field,
                    format!("token id {id} is not below the vocabulary size {n}"),
                );
            }
        }
        if self.token_types.len() != n {
            return err(
                "token_types",
                format!("{} token types for {n} tokens", self.token_types.len()),
            );
        }
        let vocab: std::collections::HashSet<&str> =
            self.tokens.iter().map(String::as_str).collect();
        // SentencePiece vocabularies merge by score; stored merges (if any) are not used.
        let merges = if self.model == "gpt2" {
            &self.merges[..]
        } else {
            &[]
        };
        for (i, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return err(
                    "merges",
                    format!("element {i} {m:?}: not two tokens separated by a space"),
                );
            };
            let joined = format!("{a}{b}");
            if let Some(t) = [a, b, joined.as_str()]
                .into_iter()
                .find(|t| !vocab.contains(*t))
            {
                return err(
                    "merges",
                    format!("element {i} {m:?}: token {t:?} is not in the vocabulary"),
                );
            }
        }
        Ok(())
    }

    /// Reads the tokenizer description from GGUF metadata, checking types and ids.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, GgufError> {
        let tokens: Vec<String> = strings(f, "tokenizer.ggml.tokens")?
            .into_iter()
            .map(String::from)
            .collect();
        let n = tokens.len();
        let token_types = match f.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect(),
            None => vec![1; n],
        };
        let model = f.get_str("tokenizer.ggml.model")?.to_string();
        let spm = model == "llama";
        let flag =
            |key: &str, default: bool| f.get(key).and_then(Value::as_bool).unwrap_or(default);
        // llama.cpp's defaults for a SentencePiece vocabulary: BOS 1, EOS 2, BOS added, a
        // space prefix; metadata overrides each.
        let special = |key: &str, default: u32| -> Result<Option<u32>, GgufError> {
            Ok(token_id(f, key, n)?.or((spm && (default as usize) < n).then_some(default)))
        };
        Ok(TokenizerSpec {
            pre: f
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
            merges: if spm && f.get("tokenizer.ggml.merges").is_none() {
                Vec::new()
            } else {
                strings(f, "tokenizer.ggml.merges")?
                    .into_iter()
                    .map(String::from)
                    .collect()
            },
            token_types,
            bos: special("tokenizer.ggml.bos_token_id", 1)?,
            eos: special("tokenizer.ggml.eos_token_id", 2)?,
            eot: token_id(f, "tokenizer.ggml.eot_token_id", n)?,
            eom: token_id(f, "tokenizer.ggml.eom_token_id", n)?,
            fim_pad: token_id(f, "tokenizer.ggml.fim_pad_token_id", n)?,
            fim_rep: token_id(f, "tokenizer.ggml.fim_rep_token_id", n)?,
            fim_sep: token_id(f, "tokenizer.ggml.fim_sep_token_id", n)?,
            add_bos: flag("tokenizer.ggml.add_bos_token", spm),
            scores: if spm {
                floats(f, "tokenizer.ggml.scores")?
            } else {
                Vec::new()
            },
            add_space_prefix: spm && flag("tokenizer.ggml.add_space_prefix", true),
            tokens,
            model,
        })
    }
}

fn floats(f: &GgufFile, key: &str) -> Result<Vec<f32>, GgufError> {
    let (a, bad) = array(f, key)?;
    a.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| bad(format!("element {i} is not a number")))
        })
        .collect()
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, TokenizerError> {
        let spec = TokenizerSpec::from_gguf(f)?;
        spec.check().map_err(|e| GgufError::Metadata {
            key: e.gguf_key().into(),
            reason: e.reason,
        })?;
        Self::from_spec(&spec)
    }

    /// Builds a tokenizer from its description.
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self, TokenizerError> {
        spec.check().map_err(|e| TokenizerError::Spec {
            field: e.field,
            reason: e.reason,
        })?;
        // As llama.cpp: a token spelled as an end-of-generation token ends generation
        // whatever its type, and is treated as a control token from then on.
        let mut end_tokens: Vec<u32> = [spec.eos, spec.eot, spec.eom]
            .into_iter()
            .flatten()
            .collect();
        let mut types = spec.token_types.clone();
        for (i, tok) in spec.tokens.iter().enumerate() {
            if END_TEXTS.contains(&tok.as_str()) {
                end_tokens.push(i as u32);
                types[i] = TOKEN_CONTROL as i32;
            }
        }
        // Its fill-in-the-middle pad, repository and separator tokens end generation too,
        // named by the file or else the first token with one of their spellings.
        for (spellings, given) in
            FIM_END_TEXTS
                .iter()
                .zip([spec.fim_pad, spec.fim_rep, spec.fim_sep])
        {
            let found = given.or_else(|| {
                (spec.tokens.iter())
                    .position(|t| spellings.contains(&t.as_str()))
                    .map(|i| i as u32)
            });
            if let Some(id) = found {
                end_tokens.push(id);
                types[id as usize] = TOKEN_CONTROL as i32;
            }
        }
        let inner = if spec.model == "llama" {
            Inner::Spm(spm::Spm::new(
                spec.tokens.clone(),
                types,
                spec.scores.clone(),
                spec.add_space_prefix,
            ))
        } else {
            Inner::Bpe(Box::new(Self::bpe(spec)?))
        };
        end_tokens.sort_unstable();
        end_tokens.dedup();
        if spec.add_bos && spec.bos.is_none() {
            return Err(TokenizerError::Unsupported(
                "add_bos_token is true but no BOS id is given".into(),
            ));
        }
        Ok(Tokenizer {
            inner,
            bos: spec.bos,
            add_bos: spec.add_bos,
            end_tokens,
            pre: spec.pre.clone(),
        })
    }

    /// The byte-level BPE tokenizer of a `gpt2` description.
    fn bpe(spec: &TokenizerSpec) -> Result<HfTokenizer, TokenizerError> {
        let vocab: Vocab = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = spec
            .merges
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Library(e.to_string()))?;

        let split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
            let pattern = SplitPattern::Regex(re.to_string());
            Ok(Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| TokenizerError::Library(e.to_string()))?
                .into())
        };
        let byte_level =
            |regex: bool| PreTokenizerWrapper::from(ByteLevel::new(false, false, regex));
        let pre_tok: PreTokenizerWrapper = match spec.pre.as_str() {
            "gpt2" | "default" => byte_level(true),
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
            "qwen2" => Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]).into(),
            "llama-bpe" | "llama3" => {
                Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]).into()
            }
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "tokenizer.ggml.pre {other:?} (supported: gpt2, smollm, qwen2, llama-bpe)"
                )));
            }
        };

        let mut inner = HfTokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(&spec.token_types)
            .filter(|&(_, &t)| t as i64 == TOKEN_CONTROL || t as i64 == TOKEN_USER_DEFINED)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&special);
        Ok(inner)
    }

    /// Token ids of `text`, with special tokens parsed whole and BOS prepended only when the
    /// model's metadata asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        match &self.inner {
            Inner::Bpe(t) => {
                let enc = t
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Library(e.to_string()))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Inner::Spm(t) => ids.extend(t.encode(text)),
        }
        Ok(ids)
    }

    /// The text of `ids`, with special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match &self.inner {
            Inner::Bpe(t) => t
                .decode(ids, true)
                .map_err(|e| TokenizerError::Library(e.to_string())),
            Inner::Spm(t) => {
                let bytes: Vec<u8> = ids
                    .iter()
                    .flat_map(|&id| t.piece_bytes(id, false))
                    .collect();
                let s = String::from_utf8_lossy(&bytes).into_owned();
                // The space the encoder put in front comes off again (as llama.cpp does).
                Ok(match s.strip_prefix(' ') {
                    Some(rest) if t.adds_space_prefix() => rest.to_string(),
                    _ => s,
                })
            }
        }
    }

    /// The text one token stands for, special tokens included.
    pub fn piece(&self, id: u32) -> String {
        match &self.inner {
            Inner::Bpe(t) => t.decode(&[id], false).unwrap_or_default(),
            Inner::Spm(t) => String::from_utf8_lossy(&t.piece_bytes(id, true)).into_owned(),
        }
    }

    /// What kind of tokenizer this is, for people: `byte-level BPE` or `SentencePiece`.
    pub fn kind(&self) -> &'static str {
        match &self.inner {
            Inner::Bpe(_) => "byte-level BPE",
            Inner::Spm(_) => "SentencePiece",
        }
    }

    /// Tokens that end generation (EOS, EOT and end-of-turn control tokens).
    pub fn end_tokens(&self) -> &[u32] {
        &self.end_tokens
    }

    /// The pre-tokenizer name from the metadata.
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Bpe(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.len(),
        }
    }

    /// Whether BOS is prepended.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }
}
