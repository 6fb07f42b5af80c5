//! Text to token ids and back, built from the model's own GGUF metadata
//! (`tokenizer.ggml.*`) on top of the `tokenizers` crate: byte-level BPE from the stored
//! vocabulary and merges, the pre-tokenizer split that `tokenizer.ggml.pre` names (as
//! llama.cpp chooses it), and control/user-defined tokens kept whole.

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
const END_TEXTS: [&str; 8] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOS_TOKEN>",
    "<|end_of_text|>",
    "<end_of_utterance>",
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

/// A model's tokenizer.
pub struct Tokenizer {
    inner: HfTokenizer,
    bos: Option<u32>,
    add_bos: bool,
    end_tokens: Vec<u32>,
    pre: String,
}

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<&'a str>, GgufError> {
    let bad = |reason: String| GgufError::Metadata {
        key: key.into(),
        reason,
    };
    let items = f
        .require(key)?
        .as_array()
        .ok_or_else(|| bad("expected an array".into()))?;
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
    /// `tokenizer.ggml.model` (only `gpt2`, byte-level BPE, is supported).
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
    /// Whether BOS is prepended.
    pub add_bos: bool,
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
            "tokens" => "tokenizer.ggml.tokens",
            "merges" => "tokenizer.ggml.merges",
            "token_types" => "tokenizer.ggml.token_type",
            "bos" => "tokenizer.ggml.bos_token_id",
            "eos" => "tokenizer.ggml.eos_token_id",
            "eot" => "tokenizer.ggml.eot_token_id",
            "eom" => "tokenizer.ggml.eom_token_id",
            _ => "tokenizer.ggml",
        }
    }
}

impl TokenizerSpec {
    /// The checks a description must pass before a tokenizer is built from it, the same for
    /// both formats (each names the field its own way): a supported model, special ids
    /// below the vocabulary size, one type per token, and merges that join two tokens of the
    /// vocabulary into a third.
    pub fn check(&self) -> Result<(), SpecError> {
        let err = |field, reason| Err(SpecError { field, reason });
        if self.model != "gpt2" {
            return err(
                "model",
                format!(
                    "{:?} is not supported (only \"gpt2\" byte-level BPE)",
                    self.model
                ),
            );
        }
        let n = self.tokens.len();
        for (field, id) in [
            ("bos", self.bos),
            ("eos", self.eos),
            ("eot", self.eot),
            ("eom", self.eom),
        ] {
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
        for (i, m) in self.merges.iter().enumerate() {
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
        Ok(TokenizerSpec {
            model: f.get_str("tokenizer.ggml.model")?.to_string(),
            pre: f
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
            merges: strings(f, "tokenizer.ggml.merges")?
                .into_iter()
                .map(String::from)
                .collect(),
            token_types,
            bos: token_id(f, "tokenizer.ggml.bos_token_id", n)?,
            eos: token_id(f, "tokenizer.ggml.eos_token_id", n)?,
            eot: token_id(f, "tokenizer.ggml.eot_token_id", n)?,
            eom: token_id(f, "tokenizer.ggml.eom_token_id", n)?,
            add_bos: f
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tokens,
        })
    }
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

        let mut end_tokens: Vec<u32> = [spec.eos, spec.eot, spec.eom]
            .into_iter()
            .flatten()
            .collect();
        for (i, (tok, &t)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
            if t as i64 == TOKEN_CONTROL && END_TEXTS.contains(&tok.as_str()) {
                end_tokens.push(i as u32);
            }
        }
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

    /// Token ids of `text`, with special tokens parsed whole and BOS prepended only when the
    /// model's metadata asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Library(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, with special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Library(e.to_string()))
    }

    /// The text one token stands for, special tokens included.
    pub fn piece(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
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
        self.inner.get_vocab_size(true)
    }

    /// Whether BOS is prepended.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }
}
