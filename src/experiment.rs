//! Training and serving experiments (`strata run CONFIG` with a `[model]` section): the
//! same batches (synthetic, or read from Criteo TSV or MLPerf NumPy files), requests and
//! seeds run under each placement set-up (tier sizes, policies, hierarchy, prefetch
//! window): training throughput, stall, hit ratios, bytes moved, write-backs,
//! checkpoints, held-out log-loss and AUC; serving queries/s, latency percentiles,
//! stall, hit ratios and a checksum of every prediction. The config and its checks are
//! in `config`, running the set-ups in `run`, their crash-safe checkpoints in
//! `checkpoint`, a serving replica of a published table (`strata serve`) in `replica`;
//! the reports (JSON, CSV, SVG plots, a self-contained HTML page and a
//! Markdown summary) are written by [`crate::report::experiment`].

mod checkpoint;
mod config;
mod replica;
mod run;

use std::path::PathBuf;

pub use checkpoint::CheckpointError;
pub use config::{DataSpec, EngineSpec, ExperimentConfig, FileCacheSpec, PublishSpec, ServeSpec, SetupSpec};
pub use replica::{replica_markdown, serve_replica, ReplicaOutcome};
pub use run::{resume, run, SetupError};

use crate::config::ConfigError;
use crate::report::ReportError;

/// What stopped an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// (Not a `source` field: the message already holds the cause, and a source would
    /// print it twice.)
    #[error("setup `{setup}`: {error}")]
    Setup { setup: String, error: Box<SetupError> },
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A stop request ([`crate::interrupt`]) ended the run: the table was flushed and
    /// the reports written with the partial results.
    #[error("setup `{setup}`: interrupted at {what} {done}; table flushed; partial reports in {}", dir.display())]
    Interrupted { setup: String, what: &'static str, done: u64, dir: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}
