//! Running an experiment's set-ups one after the other: the data opened once, then per
//! set-up its table built (or restored from its latest checkpoint), preloaded, trained
//! and served as configured, with crash-safe checkpoints, and the reports written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::{copy_rows, CheckpointError, Manifest, RunFolder, SetupCheckpoints};
use super::{ExperimentConfig, ExperimentError, ServeSpec, SetupSpec};
use crate::config::ConfigError;
use crate::data::{BatchStream, DataError, Rebatch};
use crate::engine::batch::Batch;
use crate::engine::collection::TableGroup;
use crate::engine::flat::FlatTable;
use crate::engine::grouped::{Embeddings, GroupedTable};
use crate::engine::storage::remote::{Publisher, RedisStore};
use crate::engine::storage::{BackingStore, FileCached, ReadConfig, StorageError, TableFile};
use crate::engine::table::config::TableConfig;
use crate::engine::table::TieredTable;
use crate::engine::{EngineError, RowInit, RowLayout};
use crate::model::publish::TrainingPublisher;
use crate::model::train::{ServeOptions, ServeOutcome, Serving, TrainError, TrainOptions, TrainOutcome, TrainedSteps, Training};
use crate::model::{Dlrm, ModelError};
use crate::plan::config::RowSpec;
use crate::plan::serving::ServingWorkload;
use crate::progress::Progress;
use crate::report::experiment::{markdown, write_reports, SetupResult};
use crate::report::ReportError;

/// What failed in one set-up (reported as "setup `NAME`: ...").
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The training, held-out or serving data could not be opened or read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A training batch could not be read: the stream ended before it.
    #[error("batch at {start}: {source}")]
    Read {
        start: u64,
        #[source]
        source: DataError,
    },
    /// The folder of the table file could not be created.
    #[error("{}: {source}", path.display())]
    TableFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Building the model, or loading its state from a checkpoint.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Creating or opening the table file.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Building, preloading or flushing the table.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Restoring the table of a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Training or serving.
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// The data and the stores of an experiment, as its set-ups use them.
impl ExperimentConfig {
    /// The training batches; a read error ends them and waits in `failure()`.
    fn batches(&self) -> Result<BatchStream, DataError> {
        self.data.source().train(self.data.batch_size, self.data.train_batches)
    }

    fn held_out(&self) -> Result<Vec<Batch>, DataError> {
        let data = &self.data;
        data.source().held_out(data.batch_size, data.train_batches, data.eval_batches)
    }

    /// The serving requests (warm-up first): the held-out stream after its
    /// `eval_batches` batches (for the synthetic source, the stream after the training
    /// and held-out batches), cut into requests of `[serve] batch_size` samples. Held in
    /// memory, so that a request's latency never includes generating it.
    pub(super) fn requests(&self, serve: &ServeSpec) -> Result<Vec<Batch>, DataError> {
        let data = &self.data;
        let requests = serve.warmup + serve.requests;
        let batches = (requests * serve.batch_size as u64).div_ceil(data.batch_size as u64);
        let stream = data.source().held_out(data.batch_size, data.train_batches, data.eval_batches + batches)?;
        Ok(Rebatch::new(stream.into_iter().skip(data.eval_batches as usize), serve.batch_size).take(requests as usize).collect())
    }

    /// The requests of `[serve]` as the serving planner replays them (`strata plan` of
    /// a serving plan): each request's rows, the warm-up, the table's rows and row shape.
    pub fn serving_workload(&self, serve: &ServeSpec) -> Result<ServingWorkload, DataError> {
        let requests = self.requests(serve)?.into_iter().map(|batch| batch.ids).collect();
        let (layout, _) = self.row_layout();
        Ok(ServingWorkload {
            description: format!("the `[serve]` requests of {} samples", serve.batch_size),
            requests,
            warmup: serve.warmup as usize,
            table_rows: self.rows(),
            rows: RowSpec { dim: layout.dim, dtype: layout.dtype, optimizer: self.engine.optimizer },
        })
    }

    fn read_config(&self) -> ReadConfig {
        ReadConfig { read_path: self.engine.read_path, on_io_error: self.engine.on_io_error, ..ReadConfig::default() }
    }

    /// The layout of table group `g`'s rows and their initial values (uniform from
    /// `init_seed + g`: with one group, every row from `init_seed`).
    fn group_rows(&self, g: usize, group: &TableGroup) -> (RowLayout, RowInit) {
        let layout = RowLayout::new(group.dim, &self.engine.optimizer).with_dtype(group.dtype);
        (layout, RowInit::Uniform { seed: self.engine.init_seed.wrapping_add(g as u64), scale: self.engine.init_scale })
    }

