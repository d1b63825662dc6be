//! The training and serving loops: batches flow through the prefetch pipeline into the
//! tiered table's lookup, the DLRM's forward and backward, and the table's sparse
//! update; evaluation reports log-loss and ROC AUC on held-out batches; serving replays
//! requests with no updates and reports latency percentiles.

use std::time::Instant;

use serde::Serialize;

use super::dlrm::{Dlrm, ModelError};
use super::metrics::{log_loss, roc_auc};
use crate::engine::prefetch::Prefetcher;
use crate::engine::stats::{EngineStats, LatencyHistogram};
use crate::engine::table::{Batch, TieredTable};
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("batch at {start}: {what}")]
    Batch { start: u64, what: String },
}

/// Log-loss and AUC on held-out batches after `step` training steps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub step: u64,
    pub samples: u64,
    pub logloss: f64,
    /// `None` when the held-out labels hold one class only.
    pub auc: Option<f64>,
}

/// What a training run did.
#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    pub steps: u64,
    pub samples: u64,
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Seconds the training steps waited for rows from the store (evaluation excluded).
    pub stall_seconds: f64,
    /// Training loss of every step.
    pub losses: Vec<f32>,
    pub evaluations: Vec<Evaluation>,
    pub engine: EngineStats,
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
pub fn evaluate(model: &Dlrm, table: &mut TieredTable, batches: &[Batch], step: u64) -> Result<Evaluation, TrainError> {
    let dim = table.layout().dim;
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    let mut pooled = Vec::new();
    for batch in batches {
        check_features(batch)?;
        pooled.resize(batch.bags() * dim, 0.0);
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

/// Trains on `batches` (served `window` batches behind the source, with read-ahead),
/// evaluating on `held_out` every `eval_every` steps (0 = only at the end).
pub fn train(
    model: &mut Dlrm,
    table: &mut TieredTable,
    batches: impl Iterator<Item = Batch> + Send + 'static,
    window: usize,
    held_out: &[Batch],
    eval_every: u64,
) -> Result<TrainOutcome, TrainError> {
    let dim = table.layout().dim;
    let mut prefetcher = Prefetcher::new(batches, window);
    let (mut steps, mut samples) = (0u64, 0u64);
    let mut losses = Vec::new();
    let mut evaluations = Vec::new();
    let mut pooled = Vec::new();
    let mut training_seconds = 0.0;
    let mut eval_stall = 0.0;
    let mut start = Instant::now();
    while let Some(batch) = prefetcher.next(table)? {
        samples += check_features(&batch)? as u64;
        pooled.resize(batch.bags() * dim, 0.0);
        table.lookup(&batch, &mut pooled)?;
        let step = model.train_step(&batch.dense, &pooled, &batch.labels)?;
        table.apply_gradients(&batch, &step.embedding_grad)?;
        losses.push(step.loss);
        steps += 1;
        if eval_every > 0 && steps.is_multiple_of(eval_every) && !held_out.is_empty() {
            training_seconds += start.elapsed().as_secs_f64();
            let stalled = table.stats().stall_seconds;
            evaluations.push(evaluate(model, table, held_out, steps)?);
            eval_stall += table.stats().stall_seconds - stalled;
            start = Instant::now();
        }
    }
    training_seconds += start.elapsed().as_secs_f64();
    let stall_seconds = table.stats().stall_seconds - eval_stall;
    if !held_out.is_empty() && evaluations.last().map(|e| e.step) != Some(steps) {
        evaluations.push(evaluate(model, table, held_out, steps)?);
    }
    Ok(TrainOutcome {
        steps,
        samples,
        seconds: training_seconds,
        samples_per_sec: samples as f64 / training_seconds.max(1e-9),
        stall_seconds,
        losses,
        evaluations,
        engine: table.stats(),
    })
}

/// What a serving run did: queries are samples, latency is per request batch.
#[derive(Clone, Debug, Serialize)]
pub struct ServeOutcome {
    pub requests: u64,
    pub queries: u64,
    pub seconds: f64,
    pub queries_per_sec: f64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub latency: LatencyHistogram,
}

/// Replays `requests` (small batches) through lookup and prediction, no updates.
pub fn serve(
    model: &Dlrm,
    table: &mut TieredTable,
    requests: impl Iterator<Item = Batch> + Send + 'static,
    window: usize,
) -> Result<ServeOutcome, TrainError> {
    let dim = table.layout().dim;
    let mut prefetcher = Prefetcher::new(requests, window);
    let mut latency = LatencyHistogram::default();
    let (mut count, mut queries) = (0u64, 0u64);
    let mut pooled = Vec::new();
    let start = Instant::now();
    while let Some(batch) = prefetcher.next(table)? {
        let began = Instant::now();
        queries += check_features(&batch)? as u64;
        pooled.resize(batch.bags() * dim, 0.0);
        table.lookup(&batch, &mut pooled)?;
        std::hint::black_box(model.predict(&batch.dense, &pooled)?);
        latency.record(began.elapsed());
        count += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(ServeOutcome {
        requests: count,
        queries,
        seconds,
        queries_per_sec: queries as f64 / seconds.max(1e-9),
        p50_us: latency.quantile_us(0.50),
        p95_us: latency.quantile_us(0.95),
        p99_us: latency.quantile_us(0.99),
        latency,
    })
}
