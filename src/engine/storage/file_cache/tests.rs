//! Tests of the file cache over a table file: any sequence of reads and writes reads back
//! what a plain array of the rows would, under every policy; after a sync the store
//! below holds every row; hits are served from the cache file; bad set-ups are refused;
//! a failed call breaks the cache for every later one.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_policies::PolicyConfig;

use super::*;
use crate::engine::storage::{FaultPlan, PageFault, ReadPath};
use crate::engine::{InitRows, Optimizer, RowInit, RowLayout};

const ROWS: u64 = 300;

fn layout() -> RowLayout {
    RowLayout::new(4, &Optimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 })
}

fn init() -> RowInit {
    RowInit::Uniform { seed: 7, scale: 0.5 }
}

/// A fresh table file of the initial rows in `dir`: the store below the cache.
fn below(dir: &std::path::Path) -> Box<dyn BackingStore> {
    Box::new(TableFile::create(&dir.join("below.strata"), ROWS, layout(), init()).unwrap())
}

/// A cache of `slots` rows in `dir` over a fresh table file.
fn cached(dir: &std::path::Path, slots: u64, policy: &str) -> FileCached {
    let cache = TableFile::create(&dir.join("cache.strata"), slots, layout(), RowInit::Zeros).unwrap();
    FileCached::new(cache, below(dir), &PolicyConfig::from_name(policy).unwrap()).unwrap()
}

/// Every row, values and state, as a plain array: what the store must read back.
struct Reference(Vec<f32>);

impl Reference {
    fn new() -> Reference {
        let floats = layout().words();
        let mut data = vec![0f32; ROWS as usize * floats];
        for (row, values) in data.chunks_exact_mut(floats).enumerate() {
            init().fill(row as u64, layout(), values);
        }
        Reference(data)
    }
    fn row(&self, row: u64) -> &[f32] {
        let floats = layout().words();
        &self.0[row as usize * floats..(row as usize + 1) * floats]
    }
    fn read(&self, rows: &[u64]) -> Vec<f32> {
        rows.iter().flat_map(|&row| self.row(row).to_vec()).collect()
    }
    fn write(&mut self, rows: &[u64], data: &[f32]) {
        let floats = layout().words();
        for (&row, values) in rows.iter().zip(data.chunks_exact(floats)) {
            self.0[row as usize * floats..(row as usize + 1) * floats].copy_from_slice(values);
        }
    }
}

fn bits(rows: &[f32]) -> Vec<u32> {
    rows.iter().map(|v| v.to_bits()).collect()
}

/// Every row of `store`.
fn all_rows(store: &mut dyn BackingStore) -> Vec<f32> {
    let rows: Vec<u64> = (0..store.rows()).collect();
    let mut out = vec![0f32; rows.len() * store.layout().words()];
    store.read_rows(&rows, &mut out).unwrap();
    out
}

#[test]
fn reads_and_writes_match_the_rows_written_under_every_policy_and_a_sync_writes_every_row_down() {
    let floats = layout().words();
    for policy in ["lru", "fifo", "clock", "sieve", "arc", "lfu", "s3fifo", "tinylfu", "static:200"] {
        for slots in [1, 7, 64] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = cached(dir.path(), slots, policy);
            let mut reference = Reference::new();
            let mut rng = SmallRng::seed_from_u64(slots);
            let (mut requested, mut out) = (0, Vec::new());
            for call in 0..400 {
                // Skewed rows, repeats within a call included.
                let count = rng.gen_range(1..24);
                let rows: Vec<u64> = (0..count).map(|_| (rng.gen_range(0.0f64..1.0).powi(3) * ROWS as f64) as u64).collect();
                if call % 3 == 2 {
                    let data: Vec<f32> = (0..rows.len() * floats).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    store.write_rows(&rows, &data).unwrap();
                    reference.write(&rows, &data);
                } else {
                    out.resize(rows.len() * floats, 0.0);
                    store.read_rows(&rows, &mut out).unwrap();
                    assert_eq!(bits(&out), bits(&reference.read(&rows)), "{policy}, {slots} slots, call {call}: rows {rows:?}");
                    requested += rows.len() as u64;
                }
                if call % 97 == 0 {
                    store.sync().unwrap();
                }
                assert!(store.cached_rows() <= slots as usize);
            }
            let stats = store.stats();
            assert!(stats.hits + stats.misses <= requested && stats.misses > 0, "{stats:?}");
            assert!(stats.hits > 0 || slots == 1, "{policy}, {slots} slots: no hit in the whole run: {stats:?}");
            store.sync().unwrap();
            let mut below = store.into_below();
            assert_eq!(bits(&all_rows(&mut *below)), bits(&reference.0), "{policy}, {slots} slots: the store below after a sync");
        }
    }
}

