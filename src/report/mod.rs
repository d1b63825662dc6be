//! Reports: Markdown tables for people, JSON and CSV for machines, and SVG plots — of
//! the policy lab (miss-ratio curves) here, of training and serving experiments in
//! [`experiment`]; the plots in `plot`.

#[cfg(feature = "torch")]
pub mod experiment;
mod plot;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use plot::{plot_bars, plot_curves, plot_series, plot_tradeoff};

use crate::sim::SimulationReport;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReportError {
    pub path: PathBuf,
    pub message: String,
}

impl ReportError {
    pub fn new(path: &Path, message: impl ToString) -> Self {
        ReportError { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// Writes `contents` to `path`, creating its folder.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::new(dir, e))?;
    }
    std::fs::write(path, contents).map_err(|e| ReportError::new(path, e))
}

/// The simulation results as a Markdown table: one row per policy, the miss ratio at
/// each capacity, and the policy's mean simulation speed.
pub fn markdown(report: &SimulationReport) -> String {
    let mut capacities: Vec<(u64, f64)> = Vec::new();
    let mut policies: Vec<&str> = Vec::new();
    for r in &report.results {
        if !capacities.iter().any(|&(rows, _)| rows == r.capacity_rows) {
            capacities.push((r.capacity_rows, r.capacity_fraction));
        }
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} requests, {} distinct rows; miss ratio at each capacity (rows, % of distinct)\n",
        report.requests, report.distinct_rows
    );
    out.push_str("| policy |");
    for (rows, fraction) in &capacities {
        let _ = write!(out, " {rows} ({:.2}%) |", 100.0 * fraction);
    }
    out.push_str(" M req/s |\n|---|");
    out.push_str(&"---:|".repeat(capacities.len() + 1));
    out.push('\n');
    for policy in policies {
        let rows: Vec<_> = report.results.iter().filter(|r| r.policy == policy).collect();
        let _ = write!(out, "| {policy} |");
        for (capacity, _) in &capacities {
            match rows.iter().find(|r| r.capacity_rows == *capacity) {
                Some(r) => {
                    let _ = write!(out, " {:.4} |", r.miss_ratio);
                }
                None => out.push_str(" |"),
            }
        }
        let speed = rows.iter().map(|r| r.requests_per_sec).sum::<f64>() / rows.len() as f64;
        let _ = writeln!(out, " {:.1} |", speed / 1e6);
    }
    out
}

/// One point of a miss-ratio curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub capacity_rows: u64,
    pub miss_ratio: f64,
}

/// A miss-ratio curve of one policy, and how it was obtained.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub policy: String,
    /// `stack-distance` (exact LRU), `shards(rate)` (sampled LRU) or `simulated`.
    pub method: String,
    pub points: Vec<CurvePoint>,
}

/// The miss-ratio curves of a simulation: one simulated curve per policy, plus the LRU
/// curve from stack distances at `lru_points` capacities when it was computed.
pub fn curves(report: &SimulationReport, lru_points: usize) -> Vec<Curve> {
    let mut curves: Vec<Curve> = Vec::new();
    for r in &report.results {
        let point = CurvePoint { capacity_rows: r.capacity_rows, miss_ratio: r.miss_ratio };
        match curves.iter_mut().find(|c| c.policy == r.policy) {
            Some(c) => c.points.push(point),
            None => curves.push(Curve { policy: r.policy.clone(), method: "simulated".into(), points: vec![point] }),
        }
    }
    for c in &mut curves {
        c.points.sort_by_key(|p| p.capacity_rows);
    }
    if let Some(stack) = &report.lru_curve {
        let smallest = report.results.iter().map(|r| r.capacity_rows).min().unwrap_or(1);
        let capacities = log_grid((smallest / 4).max(1), report.distinct_rows, lru_points);
        let ratios = stack.miss_ratios(&capacities);
        let method = if stack.rate() >= 1.0 { "stack-distance".to_string() } else { format!("shards({})", stack.rate()) };
        curves.push(Curve {
            policy: format!("lru [{method}]"),
            method,
            points: capacities
                .into_iter()
                .zip(ratios)
                .map(|(capacity_rows, miss_ratio)| CurvePoint { capacity_rows, miss_ratio })
                .collect(),
        });
    }
    curves
}

/// `n` capacities spaced evenly on a log scale from `from` rows to `to` rows.
pub fn log_grid(from: u64, to: u64, n: usize) -> Vec<u64> {
    let (lo, hi) = (from.max(1) as f64, to.max(from).max(1) as f64);
    let mut grid: Vec<u64> = (0..n).map(|i| (lo * (hi / lo).powf(i as f64 / (n.max(2) - 1) as f64)).round() as u64).collect();
    grid.dedup();
    grid
}

/// The curves as CSV: `policy,method,capacity_rows,capacity_fraction,miss_ratio`.
pub fn curves_csv(curves: &[Curve], distinct: u64) -> String {
    let mut out = String::from("policy,method,capacity_rows,capacity_fraction,miss_ratio\n");
    for c in curves {
        for p in &c.points {
            let _ = writeln!(
                out,
                "{},{},{},{:.6},{:.6}",
                c.policy,
                c.method,
                p.capacity_rows,
                p.capacity_rows as f64 / distinct.max(1) as f64,
                p.miss_ratio
            );
        }
    }
    out
}

/// The per-(policy, capacity) results as CSV.
pub fn results_csv(report: &SimulationReport) -> String {
    let mut out = String::from("policy,capacity_rows,capacity_fraction,requests,misses,miss_ratio,evictions,seconds,requests_per_sec\n");
    for r in &report.results {
        let _ = writeln!(
            out,
            "{},{},{:.6},{},{},{:.6},{},{:.6},{:.1}",
            r.policy, r.capacity_rows, r.capacity_fraction, r.requests, r.misses, r.miss_ratio, r.evictions, r.seconds, r.requests_per_sec
        );
    }
    out
}