    /// The layout and initial values of the rows where the tables share one dim (the
    /// config's checks allow remote tables, publishing and serving plans only then).
    pub(super) fn row_layout(&self) -> (RowLayout, RowInit) {
        let dim = self.model.embedding_dim.single().unwrap_or_default();
        let layout = RowLayout::new(dim, &self.engine.optimizer).with_dtype(self.engine.weights_precision);
        (layout, RowInit::Uniform { seed: self.engine.init_seed, scale: self.engine.init_scale })
    }

    /// A fresh store per table group holding its initial rows.
    fn stores(&self, groups: &[TableGroup]) -> Result<Vec<Box<dyn BackingStore>>, SetupError> {
        if let Some(remote) = &self.engine.remote {
            let (layout, init) = self.row_layout();
            let store = Box::new(RedisStore::create(remote, self.rows(), layout, init).map_err(EngineError::from)?);
            return Ok(vec![self.file_cached(store)?]);
        }
        let mut stores: Vec<Box<dyn BackingStore>> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let (layout, init) = self.group_rows(g, group);
            stores.push(match &self.engine.table_file {
                Some(path) => {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir).map_err(|source| SetupError::TableFolder { path: dir.to_path_buf(), source })?;
                    }
                    let path = group_file(path, group, groups.len());
                    drop(TableFile::create(&path, group.rows, layout, init)?);
                    Box::new(TableFile::open_with(&path, self.read_config())?)
                }
                None => Box::new(FlatTable::new(group.rows, layout, init)),
            });
        }
        Ok(stores)
    }

    /// The store of a set-up resumed from a checkpoint whose rows `restored` holds: a
    /// remote table is created again and given those rows (a checkpoint keeps the rows of
    /// a store without a file in a snapshot in the run folder); any other store as it is.
    fn restored(&self, mut restored: Box<dyn BackingStore>) -> Result<Box<dyn BackingStore>, SetupError> {
        let Some(remote) = &self.engine.remote else { return Ok(restored) };
        let (_, init) = self.row_layout();
        let mut store = RedisStore::create(remote, restored.rows(), restored.layout(), init).map_err(EngineError::from)?;
        copy_rows(&mut *restored, &mut store)?;
        self.file_cached(Box::new(store))
    }

    /// `remote` behind a fresh, empty file cache where the config has one.
    fn file_cached(&self, remote: Box<dyn BackingStore>) -> Result<Box<dyn BackingStore>, SetupError> {
        let Some(spec) = &self.engine.file_cache else { return Ok(remote) };
        let (slots, policy) = spec.resolve(remote.rows()).expect("checked when the config was parsed");
        if let Some(dir) = spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SetupError::TableFolder { path: dir.to_path_buf(), source })?;
        }
        drop(TableFile::create(&spec.path, slots, remote.layout(), RowInit::Zeros)?);
        let cache = TableFile::open_with(&spec.path, self.read_config())?;
        Ok(Box::new(FileCached::new(cache, remote, &policy)?))
    }
}

/// The table file of `group`: `path` itself when it is the only group, else
/// `path` with the group's name after its stem (`table-dim64-sum.strata`).
fn group_file(path: &Path, group: &TableGroup, groups: usize) -> PathBuf {
    if groups == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    let extension = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}-{}{extension}", group.name))
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
    let first_fail = |error: DataError| setup_error(&config.setups[0], error.into());
    let held_out = config.held_out().map_err(first_fail)?;
    let requests: Option<Arc<[Batch]>> = match &config.serve {
        Some(spec) => Some(config.requests(spec).map_err(first_fail)?.into()),
        None => None,
    };
    let mut results = Vec::new();
    for (index, setup) in config.setups.iter().enumerate() {
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
        let groups = config.table_groups().map_err(|e| ConfigError::new(dir, e))?;
        let tiers = |group: &TableGroup| setup.table_config(&config.engine, group, rows).map_err(|m| ConfigError::new(dir, m));
        let table_configs = groups.iter().map(tiers).collect::<Result<_, _>>()?;
        let run = SetupRun { config, setup, groups, table_configs, held_out: &held_out, requests: requests.as_ref() };
        let (training, serving) = run.run(&mut checkpoints, manifest.as_ref()).map_err(|error| setup_error(setup, error))?;
        let stopped = match (&training, &serving) {
            (Some(t), _) if t.interrupted => Some(("step", t.steps)),
            (_, Some(s)) if s.interrupted => Some(("request", s.warmup_requests + s.requests)),
            _ => None,
        };
        let result = SetupResult::new(&setup.name, training, serving);
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

pub(super) fn setup_error(setup: &SetupSpec, error: SetupError) -> ExperimentError {
    ExperimentError::Setup { setup: setup.name.clone(), error: Box::new(error) }
}

/// One set-up's part of an experiment, with what its set-ups share: the held-out batches
/// and the serving requests.
struct SetupRun<'a> {
    config: &'a ExperimentConfig,
    setup: &'a SetupSpec,
    /// The table groups and each one's tiers.
    groups: Vec<TableGroup>,
    table_configs: Vec<TableConfig>,
    held_out: &'a [Batch],
    requests: Option<&'a Arc<[Batch]>>,
}

