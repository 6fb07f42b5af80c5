//! `pv diff --plot FILE.svg`: per-layer SQNR, cosine gap, gain and worst channel error of
//! every slot, one line a
//! slot, with the first slot outside the limits marked. SVG through plotters (no C, no
//! fonts: the viewer renders the text).

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::CliError;
use crate::model::Slot;
use crate::trace::TraceDiff;

/// One panel: a title, whether its y axis is logarithmic, and the value of a slot.
struct Panel {
    title: &'static str,
    log: bool,
    value: fn(&crate::trace::SlotDiff) -> f64,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "SQNR (dB, higher is closer)",
        log: false,
        value: |s| s.sqnr_db,
    },
    Panel {
        title: "1 - cosine (log)",
        log: true,
        value: |s| 1.0 - s.cosine,
    },
    Panel {
        title: "gain - 1",
        log: false,
        value: |s| s.gain - 1.0,
    },
    Panel {
        title: "worst channel's relative error (log)",
        log: true,
        value: |s| s.channels.err.0,
    },
];

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::other(format!("plot: {e}"))
}

/// One panel's lines, a slot each, and the first divergence as a red vertical line from
/// `y0` to `y1`: the same on a linear and on a log scale (`Y`).
fn draw_lines<Y>(
    mut c: ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    slots: &[Slot],
    series: &dyn Fn(Slot) -> Vec<(f64, f64)>,
    mark: Option<f64>,
    (y0, y1): (f64, f64),
) -> Result<(), CliError>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    c.configure_mesh().x_desc("layer").draw().map_err(err)?;
    for (i, s) in slots.iter().enumerate() {
        c.draw_series(LineSeries::new(
            series(*s),
            Palette99::pick(i).stroke_width(2),
        ))
        .map_err(err)?;
    }
    if let Some(m) = mark {
        c.draw_series(LineSeries::new([(m, y0), (m, y1)], RED.stroke_width(3)))
            .map_err(err)?;
    }
    Ok(())
}

/// Draws `report` to `path` as SVG. `title` heads the figure.
pub fn draw(report: &TraceDiff, title: &str, path: &Path) -> Result<(), CliError> {
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
    let root = SVGBackend::new(path, (1200, 1400)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let heading = match first {
        Some(s) => format!("{title} — first outside limits: {}", s.place()),
        None => format!("{title} — every slot within limits"),
    };
    let root = root.titled(&heading, ("sans-serif", 20)).map_err(err)?;
    let (plots, legend) = root.split_horizontally(1000);
    let panels = plots.split_evenly((PANELS.len(), 1));
    let finite = |v: f64| v.is_finite();
    for (panel, area) in PANELS.iter().zip(&panels) {
        let values: Vec<f64> = report
            .slots
            .iter()
            .filter(|s| s.layer.is_some())
            .map(panel.value)
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
        let mark = first.and_then(|f| f.layer).map(|l| l as f64);
        if panel.log {
            let (y0, y1) = (lo / 2.0, hi * 2.0);
            let c = chart
                .build_cartesian_2d(x, (y0..y1).log_scale())
                .map_err(err)?;
            draw_lines(c, &slots, &series, mark, (y0, y1))?;
        } else {
            let (y0, y1) = (lo - pad, hi + pad);
            let c = chart.build_cartesian_2d(x, y0..y1).map_err(err)?;
            draw_lines(c, &slots, &series, mark, (y0, y1))?;
        }
    }
    for (i, s) in slots.iter().enumerate() {
        let y = 40 + 24 * i as i32;
        legend
            .draw(&PathElement::new(
                [(10, y), (40, y)],
                Palette99::pick(i).stroke_width(3),
            ))
            .map_err(err)?;
        legend
            .draw(&Text::new(s.name(), (48, y - 7), ("sans-serif", 14)))
            .map_err(err)?;
    }
    if first.is_some() {
        let y = 40 + 24 * slots.len() as i32 + 10;
        legend
            .draw(&PathElement::new([(10, y), (40, y)], RED.stroke_width(3)))
            .map_err(err)?;
        legend
            .draw(&Text::new("first outside", (48, y - 7), ("sans-serif", 14)))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
