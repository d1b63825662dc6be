//! The experiment config (`strata run CONFIG` with a `[model]` section): the data, the
//! model, where the table lives, the placement set-ups to compare and the serving run;
//! parsed from TOML (or read back from a run's folder) and checked, every set-up built
//! on paper, before any work starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfig;

use super::ExperimentError;
use crate::config::{parse_toml, ConfigError, OutputSpec, PerTable};
use crate::data::{CriteoTsvSpec, DataSource, MlperfNumpySpec, SyntheticConfig};
use crate::engine::collection::{EmbeddingTableConfig, TableGroup};
use crate::engine::device::DeviceKind;
use crate::engine::placement::Hierarchy;
use crate::engine::pool::Pooling;
use crate::engine::storage::remote::RemoteConfig;
use crate::engine::storage::{FileCached, OnIoError, ReadPath};
use crate::engine::table::config::{TableConfig, TierConfig};
use crate::engine::{Dtype, Optimizer, Rounding};
use crate::model::ModelConfig;
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
    /// `[publish]`: training publishes versions of its rows to a Redis Cluster, which
    /// `strata serve` replicas of this config follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSpec>,
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
    /// `strata serve`: requests between two polls of the update stream.
    #[serde(default = "default_follow_every")]
    pub follow_every: u64,
}

fn default_follow_every() -> u64 {
    10
}

/// `[publish]`: where training publishes its versions, and how often.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// Publish every this many steps (and after the last one).
    pub every: u64,
    /// `[publish.cluster]`: the published table (its fields as `[engine.remote]`'s).
    pub cluster: RemoteConfig,
}

/// Where the table lives and how its rows are updated.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    pub optimizer: Optimizer,
    /// `sum` or `mean`: one for every table, or one per table.
    #[serde(default = "sum")]
    pub pooling: PerTable<Pooling>,
    /// Initial rows: uniform in [-init_scale, init_scale) from `init_seed`.
    pub init_scale: f32,
    #[serde(default)]
    pub init_seed: u64,
    /// A table file (created for each set-up, from the same init) or, when absent (and
    /// with no `remote`), an in-memory store.
    pub table_file: Option<PathBuf>,
    /// `[engine.remote]`: the table in a Redis Cluster (created for each set-up, from
    /// the same init) as the bottom tier, in place of `table_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteConfig>,
    /// `[engine.file_cache]`: a local file caching rows of the remote table (only with
    /// `[engine.remote]`), between the host tier and the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_cache: Option<FileCacheSpec>,
    #[serde(default = "default_read_path")]
    pub read_path: ReadPath,
    /// What a failed page read or write does: `"stop"` the run, or `{ retry = N }`.
    #[serde(default)]
    pub on_io_error: OnIoError,
    #[serde(default)]
    pub device_backend: DeviceKind,
    /// How the table stores its values: `"f32"`, or `"f16"` / `"bf16"` at half the
    /// bytes (FBGEMM's `weights_precision`); computed in f32 either way.
    #[serde(default)]
    pub weights_precision: Dtype,
    /// How updates are written into half-precision rows: `"nearest"` (even) or
    /// `"stochastic"` (FBGEMM's `stochastic_rounding`).
    #[serde(default)]
    pub rounding: Rounding,
}

/// `[engine.file_cache]`: a table file of its own on local NVMe holding some of the
/// remote table's rows (created for each set-up, empty).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheSpec {
    pub path: PathBuf,
    /// Below 1 a fraction of the rows, from 1 a number of rows.
    pub size: f64,
    /// Which rows it keeps (names as `strata simulate --policies`; none that needs the
    /// future).
    #[serde(default = "lru")]
    pub policy: String,
}

