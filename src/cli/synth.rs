//! `pv synth SHAPE -o FILE`: a synthetic model at a real shape, for measuring cost.

use std::path::PathBuf;

use super::CliError;
use crate::model::synth::{SHAPES, Shape, write_synthetic};

/// Arguments of `pv synth`.
///
/// Random weights in a Q4_K_M-like mix at the published shape of the model, with a
/// byte-level vocabulary of its real size: as costly to convert, trace and check as the real
/// thing. The bytes depend only on the shape, so every machine writes the same file.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  pv synth qwen2-7b -o models/synth/qwen2-7b.gguf\n  pv synth --list\n\nscripts/scaling.sh runs every shape through bench, convert, trace and discharge."
)]
pub struct Args {
    /// The shape (see --list).
    #[arg(required_unless_present = "list")]
    shape: Option<String>,
    /// Where to write the GGUF file (streamed, written atomically).
    #[arg(long, short, required_unless_present = "list")]
    output: Option<PathBuf>,
    /// List the shapes and their parameter counts.
    #[arg(long)]
    list: bool,
}

/// Runs `pv synth`.
pub fn run(a: Args) -> Result<(), CliError> {
    if a.list {
        let mut out = String::new();
        for s in SHAPES {
            out += &format!(
                "{:<12} {:<6} {:>6.2}B params  d={} ff={} layers={} heads={}/{} vocab={}\n",
                s.name,
                s.arch.name(),
                s.parameters() as f64 / 1e9,
                s.n_embd,
                s.n_ff,
                s.n_layer,
                s.n_head,
                s.n_head_kv,
                s.vocab
            );
        }
        return super::emit(&out);
    }
    let (Some(name), Some(output)) = (a.shape, a.output) else {
        return Err(CliError::input("give a shape and -o FILE, or --list"));
    };
    let shape = Shape::by_name(&name).ok_or_else(|| {
        let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
        CliError::input(format!(
            "unknown shape {name:?}; one of {}",
            names.join(", ")
        ))
    })?;
    let bar = super::progress_bar("generating");
    let start = std::time::Instant::now();
    write_synthetic(shape, &output, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({}, {:.2}B parameters, {:.1} s)",
        output.display(),
        shape.name,
        shape.parameters() as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
