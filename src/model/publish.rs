//! Training and serving over a published table: [`TrainingPublisher`] publishes, every
//! few steps, the rows the steps since the last version touched and the dense
//! parameters (the engine's [`Publisher`]); [`ReplicaFollower`] polls the update stream
//! between a replica's requests, takes the changed rows into the replica's tiers and
//! loads each version's dense parameters, and keeps what it saw for the report.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::train::TrainError;
use super::{Dlrm, ModelError};
use crate::engine::batch::Batch;
use crate::engine::grouped::Embeddings;
use crate::engine::storage::remote::{Follower, Publisher, RemoteError, Staleness};
use crate::engine::table::TieredTable;
use crate::engine::EngineError;

/// The dense parameters as bytes (what [`Dlrm::save_state`] writes).
fn dense_bytes(model: &Dlrm) -> Result<Vec<u8>, ModelError> {
    let dir = tempfile::tempdir().map_err(|e| ModelError::state(&std::env::temp_dir(), e))?;
    let path = dir.path().join("dense.pt");
    model.save_state(&path)?;
    std::fs::read(&path).map_err(|e| ModelError::state(&path, e))
}

/// Loads dense parameters published as bytes, in place (checked as
/// [`Dlrm::load_state`] checks a file).
fn load_dense_bytes(model: &mut Dlrm, bytes: &[u8], version: u64) -> Result<(), ModelError> {
    let dir = tempfile::tempdir().map_err(|e| ModelError::state(&std::env::temp_dir(), e))?;
    let path = dir.path().join(format!("published-version-{version}.pt"));
    std::fs::write(&path, bytes).map_err(|e| ModelError::state(&path, e))?;
    model.load_state(&path)
}

fn remote(error: RemoteError) -> TrainError {
    TrainError::Engine(EngineError::from(error))
}

/// One version training published.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedVersion {
    pub version: u64,
    /// Training steps done when it was published.
    pub step: u64,
    pub rows: u64,
    pub seconds: f64,
}

/// Publishes a training run's versions: every `every` steps and after the last step.
pub struct TrainingPublisher {
    publisher: Publisher,
    every: u64,
    touched: Vec<bool>,
    touched_rows: Vec<u64>,
    published: Vec<PublishedVersion>,
}

impl TrainingPublisher {
    /// Publishes through `publisher` every `every` steps; with `all_changed` (a run
    /// resumed from a checkpoint, whose published table may be behind it), the first
    /// version carries every row.
    pub fn new(publisher: Publisher, rows: u64, every: u64, all_changed: bool) -> TrainingPublisher {
        let touched = vec![all_changed; rows as usize];
        let touched_rows = if all_changed { (0..rows).collect() } else { Vec::new() };
        TrainingPublisher { publisher, every: every.max(1), touched, touched_rows, published: Vec::new() }
    }

    /// Notes the rows a training step updated.
    pub(super) fn record(&mut self, batch: &Batch) {
        for &row in &batch.ids {
            if !std::mem::replace(&mut self.touched[row as usize], true) {
                self.touched_rows.push(row);
            }
        }
    }

    pub(super) fn due(&self, steps: u64) -> bool {
        steps.is_multiple_of(self.every)
    }

    /// Publishes the rows touched since the last version (read after a flush, so as
    /// training has left them) and the dense parameters, as the next version.
    pub(super) fn publish(&mut self, model: &Dlrm, table: &mut dyn Embeddings, steps: u64) -> Result<(), TrainError> {
        if self.touched_rows.is_empty() {
            return Ok(());
        }
        let table = table.only()?;
        let began = Instant::now();
        let mut rows = std::mem::take(&mut self.touched_rows);
        rows.sort_unstable();
        let staged = table.read_rows(rows)?;
        let dense = dense_bytes(model)?;
        let version = self.publisher.publish(&staged.rows, &staged.data, &dense).map_err(remote)?;
        for &row in &staged.rows {
            self.touched[row as usize] = false;
        }
        let seconds = began.elapsed().as_secs_f64();
        tracing::info!("published version {version}: {} rows after step {steps} in {seconds:.2} s", staged.rows.len());
        self.published.push(PublishedVersion { version, step: steps, rows: staged.rows.len() as u64, seconds });
        Ok(())
    }

    /// The versions published so far.
    pub fn published(&self) -> &[PublishedVersion] {
        &self.published
    }
}

