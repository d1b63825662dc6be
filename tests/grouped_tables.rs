//! A grouped table (tables of several dims, one tiered table per dim) against each table
//! alone in memory: through tiers far smaller than its groups, with read-ahead, weighted
//! and empty bags, every pooled value and every row after the updates is bit-identical
//! to per-table flat tables given each table's own bags; batches that do not fit its
//! tables are refused before any row moves.

use strata::engine::batch::Batch;
use strata::engine::collection::{EmbeddingTableConfig, TableGroup};
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::grouped::{Embeddings, GroupedTable};
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{EngineError, Optimizer, RowInit, RowLayout};
use strata::hash::mix64;
use strata_policies::PolicyConfig;

const OPTIMIZER: Optimizer = Optimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 };
const ROWS: [u64; 4] = [50, 30, 70, 20];
const DIMS: [usize; 4] = [4, 8, 4, 2];
const SAMPLES: usize = 5;

fn groups() -> Vec<TableGroup> {
    let table = |t: usize| EmbeddingTableConfig {
        name: format!("t{t}"),
        rows: ROWS[t],
        dim: DIMS[t],
        pooling: Pooling::Sum,
        features: vec![format!("t{t}")],
        init_scale: 0.1,
        dtype: Default::default(),
    };
    TableGroup::of(&(0..ROWS.len()).map(table).collect::<Vec<_>>())
}

/// The grouped table over tiers of `device` and `host` rows per group, and each table
/// alone in a flat table holding the same initial rows.
fn tables(device: usize, host: usize, policy: PolicyConfig) -> (GroupedTable, Vec<FlatTable>) {
    let mut alone: Vec<FlatTable> =
        DIMS.iter().zip(ROWS).map(|(&dim, rows)| FlatTable::new(rows, RowLayout::new(dim, &OPTIMIZER), RowInit::Zeros)).collect();
    let mut parts = Vec::new();
    for (g, group) in groups().into_iter().enumerate() {
        let store = FlatTable::new(group.rows, RowLayout::new(group.dim, &OPTIMIZER), RowInit::Uniform { seed: g as u64, scale: 0.1 });
        for (&t, &first) in group.tables.iter().zip(&group.first_rows) {
            for row in 0..ROWS[t] {
                alone[t].row_mut(row).copy_from_slice(store.row(first + row));
            }
        }
        let config = TableConfig {
            device: TierConfig::rows(device, policy.clone()),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(host, policy.clone()),
            hierarchy: Hierarchy::Inclusive,
            optimizer: OPTIMIZER,
            pooling: Pooling::Sum,
            write_buffer_rows: 2,
            rounding: Default::default(),
        };
        parts.push((group, TieredTable::new(&config, Box::new(store)).unwrap()));
    }
    (GroupedTable::new(parts).unwrap(), alone)
}

/// Step `step`'s batch: `SAMPLES` samples, each a bag (0 to 3 rows, numbered across the
/// tables) in every table, weighted on odd steps.
fn batch(step: u64) -> Batch {
    let firsts: Vec<u64> = ROWS.iter().scan(0, |first, &rows| Some(std::mem::replace(first, *first + rows))).collect();
    let (mut ids, mut offsets) = (Vec::new(), vec![0]);
    for s in 0..SAMPLES as u64 {
        for (t, &rows) in ROWS.iter().enumerate() {
            let key = mix64(step << 32 | s << 8 | t as u64);
            for k in 0..key % 4 {
                // Skewed: low rows come back often, so the small tiers hit and evict.
                ids.push(firsts[t] + mix64(key ^ k) % rows.min(1 + mix64(key + k) % rows));
            }
            offsets.push(ids.len());
        }
    }
    let mut batch = Batch::new(ids, offsets, step * 1000);
    if step % 2 == 1 {
        batch.weights = (0..batch.ids.len()).map(|i| 0.5 + (i % 3) as f32).collect();
    }
    batch
}

/// Table `t`'s bags of `batch` (sample after sample), rows numbered in the table.
fn table_batch(batch: &Batch, t: usize) -> Batch {
    let first: u64 = ROWS[..t].iter().sum();
    let (mut ids, mut offsets, mut weights) = (Vec::new(), vec![0], Vec::new());
    for s in 0..SAMPLES {
        let bag = s * ROWS.len() + t;
        for i in batch.bag_offsets[bag]..batch.bag_offsets[bag + 1] {
            ids.push(batch.ids[i] - first);
            weights.extend(batch.weights.get(i));
        }
        offsets.push(ids.len());
    }
    Batch { weights, ..Batch::new(ids, offsets, batch.start) }
}

fn width() -> usize {
    DIMS.iter().sum()
}

