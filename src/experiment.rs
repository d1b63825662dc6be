//! Training and serving experiments (`strata run CONFIG` with a `[model]` section): the
//! same batches (synthetic, or read from Criteo TSV or MLPerf NumPy files), requests and
//! seeds run under each placement set-up (tier sizes, policies, hierarchy, prefetch
//! window): training throughput, stall, hit ratios, bytes moved, write-backs,
//! checkpoints, held-out log-loss and AUC; serving queries/s, latency percentiles,
//! stall, hit ratios and a checksum of every prediction. Written as JSON, CSV, SVG
//! plots, a self-contained HTML page and a Markdown summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfig;

use crate::checkpoint::{CheckpointError, RunFolder};
use crate::config::{parse_toml, ConfigError, OutputSpec};
use crate::data::{BatchStream, CriteoTsvSpec, DataSource, MlperfNumpySpec, Rebatch, SyntheticConfig};
use crate::engine::batch::Batch;
use crate::engine::device::DeviceKind;
use crate::engine::flat::FlatTable;
use crate::engine::placement::Hierarchy;
use crate::engine::pool::Pooling;
use crate::engine::stats::EngineStats;
use crate::engine::storage::{BackingStore, OnIoError, ReadConfig, ReadPath, TableFile};
use crate::engine::table::config::{TableConfig, TierConfig};
use crate::engine::table::TieredTable;
use crate::engine::{EngineError, Optimizer, RowInit, RowLayout};
use crate::model::train::{
    serve, train_from, Checkpointer, FlushTable, ServeOptions, ServeOutcome, TrainError, TrainOptions, TrainOutcome, TrainedSteps,
};
use crate::model::{Dlrm, ModelConfig};
use crate::progress::Progress;
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
    /// Serving after training (or alone, with `train_batches = 0`).
    pub serve: Option<ServeSpec>,
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
    /// Take a crash-safe checkpoint every this many steps (0 = never), which
    /// `strata run --resume` restarts from.
    #[serde(default)]
    pub checkpoint_every: u64,
}

