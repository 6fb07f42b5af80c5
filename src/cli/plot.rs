//! `pv diff --plot FILE.svg`: per-layer SQNR, cosine gap, gain and worst channel error of
//! every slot, one line a slot. The slot to look at (the first outside the limits, when
//! there is one) is drawn bold in red with its limit (a dashed bound or a shaded band) and
//! its layer marked; every other slot is a thin grey line, so where the fault is reads at a
//! glance. Layers are labelled as integers, log axes as `1e-4`, `2.5e-3`. SVG through
//! plotters (no C, no fonts: the viewer renders the text).

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::CliError;
use crate::model::Slot;
use crate::trace::{Bound, Metric, Thresholds, TraceDiff};

/// One panel: a title, whether its y axis is logarithmic, the value of a slot, and the
/// metric whose limit it shows (if any).
struct Panel {
    title: &'static str,
    log: bool,
    value: fn(&crate::trace::SlotDiff) -> f64,
    metric: Option<Metric>,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "SQNR (dB, higher is closer)",
        log: false,
        value: |s| s.sqnr_db,
        metric: None,
    },
    Panel {
        title: "1 - cosine (log)",
        log: true,
        value: |s| 1.0 - s.cosine,
        metric: Some(Metric::CosineGap),
    },
    Panel {
        title: "gain - 1",
        log: false,
        value: |s| s.gain - 1.0,
        metric: Some(Metric::Gain),
    },
    Panel {
        title: "worst channel's relative error (log)",
        log: true,
        value: |s| s.channels.err.0,
        metric: Some(Metric::ChannelErr),
    },
];

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::other(format!("plot: {e}"))
}

/// A log axis label: `1e-4`, `2.5e-3`, `0.1`, `10` (two significant digits, no trailing
/// zeros), so neighbouring ticks never print alike.
fn log_label(v: &f64) -> String {
    if *v <= 0.0 || !v.is_finite() {
        return String::new();
    }
    let e = v.log10().floor();
    if (-2.0..3.0).contains(&e) {
        let digits = (1.0 - e).max(0.0) as usize;
        let t = format!("{v:.digits$}");
        let t = if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        };
        return t;
    }
    let m = v / 10f64.powf(e);
    let m = format!("{m:.1}");
    let m = m.trim_end_matches('0').trim_end_matches('.');
    format!("{m}e{}", e as i32)
}

/// A linear axis label with as many decimals as an axis spanning `span` needs (0 printed
/// as `0`, never as a rounding residue like `6.9e-18`).
fn lin_label(v: f64, span: f64) -> String {
    let step = span.abs().max(f64::MIN_POSITIVE);
    if v.abs() < step * 1e-6 {
        return "0".into();
    }
    if (1e-2..1e5).contains(&step) {
        let digits = (2.0 - step.log10().floor()).clamp(0.0, 6.0) as usize;
        let t = format!("{v:.digits$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    } else {
        let t = format!("{v:.1e}");
        t.replace(".0e", "e")
    }
}

/// What one panel draws: every slot's line, the highlighted slot, its limit per layer (a
/// bound, or a band's low and high), and the layer to mark.
struct Lines<'a> {
    slots: &'a [Slot],
    series: &'a dyn Fn(Slot) -> Vec<(f64, f64)>,
    focus: Option<Slot>,
    limit: Vec<(f64, f64, f64)>,
    mark: Option<f64>,
}