#[test]
fn rows_read_again_come_from_the_cache_file_and_dirty_ones_go_down_only_when_evicted_or_synced() {
    let floats = layout().words();
    let dir = tempfile::tempdir().unwrap();
    let mut store = cached(dir.path(), 16, "lru");
    let rows: Vec<u64> = (0..10).collect();
    let mut out = vec![0f32; rows.len() * floats];
    store.read_rows(&rows, &mut out).unwrap();
    assert_eq!((store.stats().hits, store.stats().misses, store.stats().admitted), (0, 10, 10));
    store.read_rows(&rows, &mut out).unwrap();
    assert_eq!((store.stats().hits, store.stats().misses), (10, 10));
    // A write to a cached row stays in the cache file; one to another row goes down.
    let new_row = vec![2.5f32; floats];
    store.write_rows(&[3, 200], &[new_row.clone(), new_row.clone()].concat()).unwrap();
    assert_eq!((store.stats().written_through, store.stats().written_back), (1, 0));
    let mut one = vec![0f32; floats];
    store.read_rows(&[3], &mut one).unwrap();
    assert_eq!(one, new_row);
    store.sync().unwrap();
    assert_eq!(store.stats().written_back, 1);
    // Clean after the sync: a second sync writes nothing.
    store.sync().unwrap();
    assert_eq!(store.stats().written_back, 1);
}

#[test]
fn a_policy_that_needs_the_future_or_a_cache_of_another_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TableFile::create(&dir.path().join("a.strata"), 8, layout(), RowInit::Zeros).unwrap();
    let error = FileCached::new(cache, below(dir.path()), &PolicyConfig::Belady).err().unwrap().to_string();
    assert!(error.contains("a.strata") && error.contains("needs the future"), "{error}");
    let other = RowLayout::new(8, &Optimizer::Sgd { lr: 0.1 });
    let cache = TableFile::create(&dir.path().join("b.strata"), 8, other, RowInit::Zeros).unwrap();
    let error = FileCached::new(cache, below(dir.path()), &PolicyConfig::Lru).err().unwrap().to_string();
    assert!(error.contains("b.strata") && error.contains("the store below"), "{error}");
}

#[test]
fn a_failed_read_of_the_cache_file_fails_every_later_call_and_bad_requests_are_refused() {
    let floats = layout().words();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.strata");
    drop(TableFile::create(&path, 8, layout(), RowInit::Zeros).unwrap());
    let mut cache = TableFile::open(&path, ReadPath::Pread).unwrap();
    let plan = FaultPlan::new();
    cache.inject_faults(plan.clone());
    let mut store = FileCached::new(cache, below(dir.path()), &PolicyConfig::Lru).unwrap();
    let mut out = vec![0f32; 2 * floats];
    let error = store.read_rows(&[1, ROWS], &mut out).unwrap_err().to_string();
    assert!(error.contains(&format!("row {ROWS} is out of range")), "{error}");
    let error = store.read_rows(&[1], &mut out).unwrap_err().to_string();
    assert!(error.contains("cache.strata") && error.contains("buffer holds"), "{error}");
    store.read_rows(&[1, 2], &mut out).unwrap();
    for page in 0..store.cache.header().pages() {
        plan.arm(page, PageFault::ReadEio, 1);
    }
    let error = store.read_rows(&[1, 2], &mut out).unwrap_err().to_string();
    assert!(error.contains("Input/output error"), "{error}");
    let later = store.read_rows(&[5, 6], &mut out).unwrap_err().to_string();
    assert!(later.contains("cache.strata") && later.contains("earlier failure") && later.contains("Input/output error"), "{later}");
    assert!(store.sync().is_err());
}
