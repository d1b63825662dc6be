//! The training and serving loops: batches flow through the prefetch pipeline into the
//! tiered table's lookup, the DLRM's forward and backward, and the table's sparse
//! update, with periodic evaluation (log-loss and ROC AUC on held-out batches) and
//! checkpoints (a [`Checkpointer`]: the table's flush, or the experiment runner's
//! crash-safe ones); serving replays requests with no updates and reports exact latency
//! percentiles, queries/s and a checksum of every score. Training may publish versions
//! to serving replicas, and serving follow them (`super::publish`). A run is set up
//! with [`Training`] or [`Serving`] and started with their `run`.

use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize};

use super::dlrm::{Dlrm, ModelError};
use super::metrics::{log_loss, roc_auc};
use super::publish::{ReplicaFollower, TrainingPublisher};
use crate::engine::batch::Batch;
use crate::engine::grouped::Embeddings;
use crate::engine::prefetch::Prefetcher;
use crate::engine::stats::{percentile, EngineStats};
use crate::engine::EngineError;
use crate::progress::Progress;

/// What a [`Checkpointer`] returns when a checkpoint fails: its own error, whatever type
/// that is.
pub type CheckpointFailure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("batch at {start}: {what}")]
    Batch { start: u64, what: String },
    /// A checkpoint failed: the [`Checkpointer`]'s error.
    #[error(transparent)]
    Checkpoint(CheckpointFailure),
    /// A run that failed and whose table could not be flushed afterwards either (the
    /// store itself failed, or the flush did): the store holds what was written before.
    #[error("{error}; the table was not flushed: {flush}")]
    NotFlushed { error: Box<TrainError>, flush: String },
}

/// After a failed step, with the prefetch pipeline stopped: writes every dirty row down
/// as it stands and syncs, so that no trained row is lost, and returns `error`, saying
/// so when the flush failed too (a failed store refuses the flush: nothing more is
/// written to it).
fn flush_after(table: &mut dyn Embeddings, error: TrainError) -> TrainError {
    match table.flush() {
        Ok(()) => error,
        Err(EngineError::StoreFailed { .. }) => TrainError::NotFlushed { error: Box::new(error), flush: "the store failed".into() },
        Err(flush) => TrainError::NotFlushed { error: Box::new(error), flush: flush.to_string() },
    }
}

/// Log-loss and AUC on held-out batches after `step` training steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    pub step: u64,
    pub samples: u64,
    /// NaN (`null` in JSON) without held-out samples.
    #[serde(deserialize_with = "null_as_nan")]
    pub logloss: f64,
    /// `None` when the held-out labels hold one class only.
    pub auc: Option<f64>,
}

/// Reads `null` (how JSON writes NaN) back as NaN.
fn null_as_nan<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// The number of samples of a training batch, after checking it carries features.
fn check_features(batch: &Batch) -> Result<usize, TrainError> {
    let samples = batch.labels.len();
    let error = |what: String| TrainError::Batch { start: batch.start, what };
    if samples == 0 {
        return Err(error("no labels: training needs batches with features".into()));
    }
    if batch.dense.len() != samples * crate::data::CRITEO_DENSE_FEATURES {
        return Err(error(format!("{} dense values for {samples} samples", batch.dense.len())));
    }
    if !batch.bags().is_multiple_of(samples) {
        return Err(error(format!("{} bags do not split into {samples} samples", batch.bags())));
    }
    Ok(samples)
}

/// Scores `batches` (lookups without updates) and returns log-loss and AUC.
pub fn evaluate(model: &Dlrm, table: &mut dyn Embeddings, batches: &[Batch], step: u64) -> Result<Evaluation, TrainError> {
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    let mut pooled = Vec::new();
    for batch in batches {
        check_features(batch)?;
        pooled.resize(table.output_len(batch)?, 0.0);
        table.lookup(batch, &mut pooled)?;
        scores.extend(model.predict(&batch.dense, &pooled)?);
        labels.extend_from_slice(&batch.labels);
    }
    Ok(Evaluation {
        step,
        samples: labels.len() as u64,
        logloss: log_loss(&scores, &labels).unwrap_or(f64::NAN),
        auc: roc_auc(&scores, &labels),
    })
}

/// How a training run is scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Batches read ahead (0 = no prefetch).
    pub window: usize,
    /// Evaluate on the held-out batches every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Take a checkpoint ([`Checkpointer`]) every this many steps (0 = never).
    pub checkpoint_every: u64,
}

