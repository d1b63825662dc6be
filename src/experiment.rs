//! Training experiments (`strata run CONFIG` with a `[model]` section): the same
//! batches (synthetic, or read from Criteo TSV or MLPerf NumPy files) and seeds trained
//! under each placement set-up (tier sizes,
//! policies, hierarchy, prefetch window), with throughput, stall, hit ratios, bytes
//! moved, write-backs, held-out log-loss and AUC per set-up, written as JSON, CSV, SVG
//! plots, a self-contained HTML page and a Markdown summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfig;

use crate::config::{parse_toml, ConfigError, OutputSpec};
use crate::data::{BatchStream, CriteoTsvSpec, DataSource, MlperfNumpySpec, SyntheticConfig};
use crate::engine::backing::{BackingStore, FlatTable};
use crate::engine::device::DeviceKind;
use crate::engine::pool::Pooling;
use crate::engine::storage::{ReadPath, TableFile};
use crate::engine::table::{Batch, Hierarchy, TableConfig, TierConfig, TieredTable};
use crate::engine::{Optimizer, RowInit, RowLayout};
use crate::model::train::{train, TrainError, TrainOutcome};
use crate::model::{Dlrm, ModelConfig};
use crate::report::{self, ReportError};
use crate::sim::Capacity;

/// An experiment config; every field is documented in `configs/README.md`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub data: DataSpec,
    pub model: ModelConfig,
    pub engine: EngineSpec,
    #[serde(rename = "setup")]
    pub setups: Vec<SetupSpec>,
    #[serde(default)]
    pub output: OutputSpec,
}

/// The training and held-out data: one of `[data.synthetic]` (the default when none is
/// given), `[data.criteo_tsv]` and `[data.mlperf_numpy]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criteo_tsv: Option<CriteoTsvSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlperf_numpy: Option<MlperfNumpySpec>,
    pub batch_size: usize,
    /// Training batches (file sources may end sooner).
    pub train_batches: u64,
    /// Held-out batches: drawn from the synthetic stream after the training batches, or
    /// read from the held-out files.
    pub eval_batches: u64,
    /// Evaluate every this many steps (0 = at the end only).
    #[serde(default)]
    pub eval_every: u64,
}

/// Where the table lives and how its rows are updated.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    pub optimizer: Optimizer,
    #[serde(default)]
    pub pooling: Pooling,
    /// Initial rows: uniform in [-init_scale, init_scale) from `init_seed`.
    pub init_scale: f32,
    #[serde(default)]
    pub init_seed: u64,
    /// A table file (created for each set-up, from the same init) or, when absent, an
    /// in-memory store.
    pub table_file: Option<PathBuf>,
    #[serde(default = "default_read_path")]
    pub read_path: ReadPath,
    #[serde(default)]
    pub device_backend: DeviceKind,
}

impl DataSpec {
    /// The source the config names: the synthetic generator when it names none.
    /// (`ExperimentConfig::parse` rejects a config that names more than one.)
    pub fn source(&self) -> DataSource {
        match (&self.criteo_tsv, &self.mlperf_numpy) {
            (Some(tsv), _) => DataSource::CriteoTsv(tsv.clone()),
            (None, Some(numpy)) => DataSource::MlperfNumpy(numpy.clone()),
            (None, None) => DataSource::Synthetic(self.synthetic.clone().unwrap_or_default()),
        }
    }
}

fn default_read_path() -> ReadPath {
    ReadPath::IoUring
}

/// One placement set-up to compare.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetupSpec {
    pub name: String,
    /// Device tier: below 1 a fraction of the rows, from 1 a number of rows, 0 = none.
    pub device: f64,
    pub host: f64,
    /// Policy of both tiers (names as `strata simulate --policies`), unless
    /// `device_policy` / `host_policy` say otherwise.
    #[serde(default = "lru")]
    pub policy: String,
    pub device_policy: Option<String>,
    pub host_policy: Option<String>,
    #[serde(default)]
    pub hierarchy: Hierarchy,
    /// Batches read ahead (0 = no prefetch).
    #[serde(default)]
    pub window: usize,
    /// Dirty rows held by the storage thread to write them down in page order, sized
    /// like the tiers (0 = none). Host memory beyond the host tier.
    #[serde(default)]
    pub write_buffer: f64,
    /// Where the whole table lives: `file` (the engine's `table_file`, when given) or
    /// `memory` (a flat in-memory table: the all-in-memory reference).
    #[serde(default)]
    pub store: StoreKind,
}