/// One panel: the other slots thin and grey, the highlighted one bold and red over its
/// limit (a dashed line for a bound, a shaded band for a band), the marked layer as a
/// vertical line; the same on a linear and on a log scale (`Y`).
fn draw_lines<Y>(
    mut c: ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    l: &Lines,
    n_layer: usize,
    (y0, y1): (f64, f64),
    log: bool,
) -> Result<(), CliError>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let ticks = if n_layer <= 16 {
        n_layer
    } else {
        n_layer.div_ceil(2)
    };
    c.configure_mesh()
        .x_desc("layer")
        .x_labels(ticks.max(2))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| {
            if log {
                log_label(v)
            } else {
                lin_label(*v, y1 - y0)
            }
        })
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let faded = RGBColor(190, 190, 190).mix(0.9).stroke_width(1);
    for s in l.slots.iter().filter(|s| Some(**s) != l.focus) {
        c.draw_series(LineSeries::new((l.series)(*s), faded))
            .map_err(err)?;
    }
    if let Some(m) = l.mark {
        c.draw_series(LineSeries::new(
            [(m, y0), (m, y1)],
            RED.mix(0.35).stroke_width(8),
        ))
        .map_err(err)?;
    }
    let band: Vec<&(f64, f64, f64)> = l.limit.iter().filter(|b| b.1 > b.0).collect();
    for b in &band {
        let (x, lo, hi) = (b.2, b.0.max(y0), b.1.min(y1));
        c.draw_series([Rectangle::new(
            [(x - 0.45, lo), (x + 0.45, hi)],
            RGBColor(255, 165, 0).mix(0.25).filled(),
        )])
        .map_err(err)?;
    }
    let bound: Vec<(f64, f64)> = l
        .limit
        .iter()
        .filter(|b| b.1 == b.0)
        .map(|b| (b.2, b.0.clamp(y0, y1)))
        .collect();
    for w in bound.windows(2) {
        // Dashes: every other half-layer step of the bound.
        c.draw_series(LineSeries::new(
            [w[0], ((w[0].0 + w[1].0) / 2.0, (w[0].1 + w[1].1) / 2.0)],
            RGBColor(230, 120, 0).stroke_width(2),
        ))
        .map_err(err)?;
    }
    if let Some(f) = l.focus {
        c.draw_series(LineSeries::new((l.series)(f), RED.stroke_width(4)))
            .map_err(err)?;
        c.draw_series(
            (l.series)(f)
                .into_iter()
                .map(|p| Circle::new(p, 3, RED.filled())),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Draws `report` to `path` as SVG. `title` heads the figure; `limits` (the table the
/// report was judged against) gives the highlighted slot's limits, taken for prompts of
/// these distinct token counts (one prompt's, or a set's for its mean).
pub fn draw(
    report: &TraceDiff,
    limits: &Thresholds,
    tokens: &[Option<usize>],
    title: &str,
    path: &Path,
) -> Result<(), CliError> {
    let n_layer = report
        .slots
        .iter()
        .filter_map(|s| s.layer)
        .max()
        .map_or(0, |l| l + 1);
    if n_layer == 0 {
        return Err(err("no per-layer slots to draw"));
    }
    let first = report.first_divergent.map(|i| &report.slots[i]);
    let slots: Vec<Slot> = Slot::per_layer()
        .filter(|s| report.slots.iter().any(|d| d.slot == *s))
        .collect();
    let focus = first.map(|f| f.slot).filter(|s| slots.contains(s));
    let root = SVGBackend::new(path, (1200, 1400)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let heading = match first {
        Some(s) => format!("{title} — first outside limits: {}", s.place()),
        None => format!("{title} — every slot within limits"),
    };
    // A long heading (file names, the set drawn, the place) is set smaller so it fits the
    // figure's width (about half the font size per character).
    let size = (2300.0 / heading.chars().count().max(1) as f64).clamp(11.0, 20.0);
    let root = root.titled(&heading, ("sans-serif", size)).map_err(err)?;
    let (plots, legend) = root.split_horizontally(1000);
    let panels = plots.split_evenly((PANELS.len(), 1));
    let finite = |v: f64| v.is_finite();
    for (panel, area) in PANELS.iter().zip(&panels) {
        // Each layer's limit of the highlighted slot under this panel's metric: (low, high)
        // of a band around its centre, or (bound, bound).
        let limit: Vec<(f64, f64, f64)> = match (focus, panel.metric) {
            (Some(f), Some(m)) => (0..n_layer)
                .filter_map(|l| {
                    let (_, b) = limits
                        .limits(f, Some(l))
                        .into_iter()
                        .find(|(lm, _)| *lm == m)?;
                    let x = l as f64;
                    Some(match b {
                        Bound::Max(v) => (v, v, x),
                        Bound::LogNormal { log_mean, log_sd } => {
                            let v = match tokens {
                                [one] => limits.log_bound(m, log_mean, log_sd, *one),
                                set => limits.log_bound_for(m, log_mean, log_sd, set),
                            };
                            (v, v, x)
                        }
                        Bound::Band { mean, sd } => {
                            let w = limits.band_width_for(sd, tokens);
                            (mean - w, mean + w, x)
                        }
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        let values: Vec<f64> = report
            .slots
            .iter()
            .filter(|s| s.layer.is_some())
            .map(panel.value)
            .chain(limit.iter().flat_map(|b| [b.0, b.1]))
            .filter(|&v| finite(v) && (!panel.log || v > 0.0))
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.05).max(1e-12);
        let mut chart = ChartBuilder::on(area);
        chart
            .caption(panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(70);
        let x = -0.5f64..(n_layer as f64 - 0.5);
        let series = |s: Slot| -> Vec<(f64, f64)> {
            report
                .slots
                .iter()
                .filter(|d| d.slot == s)
                .filter_map(|d| Some((d.layer? as f64, (panel.value)(d))))
                .filter(|&(_, v)| finite(v) && (!panel.log || v > 0.0))
                .collect()
        };
        let lines = Lines {
            slots: &slots,
            series: &series,
            focus,
            limit,
            mark: first.and_then(|f| f.layer).map(|l| l as f64),
        };
        if panel.log {
            let (y0, y1) = (lo / 2.0, hi * 2.0);
            let c = chart
                .build_cartesian_2d(x, (y0..y1).log_scale())
                .map_err(err)?;
            draw_lines(c, &lines, n_layer, (y0, y1), true)?;
        } else {
            let (y0, y1) = (lo - pad, hi + pad);
            let c = chart.build_cartesian_2d(x, y0..y1).map_err(err)?;
            draw_lines(c, &lines, n_layer, (y0, y1), false)?;
        }
    }
    let mut y = 40;
    let mut key = |style: ShapeStyle, label: String| -> Result<(), CliError> {
        legend
            .draw(&PathElement::new([(10, y), (40, y)], style))
            .map_err(err)?;
        legend
            .draw(&Text::new(label, (48, y - 7), ("sans-serif", 14)))
            .map_err(err)?;
        y += 24;
        Ok(())
    };
    if let Some(f) = focus {
        key(RED.stroke_width(4), format!("{} (outside)", f.name()))?;
        key(
            RGBColor(230, 120, 0).stroke_width(2),
            "its limit (bound)".into(),
        )?;
        key(
            RGBColor(255, 165, 0).mix(0.25).filled().stroke_width(10),
            "its limit (band)".into(),
        )?;
        key(RED.mix(0.35).stroke_width(8), "its layer".into())?;
    }
    key(
        RGBColor(190, 190, 190).stroke_width(1),
        format!("{} other slots", slots.len() - usize::from(focus.is_some())),
    )?;
    root.present().map_err(err)?;
    Ok(())
}
