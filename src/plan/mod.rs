//! Capacity planning (`strata plan`): hardware profiles of the tiers (and, measured on
//! this machine, `strata calibrate`); one pass over a workload for miss-ratio curves and
//! per-tier hit ratios of every candidate set-up; a throughput and cost model; and the
//! plan itself: the cheapest configurations meeting a target and the Pareto front of
//! cost against throughput, as Markdown, CSV, JSON and an SVG plot. Serving plans (the
//! host tier for a p99 bound) are in `serving`.

pub mod config;
pub mod curves;
pub mod model;
pub mod profile;
pub mod serving;

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use strata_policies::PolicyConfig;

pub use config::PlanConfig;
use curves::{PassError, PassOptions, PassResult, SetupCounts};
use model::{BatchShape, BatchTime, Cost};

use crate::engine::placement::Hierarchy;
use crate::report::{self, Curve, CurvePoint, ReportError};
use crate::sim::{TierCounts, TwoLevelConfig};
use crate::trace::{KeyRemapper, KeySource, TraceError, TraceRecord, CHUNK};

/// The stated error bound of a SHARDS-sampled LRU curve (absolute miss ratio) at
/// capacities holding at least [`SHARDS_BOUND_MIN_SAMPLED_ROWS`] sampled rows; checked
/// on generated Zipf traces by tests/plan.rs (docs/PLANNING.md).
pub const SHARDS_BOUND: f64 = 0.01;
pub const SHARDS_BOUND_MIN_SAMPLED_ROWS: u64 = 1000;

/// One planned configuration on one hardware alternative.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRow {
    pub hardware: String,
    pub policy: String,
    pub hierarchy: Hierarchy,
    pub device_rows: u64,
    pub host_rows: u64,
    pub cost: Cost,
    /// Shares of all lookups served by each tier (after the warm-up).
    pub device_share: f64,
    pub host_share: f64,
    pub store_share: f64,
    /// Rows read from the store per lookup (each stored row once per batch).
    pub store_reads_per_lookup: f64,
    /// The host's hit ratio as the engine counts it (of the lookups reaching it).
    pub host_hit_ratio: f64,
    /// For LRU: the same shares read off the all-tables LRU curve (inclusive: host =
    /// m(d) - m(h); exclusive: host = m(d) - m(d + h - 1)).
    pub lru_curve_device_share: Option<f64>,
    pub lru_curve_host_share: Option<f64>,
    /// SHARDS rate the set-up was replayed at (1 = every lookup).
    pub sample_rate: f64,
    pub batch_time: BatchTime,
    pub lookups_per_sec_serial: f64,
    pub lookups_per_sec_overlap: f64,
    /// Samples/s with the configured overlap (prefetch on: overlapped).
    pub samples_per_sec: f64,
    pub lookups_per_sec: f64,
    pub meets_target: bool,
    pub on_pareto_front: bool,
}

/// The plan: the workload's figures, its curves and every configuration.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub workload: String,
    pub requests: u64,
    pub counted_from: u64,
    pub distinct_rows: u64,
    pub table_rows: u64,
    pub lookups_per_sample: usize,
    pub batch: usize,
    pub prefetch: bool,
    pub target_lookups_per_sec: f64,
    pub sample_rate: f64,
    pub pass_seconds: f64,
    pub curves: Vec<Curve>,
    pub rows: Vec<PlanRow>,
    /// Indices into `rows`: the cheapest fitting configurations meeting the target
    /// (cheapest first), and the Pareto front (cheapest first).
    pub cheapest: Vec<usize>,
    pub pareto: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Counts the distinct keys of a key trace (one streaming pass).
fn distinct_keys(source: &mut dyn KeySource) -> Result<u64, TraceError> {
    let mut remap = KeyRemapper::new();
    let mut chunk: Vec<TraceRecord> = Vec::with_capacity(CHUNK);
    let mut ids = Vec::new();
    loop {
        source.next_chunk(&mut chunk, CHUNK)?;
        if chunk.is_empty() {
            return Ok(remap.distinct());
        }
        remap.map_chunk(chunk.iter().map(|r| r.key), &mut ids);
    }
}