/// The backing store of a set-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    File,
    Memory,
}

fn lru() -> String {
    "lru".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// (Not a `source` field: the message already holds the cause, and a source would
    /// print it twice.)
    #[error("setup `{setup}`: {error}")]
    Setup { setup: String, error: TrainError },
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl SetupSpec {
    /// Rows of a size given as a fraction (below 1) or a number of rows (from 1).
    fn rows_of(&self, what: &str, size: f64, rows: u64) -> Result<usize, String> {
        if size == 0.0 {
            return Ok(0);
        }
        let capacity = Capacity::try_from(size).map_err(|e| format!("setup `{}`: {what}: {e}", self.name))?;
        Ok(capacity.rows(rows).min(rows) as usize)
    }

    fn tier(&self, tier: &str, size: f64, policy: &Option<String>, rows: u64) -> Result<TierConfig, String> {
        let name = policy.as_deref().unwrap_or(&self.policy);
        let policy = PolicyConfig::from_name(name).map_err(|e| format!("setup `{}`: {tier} policy: {e}", self.name))?;
        Ok(TierConfig::rows(self.rows_of(tier, size, rows)?, policy))
    }
}

impl ExperimentConfig {
    /// Parses and checks an experiment config read from `path`: every set-up is built on
    /// paper before any work starts.
    pub fn parse(path: &Path, text: &str) -> Result<ExperimentConfig, ExperimentError> {
        let config: ExperimentConfig = parse_toml(path, text)?;
        let error = |message: String| ConfigError::new(path, message);
        let named = [config.data.synthetic.is_some(), config.data.criteo_tsv.is_some(), config.data.mlperf_numpy.is_some()];
        if named.iter().filter(|&&n| n).count() > 1 {
            return Err(error("data: give one of [data.synthetic], [data.criteo_tsv] and [data.mlperf_numpy]".into()).into());
        }
        config.data.source().check(config.data.eval_batches > 0).map_err(|e| error(format!("data: {e}")))?;
        config.model.validate().map_err(|e| error(format!("model: {e}")))?;
        if config.data.batch_size == 0 || config.data.train_batches == 0 {
            return Err(error("data: batch_size and train_batches must be at least 1".into()).into());
        }
        if config.setups.is_empty() {
            return Err(error("give at least one [[setup]]".into()).into());
        }
        let rows = config.rows();
        for setup in &config.setups {
            setup.table_config(&config.engine, rows).map_err(error)?;
        }
        Ok(config)
    }

    /// Rows of the table (all 26 tables).
    pub fn rows(&self) -> u64 {
        self.data.source().layout().total_rows()
    }

    /// The training batches; a read error ends them and waits in `failure()`.
    fn batches(&self) -> Result<BatchStream, TrainError> {
        self.data.source().train(self.data.batch_size, self.data.train_batches).map_err(|e| TrainError::Batch { start: 0, what: e.to_string() })
    }

    fn held_out(&self) -> Result<Vec<Batch>, TrainError> {
        let data = &self.data;
        data.source().held_out(data.batch_size, data.train_batches, data.eval_batches).map_err(|e| TrainError::Batch { start: 0, what: e.to_string() })
    }

    /// A fresh store holding the initial table: `kind` says where.
    fn store(&self, kind: StoreKind) -> Result<Box<dyn BackingStore>, TrainError> {
        let layout = RowLayout::new(self.model.embedding_dim, &self.engine.optimizer);
        let init = RowInit::Uniform { seed: self.engine.init_seed, scale: self.engine.init_scale };
        let rows = self.rows();
        let file = self.engine.table_file.as_ref().filter(|_| kind == StoreKind::File);
        Ok(match file {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| TrainError::Batch { start: 0, what: format!("{}: {e}", dir.display()) })?;
                }
                drop(TableFile::create(path, rows, layout, init).map_err(|e| TrainError::Engine(e.into()))?);
                Box::new(TableFile::open(path, self.engine.read_path).map_err(|e| TrainError::Engine(e.into()))?)
            }
            None => Box::new(FlatTable::new(rows, layout, init)),
        })
    }
}

