//! llama.cpp as a pv engine: `pv-engine-llamacpp engine-trace MODEL --tokens ...` answers
//! the `pv-engine/1` protocol (pv's `src/trace/engine.rs`) from llama.cpp's own graph.
//!
//! It runs `pv-llamacpp-dump` (its C++ half, `dump.cpp`, beside it), which evaluates the
//! tokens through libllama as one micro-batch with every position's logits asked for and
//! an eval callback that writes every contiguous f32 node of the graph. This side maps
//! llama.cpp's node names onto pv's slots ([`LAYER`]) and hands the tensors to pv's
//! statistics. A slot llama.cpp's graph does not hold (its fused SwiGLU has no separate
//! activation, so `ffn_act` is absent for SiLU models) is not in the trace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use pv::model::Slot;
use pv::trace::ForwardTrace;
use pv::trace::engine::{AdapterError, EngineArgs, answer, serve};

/// The llama.cpp pv's test suite builds (the llama-cpp-python 0.3.36 sdist's vendored copy).
const ENGINE: &str = "llama.cpp 0c1e57098 (CPU, libllama eval callback)";

/// pv's per-layer slots and llama.cpp's node names for them (`{L}` the layer; `#K` counts
/// nodes of one name: `Qcur-L#0` is the projection, `#2` the rotated queries). The first
/// name present wins.
const LAYER: [(Slot, &[&str]); 18] = [
    (Slot::AttnNorm, &["attn_norm-{L}#0"]),
    (Slot::Q, &["Qcur-{L}#0"]),
    (Slot::K, &["Kcur-{L}#0"]),
    (Slot::V, &["Vcur-{L}#0"]),
    (Slot::QNorm, &["Qcur_normed-{L}#0"]),
    (Slot::KNorm, &["Kcur_normed-{L}#0"]),
    (Slot::QRope, &["Qcur-{L}#2"]),
    (Slot::KRope, &["Kcur-{L}#2"]),
    (Slot::AttnOut, &["attn_out-{L}#0"]),
    (Slot::AttnPostNorm, &["attn_post_norm-{L}#0"]),
    (Slot::FfnInp, &["ffn_inp-{L}#0", "sa_out-{L}#0"]),
    (Slot::FfnNorm, &["ffn_norm-{L}#0"]),
    (Slot::FfnGate, &["ffn_gate-{L}#0"]),
    (Slot::FfnUp, &["ffn_up-{L}#0"]),
    (Slot::FfnInner, &["ffn_swiglu-{L}#0", "ffn_geglu-{L}#0"]),
    (Slot::FfnDown, &["ffn_out-{L}#0"]),
    (Slot::FfnPostNorm, &["ffn_post_norm-{L}#0"]),
    (Slot::LOut, &["l_out-{L}#0"]),
];

/// Once-per-pass slots and their node names.
const ONCE: [(Slot, &[&str]); 2] = [
    (Slot::Embd, &["inp_scaled#0", "inp_embd#0", "embd#0"]),
    (Slot::FinalNorm, &["result_norm#0"]),
];

fn main() -> ExitCode {
    serve(
        "pv-engine-llamacpp",
        env!("CARGO_PKG_VERSION"),
        "llama.cpp as a pv engine (pv-engine/1)",
        run,
    )
}

/// A dumped node: two little-endian i64 (rows, cols), then rows x cols f32.
fn read_rows(path: &Path) -> Result<(usize, Vec<f32>), String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let head = |i: usize| {
        b.get(i * 8..i * 8 + 8)
            .map(|x| i64::from_le_bytes(x.try_into().expect("8 bytes")))
    };
    let (Some(rows), Some(cols)) = (head(0), head(1)) else {
        return Err(format!("{}: shorter than its header", path.display()));
    };
    let n = usize::try_from(rows.checked_mul(cols).unwrap_or(-1))
        .map_err(|_| format!("{}: shape {rows} x {cols}", path.display()))?;
    if b.len() != 16 + 4 * n {
        return Err(format!(
            "{}: {} bytes for {rows} x {cols} floats",
            path.display(),
            b.len()
        ));
    }
    let data = b[16..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok((rows as usize, data))
}

/// The C++ half: beside this executable.
fn dumper() -> Result<PathBuf, AdapterError> {
    let p = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("pv-llamacpp-dump")))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            AdapterError::failed(
                "pv-llamacpp-dump is missing beside this adapter: build it with scripts/engines.sh llama.cpp",
            )
        })?;
    Ok(p)
}

fn run(a: &EngineArgs) -> Result<ForwardTrace, AdapterError> {
    if a.tokens.is_empty() {
        return Err(AdapterError::bad("no tokens"));
    }
    a.capture().map_err(AdapterError::bad)?;
    let file = pv::gguf::GgufFile::open(&a.model).map_err(|e| AdapterError::bad(e.to_string()))?;
    let n_layer = pv::model::ModelConfig::try_from(&file)
        .map_err(|e| AdapterError::bad(e.to_string()))?
        .n_layer;
    drop(file);
    let dir = std::env::temp_dir().join(format!("pv-engine-llamacpp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| AdapterError::failed(format!("{}: {e}", dir.display())))?;
    let tokens: Vec<String> = a.tokens.iter().map(u32::to_string).collect();
    let threads = std::env::var("PV_ENGINE_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    });
    let out = Command::new(dumper()?)
        .arg(&a.model)
        .arg(&dir)
        .arg(tokens.join(","))
        .arg(threads)
        .output()
        .map_err(|e| AdapterError::failed(format!("pv-llamacpp-dump could not be run: {e}")));
    let result = out.and_then(|out| {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match out.status.code() {
            Some(0) => collect(&dir, a.tokens.len(), n_layer).map_err(AdapterError::failed),
            Some(2) => Err(AdapterError::bad(said)),
            code => Err(AdapterError::failed(format!(
                "pv-llamacpp-dump exit {code:?}: {said}"
            ))),
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (tensors, logits) = result?;
    answer(ENGINE, a, n_layer, tensors, logits).map_err(AdapterError::failed)
}

/// The dumped nodes pv has names for, and the logits.
#[allow(clippy::type_complexity)]
fn collect(
    dir: &Path,
    n: usize,
    n_layer: usize,
) -> Result<(BTreeMap<(Slot, Option<usize>), Vec<f32>>, Vec<f32>), String> {
    let mut tensors = BTreeMap::new();
    let mut take = |slot: Slot, layer: Option<usize>, names: &[&str]| -> Result<(), String> {
        let l = layer.map_or(String::new(), |l| l.to_string());
        for name in names {
            let p = dir.join(format!("{}.f32", name.replace("{L}", &l)));
            if p.is_file() {
                let (rows, data) = read_rows(&p)?;
                if rows != n {
                    return Err(format!("{}: {rows} rows for {n} tokens", p.display()));
                }
                tensors.insert((slot, layer), data);
                return Ok(());
            }
        }
        Ok(())
    };
    for (slot, names) in ONCE {
        take(slot, None, names)?;
    }
    for l in 0..n_layer {
        for (slot, names) in LAYER {
            take(slot, Some(l), names)?;
        }
    }
    let (rows, logits) = read_rows(&dir.join("logits.f32"))?;
    if rows != n {
        return Err(format!("logits: {rows} rows for {n} tokens"));
    }
    Ok((tensors, logits))
}
