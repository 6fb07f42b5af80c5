//! `pv trace MODEL --prompt TEXT`: per-layer activation statistics of one forward pass, as a
//! table or as the JSON trace; optionally the full tensors of chosen slots as `.npy`.

use std::fmt::Write;
use std::path::PathBuf;

use super::{CliError, Format, emit, load_traceable, print_json};
use crate::model::{Slot, with_threads};
use crate::trace::engine::{self, Engine, EngineError};
use crate::trace::{CaptureSpec, ForwardTrace, TraceOptions, Traced};

/// Arguments of `pv trace`.
#[derive(clap::Args)]
#[command(
    after_help = "The table shows each slot's population std over all tokens; `!` marks NaN/Inf, \
`^` a std more than 8x the median of the same slot over all layers, `-` a slot the engine \
does not capture.\n\nExamples:\n  \
pv trace models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt 'What is 2+2?'\n  \
pv trace models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt 'What is 2+2?' --format json > trace.json\n  \
pv trace models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt 'What is 2+2?' --dump out --slots ffn_inner,l_out --layers 3,4"
)]
pub struct Args {
    /// The model to trace: GGUF (pv's quantized engine) or APR (the f32 reference engine).
    model: PathBuf,
    /// The prompt; special tokens such as <|im_start|> are parsed whole.
    #[arg(long, short)]
    prompt: String,
    /// Output format: text (a per-layer table) or json (the whole trace, every layer).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Layers to show in the table and to dump (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Add statistics for every token to every slot (JSON).
    #[arg(long)]
    per_token: bool,
    /// Write the full tensors of `--slots` as float32 .npy files ([tokens, width]) into DIR.
    #[arg(long, value_name = "DIR", requires = "slots")]
    dump: Option<PathBuf>,
    /// Slots to dump, e.g. ffn_inner,l_out (names as in the trace).
    #[arg(long, value_delimiter = ',', requires = "dump")]
    slots: Option<Vec<String>>,
    /// Inject a fault at one capture point, e.g. ffn_down@20:scale=1.05 (kinds: scale=F,
    /// zero-channel=N, zero-fraction=F, swap-channels=A,B, negate, drop-residual).
    #[arg(long, value_name = "SLOT@LAYER:KIND")]
    fault: Option<crate::model::Fault>,
    /// The engine that runs the pass: pv (its GGUF or APR engine, by the file), an engine
    /// pv knows by name (realizar, llama.cpp; built by scripts/engines.sh), or the path of an
    /// executable speaking the engine protocol. The prompt is tokenized by pv.
    #[arg(long, default_value = "pv")]
    engine: String,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

/// Runs `pv trace`.
pub fn run(a: Args) -> Result<(), CliError> {
    let (model, tok, n_layer) = load_traceable(&a.model)?;
    let tok = super::some_tokenizer([(a.model.as_path(), &tok)])?;
    if let Some(bad) = a.layers.iter().flatten().find(|&&l| l >= n_layer) {
        return Err(CliError::input(format!(
            "--layers {bad}: the model has layers 0..{}",
            n_layer - 1
        )));
    }
    let slots = a
        .slots
        .iter()
        .flatten()
        .map(|s| {
            Slot::from_name(s)
                .ok_or_else(|| CliError::input(format!("--slots: unknown slot {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = tok.encode(&a.prompt)?;
    let options = TraceOptions {
        per_token: a.per_token,
        top_k: 10,
        capture: a.dump.as_ref().map(|_| CaptureSpec {
            slots,
            layers: a.layers.clone(),
        }),
        fault: a.fault,
        inputs: None,
    };
    let traced = match Engine::resolve(&a.engine).map_err(|e| CliError::input(e.to_string()))? {
        Engine::Pv => with_threads(a.threads, || model.forward_traced_with(&tokens, &options))?,
        Engine::External { name, program } => {
            if a.fault.is_some() {
                return Err(CliError::input(format!(
                    "--fault injects into pv's engines only, not into {name}"
                )));
            }
            let answer = engine::run(
                &program,
                &name,
                &engine::Request {
                    model: &a.model,
                    tokens: &tokens,
                    per_token: a.per_token,
                    top_k: options.top_k,
                    capture: options.capture.as_ref(),
                },
            )
            .map_err(engine_error)?;
            Traced {
                trace: answer.trace,
                logits: answer.logits.unwrap_or(crate::model::Logits {
                    vocab: 0,
                    data: Vec::new(),
                }),
                captured: answer.captured,
                partial: true,
            }
        }
    };
    if let Some(dir) = &a.dump {
        engine::write_dumps(dir, &traced.captured)
            .map_err(|e| CliError::input(format!("{}: {e}", dir.display())))?;
        eprintln!(
            "wrote {} tensors to {}",
            traced.captured.len(),
            dir.display()
        );
    }
    match a.format {
        Format::Json => print_json(
            &serde_json::to_value(&traced.trace).map_err(|e| CliError::other(e.to_string()))?,
        ),
        Format::Text => emit(&table(&traced.trace, a.layers.as_deref())),
    }
}

/// An engine's failure as a command error: bad input when the engine is missing or refused
/// the model, else a failure.
pub(super) fn engine_error(e: EngineError) -> CliError {
    match e {
        EngineError::Missing(_) | EngineError::Refused { .. } => CliError::input(e.to_string()),
        EngineError::Failed { .. } | EngineError::Protocol { .. } => CliError::other(e.to_string()),
    }
}

/// The per-layer std table, with NaN/Inf and outliers flagged.
fn table(t: &ForwardTrace, layers: Option<&[usize]>) -> String {
    let median = |slot: Slot| {
        let mut v: Vec<f64> = t
            .layers
            .iter()
            .filter_map(|l| Some(l.get(slot)?.all.std))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    // Every slot any layer records (an engine may capture fewer than pv's).
    let mut slots: Vec<Slot> = t
        .layers
        .iter()
        .flat_map(|l| l.slots().map(|(s, _)| s))
        .collect();
    slots.sort();
    slots.dedup();
    let medians: Vec<f64> = slots.iter().map(|&s| median(s)).collect();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} tokens; std over all tokens (scope `all`), population, f64",
        t.engine,
        t.tokens.len()
    );
    let _ = write!(o, "{:>5}", "layer");
    for s in &slots {
        let _ = write!(o, " {:>10}", s.name());
    }
    o.push('\n');
    for (l, layer) in t.layers.iter().enumerate() {
        if layers.is_some_and(|ls| !ls.contains(&l)) {
            continue;
        }
        let _ = write!(o, "{l:>5}");
        for (i, s) in slots.iter().enumerate() {
            let Some(st) = layer.get(*s).map(|x| &x.all) else {
                let _ = write!(o, " {:>10}", "-");
                continue;
            };
            let flag = if st.nan + st.inf > 0 {
                "!"
            } else if medians[i] > 0.0 && st.std > 8.0 * medians[i] {
                "^"
            } else {
                " "
            };
            let _ = write!(o, " {:>9.4}{flag}", st.std);
        }
        o.push('\n');
    }
    let final_norm = t
        .final_norm
        .as_ref()
        .map_or("not captured".into(), |s| format!("{:.4}", s.all.std));
    let _ = writeln!(
        o,
        "final_norm std {final_norm}; logits std {:.4}; top-10 {:?}",
        t.logits.all.std,
        t.logits.top_k.iter().map(|&(id, _)| id).collect::<Vec<_>>()
    );
    o
}
