//! Publication and serving replicas on a real Redis Cluster (3 masters + 3 replicas on
//! loopback, started by each test): a trainer publishes versions of its rows, replicas
//! with their own tiers and policies follow the update stream, and a replica that has
//! applied the latest version v looks up exactly what the version-v table holds (so two
//! replicas at one version agree), one behind never a row older than its version; one
//! that missed trimmed versions takes in every row; one
//! that loses the cluster keeps serving its cached rows and reports itself stale.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::prefetch::Prefetcher;
use strata::engine::storage::remote::{Follower, LocalCluster, Publisher, RedisStore, RemoteConfig};
use strata::engine::storage::BackingStore;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{EngineError, Optimizer, RowInit, RowLayout};
use strata_policies::PolicyConfig;

mod common;
use common::transparency::batches;

const ROWS: u64 = 300;
const DIM: usize = 4;
const OPTIMIZER: Optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
const INIT: RowInit = RowInit::Uniform { seed: 11, scale: 0.1 };

fn layout() -> RowLayout {
    RowLayout::new(DIM, &OPTIMIZER)
}

fn remote(cluster: &LocalCluster, table: &str) -> RemoteConfig {
    RemoteConfig { block_rows: 8, retry_seconds: 20.0, ..RemoteConfig::new(cluster.nodes(), table) }
}