#[test]
fn a_grouped_table_pools_and_updates_each_table_as_if_it_were_alone() {
    for policy in [PolicyConfig::Lru, PolicyConfig::from_name("lookahead:1000").unwrap()] {
        let (mut grouped, mut alone) = tables(2, 5, policy.clone());
        assert_eq!(grouped.groups().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["dim4-sum", "dim8-sum", "dim2-sum"]);
        grouped.prefetch(&batch(0)).unwrap();
        for step in 0..12 {
            let batch = batch(step);
            grouped.prefetch(&self::batch(step + 1)).unwrap();
            let mut out = vec![0.0; grouped.output_len(&batch).unwrap()];
            assert_eq!(out.len(), SAMPLES * width());
            grouped.lookup(&batch, &mut out).unwrap();
            let grads: Vec<f32> = (0..out.len()).map(|i| ((mix64(step * 977 + i as u64) % 200) as f32 - 100.0) * 1e-3).collect();
            for (t, flat) in alone.iter_mut().enumerate() {
                let (dim, offset) = (DIMS[t], DIMS[..t].iter().sum::<usize>());
                let own = table_batch(&batch, t);
                let mut expected = vec![0.0; SAMPLES * dim];
                flat.lookup(&own, Pooling::Sum, &mut expected);
                let (got, own_grads): (Vec<f32>, Vec<f32>) =
                    (0..SAMPLES).flat_map(|s| (0..dim).map(move |d| s * width() + offset + d)).map(|i| (out[i], grads[i])).unzip();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&expected), "{policy:?}, step {step}, table {t}: pooled values");
                flat.apply_gradients(&own, &own_grads, &OPTIMIZER, Pooling::Sum);
            }
            grouped.apply_gradients(&batch, &grads).unwrap();
        }
        grouped.flush().unwrap();
        let stats = grouped.stats();
        assert!(stats.host.as_ref().is_some_and(|h| h.hits > 0 && h.misses > 0 && h.capacity_rows == 15), "{policy:?}: {stats:?}");
        assert!(stats.store_writes > 0 && grouped.store_rows_read() > 0, "{policy:?}: rows moved to and from the stores");
        for (group, part) in grouped.groups().cloned().collect::<Vec<_>>().into_iter().zip(grouped.parts_mut()) {
            for (&t, &first) in group.tables.iter().zip(&group.first_rows) {
                let staged = part.read_rows((first..first + ROWS[t]).collect()).unwrap();
                let words = part.layout().words();
                for (row, values) in staged.data.chunks_exact(words).enumerate() {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(values), bits(alone[t].row(row as u64)), "{policy:?}: table {t} row {row} after training");
                }
            }
        }
    }
}

#[test]
fn a_batch_that_does_not_fit_the_tables_is_refused_before_any_row_moves() {
    let (mut grouped, _) = tables(2, 5, PolicyConfig::Lru);
    let mut out = vec![0.0; SAMPLES * width()];
    // Bags that are not whole samples of the 4 tables.
    let ragged = Batch::new(vec![1, 2, 3], vec![0, 1, 2, 3], 0);
    let error = grouped.lookup(&ragged, &mut out).unwrap_err();
    assert!(matches!(error, EngineError::Samples { start: 0, .. }), "{error}");
    assert_eq!(error.to_string(), "batch at 0: 3 bags are not a whole number of samples of 4 tables");
    // A row of table 1 (rows 50..80) in a bag of table 0.
    let wrong = Batch::new(vec![60], vec![0, 1, 1, 1, 1], 0);
    let error = grouped.lookup(&wrong, &mut out[..width()]).unwrap_err();
    assert_eq!(error.to_string(), "batch at 0: row 60 in a bag of table 0, whose rows are 0..50");
    // The output of one sample too few.
    let error = grouped.lookup(&batch(0), &mut out[width()..]).unwrap_err();
    assert!(matches!(error, EngineError::Length { needs, .. } if needs == SAMPLES * width()), "{error}");
    // Gradients of a batch not looked up.
    grouped.lookup(&batch(0), &mut out).unwrap();
    let error = grouped.apply_gradients(&batch(1), &out).unwrap_err();
    assert!(error.to_string().contains("gradients of a batch that was not the last looked up"), "{error}");
    assert_eq!(grouped.stats().store_writes, 0, "nothing written");
    assert!(grouped.only().err().is_some_and(|e| e.to_string().contains("3 of them")), "publishing needs one group");
}

#[test]
fn groups_must_match_their_tiered_tables() {
    let mut group = groups().remove(0);
    group.rows += 1;
    let store = FlatTable::new(120, RowLayout::new(4, &OPTIMIZER), RowInit::Zeros);
    let table = TieredTable::new(&TableConfig::host_only(120, OPTIMIZER, Pooling::Sum), Box::new(store)).unwrap();
    let error = GroupedTable::new(vec![(group, table)]).err().unwrap().to_string();
    assert!(error.contains("table group `dim4-sum` of 121 rows of dim 4 has a tiered table of 120 rows"), "{error}");
    assert_eq!(GroupedTable::new(Vec::new()).err().unwrap().to_string(), "table groups: no tables");
}
