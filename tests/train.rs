//! The training and serving loops: the same seed gives bit-identical losses and final
//! tables whatever the policies, hierarchy, tier sizes and prefetch window (policies
//! change speed, never results), and with or without checkpoints; training learns;
//! serving reports latencies and the same predictions from every set-up.

use strata::data::{SyntheticBatches, SyntheticConfig};
use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, RowInit, RowLayout};
use strata::model::train::{ServeOptions, Serving, TrainError, TrainOptions, Training};
use strata::model::{Dlrm, ModelConfig};
use strata_policies::PolicyConfig;

mod common;
use common::model::{small_model, small_model_config};

const DIM: usize = 8;

fn synthetic() -> SyntheticConfig {
    SyntheticConfig { scale: 0.0005, seed: 5, ..SyntheticConfig::default() }
}

fn table(device: TierConfig, host: TierConfig, hierarchy: Hierarchy) -> TieredTable {
    let optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
    let rows = synthetic().layout().total_rows();
    let store = FlatTable::new(rows, RowLayout::new(DIM, &optimizer), RowInit::Uniform { seed: 9, scale: 0.05 });
    let config = TableConfig {
        device,
        device_backend: DeviceKind::Emulated,
        host,
        hierarchy,
        optimizer,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Default::default(),
    };
    TieredTable::new(&config, Box::new(store)).unwrap()
}

fn batches(count: u64) -> SyntheticBatches {
    SyntheticBatches::new(&synthetic(), 32, Some(count)).unwrap().with_features()
}

fn every_row(rows: usize) -> TierConfig {
    TierConfig::rows(rows, PolicyConfig::Lru)
}

fn training(window: usize) -> TrainOptions {
    TrainOptions { window, ..TrainOptions::default() }
}

/// Losses and the final table of one training run.
fn run(mut table: TieredTable, window: usize) -> (Vec<f32>, Vec<f32>) {
    let mut model = small_model(DIM);
    let outcome = Training::new(&mut model, &mut table).options(training(window)).run(batches(25)).unwrap();
    assert_eq!(outcome.steps, 25);
    (outcome.losses, final_table(table))
}

/// Every row of the table after closing it (which flushes).
fn final_table(table: TieredTable) -> Vec<f32> {
    let mut store = table.close().unwrap();
    let rows: Vec<u64> = (0..store.rows()).collect();
    let mut data = vec![0f32; rows.len() * store.layout().words()];
    store.read_rows(&rows, &mut data).unwrap();
    data
}

#[test]
fn policies_and_windows_change_speed_never_results() {
    let rows = synthetic().layout().total_rows() as usize;
    let ideal = run(table(TierConfig::rows(0, PolicyConfig::Lru), every_row(rows), Hierarchy::Inclusive), 0);
    let setups: Vec<(&str, TieredTable, usize)> = vec![
        (
            "lru, no prefetch",
            table(TierConfig::rows(200, PolicyConfig::Lru), TierConfig::rows(1500, PolicyConfig::Lru), Hierarchy::Inclusive),
            0,
        ),
        (
            "lru, prefetch 2",
            table(TierConfig::rows(200, PolicyConfig::Lru), TierConfig::rows(1500, PolicyConfig::Lru), Hierarchy::Inclusive),
            2,
        ),
        (
            "s3fifo exclusive, prefetch 3",
            table(
                TierConfig::rows(100, PolicyConfig::from_name("s3fifo").unwrap()),
                TierConfig::rows(700, PolicyConfig::from_name("s3fifo").unwrap()),
                Hierarchy::Exclusive,
            ),
            3,
        ),
        (
            "static device + lookahead host",
            table(
                TierConfig::rows(300, PolicyConfig::from_name("static:2000").unwrap()),
                TierConfig::rows(900, PolicyConfig::from_name("lookahead:20000").unwrap()),
                Hierarchy::Inclusive,
            ),
            2,
        ),
    ];
    for (name, table, window) in setups {
        let (losses, table_after) = run(table, window);
        assert_eq!(losses, ideal.0, "{name}: losses");
        assert!(table_after == ideal.1, "{name}: the final table differs from the all-in-host run");
    }
    assert!(ideal.0.iter().all(|l| l.is_finite()));
}

#[test]
fn training_through_tiers_learns_the_hidden_model() {
    let mut model = small_model(DIM);
    let mut table = table(
        TierConfig::rows(300, PolicyConfig::Lru),
        TierConfig::rows(3000, PolicyConfig::from_name("s3fifo").unwrap()),
        Hierarchy::Inclusive,
    );
    // Held-out batches come from later in the same stream, never trained on.
    let held_out: Vec<Batch> = SyntheticBatches::new(&synthetic(), 64, Some(320)).unwrap().with_features().skip(300).collect();
    let options = TrainOptions { window: 2, eval_every: 100, checkpoint_every: 0 };
    let outcome = Training::new(&mut model, &mut table).held_out(&held_out).options(options).run(batches(300)).unwrap();
    assert_eq!(outcome.evaluations.iter().map(|e| e.step).collect::<Vec<_>>(), vec![100, 200, 300]);
    let last = outcome.evaluations.last().unwrap();
    assert!(last.auc.unwrap() > 0.65, "held-out AUC {:?}", last.auc);
    assert!(last.logloss < outcome.evaluations[0].logloss + 0.05, "{:?}", outcome.evaluations);
    assert_eq!(outcome.samples, 300 * 32);
    assert!(outcome.engine.device.as_ref().unwrap().hits > 0);
}