impl SetupSpec {
    fn table_config(&self, engine: &EngineSpec, rows: u64) -> Result<TableConfig, String> {
        Ok(TableConfig {
            device: self.tier("device", self.device, &self.device_policy, rows)?,
            device_backend: engine.device_backend,
            host: self.tier("host", self.host, &self.host_policy, rows)?,
            hierarchy: self.hierarchy,
            optimizer: engine.optimizer,
            pooling: engine.pooling,
            write_buffer_rows: self.rows_of("write_buffer", self.write_buffer, rows)?,
        })
    }
}

/// One set-up's results.
#[derive(Clone, Debug, Serialize)]
pub struct SetupResult {
    pub name: String,
    pub samples_per_sec: f64,
    pub stall_fraction: f64,
    pub hit_ratio: HitRatios,
    pub auc: Option<f64>,
    pub logloss: f64,
    pub write_backs: u64,
    pub bytes_store_to_host: u64,
    pub bytes_host_to_store: u64,
    pub bytes_host_to_device: u64,
    pub bytes_device_to_host: u64,
    pub device_backend: Option<String>,
    pub outcome: TrainOutcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct HitRatios {
    pub device: Option<f64>,
    pub host: Option<f64>,
}

fn result(name: &str, outcome: TrainOutcome) -> SetupResult {
    let engine = &outcome.engine;
    let last = outcome.evaluations.last();
    SetupResult {
        name: name.to_string(),
        samples_per_sec: outcome.samples_per_sec,
        stall_fraction: outcome.stall_seconds / outcome.seconds.max(1e-9),
        hit_ratio: HitRatios {
            device: engine.device.as_ref().map(|t| t.hit_ratio()),
            host: engine.host.as_ref().map(|t| t.hit_ratio()),
        },
        auc: last.and_then(|e| e.auc),
        logloss: last.map_or(f64::NAN, |e| e.logloss),
        write_backs: engine.device.iter().chain(engine.host.iter()).map(|t| t.write_backs).sum(),
        bytes_store_to_host: engine.bytes_store_to_host,
        bytes_host_to_store: engine.bytes_host_to_store,
        bytes_host_to_device: engine.bytes_host_to_device,
        bytes_device_to_host: engine.bytes_device_to_host,
        device_backend: engine.device.as_ref().map(|t| t.backend.clone()),
        outcome,
    }
}

/// Trains every set-up and writes the reports into `out` (the config's folder if
/// `None`); returns the results and the Markdown summary.
pub fn run(config: &ExperimentConfig, out: Option<&Path>) -> Result<(Vec<SetupResult>, String), ExperimentError> {
    let dir = out.unwrap_or(&config.output.dir);
    std::fs::create_dir_all(dir).map_err(|e| ReportError::new(dir, e))?;
    let rows = config.rows();
    let held_out = config.held_out().map_err(|source| setup_error(&config.setups[0], source))?;
    let mut results = Vec::new();
    for setup in &config.setups {
        let fail = |source: TrainError| setup_error(setup, source);
        let table_config = setup.table_config(&config.engine, rows).map_err(|m| ConfigError::new(dir, m))?;
        let mut model = Dlrm::new(&config.model, crate::data::CRITEO_CARDINALITIES.len()).map_err(|e| fail(e.into()))?;
        let store = config.store(setup.store).map_err(&fail)?;
        let mut table = TieredTable::new(&table_config, store).map_err(|e| fail(e.into()))?;
        eprintln!("training `{}`", setup.name);
        let batches = config.batches().map_err(&fail)?;
        let failure = batches.failure();
        let outcome = train(&mut model, &mut table, batches, setup.window, &held_out, config.data.eval_every).map_err(&fail)?;
        if let Some((start, error)) = failure.take() {
            return Err(fail(TrainError::Batch { start, what: error.to_string() }));
        }
        table.flush().map_err(|e| fail(e.into()))?;
        results.push(result(&setup.name, outcome));
    }
    write_reports(config, &results, dir)?;
    Ok((results.clone(), markdown(&results)))
}

fn setup_error(setup: &SetupSpec, source: TrainError) -> ExperimentError {
    ExperimentError::Setup { setup: setup.name.clone(), error: source }
}

const COLUMNS: [&str; 9] = ["setup", "samples/s", "vs first", "stall", "device hits", "host hits", "write-backs", "AUC", "log-loss"];

/// The cells of a set-up's row in the summaries, in the order of [`COLUMNS`].
fn cells(r: &SetupResult, base: f64) -> [String; 9] {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    [
        r.name.clone(),
        format!("{:.0}", r.samples_per_sec),
        format!("{:.0}%", 100.0 * r.samples_per_sec / base),
        format!("{:.0}%", 100.0 * r.stall_fraction),
        pct(r.hit_ratio.device),
        pct(r.hit_ratio.host),
        r.write_backs.to_string(),
        r.auc.map_or("-".into(), |a| format!("{a:.4}")),
        format!("{:.4}", r.logloss),
    ]
}

fn first_speed(results: &[SetupResult]) -> f64 {
    results.first().map_or(1.0, |r| r.samples_per_sec)
}

/// The Markdown summary: one row per set-up.
pub fn markdown(results: &[SetupResult]) -> String {
    let mut out = format!("| {} |\n|---|{}\n", COLUMNS.join(" | "), "---:|".repeat(COLUMNS.len() - 1));
    for r in results {
        let _ = writeln!(out, "| {} |", cells(r, first_speed(results)).join(" | "));
    }
    out
}

fn write_reports(config: &ExperimentConfig, results: &[SetupResult], dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::json!({ "config": config, "setups": results });
    let text = serde_json::to_string_pretty(&json).map_err(|e| ReportError::new(dir, e))?;
    report::write_file(&dir.join("report.json"), text.as_bytes())?;
    let mut csv = String::from("name,samples_per_sec,stall_fraction,device_hit_ratio,host_hit_ratio,write_backs,auc,logloss\n");
    for r in results {
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
        let _ = writeln!(
            csv,
            "{},{:.1},{:.4},{},{},{},{},{:.6}",
            r.name.replace(',', ";"),
            r.samples_per_sec,
            r.stall_fraction,
            opt(r.hit_ratio.device),
            opt(r.hit_ratio.host),
            r.write_backs,
            opt(r.auc),
            r.logloss
        );
    }
    report::write_file(&dir.join("report.csv"), csv.as_bytes())?;
    // Loss curves (the training loss, averaged over 10 steps) on one plot.
    let losses: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|r| {
            let points = r.outcome.losses.chunks(10).enumerate().map(|(i, c)| ((i * 10 + c.len()) as f64, f64::from(c.iter().sum::<f32>() / c.len() as f32)));
            (r.name.clone(), points.collect())
        })
        .collect();
    report::plot_series(&losses, "Training loss (mean of 10 steps)", "step", "loss", &dir.join("loss.svg"))?;
    report::plot_bars(
        &results.iter().map(|r| (r.name.clone(), r.samples_per_sec)).collect::<Vec<_>>(),
        "Training throughput",
        "samples/s",
        &dir.join("throughput.svg"),
    )?;
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Strata experiment</title>");
    html.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>");
    let _ = write!(html, "<h1>Strata training experiment</h1><table><tr><th>{}</th></tr>", COLUMNS.join("</th><th>"));
    for r in results {
        let row: Vec<String> = cells(r, first_speed(results)).iter().map(|c| escape(c)).collect();
        let _ = write!(html, "<tr><td>{}</td></tr>", row.join("</td><td>"));
    }
    html.push_str("</table>");
    for svg in ["throughput.svg", "loss.svg"] {
        let body = std::fs::read_to_string(dir.join(svg)).map_err(|e| ReportError::new(&dir.join(svg), e))?;
        let _ = write!(html, "<div>{}</div>", body.trim_start_matches(|c| c != '<').replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1));
    }
    html.push_str("</body></html>\n");
    report::write_file(&dir.join("report.html"), html.as_bytes())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
