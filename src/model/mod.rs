//! The embedded GGUF transformer engine: typed config, zero-copy quantized weights, one
//! forward pass per architecture family with an observer seam, and greedy generation.

pub mod apr_meta;
mod apr_reference;
pub mod arch;
mod attention;
mod config;
mod convert;
mod fault;
mod forward;
pub mod ggml_math;
pub mod kernels;
mod matmul;
mod observer;
pub mod synth;
pub mod tensors;
mod weights;

use std::path::Path;

pub use apr_reference::AprTransformer;
pub use arch::{ARCHS, Arch, ArchSpec, FfnAct, RopeStyle};
pub use config::{ConfigError, Hyper, MAX_COUNT, ModelConfig};
pub use convert::{AprDtype, Conversion, OtherDtype, gguf_to_apr, write_apr};
pub use fault::{Fault, FaultKind, Faulty};
pub use forward::{KvCache, LogitsFor};
pub use ggml_math::Flavor;
pub use matmul::{QuantizedActs, matmul};
pub use observer::{Has, LayerInputs, NoopObserver, Observer, SLOTS, Slot, SlotInfo, Substituting};
pub use tensors::{Block, Role, TENSORS, TensorSource, TensorSpec};
pub use weights::{LayerWeights, ModelWeights, QMatrix};

use crate::gguf::{GgufError, GgufFile};
use crate::quant::Isa;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is malformed or lacks what the architecture needs.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A token id is not in the vocabulary.
    #[error("token id {token} is out of range (vocabulary of {vocab})")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The context window is full.
    #[error("context of {max} positions exceeded ({needed} needed)")]
    ContextFull {
        /// Positions needed.
        needed: usize,
        /// The limit.
        max: usize,
    },
    /// An APR file is malformed or lacks what the model needs.
    #[error(transparent)]
    Apr(#[from] crate::apr::AprError),
    /// A forward pass was asked for no tokens.
    #[error("no tokens to evaluate")]
    EmptyInput,
    /// An engine other than pv's, run for this pass, refused it (`refused`: the model or
    /// the request was bad) or failed.
    #[error("{message}")]
    Engine {
        /// Whether the engine refused the input (rather than failing on it).
        refused: bool,
        /// What the engine said, naming it.
        message: String,
    },
}

/// Logits of a whole-prompt evaluation.
///
/// # Shapes
/// `data` holds one row of `vocab` values per position, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// Vocabulary size (row width).
    pub vocab: usize,
    /// Row-major logits.
    pub data: Vec<f32>,
}

impl Logits {
    /// Number of positions.
    pub fn n_positions(&self) -> usize {
        self.data.len() / self.vocab
    }

    /// The logits of position `t`.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.vocab..(t + 1) * self.vocab]
    }

    /// The logits of the last position.
    pub fn last(&self) -> &[f32] {
        self.row(self.n_positions() - 1)
    }
}

/// Index of the largest value (the first one on ties), as greedy sampling takes it.
pub fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > x[best] { i } else { best })
}

/// The `k` largest values as `(index, value)`, largest first.
pub fn top_k(x: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let k = k.min(x.len());
    idx.select_nth_unstable_by(
        k.saturating_sub(1).min(x.len().saturating_sub(1)),
        |&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)),
    );
    idx.truncate(k);
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.into_iter().map(|i| (i, x[i])).collect()
}

/// llama.cpp's default physical batch (`n_ubatch`, 512): a longer batch is evaluated in
/// pieces of this many tokens (see [`OwnedQuantizedModel::prefill`]).
pub const N_UBATCH: usize = 512;

/// A GGUF model ready to run: the mapped file, its typed config and its weights, which stay
/// quantized inside the mapping.
pub struct OwnedQuantizedModel {
    file: GgufFile,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Weights mapped by semantic name.
    pub weights: ModelWeights,
    /// Which llama.cpp build's float arithmetic the engine reproduces.
    pub flavor: Flavor,
}

impl OwnedQuantizedModel {
    /// Loads a model from an already-parsed file without copying its weights, using the
    /// fastest kernels this CPU supports.
    pub fn from_mapped(file: GgufFile) -> Result<Self, ModelError> {
        Self::from_mapped_with_isa(file, Isa::best())
    }

    /// As [`from_mapped`](Self::from_mapped), with the kernels of a chosen instruction set
    /// (the portable ones when this CPU lacks it).
    pub fn from_mapped_with_isa(file: GgufFile, isa: Isa) -> Result<Self, ModelError> {
        let config = ModelConfig::try_from(&file)?;
        let weights = ModelWeights::load(&file, &config, isa)?;
        Ok(OwnedQuantizedModel {
            file,
            config,
            weights,
            flavor: Flavor::default(),
        })
    }

