//! SVG plots (plotters): miss ratio against capacity (one line per policy), named line
//! series (training loss), grouped horizontal bars (throughput, hit ratios, latency),
//! and a trade-off scatter with its Pareto front (the capacity plan).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Curve, ReportError};

const COLORS: [RGBColor; 14] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
];

/// The frame every plot here shares: its caption, margin and axis label areas (the y
/// labels' area `y_label_area` pixels wide).
fn frame<'a, 'b>(root: &'a DrawingArea<SVGBackend<'b>, Shift>, title: &str, y_label_area: u32) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 20)).margin(12).x_label_area_size(44).y_label_area_size(y_label_area);
    builder
}

/// Draws the legend of `chart`'s labelled series at `position`, on a light box.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<(), ReportError> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| ReportError::new(path, format!("plotting failed: {e}")))
}

/// Draws `curves` (miss ratio against capacity in rows, log scale) into the SVG file
/// at `path`.
pub fn plot_curves(curves: &[Curve], title: &str, path: &Path) -> Result<(), ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::new(path, format!("plotting failed: {e}"));
    let capacities = || curves.iter().flat_map(|c| c.points.iter().map(|p| p.capacity_rows));
    let max_rows = capacities().max().unwrap_or(1).max(2) as f64;
    let min_rows = (capacities().min().unwrap_or(1).max(1) as f64).min(max_rows / 2.0);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = frame(&root, title, 56).build_cartesian_2d((min_rows..max_rows).log_scale(), 0f64..1f64).map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("capacity (rows, log scale)")
        .x_label_formatter(&|x| format!("{}", x.round() as u64))
        .y_desc("miss ratio")
        .draw()
        .map_err(|e| err(&e))?;
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| (c.policy.clone(), c.points.iter().map(|p| (p.capacity_rows.max(1) as f64, p.miss_ratio)).collect()))
        .collect();
    draw_lines(&mut chart, &series, true, path)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Draws named line series (with point markers when `markers`) and their legend on
/// `chart`, one colour each.
fn draw_lines<'a, X>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    series: &[(String, Vec<(f64, f64)>)],
    markers: bool,
    path: &Path,
) -> Result<(), ReportError>
where
    X: Ranged<ValueType = f64>,
{
    let err = |e: &dyn std::fmt::Display| ReportError::new(path, format!("plotting failed: {e}"));
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        if markers && points.len() <= 32 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(&e))?;
        }
    }
    draw_legend(chart, SeriesLabelPosition::UpperRight, path)
}

/// Draws named series of `(x, y)` points on linear axes into the SVG file at `path`.
pub fn plot_series(series: &[(String, Vec<(f64, f64)>)], title: &str, x_desc: &str, y_desc: &str, path: &Path) -> Result<(), ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::new(path, format!("plotting failed: {e}"));
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points().map(|p| p.1).filter(|y| y.is_finite()).fold(0.0, f64::max) * 1.05 + 1e-9;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = frame(&root, title, 64).build_cartesian_2d(0f64..x_max, 0f64..y_max).map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
    draw_lines(&mut chart, series, false, path)?;
    root.present().map_err(|e| err(&e))
}

/// Draws a trade-off into the SVG file at `path`: named clouds of `(x, y)` points (one
/// colour each), the front through the best of them as a black line, and an optional
/// horizontal `target` line.
pub fn plot_tradeoff(
    clouds: &[(String, Vec<(f64, f64)>)],
    front: &[(f64, f64)],
    target: Option<f64>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    path: &Path,
) -> Result<(), ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::new(path, format!("plotting failed: {e}"));
    let points =
        || clouds.iter().flat_map(|(_, p)| p.iter().copied()).chain(front.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let x_max = points().map(|p| p.0).fold(0.0, f64::max) * 1.05 + 1e-9;
    let y_max = points().map(|p| p.1).chain(target).fold(0.0, f64::max) * 1.1 + 1e-9;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = frame(&root, title, 72).build_cartesian_2d(0f64..x_max, 0f64..y_max).map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
    for (i, (name, cloud)) in clouds.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(cloud.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 9, y), 3, color.filled()));
    }
    let mut lines = vec![("Pareto front".to_string(), front.to_vec())];
    if let Some(t) = target {
        lines.push(("target".to_string(), vec![(0.0, t), (x_max, t)]));
    }
    // The front and target lines after the clouds' colours, in black and grey.
    for (j, (name, line)) in lines.iter().enumerate() {
        let color = if j == 0 { BLACK } else { RGBColor(127, 127, 127) };
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, path)?;
    root.present().map_err(|e| err(&e))
}

/// Draws horizontal bars into the SVG file at `path`: one group per label, one bar per
/// series in each group (`series[j].1[i]` is series `j`'s value for `labels[i]`; a
/// non-finite value draws no bar), one colour per series, with a legend when there is
/// more than one series.
pub fn plot_bars(labels: &[String], series: &[(String, Vec<f64>)], title: &str, value_desc: &str, path: &Path) -> Result<(), ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::new(path, format!("plotting failed: {e}"));
    let values = || series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite());
    let per_group = series.len().max(1);
    // Room on the right for the legend, so that it never hides a bar.
    let max = values().fold(0.0, f64::max) * if per_group > 1 { 1.4 } else { 1.1 } + 1e-9;
    let height = 120 + (12 + 22 * per_group as u32) * labels.len() as u32 + if per_group > 1 { 20 * per_group as u32 } else { 0 };
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    // The y axis counts units from the bottom: label i's group is the i-th from the top,
    // with a margin above and below its bars, each `BAR` units thick, series 0 on top.
    const BAR: i32 = 30;
    const MARGIN: i32 = 10;
    let group = 2 * MARGIN + BAR * per_group as i32;
    let groups = labels.len().max(1) as i32;
    let centers: Vec<i32> = (0..groups).map(|i| i * group + group / 2).collect();
    let mut chart =
        frame(&root, title, 260).build_cartesian_2d(0f64..max, (0..groups * group).with_key_points(centers)).map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(value_desc)
        .y_label_formatter(&|&v| labels.get((groups - 1 - v / group) as usize).cloned().unwrap_or_default())
        .draw()
        .map_err(|e| err(&e))?;
    for (j, (name, values)) in series.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let bars = values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &value)| {
            let top = (groups - i as i32) * group - MARGIN - BAR * j as i32;
            Rectangle::new([(0.0, top - BAR), (value, top)], color.filled())
        });
        let drawn = chart.draw_series(bars).map_err(|e| err(&e))?;
        if series.len() > 1 {
            drawn.label(name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
    }
    if series.len() > 1 {
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, path)?;
    }
    root.present().map_err(|e| err(&e))
}
