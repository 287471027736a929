//! SVG chart: one horizontal bar per row with a baseline, length = ratio to the
//! baseline (1.0 marked), the spread of the repetitions as a whisker, and a tick where a
//! ratio target exists. Green bars: higher is better; orange: lower is better.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Better, Report, Target};

const ROW_H: i32 = 22;
const LABEL_W: i32 = 560;
const BAR_W: i32 = 520;

pub fn ratios(report: &Report, path: &Path) -> anyhow::Result<()> {
    let rows: Vec<_> = report.rows.iter().filter(|r| r.ratio().is_some()).collect();
    let height = (60 + ROW_H * rows.len() as i32).max(100) as u32;
    let root = SVGBackend::new(path, (LABEL_W as u32 + BAR_W as u32 + 120, height)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let max = rows.iter().filter_map(|r| r.ratio()).fold(2.0f64, f64::max).min(20.0);
    let x_of = |ratio: f64| LABEL_W + (ratio.clamp(0.0, max) / max * BAR_W as f64) as i32;
    let font = ("sans-serif", 13).into_font();
    let title = format!(
        "mesh / baseline ({} × {}, {} binaries{})",
        report.machine.nproc,
        report.machine.cpu,
        report.binaries,
        if report.quick { ", quick" } else { "" }
    );
    root.draw(&Text::new(title, (10, 10), ("sans-serif", 15).into_font()))
        .map_err(err)?;
    let top = 40;
    let one = x_of(1.0);
    root.draw(&PathElement::new(
        vec![(one, top - 6), (one, height as i32 - 10)],
        BLACK.stroke_width(1),
    ))
    .map_err(err)?;
    root.draw(&Text::new("1×", (one - 6, top - 16), font.clone()))
        .map_err(err)?;
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as i32 * ROW_H;
        let ratio = r.ratio().unwrap_or(0.0);
        let label = format!("{} · {} · {}", r.bench, r.metric, r.path);
        root.draw(&Text::new(label, (10, y + 3), font.clone())).map_err(err)?;
        let color = if r.better == Better::Higher {
            RGBColor(46, 139, 87)
        } else {
            RGBColor(230, 126, 34)
        };
        root.draw(&Rectangle::new(
            [(LABEL_W, y + 2), (x_of(ratio), y + ROW_H - 4)],
            color.filled(),
        ))
        .map_err(err)?;
        if let Some(b) = &r.baseline {
            let (lo, hi) = (r.value.min / b.median, r.value.max / b.median);
            if r.value.n > 1 && lo.is_finite() && hi.is_finite() {
                let ym = y + ROW_H / 2 - 1;
                root.draw(&PathElement::new(
                    vec![(x_of(lo), ym), (x_of(hi), ym)],
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?;
            }
        }
        if let Some(Target::RatioAtLeast(t)) = r.target {
            let x = x_of(t);
            root.draw(&PathElement::new(vec![(x, y), (x, y + ROW_H - 2)], RED.stroke_width(2)))
                .map_err(err)?;
        }
        root.draw(&Text::new(
            format!("{ratio:.2}×"),
            (x_of(ratio) + 6, y + 3),
            font.clone(),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