impl PlanConfig {
    /// Rows of the whole table: the layout's, or a key trace's distinct keys.
    pub fn table_rows(&self) -> Result<u64, TraceError> {
        match self.workload.layout() {
            Some(layout) => Ok(layout.total_rows()),
            None => distinct_keys(self.workload.open()?.as_mut()),
        }
    }

    /// Requests in the workload, when known before reading it.
    pub fn known_requests(&self) -> Option<u64> {
        match &self.workload {
            crate::lab::TraceSpec::Synthetic { requests, .. } => Some(*requests),
            crate::lab::TraceSpec::File { .. } => None,
        }
    }

    /// The pass's SHARDS rate: the configured one, or automatic.
    pub fn pass_rate(&self) -> f64 {
        match self.curves.sample_rate {
            r if r > 0.0 => r,
            _ => match self.known_requests() {
                Some(n) if n > self.curves.exact_requests => self.curves.exact_requests as f64 / n as f64,
                _ => 1.0,
            },
        }
    }

    /// The two-level simulations' SHARDS rate before small tiers raise it: every lookup
    /// up to `simulate_requests`, else `simulate_requests / requests`; for a trace file
    /// of unknown length, the curves' rate.
    pub fn simulate_rate(&self) -> f64 {
        match self.known_requests() {
            Some(n) if n > self.curves.simulate_requests => self.curves.simulate_requests as f64 / n as f64,
            Some(_) => 1.0,
            None => self.pass_rate(),
        }
    }

    /// Stream position where counting starts: the warm-up, in whole batches.
    pub fn count_from(&self) -> u64 {
        let batch = self.lookups_per_batch();
        self.known_requests().map_or(0, |n| ((n as f64 * self.run.warmup) as u64 / batch) * batch)
    }

    /// The candidate set-ups, in rows, without repeats (in grid order).
    pub fn setups(&self, table_rows: u64) -> Result<Vec<TwoLevelConfig>, String> {
        let setups = self.candidates.setups(table_rows, self.rows.slab_bytes())?;
        Ok(setups.into_iter().map(|(_, setup)| setup).collect())
    }
}

/// The LRU shares of the two tiers read off the all-tables curve.
fn lru_curve_shares(curve: &strata_policies::mrc::StackDistances, setup: &TwoLevelConfig) -> (f64, f64) {
    let (d, h) = (setup.device_rows, setup.host_rows);
    let m = |c: u64| if c == 0 { 1.0 } else { curve.miss_ratios(&[c])[0] };
    let lower = match setup.hierarchy {
        Hierarchy::Inclusive => h.max(d),
        Hierarchy::Exclusive if d == 0 => h,
        Hierarchy::Exclusive if h == 0 => d,
        Hierarchy::Exclusive => d + h - 1,
    };
    (1.0 - m(d), m(d) - m(lower))
}

/// Runs the plan: one pass over the workload, then the model for every configuration
/// on every hardware alternative.
pub fn plan(config: &PlanConfig) -> Result<PlanReport, PlanError> {
    let hardware = config.hardware()?;
    let table_rows = config.table_rows()?;
    let setups = config.setups(table_rows).map_err(|m| crate::config::ConfigError::new(Path::new("candidates"), m))?;
    let threads = match config.curves.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // A one-tier LRU set-up is read off the LRU curve; the rest are simulated.
    let simulated = setups.iter().filter(|s| !read_off_curve(s)).cloned().collect();
    let spec = PassOptions {
        layout: config.workload.layout(),
        sample_rate: config.pass_rate(),
        simulate_rate: config.simulate_rate(),
        setups: simulated,
        count_from: config.count_from(),
        batch_lookups: config.lookups_per_batch(),
        threads,
    };
    let pass = spec.run(config.workload.open()?.as_mut(), config.known_requests())?;
    let counted = pass.requests.saturating_sub(spec.count_from);
    let setups = setups
        .into_iter()
        .map(|setup| match pass.setups.iter().find(|s| s.config == setup) {
            Some(simulated) => simulated.clone(),
            None => SetupCounts { counts: lru_curve_counts(&pass.all, &setup, counted), sample_rate: pass.all.rate(), config: setup },
        })
        .collect::<Vec<_>>();
    Ok(model_rows(config, &hardware, &pass, &setups, &spec, table_rows))
}