/// `[serve]`: request batches replayed through lookup and prediction, no updates.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSpec {
    /// Requests measured.
    pub requests: u64,
    /// Samples (queries) per request.
    pub batch_size: usize,
    /// Requests served before the measured ones, left out of every figure.
    #[serde(default)]
    pub warmup: u64,
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
    /// What a failed page read or write does: `"stop"` the run, or `{ retry = N }`.
    #[serde(default)]
    pub on_io_error: OnIoError,
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
    /// Batches (training) or requests (serving) read ahead (0 = no prefetch).
    #[serde(default)]
    pub window: usize,
    /// Dirty rows held by the storage thread to write them down in page order, sized
    /// like the tiers (0 = none). Host memory beyond the host tier.
    #[serde(default)]
    pub write_buffer: f64,
    /// Read every row into the host tier before training and serving (the host must hold
    /// every row): the all-in-memory set-up with no cold misses.
    #[serde(default)]
    pub preload: bool,
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
    /// A stop request ([`crate::interrupt`]) ended the run: the table was flushed and
    /// the reports written with the partial results.
    #[error("setup `{setup}`: interrupted at {what} {done}; table flushed; partial reports in {}", dir.display())]
    Interrupted { setup: String, what: &'static str, done: u64, dir: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
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
        config.check(path)
    }

    /// Reads back the config a run saved (as JSON) in its folder, and checks it.
    fn parse_saved(path: &Path, json: &str) -> Result<ExperimentConfig, ExperimentError> {
        let config: ExperimentConfig =
            serde_json::from_str(json).map_err(|e| ConfigError::new(path, format!("line {} column {}: {e}", e.line(), e.column())))?;
        config.check(path)
    }

    /// Checks a config read from `path`: every set-up is built on paper.
    fn check(self, path: &Path) -> Result<ExperimentConfig, ExperimentError> {
        let config = self;
        let error = |message: String| ConfigError::new(path, message);
        let named = [config.data.synthetic.is_some(), config.data.criteo_tsv.is_some(), config.data.mlperf_numpy.is_some()];
        if named.iter().filter(|&&n| n).count() > 1 {
            return Err(error("data: give one of [data.synthetic], [data.criteo_tsv] and [data.mlperf_numpy]".into()).into());
        }
        config.data.source().check(config.data.eval_batches > 0).map_err(|e| error(format!("data: {e}")))?;
        config.model.validate().map_err(|e| error(format!("model: {e}")))?;
        if config.data.batch_size == 0 {
            return Err(error("data: batch_size must be at least 1".into()).into());
        }
        match &config.serve {
            None if config.data.train_batches == 0 => {
                return Err(error("data: train_batches must be at least 1 (0 only with a [serve] section: serve only)".into()).into())
            }
            Some(_) if config.data.train_batches == 0 && config.data.eval_batches > 0 => {
                return Err(error("data: eval_batches needs training (train_batches >= 1); set it to 0 to serve only".into()).into())
            }
            Some(serve) if serve.requests == 0 || serve.batch_size == 0 => {
                return Err(error("serve: requests and batch_size must be at least 1".into()).into())
            }
            _ => {}
        }
        if config.setups.is_empty() {
            return Err(error("give at least one [[setup]]".into()).into());
        }
        let rows = config.rows();
        for setup in &config.setups {
            let table = setup.table_config(&config.engine, rows).map_err(error)?;
            if setup.preload && (table.host.rows as u64) < rows {
                return Err(error(format!(
                    "setup `{}`: preload needs a host tier holding every row ({rows} rows; host = {} holds {})",
                    setup.name, setup.host, table.host.rows
                ))
                .into());
            }
        }
        Ok(config)
    }

    /// Rows of the table (all 26 tables).
    pub fn rows(&self) -> u64 {
        self.data.source().layout().total_rows()
    }

    /// The training batches; a read error ends them and waits in `failure()`.
    fn batches(&self) -> Result<BatchStream, TrainError> {
        self.data
            .source()
            .train(self.data.batch_size, self.data.train_batches)
            .map_err(|e| TrainError::Batch { start: 0, what: e.to_string() })
    }

    fn held_out(&self) -> Result<Vec<Batch>, TrainError> {
        let data = &self.data;
        data.source()
            .held_out(data.batch_size, data.train_batches, data.eval_batches)
            .map_err(|e| TrainError::Batch { start: 0, what: e.to_string() })
    }

    /// The serving requests (warm-up first): the held-out stream after its
    /// `eval_batches` batches (for the synthetic source, the stream after the training
    /// and held-out batches), cut into requests of `[serve] batch_size` samples. Held in
    /// memory, so that a request's latency never includes generating it.
    fn requests(&self, serve: &ServeSpec) -> Result<Vec<Batch>, TrainError> {
        let data = &self.data;
        let requests = serve.warmup + serve.requests;
        let batches = (requests * serve.batch_size as u64).div_ceil(data.batch_size as u64);
        let stream = data
            .source()
            .held_out(data.batch_size, data.train_batches, data.eval_batches + batches)
            .map_err(|e| TrainError::Batch { start: 0, what: e.to_string() })?;
        Ok(Rebatch::new(stream.into_iter().skip(data.eval_batches as usize), serve.batch_size).take(requests as usize).collect())
    }

    fn read_config(&self) -> ReadConfig {
        ReadConfig { read_path: self.engine.read_path, on_io_error: self.engine.on_io_error, ..ReadConfig::default() }
    }

    /// A fresh store holding the initial table.
    fn store(&self) -> Result<Box<dyn BackingStore>, TrainError> {
        let layout = RowLayout::new(self.model.embedding_dim, &self.engine.optimizer);
        let init = RowInit::Uniform { seed: self.engine.init_seed, scale: self.engine.init_scale };
        let rows = self.rows();
        Ok(match &self.engine.table_file {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| TrainError::Batch { start: 0, what: format!("{}: {e}", dir.display()) })?;
                }
                drop(TableFile::create(path, rows, layout, init).map_err(|e| TrainError::Engine(e.into()))?);
                Box::new(TableFile::open_with(path, self.read_config()).map_err(|e| TrainError::Engine(e.into()))?)
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

/// One set-up's results. Training figures are `None` when the experiment only serves,
/// serving figures `None` without a `[serve]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupResult {
    pub name: String,
    pub samples_per_sec: Option<f64>,
    /// Share of the training time spent waiting for rows from the store.
    pub stall_fraction: Option<f64>,
    /// Hit ratios of the tiers during training (evaluation lookups included).
    pub hit_ratio: HitRatios,
    pub auc: Option<f64>,
    pub logloss: Option<f64>,
    pub write_backs: Option<u64>,
    pub checkpoints: Option<u64>,
    pub checkpoint_seconds: Option<f64>,
    pub bytes_store_to_host: Option<u64>,
    pub bytes_host_to_store: Option<u64>,
    pub bytes_host_to_device: Option<u64>,
    pub bytes_device_to_host: Option<u64>,
    pub device_backend: Option<String>,
    pub queries_per_sec: Option<f64>,
    pub p50_us: Option<f64>,
    pub p95_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// This set-up's p99 over the first set-up's.
    pub p99_vs_first: Option<f64>,
    /// Share of the serving time spent waiting for rows from the store.
    pub serve_stall_fraction: Option<f64>,
    /// Hit ratios of the tiers while serving the measured requests.
    pub serve_hit_ratio: HitRatios,
    pub prediction_checksum: Option<String>,
    /// The whole training outcome (losses of every step, evaluations, engine counters).
    pub outcome: Option<TrainOutcome>,
    /// The whole serving outcome (every latency, engine counters).
    pub serving: Option<ServeOutcome>,
}

