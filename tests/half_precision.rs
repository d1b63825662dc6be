//! Half-precision rows (f16 and bf16, FBGEMM's `weights_precision`): a tiered table of
//! either dtype, rounding to nearest or stochastically, gives bit-identical outputs and
//! final rows to a flat table of the same dtype through every policy and hierarchy, from
//! memory and from a table file; the table file records the dtype, stores the rows at
//! half the bytes of their values, and a collection refuses to resume with another.

use strata::engine::batch::Batch;
use strata::engine::collection::{CollectionConfig, EmbeddingTableConfig, FeatureBags, TableCollection};
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::{BackingStore, ReadPath, TableFile};
use strata::engine::{Dtype, Optimizer, Rounding, RowInit, RowLayout};
use strata_policies::PolicyConfig;

mod common;
use common::transparency::{check_with_store, Case, Stream};

const ADAGRAD: Optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
const SHORT: Stream = Stream { segments: 2, batches: 10, bags: 6 };
const HALVES: [Dtype; 2] = [Dtype::F16, Dtype::Bf16];

fn case(policy: &'static str, hierarchy: Hierarchy, sizes: (usize, usize, usize, usize), rounding: Rounding) -> Case {
    let (device_rows, host_rows, window, write_buffer_rows) = sizes;
    Case { policy, hierarchy, device_rows, host_rows, window, optimizer: ADAGRAD, pooling: Pooling::Sum, write_buffer_rows, rounding }
}

