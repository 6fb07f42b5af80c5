//! `pv calibrate A B --prompts FILE`: limits per slot, layer and metric from the noise of an
//! intact pair (the same model as GGUF and as APR), and the false alarms those limits raise
//! on prompts they were not derived from.

use std::fmt::Write;
use std::path::PathBuf;

use super::{CliError, Format, emit, print_json, spinner};
use crate::model::with_threads;
use crate::trace::{
    Calibration, CompareMode, Metric, Thresholds, TraceDiff, Violation, calibrate, compare_models,
    judge_set,
};

/// Arguments of `pv calibrate`.
#[derive(clap::Args)]
#[command(
    after_help = "Each limit is max(margin x the worst deviation over the calibration \
prompts, floor), per slot, layer and metric, rounded up to three digits; with --false-alarm \
RATE, limits for that rate per prompt instead, which move with the prompt's length. With \
--check, the limits are applied to other prompts: any slot outside them there is a false \
alarm (exit 1). Measuring takes the time (25 to 60 minutes for a 250-prompt corpus): \
--save-measurements keeps the comparisons, and --measurements derives again from them in a \
second.\n\n\
Prompt files hold one prompt a line (\\n for a newline inside one; blank lines and lines \
starting with # are skipped).\n\nExample:\n  \
pv calibrate models/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_1.apr \\\n    \
--local --prompts tests/fixtures/prompts/corpus-calibration.txt --check tests/fixtures/prompts/corpus-heldout.txt \\\n    \
--false-alarm 1e-3 --save-measurements smollm2.json -o limits.yaml\n  \
pv calibrate --measurements smollm2.json --false-alarm 1e-4 -o limits-1e-4.yaml"
)]
pub struct Args {
    /// Model A (the engine under test, e.g. GGUF).
    #[arg(required_unless_present = "measurements")]
    a: Option<PathBuf>,
    /// Model B (the reference, e.g. its APR conversion).
    #[arg(required_unless_present = "measurements")]
    b: Option<PathBuf>,
    /// Calibration prompts.
    #[arg(long, value_name = "FILE", required_unless_present = "measurements")]
    prompts: Option<PathBuf>,
    /// Held-out prompts to count false alarms on.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Also write every intact comparison measured (calibration and held-out prompts) to
    /// this JSON file, so other rates or methods can be tried without running the engines.
    #[arg(long, value_name = "FILE", conflicts_with = "measurements")]
    save_measurements: Option<PathBuf>,
    /// Derive and check from comparisons saved by --save-measurements instead of running
    /// the models (the file names the models, the way of comparing and the prompts).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["a", "b", "prompts", "check"])]
    measurements: Option<PathBuf>,
    /// Calibrate layer-local errors (each layer of A on B's input; for `pv diff --local`).
    #[arg(long)]
    local: bool,
    /// Multiplier on the worst intact deviation.
    #[arg(long, default_value_t = 2.0)]
    margin: f64,
    /// Width of the gain bands, in standard deviations of the intact gain.
    #[arg(long, default_value_t = 6.0)]
    band_k: f64,
    /// Smallest limit.
    #[arg(long, default_value_t = 1e-6)]
    floor: f64,
    /// Derive the limits for this false-alarm rate per prompt (e.g. 1e-3) instead of
    /// --margin and --band-k: each metric's deviations modelled per slot and layer with a
    /// term for the prompt's length, and the spreads allowed taken from an extreme-value fit
    /// to the largest deviation each calibration prompt shows (see the README).
    #[arg(long, value_name = "RATE")]
    false_alarm: Option<f64>,
    /// Also judge the held-out prompts in consecutive sets of this many, as a contract
    /// judges its prompts together (neighbouring held-out prompts are often alike, which
    /// makes these sets harder to pass than random ones); 0 for none.
    #[arg(long, value_name = "N", default_value_t = 12)]
    set_size: usize,
    /// Metrics to calibrate (default: gain, cosine_gap, channel_std, channel_err).
    #[arg(long = "metric", value_enum)]
    metrics: Vec<Metric>,
    /// Write the table as YAML here (otherwise to stdout in text format).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Output format of the report.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    engines: super::EnginePair,
}