/// Hit ratio of each tier (`None` for a tier the set-up does not have).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HitRatios {
    pub device: Option<f64>,
    pub host: Option<f64>,
}

impl HitRatios {
    fn of(engine: Option<&EngineStats>) -> HitRatios {
        HitRatios {
            device: engine.and_then(|e| e.device.as_ref()).map(|t| t.hit_ratio()),
            host: engine.and_then(|e| e.host.as_ref()).map(|t| t.hit_ratio()),
        }
    }
}

fn result(name: &str, training: Option<TrainOutcome>, serving: Option<ServeOutcome>) -> SetupResult {
    let engine = training.as_ref().map(|t| &t.engine);
    let served = serving.as_ref().map(|s| &s.engine);
    let last = training.as_ref().and_then(|t| t.evaluations.last());
    SetupResult {
        name: name.to_string(),
        samples_per_sec: training.as_ref().map(|t| t.samples_per_sec),
        stall_fraction: training.as_ref().map(|t| t.stall_seconds / t.seconds.max(1e-9)),
        hit_ratio: HitRatios::of(engine),
        auc: last.and_then(|e| e.auc),
        logloss: last.map(|e| e.logloss),
        write_backs: engine.map(|e| e.device.iter().chain(e.host.iter()).map(|t| t.write_backs).sum()),
        checkpoints: training.as_ref().map(|t| t.checkpoints),
        checkpoint_seconds: training.as_ref().map(|t| t.checkpoint_seconds),
        bytes_store_to_host: engine.map(|e| e.bytes_store_to_host),
        bytes_host_to_store: engine.map(|e| e.bytes_host_to_store),
        bytes_host_to_device: engine.map(|e| e.bytes_host_to_device),
        bytes_device_to_host: engine.map(|e| e.bytes_device_to_host),
        device_backend: engine.or(served).and_then(|e| e.device.as_ref()).map(|t| t.backend.clone()),
        queries_per_sec: serving.as_ref().map(|s| s.queries_per_sec),
        p50_us: serving.as_ref().map(|s| s.p50_us),
        p95_us: serving.as_ref().map(|s| s.p95_us),
        p99_us: serving.as_ref().map(|s| s.p99_us),
        p99_vs_first: None,
        serve_stall_fraction: serving.as_ref().map(|s| s.stall_seconds / s.seconds.max(1e-9)),
        serve_hit_ratio: HitRatios::of(served),
        prediction_checksum: serving.as_ref().map(|s| s.prediction_checksum.clone()),
        outcome: training,
        serving,
    }
}

