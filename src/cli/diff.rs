//! `pv diff A B --prompt TEXT`: two models traced on the same token ids, compared slot by
//! slot in execution order against limits (coarse by default, or a calibrated table); names
//! the first slot outside them, and the metric and channel that put it there.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{CliError, Format, emit, print_json};
use crate::model::with_threads;
use crate::trace::{
    CompareMode, Metric, Thresholds, TraceDiff, Violation, compare_models, distinct_tokens,
    judge_set, set_mean,
};

/// Arguments of `pv diff`.
#[derive(clap::Args)]
#[command(
    after_help = "Both models run on model A's token ids. Ratios are B/A.\n\nLimits: without \
--thresholds, |std ratio - 1| <= --max-std-deviation and cosine >= --min-cosine everywhere \
(coarse). With --thresholds FILE, the calibrated table of `pv calibrate` (or the `thresholds` \
of a contract test), per slot, layer and metric: gain, per-channel std and error, and the rest.\n\n\
Exit status: 0 every slot within its limits, 1 some slot outside them (the first is named), \
2 bad input.\n\nExample:\n  \
pv convert models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/SmolLM2-135M-Instruct.Q4_1.apr\n  \
pv diff models/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_1.apr --prompt 'What is 2+2?'\n  \
pv diff A.gguf A.apr -p 'What is 2+2?' --thresholds contracts/forward-parity-v1.yaml --fault q@3:zero-channel=7\n  \
pv diff A.gguf A.apr -p 'What is 2+2?' --engine-a realizar   # realizar's GGUF path against pv's f32 reference"
)]
pub struct Args {
    /// Model A (GGUF or APR).
    a: PathBuf,
    /// Model B (GGUF or APR).
    b: PathBuf,
    /// The prompt, tokenized by model A. Repeat it (or use --prompts) to judge several: the
    /// gain bands are then judged on the mean over them, which is sqrt(n) times tighter.
    #[arg(long, short, required_unless_present = "prompts")]
    prompt: Vec<String>,
    /// A file of prompts, one a line (as for `pv calibrate`).
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Coarse limit: largest allowed |std(B)/std(A) - 1| in either scope.
    #[arg(long, default_value_t = 0.05)]
    max_std_deviation: f64,
    /// Coarse limit: smallest allowed cosine similarity of the full tensors.
    #[arg(long, default_value_t = 0.99)]
    min_cosine: f64,
    /// Calibrated limits: a YAML table (`pv calibrate -o`), or a contract whose
    /// `trace_agreement` test carries one.
    #[arg(long, value_name = "FILE")]
    thresholds: Option<PathBuf>,
    /// Run each layer of A on B's input to that layer (B's embd and previous l_out), so each
    /// layer shows its own error, not what it inherited; the first layer out of limits is
    /// where the fault is.
    #[arg(long)]
    local: bool,
    /// Draw per-layer SQNR, cosine gap, gain and worst channel error of every slot to this SVG file, the first
    /// slot outside the limits marked (the first prompt's comparison).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
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
    #[command(flatten)]
    engines: super::EnginePair,
}

