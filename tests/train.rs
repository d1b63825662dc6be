//! The training and serving loops: the same seed gives bit-identical losses and final
//! tables whatever the policies, hierarchy, tier sizes and prefetch window (policies
//! change speed, never results); training learns; serving reports latencies.

use strata::data::{SyntheticBatches, SyntheticConfig};
use strata::engine::backing::FlatTable;
use strata::engine::device::DeviceKind;
use strata::engine::pool::Pooling;
use strata::engine::table::{Batch, Hierarchy, TableConfig, TierConfig, TieredTable};
use strata::engine::{Optimizer, RowInit, RowLayout};
use strata::model::train::{serve, train, TrainError};
use strata::model::{DenseOptimizer, Dlrm, Interaction, ModelConfig, ModelDevice};
use strata_policies::PolicyConfig;

const DIM: usize = 8;

fn synthetic() -> SyntheticConfig {
    SyntheticConfig { scale: 0.0005, seed: 5, ..SyntheticConfig::default() }
}

fn model() -> Dlrm {
    let config = ModelConfig {
        embedding_dim: DIM,
        bottom_mlp: vec![16, DIM],
        top_mlp: vec![16, 8],
        interaction: Interaction::Dot,
        dense_optimizer: DenseOptimizer::Sgd { lr: 0.05 },
        seed: 3,
        threads: Some(1),
        device: ModelDevice::Cpu,
    };
    Dlrm::new(&config, 26).unwrap()
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
    };
    TieredTable::new(&config, Box::new(store)).unwrap()
}

fn batches(count: u64) -> SyntheticBatches {
    SyntheticBatches::new(&synthetic(), 32, Some(count)).unwrap().with_features()
}

/// Losses and the final table of one training run.
fn run(mut table: TieredTable, window: usize) -> (Vec<f32>, Vec<f32>) {
    let mut model = model();
    let outcome = train(&mut model, &mut table, batches(25), window, &[], 0).unwrap();
    assert_eq!(outcome.steps, 25);
    let mut store = table.close().unwrap();
    let rows: Vec<u64> = (0..store.rows()).collect();
    let mut data = vec![0f32; rows.len() * store.layout().floats()];
    store.read_rows(&rows, &mut data).unwrap();
    (outcome.losses, data)
}

#[test]
fn policies_and_windows_change_speed_never_results() {
    let rows = synthetic().layout().total_rows() as usize;
    let ideal = run(table(TierConfig::rows(0, PolicyConfig::Lru), TierConfig::rows(rows, PolicyConfig::Lru), Hierarchy::Inclusive), 0);
    let setups: Vec<(&str, TieredTable, usize)> = vec![
        ("lru, no prefetch", table(TierConfig::rows(200, PolicyConfig::Lru), TierConfig::rows(1500, PolicyConfig::Lru), Hierarchy::Inclusive), 0),
        ("lru, prefetch 2", table(TierConfig::rows(200, PolicyConfig::Lru), TierConfig::rows(1500, PolicyConfig::Lru), Hierarchy::Inclusive), 2),
        (
            "s3fifo exclusive, prefetch 3",
            table(TierConfig::rows(100, PolicyConfig::from_name("s3fifo").unwrap()), TierConfig::rows(700, PolicyConfig::from_name("s3fifo").unwrap()), Hierarchy::Exclusive),
            3,
        ),
        (
            "static device + lookahead host",
            table(TierConfig::rows(300, PolicyConfig::from_name("static:2000").unwrap()), TierConfig::rows(900, PolicyConfig::from_name("lookahead:20000").unwrap()), Hierarchy::Inclusive),
            2,
        ),
    ];
    for (name, table, window) in setups {
        let (losses, final_table) = run(table, window);
        assert_eq!(losses, ideal.0, "{name}: losses");
        assert!(final_table == ideal.1, "{name}: the final table differs from the all-in-host run");
    }
    assert!(ideal.0.iter().all(|l| l.is_finite()));
}

#[test]
fn training_through_tiers_learns_the_hidden_model() {
    let mut model = model();
    let mut table = table(TierConfig::rows(300, PolicyConfig::Lru), TierConfig::rows(3000, PolicyConfig::from_name("s3fifo").unwrap()), Hierarchy::Inclusive);
    // Held-out batches come from later in the same stream, never trained on.
    let held_out: Vec<Batch> = SyntheticBatches::new(&synthetic(), 64, Some(320)).unwrap().with_features().skip(300).collect();
    let outcome = train(&mut model, &mut table, batches(300), 2, &held_out, 100).unwrap();
    assert_eq!(outcome.evaluations.iter().map(|e| e.step).collect::<Vec<_>>(), vec![100, 200, 300]);
    let last = outcome.evaluations.last().unwrap();
    assert!(last.auc.unwrap() > 0.65, "held-out AUC {:?}", last.auc);
    assert!(last.logloss < outcome.evaluations[0].logloss + 0.05, "{:?}", outcome.evaluations);
    assert_eq!(outcome.samples, 300 * 32);
    assert!(outcome.engine.device.as_ref().unwrap().hits > 0);
}

#[test]
fn serving_counts_requests_and_orders_percentiles() {
    let model = model();
    let mut table = table(TierConfig::rows(100, PolicyConfig::Lru), TierConfig::rows(800, PolicyConfig::Lru), Hierarchy::Inclusive);
    let requests = SyntheticBatches::new(&synthetic(), 4, Some(50)).unwrap().with_features();
    let outcome = serve(&model, &mut table, requests, 1).unwrap();
    assert_eq!((outcome.requests, outcome.queries), (50, 200));
    assert!(outcome.p50_us <= outcome.p95_us && outcome.p95_us <= outcome.p99_us && outcome.p50_us > 0);
    assert_eq!(outcome.latency.count, 50);
}

#[test]
fn batches_without_features_are_refused() {
    let mut model = model();
    let mut table = table(TierConfig::rows(10, PolicyConfig::Lru), TierConfig::rows(100, PolicyConfig::Lru), Hierarchy::Inclusive);
    let lookups_only = SyntheticBatches::new(&synthetic(), 4, Some(2)).unwrap();
    let err = train(&mut model, &mut table, lookups_only, 0, &[], 0).unwrap_err();
    assert!(matches!(err, TrainError::Batch { .. }), "{err}");
    assert!(err.to_string().contains("no labels"), "{err}");
}
