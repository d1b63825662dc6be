//! Serving plans (`strata plan` of a config with a `[serving]` table): which host tier
//! keeps a serving workload's p99 latency within a bound of its all-in-memory p99. Each
//! candidate set-up is replayed request by request through the engine's placement
//! (`sim::TwoLevel`), giving every request's rows read from the store; the store's
//! profile turns those into the latency each request adds to its in-memory latency,
//! whose p99 is set against the bound.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfigError;

use super::config::{CandidateSpec, Hardware, HardwareSpec, RowSpec};
use super::model::{self, Cost};
use super::profile::HardwareProfile;
use crate::config::{ConfigError, OutputSpec};
use crate::engine::stats::percentile;
use crate::report::{self, ReportError};
use crate::sim::{TwoLevel, TwoLevelConfig};

/// A serving plan config file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServingPlanConfig {
    pub serving: ServingSpec,
    pub hardware: HardwareSpec,
    pub candidates: CandidateSpec,
    #[serde(default = "default_output")]
    pub output: OutputSpec,
}

fn default_output() -> OutputSpec {
    OutputSpec { dir: PathBuf::from("out/plan-serving") }
}

/// `[serving]`: the requests to plan for and the latency bound.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServingSpec {
    /// The serving experiment config (`strata run` with a `[serve]` table) whose
    /// requests are planned for (its data, `[serve]`, row dim and optimizer; its set-ups
    /// are not used), and which `--validate` runs.
    pub experiment: PathBuf,
    /// The bound: p99 at most this many times the all-in-memory p99; > 1.
    #[serde(default = "default_p99_within")]
    pub p99_within: f64,
    /// The experiment's p99 with every row in host memory, microseconds (its
    /// all-in-host set-up, measured by `strata run`); > 0.
    pub in_memory_p99_us: f64,
}

fn default_p99_within() -> f64 {
    1.5
}