fn table_config(policy: &str, device_rows: usize, host_rows: usize, hierarchy: Hierarchy) -> TableConfig {
    let policy = PolicyConfig::from_name(policy).unwrap();
    TableConfig {
        device: TierConfig::rows(device_rows, policy.clone()),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(host_rows, policy),
        hierarchy,
        optimizer: OPTIMIZER,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Default::default(),
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A flat table holding `rows` (every row, values and state, in row order).
fn flat_of(rows: &[f32]) -> FlatTable {
    let mut flat = FlatTable::new(ROWS, layout(), INIT);
    flat.write_rows(&(0..ROWS).collect::<Vec<_>>(), rows).unwrap();
    flat
}

/// A serving replica: its own tiers over the published table, and its follower.
struct Replica {
    table: TieredTable,
    follower: Follower,
}

impl Replica {
    fn open(config: &RemoteConfig, table: TableConfig) -> Replica {
        let store = RedisStore::open(config).unwrap();
        Replica { table: TieredTable::new(&table, Box::new(store)).unwrap(), follower: Follower::open(config).unwrap() }
    }

    fn poll(&mut self) -> u64 {
        let table = &mut self.table;
        self.follower.poll(|changed| table.take_in(changed).map(drop)).unwrap()
    }

    /// Serves `requests` (read ahead `window` deep) and returns every pooled output.
    fn serve(&mut self, requests: &[Batch], window: usize) -> Vec<f32> {
        let mut outputs = Vec::new();
        let mut prefetcher = Prefetcher::new(Vec::from(requests).into_iter(), window);
        while let Some(batch) = prefetcher.next(|b| self.table.prefetch(b)).unwrap() {
            let mut out = vec![0f32; batch.bags() * DIM];
            self.table.lookup(&batch, &mut out).unwrap();
            outputs.extend_from_slice(&out);
        }
        outputs
    }
}

fn expected_outputs(flat: &mut FlatTable, requests: &[Batch]) -> Vec<f32> {
    let mut outputs = Vec::new();
    for batch in requests {
        let mut out = vec![0f32; batch.bags() * DIM];
        flat.lookup(batch, Pooling::Sum, &mut out);
        outputs.extend_from_slice(&out);
    }
    outputs
}

/// The trainer: a tiered table over its own in-memory store, trained on random
/// gradients, publishing the rows each few steps touched; and the flat reference,
/// trained alike, whose rows at each version are kept.
struct Trainer {
    table: TieredTable,
    reference: FlatTable,
    publisher: Publisher,
    rng: SmallRng,
    next_start: u64,
    /// Every row at each version (version 0: the initial rows).
    versions: Vec<Vec<f32>>,
}

impl Trainer {
    fn new(config: &RemoteConfig) -> Trainer {
        let store = FlatTable::new(ROWS, layout(), INIT);
        let table = TieredTable::new(&table_config("lru", 5, 40, Hierarchy::Inclusive), Box::new(store)).unwrap();
        let reference = FlatTable::new(ROWS, layout(), INIT);
        let initial: Vec<f32> = (0..ROWS).flat_map(|r| reference.row(r).to_vec()).collect();
        let publisher = Publisher::create(config, ROWS, layout(), INIT).unwrap();
        Trainer { table, reference, publisher, rng: SmallRng::seed_from_u64(3), next_start: 0, versions: vec![initial] }
    }

    /// Trains `steps` steps, then publishes the rows they touched with the step count as
    /// the dense parameters; returns the version.
    fn train_and_publish(&mut self, steps: usize) -> u64 {
        let mut touched = Vec::new();
        for batch in batches(&mut self.rng, ROWS, steps, 6) {
            let batch = Batch::new(batch.ids, batch.bag_offsets, self.next_start);
            self.next_start += batch.ids.len() as u64;
            let mut out = vec![0f32; batch.bags() * DIM];
            self.table.lookup(&batch, &mut out).unwrap();
            let grads: Vec<f32> = (0..out.len()).map(|_| self.rng.gen_range(-1.0..1.0)).collect();
            self.table.apply_gradients(&batch, &grads).unwrap();
            self.reference.apply_gradients(&batch, &grads, &OPTIMIZER, Pooling::Sum);
            touched.extend_from_slice(&batch.ids);
        }
        touched.sort_unstable();
        touched.dedup();
        // A table with updates not yet written down cannot follow another writer.
        let dirty = self.table.refresh(&touched);
        assert!(matches!(dirty, Err(EngineError::RefreshDirty { .. })), "{dirty:?}");
        let staged = self.table.read_rows(touched).unwrap();
        let version = self.publisher.publish(&staged.rows, &staged.data, &self.next_start.to_le_bytes()).unwrap();
        self.versions.push((0..ROWS).flat_map(|r| self.reference.row(r).to_vec()).collect());
        assert_eq!(version as usize, self.versions.len() - 1);
        version
    }
}

fn requests(seed: u64) -> Vec<Batch> {
    batches(&mut SmallRng::seed_from_u64(seed), ROWS, 12, 5)
}

#[test]
fn replicas_that_applied_version_v_look_up_what_the_version_v_table_holds() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let config = remote(&cluster, "published");
    let mut trainer = Trainer::new(&config);
    // Two replicas with their own tiers, policies and read-ahead.
    let mut a = Replica::open(&config, table_config("lru", 3, 10, Hierarchy::Inclusive));
    let mut b = Replica::open(&config, table_config("s3fifo", 0, 25, Hierarchy::Exclusive));

    // Version 0: the initial rows, before anything is published.
    let first = requests(100);
    let expected = expected_outputs(&mut flat_of(&trainer.versions[0]), &first);
    assert_eq!(bits(&a.serve(&first, 2)), bits(&expected));
    assert_eq!(bits(&b.serve(&first, 0)), bits(&expected));

    for round in 1..=6u64 {
        let version = trainer.train_and_publish(4);
        // Replica a follows every version; b only every other one.
        assert_eq!(a.poll(), 1);
        if round % 2 == 0 {
            let behind = b.follower.staleness();
            assert_eq!((behind.applied_version, behind.latest_version, behind.versions_behind), (version - 2, version, 2), "{behind:?}");
            assert!(behind.connected && behind.error.is_none(), "{behind:?}");
            assert_eq!(b.poll(), 2);
        }
        let now = a.follower.staleness();
        assert_eq!((now.applied_version, now.versions_behind, now.seconds_behind), (version, 0, 0.0), "{now:?}");
        assert_eq!(a.follower.dense(version).unwrap(), Some(trainer.next_start.to_le_bytes().to_vec()));

        let requests = requests(100 + round);
        let expected_a = expected_outputs(&mut flat_of(&trainer.versions[version as usize]), &requests);
        let served_a = a.serve(&requests, 2);
        assert_eq!(bits(&served_a), bits(&expected_a), "replica a at version {version}");
        if b.follower.applied_version() == version {
            let served_b = b.serve(&requests, 3);
            assert_eq!(bits(&served_b), bits(&expected_a), "replica b at version {version}");
            assert_eq!(bits(&served_a), bits(&served_b), "two replicas at version {version}");
        } else {
            // Behind: a cached row is as of the version applied, a row read from the
            // cluster as of a later one; never older than the version applied.
            let applied = b.follower.applied_version() as usize;
            let singles: Vec<Batch> = requests.iter().map(|r| Batch::new(r.ids.clone(), (0..=r.ids.len()).collect(), r.start)).collect();
            let served = b.serve(&singles, 3);
            let ids = singles.iter().flat_map(|r| r.ids.iter().copied());
            for (row, value) in ids.zip(served.chunks(DIM)) {
                let at = |v: usize| &trainer.versions[v][row as usize * layout().words()..][..DIM];
                assert!(
                    (applied..=version as usize).any(|v| bits(at(v)) == bits(value)),
                    "replica b at version {applied} served row {row} older than that"
                );
            }
        }
    }
    assert!(a.table.stats().refreshed_rows > 0, "cached rows were replaced in place");
}

#[test]
fn a_replica_behind_a_trimmed_stream_takes_in_every_row() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let config = remote(&cluster, "trimmed");
    let mut trainer = Trainer::new(&config);
    let mut replica = Replica::open(&config, table_config("lru", 4, 60, Hierarchy::Inclusive));
    let warm = requests(7);
    replica.serve(&warm, 2);
    for _ in 0..3 {
        trainer.train_and_publish(5);
    }
    // The stream keeps only its last entry: versions 1 and 2 are gone.
    let stream = "strata:{trimmed:updates}";
    let trimmed = cluster.masters().into_iter().find_map(|addr| {
        let mut con = redis::Client::open(format!("redis://{addr}/")).unwrap().get_connection().unwrap();
        // Only the master that serves the stream's slot trims it; the others reply MOVED.
        redis::cmd("XTRIM").arg(stream).arg("MAXLEN").arg(1).query::<u64>(&mut con).ok()
    });
    assert_eq!(trimmed, Some(2), "versions 1 and 2 trimmed");
    let before = replica.table.stats().refreshed_rows;
    assert_eq!(replica.poll(), 1);
    assert_eq!(replica.follower.applied_version(), 3);
    assert!(replica.table.stats().refreshed_rows > before, "cached rows were read again");
    let expected = expected_outputs(&mut flat_of(&trainer.versions[3]), &warm);
    assert_eq!(bits(&replica.serve(&warm, 2)), bits(&expected));
}

