//! Engines other than pv's, under one protocol, `pv-engine/1`: an executable that, given a
//! model file and token ids, runs one forward pass and answers with pv's trace.
//!
//! # The protocol
//!
//! ```text
//! ENGINE engine-trace MODEL --tokens 1,2,3 [--top-k K] [--per-token]
//!        [--dump DIR [--slots all|embd,ffn_inner,logits,...] [--layers 0,3,...]]
//! ```
//!
//! - stdout: one JSON document, a [`ForwardTrace`] (`schemas/forward-trace.schema.json`)
//!   of exactly those tokens; its `engine` names the engine, its version and the path it
//!   ran (`realizar 0.72.3 gguf`). Statistics are pv's own (the adapter links pv's
//!   [`TraceObserver`](super::TraceObserver)), so two engines' numbers are computed alike,
//!   each with its scope stated.
//! - A slot the engine cannot capture is absent from the trace (and from the dumps): never
//!   filled in from something else.
//! - With `--dump DIR`: every captured tensor asked for as a float32 `.npy` of `tokens x
//!   width` in `DIR`, named `SLOT-LAYER.npy` (`SLOT.npy` for `embd`, `final_norm` and
//!   `logits`), as `pv trace --dump` names them.
//! - Exit 0 with the trace; 2 when the model or the request is bad, 1 when the engine
//!   fails, with one line on stderr saying why.
//!
//! pv itself speaks it (`pv engine-trace`). `scripts/engines.sh NAME` builds the adapters of
//! the engines pv knows by name into `target/engines/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    CaptureSpec, Captured, ForwardTrace, TraceOptions, Traced, TracedForward, capture_all,
    read_npy, write_npy,
};
use crate::model::{Logits, ModelError, Observer, Slot};

/// The protocol's name.
pub const PROTOCOL: &str = "pv-engine/1";

/// The protocol's command line after `engine-trace`: one definition for pv's side and for
/// every adapter (`#[command(flatten)]` it).
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// The model file.
    pub model: PathBuf,
    /// The token ids of the pass, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// How many of the last position's largest logits to record.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Per-token statistics too.
    #[arg(long)]
    pub per_token: bool,
    /// Write the tensors of --slots (default all) as float32 .npy files into DIR.
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
    /// Slots to dump (pv's names, or `all`).
    #[arg(long, value_delimiter = ',', requires = "dump")]
    pub slots: Option<Vec<String>>,
    /// Layers to dump (default every layer).
    #[arg(long, value_delimiter = ',', requires = "dump")]
    pub layers: Option<Vec<usize>>,
}

impl EngineArgs {
    /// What to keep whole: `None` without `--dump`; `--slots` (all when absent or `all`).
    pub fn capture(&self) -> Result<Option<CaptureSpec>, String> {
        if self.dump.is_none() {
            return Ok(None);
        }
        let slots = match self.slots.as_deref() {
            None => capture_all().slots,
            Some(s) if s.iter().any(|x| x == "all") => capture_all().slots,
            Some(s) => s
                .iter()
                .map(|x| Slot::from_name(x).ok_or_else(|| format!("--slots: unknown slot {x:?}")))
                .collect::<Result<_, _>>()?,
        };
        Ok(Some(CaptureSpec {
            slots,
            layers: self.layers.clone(),
        }))
    }
}

/// Writes kept tensors into `dir` as the protocol names them: `SLOT-LAYER.npy`, and
/// `SLOT.npy` for the once-per-pass slots.
pub fn write_dumps(dir: &Path, captured: &[Captured]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for c in captured {
        let name = match c.layer {
            Some(l) => format!("{}-{l}.npy", c.slot.name()),
            None => format!("{}.npy", c.slot.name()),
        };
        write_npy(&dir.join(name), &c.data, c.data.len() / c.width, c.width)?;
    }
    Ok(())
}

/// Why an adapter gives no trace: exit 2 for the model or the request, 1 for the engine.
#[derive(Debug)]
pub struct AdapterError {
    /// The exit code.
    pub code: u8,
    /// The one line for stderr.
    pub message: String,
}

impl AdapterError {
    /// The model or the request is bad (exit 2).
    pub fn bad(message: impl Into<String>) -> Self {
        AdapterError {
            code: 2,
            message: message.into(),
        }
    }

    /// The engine failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        AdapterError {
            code: 1,
            message: message.into(),
        }
    }
}

