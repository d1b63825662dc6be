//! `strata serve CONFIG`: a serving replica of an experiment whose training publishes
//! to a Redis Cluster (`[publish]`): one set-up's tiers over the published table, the
//! config's serving requests scored by its model, and between requests the versions
//! training publishes taken in (changed rows and dense parameters). Several replicas of
//! one config may run at once, each with its own tiers; each reports its latency, its
//! checksum of every score and how far behind the publisher it was.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::run::{setup_error, SetupError};
use super::{ExperimentConfig, ExperimentError};
use crate::config::ConfigError;
use crate::engine::storage::remote::{Follower, RedisStore, RemoteConfig};
use crate::engine::storage::BackingStore;
use crate::engine::table::TieredTable;
use crate::engine::EngineError;
use crate::model::publish::{ReplicaFollower, ReplicaReport};
use crate::model::train::{ServeOptions, ServeOutcome, Serving};
use crate::model::Dlrm;

/// How long a replica's poll of the update stream tries before it counts the cluster
/// as unreachable and goes on serving its cached rows.
const POLL_RETRY_SECONDS: f64 = 1.0;

/// What one replica did.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaOutcome {
    pub setup: String,
    pub serving: ServeOutcome,
    pub replica: ReplicaReport,
}

/// Runs set-up `setup` (the first when `None`) of `config` as a serving replica of the
/// table `[publish]` names, from the versions published so far. `config_path` is named
/// in errors about the config.
pub fn serve_replica(
    config: &ExperimentConfig,
    config_path: &std::path::Path,
    setup: Option<&str>,
) -> Result<ReplicaOutcome, ExperimentError> {
    let error = |message: String| ExperimentError::from(ConfigError::new(config_path, message));
    let publish =
        config.publish.as_ref().ok_or_else(|| error("serve: a replica needs [publish] (the table training publishes to)".into()))?;
    let serve = config.serve.as_ref().ok_or_else(|| error("serve: a replica needs [serve] (its requests)".into()))?;
    let spec = match setup {
        Some(name) => config.setups.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = config.setups.iter().map(|s| s.name.as_str()).collect();
            error(format!("no [[setup]] named `{name}` (there are: {})", names.join(", ")))
        })?,
        None => &config.setups[0],
    };
    let rows = config.rows();
    // `[publish]` holds the tables in one group (the config's checks).
    let groups = config.table_groups().map_err(error)?;
    let table_config = spec.table_config(&config.engine, &groups[0], rows).map_err(error)?;
    let fail = |e: SetupError| setup_error(spec, e);
    let store = RedisStore::open(&publish.cluster).map_err(|e| fail(EngineError::from(e).into()))?;
    let (layout, _) = config.row_layout();
    if store.rows() != rows || store.layout() != layout {
        return Err(error(format!(
            "publish.cluster: table `{}` holds {} rows of {:?}; this config's model needs {rows} rows of {layout:?}",
            publish.cluster.table,
            store.rows(),
            store.layout()
        )));
    }
    let poll_config = RemoteConfig { retry_seconds: publish.cluster.retry_seconds.min(POLL_RETRY_SECONDS), ..publish.cluster.clone() };
    let follower = Follower::open(&poll_config).map_err(|e| fail(EngineError::from(e).into()))?;
    let mut replica = ReplicaFollower::new(follower, &publish.cluster.table, serve.follow_every);
    let mut model = Dlrm::new(&config.model, crate::data::CRITEO_CARDINALITIES.len()).map_err(|e| fail(e.into()))?;
    let mut table = TieredTable::new(&table_config, Box::new(store)).map_err(|e| fail(e.into()))?;
    replica.catch_up(0, &mut model, &mut table).map_err(|e| fail(e.into()))?;
    let requests: Arc<[crate::engine::batch::Batch]> = config.requests(serve).map_err(|e| fail(e.into()))?.into();
    let stream = (0..requests.len()).map(move |i| requests[i].clone());
    let options = ServeOptions { window: spec.window, warmup: serve.warmup };
    let serving = Serving::new(&mut model, &mut table).options(options).follower(&mut replica).run(stream).map_err(|e| fail(e.into()))?;
    Ok(ReplicaOutcome { setup: spec.name.clone(), serving, replica: replica.report() })
}

/// The replica's outcome in a few Markdown lines.
pub fn replica_markdown(outcome: &ReplicaOutcome) -> String {
    let (s, r) = (&outcome.serving, &outcome.replica);
    let versions = match (r.applied.first(), r.applied.last()) {
        (Some(first), Some(last)) => format!("versions {}..={} in {} polls", first.version, last.version, r.applied.len()),
        _ => "no version (the initial rows)".to_string(),
    };
    let f = &r.final_staleness;
    format!(
        "replica `{}` of table `{}`: {} requests, {:.0} queries/s, p50 {:.0} us, p99 {:.0} us, prediction checksum {}\n\
         applied {versions}; at most {} versions / {:.2} s behind at a poll; {} failed polls\n\
         at the end: version {} of {} ({} behind, {:.2} s){}\n",
        outcome.setup,
        r.table,
        s.requests,
        s.queries_per_sec,
        s.p50_us,
        s.p99_us,
        s.prediction_checksum,
        r.max_versions_behind,
        r.max_seconds_behind,
        r.failed_polls,
        f.applied_version,
        f.latest_version,
        f.versions_behind,
        f.seconds_behind,
        f.error.as_ref().map(|e| format!("; cluster unreachable: {e}")).unwrap_or_default(),
    )
}