    /// Opens, maps and loads a GGUF file.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        Self::from_mapped(GgufFile::open(path)?)
    }

    /// The underlying file (metadata, tokenizer, tensor table).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub(crate) fn file_bytes(&self) -> &[u8] {
        self.file.bytes()
    }

    /// A cache sized for this model's context window.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.n_layer, self.config.context_length)
    }

    /// Evaluates the whole prompt causally and returns the logits of every position.
    pub fn forward(&self, tokens: &[u32]) -> Result<Logits, ModelError> {
        self.forward_observed(tokens, &mut NoopObserver)
    }

    /// [`forward`](Self::forward) with an observer at every capture point: the same code,
    /// so the logits are bit-identical whatever the observer records.
    pub fn forward_observed<O: Observer>(
        &self,
        tokens: &[u32],
        obs: &mut O,
    ) -> Result<Logits, ModelError> {
        let mut cache = self.new_cache();
        let data = self.forward_with_cache(tokens, &mut cache, LogitsFor::All, obs)?;
        Ok(Logits {
            vocab: self.config.vocab_size,
            data,
        })
    }

    /// Evaluates `tokens` after the positions already in `cache` as llama.cpp's decode
    /// evaluates a batch: in micro-batches of [`N_UBATCH`] tokens, one after another through
    /// the cache (each sees the keys and values of the ones before, over a cache padded for
    /// its own end), so a prompt longer than one micro-batch gets llama.cpp's bits too. With
    /// [`LogitsFor::Last`], only the last micro-batch's last row is computed, as llama.cpp
    /// computes only the rows asked for; with [`LogitsFor::All`], every micro-batch's rows.
    pub fn prefill<O: Observer>(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
        obs: &mut O,
    ) -> Result<Vec<f32>, ModelError> {
        if tokens.len() <= N_UBATCH {
            return self.forward_with_cache(tokens, cache, which, obs);
        }
        let mut out = Vec::new();
        let pieces = tokens.len().div_ceil(N_UBATCH);
        for (i, piece) in tokens.chunks(N_UBATCH).enumerate() {
            let last = i + 1 == pieces;
            let rows = self.forward_with_cache(piece, cache, which, obs)?;
            if which == LogitsFor::All || last {
                out.extend(rows);
            }
        }
        Ok(out)
    }

    /// Greedy decoding with an observer on every pass: evaluates `prompt`, then feeds the
    /// argmax back `n` times through the KV cache, one token a pass. Returns the tokens fed
    /// and the logits that chose each, plus the logits after the last one (`n + 1` rows).
    pub fn decode_greedy_observed<O: Observer>(
        &self,
        prompt: &[u32],
        n: usize,
        obs: &mut O,
    ) -> Result<(Vec<u32>, Vec<Vec<f32>>), ModelError> {
        let mut cache = self.new_cache();
        let mut rows = vec![self.prefill(prompt, &mut cache, LogitsFor::Last, obs)?];
        let mut fed = Vec::with_capacity(n);
        for _ in 0..n {
            let next = argmax(rows.last().expect("one row")) as u32;
            fed.push(next);
            rows.push(self.forward_with_cache(&[next], &mut cache, LogitsFor::Last, obs)?);
        }
        Ok((fed, rows))
    }

    /// Greedy generation: evaluates `prompt`, then takes the argmax token `n` times (stopping
    /// after any token in `stop`), feeding each back through the KV cache one at a time.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        n: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, ModelError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .generate_greedy_observed(prompt, n, stop, &mut NoopObserver)?
            .0)
    }

    /// [`generate_greedy`](Self::generate_greedy) (`n >= 1`) with an observer on every pass;
    /// also returns the prompt pass's logits, which, as in generation, are computed for the
    /// last position only.
    pub fn generate_greedy_observed<O: Observer>(
        &self,
        prompt: &[u32],
        n: usize,
        stop: &[u32],
        obs: &mut O,
    ) -> Result<(Vec<u32>, Vec<f32>), ModelError> {
        let mut cache = self.new_cache();
        let mut out = Vec::with_capacity(n);
        let first = self.prefill(prompt, &mut cache, LogitsFor::Last, obs)?;
        let mut logits = first.clone();
        while out.len() < n {
            let next = argmax(&logits) as u32;
            out.push(next);
            if out.len() == n || stop.contains(&next) {
                break;
            }
            logits = self.forward_with_cache(&[next], &mut cache, LogitsFor::Last, obs)?;
        }
        Ok((out, first))
    }
}

/// Runs `f` on a rayon pool of `threads` threads (0 = all cores).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