#[derive(clap::Parser)]
struct AdapterCli {
    #[command(subcommand)]
    command: AdapterCommand,
}

#[derive(clap::Subcommand)]
enum AdapterCommand {
    /// One traced pass on given token ids, answered as pv's trace.
    EngineTrace(EngineArgs),
}

/// The `main` of an adapter: parses `engine-trace ...` (the protocol's command line, with
/// `--help` and `--version` naming the adapter), runs `run`, and prints the trace or the
/// error line with the protocol's exit code.
pub fn serve(
    name: &'static str,
    version: &'static str,
    about: &'static str,
    run: impl FnOnce(&EngineArgs) -> Result<ForwardTrace, AdapterError>,
) -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    use std::process::ExitCode;
    let parsed = AdapterCli::command()
        .name(name)
        .version(version)
        .about(about)
        .try_get_matches()
        .and_then(|m| AdapterCli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let AdapterCommand::EngineTrace(a) = cli.command;
    match run(&a) {
        Ok(trace) => match serde_json::to_string(&trace) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: the trace does not serialise: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// An adapter's answer from an engine's raw tensors: `tensors` maps (slot, layer; `None`
/// for once-per-pass slots) to `tokens x width` rows, `logits` every position's logits.
/// Statistics are computed by pv's [`TraceObserver`](super::TraceObserver), so two engines'
/// numbers are computed alike; a per-layer slot the engine did not give in every layer is
/// left out of the trace (not captured), as are tensors of layers past `n_layer`. Writes the
/// dumps `args` asks for and returns the trace, or why the tensors cannot make one.
pub fn answer(
    engine: &str,
    args: &EngineArgs,
    n_layer: usize,
    tensors: std::collections::BTreeMap<(Slot, Option<usize>), Vec<f32>>,
    logits: Vec<f32>,
) -> Result<ForwardTrace, String> {
    let n = args.tokens.len();
    let width = |what: String, len: usize| match len % n.max(1) {
        0 if len > 0 => Ok(len / n),
        _ => Err(format!("{what}: {len} values for {n} tokens")),
    };
    let mut obs = super::TraceObserver::new(n_layer, args.per_token, args.capture()?);
    let mut per_layer: std::collections::BTreeMap<Slot, usize> = Default::default();
    for ((slot, layer), mut data) in tensors {
        let layer = if slot.info().per_layer { layer } else { None };
        if let Some(l) = layer {
            if l >= n_layer {
                continue;
            }
            *per_layer.entry(slot).or_default() += 1;
        }
        let w = width(format!("{} at {layer:?}", slot.name()), data.len())?;
        obs.capture(layer, slot, &mut data, w);
    }
    let vocab = width("logits".into(), logits.len())?;
    let mut all = logits.clone();
    obs.capture(None, Slot::Logits, &mut all, vocab);
    let slots: Vec<Slot> = per_layer
        .iter()
        .filter(|&(_, &count)| count == n_layer)
        .map(|(&s, _)| s)
        .collect();
    let (mut trace, captured) = super::assemble(
        engine,
        &args.tokens,
        obs,
        &slots,
        &logits[(n - 1) * vocab..],
        args.top_k,
    )
    .ok_or("the engine gave no logits")?;
    for l in &mut trace.layers {
        l.0.retain(|s, _| slots.contains(s));
    }
    if let Some(dir) = &args.dump {
        let kept: Vec<_> = captured
            .into_iter()
            .filter(|c| c.layer.is_none() || slots.contains(&c.slot))
            .collect();
        write_dumps(dir, &kept).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(trace)
}

/// An engine pv knows by name: the executable `scripts/engines.sh NAME` builds.
pub struct KnownEngine {
    /// The name used in the command line and in contracts.
    pub name: &'static str,
    /// The executable's file name in `target/engines/bin/`.
    pub program: &'static str,
    /// The environment variable that points at another build of it.
    pub env: &'static str,
}

/// The engines pv knows by name.
pub const KNOWN: [KnownEngine; 2] = [
    KnownEngine {
        name: "realizar",
        program: "pv-engine-realizar",
        env: "PV_ENGINE_REALIZAR",
    },
    KnownEngine {
        name: "llama.cpp",
        program: "pv-engine-llamacpp",
        env: "PV_ENGINE_LLAMACPP",
    },
];

/// Why an engine could not give a trace.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such engine, or it is not built.
    #[error("{0}")]
    Missing(String),
    /// The engine refused the model or the request (its exit 2).
    #[error("engine {engine} refused {model}: {message}")]
    Refused {
        /// The engine.
        engine: String,
        /// The model.
        model: String,
        /// Its one line.
        message: String,
    },
    /// The engine failed, timed out, or could not be run.
    #[error("engine {engine} failed: {message}")]
    Failed {
        /// The engine.
        engine: String,
        /// What happened.
        message: String,
    },
    /// The engine's answer breaks the protocol.
    #[error("engine {engine} broke {PROTOCOL}: {message}")]
    Protocol {
        /// The engine.
        engine: String,
        /// How.
        message: String,
    },
}

/// An engine: pv's own, or an executable speaking the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// pv's engines in this process (GGUF or APR, by the file).
    Pv,
    /// Another executable.
    External {
        /// Its name (a known engine's, or the path given).
        name: String,
        /// The executable.
        program: PathBuf,
    },
}

impl Engine {
    /// The engine named `name`: `pv`; a known engine (`realizar`, `llama.cpp`), found
    /// through its environment variable, else in `engines/bin/` of the target directory pv
    /// itself was built in, else in `target/engines/bin/` of the current directory; or the
    /// path of an executable (a name with a `/`).
    pub fn resolve(name: &str) -> Result<Engine, EngineError> {
        if name == "pv" {
            return Ok(Engine::Pv);
        }
        if name.contains('/') {
            let program = PathBuf::from(name);
            return match program.is_file() {
                true => Ok(Engine::External {
                    name: name.to_string(),
                    program,
                }),
                false => Err(EngineError::Missing(format!(
                    "engine {name}: no such executable"
                ))),
            };
        }
        let Some(k) = KNOWN.iter().find(|k| k.name == name) else {
            return Err(EngineError::Missing(format!(
                "unknown engine {name:?}: pv, {}, or the path of an executable speaking {PROTOCOL}",
                KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            )));
        };
        let beside_pv = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("engines/bin").join(k.program)));
        let here = PathBuf::from("target/engines/bin").join(k.program);
        let program = match std::env::var_os(k.env) {
            Some(p) => PathBuf::from(p),
            None => beside_pv.filter(|p| p.is_file()).unwrap_or(here),
        };
        if !program.is_file() {
            return Err(EngineError::Missing(format!(
                "engine {name} is not built ({} is missing): build it with scripts/engines.sh {name}, \
                 or point {} at a build",
                program.display(),
                k.env
            )));
        }
        Ok(Engine::External {
            name: name.to_string(),
            program,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        match self {
            Engine::Pv => "pv",
            Engine::External { name, .. } => name,
        }
    }
}

/// What to ask an engine for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The model file.
    pub model: &'a Path,
    /// The token ids of the pass.
    pub tokens: &'a [u32],
    /// Per-token statistics too.
    pub per_token: bool,
    /// How many of the last position's largest logits to record.
    pub top_k: usize,
    /// Tensors to dump whole.
    pub capture: Option<&'a CaptureSpec>,
}