/// The training steps a run has done: where a resumed run starts from (its batches are
/// the stream after `steps` batches), and what a checkpoint records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainedSteps {
    pub steps: u64,
    pub samples: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Training loss of every step.
    pub losses: Vec<f32>,
    pub evaluations: Vec<Evaluation>,
}

/// What a checkpoint does, every `TrainOptions::checkpoint_every` steps.
pub trait Checkpointer {
    /// Makes the model and the table as they are after `done` durable; `done.checkpoints`
    /// counts this one.
    fn checkpoint(&mut self, model: &Dlrm, table: &mut dyn Embeddings, done: &TrainedSteps) -> Result<(), CheckpointFailure>;
}

/// The checkpoint of a run that cannot resume: the table's flush (every tier's dirty
/// rows to the store, then sync).
pub struct FlushTable;

impl Checkpointer for FlushTable {
    fn checkpoint(&mut self, _model: &Dlrm, table: &mut dyn Embeddings, _done: &TrainedSteps) -> Result<(), CheckpointFailure> {
        Ok(table.flush()?)
    }
}

/// What a training run did. A resumed run (`resumed_at` > 0) counts `steps`,
/// `samples`, `checkpoints`, `losses` and `evaluations` from the start of training; the
/// timings, `samples_per_sec`, `stall_seconds`, `checkpoint_seconds` and `engine` cover
/// the steps after `resumed_at` only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOutcome {
    pub steps: u64,
    pub samples: u64,
    /// Steps trained before this process started (from a checkpoint; 0 = from the start).
    pub resumed_at: u64,
    /// Seconds of training steps: evaluations and checkpoints excluded.
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Seconds the training steps waited for rows from the store (evaluation excluded).
    pub stall_seconds: f64,
    /// Checkpoints taken, and the seconds they took.
    pub checkpoints: u64,
    pub checkpoint_seconds: f64,
    /// Versions published to serving replicas (`[publish]`), and the seconds that took
    /// (left out of `seconds`, as checkpoints are).
    #[serde(default)]
    pub versions_published: u64,
    #[serde(default)]
    pub publish_seconds: f64,
    /// Where the training steps' time went.
    #[serde(default)]
    pub step_times: StepTimes,
    /// Training loss of every step.
    pub losses: Vec<f32>,
    pub evaluations: Vec<Evaluation>,
    /// What the engine did during training (evaluations and checkpoints included).
    pub engine: EngineStats,
    /// Training stopped early on a stop request ([`crate::interrupt`]): `steps` steps
    /// ran, and no final evaluation.
    pub interrupted: bool,
}

/// Where the training steps' time went, in seconds (evaluations, checkpoints and
/// publication left out, as in [`TrainOutcome::seconds`]); what is left of `seconds` is
/// the loop's own bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTimes {
    /// Taking the next batch from the batch thread and starting its rows' read-ahead.
    pub next_batch: f64,
    /// The engine's lookups and updates (placement, pooling, gradient sums, the sparse
    /// optimizer), waiting for rows from the store excluded.
    pub engine: f64,
    /// Waiting for rows from the store, in lookups and updates.
    pub waiting_for_rows: f64,
    /// The dense model: forward, backward and its optimizer step.
    pub dense: f64,
}

/// Whether a stop was requested ([`crate::interrupt`]), remembered in `interrupted`.
fn stop_requested(interrupted: &mut bool) -> bool {
    *interrupted = crate::interrupt::requested();
    *interrupted
}

/// A training run of `model` on `table`, set up step by step and started with
/// [`Training::run`]: by default with no held-out batches, `TrainOptions::default()`, a
/// hidden progress bar, from the first step, and [`FlushTable`] checkpoints.
pub struct Training<'a> {
    model: &'a mut Dlrm,
    table: &'a mut dyn Embeddings,
    held_out: &'a [Batch],
    options: TrainOptions,
    progress: Option<&'a Progress>,
    done: TrainedSteps,
    checkpointer: Option<&'a mut dyn Checkpointer>,
    publisher: Option<&'a mut TrainingPublisher>,
}

impl<'a> Training<'a> {
    pub fn new(model: &'a mut Dlrm, table: &'a mut dyn Embeddings) -> Self {
        Training {
            model,
            table,
            held_out: &[],
            options: TrainOptions::default(),
            progress: None,
            done: TrainedSteps::default(),
            checkpointer: None,
            publisher: None,
        }
    }