impl ServingPlanConfig {
    /// Reads and checks a serving plan config (errors name the file).
    pub fn load(path: &Path) -> Result<ServingPlanConfig, ConfigError> {
        Self::parse(path, &crate::config::read(path)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ServingPlanConfig, ConfigError> {
        let config: ServingPlanConfig = crate::config::parse_toml(path, text)?;
        config.check().map_err(|message| ConfigError::new(path, message))?;
        config.hardware.alternatives().map_err(|e| ConfigError::new(path, e))?;
        Ok(config)
    }

    /// Whether the TOML text is a serving plan (it has a `[serving]` table).
    pub fn is_serving_plan(text: &str) -> bool {
        toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("serving"))
    }

    fn check(&self) -> Result<(), String> {
        let s = &self.serving;
        if !(s.p99_within > 1.0 && s.p99_within.is_finite()) {
            return Err(format!("serving.p99_within must be above 1, got {}", s.p99_within));
        }
        if !(s.in_memory_p99_us > 0.0 && s.in_memory_p99_us.is_finite()) {
            return Err(format!("serving.in_memory_p99_us must be above 0, got {}", s.in_memory_p99_us));
        }
        self.candidates.check()?;
        self.hardware.check()
    }

    /// The candidate set-ups in rows, in grid order with the host sizes ascending
    /// (policy, device, then host), each with its policy's name as the config gives it.
    fn setups(&self, rows: &RowSpec, table_rows: u64) -> Result<Vec<(String, TwoLevelConfig)>, String> {
        let mut candidates = self.candidates.clone();
        candidates.host.sort_by(f64::total_cmp);
        candidates.setups(table_rows, rows.slab_bytes())
    }
}

/// The requests served, as the experiment serves them.
#[derive(Clone, Debug)]
pub struct ServingWorkload {
    pub description: String,
    /// Every request's rows (the table's global row index), one per lookup, warm-up
    /// requests first.
    pub requests: Vec<Vec<u64>>,
    /// Requests served before the measured ones.
    pub warmup: usize,
    pub table_rows: u64,
    pub rows: RowSpec,
}

/// One candidate set-up on one hardware alternative.
#[derive(Clone, Debug, Serialize)]
pub struct ServingRow {
    pub hardware: String,
    /// The policy's name as the config gives it.
    pub policy: String,
    pub hierarchy: crate::engine::placement::Hierarchy,
    pub device_rows: u64,
    pub host_rows: u64,
    pub cost: Cost,
    /// Rows read from the store per measured request: mean, median and p99.
    pub store_rows_mean: f64,
    pub store_rows_p50: f64,
    pub store_rows_p99: f64,
    /// The p99 of the requests' I/O floors: their store rows at the store's random-read
    /// rate (as the serving report computes it from the measured rate).
    pub io_floor_p99_us: f64,
    /// The p99 of the latency the store adds to a request (its first read's latency,
    /// its rows at the random-read rate, the engine's CPU time per store row).
    pub added_p99_us: f64,
    /// The in-memory p99 plus `added_p99_us`, and its ratio to the in-memory p99.
    pub predicted_p99_us: f64,
    pub predicted_p99_vs_in_memory: f64,
    pub meets_bound: bool,
    /// Rows read from the store by each measured request, in order.
    pub store_rows: Vec<u64>,
}

/// The serving plan: the workload, every candidate and the answers.
#[derive(Debug, Serialize)]
pub struct ServingPlan {
    pub workload: String,
    pub requests: usize,
    pub warmup: usize,
    pub lookups_per_request: f64,
    pub table_rows: u64,
    /// Bytes a row takes in a memory tier's slab (what the tier sizes cost).
    pub slab_bytes: u64,
    pub in_memory_p99_us: f64,
    pub p99_within: f64,
    pub rows: Vec<ServingRow>,
    /// Per hardware alternative, policy and device size: the row of the smallest host
    /// tier meeting the bound (the answer), in grid order.
    pub answers: Vec<usize>,
    /// The cheapest fitting answer.
    pub cheapest: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServingPlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyConfigError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Rows read from the store by each request after the warm-up, replayed through
/// `setup` from empty tiers (a request reads each of its rows at most once).
pub fn store_rows_per_request(setup: &TwoLevelConfig, workload: &ServingWorkload) -> Result<Vec<u64>, PolicyConfigError> {
    // Each request is one batch of the replay: stream positions `r * stride ..`.
    let stride = workload.requests.iter().map(Vec::len).max().unwrap_or(1).max(1) as u64;
    let mut replay = TwoLevel::new(setup)?.count_from(workload.warmup as u64 * stride).batches_of(stride);
    let mut rows = Vec::with_capacity(workload.requests.len().saturating_sub(workload.warmup));
    for (r, ids) in workload.requests.iter().enumerate() {
        let before = replay.counts().store_reads;
        replay.replay_ids(ids, r as u64 * stride);
        if r >= workload.warmup {
            rows.push(replay.counts().store_reads - before);
        }
    }
    Ok(rows)
}

/// Microseconds the store adds to a request that reads `rows` rows of `row_bytes`: the
/// first read's latency, the rows at the store's random-read rate, and the engine's CPU
/// time per row read.
pub fn added_us(hw: &HardwareProfile, rows: u64, row_bytes: u64) -> f64 {
    if rows == 0 {
        return 0.0;
    }
    let n = rows as f64;
    hw.storage.latency_us + 1e6 * (model::store_read_seconds(&hw.storage, n, row_bytes) + n * hw.store_row_seconds())
}

/// Plans `workload` under `config`: every candidate replayed (on every core), then the
/// model for each hardware alternative.
pub fn plan_serving(config: &ServingPlanConfig, workload: &ServingWorkload) -> Result<ServingPlan, ServingPlanError> {
    let path = Path::new("candidates");
    let hardware: Vec<Hardware> = config.hardware.alternatives()?;
    let setups = config.setups(&workload.rows, workload.table_rows).map_err(|m| ConfigError::new(path, m))?;
    let replayed = replay_all(&setups, workload)?;
    let (in_memory, within) = (config.serving.in_memory_p99_us, config.serving.p99_within);
    let row_bytes = workload.rows.row_bytes();
    let mut rows = Vec::new();
    for hw in &hardware {
        for ((name, setup), store_rows) in setups.iter().zip(&replayed) {
            let mut sorted: Vec<f64> = store_rows.iter().map(|&n| n as f64).collect();
            sorted.sort_by(f64::total_cmp);
            let mut added: Vec<f64> = store_rows.iter().map(|&n| added_us(&hw.profile, n, row_bytes)).collect();
            added.sort_by(f64::total_cmp);
            let added_p99_us = percentile(&added, 0.99);
            let predicted_p99_us = in_memory + added_p99_us;
            let slab = workload.rows.slab_bytes();
            rows.push(ServingRow {
                hardware: hw.name.clone(),
                policy: name.clone(),
                hierarchy: setup.hierarchy,
                device_rows: setup.device_rows,
                host_rows: setup.host_rows,
                cost: model::cost(&hw.profile, setup.device_rows, setup.host_rows, slab, workload.table_rows, row_bytes),
                store_rows_mean: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
                store_rows_p50: percentile(&sorted, 0.50),
                store_rows_p99: percentile(&sorted, 0.99),
                io_floor_p99_us: percentile(&sorted, 0.99) / hw.profile.storage.iops * 1e6,
                added_p99_us,
                predicted_p99_us,
                predicted_p99_vs_in_memory: predicted_p99_us / in_memory,
                meets_bound: predicted_p99_us <= within * in_memory,
                store_rows: store_rows.clone(),
            });
        }
    }
    // The answer of a (hardware, policy, device) group: its first (smallest) host
    // tier meeting the bound; the grid lists each group's hosts ascending.
    let mut answers: Vec<usize> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let same = |a: &ServingRow| a.hardware == row.hardware && a.policy == row.policy && a.device_rows == row.device_rows;
        if row.meets_bound && !answers.iter().any(|&a| same(&rows[a])) {
            answers.push(i);
        }
    }
    let cheapest =
        answers.iter().copied().filter(|&i| rows[i].cost.fits).min_by(|&a, &b| rows[a].cost.total.total_cmp(&rows[b].cost.total));
    let lookups: usize = workload.requests.iter().map(Vec::len).sum();
    Ok(ServingPlan {
        workload: workload.description.clone(),
        requests: workload.requests.len() - workload.warmup.min(workload.requests.len()),
        warmup: workload.warmup,
        lookups_per_request: lookups as f64 / workload.requests.len().max(1) as f64,
        table_rows: workload.table_rows,
        slab_bytes: workload.rows.slab_bytes(),
        in_memory_p99_us: in_memory,
        p99_within: within,
        rows,
        answers,
        cheapest,
    })
}

/// Every set-up's store rows per request, the set-ups shared out over the cores.
fn replay_all(setups: &[(String, TwoLevelConfig)], workload: &ServingWorkload) -> Result<Vec<Vec<u64>>, PolicyConfigError> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(setups.len()).max(1);
    let worker = || -> Result<Vec<(usize, Vec<u64>)>, PolicyConfigError> {
        let mut replayed = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((_, setup)) = setups.get(i) else { return Ok(replayed) };
            replayed.push((i, store_rows_per_request(setup, workload)?));
        }
    };
    let per_thread = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        workers.into_iter().map(|w| w.join().expect("a replay thread panicked")).collect::<Result<Vec<_>, _>>()
    })?;
    let mut replayed: Vec<(usize, Vec<u64>)> = per_thread.into_iter().flatten().collect();
    replayed.sort_by_key(|(i, _)| *i);
    Ok(replayed.into_iter().map(|(_, rows)| rows).collect())
}

