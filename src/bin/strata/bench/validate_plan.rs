//! `strata plan --validate`: the engine serves the planned lookup stream on a handful of
//! the planned configurations (the lookup benchmark's tiered run, same batches, same
//! warm-up), and the plan's predicted hit ratios and throughput are set against the
//! measured ones.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde::Serialize;
use strata::engine::device::DeviceKind;
use strata::engine::pool::Pooling;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::Rounding;
use strata::lab::TraceSpec;
use strata::plan::{PlanConfig, PlanReport, PlanRow};
use strata_policies::PolicyConfig;

use super::lookup::LookupStream;

/// One configuration, predicted and measured.
#[derive(Debug, Serialize)]
pub struct Check {
    pub configuration: String,
    pub row: usize,
    pub predicted_device_hit_ratio: f64,
    pub measured_device_hit_ratio: f64,
    pub predicted_host_hit_ratio: f64,
    pub measured_host_hit_ratio: f64,
    pub predicted_lookups_per_sec: f64,
    pub measured_lookups_per_sec: f64,
    pub predicted_store_reads_per_lookup: f64,
    pub measured_store_reads_per_lookup: f64,
    pub measured_stall_fraction: f64,
}

impl Check {
    pub fn throughput_error(&self) -> f64 {
        self.predicted_lookups_per_sec / self.measured_lookups_per_sec - 1.0
    }
}

/// Up to `n` configurations of the first hardware alternative to run: spread along its
/// Pareto front (cheapest, dearest and between), then the cheapest meeting the target.
pub fn pick(report: &PlanReport, n: usize) -> Vec<usize> {
    let first = report.rows.first().map(|r| r.hardware.clone()).unwrap_or_default();
    let front: Vec<usize> = report.pareto.iter().copied().filter(|&i| report.rows[i].hardware == first).collect();
    let mut picked: Vec<usize> = Vec::new();
    if !front.is_empty() {
        for k in 0..n.min(front.len()) {
            let at = if n <= 1 { 0 } else { k * (front.len() - 1) / (n - 1).max(1) };
            if !picked.contains(&front[at]) {
                picked.push(front[at]);
            }
        }
    }
    for i in report.cheapest.iter().copied().chain(0..report.rows.len()) {
        if picked.len() >= n {
            break;
        }
        if report.rows[i].hardware == first && report.rows[i].cost.fits && !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_by(|&a, &b| report.rows[a].cost.total.total_cmp(&report.rows[b].cost.total));
    picked
}

fn label(row: &PlanRow) -> String {
    format!("{} device {} + host {} rows", row.policy, row.device_rows, row.host_rows)
}

/// Runs the engine on the picked configurations.
pub fn run(config: &PlanConfig, report: &PlanReport) -> Result<Vec<Check>> {
    let TraceSpec::Synthetic { synthetic, requests, scan } = &config.workload else {
        bail!("--validate runs the engine on the synthetic stream; this plan's workload is a trace file");
    };
    if scan.is_some() {
        bail!("--validate runs the engine on the synthetic stream, which has no scans; remove workload.scan");
    }
    let per_batch = config.lookups_per_batch();
    let warmup = report.counted_from / per_batch;
    let batches = requests / per_batch - warmup;
    if batches == 0 {
        bail!("--validate: the workload holds no whole batch after the warm-up ({requests} lookups, {per_batch} a batch)");
    }
    let window = if config.run.prefetch { config.validate.window } else { 0 };
    let policies = config.policies().map_err(|m| anyhow::anyhow!(m))?;
    let mut checks = Vec::new();
    for index in pick(report, config.validate.configurations) {
        let row = &report.rows[index];
        let policy = policies.iter().find(|p| p.label() == row.policy).cloned().unwrap_or(PolicyConfig::Lru);
        let stream = LookupStream {
            file: config.validate.table.clone(),
            synthetic: synthetic.clone(),
            dim: config.rows.dim,
            batch: config.run.batch,
            warmup,
            batches,
            read_path: config.validate.read_path,
        };
        if let Some(dir) = stream.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        stream.table_file(report.table_rows, config.rows.layout())?;
        let tiers = TableConfig {
            device: TierConfig::rows(row.device_rows as usize, policy.clone()),
            device_backend: DeviceKind::Auto,
            host: TierConfig::rows(row.host_rows as usize, policy),
            hierarchy: row.hierarchy,
            optimizer: config.rows.optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0,
            rounding: Rounding::Nearest,
        };
        eprintln!("validating: {}", label(row));
        let measured = stream.run_tiered(&label(row), &tiers, window, false)?;
        checks.push(Check {
            configuration: label(row),
            row: index,
            predicted_device_hit_ratio: row.device_share,
            measured_device_hit_ratio: measured.device_hit_ratio.unwrap_or(0.0),
            predicted_host_hit_ratio: row.host_hit_ratio,
            measured_host_hit_ratio: measured.host_hit_ratio.unwrap_or(0.0),
            predicted_lookups_per_sec: row.lookups_per_sec,
            measured_lookups_per_sec: measured.lookups_per_sec,
            predicted_store_reads_per_lookup: row.store_reads_per_lookup,
            measured_store_reads_per_lookup: measured.store_rows_read as f64 / (batches * per_batch) as f64,
            measured_stall_fraction: measured.stall_fraction,
        });
    }
    Ok(checks)
}

/// Predicted against measured, as a Markdown table.
pub fn markdown(report: &PlanReport, checks: &[Check]) -> String {
    let mut out = String::new();
    let hw = checks.first().map_or("", |c| report.rows[c.row].hardware.as_str());
    let _ = writeln!(out, "### Validation: predicted ({hw}) against the engine on this machine\n");
    out.push_str("| configuration | device hits pred / meas (err) | host hits pred / meas (err) | store reads per lookup pred / meas | M lookups/s pred / meas (err) | stall |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for c in checks {
        let _ = writeln!(
            out,
            "| {} | {:.4} / {:.4} ({:+.4}) | {:.4} / {:.4} ({:+.4}) | {:.4} / {:.4} | {:.3} / {:.3} ({:+.1}%) | {:.0}% |",
            c.configuration,
            c.predicted_device_hit_ratio,
            c.measured_device_hit_ratio,
            c.predicted_device_hit_ratio - c.measured_device_hit_ratio,
            c.predicted_host_hit_ratio,
            c.measured_host_hit_ratio,
            c.predicted_host_hit_ratio - c.measured_host_hit_ratio,
            c.predicted_store_reads_per_lookup,
            c.measured_store_reads_per_lookup,
            c.predicted_lookups_per_sec / 1e6,
            c.measured_lookups_per_sec / 1e6,
            100.0 * c.throughput_error(),
            100.0 * c.measured_stall_fraction
        );
    }
    out
}