    /// The batches evaluated on (log-loss and AUC) every `options.eval_every` steps and
    /// at the end.
    pub fn held_out(mut self, held_out: &'a [Batch]) -> Self {
        self.held_out = held_out;
        self
    }

    pub fn options(mut self, options: TrainOptions) -> Self {
        self.options = options;
        self
    }

    /// Advanced once per step.
    pub fn progress(mut self, progress: &'a Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A resumed run: goes on after the steps `done`, with `model` and `table` as at its
    /// checkpoint and the batches given to `run` the stream after its `done.steps`
    /// batches.
    pub fn resumed_after(mut self, done: TrainedSteps) -> Self {
        self.done = done;
        self
    }

    /// Takes the checkpoints (instead of [`FlushTable`]).
    pub fn checkpointer(mut self, checkpointer: &'a mut dyn Checkpointer) -> Self {
        self.checkpointer = Some(checkpointer);
        self
    }

    /// Publishes versions of the rows and dense parameters as it says, and after the
    /// last step (not after a stop request).
    pub fn publisher(mut self, publisher: &'a mut TrainingPublisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Trains on `batches` (served `options.window` batches behind the source, with
    /// read-ahead), evaluating and checkpointing as the options say. Stops before the next
    /// step when [`crate::interrupt`] requests it (`interrupted` in the outcome; the
    /// caller flushes). On an error the pipeline's threads are stopped and joined and the
    /// table flushed before it returns.
    pub fn run(mut self, batches: impl Iterator<Item = Batch> + Send + 'static) -> Result<TrainOutcome, TrainError> {
        // `train_steps` has dropped its prefetcher (joined the source thread) when it returns.
        self.train_steps(batches).map_err(|error| flush_after(self.table, error))
    }

    fn train_steps(&mut self, batches: impl Iterator<Item = Batch> + Send + 'static) -> Result<TrainOutcome, TrainError> {
        let (model, table, held_out, options) = (&mut *self.model, &mut *self.table, self.held_out, self.options);
        let mut publisher = self.publisher.as_deref_mut();
        let hidden = Progress::hidden();
        let progress = self.progress.unwrap_or(&hidden);
        let mut flush = FlushTable;
        let checkpointer: &mut dyn Checkpointer = match &mut self.checkpointer {
            Some(checkpointer) => &mut **checkpointer,
            None => &mut flush,
        };
        let before = table.stats();
        let mut prefetcher = Prefetcher::new(batches, options.window);
        let mut done = std::mem::take(&mut self.done);
        let (resumed_at, resumed_samples) = (done.steps, done.samples);
        let mut pooled = Vec::new();
        let (mut eval_seconds, mut eval_stall) = (0.0, 0.0);
        let mut checkpoint_seconds = 0.0;
        let mut publish_seconds = 0.0;
        let mut interrupted = false;
        let mut times = StepTimes::default();
        let start = Instant::now();
        while !stop_requested(&mut interrupted) {
            let began = Instant::now();
            let Some(batch) = prefetcher.next(|b| table.prefetch(b))? else { break };
            done.samples += check_features(&batch)? as u64;
            pooled.resize(table.output_len(&batch)?, 0.0);
            let (looked_up, stalled) = (Instant::now(), table.stall_seconds());
            table.lookup(&batch, &mut pooled)?;
            let trained = Instant::now();
            let step = model.train_step(&batch.dense, &pooled, &batch.labels)?;
            let updated = Instant::now();
            table.apply_gradients(&batch, &step.embedding_grad)?;
            let waited = table.stall_seconds() - stalled;
            times.next_batch += (looked_up - began).as_secs_f64();
            times.dense += (updated - trained).as_secs_f64();
            times.engine += (trained - looked_up).as_secs_f64() + updated.elapsed().as_secs_f64() - waited;
            times.waiting_for_rows += waited;
            done.losses.push(step.loss);
            done.steps += 1;
            let steps = done.steps;
            progress.advance(1);
            tracing::debug!("step {steps}: loss {}", step.loss);
            if options.eval_every > 0 && steps.is_multiple_of(options.eval_every) && !held_out.is_empty() {
                let (began, stalled) = (Instant::now(), table.stats().stall_seconds);
                done.evaluations.push(evaluate(model, table, held_out, steps)?);
                eval_stall += table.stats().stall_seconds - stalled;
                eval_seconds += began.elapsed().as_secs_f64();
            }
            if options.checkpoint_every > 0 && steps.is_multiple_of(options.checkpoint_every) {
                let began = Instant::now();
                done.checkpoints += 1;
                checkpointer.checkpoint(model, table, &done).map_err(TrainError::Checkpoint)?;
                checkpoint_seconds += began.elapsed().as_secs_f64();
            }
            if let Some(publisher) = publisher.as_deref_mut() {
                publisher.record(&batch);
                if publisher.due(steps) {
                    let began = Instant::now();
                    publisher.publish(model, table, steps)?;
                    publish_seconds += began.elapsed().as_secs_f64();
                }
            }
        }
        let mut publisher_versions = 0;
        if let Some(publisher) = publisher {
            if !interrupted {
                let began = Instant::now();
                publisher.publish(model, table, done.steps)?;
                publish_seconds += began.elapsed().as_secs_f64();
            }
            publisher_versions = publisher.published().len() as u64;
        }
        let training_seconds = (start.elapsed().as_secs_f64() - eval_seconds - checkpoint_seconds - publish_seconds).max(0.0);
        let stall_seconds = table.stats().stall_seconds - before.stall_seconds - eval_stall;
        if !interrupted && !held_out.is_empty() && done.evaluations.last().map(|e| e.step) != Some(done.steps) {
            done.evaluations.push(evaluate(model, table, held_out, done.steps)?);
        }
        Ok(TrainOutcome {
            steps: done.steps,
            samples: done.samples,
            resumed_at,
            seconds: training_seconds,
            samples_per_sec: (done.samples - resumed_samples) as f64 / training_seconds.max(1e-9),
            stall_seconds,
            checkpoints: done.checkpoints,
            checkpoint_seconds,
            versions_published: publisher_versions,
            publish_seconds,
            step_times: times,
            losses: done.losses,
            evaluations: done.evaluations,
            engine: table.stats().since(&before),
            interrupted,
        })
    }
}

/// How a serving run is scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Requests read ahead (0 = no prefetch).
    pub window: usize,
    /// Requests served first and left out of every measurement (but not the checksum).
    pub warmup: u64,
}

/// What a serving run did: queries are samples, latency is per request. Every figure
/// but `prediction_checksum` and `warmup_requests` covers the measured requests only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOutcome {
    pub warmup_requests: u64,
    pub requests: u64,
    pub queries: u64,
    pub seconds: f64,
    pub queries_per_sec: f64,
    /// Latency percentiles (nearest rank) and mean, in microseconds. A request's
    /// latency runs from the moment the loop takes it up (before the prefetcher hands it
    /// over) to its scores, so every wait for its rows is in it.
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Seconds the requests waited for rows from the store.
    pub stall_seconds: f64,
    /// Rows each measured request read from the store, in order.
    #[serde(default)]
    pub store_rows: Vec<u64>,
    /// The store's measured random-read rate while serving, at the queue depth the
    /// requests' reads had: rows read over the seconds the storage thread spent reading
    /// them (0 when nothing was read).
    #[serde(default)]
    pub store_rows_per_sec: f64,
    /// The I/O floor of the requests (nearest-rank percentiles, microseconds): each
    /// request's store rows at `store_rows_per_sec`, the time the store alone needs for
    /// them. 0 when nothing was read.
    #[serde(default)]
    pub io_floor_p50_us: f64,
    #[serde(default)]
    pub io_floor_p95_us: f64,
    #[serde(default)]
    pub io_floor_p99_us: f64,
    /// A hash of every score of every request (warm-up included), in order, as 16 hex
    /// digits: equal across set-ups exactly when every prediction is bit-identical.
    pub prediction_checksum: String,
    /// The latency of each measured request, in order (microseconds).
    pub latencies_us: Vec<f64>,
    /// What the engine did while serving the measured requests.
    pub engine: EngineStats,
    /// Serving stopped early on a stop request ([`crate::interrupt`]).
    pub interrupted: bool,
}