/// The metrics calibrated when none are named.
pub const DEFAULT_METRICS: [Metric; 4] = [
    Metric::Gain,
    Metric::CosineGap,
    Metric::ChannelStd,
    Metric::ChannelErr,
];

/// Reads a prompt file.
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<String>, CliError> {
    let text = crate::fsutil::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("\\n", "\n"))
        .collect();
    if prompts.is_empty() {
        return Err(CliError::input(format!("{}: no prompts", path.display())));
    }
    Ok(prompts)
}

/// Intact comparisons of one pair, as `--save-measurements` writes them.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Measurements {
    /// Model A's path, as given.
    a: String,
    /// Model B's path, as given.
    b: String,
    /// Layer-local comparisons (otherwise end to end).
    local: bool,
    /// Layers of the model.
    n_layer: usize,
    /// The calibration prompts and their comparisons.
    calibration: Vec<Measured>,
    /// The held-out prompts and their comparisons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<Vec<Measured>>,
}

/// One prompt's comparison, not yet judged.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Measured {
    prompt: String,
    diff: TraceDiff,
}

/// Runs both models on the calibration (and held-out) prompts.
fn measure(a: &Args) -> Result<Measurements, CliError> {
    let (Some(pa), Some(pb), Some(prompts)) = (&a.a, &a.b, &a.prompts) else {
        return Err(CliError::input("two models and --prompts are needed"));
    };
    a.engines.check(a.local, false)?;
    let [(ma, tok_a, n_layer), (mb, tok_b, _)] = a.engines.load(pa, pb)?;
    let tok = super::some_tokenizer([(pa.as_path(), &tok_a), (pb.as_path(), &tok_b)])?;
    let mode = if a.local {
        CompareMode::Local
    } else {
        CompareMode::EndToEnd
    };
    let bar = spinner();
    let run_set = |prompts: Vec<String>, what: &str| -> Result<Vec<Measured>, CliError> {
        let n = prompts.len();
        prompts
            .into_iter()
            .enumerate()
            .map(|(i, prompt)| {
                bar.set_message(format!("{what} prompt {}/{n}", i + 1));
                let tokens = tok.encode(&prompt)?;
                let diff = with_threads(a.threads, || {
                    compare_models(&*ma, &*mb, &tokens, None, mode, &Thresholds::default())
                })
                .map_err(CliError::from)?;
                Ok(Measured { prompt, diff })
            })
            .collect()
    };
    let calibration = run_set(read_prompts(prompts)?, "calibration")?;
    let check = match &a.check {
        Some(p) => Some(run_set(read_prompts(p)?, "held-out")?),
        None => None,
    };
    bar.finish_and_clear();
    Ok(Measurements {
        a: pa.display().to_string(),
        b: pb.display().to_string(),
        local: a.local,
        n_layer,
        calibration,
        check,
    })
}