/// An engine's answer: its trace, the tensors it dumped, and the logits when they were
/// among them.
pub struct Answer {
    /// The trace.
    pub trace: ForwardTrace,
    /// The tensors kept whole (slots the engine could not capture are absent).
    pub captured: Vec<Captured>,
    /// Every position's logits, when dumped.
    pub logits: Option<Logits>,
}

/// How long an engine may take (`PV_ENGINE_TIMEOUT` seconds, default 900).
fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("PV_ENGINE_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900),
    )
}

/// The largest trace or dumped tensor read from an engine: 4 GiB.
const MAX_READ: u64 = 4 << 30;

/// Runs the external engine `program` (named `name`) on `req`.
pub fn run(program: &Path, name: &str, req: &Request<'_>) -> Result<Answer, EngineError> {
    let failed = |message: String| EngineError::Failed {
        engine: name.to_string(),
        message,
    };
    let broke = |message: String| EngineError::Protocol {
        engine: name.to_string(),
        message,
    };
    let scratch = tempfile_dir().map_err(|e| failed(format!("a scratch directory: {e}")))?;
    let (out_path, err_path, dump) = (
        scratch.join("stdout.json"),
        scratch.join("stderr.txt"),
        scratch.join("dump"),
    );
    let tokens: Vec<String> = req.tokens.iter().map(u32::to_string).collect();
    let mut cmd = Command::new(program);
    cmd.arg("engine-trace")
        .arg(req.model)
        .arg("--tokens")
        .arg(tokens.join(","))
        .arg("--top-k")
        .arg(req.top_k.to_string());
    if req.per_token {
        cmd.arg("--per-token");
    }
    if let Some(c) = req.capture {
        let slots: Vec<&str> = c.slots.iter().map(|s| s.name()).collect();
        cmd.arg("--dump")
            .arg(&dump)
            .arg("--slots")
            .arg(slots.join(","));
        if let Some(layers) = &c.layers {
            let l: Vec<String> = layers.iter().map(usize::to_string).collect();
            cmd.arg("--layers").arg(l.join(","));
        }
    }
    let file =
        |p: &Path| std::fs::File::create(p).map_err(|e| failed(format!("{}: {e}", p.display())));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .spawn()
        .map_err(|e| failed(format!("{} could not be run: {e}", program.display())))?;
    let (start, limit) = (Instant::now(), timeout());
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(failed(format!(
                    "no answer in {} s (PV_ENGINE_TIMEOUT)",
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    let answer = (|| {
        let stderr = crate::fsutil::read_bounded(&err_path, 1 << 20).unwrap_or_default();
        let last_line = String::from_utf8_lossy(&stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(nothing on stderr)")
            .trim()
            .to_string();
        match status.code() {
            Some(0) => {}
            Some(2) => {
                return Err(EngineError::Refused {
                    engine: name.to_string(),
                    model: req.model.display().to_string(),
                    message: last_line,
                });
            }
            code => {
                return Err(failed(format!(
                    "exit {}: {last_line}",
                    code.map_or("by a signal".to_string(), |c| c.to_string())
                )));
            }
        }
        let out = crate::fsutil::read_bounded(&out_path, MAX_READ)
            .map_err(|e| broke(format!("its answer: {e}")))?;
        let trace: ForwardTrace = serde_json::from_slice(&out)
            .map_err(|e| broke(format!("its answer is not a pv trace: {e}")))?;
        check(&trace, req).map_err(broke)?;
        let (captured, logits) = match req.capture {
            Some(_) => read_dumps(&dump, &trace).map_err(broke)?,
            None => (Vec::new(), None),
        };
        Ok(Answer {
            trace,
            captured,
            logits,
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    answer
}

/// What pv checks of every answer before using it.
fn check(t: &ForwardTrace, req: &Request<'_>) -> Result<(), String> {
    if t.tokens != req.tokens {
        return Err(format!(
            "it traced {} tokens, not the {} asked for",
            t.tokens.len(),
            req.tokens.len()
        ));
    }
    if t.engine.trim().is_empty() {
        return Err("its trace does not name the engine".into());
    }
    if t.format != super::TRACE_FORMAT {
        return Err(format!(
            "trace format {:?}; this pv reads {:?}",
            t.format,
            super::TRACE_FORMAT
        ));
    }
    Ok(())
}

/// A model file run by an external engine, as a [`TracedForward`]: each pass is one run of
/// the engine, with the logits (and whatever else the options keep) dumped. What it cannot
/// capture is absent from its trace ([`Traced::partial`]). pv cannot inject a fault into it
/// or feed its layers another pass's inputs: asking is an error.
pub struct ExternalModel {
    /// The engine's name.
    pub name: String,
    /// Its executable.
    pub program: PathBuf,
    /// The model file it runs.
    pub model: PathBuf,
}

impl ExternalModel {
    /// The engine `engine` (external) on `model`; `None` for pv's own.
    pub fn new(engine: Engine, model: &Path) -> Option<ExternalModel> {
        match engine {
            Engine::Pv => None,
            Engine::External { name, program } => Some(ExternalModel {
                name,
                program,
                model: model.to_path_buf(),
            }),
        }
    }
}

impl From<EngineError> for ModelError {
    fn from(e: EngineError) -> Self {
        ModelError::Engine {
            refused: matches!(e, EngineError::Refused { .. } | EngineError::Missing(_)),
            message: e.to_string(),
        }
    }
}

impl TracedForward for ExternalModel {
    fn forward_traced_with(
        &self,
        tokens: &[u32],
        options: &TraceOptions,
    ) -> Result<Traced, ModelError> {
        let refuse = |what: &str| ModelError::Engine {
            refused: true,
            message: format!("{what} is pv's engines' only, not {}'s", self.name),
        };
        if options.fault.is_some() {
            return Err(refuse("fault injection"));
        }
        if options.inputs.is_some() {
            return Err(refuse(
                "layer-local comparison (each layer run on another pass's inputs)",
            ));
        }
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        // The logits are always dumped: a pass's result is its logits.
        let mut spec = options.capture.clone().unwrap_or(CaptureSpec {
            slots: Vec::new(),
            layers: None,
        });
        let asked_logits = spec.slots.contains(&Slot::Logits);
        if !asked_logits {
            spec.slots.push(Slot::Logits);
        }
        let answer = run(
            &self.program,
            &self.name,
            &Request {
                model: &self.model,
                tokens,
                per_token: options.per_token,
                top_k: options.top_k,
                capture: Some(&spec),
            },
        )?;
        let broke = |message: String| EngineError::Protocol {
            engine: self.name.clone(),
            message,
        };
        let logits = answer
            .logits
            .ok_or_else(|| broke("it dumped no logits".into()))?;
        // Every slot asked for that the trace records must have been dumped.
        if let Some(asked) = &options.capture {
            let layers: Vec<usize> = asked
                .layers
                .clone()
                .unwrap_or_else(|| (0..answer.trace.layers.len()).collect());
            for &slot in &asked.slots {
                for &l in &layers {
                    let recorded = answer.trace.layers.get(l).and_then(|x| x.get(slot));
                    let dumped = answer
                        .captured
                        .iter()
                        .any(|c| (c.layer, c.slot) == (Some(l), slot));
                    if recorded.is_some() && !dumped {
                        return Err(broke(format!(
                            "its trace records {} at layer {l} but it dumped no tensor of it",
                            slot.name()
                        ))
                        .into());
                    }
                }
            }
        }
        let captured = answer
            .captured
            .into_iter()
            .filter(|c| asked_logits || c.slot != Slot::Logits)
            .collect();
        Ok(Traced {
            trace: answer.trace,
            logits,
            captured,
            partial: true,
        })
    }
}

/// The tensors in `dir`, each checked against the trace: a known slot name, one row per
/// token, the width the trace's statistics state.
fn read_dumps(dir: &Path, t: &ForwardTrace) -> Result<(Vec<Captured>, Option<Logits>), String> {
    let mut captured = Vec::new();
    let mut logits = None;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((captured, logits));
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let stem = name
            .strip_suffix(".npy")
            .ok_or_else(|| format!("dump {name}: not a .npy file"))?;
        let (slot, layer) = match stem.rsplit_once('-') {
            Some((s, l)) if l.parse::<usize>().is_ok() => {
                (s, Some(l.parse::<usize>().unwrap_or(0)))
            }
            _ => (stem, None),
        };
        let slot = Slot::from_name(slot).ok_or_else(|| format!("dump {name}: no slot {slot:?}"))?;
        let stats = match (layer, slot) {
            (Some(l), s) => t.layers.get(l).and_then(|x| x.get(s)).cloned(),
            (None, Slot::Embd) => t.embd.clone(),
            (None, Slot::FinalNorm) => t.final_norm.clone(),
            (None, Slot::Logits) => Some(t.logits.stats()),
            (None, _) => None,
        }
        .ok_or_else(|| format!("dump {name}: the trace has no such slot"))?;
        let (data, rows, cols) =
            read_npy(&dir.join(&name), MAX_READ).map_err(|e| format!("dump {name}: {e}"))?;
        if rows != t.tokens.len() || cols != stats.all.scope.width {
            return Err(format!(
                "dump {name}: {rows} x {cols}, but the trace says {} tokens x {}",
                t.tokens.len(),
                stats.all.scope.width
            ));
        }
        if slot == Slot::Logits {
            logits = Some(Logits {
                vocab: cols,
                data: data.clone(),
            });
        }
        captured.push(Captured {
            layer,
            slot,
            width: cols,
            data,
        });
    }
    // In execution order, as pv's own passes capture: embd, each layer's slots, the rest.
    captured.sort_by_key(|c| match (c.layer, c.slot) {
        (None, Slot::Embd) => (0, 0, c.slot),
        (Some(l), s) => (1, l, s),
        (None, s) => (2, 0, s),
    });
    Ok((captured, logits))
}

/// A fresh scratch directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "pv-engine-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