/// A serving run of `model` on `table`, set up step by step and started with
/// [`Serving::run`]: by default with `ServeOptions::default()` and a hidden progress bar.
pub struct Serving<'a> {
    model: &'a mut Dlrm,
    table: &'a mut dyn Embeddings,
    options: ServeOptions,
    progress: Option<&'a Progress>,
    follower: Option<&'a mut ReplicaFollower>,
}

impl<'a> Serving<'a> {
    pub fn new(model: &'a mut Dlrm, table: &'a mut dyn Embeddings) -> Self {
        Serving { model, table, options: ServeOptions::default(), progress: None, follower: None }
    }

    /// A replica: between requests, takes in the versions `follower` finds published
    /// (changed rows and dense parameters), as often as it says. A request's latency
    /// does not include the poll before it.
    pub fn follower(mut self, follower: &'a mut ReplicaFollower) -> Self {
        self.follower = Some(follower);
        self
    }

    pub fn options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// Advanced once per request.
    pub fn progress(mut self, progress: &'a Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Replays `requests` (small batches) through lookup and prediction, no updates.
    /// Stops and fails as [`Training::run`] does.
    pub fn run(mut self, requests: impl Iterator<Item = Batch> + Send + 'static) -> Result<ServeOutcome, TrainError> {
        // `serve_requests` has dropped its prefetcher (joined the source thread) when it returns.
        self.serve_requests(requests).map_err(|error| flush_after(self.table, error))
    }

    fn serve_requests(&mut self, requests: impl Iterator<Item = Batch> + Send + 'static) -> Result<ServeOutcome, TrainError> {
        let (model, table, options) = (&mut *self.model, &mut *self.table, self.options);
        let mut follower = self.follower.as_deref_mut();
        let hidden = Progress::hidden();
        let progress = self.progress.unwrap_or(&hidden);
        let mut prefetcher = Prefetcher::new(requests, options.window);
        let mut latencies_us = Vec::new();
        let mut store_rows = Vec::new();
        let mut checksum = CHECKSUM_SEED;
        let (mut served, mut queries) = (0u64, 0u64);
        let mut pooled = Vec::new();
        let (mut before, mut rows_before, mut start) = (table.stats(), table.store_rows_read(), Instant::now());
        let mut interrupted = false;
        while !stop_requested(&mut interrupted) {
            if served == options.warmup {
                (before, rows_before, start) = (table.stats(), table.store_rows_read(), Instant::now());
            }
            if let Some(follower) = follower.as_deref_mut() {
                follower.between_requests(served, model, table)?;
            }
            let (taken_up, read_before) = (Instant::now(), table.store_rows_read());
            let Some(batch) = prefetcher.next(|b| table.prefetch(b))? else { break };
            let samples = check_features(&batch)? as u64;
            pooled.resize(table.output_len(&batch)?, 0.0);
            table.lookup(&batch, &mut pooled)?;
            let scores = model.predict(&batch.dense, &pooled)?;
            let latency = taken_up.elapsed();
            for score in scores {
                checksum = crate::hash::mix64(checksum ^ u64::from(score.to_bits()));
            }
            if served >= options.warmup {
                latencies_us.push(latency.as_secs_f64() * 1e6);
                store_rows.push(table.store_rows_read() - read_before);
                queries += samples;
            }
            served += 1;
            progress.advance(1);
        }
        let seconds = if served > options.warmup { start.elapsed().as_secs_f64() } else { 0.0 };
        let engine = if served > options.warmup { table.stats().since(&before) } else { EngineStats::default() };
        let mut sorted = latencies_us.clone();
        sorted.sort_by(f64::total_cmp);
        let rows_read = if served > options.warmup { table.store_rows_read() - rows_before } else { 0 };
        let store_rows_per_sec = if engine.store_read_seconds > 0.0 { rows_read as f64 / engine.store_read_seconds } else { 0.0 };
        let mut floors: Vec<f64> =
            store_rows.iter().map(|&rows| if store_rows_per_sec > 0.0 { rows as f64 / store_rows_per_sec * 1e6 } else { 0.0 }).collect();
        floors.sort_by(f64::total_cmp);
        Ok(ServeOutcome {
            warmup_requests: served.min(options.warmup),
            requests: latencies_us.len() as u64,
            queries,
            seconds,
            queries_per_sec: queries as f64 / seconds.max(1e-9),
            p50_us: percentile(&sorted, 0.50),
            p95_us: percentile(&sorted, 0.95),
            p99_us: percentile(&sorted, 0.99),
            max_us: sorted.last().copied().unwrap_or(0.0),
            mean_us: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
            stall_seconds: engine.stall_seconds,
            store_rows,
            store_rows_per_sec,
            io_floor_p50_us: percentile(&floors, 0.50),
            io_floor_p95_us: percentile(&floors, 0.95),
            io_floor_p99_us: percentile(&floors, 0.99),
            prediction_checksum: format!("{checksum:016x}"),
            latencies_us,
            engine,
            interrupted,
        })
    }
}

const CHECKSUM_SEED: u64 = 0x5354_5241_5441_5343;