/// Runs `pv calibrate`: measure (or load saved measurements), derive the limits, judge the
/// held-out prompts with them, report; exit 1 when a held-out prompt or set alarms.
pub fn run(a: Args) -> Result<(), CliError> {
    if !(a.margin.is_finite() && a.margin >= 1.0 && a.floor.is_finite() && a.floor >= 0.0) {
        return Err(CliError::input("--margin must be >= 1 and --floor >= 0"));
    }
    if a.false_alarm
        .is_some_and(|r| !(r.is_finite() && r > 0.0 && r < 1.0))
    {
        return Err(CliError::input("--false-alarm must be in (0, 1)"));
    }
    let m = match &a.measurements {
        Some(path) => load_measurements(path, a.local)?,
        None => measure(&a)?,
    };
    if let Some(out) = &a.save_measurements {
        let json = serde_json::to_vec(&m).map_err(|e| CliError::other(e.to_string()))?;
        crate::fsutil::atomic_write(out, &json)
            .map_err(|e| CliError::other(format!("{}: {e}", out.display())))?;
    }
    let how = Calibration {
        margin: a.margin,
        band_k: a.band_k,
        floor: a.floor,
        false_alarm: a.false_alarm,
        metrics: if a.metrics.is_empty() {
            DEFAULT_METRICS.to_vec()
        } else {
            a.metrics.clone()
        },
    };
    let (prompts, intact): (Vec<String>, Vec<TraceDiff>) = m
        .calibration
        .into_iter()
        .map(|x| (x.prompt, x.diff))
        .unzip();
    let table = calibrate(&intact, m.local, &how);
    let held = m.check.map(|h| HeldOut::judge(h, &table, a.set_size));
    let method = method_line(&a, &table);
    let yaml = format!(
        "# pv calibrate{}: {} vs {}, {} layers, {} calibration prompts, {method}, floor {:e}\n{}",
        if m.local { " --local" } else { "" },
        m.a,
        m.b,
        m.n_layer,
        prompts.len(),
        a.floor,
        table.to_yaml(0)
    );
    if let Some(out) = &a.output {
        crate::fsutil::atomic_write(out, yaml.as_bytes())
            .map_err(|e| CliError::other(format!("{}: {e}", out.display())))?;
    }
    let empty = HeldOut::default();
    let h = held.as_ref().unwrap_or(&empty);
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "calibration": how,
            "prompts": prompts,
            "thresholds": table,
            "check": held.as_ref().map(|h| h.prompts.iter().map(|(p, d)| serde_json::json!({
                "prompt": p,
                "violations": d.violations,
            })).collect::<Vec<_>>()),
            "check_set_violations": held.as_ref().map(|h| &h.whole),
            "check_sets": h.sets.iter().enumerate().map(|(i, v)| serde_json::json!({
                "prompts": [i * a.set_size, (i + 1) * a.set_size],
                "first_violation": v,
            })).collect::<Vec<_>>(),
            "false_alarms": {
                "expected_per_prompt": a.false_alarm,
                "observed": held.as_ref().map(|h| {
                    let (x, m, u) = h.rate();
                    serde_json::json!({
                        "prompts_alarmed": x, "prompts": m, "rate": x as f64 / m as f64, "upper_95": u,
                    })
                }),
            },
        }))?,
        Format::Text => {
            let mut o = String::new();
            if a.output.is_none() {
                o.push_str(&yaml);
            }
            let _ = writeln!(
                o,
                "calibrated {} metrics over {} prompts ({method}, floor {:e})",
                how.metrics.len(),
                prompts.len(),
                a.floor
            );
            if let Some(h) = &held {
                h.write_text(&mut o, a.set_size, a.false_alarm);
            }
            emit(&o)?;
        }
    }
    if h.alarms() > 0 {
        return Err(CliError::reported(1));
    }
    Ok(())
}