#[test]
fn a_replica_that_loses_the_cluster_keeps_serving_its_cached_rows_and_reports_itself_stale() {
    let mut cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let config = remote(&cluster, "cut-off");
    let mut trainer = Trainer::new(&config);
    let version = trainer.train_and_publish(5);
    // A host tier that holds every row: after one pass nothing needs the store.
    let quick = RemoteConfig { retry_seconds: 0.3, timeout_ms: 200, ..config.clone() };
    let mut replica = Replica::open(&quick, table_config("lru", 0, ROWS as usize, Hierarchy::Inclusive));
    assert_eq!(replica.poll(), 1);
    let all_rows = vec![Batch::new((0..ROWS).collect(), (0..=ROWS as usize).collect(), 0)];
    replica.serve(&all_rows, 0);
    for node in cluster.nodes() {
        cluster.kill(&node).unwrap();
    }
    assert_eq!(replica.poll(), 0, "nothing to apply from a cluster that is gone");
    let stale = replica.follower.staleness();
    assert!(!stale.connected && stale.applied_version == version, "{stale:?}");
    assert!(stale.error.as_deref().is_some_and(|e| e.contains("cut-off")), "the error names the table: {stale:?}");
    assert_eq!(stale.seconds_behind, stale.seconds_since_contact, "stale by the time since the last contact");
    let requests = requests(9);
    let expected = expected_outputs(&mut flat_of(&trainer.versions[version as usize]), &requests);
    assert_eq!(bits(&replica.serve(&requests, 2)), bits(&expected), "cached rows still served");
}