#[test]
fn checkpoints_flush_every_tier_and_change_no_result() {
    let rows = synthetic().layout().total_rows() as usize;
    let train_with = |checkpoint_every: u64| {
        // Every row fits in memory: only a checkpoint writes rows to the store.
        let mut table = table(TierConfig::rows(150, PolicyConfig::Lru), every_row(rows), Hierarchy::Inclusive);
        let options = TrainOptions { window: 2, eval_every: 0, checkpoint_every };
        let outcome = Training::new(&mut small_model(DIM), &mut table).options(options).run(batches(25)).unwrap();
        (outcome, final_table(table))
    };
    let (plain, plain_table) = train_with(0);
    let (checkpointed, checkpointed_table) = train_with(10);
    assert_eq!((plain.checkpoints, plain.engine.store_writes), (0, 0));
    assert_eq!(checkpointed.checkpoints, 2, "steps 10 and 20");
    assert!(checkpointed.engine.store_writes > 0, "a checkpoint writes the dirty rows down");
    let device_writes = checkpointed.engine.device.as_ref().unwrap().write_backs;
    let host_writes = checkpointed.engine.host.as_ref().unwrap().write_backs;
    assert!(device_writes > 0 && host_writes > 0, "both tiers flushed: {device_writes} {host_writes}");
    assert_eq!(checkpointed.losses, plain.losses);
    assert!(checkpointed_table == plain_table, "the final table differs with checkpoints");
}

#[test]
fn serving_counts_requests_orders_percentiles_and_predicts_the_same_everywhere() {
    let mut model = small_model(DIM);
    let rows = synthetic().layout().total_rows() as usize;
    let requests = || SyntheticBatches::new(&synthetic(), 4, Some(50)).unwrap().with_features();
    let options = ServeOptions { window: 1, warmup: 10 };
    let mut tiered = table(TierConfig::rows(100, PolicyConfig::Lru), TierConfig::rows(800, PolicyConfig::Lru), Hierarchy::Inclusive);
    let outcome = Serving::new(&mut model, &mut tiered).options(options).run(requests()).unwrap();
    assert_eq!((outcome.warmup_requests, outcome.requests, outcome.queries), (10, 40, 160));
    assert_eq!(outcome.latencies_us.len(), 40);
    assert!(outcome.p50_us <= outcome.p95_us && outcome.p95_us <= outcome.p99_us && outcome.p99_us <= outcome.max_us);
    assert!(outcome.p50_us > 0.0);
    // The engine counters cover the 40 measured requests only.
    assert_eq!(outcome.engine.batches, 40);
    assert_eq!(outcome.engine.lookups, 40 * 4 * 214);
    let device = outcome.engine.device.as_ref().unwrap();
    assert_eq!(device.hits + device.misses, 40 * 4 * 214);
    assert!(outcome.engine.store_writes == 0, "serving never updates a row");
    let mut ideal = table(TierConfig::rows(0, PolicyConfig::Lru), every_row(rows), Hierarchy::Inclusive);
    let all_in_host = Serving::new(&mut model, &mut ideal).options(ServeOptions { window: 0, warmup: 0 }).run(requests()).unwrap();
    assert_eq!(all_in_host.requests, 50);
    assert_eq!(all_in_host.prediction_checksum, outcome.prediction_checksum);
    let mut other_model = Dlrm::new(&ModelConfig { seed: 4, ..small_model_config(DIM) }, 26).unwrap();
    let mut again = table(TierConfig::rows(0, PolicyConfig::Lru), every_row(rows), Hierarchy::Inclusive);
    let other = Serving::new(&mut other_model, &mut again).options(options).run(requests()).unwrap();
    assert_ne!(other.prediction_checksum, outcome.prediction_checksum, "the checksum sees the scores");
}

#[test]
fn batches_without_features_are_refused() {
    let mut model = small_model(DIM);
    let mut table = table(TierConfig::rows(10, PolicyConfig::Lru), TierConfig::rows(100, PolicyConfig::Lru), Hierarchy::Inclusive);
    let lookups_only = SyntheticBatches::new(&synthetic(), 4, Some(2)).unwrap();
    let err = Training::new(&mut model, &mut table).options(training(0)).run(lookups_only).unwrap_err();
    assert!(matches!(err, TrainError::Batch { .. }), "{err}");
    assert!(err.to_string().contains("no labels"), "{err}");
}