impl FileCacheSpec {
    /// The cache's rows for a table of `rows` rows, and its policy.
    pub fn resolve(&self, rows: u64) -> Result<(u64, PolicyConfig), String> {
        let capacity = Capacity::try_from(self.size).map_err(|e| format!("size: {e}"))?;
        let slots = capacity.rows(rows).min(rows);
        if slots == 0 {
            return Err(format!("size: {} holds no row of the {rows}", self.size));
        }
        let policy = PolicyConfig::from_name(&self.policy).map_err(|e| format!("policy: {e}"))?;
        FileCached::check_policy(&policy)?;
        Ok((slots, policy))
    }
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

fn sum() -> PerTable<Pooling> {
    Pooling::Sum.into()
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

impl SetupSpec {
    /// Rows of a size given as a fraction (below 1) or a number of rows (from 1).
    /// Of a table group of `group_rows` of the `rows` rows: its share (in proportion to
    /// its rows, rounded up) of the rows that size gives.
    fn rows_of(&self, what: &str, size: f64, group_rows: u64, rows: u64) -> Result<usize, String> {
        if size == 0.0 {
            return Ok(0);
        }
        let capacity = Capacity::try_from(size).map_err(|e| format!("setup `{}`: {what}: {e}", self.name))?;
        let all = capacity.rows(rows).min(rows);
        Ok((u128::from(all) * u128::from(group_rows)).div_ceil(u128::from(rows.max(1))) as usize)
    }

    fn tier(&self, tier: &str, size: f64, policy: &Option<String>, group_rows: u64, rows: u64) -> Result<TierConfig, String> {
        let name = policy.as_deref().unwrap_or(&self.policy);
        let policy = PolicyConfig::from_name(name).map_err(|e| format!("setup `{}`: {tier} policy: {e}", self.name))?;
        Ok(TierConfig::rows(self.rows_of(tier, size, group_rows, rows)?, policy))
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
    pub(super) fn parse_saved(path: &Path, json: &str) -> Result<ExperimentConfig, ExperimentError> {
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
        let groups = config.table_groups().map_err(error)?;
        if groups.len() > 1 {
            let several = "holds rows of one width and pooling; tables of several embedding_dim or pooling are not supported there yet";
            if config.engine.remote.is_some() {
                return Err(error(format!("engine.remote: a remote table {several}")).into());
            }
            if config.publish.is_some() {
                return Err(error(format!("publish: a published table {several}")).into());
            }
        }
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
        if let Some(remote) = &config.engine.remote {
            if config.engine.table_file.is_some() {
                return Err(error("engine: give table_file or [engine.remote], not both".into()).into());
            }
            remote.validate().map_err(|e| error(format!("engine.remote: {e}")))?;
        }
        if let Some(cache) = &config.engine.file_cache {
            if config.engine.remote.is_none() {
                return Err(error("engine.file_cache: a file cache sits in front of [engine.remote]; give that too".into()).into());
            }
            cache.resolve(config.rows()).map_err(|e| error(format!("engine.file_cache: {e}")))?;
        }
        if let Some(publish) = &config.publish {
            if publish.every == 0 {
                return Err(error("publish: every must be at least 1 (steps between two versions)".into()).into());
            }
            publish.cluster.validate().map_err(|e| error(format!("publish.cluster: {e}")))?;
        }
        if config.serve.as_ref().is_some_and(|serve| serve.follow_every == 0) {
            return Err(error("serve: follow_every must be at least 1 (requests between two polls)".into()).into());
        }
        if config.setups.is_empty() {
            return Err(error("give at least one [[setup]]".into()).into());
        }
        let rows = config.rows();
        for setup in &config.setups {
            for group in &groups {
                let table = setup.table_config(&config.engine, group, rows).map_err(error)?;
                if setup.preload && (table.host.rows as u64) < group.rows {
                    return Err(error(format!(
                        "setup `{}`: preload needs a host tier holding every row ({} rows of table group `{}`; host = {} holds {})",
                        setup.name, group.rows, group.name, setup.host, table.host.rows
                    ))
                    .into());
                }
            }
        }
        Ok(config)
    }

    /// Rows of the table (all 26 tables).
    pub fn rows(&self) -> u64 {
        self.data.source().layout().total_rows()
    }

    /// The tables grouped by dim and pooling as the engine stores and tiers them: one
    /// group when they share one `embedding_dim` and `pooling` (the tables' rows
    /// numbered as the data numbers them), else one per pair ([`crate::engine::grouped`]).
    pub fn table_groups(&self) -> Result<Vec<TableGroup>, String> {
        let layout = self.data.source().layout();
        let tables = layout.tables();
        let dims = self.model.dims(tables).map_err(|e| e.to_string())?;
        let poolings =
            self.engine.pooling.of(tables).map_err(|given| {
                format!("engine.pooling gives {given} poolings for {tables} tables: give one for all, or one per table")
            })?;
        let tables: Vec<EmbeddingTableConfig> = layout
            .rows()
            .iter()
            .zip(dims.into_iter().zip(poolings))
            .enumerate()
            .map(|(t, (&rows, (dim, pooling)))| EmbeddingTableConfig {
                name: format!("t{t}"),
                rows,
                dim,
                pooling,
                features: vec![format!("t{t}")],
                init_scale: self.engine.init_scale,
                dtype: self.engine.weights_precision,
            })
            .collect();
        Ok(TableGroup::of(&tables))
    }
}

impl SetupSpec {
    /// The tiers of table `group` of the experiment's `rows` rows: its share of each
    /// size (all of it with one group).
    pub(super) fn table_config(&self, engine: &EngineSpec, group: &TableGroup, rows: u64) -> Result<TableConfig, String> {
        let group_rows = group.rows;
        Ok(TableConfig {
            device: self.tier("device", self.device, &self.device_policy, group_rows, rows)?,
            device_backend: engine.device_backend,
            host: self.tier("host", self.host, &self.host_policy, group_rows, rows)?,
            hierarchy: self.hierarchy,
            optimizer: engine.optimizer,
            pooling: group.pooling,
            write_buffer_rows: self.rows_of("write_buffer", self.write_buffer, group_rows, rows)?,
            rounding: engine.rounding,
        })
    }
}