fn gb(rows: u64, slab_bytes: u64) -> f64 {
    (rows * slab_bytes) as f64 / 1e9
}

/// The serving plan for people: the workload, the answers and every candidate.
pub fn markdown(plan: &ServingPlan) -> String {
    let slab_bytes = plan.slab_bytes;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} requests of {:.0} lookups measured after {} warm-up requests, {} rows; all-in-memory p99 {:.0} us, bound {}x = {:.0} us\n",
        plan.workload,
        plan.requests,
        plan.lookups_per_request,
        plan.warmup,
        plan.table_rows,
        plan.in_memory_p99_us,
        plan.p99_within,
        plan.p99_within * plan.in_memory_p99_us
    );
    let _ = writeln!(out, "### The smallest host tier keeping p99 within {}x of in-memory\n", plan.p99_within);
    if plan.answers.is_empty() {
        out.push_str("No host tier in the grid meets the bound (the largest candidates are listed below).\n\n");
    } else {
        table(&mut out, plan, &plan.answers, slab_bytes);
        if let Some(i) = plan.cheapest {
            let r = &plan.rows[i];
            let _ = writeln!(
                out,
                "\nCheapest: {} on {}, device {} rows + host {} rows ({:.3} GB), predicted p99 {:.0} us ({:.2}x in-memory).\n",
                r.policy,
                r.hardware,
                r.device_rows,
                r.host_rows,
                gb(r.host_rows, slab_bytes),
                r.predicted_p99_us,
                r.predicted_p99_vs_in_memory
            );
        }
    }
    out.push_str("### Every candidate\n\n");
    let all: Vec<usize> = (0..plan.rows.len()).collect();
    table(&mut out, plan, &all, slab_bytes);
    out
}

