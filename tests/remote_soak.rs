//! A soak of master kills during training and serving on a real Redis Cluster: a
//! trainer over the cluster tier publishes every few steps to a second table that a
//! serving replica follows, while masters are killed one after another (each failing
//! over to its replica, then restarted to rejoin as a replica of the new master). Every
//! lookup of the trainer matches the flat table, every request the replica serves at
//! the version it reports matches that version's table, and the final rows match: no
//! row lost, none older than reported. `STRATA_SOAK_KILLS` sets the kills (default 3;
//! `make soak-remote` runs 20).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::remote::{Follower, LocalCluster, Publisher, RedisStore, RemoteConfig};
use strata::engine::storage::BackingStore;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, RowInit, RowLayout};
use strata_policies::PolicyConfig;

mod common;
use common::transparency::batches;

const ROWS: u64 = 400;
const DIM: usize = 4;
const OPTIMIZER: Optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
const INIT: RowInit = RowInit::Uniform { seed: 21, scale: 0.1 };

fn table_config(policy: &str, device_rows: usize, host_rows: usize) -> TableConfig {
    let policy = PolicyConfig::from_name(policy).unwrap();
    TableConfig {
        device: TierConfig::rows(device_rows, policy.clone()),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(host_rows, policy),
        hierarchy: Hierarchy::Inclusive,
        optimizer: OPTIMIZER,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Default::default(),
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn pooled(flat: &mut FlatTable, batch: &Batch) -> Vec<f32> {
    let mut out = vec![0f32; batch.bags() * DIM];
    flat.lookup(batch, Pooling::Sum, &mut out);
    out
}

#[test]
fn no_row_is_lost_or_staler_than_reported_across_master_kills_in_training_and_serving() {
    let kills: usize = std::env::var("STRATA_SOAK_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(3);
    let mut cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let layout = RowLayout::new(DIM, &OPTIMIZER);
    // Every write waits for its replica: what a master acknowledged survives its crash.
    let remote =
        |table: &str| RemoteConfig { replicas: 1, block_rows: 8, retry_seconds: 30.0, ..RemoteConfig::new(cluster.nodes(), table) };
    let trained = remote("soak-train");
    let served = remote("soak-served");
    let store = RedisStore::create(&trained, ROWS, layout, INIT).unwrap();
    let mut trainer = TieredTable::new(&table_config("lru", 4, 30), Box::new(store)).unwrap();
    let mut reference = FlatTable::new(ROWS, layout, INIT);
    let mut publisher = Publisher::create(&served, ROWS, layout, INIT).unwrap();
    let mut versions: Vec<FlatTable> = vec![FlatTable::new(ROWS, layout, INIT)];
    let mut replica = TieredTable::new(&table_config("s3fifo", 3, 40), Box::new(RedisStore::open(&served).unwrap())).unwrap();
    let mut follower = Follower::open(&RemoteConfig { retry_seconds: 1.0, ..served.clone() }).unwrap();

    let mut rng = SmallRng::seed_from_u64(8);
    let mut start = 0u64;
    let (mut served_requests, mut stale_polls) = (0, 0);
    for kill in 0..=kills {
        // A master dies (from the second round on); its replica takes over while the
        // round below trains and serves (their commands to the dead master are retried
        // until the failover); then the dead node comes back as a replica of the new
        // master.
        let victim = (kill > 0).then(|| cluster.masters()[kill % 3].clone());
        if let Some(victim) = &victim {
            cluster.kill(victim).unwrap();
        }
        // Five steps, checked against the flat table, then a version published.
        let mut touched = Vec::new();
        for batch in batches(&mut rng, ROWS, 5, 8) {
            let batch = Batch::new(batch.ids, batch.bag_offsets, start);
            start += batch.ids.len() as u64;
            let mut out = vec![0f32; batch.bags() * DIM];
            trainer.lookup(&batch, &mut out).unwrap_or_else(|e| panic!("kill {kill}: lookup: {e}"));
            assert_eq!(bits(&out), bits(&pooled(&mut reference, &batch)), "kill {kill}: a trained row was lost");
            let grads: Vec<f32> = (0..out.len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            trainer.apply_gradients(&batch, &grads).unwrap_or_else(|e| panic!("kill {kill}: update: {e}"));
            reference.apply_gradients(&batch, &grads, &OPTIMIZER, Pooling::Sum);
            touched.extend_from_slice(&batch.ids);
        }
        touched.sort_unstable();
        touched.dedup();
        let rows = trainer.read_rows(touched).unwrap();
        publisher.publish(&rows.rows, &rows.data, &[]).unwrap_or_else(|e| panic!("kill {kill}: publish: {e}"));
        let mut snapshot = FlatTable::new(ROWS, layout, INIT);
        let all: Vec<u64> = (0..ROWS).collect();
        let data: Vec<f32> = all.iter().flat_map(|&r| reference.row(r).to_vec()).collect();
        snapshot.write_rows(&all, &data).unwrap();
        versions.push(snapshot);

        // The replica follows and serves; at the version it reports, exactly that table.
        follower.poll(|changed| replica.take_in(changed).map(drop)).unwrap();
        let staleness = follower.staleness();
        if staleness.connected && staleness.versions_behind == 0 {
            let version = &mut versions[staleness.applied_version as usize];
            for batch in batches(&mut rng, ROWS, 3, 6) {
                let mut out = vec![0f32; batch.bags() * DIM];
                replica.lookup(&batch, &mut out).unwrap_or_else(|e| panic!("kill {kill}: serving: {e}"));
                assert_eq!(bits(&out), bits(&pooled(version, &batch)), "kill {kill}: version {}", staleness.applied_version);
                served_requests += 1;
            }
        } else {
            stale_polls += 1;
        }
        if let Some(victim) = victim {
            cluster.wait_failover(&victim).unwrap_or_else(|e| panic!("kill {kill}: {e}"));
            cluster.restart(&victim).unwrap_or_else(|e| panic!("kill {kill}: restarting {victim}: {e}"));
        }
    }
    let mut store = trainer.close().unwrap();
    let all: Vec<u64> = (0..ROWS).collect();
    let mut rows = vec![0f32; ROWS as usize * layout.words()];
    store.read_rows(&all, &mut rows).unwrap();
    let expected: Vec<f32> = all.iter().flat_map(|&r| reference.row(r).to_vec()).collect();
    assert_eq!(bits(&rows), bits(&expected), "every trained row survived {kills} master kills");
    assert!(served_requests > 0, "the replica served (stale at {stale_polls} polls)");
    eprintln!("{kills} master kills: every row intact; the replica served {served_requests} requests exactly at its version, was behind at {stale_polls} polls");
}