/// One version a replica applied.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedVersion {
    pub version: u64,
    /// Requests served before it was applied.
    pub at_request: u64,
    /// Memory-tier copies read again.
    pub refreshed_rows: u64,
    /// How long it had been published when the replica applied it.
    pub seconds_behind: f64,
}

/// What a replica saw of the publisher while serving.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaReport {
    pub table: String,
    pub applied: Vec<AppliedVersion>,
    /// The most versions and seconds behind the publisher seen at a poll.
    pub max_versions_behind: u64,
    pub max_seconds_behind: f64,
    /// Polls that could not reach the cluster (the replica served its cached rows).
    pub failed_polls: u64,
    /// At the end of serving.
    pub final_staleness: FinalStaleness,
}

/// [`Staleness`] as the report keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalStaleness {
    pub applied_version: u64,
    pub latest_version: u64,
    pub versions_behind: u64,
    pub seconds_behind: f64,
    pub connected: bool,
    pub error: Option<String>,
}

impl From<Staleness> for FinalStaleness {
    fn from(s: Staleness) -> Self {
        FinalStaleness {
            applied_version: s.applied_version,
            latest_version: s.latest_version,
            versions_behind: s.versions_behind,
            seconds_behind: s.seconds_behind,
            connected: s.connected,
            error: s.error,
        }
    }
}

/// Follows a published table between a replica's requests.
pub struct ReplicaFollower {
    follower: Follower,
    table_name: String,
    every: u64,
    applied: Vec<AppliedVersion>,
    max_versions_behind: u64,
    max_seconds_behind: f64,
    failed_polls: u64,
}

impl ReplicaFollower {
    /// Polls `follower` every `every` requests.
    pub fn new(follower: Follower, table_name: &str, every: u64) -> ReplicaFollower {
        ReplicaFollower {
            follower,
            table_name: table_name.to_string(),
            every: every.max(1),
            applied: Vec::new(),
            max_versions_behind: 0,
            max_seconds_behind: 0.0,
            failed_polls: 0,
        }
    }

    /// Before request `served` (every `every` requests): takes in the versions
    /// published since the last poll, then loads the dense parameters of the last one.
    pub(super) fn between_requests(&mut self, served: u64, model: &mut Dlrm, table: &mut dyn Embeddings) -> Result<(), TrainError> {
        if served.is_multiple_of(self.every) {
            self.catch_up(served, model, table.only()?)?;
        }
        Ok(())
    }

    /// Takes in every version published so far (or as many as the cluster gives).
    pub fn catch_up(&mut self, served: u64, model: &mut Dlrm, table: &mut TieredTable) -> Result<(), TrainError> {
        let before = self.follower.staleness();
        if !before.connected {
            self.failed_polls += 1;
            return Ok(());
        }
        self.max_versions_behind = self.max_versions_behind.max(before.versions_behind);
        self.max_seconds_behind = self.max_seconds_behind.max(before.seconds_behind);
        if before.versions_behind == 0 {
            return Ok(());
        }
        let refreshed_before = table.stats().refreshed_rows;
        let from = self.follower.applied_version();
        let applied = self.follower.poll(|changed| table.take_in(changed).map(drop))?;
        if applied == 0 {
            self.failed_polls += u64::from(!self.follower.reachable());
            return Ok(());
        }
        let version = self.follower.applied_version();
        // The dense parameters of the version now applied (none at version 0).
        if let Some(bytes) = self.follower.dense(version).map_err(remote)? {
            load_dense_bytes(model, &bytes, version)?;
        }
        tracing::debug!("applied versions {}..={version} before request {served}", from + 1);
        self.applied.push(AppliedVersion {
            version,
            at_request: served,
            refreshed_rows: table.stats().refreshed_rows - refreshed_before,
            seconds_behind: before.seconds_behind,
        });
        Ok(())
    }

    pub fn applied_version(&self) -> u64 {
        self.follower.applied_version()
    }

    /// The report, with the staleness at this moment.
    pub fn report(&mut self) -> ReplicaReport {
        ReplicaReport {
            table: self.table_name.clone(),
            applied: self.applied.clone(),
            max_versions_behind: self.max_versions_behind,
            max_seconds_behind: self.max_seconds_behind,
            failed_polls: self.failed_polls,
            final_staleness: self.follower.staleness().into(),
        }
    }
}