/// Reads every row into the memory tiers, in row order, through ordinary lookups.
fn preload(table: &mut TieredTable) -> Result<(), EngineError> {
    const CHUNK: u64 = 1 << 16;
    let dim = table.layout().dim;
    let mut pooled = Vec::new();
    for first in (0..table.rows()).step_by(CHUNK as usize) {
        if crate::interrupt::requested() {
            break;
        }
        let ids: Vec<u64> = (first..(first + CHUNK).min(table.rows())).collect();
        let offsets: Vec<usize> = (0..=ids.len()).collect();
        pooled.resize(ids.len() * dim, 0.0);
        table.lookup(&Batch::new(ids, offsets, first), &mut pooled)?;
    }
    Ok(())
}

/// Runs every set-up (preload, training, serving, as configured) and writes the reports
/// into `out` (the config's folder if `None`); returns the results and the Markdown
/// summary. The config and each finished set-up's result are saved in
/// `out/checkpoints`, with the crash-safe checkpoints of the set-up in training when
/// `data.checkpoint_every` > 0, for [`resume`]. On a stop request ([`crate::interrupt`])
/// the set-up under way stops after its current step, its table is flushed, the reports
/// are written with the set-ups run so far (the last one partial, its result not
/// recorded, so `resume` goes on from its latest checkpoint) and
/// [`ExperimentError::Interrupted`] is returned.
pub fn run(config: &ExperimentConfig, out: Option<&Path>) -> Result<(Vec<SetupResult>, String), ExperimentError> {
    let dir = out.unwrap_or(&config.output.dir);
    std::fs::create_dir_all(dir).map_err(|e| ReportError::new(dir, e))?;
    let json = serde_json::to_string_pretty(config).map_err(|e| ReportError::new(dir, e))?;
    let folder = RunFolder::start(dir, &json)?;
    run_in(config, dir, &folder, false)
}

/// Resumes the run saved in `dir` (by [`run`]) with the config saved there: finished
/// set-ups are taken from their recorded results, the interrupted one restarts from its
/// latest committed checkpoint (or from the start without one), and the rest run.
/// Results equal those of a run that never stopped, but for the timings and engine
/// counters of the resumed set-up, which cover the part after its checkpoint.
pub fn resume(dir: &Path) -> Result<(ExperimentConfig, Vec<SetupResult>, String), ExperimentError> {
    let (folder, json, path) = RunFolder::open(dir)?;
    let config = ExperimentConfig::parse_saved(&path, &json)?;
    let (results, summary) = run_in(&config, dir, &folder, true)?;
    Ok((config, results, summary))
}