/// Whether a set-up's per-tier split is read off the LRU curve exactly: LRU with one
/// tier (one LRU cache over every lookup), or exclusive LRU (one LRU stack cut in two,
/// tests/plan.rs checks it). Inclusive LRU with two tiers is simulated: the host sees
/// only the device's misses, so it is not an LRU over the stream.
fn read_off_curve(setup: &TwoLevelConfig) -> bool {
    let tiers = (setup.device_rows > 0) as u8 + (setup.host_rows > 0) as u8;
    setup.policy == PolicyConfig::Lru && (tiers == 1 || (tiers == 2 && setup.hierarchy == Hierarchy::Exclusive))
}

/// The counts of `counted` lookups split as the LRU curve says.
fn lru_curve_counts(curve: &strata_policies::mrc::StackDistances, setup: &TwoLevelConfig, counted: u64) -> TierCounts {
    let (device, host) = lru_curve_shares(curve, setup);
    let device_hits = (device * counted as f64).round() as u64;
    let host_lookups = if setup.host_rows > 0 { counted - device_hits } else { 0 };
    let host_hits = ((host * counted as f64).round() as u64).min(host_lookups);
    // A one-tier or exclusive LRU cache admits every row, so a row read from the store
    // is a hit for the rest of its batch: each store lookup is one read.
    TierCounts { lookups: counted, device_hits, host_lookups, host_hits, store_reads: counted - device_hits - host_hits }
}

fn model_rows(
    config: &PlanConfig,
    hardware: &[config::Hardware],
    pass: &PassResult,
    setups: &[SetupCounts],
    spec: &PassOptions,
    table_rows: u64,
) -> PlanReport {
    let shape = BatchShape {
        lookups: config.lookups_per_batch(),
        samples: config.run.batch as u64,
        value_bytes: config.rows.value_bytes(),
        row_bytes: config.rows.row_bytes(),
        engine_ns_per_lookup: config.run.engine_ns_per_lookup,
    };
    let target = config.target_lookups_per_sec();
    let mut rows = Vec::new();
    for hw in hardware {
        for setup in setups {
            let counts: TierCounts = setup.counts;
            let time = model::batch_time(&shape, &counts, &hw.profile);
            let cost = model::cost(
                &hw.profile,
                setup.config.device_rows,
                setup.config.host_rows,
                config.rows.slab_bytes(),
                table_rows,
                shape.row_bytes,
            );
            let serial = shape.lookups as f64 / time.serial();
            let overlap = shape.lookups as f64 / time.overlapped();
            let lookups_per_sec = if config.run.prefetch { overlap } else { serial };
            let lru = (setup.config.policy == PolicyConfig::Lru).then(|| lru_curve_shares(&pass.all, &setup.config));
            rows.push(PlanRow {
                hardware: hw.name.clone(),
                policy: setup.config.policy.label(),
                hierarchy: setup.config.hierarchy,
                device_rows: setup.config.device_rows,
                host_rows: setup.config.host_rows,
                cost,
                device_share: counts.device_share(),
                host_share: counts.host_share(),
                store_share: counts.store_share(),
                store_reads_per_lookup: counts.store_reads_per_lookup(),
                host_hit_ratio: counts.host_hit_ratio(),
                lru_curve_device_share: lru.map(|l| l.0),
                lru_curve_host_share: lru.map(|l| l.1),
                sample_rate: setup.sample_rate,
                batch_time: time,
                lookups_per_sec_serial: serial,
                lookups_per_sec_overlap: overlap,
                samples_per_sec: lookups_per_sec / config.lookups_per_sample() as f64,
                lookups_per_sec,
                meets_target: lookups_per_sec >= target,
                on_pareto_front: false,
            });
        }
    }
    let fitting: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].cost.fits).collect();
    let points: Vec<(f64, f64)> = fitting.iter().map(|&i| (rows[i].cost.total, rows[i].lookups_per_sec)).collect();
    let pareto: Vec<usize> = model::pareto_front(&points).into_iter().map(|k| fitting[k]).collect();
    for &i in &pareto {
        rows[i].on_pareto_front = true;
    }
    let mut cheapest: Vec<usize> = fitting.iter().copied().filter(|&i| rows[i].meets_target).collect();
    cheapest.sort_by(|&a, &b| {
        rows[a].cost.total.total_cmp(&rows[b].cost.total).then(rows[b].lookups_per_sec.total_cmp(&rows[a].lookups_per_sec))
    });
    cheapest.truncate(5);
    PlanReport {
        workload: describe_workload(config),
        requests: pass.requests,
        counted_from: spec.count_from,
        distinct_rows: pass.distinct_rows,
        table_rows,
        lookups_per_sample: config.lookups_per_sample(),
        batch: config.run.batch,
        prefetch: config.run.prefetch,
        target_lookups_per_sec: target,
        sample_rate: spec.sample_rate,
        pass_seconds: pass.seconds,
        curves: pass_curves(pass, 40),
        rows,
        cheapest,
        pareto,
    }
}