impl SetupRun<'_> {
    /// With `[publish]`: the published table created afresh (version 0: the initial
    /// rows), or, for a run resumed from a checkpoint, opened to go on after its last
    /// version with every row in the next one (the checkpoint may be behind what was
    /// published).
    fn publisher(&self, resumed: bool) -> Result<Option<TrainingPublisher>, SetupError> {
        let Some(spec) = &self.config.publish else { return Ok(None) };
        let (layout, init) = self.config.row_layout();
        let rows = self.config.rows();
        let create = || Publisher::create(&spec.cluster, rows, layout, init);
        let publisher = match resumed {
            // Nothing was published before the stop: start afresh.
            true => Publisher::open(&spec.cluster).or_else(|_| create()),
            false => create(),
        }
        .map_err(EngineError::from)?;
        Ok(Some(TrainingPublisher::new(publisher, rows, spec.every, resumed)))
    }

    /// Builds the model and the table (restored from `manifest`, the latest committed
    /// checkpoint, when resuming), preloads, trains with `checkpoints` and serves as
    /// configured, and flushes the table; a stop request skips serving.
    fn run(
        &self,
        checkpoints: &mut SetupCheckpoints,
        manifest: Option<&Manifest>,
    ) -> Result<(Option<TrainOutcome>, Option<ServeOutcome>), SetupError> {
        let (config, setup) = (self.config, self.setup);
        let mut model = Dlrm::new(&config.model, crate::data::CRITEO_CARDINALITIES.len())?;
        let stores = match manifest {
            Some(manifest) => {
                let stores = checkpoints.open_stores(manifest, config.read_config())?;
                stores.into_iter().map(|store| config.restored(store)).collect::<Result<_, _>>()?
            }
            None => config.stores(&self.groups)?,
        };
        if stores.len() != self.groups.len() {
            let what = format!("{} table stores for {} table groups", stores.len(), self.groups.len());
            return Err(EngineError::Groups(what).into());
        }
        let mut parts = Vec::new();
        for ((group, store), tiers) in self.groups.iter().zip(stores).zip(&self.table_configs) {
            parts.push((group.clone(), TieredTable::new(tiers, store)?));
        }
        let mut table = GroupedTable::new(parts)?;
        let done = match manifest {
            Some(manifest) => {
                eprintln!("resuming `{}` from checkpoint {} (step {})", setup.name, manifest.checkpoint, manifest.steps);
                model.load_state(&checkpoints.dir().join(&manifest.dense_state))?;
                for part in table.parts_mut() {
                    part.protect_checkpoint(manifest.checkpoint)?;
                }
                manifest.trained_steps()
            }
            None => TrainedSteps::default(),
        };
        if setup.preload {
            eprintln!("preloading `{}`", setup.name);
            table.parts_mut().into_iter().try_for_each(preload)?;
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
                let batches = config.batches()?;
                let failure = batches.failure();
                let batches = batches.skip(done.steps as usize);
                let mut publisher = self.publisher(manifest.is_some())?;
                let mut training = Training::new(&mut model, &mut table)
                    .held_out(self.held_out)
                    .options(options)
                    .progress(&progress)
                    .resumed_after(done)
                    .checkpointer(checkpoints);
                if let Some(publisher) = publisher.as_mut() {
                    training = training.publisher(publisher);
                }
                let outcome = training.run(batches)?;
                progress.finish();
                if let Some((start, source)) = failure.take() {
                    return Err(SetupError::Read { start, source });
                }
                Some(outcome)
            }
        };
        let serving = match (&config.serve, self.requests) {
            (Some(spec), Some(requests)) if !training.as_ref().is_some_and(|t| t.interrupted) => {
                eprintln!("serving `{}`", setup.name);
                let progress = Progress::new(format!("serving `{}`", setup.name), Some(requests.len() as u64));
                let stream = {
                    let requests = Arc::clone(requests);
                    (0..requests.len()).map(move |i| requests[i].clone())
                };
                let options = ServeOptions { window: setup.window, warmup: spec.warmup };
                let outcome = Serving::new(&mut model, &mut table).options(options).progress(&progress).run(stream)?;
                progress.finish();
                Some(outcome)
            }
            _ => None,
        };
        table.flush()?;
        Ok((training, serving))
    }
}