fn run_in(
    config: &ExperimentConfig,
    dir: &Path,
    folder: &RunFolder,
    resuming: bool,
) -> Result<(Vec<SetupResult>, String), ExperimentError> {
    let rows = config.rows();
    let first_fail = |source: TrainError| setup_error(&config.setups[0], source);
    let held_out = config.held_out().map_err(first_fail)?;
    let requests: Option<Arc<[Batch]>> = match &config.serve {
        Some(spec) => Some(config.requests(spec).map_err(first_fail)?.into()),
        None => None,
    };
    let mut results = Vec::new();
    for (index, setup) in config.setups.iter().enumerate() {
        let fail = |source: TrainError| setup_error(setup, source);
        let mut checkpoints = folder.setup(index, &setup.name);
        if resuming {
            if let Some(result) = checkpoints.finished::<SetupResult>()? {
                eprintln!("`{}` finished before: result from {}", setup.name, checkpoints.dir().display());
                results.push(result);
                continue;
            }
        }
        let manifest = if resuming { checkpoints.latest()? } else { None };
        if manifest.is_none() {
            checkpoints.clear()?;
        }
        let table_config = setup.table_config(&config.engine, rows).map_err(|m| ConfigError::new(dir, m))?;
        let mut model = Dlrm::new(&config.model, crate::data::CRITEO_CARDINALITIES.len()).map_err(|e| fail(e.into()))?;
        let store = match &manifest {
            Some(manifest) => checkpoints.open_store(manifest, config.read_config()).map_err(&fail)?,
            None => config.store().map_err(&fail)?,
        };
        let mut table = TieredTable::new(&table_config, store).map_err(|e| fail(e.into()))?;
        let done = match &manifest {
            Some(manifest) => {
                eprintln!("resuming `{}` from checkpoint {} (step {})", setup.name, manifest.checkpoint, manifest.steps);
                model.load_state(&checkpoints.dir().join(&manifest.dense_state)).map_err(|e| fail(e.into()))?;
                table.protect_checkpoint(manifest.checkpoint).map_err(|e| fail(e.into()))?;
                manifest.trained_steps()
            }
            None => TrainedSteps::default(),
        };
        if setup.preload {
            eprintln!("preloading `{}`", setup.name);
            preload(&mut table).map_err(|e| fail(e.into()))?;
        }
        let training = match config.data.train_batches {
            0 => None,
            steps => {
                eprintln!("training `{}`", setup.name);
                let progress = Progress::new(format!("training `{}`", setup.name), Some(steps));
                progress.advance(done.steps);
                let options = TrainOptions {
                    window: setup.window,
                    eval_every: config.data.eval_every,
                    checkpoint_every: config.data.checkpoint_every,
                };
                let batches = config.batches().map_err(&fail)?;
                let failure = batches.failure();
                let batches = batches.skip(done.steps as usize);
                let checkpointer: &mut dyn Checkpointer = if config.data.checkpoint_every > 0 { &mut checkpoints } else { &mut FlushTable };
                let outcome =
                    train_from(&mut model, &mut table, batches, &held_out, &options, &progress, done, checkpointer).map_err(&fail)?;
                progress.finish();
                if let Some((start, error)) = failure.take() {
                    return Err(fail(TrainError::Batch { start, what: error.to_string() }));
                }
                Some(outcome)
            }
        };
        let stopped_training = training.as_ref().filter(|t| t.interrupted).map(|t| t.steps);
        let serving = match (&config.serve, &requests) {
            (Some(spec), Some(requests)) if stopped_training.is_none() => {
                eprintln!("serving `{}`", setup.name);
                let progress = Progress::new(format!("serving `{}`", setup.name), Some(requests.len() as u64));
                let stream = {
                    let requests = Arc::clone(requests);
                    (0..requests.len()).map(move |i| requests[i].clone())
                };
                let options = ServeOptions { window: setup.window, warmup: spec.warmup };
                let outcome = serve(&model, &mut table, stream, &options, &progress).map_err(&fail)?;
                progress.finish();
                Some(outcome)
            }
            _ => None,
        };
        table.flush().map_err(|e| fail(e.into()))?;
        let stopped = match (stopped_training, &serving) {
            (Some(steps), _) => Some(("step", steps)),
            (None, Some(s)) if s.interrupted => Some(("request", s.warmup_requests + s.requests)),
            _ => None,
        };
        let result = result(&setup.name, training, serving);
        if let Some((what, done)) = stopped {
            results.push(result);
            write_reports(config, &results, dir)?;
            return Err(ExperimentError::Interrupted { setup: setup.name.clone(), what, done, dir: dir.to_path_buf() });
        }
        checkpoints.record_result(&result)?;
        results.push(result);
    }
    let first_p99 = results.first().and_then(|r| r.p99_us);
    for r in &mut results {
        r.p99_vs_first = r.p99_us.zip(first_p99).map(|(p99, first)| p99 / first.max(1e-9));
    }
    write_reports(config, &results, dir)?;
    Ok((results.clone(), markdown(&results)))
}

fn setup_error(setup: &SetupSpec, source: TrainError) -> ExperimentError {
    ExperimentError::Setup { setup: setup.name.clone(), error: source }
}

