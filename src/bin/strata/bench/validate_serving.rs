//! `strata plan --validate` of a serving plan: the plan's experiment serves its requests
//! with every row in host memory, at the planned answer and at the next smaller host
//! tier (same policy and device tier), and the predicted p99 latency and store rows per
//! request are set against the measured ones.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;
use strata::engine::placement::Hierarchy;
use strata::engine::stats::percentile;
use strata::experiment::{ExperimentConfig, SetupSpec};
use strata::plan::serving::{ServingPlan, ServingRow};

/// One served set-up, predicted (`None` for the all-in-memory one) and measured.
#[derive(Debug, Serialize)]
pub struct ServingCheck {
    pub setup: String,
    pub predicted_p99_us: Option<f64>,
    pub measured_p99_us: f64,
    pub predicted_p99_vs_in_memory: Option<f64>,
    /// Measured p99 over the measured all-in-memory p99.
    pub measured_p99_vs_in_memory: f64,
    pub predicted_store_rows_p99: Option<f64>,
    pub measured_store_rows_p99: f64,
    /// Requests whose measured store rows equal the replay's.
    pub requests_with_predicted_store_rows: Option<usize>,
    pub requests: usize,
    pub measured_io_floor_p99_us: f64,
    pub predicted_within_bound: Option<bool>,
    pub measured_within_bound: bool,
}

/// The rows to serve: the cheapest answer on the first hardware alternative (this
/// machine's profile), and the next smaller host tier of its policy and device tier.
fn pick(plan: &ServingPlan) -> Result<Vec<usize>> {
    let first = plan.rows.first().map(|r| r.hardware.clone()).unwrap_or_default();
    let Some(answer) = plan
        .answers
        .iter()
        .copied()
        .filter(|&i| plan.rows[i].hardware == first && plan.rows[i].cost.fits)
        .min_by(|&a, &b| plan.rows[a].cost.total.total_cmp(&plan.rows[b].cost.total))
    else {
        bail!("--validate: no host tier in the grid meets the bound on {first}; there is no answer to run");
    };
    let row = &plan.rows[answer];
    let below = (0..answer).rev().find(|&i| {
        plan.rows[i].hardware == row.hardware && plan.rows[i].policy == row.policy && plan.rows[i].device_rows == row.device_rows
    });
    Ok(below.into_iter().chain([answer]).collect())
}

fn setup_name(row: &ServingRow, answer: bool) -> String {
    let role = if answer { "the plan's answer" } else { "the next smaller host tier" };
    format!("{} device {} + host {} rows ({role})", row.policy, row.device_rows, row.host_rows)
}

/// Serves the experiment's requests all in host memory and on the picked rows, into
/// `dir`.
pub fn run(experiment: &ExperimentConfig, plan: &ServingPlan, dir: &Path) -> Result<Vec<ServingCheck>> {
    let picked = pick(plan)?;
    let answer = *picked.last().expect("the answer is picked");
    let mut config = experiment.clone();
    config.publish = None;
    config.output.dir = dir.to_path_buf();
    // Sizes in rows (a size from 1 up is a row count), no read-ahead: serving does not
    // know its next request.
    let setup = |name: String, device: u64, host: f64, policy: &str, hierarchy, preload| SetupSpec {
        name,
        device: device as f64,
        host,
        policy: policy.into(),
        device_policy: None,
        host_policy: None,
        hierarchy,
        window: 0,
        write_buffer: 0.0,
        preload,
    };
    config.setups = vec![setup("all in host memory (ideal)".into(), 0, 1e9, "lru", Hierarchy::Inclusive, true)];
    for &i in &picked {
        let row = &plan.rows[i];
        config.setups.push(setup(setup_name(row, i == answer), row.device_rows, row.host_rows as f64, &row.policy, row.hierarchy, false));
    }
    let (results, _) = strata::experiment::run(&config, Some(dir))?;
    let measured = |k: usize| results[k].serving.as_ref().expect("a serving experiment serves every set-up");
    let in_memory = measured(0).p99_us;
    let bound = plan.p99_within;
    let mut checks = Vec::new();
    for (k, row) in std::iter::once(None).chain(picked.iter().map(|&i| Some(&plan.rows[i]))).enumerate() {
        let served = measured(k);
        let mut rows: Vec<f64> = served.store_rows.iter().map(|&n| n as f64).collect();
        rows.sort_by(f64::total_cmp);
        let ratio = served.p99_us / in_memory.max(1e-9);
        checks.push(ServingCheck {
            setup: results[k].name.clone(),
            predicted_p99_us: row.map(|r| r.predicted_p99_us),
            measured_p99_us: served.p99_us,
            predicted_p99_vs_in_memory: row.map(|r| r.predicted_p99_vs_in_memory),
            measured_p99_vs_in_memory: ratio,
            predicted_store_rows_p99: row.map(|r| r.store_rows_p99),
            measured_store_rows_p99: percentile(&rows, 0.99),
            requests_with_predicted_store_rows: row.map(|r| r.store_rows.iter().zip(&served.store_rows).filter(|(a, b)| a == b).count()),
            requests: served.store_rows.len(),
            measured_io_floor_p99_us: served.io_floor_p99_us,
            predicted_within_bound: row.map(|r| r.meets_bound),
            measured_within_bound: ratio <= bound,
        });
    }
    Ok(checks)
}

/// Predicted against measured, as a Markdown table.
pub fn markdown(plan: &ServingPlan, checks: &[ServingCheck]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Validation: the experiment served on this machine (bound {}x in-memory p99)\n", plan.p99_within);
    out.push_str("| set-up | p99 us pred / meas | vs in-memory pred / meas | store rows/request p99 pred / meas | requests with the predicted store rows | I/O floor p99 us | within the bound pred / meas |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let opt = |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let yes = |b: bool| if b { "yes" } else { "no" };
    for c in checks {
        let _ = writeln!(
            out,
            "| {} | {} / {:.0} | {} / {:.2}x | {} / {:.0} | {} | {:.0} | {} / {} |",
            c.setup,
            opt(c.predicted_p99_us, 0),
            c.measured_p99_us,
            c.predicted_p99_vs_in_memory.map_or("-".into(), |v| format!("{v:.2}x")),
            c.measured_p99_vs_in_memory,
            opt(c.predicted_store_rows_p99, 0),
            c.measured_store_rows_p99,
            c.requests_with_predicted_store_rows.map_or("-".into(), |n| format!("{n} of {}", c.requests)),
            c.measured_io_floor_p99_us,
            c.predicted_within_bound.map_or("-", yes),
            yes(c.measured_within_bound)
        );
    }
    out
}