fn describe_workload(config: &PlanConfig) -> String {
    match &config.workload {
        crate::lab::TraceSpec::Synthetic { synthetic, scan, .. } => {
            let scans = scan.map_or(String::new(), |s| format!(", a scan of {} rows every {} lookups", s.length, s.every));
            format!("synthetic Criteo-shaped stream, scale {}, Zipf {:?}, seed {}{scans}", synthetic.scale, synthetic.zipf, synthetic.seed)
        }
        crate::lab::TraceSpec::File { path, .. } => format!("trace {}", path.display()),
    }
}

/// The LRU curves of the pass (all tables, then each table with more than one row)
/// at `points` capacities each, on a log grid.
fn pass_curves(pass: &PassResult, points: usize) -> Vec<Curve> {
    let method = |rate: f64| if rate >= 1.0 { "stack-distance".to_string() } else { format!("shards({rate})") };
    let curve = |name: String, sd: &strata_policies::mrc::StackDistances, rows: u64| {
        let capacities = report::log_grid(1, rows.max(1), points);
        let ratios = sd.miss_ratios(&capacities);
        Curve {
            policy: name,
            method: method(sd.rate()),
            points: capacities
                .into_iter()
                .zip(ratios)
                .map(|(capacity_rows, miss_ratio)| CurvePoint { capacity_rows, miss_ratio })
                .collect(),
        }
    };
    let mut curves = vec![curve("all tables".into(), &pass.all, pass.distinct_rows)];
    curves.extend(pass.tables.iter().filter(|t| t.rows > 1).map(|t| curve(t.name.clone(), &t.curve, t.rows)));
    curves
}

fn money(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn rows_markdown(out: &mut String, report: &PlanReport, indices: &[usize]) {
    out.push_str("| hardware | policy | device rows (GB) | host rows (GB) | cost | samples/s | M lookups/s | no overlap | device hits | host hits | store |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &i in indices {
        let r = &report.rows[i];
        let _ = writeln!(
            out,
            "| {} | {} | {} ({:.3}) | {} ({:.3}) | {} | {:.0} | {:.3} | {:.3} | {:.1}% | {:.1}% | {:.1}% |",
            r.hardware,
            r.policy,
            r.device_rows,
            r.cost.device_gb,
            r.host_rows,
            r.cost.host_gb,
            money(r.cost.total),
            r.samples_per_sec,
            r.lookups_per_sec / 1e6,
            r.lookups_per_sec_serial / 1e6,
            100.0 * r.device_share,
            100.0 * r.host_share,
            100.0 * r.store_share
        );
    }
}

/// The plan for people: the workload, the cheapest configurations meeting the target
/// and the Pareto front.
pub fn markdown(report: &PlanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} lookups ({} counted after the warm-up), {} distinct of {} rows; batches of {} samples x {} lookups; prefetch overlap {}",
        report.workload,
        report.requests,
        report.requests - report.counted_from.min(report.requests),
        report.distinct_rows,
        report.table_rows,
        report.batch,
        report.lookups_per_sample,
        if report.prefetch { "on" } else { "off" }
    );
    let sampling = if report.sample_rate >= 1.0 {
        "exact (every lookup replayed, LRU curves by stack distances)".to_string()
    } else {
        format!(
            "SHARDS-sampled at rate {:.4} (LRU curve within {SHARDS_BOUND} where a capacity holds {SHARDS_BOUND_MIN_SAMPLED_ROWS}+ sampled rows)",
            report.sample_rate
        )
    };
    let _ = writeln!(out, "hit ratios: {sampling}; pass {:.1} s\n", report.pass_seconds);
    let target_samples = report.target_lookups_per_sec / report.lookups_per_sample as f64;
    let _ = writeln!(
        out,
        "### Cheapest configurations meeting {:.0} samples/s ({:.3} M lookups/s)\n",
        target_samples,
        report.target_lookups_per_sec / 1e6
    );
    if report.cheapest.is_empty() {
        out.push_str("No configuration in the grid meets the target (see the Pareto front for the fastest).\n\n");
    } else {
        rows_markdown(&mut out, report, &report.cheapest);
        out.push('\n');
    }
    out.push_str("### Pareto front: cost against throughput\n\n");
    rows_markdown(&mut out, report, &report.pareto);
    out
}