/// One table of the summaries: a title, its columns, and one row of cells per set-up.
struct SummaryTable {
    title: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

fn percent(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v))
}

/// The training table (when the set-ups trained) and the serving table (when they
/// served), shared by the Markdown and HTML summaries.
fn summary_tables(results: &[SetupResult]) -> Vec<SummaryTable> {
    let mut tables = Vec::new();
    if results.iter().any(|r| r.outcome.is_some()) {
        let base = results.first().and_then(|r| r.samples_per_sec).unwrap_or(1.0);
        let rows = results
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.samples_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
                    r.samples_per_sec.map_or("-".into(), |v| format!("{:.0}%", 100.0 * v / base)),
                    percent(r.stall_fraction),
                    percent(r.hit_ratio.device),
                    percent(r.hit_ratio.host),
                    r.write_backs.map_or("-".into(), |w| w.to_string()),
                    r.auc.map_or("-".into(), |a| format!("{a:.4}")),
                    r.logloss.map_or("-".into(), |l| format!("{l:.4}")),
                ]
            })
            .collect();
        tables.push(SummaryTable {
            title: "Training",
            columns: &["setup", "samples/s", "vs first", "stall", "device hits", "host hits", "write-backs", "AUC", "log-loss"],
            rows,
        });
    }
    if results.iter().any(|r| r.serving.is_some()) {
        let micros = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0}"));
        let rows = results
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.queries_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
                    micros(r.p50_us),
                    micros(r.p95_us),
                    micros(r.p99_us),
                    r.p99_vs_first.map_or("-".into(), |v| format!("{v:.2}x")),
                    percent(r.serve_stall_fraction),
                    percent(r.serve_hit_ratio.device),
                    percent(r.serve_hit_ratio.host),
                    r.prediction_checksum.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        tables.push(SummaryTable {
            title: "Serving",
            columns: &[
                "setup",
                "queries/s",
                "p50 us",
                "p95 us",
                "p99 us",
                "p99 vs first",
                "stall",
                "device hits",
                "host hits",
                "scores checksum",
            ],
            rows,
        });
    }
    tables
}

/// The Markdown summary: a training and/or a serving table, one row per set-up.
pub fn markdown(results: &[SetupResult]) -> String {
    let mut out = String::new();
    for table in summary_tables(results) {
        let _ = write!(out, "{}\n\n| {} |\n|---|{}\n", table.title, table.columns.join(" | "), "---:|".repeat(table.columns.len() - 1));
        for row in &table.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out.push('\n');
    }
    out
}

const CSV_HEADER: &str =
    "name,samples_per_sec,stall_fraction,device_hit_ratio,host_hit_ratio,write_backs,auc,logloss,checkpoints,checkpoint_seconds,\
queries_per_sec,p50_us,p95_us,p99_us,p99_vs_first,serve_stall_fraction,serve_device_hit_ratio,serve_host_hit_ratio,prediction_checksum\n";

fn csv(results: &[SetupResult]) -> String {
    let mut csv = String::from(CSV_HEADER);
    let float = |x: Option<f64>, digits: usize| x.map_or(String::new(), |v| format!("{v:.digits$}"));
    let int = |x: Option<u64>| x.map_or(String::new(), |v| v.to_string());
    for r in results {
        let cells = [
            r.name.replace(',', ";"),
            float(r.samples_per_sec, 1),
            float(r.stall_fraction, 4),
            float(r.hit_ratio.device, 6),
            float(r.hit_ratio.host, 6),
            int(r.write_backs),
            float(r.auc, 6),
            float(r.logloss, 6),
            int(r.checkpoints),
            float(r.checkpoint_seconds, 4),
            float(r.queries_per_sec, 1),
            float(r.p50_us, 1),
            float(r.p95_us, 1),
            float(r.p99_us, 1),
            float(r.p99_vs_first, 4),
            float(r.serve_stall_fraction, 4),
            float(r.serve_hit_ratio.device, 6),
            float(r.serve_hit_ratio.host, 6),
            r.prediction_checksum.clone().unwrap_or_default(),
        ];
        let _ = writeln!(csv, "{}", cells.join(","));
    }
    csv
}