#[test]
fn half_precision_tiered_tables_match_a_flat_table_of_the_same_dtype() {
    let mut seed = 1;
    for dtype in HALVES {
        for rounding in [Rounding::Nearest, Rounding::Stochastic] {
            for policy in ["lru", "s3fifo", "tinylfu", "lookahead:40", "static:30"] {
                for hierarchy in [Hierarchy::Inclusive, Hierarchy::Exclusive] {
                    for sizes in [(8, 40, 2, 0), (3, 5, 0, 7), (0, 25, 3, 0)] {
                        // An odd dim: the last word of each row holds one value.
                        let layout = RowLayout::new(5, &ADAGRAD).with_dtype(dtype);
                        let store = FlatTable::new(120, layout, RowInit::Uniform { seed, scale: 0.1 });
                        check_with_store(&case(policy, hierarchy, sizes, rounding), SHORT, seed, Box::new(store), &|s| s);
                        seed += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn mean_pooling_and_sgd_match_too() {
    for (seed, dtype) in HALVES.into_iter().enumerate() {
        let optimizer = Optimizer::Sgd { lr: 0.1 };
        let layout = RowLayout::new(8, &optimizer).with_dtype(dtype);
        let seed = 77 + seed as u64;
        let store = FlatTable::new(120, layout, RowInit::Uniform { seed, scale: 0.1 });
        let case = Case { optimizer, pooling: Pooling::Mean, ..case("arc", Hierarchy::Inclusive, (6, 20, 1, 9), Rounding::Stochastic) };
        check_with_store(&case, SHORT, seed, Box::new(store), &|s| s);
    }
}

#[test]
fn a_half_precision_table_file_records_its_dtype_and_matches_the_flat_table() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in HALVES {
        let path = dir.path().join(format!("{dtype}.strata"));
        let layout = RowLayout::new(128, &ADAGRAD).with_dtype(dtype);
        TableFile::create(&path, 120, layout, RowInit::Uniform { seed: 9, scale: 0.1 }).unwrap();
        let file = TableFile::open(&path, ReadPath::IoUring).unwrap();
        assert_eq!(file.layout(), layout, "the header records the dtype");
        // 64 words of values + 1 state = 260 bytes: 15 rows a 4 KiB page, 8 pages.
        assert_eq!(layout.bytes(), 260);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096 + 8 * 4096);
        let reopen = |closed: Box<dyn BackingStore>| -> Box<dyn BackingStore> {
            drop(closed);
            Box::new(TableFile::open(&path, ReadPath::IoUring).unwrap())
        };
        let case = case("lru", Hierarchy::Inclusive, (5, 17, 2, 11), Rounding::Stochastic);
        check_with_store(&case, SHORT, 9, Box::new(file), &reopen);
    }
}

#[test]
fn half_precision_rows_hold_the_rounded_initial_values_and_pool_them_in_f32() {
    let init = RowInit::Uniform { seed: 4, scale: 0.5 };
    let wide = FlatTable::new(10, RowLayout::new(6, &ADAGRAD), init);
    for dtype in HALVES {
        let mut half = FlatTable::new(10, RowLayout::new(6, &ADAGRAD).with_dtype(dtype), init);
        let batch = Batch::new(vec![3, 7], vec![0, 2], 0);
        let mut out = vec![0f32; 6];
        half.lookup(&batch, Pooling::Sum, &mut out);
        let mut rounded = [[0f32; 6]; 2];
        for (row, r) in rounded.iter_mut().zip([3, 7]) {
            let stored = &mut [0f32; 3];
            dtype.encode(&wide.row(r)[..6], stored, Rounding::Nearest, 0);
            dtype.decode(stored, row);
            for (&h, &w) in row.iter().zip(&wide.row(r)[..6]) {
                let tolerance = if dtype == Dtype::F16 { 1e-3 } else { 4e-3 };
                assert!((h - w).abs() <= w.abs() * tolerance, "{dtype}: {h} rounds {w}");
            }
        }
        let expected: Vec<f32> = (0..6).map(|j| rounded[0][j] + rounded[1][j]).collect();
        assert_eq!(out, expected, "{dtype}: pooled in f32 from the stored values");
    }
}

fn collection_config(dir: &std::path::Path, dtype: Dtype) -> CollectionConfig {
    let table = |name: &str, dim, dtype| EmbeddingTableConfig {
        name: name.into(),
        rows: 50,
        dim,
        pooling: Pooling::Sum,
        features: vec![format!("f_{name}")],
        init_scale: 0.1,
        dtype,
    };
    CollectionConfig {
        tables: vec![table("a", 8, dtype), table("b", 8, Dtype::F32), table("c", 8, dtype)],
        device: 0.1,
        host: 0.3,
        device_policy: PolicyConfig::Lru,
        host_policy: PolicyConfig::Lru,
        hierarchy: Hierarchy::Inclusive,
        device_backend: Default::default(),
        optimizer: ADAGRAD,
        seed: 3,
        table_dir: Some(dir.to_path_buf()),
        read_path: ReadPath::Pread,
        write_buffer: 0.0,
        rounding: Rounding::Stochastic,
    }
}

#[test]
fn a_collection_groups_tables_by_dtype_and_refuses_to_resume_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let config = collection_config(dir.path(), Dtype::F16);
    let mut collection = TableCollection::new(&config).unwrap();
    let groups: Vec<(String, Dtype, Vec<usize>)> = collection.groups().map(|g| (g.name.clone(), g.dtype, g.tables.clone())).collect();
    assert_eq!(groups, [("dim8-sum-f16".to_string(), Dtype::F16, vec![0, 2]), ("dim8-sum".to_string(), Dtype::F32, vec![1])]);
    assert!(dir.path().join("dim8-sum-f16.strata").exists());
    let values = [1i64, 2, 3];
    let offsets = [0i64, 1, 3];
    let bags = [FeatureBags { values: &values, offsets: &offsets, weights: &[] }; 3];
    let (mut half, mut full) = (vec![0f32; 2 * 2 * 8], vec![0f32; 2 * 8]);
    collection.lookup(&bags, &mut [&mut half, &mut full], false).unwrap();
    assert!(half.iter().chain(&full).all(|v| v.is_finite() && *v != 0.0));
    collection.checkpoint(1).unwrap();
    drop(collection);
    let err = TableCollection::resume(&collection_config(dir.path(), Dtype::Bf16)).err().expect("refused").to_string();
    assert!(err.contains("collection.json") && err.contains("table `a`") && err.contains("f16") && err.contains("bf16"), "{err}");
    let (_, checkpoint) = TableCollection::resume(&config).unwrap();
    assert_eq!(checkpoint, 1);
}
