//! Criterion bench of the engine's step: a lookup plus a row-wise Adagrad update of
//! synthetic Criteo-shaped batches through the tiered table with every row in the host
//! tier, next to the flat in-memory table doing the same work (the ideal the engine's
//! bookkeeping is measured against).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::data::{SyntheticBatches, SyntheticConfig};
use strata::engine::batch::Batch;
use strata::engine::flat::FlatTable;
use strata::engine::pool::Pooling;
use strata::engine::table::config::TableConfig;
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, RowInit, RowLayout};

const DIM: usize = 64;

fn engine_step(c: &mut Criterion) {
    let synthetic = SyntheticConfig { scale: 0.002, ..SyntheticConfig::default() };
    let rows = synthetic.layout().total_rows();
    let batches: Vec<Batch> = SyntheticBatches::new(&synthetic, 128, Some(16)).expect("config").collect();
    let lookups: usize = batches.iter().map(|b| b.ids.len()).sum();
    let optimizer = Optimizer::default();
    let layout = RowLayout::new(DIM, &optimizer);
    let init = RowInit::Uniform { seed: 1, scale: 0.05 };
    let grads: Vec<Vec<f32>> = batches.iter().map(|b| vec![0.01; b.bags() * DIM]).collect();

    let mut group = c.benchmark_group("engine_step");
    group.throughput(Throughput::Elements(lookups as u64));
    group.sample_size(10);

    // One output buffer for every step, as a training loop keeps it.
    let mut out = vec![0f32; batches.iter().map(Batch::bags).max().unwrap_or(0) * DIM];
    let mut flat = FlatTable::new(rows, layout, init);
    group.bench_function("flat_table", |b| {
        b.iter(|| {
            for (batch, g) in batches.iter().zip(&grads) {
                let out = &mut out[..batch.bags() * DIM];
                flat.lookup(batch, Pooling::Sum, out);
                flat.apply_gradients(batch, g, &optimizer, Pooling::Sum);
            }
        })
    });

    let config = TableConfig::host_only(rows, optimizer, Pooling::Sum);
    let mut table = TieredTable::new(&config, Box::new(FlatTable::new(rows, layout, init))).expect("table");
    // Warm: every row the batches touch is in the host tier before timing.
    for batch in &batches {
        table.lookup(batch, &mut out[..batch.bags() * DIM]).expect("lookup");
    }
    group.bench_function("tiered_all_in_host", |b| {
        b.iter(|| {
            for (batch, g) in batches.iter().zip(&grads) {
                let out = &mut out[..batch.bags() * DIM];
                table.lookup(batch, out).expect("lookup");
                table.apply_gradients(batch, g).expect("update");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, engine_step);
criterion_main!(benches);
