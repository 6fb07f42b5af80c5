//! realizar as a pv engine: `pv-engine-realizar engine-trace MODEL --tokens ...` answers
//! the `pv-engine/1` protocol (pv's `src/trace/engine.rs`) from realizar's own code.
//!
//! Two realizars, one at a time, chosen at build time (`scripts/engines.sh realizar` or
//! `realizar-0.8.6`):
//!
//! - aprender-serve 0.72.3 (feature `aprender-serve`, the default; [`tap`]): realizar's
//!   per-op tap gives every stage tensor it computes on both paths.
//! - realizar 0.8.6 (feature `realizar-0_8_6`; [`v0_8_6`]): it has no tap and its
//!   `forward_traced` keeps only its own summary statistics, so the trace holds what can be
//!   read from realizar's public functions whole: the token embeddings and every
//!   position's logits. Every other slot is reported as not captured.
//!
//! The statistics are pv's ([`TraceObserver`](pv::trace::TraceObserver)) over realizar's
//! raw tensors, so they are computed as pv computes its own. A slot realizar does not
//! give is simply not in the trace: pv reports it as not captured, never invents it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use pv::model::Slot;
use pv::trace::ForwardTrace;
use pv::trace::engine::{AdapterError, EngineArgs, answer, serve};

#[cfg(all(feature = "aprender-serve", feature = "realizar-0_8_6"))]
compile_error!(
    "one realizar per build: the default (aprender-serve 0.72.3), or \
     --no-default-features --features realizar-0_8_6"
);

#[cfg(feature = "aprender-serve")]
mod tap;
#[cfg(feature = "aprender-serve")]
use tap as realizar_version;

#[cfg(feature = "realizar-0_8_6")]
mod v0_8_6;
#[cfg(feature = "realizar-0_8_6")]
use v0_8_6 as realizar_version;

use realizar_version::{ENGINE, PATH_APR, PATH_GGUF, run_apr, run_gguf, to_slots};

/// realizar's tensors by (its stage name, layer; `None` for a whole-model stage), every
/// position's rows in order.
type Stages = BTreeMap<(String, Option<usize>), Vec<f32>>;

/// pv's slots by (slot, layer), as [`answer`] takes them.
type Tensors = BTreeMap<(Slot, Option<usize>), Vec<f32>>;

/// Layers, and the widths of q and of k/v, to split realizar's fused qkv stage.
type Dims = (usize, usize, usize);

fn main() -> ExitCode {
    serve(
        "pv-engine-realizar",
        env!("CARGO_PKG_VERSION"),
        "realizar as a pv engine (pv-engine/1)",
        run,
    )
}

/// The dims pv's reading of the model gives, which hold where realizar's own may not (its
/// traced APR path takes the head width as hidden / heads, wrong for Gemma 3). Read only
/// after realizar has loaded the file, so that realizar's loader, not pv's, decides what
/// it accepts; `None` when pv cannot read a file realizar accepted.
fn pv_dims(model: &Path, apr: bool) -> Option<Dims> {
    let config = if apr {
        let f = pv::apr::AprFile::open(model).ok()?;
        pv::model::apr_meta::read(&f).ok()?.config
    } else {
        let f = pv::gguf::GgufFile::open(model).ok()?;
        pv::model::ModelConfig::try_from(&f).ok()?
    };
    Some((config.n_layer, config.q_dim(), config.kv_dim()))
}

fn run(a: &EngineArgs) -> Result<ForwardTrace, AdapterError> {
    if a.tokens.is_empty() {
        return Err(AdapterError::bad("no tokens"));
    }
    a.capture().map_err(AdapterError::bad)?;
    let apr = a.model.extension().is_some_and(|e| e == "apr");
    let scratch = std::env::temp_dir().join(format!("pv-engine-realizar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = if apr {
        run_apr(&a.model, &a.tokens, &scratch)
    } else {
        run_gguf(&a.model, &a.tokens, &scratch)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let (stages, logits, own) = result?;
    let dims = pv_dims(&a.model, apr).unwrap_or(own);
    let slots = to_slots(stages, a.tokens.len(), dims);
    let path = if apr { PATH_APR } else { PATH_GGUF };
    answer(&format!("{ENGINE} {path}"), a, dims.0, slots, logits).map_err(AdapterError::failed)
}
