//! Transparency: for every policy, both hierarchies, many capacities (down to smaller
//! than one batch) and prefetch windows, random sequences of lookups, updates, flushes
//! and re-opens give bit-identical pooled outputs and final tables to a flat in-memory
//! table.

use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::{BackingStore, ReadPath, TableFile};
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, Rounding, RowInit, RowLayout};
use strata_policies::PolicyConfig;

mod common;
use common::transparency::{check_with_store, Case, Stream};

/// Three segments of 12 batches of 6 bags.
const SHORT: Stream = Stream { segments: 3, batches: 12, bags: 6 };

/// Runs `case` for `segments` re-opens over the same batches and compares every
/// output and the final table with the flat reference.
fn check(case: &Case, seed: u64) {
    let rows = 120u64;
    let layout = RowLayout::new(4, &case.optimizer);
    let init = RowInit::Uniform { seed, scale: 0.1 };
    check_with_store(case, SHORT, seed, Box::new(FlatTable::new(rows, layout, init)), &|store| store);
}

const POLICIES: [&str; 11] = ["lru", "fifo", "clock", "lfu", "arc", "s3fifo", "sieve", "tinylfu", "belady", "lookahead:40", "static:30"];

#[test]
fn every_policy_and_hierarchy_matches_the_flat_table() {
    let mut seed = 1;
    for policy in POLICIES {
        for hierarchy in [Hierarchy::Inclusive, Hierarchy::Exclusive] {
            let sets = [(8, 40, 2, 0), (3, 5, 0, 7), (1, 1, 1, 1), (30, 0, 1, 16), (0, 25, 3, 0), (60, 119, 2, 5)];
            for (device_rows, host_rows, window, write_buffer_rows) in sets {
                let case = Case {
                    policy,
                    hierarchy,
                    device_rows,
                    host_rows,
                    window,
                    optimizer: Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 },
                    pooling: Pooling::Sum,
                    write_buffer_rows,
                    rounding: Rounding::Nearest,
                };
                check(&case, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn sgd_and_mean_pooling_match_the_flat_table() {
    for (seed, policy) in POLICIES.iter().enumerate() {
        let case = Case {
            policy,
            hierarchy: if seed % 2 == 0 { Hierarchy::Inclusive } else { Hierarchy::Exclusive },
            device_rows: 6,
            host_rows: 20,
            window: seed % 3,
            optimizer: Optimizer::Sgd { lr: 0.1 },
            pooling: Pooling::Mean,
            write_buffer_rows: seed % 2 * 9,
            rounding: Default::default(),
        };
        check(&case, 1000 + seed as u64);
    }
}

/// Two-row device and four-row host tiers, LRU, inclusive.
fn small_config(optimizer: Optimizer) -> TableConfig {
    TableConfig {
        device: TierConfig::rows(2, PolicyConfig::Lru),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(4, PolicyConfig::Lru),
        hierarchy: Hierarchy::Inclusive,
        optimizer,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Default::default(),
    }
}

#[test]
fn rows_out_of_range_are_errors_not_panics() {
    let layout = RowLayout::new(4, &Optimizer::default());
    let store = Box::new(FlatTable::new(10, layout, RowInit::Zeros));
    let config = small_config(Optimizer::default());
    let mut table = TieredTable::new(&config, store).unwrap();
    let batch = Batch::new(vec![1, 10], vec![0, 2], 0);
    let mut out = vec![0f32; 4];
    let err = table.lookup(&batch, &mut out).unwrap_err().to_string();
    assert!(err.contains("row 10") && err.contains("10 rows"), "{err}");
    let err = table.apply_gradients(&batch, &[0.0; 4]).unwrap_err().to_string();
    assert!(err.contains("row 10"), "{err}");
    let bad_shape = Batch::new(vec![1], vec![0, 1], 0);
    assert!(table.lookup(&bad_shape, &mut [0f32; 3]).is_err());
    let bad_offsets = Batch::new(vec![1, 2], vec![0, 3], 0);
    let err = table.lookup(&bad_offsets, &mut [0f32; 4]).unwrap_err().to_string();
    assert!(err.contains("bag offsets"), "{err}");
    let mut bad_future = Batch::new(vec![1, 2], vec![0, 2], 0);
    bad_future.next_access.pop();
    assert!(table.apply_gradients(&bad_future, &[0.0; 4]).is_err());
}

#[test]
fn a_table_whose_optimizer_state_does_not_match_is_refused() {
    let layout = RowLayout::new(4, &Optimizer::Sgd { lr: 0.1 });
    let store = Box::new(FlatTable::new(10, layout, RowInit::Zeros));
    let config = small_config(Optimizer::default());
    let err = TieredTable::new(&config, store).err().expect("refused").to_string();
    assert!(err.contains("optimizer"), "{err}");
}

#[test]
fn table_files_with_every_read_path_match_the_flat_table() {
    let dir = tempfile::tempdir().unwrap();
    for (i, read_path) in [ReadPath::IoUring, ReadPath::Mmap, ReadPath::Pread].into_iter().enumerate() {
        for hierarchy in [Hierarchy::Inclusive, Hierarchy::Exclusive] {
            let seed = 500 + i as u64;
            let optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
            let path = dir.path().join(format!("t{i}-{hierarchy:?}.strata"));
            let layout = RowLayout::new(4, &optimizer);
            TableFile::create(&path, 120, layout, RowInit::Uniform { seed, scale: 0.1 }).unwrap();
            let store = Box::new(TableFile::open(&path, read_path).unwrap());
            // Exclusive set-ups hold write-backs in a buffer (pages coalesced on disk).
            let write_buffer_rows = if hierarchy == Hierarchy::Exclusive { 11 } else { 0 };
            let case = Case {
                policy: "s3fifo",
                hierarchy,
                device_rows: 5,
                host_rows: 17,
                window: 2,
                optimizer,
                pooling: Pooling::Sum,
                write_buffer_rows,
                rounding: Rounding::Nearest,
            };
            let reopen = |closed: Box<dyn BackingStore>| -> Box<dyn BackingStore> {
                drop(closed);
                Box::new(TableFile::open(&path, read_path).unwrap())
            };
            check_with_store(&case, SHORT, seed, store, &reopen);
        }
    }
}

#[test]
fn a_corrupted_page_reaches_the_caller_as_an_error_naming_table_page_and_row() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.strata");
    let optimizer = Optimizer::default();
    let layout = RowLayout::new(4, &optimizer);
    TableFile::create(&path, 100, layout, RowInit::Uniform { seed: 1, scale: 0.1 }).unwrap();
    let header = *TableFile::open(&path, ReadPath::Pread).unwrap().header();
    let page = header.page_of(42);
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(header.page_offset(page) + 7)).unwrap();
    file.write_all(&[0xA5]).unwrap();
    drop(file);
    let config = small_config(optimizer);
    let mut table = TieredTable::new(&config, Box::new(TableFile::open(&path, ReadPath::IoUring).unwrap())).unwrap();
    let batch = Batch::new(vec![42, 42], vec![0, 2], 0);
    let err = table.lookup(&batch, &mut [0f32; 4]).unwrap_err().to_string();
    assert!(err.contains("bad.strata") && err.contains(&format!("page {page}")) && err.contains("row 42"), "{err}");
}

#[test]
fn the_engine_sees_the_hit_ratios_the_simulator_predicts() {
    use strata::data::{SyntheticBatches, SyntheticConfig};
    use strata_policies::{replay, Admission, ReplayStats, Request};
    let synthetic = SyntheticConfig { scale: 0.0005, ..SyntheticConfig::default() };
    let batches: Vec<Batch> = SyntheticBatches::new(&synthetic, 16, Some(30)).unwrap().collect();
    let rows = synthetic.layout().total_rows();
    let optimizer = Optimizer::default();
    let layout = RowLayout::new(4, &optimizer);
    for name in ["lru", "s3fifo", "sieve", "arc"] {
        let policy = PolicyConfig::from_name(name).unwrap();
        let config = TableConfig {
            device: TierConfig::rows(300, policy.clone()),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(2000, policy.clone()),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0,
            rounding: Default::default(),
        };
        let mut table = TieredTable::new(&config, Box::new(FlatTable::new(rows, layout, RowInit::Zeros))).unwrap();
        for batch in &batches {
            table.lookup(batch, &mut vec![0f32; batch.bags() * 4]).unwrap();
        }
        let engine = table.stats();
        // The device sees every lookup; the host sees the device's misses. Each row is
        // pinned in both once looked up, until the next batch, as the engine pins them.
        let mut device = policy.build(300).unwrap();
        let mut host = policy.build(2000).unwrap();
        let (mut device_stats, mut host_stats) = (ReplayStats::default(), ReplayStats::default());
        let mut time = 0;
        for batch in &batches {
            device.unpin_all();
            host.unpin_all();
            for &id in &batch.ids {
                let req = [Request::new(id, time)];
                time += 1;
                let before = device_stats.misses;
                replay(device.as_mut(), &mut Admission::always(), &req, &mut device_stats);
                if device_stats.misses > before {
                    replay(host.as_mut(), &mut Admission::always(), &req, &mut host_stats);
                }
                device.pin(id);
                host.pin(id);
            }
        }
        let device_engine = engine.device.unwrap();
        let host_engine = engine.host.unwrap();
        assert_eq!(device_engine.misses, device_stats.misses, "{name}: device misses");
        assert_eq!(device_engine.hits, device_stats.hits(), "{name}: device hits");
        assert_eq!(host_engine.misses, host_stats.misses, "{name}: host misses");
    }
}