/// Writes report.json, report.csv, the plots that apply (throughput.svg and loss.svg
/// for training, latency.svg for serving, hit_ratio.svg always) and report.html with
/// every table and plot inlined.
fn write_reports(config: &ExperimentConfig, results: &[SetupResult], dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::json!({ "config": config, "setups": results });
    let text = serde_json::to_string_pretty(&json).map_err(|e| ReportError::new(dir, e))?;
    report::write_file(&dir.join("report.json"), text.as_bytes())?;
    report::write_file(&dir.join("report.csv"), csv(results).as_bytes())?;
    let names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    let column = |value: &dyn Fn(&SetupResult) -> Option<f64>| results.iter().map(|r| value(r).unwrap_or(f64::NAN)).collect::<Vec<f64>>();
    let mut plots = Vec::new();
    let trained = results.iter().any(|r| r.outcome.is_some());
    let served = results.iter().any(|r| r.serving.is_some());
    if trained {
        report::plot_bars(
            &names,
            &[("samples/s".into(), column(&|r| r.samples_per_sec))],
            "Training throughput",
            "samples/s",
            &dir.join("throughput.svg"),
        )?;
        // Loss curves (the training loss, averaged over 10 steps) on one plot.
        let losses: Vec<(String, Vec<(f64, f64)>)> = results
            .iter()
            .filter_map(|r| r.outcome.as_ref().map(|o| (r, o)))
            .map(|(r, o)| {
                let points = o
                    .losses
                    .chunks(10)
                    .enumerate()
                    .map(|(i, c)| ((i * 10 + c.len()) as f64, f64::from(c.iter().sum::<f32>() / c.len() as f32)));
                (r.name.clone(), points.collect())
            })
            .collect();
        report::plot_series(&losses, "Training loss (mean of 10 steps)", "step", "loss", &dir.join("loss.svg"))?;
        plots.extend(["throughput.svg", "loss.svg"]);
    }
    if served {
        let series = [
            ("p50".to_string(), column(&|r| r.p50_us)),
            ("p95".to_string(), column(&|r| r.p95_us)),
            ("p99".to_string(), column(&|r| r.p99_us)),
        ];
        report::plot_bars(&names, &series, "Serving latency per request", "microseconds", &dir.join("latency.svg"))?;
        plots.push("latency.svg");
    }
    let mut hit_series = Vec::new();
    if trained {
        hit_series.push(("device (training)".to_string(), column(&|r| r.hit_ratio.device)));
        hit_series.push(("host (training)".to_string(), column(&|r| r.hit_ratio.host)));
    }
    if served {
        hit_series.push(("device (serving)".to_string(), column(&|r| r.serve_hit_ratio.device)));
        hit_series.push(("host (serving)".to_string(), column(&|r| r.serve_hit_ratio.host)));
    }
    report::plot_bars(&names, &hit_series, "Hit ratio per tier", "hit ratio", &dir.join("hit_ratio.svg"))?;
    plots.push("hit_ratio.svg");
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Strata experiment</title>");
    html.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>");
    html.push_str("<h1>Strata experiment</h1>");
    for table in summary_tables(results) {
        let _ = write!(html, "<h2>{}</h2><table><tr><th>{}</th></tr>", table.title, table.columns.join("</th><th>"));
        for row in &table.rows {
            let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
            let _ = write!(html, "<tr><td>{}</td></tr>", cells.join("</td><td>"));
        }
        html.push_str("</table>");
    }
    for svg in plots {
        let body = std::fs::read_to_string(dir.join(svg)).map_err(|e| ReportError::new(&dir.join(svg), e))?;
        let _ = write!(
            html,
            "<div>{}</div>",
            body.trim_start_matches(|c| c != '<').replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1)
        );
    }
    html.push_str("</body></html>\n");
    report::write_file(&dir.join("report.html"), html.as_bytes())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
