//! `pv diff A B --prompt TEXT`: two models traced on the same token ids, compared slot by
//! slot in execution order; names the first slot outside the tolerance.

use std::fmt::Write;
use std::path::PathBuf;

use super::{CliError, Format, emit, load_traceable, print_json};
use crate::model::with_threads;
use crate::trace::{Tolerance, TraceOptions, capture_all, diff};

/// Arguments of `pv diff`.
#[derive(clap::Args)]
#[command(
    after_help = "Both models run on model A's token ids. Ratios are B/A.\n\nExit status: 0 every \
slot within tolerance, 1 some slot outside it (the first is named), 2 bad input.\n\nExample:\n  \
pv convert models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/SmolLM2-135M-Instruct.Q4_1.apr\n  \
pv diff models/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_1.apr --prompt 'What is 2+2?'"
)]
pub struct Args {
    /// Model A (GGUF or APR).
    a: PathBuf,
    /// Model B (GGUF or APR).
    b: PathBuf,
    /// The prompt, tokenized by model A.
    #[arg(long, short)]
    prompt: String,
    /// Largest allowed |std(B)/std(A) - 1| in either scope.
    #[arg(long, default_value_t = 0.05)]
    max_std_deviation: f64,
    /// Smallest allowed cosine similarity of the full tensors.
    #[arg(long, default_value_t = 0.99)]
    min_cosine: f64,
    /// Output format: text (a table) or json.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Inject a fault into model A's pass at one capture point, e.g. ffn_down@20:scale=1.05
    /// (kinds: scale=F, zero-channel=N, zero-fraction=F, swap-channels=A,B, negate,
    /// drop-residual): does the comparison point at it?
    #[arg(long, value_name = "SLOT@LAYER:KIND")]
    fault: Option<crate::model::Fault>,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

/// Runs `pv diff`.
pub fn run(a: Args) -> Result<(), CliError> {
    let (ma, tok, _) = load_traceable(&a.a)?;
    let (mb, tok_b, _) = load_traceable(&a.b)?;
    let tokens = tok.encode(&a.prompt)?;
    if tok_b.encode(&a.prompt)? != tokens {
        eprintln!("note: model B tokenizes the prompt differently; both run on model A's ids");
    }
    let opts = TraceOptions {
        capture: Some(capture_all()),
        ..Default::default()
    };
    let faulty = TraceOptions {
        fault: a.fault,
        ..opts.clone()
    };
    let (ta, tb) = with_threads(a.threads, || {
        (
            ma.forward_traced_with(&tokens, &faulty),
            mb.forward_traced_with(&tokens, &opts),
        )
    });
    let tolerance = Tolerance {
        max_std_deviation: a.max_std_deviation,
        min_cosine: a.min_cosine,
    };
    let report = diff(&ta?, &tb?, tolerance).map_err(|e| CliError::input(e.to_string()))?;
    match a.format {
        Format::Json => {
            print_json(&serde_json::to_value(&report).map_err(|e| CliError::other(e.to_string()))?)?
        }
        Format::Text => {
            let mut o = String::new();
            let _ = writeln!(
                o,
                "A = {} ({}), B = {} ({}), {} tokens",
                a.a.display(),
                report.engines.0,
                a.b.display(),
                report.engines.1,
                report.tokens.len()
            );
            let _ = writeln!(
                o,
                "{:>5} {:>10} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}",
                "layer", "slot", "std all", "std last", "cosine", "sqnr dB", "nmse", "max|diff|"
            );
            for (i, s) in report.slots.iter().enumerate() {
                let mark = if Some(i) == report.first_divergent {
                    "  <- first outside tolerance"
                } else {
                    ""
                };
                let layer = s.layer.map_or("-".to_string(), |l| l.to_string());
                let _ = writeln!(
                    o,
                    "{layer:>5} {:>10} {:>9.4} {:>9.4} {:>9.6} {:>8.2} {:>10.3e} {:>10.4}{mark}",
                    s.slot.name(),
                    s.std_ratio_all,
                    s.std_ratio_last,
                    s.cosine,
                    s.sqnr_db,
                    s.nmse,
                    s.max_abs_diff
                );
            }
            let agree = report.logits.top1_agree.iter().filter(|&&x| x).count();
            let max_kl = report.logits.kl.iter().copied().fold(0f64, f64::max);
            let _ = writeln!(
                o,
                "logits: top-1 agrees at {agree}/{} positions; KL(A||B) max {max_kl:.3e} nats",
                report.logits.kl.len()
            );
            match report.first_divergent {
                Some(i) => {
                    let s = &report.slots[i];
                    let _ = writeln!(
                        o,
                        "first slot outside tolerance: {} {}",
                        s.slot.name(),
                        s.layer
                            .map_or("(once per pass)".to_string(), |l| format!("at layer {l}"))
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "every slot within tolerance (|std ratio - 1| <= {}, cosine >= {})",
                        tolerance.max_std_deviation, tolerance.min_cosine
                    );
                }
            }
            emit(&o)?;
        }
    }
    if report.first_divergent.is_some() {
        return Err(CliError::reported(1));
    }
    Ok(())
}