fn table(out: &mut String, plan: &ServingPlan, indices: &[usize], slab_bytes: u64) {
    out.push_str("| hardware | policy | device rows | host rows (GB) | cost | store rows/request p50 / p99 | I/O floor p99 us | predicted p99 us | vs in-memory |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for &i in indices {
        let r = &plan.rows[i];
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ({:.3}) | {:.2} | {:.0} / {:.0} | {:.0} | {:.0} | {:.2}x{} |",
            r.hardware,
            r.policy,
            r.device_rows,
            r.host_rows,
            gb(r.host_rows, slab_bytes),
            r.cost.total,
            r.store_rows_p50,
            r.store_rows_p99,
            r.io_floor_p99_us,
            r.predicted_p99_us,
            r.predicted_p99_vs_in_memory,
            if r.meets_bound { "" } else { " (over)" }
        );
    }
}

/// Writes `serving-plan.json` (the config and the plan) and `serving-plan.md` into `dir`.
pub fn write_reports(plan: &ServingPlan, config: &ServingPlanConfig, dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::json!({ "input": config, "plan": plan });
    let text = serde_json::to_string_pretty(&json).map_err(|e| ReportError::new(dir, e))?;
    report::write_file(&dir.join("serving-plan.json"), text.as_bytes())?;
    report::write_file(&dir.join("serving-plan.md"), markdown(plan).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's added time is the store's first-read latency, its rows at the
    /// random-read rate and the engine's CPU time per store row; none without store rows.
    #[test]
    fn the_time_a_request_adds_is_its_store_rows_at_the_profile_s_rate() {
        use crate::plan::profile::EngineProfile;
        let shipped = |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles").join(name);
        let mut hw = HardwareProfile::load(&[shipped("h100-pcie5.toml"), shipped("ddr5-server.toml"), shipped("nvme-gen4.toml")]).unwrap();
        hw.engine = Some(EngineProfile { name: "cpu".into(), store_row_ns: 2000.0, shared_store_iops: None });
        let (latency, iops) = (hw.storage.latency_us, hw.storage.iops);
        assert_eq!(added_us(&hw, 0, 516), 0.0);
        let ten = added_us(&hw, 10, 516);
        assert!((ten - (latency + 10.0 / iops * 1e6 + 10.0 * 2.0)).abs() < 1e-6, "{ten}");
        assert!(added_us(&hw, 20, 516) > ten);
    }
}