/// Measurements saved by `--save-measurements`, checked against the arguments.
fn load_measurements(path: &std::path::Path, local: bool) -> Result<Measurements, CliError> {
    let text = crate::fsutil::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let m: Measurements = serde_json::from_str(&text).map_err(|e| {
        CliError::input(format!(
            "{}:{}:{}: not saved measurements: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    if local && !m.local {
        return Err(CliError::input(format!(
            "{}: measured end to end, not --local",
            path.display()
        )));
    }
    if m.calibration.is_empty() {
        return Err(CliError::input(format!(
            "{}: no calibration prompts",
            path.display()
        )));
    }
    Ok(m)
}

/// How the limits were derived, for the table's header line and the report.
fn method_line(a: &Args, table: &Thresholds) -> String {
    match (a.false_alarm, &table.prediction) {
        (Some(r), Some(p)) => format!(
            "limits for {r:e} false alarms per prompt over {} checks; per metric, spreads allowed k, \
length term noise_tokens, slope: {}",
            table.cells(),
            p.metrics
                .iter()
                .map(|(m, x)| format!(
                    "{} k {} noise_tokens {} slope {}",
                    m.name(),
                    x.k,
                    x.noise_tokens,
                    x.slope
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        _ => format!("margin {}", a.margin),
    }
}

/// The held-out prompts judged as a contract judges them: each prompt alone, the mean over
/// all of them (bands), and in sets of a contract's size (each set's first violation).
#[derive(Default)]
struct HeldOut {
    /// Each prompt with its judged comparison.
    prompts: Vec<(String, TraceDiff)>,
    /// The violations of all prompts judged as one set.
    whole: Vec<Violation>,
    /// Each set of `set_size` prompts: its first violation, if any.
    sets: Vec<Option<Violation>>,
}

impl HeldOut {
    fn judge(measured: Vec<Measured>, table: &Thresholds, set_size: usize) -> Self {
        let prompts: Vec<(String, TraceDiff)> = measured
            .into_iter()
            .map(|mut x| {
                x.diff.judge(table);
                (x.prompt, x.diff)
            })
            .collect();
        let diffs: Vec<TraceDiff> = prompts.iter().map(|(_, d)| d.clone()).collect();
        let sets = if set_size > 1 && diffs.len() >= set_size {
            diffs
                .chunks_exact(set_size)
                .map(|c| judge_set(c, table).into_iter().next())
                .collect()
        } else {
            Vec::new()
        };
        HeldOut {
            whole: judge_set(&diffs, table),
            prompts,
            sets,
        }
    }

    /// Prompts alarmed, prompts, and the 95% upper bound on the per-prompt rate.
    fn rate(&self) -> (usize, usize, f64) {
        let alarmed = self
            .prompts
            .iter()
            .filter(|(_, d)| d.first_divergent.is_some())
            .count();
        (
            alarmed,
            self.prompts.len(),
            upper_95(alarmed, self.prompts.len()),
        )
    }

    /// Every alarm: each prompt, the whole set, each set of a contract's size.
    fn alarms(&self) -> usize {
        self.rate().0 + usize::from(!self.whole.is_empty()) + self.sets.iter().flatten().count()
    }

    fn write_text(&self, o: &mut String, set_size: usize, false_alarm: Option<f64>) {
        for (p, d) in &self.prompts {
            let status = match d.first_divergent {
                None => "ok".to_string(),
                Some(_) => format!(
                    "FALSE ALARM: {}",
                    d.first_violations()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            let _ = writeln!(o, "  held-out {:?}: {status}", crate::fsutil::short(p, 40));
        }
        match self.whole.first() {
            Some(first) => {
                let _ = writeln!(o, "  all held-out prompts together: FALSE ALARM: {first}");
            }
            None => {
                let _ = writeln!(o, "  all held-out prompts together: ok");
            }
        }
        for (i, v) in self.sets.iter().enumerate() {
            if let Some(v) = v {
                let (from, to) = (i * set_size + 1, (i + 1) * set_size);
                let _ = writeln!(
                    o,
                    "  held-out prompts {from}-{to} together: FALSE ALARM: {v}"
                );
            }
        }
        let sets = if self.sets.is_empty() {
            String::new()
        } else {
            format!(
                ", {} of {} sets of {set_size}",
                self.sets.iter().flatten().count(),
                self.sets.len(),
            )
        };
        let (x, m, u) = self.rate();
        let _ = writeln!(
            o,
            "false alarms: {x} of {m} held-out prompts{sets} (and the set as a whole: {})",
            if self.whole.is_empty() {
                "ok"
            } else {
                "alarmed"
            }
        );
        let _ = writeln!(
            o,
            "false-alarm rate per prompt: expected {}, observed {x}/{m} = {:.3} (95% upper bound {u:.3})",
            false_alarm.map_or("(not stated: margin method)".to_string(), |r| format!(
                "<= {r:e}"
            )),
            x as f64 / m as f64
        );
    }
}

/// The one-sided 95% upper confidence bound on a rate seen `x` times in `m` trials
/// (Clopper-Pearson: the Beta(x + 1, m - x) quantile at 0.95; 1 when every trial hit).
fn upper_95(x: usize, m: usize) -> f64 {
    use statrs::distribution::{Beta, ContinuousCDF};
    if x >= m {
        return 1.0;
    }
    Beta::new((x + 1) as f64, (m - x) as f64).map_or(1.0, |b| b.inverse_cdf(0.95))
}

#[cfg(test)]
mod tests {
    /// 0 of 100 bounds the rate by 1 - 0.05^(1/100) (the "rule of three" gives about 3/100).
    #[test]
    fn the_upper_bound_is_clopper_pearsons() {
        let u = super::upper_95(0, 100);
        assert!((u - (1.0 - 0.05f64.powf(0.01))).abs() < 1e-9, "{u}");
        assert!(super::upper_95(5, 100) > 0.05 && super::upper_95(5, 100) < 0.12);
        assert_eq!(super::upper_95(3, 3), 1.0);
    }
}
