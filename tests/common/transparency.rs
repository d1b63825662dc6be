//! The transparency check shared by the engine tests: random skewed batches of lookups
//! and updates through a tiered table (with prefetch, flushes and re-opens), every
//! pooled output and every row compared bit for bit with a flat in-memory table.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::prefetch::Prefetcher;
use strata::engine::storage::BackingStore;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, Rounding, RowInit};
use strata_policies::PolicyConfig;

/// Random batches: `bags` bags of 1..=4 lookups, rows skewed towards small ids.
pub fn batches(rng: &mut SmallRng, rows: u64, count: usize, bags: usize) -> Vec<Batch> {
    let mut start = 0;
    (0..count)
        .map(|_| {
            let mut ids = Vec::new();
            let mut offsets = vec![0];
            for _ in 0..bags {
                for _ in 0..rng.gen_range(1..=4) {
                    let u: f64 = rng.gen();
                    ids.push(((u * u * u) * rows as f64) as u64);
                }
                offsets.push(ids.len());
            }
            let batch = Batch::new(ids, offsets, start);
            start += batch.ids.len() as u64;
            batch
        })
        .collect()
}

/// A tiered-table set-up to check.
pub struct Case {
    pub policy: &'static str,
    pub hierarchy: Hierarchy,
    pub device_rows: usize,
    pub host_rows: usize,
    pub window: usize,
    pub optimizer: Optimizer,
    pub pooling: Pooling,
    pub write_buffer_rows: usize,
    /// How updates round into half-precision rows (the store's layout says which dtype).
    pub rounding: Rounding,
}

/// The batches a check runs: `segments` re-opens of the table, each over `batches`
/// batches of `bags` bags.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub segments: usize,
    pub batches: usize,
    pub bags: usize,
}

/// Runs `case` over `store` for `stream`, comparing every pooled output and, after each
/// segment, every row with a flat reference; `reopen` turns the store a closed table
/// handed back into the next segment's store (a table file is closed and opened again
/// from its path).
pub fn check_with_store(
    case: &Case,
    stream: Stream,
    seed: u64,
    mut store: Box<dyn BackingStore>,
    reopen: &dyn Fn(Box<dyn BackingStore>) -> Box<dyn BackingStore>,
) {
    let rows = store.rows();
    let layout = store.layout();
    let dim = layout.dim;
    let init = RowInit::Uniform { seed, scale: 0.1 };
    let mut reference = FlatTable::new(rows, layout, init).with_rounding(case.rounding);
    let policy = PolicyConfig::from_name(case.policy).unwrap();
    let config = TableConfig {
        device: TierConfig::rows(case.device_rows, policy.clone()),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(case.host_rows, policy),
        hierarchy: case.hierarchy,
        optimizer: case.optimizer,
        pooling: case.pooling,
        write_buffer_rows: case.write_buffer_rows,
        rounding: case.rounding,
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let what = format!(
        "{} {:?} device {} host {} window {} write buffer {} {:?} {:?} {} rows {:?} seed {seed}",
        case.policy,
        case.hierarchy,
        case.device_rows,
        case.host_rows,
        case.window,
        case.write_buffer_rows,
        case.optimizer,
        case.pooling,
        layout.dtype,
        case.rounding
    );
    for segment in 0..stream.segments {
        let all = batches(&mut rng, rows, stream.batches, stream.bags);
        let mut table = TieredTable::new(&config, store).unwrap();
        let mut prefetcher = Prefetcher::new(all.clone().into_iter(), case.window);
        let mut served = 0;
        while let Some(batch) = prefetcher.next(|b| table.prefetch(b)).unwrap_or_else(|e| panic!("{what}: prefetch: {e}")) {
            assert_eq!(batch.ids, all[served].ids, "{what}: batches arrive in order");
            let mut out = vec![0f32; batch.bags() * dim];
            let mut expected = vec![0f32; batch.bags() * dim];
            table.lookup(&batch, &mut out).unwrap_or_else(|e| panic!("{what}: lookup: {e}"));
            reference.lookup(&batch, case.pooling, &mut expected);
            assert_eq!(out, expected, "{what}: segment {segment} batch {served} lookup");
            let grads: Vec<f32> = (0..out.len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            table.apply_gradients(&batch, &grads).unwrap_or_else(|e| panic!("{what}: update: {e}"));
            reference.apply_gradients(&batch, &grads, &case.optimizer, case.pooling);
            if rng.gen_ratio(1, 5) {
                table.flush().unwrap();
            }
            served += 1;
        }
        assert_eq!(served, all.len());
        let stats = table.stats();
        assert_eq!(stats.lookups, all.iter().map(|b| b.ids.len() as u64).sum::<u64>(), "{what}");
        // The case really moved rows: read-ahead happened, small tiers admitted rows and
        // evicted some or, full of a batch's pinned rows, refused some (a one-row device
        // holding the hottest row may never evict: nearly every batch pins it).
        if case.window > 0 {
            assert!(stats.prefetched_rows > 0, "{what}: nothing was read ahead");
        }
        if case.write_buffer_rows > 0 && stats.store_writes > 0 {
            assert!(stats.write_buffer.rows_in > 0, "{what}: the write-back buffer took nothing in");
        }
        if let Some(device) = stats.device.as_ref().filter(|_| case.device_rows < 20 && !case.policy.starts_with("static")) {
            assert!(device.promotions > 0 && (device.evictions > 0 || device.misses > device.promotions), "{what}: {device:?}");
        }
        store = reopen(table.close().unwrap());
        let mut got = vec![0f32; rows as usize * layout.words()];
        let all_rows: Vec<u64> = (0..rows).collect();
        store.read_rows(&all_rows, &mut got).unwrap();
        for r in 0..rows {
            let f = layout.words();
            // Bits, not floats: a half-precision row's words are packed values.
            let bits = |words: &[f32]| words.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[r as usize * f..(r as usize + 1) * f]), bits(reference.row(r)), "{what}: row {r} after segment {segment}");
        }
    }
}