/// `plan.csv`: every configuration.
pub fn csv(report: &PlanReport) -> String {
    let mut out = String::from(
        "hardware,policy,hierarchy,device_rows,host_rows,device_gb,host_gb,storage_gb,cost,fits,device_share,host_share,store_share,host_hit_ratio,lru_curve_device_share,lru_curve_host_share,sample_rate,lookups_per_sec_serial,lookups_per_sec_overlap,samples_per_sec,meets_target,on_pareto_front\n",
    );
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{},{},{:?},{},{},{:.6},{:.6},{:.6},{:.4},{},{:.6},{:.6},{:.6},{:.6},{},{},{},{:.1},{:.1},{:.1},{},{}",
            r.hardware,
            r.policy,
            r.hierarchy,
            r.device_rows,
            r.host_rows,
            r.cost.device_gb,
            r.cost.host_gb,
            r.cost.storage_gb,
            r.cost.total,
            r.cost.fits,
            r.device_share,
            r.host_share,
            r.store_share,
            r.host_hit_ratio,
            opt(r.lru_curve_device_share),
            opt(r.lru_curve_host_share),
            r.sample_rate,
            r.lookups_per_sec_serial,
            r.lookups_per_sec_overlap,
            r.samples_per_sec,
            r.meets_target,
            r.on_pareto_front
        );
    }
    out
}

/// Writes `plan.csv`, `plan.json`, `plan.svg` (cost against samples/s, the Pareto front
/// and the target), `mrc.csv` and `mrc.svg` (the LRU curves) into `dir`.
pub fn write_reports(report: &PlanReport, config: &PlanConfig, dir: &Path) -> Result<(), ReportError> {
    report::write_file(&dir.join("plan.csv"), csv(report).as_bytes())?;
    let json = serde_json::json!({ "input": config, "plan": report });
    let text = serde_json::to_string_pretty(&json).map_err(|e| ReportError::new(dir, e))?;
    report::write_file(&dir.join("plan.json"), text.as_bytes())?;
    let mut clouds: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in report.rows.iter().filter(|r| r.cost.fits) {
        let name = format!("{} / {}", r.hardware, r.policy);
        let point = (r.cost.total, r.samples_per_sec);
        match clouds.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => clouds.push((name, vec![point])),
        }
    }
    let front: Vec<(f64, f64)> = report.pareto.iter().map(|&i| (report.rows[i].cost.total, report.rows[i].samples_per_sec)).collect();
    let target = report.target_lookups_per_sec / report.lookups_per_sample as f64;
    report::plot_tradeoff(&clouds, &front, Some(target), "Cost against throughput", "cost", "samples/s", &dir.join("plan.svg"))?;
    report::write_file(&dir.join("mrc.csv"), report::curves_csv(&report.curves, report.distinct_rows).as_bytes())?;
    let mut shown: Vec<Curve> = report.curves.iter().take(9).cloned().collect();
    shown.retain(|c| !c.points.is_empty());
    report::plot_curves(&shown, "LRU miss ratio against capacity", &dir.join("mrc.svg"))?;
    Ok(())
}