/// Reads a limits table: a bare table, or the first `trace_agreement` test of a contract.
pub fn read_thresholds(path: &Path) -> Result<Thresholds, CliError> {
    let text = crate::fsutil::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    crate::contract::thresholds_from_yaml(&text)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// Runs `pv diff`: compare the two models on each prompt, judge the set with the limits,
/// plot and report; exit 1 when a slot is outside its limit.
pub fn run(a: Args) -> Result<(), CliError> {
    a.engines.check(a.local, a.fault.is_some())?;
    let [(ma, tok_a, n_layer), (mb, tok_b, _)] = a.engines.load(&a.a, &a.b)?;
    let tok = super::some_tokenizer([(a.a.as_path(), &tok_a), (a.b.as_path(), &tok_b)])?;
    let mut prompts = a.prompt.clone();
    if let Some(p) = &a.prompts {
        prompts.extend(super::calibrate::read_prompts(p)?);
    }
    let mut token_lists = Vec::new();
    for p in &prompts {
        let tokens = tok.encode(p)?;
        if let (Some(_), Some(b)) = (&tok_a, &tok_b)
            && b.encode(p)? != tokens
        {
            eprintln!("note: model B tokenizes {p:?} differently; both run on model A's ids");
        }
        token_lists.push(tokens);
    }
    let limits = limits(&a, n_layer)?;
    let mode = if a.local {
        CompareMode::Local
    } else {
        CompareMode::EndToEnd
    };
    let reports = token_lists
        .iter()
        .map(|tokens| {
            with_threads(a.threads, || {
                compare_models(&*ma, &*mb, tokens, a.fault, mode, &limits)
            })
            .map_err(CliError::from)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let violations = judge_set(&reports, &limits);
    if let Some(svg) = &a.plot {
        plot(&a, &reports, &violations, &limits, svg)?;
    }
    let report = &reports[0];
    match a.format {
        Format::Json if reports.len() == 1 => {
            print_json(&serde_json::to_value(report).map_err(|e| CliError::other(e.to_string()))?)?
        }
        Format::Json => print_json(&serde_json::json!({
            "prompts": prompts,
            "diffs": reports,
            "violations": violations,
        }))?,
        Format::Text if reports.len() > 1 => emit(&set_text(&prompts, &reports, &violations))?,
        Format::Text => {
            let mut o = format!(
                "A = {} ({}), B = {} ({}), {} tokens{}\n",
                a.a.display(),
                report.engines.0,
                a.b.display(),
                report.engines.1,
                report.tokens.len(),
                if a.local {
                    ", each layer of A on B's input (local error)"
                } else {
                    ""
                }
            );
            o.push_str(&table(report));
            for line in crate::trace::not_captured_lines(&report.not_captured) {
                let _ = writeln!(o, "{line}");
            }
            o.push_str(&verdict(report, a.thresholds.is_some()));
            emit(&o)?;
        }
    }
    if !violations.is_empty() {
        return Err(CliError::reported(1));
    }
    Ok(())
}

/// The limits to judge by: the --thresholds table (checked against the model's layers and
/// the comparison mode), or the uniform limits of --max-std-deviation and --min-cosine.
fn limits(a: &Args, n_layer: usize) -> Result<Thresholds, CliError> {
    let Some(p) = &a.thresholds else {
        return Ok(Thresholds::uniform(&[
            (Metric::StdRatio, a.max_std_deviation),
            (Metric::CosineGap, 1.0 - a.min_cosine),
        ]));
    };
    let t = read_thresholds(p)?;
    let problems = t.problems(Some(n_layer));
    if !problems.is_empty() {
        return Err(CliError::input(format!(
            "{}: {}",
            p.display(),
            problems.join("; ")
        )));
    }
    if a.local != t.local {
        return Err(CliError::input(if t.local {
            "the --thresholds table is for layer-local comparison: add --local"
        } else {
            "the --thresholds table is for end-to-end comparison: drop --local"
        }));
    }
    Ok(t)
}

/// Draws the comparison to `svg`: the prompt the set's first finding is on, or, for a
/// finding on the mean over the prompts (or none), the set's geometric mean with the set's
/// limits.
fn plot(
    a: &Args,
    reports: &[TraceDiff],
    violations: &[Violation],
    limits: &Thresholds,
    svg: &Path,
) -> Result<(), CliError> {
    let on = match violations.first() {
        Some(v) => v.prompt,
        None if reports.len() == 1 => Some(0),
        None => None,
    };
    let mean = if on.is_none() {
        set_mean(reports)
    } else {
        None
    };
    let (mut shown, tokens, which) = match mean {
        Some(mean) => (
            mean,
            reports
                .iter()
                .map(|r| Some(distinct_tokens(&r.tokens)))
                .collect(),
            format!(", geometric mean over {} prompts", reports.len()),
        ),
        None => {
            let p = on.unwrap_or(0);
            (
                reports[p].clone(),
                vec![Some(distinct_tokens(&reports[p].tokens))],
                if reports.len() > 1 {
                    format!(", prompt {} of {}", p + 1, reports.len())
                } else {
                    String::new()
                },
            )
        }
    };
    let title = format!(
        "{} vs {}{}{which}",
        a.a.file_name().unwrap_or_default().to_string_lossy(),
        a.b.file_name().unwrap_or_default().to_string_lossy(),
        if a.local { " (layer-local)" } else { "" },
    );
    shown.first_divergent = violations.first().map(|v| v.index);
    super::plot::draw(&shown, limits, &tokens, &title, svg)
}

/// The text report of a set of prompts: each prompt's first slot outside its limits, then
/// the set's first finding with every violation at that slot.
fn set_text(prompts: &[String], reports: &[TraceDiff], violations: &[Violation]) -> String {
    let mut o = String::new();
    for (p, r) in prompts.iter().zip(reports) {
        let first = r.first_divergent.map_or("within limits".to_string(), |i| {
            format!("first outside limits: {}", r.slots[i].place())
        });
        let _ = writeln!(
            o,
            "{:>44}: {first}",
            format!("{:?}", crate::fsutil::short(p, 40))
        );
    }
    match violations.first() {
        Some(v) => {
            let first = v.index;
            let _ = writeln!(
                o,
                "over all {} prompts, first slot outside limits: {}",
                reports.len(),
                reports[0].slots[first].place()
            );
            for v in violations.iter().filter(|v| v.index == first) {
                let on = v
                    .prompt
                    .map_or("mean of all".to_string(), |p| format!("prompt {}", p + 1));
                let _ = writeln!(o, "  {v} [{on}]");
            }
        }
        None => {
            let _ = writeln!(
                o,
                "over all {} prompts, every slot within limits",
                reports.len()
            );
        }
    }
    o
}

/// The per-slot table, the first divergent slot marked.
pub fn table(report: &TraceDiff) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>5} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9} {:>16}",
        "layer", "slot", "std all", "std last", "cosine", "sqnr dB", "gain", "worst channel"
    );
    for (i, s) in report.slots.iter().enumerate() {
        let mark = if Some(i) == report.first_divergent {
            "  <- first outside limits"
        } else {
            ""
        };
        let layer = s.layer.map_or("-".to_string(), |l| l.to_string());
        let (err, ch) = s.channels.err;
        let _ = writeln!(
            o,
            "{layer:>5} {:>10} {:>9.4} {:>9.4} {:>9.6} {:>8.2} {:>9.5} {:>9.3} (#{ch:<4}){mark}",
            s.slot.name(),
            s.std_ratio_all,
            s.std_ratio_last,
            s.cosine,
            s.sqnr_db,
            s.gain,
            err,
        );
    }
    o
}

/// The logits line and the verdict.
pub fn verdict(report: &TraceDiff, calibrated: bool) -> String {
    let mut o = String::new();
    let agree = report.logits.top1_agree.iter().filter(|&&x| x).count();
    let max_kl = report.logits.kl.iter().copied().fold(0f64, f64::max);
    let _ = writeln!(
        o,
        "logits: top-1 agrees at {agree}/{} positions; KL(A||B) max {max_kl:.3e} nats",
        report.logits.kl.len()
    );
    if max_kl > 0.0 {
        let _ = writeln!(o, "  KL by position: {}", report.logits.by_position(8));
    }
    match report.first_divergent {
        Some(i) => {
            let _ = writeln!(o, "first slot outside limits: {}", report.slots[i].place());
            for v in report.first_violations() {
                let _ = writeln!(o, "  {v}");
            }
            let later = report.violations.iter().filter(|v| v.index != i).count();
            if later > 0 {
                let _ = writeln!(o, "  ({later} more violations downstream)");
            }
        }
        None => {
            let _ = writeln!(
                o,
                "every slot within {} limits",
                if calibrated {
                    "its calibrated"
                } else {
                    "the coarse"
                }
            );
        }
    }
    o
}
