//! The collection's tests: tiered tables of two dims (two tables sharing one group)
//! against all-in-host bit for bit, the groups' layout and initial rows,
//! crash and resume at a checkpoint (its numbers rising; a fresh collection clearing an
//! earlier checkpoint), and the checks of its inputs.

use super::*;
use crate::engine::device::DeviceKind;
use crate::engine::placement::Hierarchy;
use crate::engine::pool::Pooling;
use crate::engine::storage::ReadPath;
use crate::engine::{Dtype, Rounding};
use strata_policies::PolicyConfig;

fn config(device: f64, host: f64) -> CollectionConfig {
    let table = |name: &str, rows, dim, pooling, features: &[&str]| EmbeddingTableConfig {
        name: name.into(),
        rows,
        dim,
        pooling,
        features: features.iter().map(|f| f.to_string()).collect(),
        init_scale: 0.1,
        dtype: Dtype::F32,
    };
    CollectionConfig {
        tables: vec![
            table("a", 50, 4, Pooling::Sum, &["f1", "f2"]),
            table("b", 30, 8, Pooling::Mean, &["f3"]),
            table("c", 20, 4, Pooling::Sum, &["f4"]),
        ],
        device,
        host,
        device_policy: PolicyConfig::Lru,
        host_policy: PolicyConfig::Lru,
        hierarchy: Hierarchy::Inclusive,
        device_backend: DeviceKind::Emulated,
        optimizer: Optimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 },
        seed: 7,
        table_dir: None,
        read_path: ReadPath::IoUring,
        write_buffer: 0.0,
        rounding: Rounding::Nearest,
    }
}

/// Each feature's values, offsets and weights.
type Step = (Vec<Vec<i64>>, Vec<Vec<i64>>, Vec<Vec<f32>>);

/// A step's features: f1 and f2 (table a, f2 weighted), f3 (table b) and f4 (table c,
/// in a's group, unweighted: its values weigh 1).
fn step(k: i64) -> Step {
    let values = vec![vec![k % 50, (3 * k) % 50, 1], vec![(k + 7) % 50, 2], vec![k % 30, (k * k) % 30, 5, 5], vec![1, k % 20, 19]];
    let offsets = vec![vec![0, 2, 3], vec![0, 0, 2], vec![0, 1, 4], vec![0, 2, 3]];
    let weights = vec![vec![], vec![0.5, 2.0], vec![], vec![]];
    (values, offsets, weights)
}

fn features<'a>(values: &'a [Vec<i64>], offsets: &'a [Vec<i64>], weights: &'a [Vec<f32>]) -> Vec<FeatureBags<'a>> {
    (0..values.len()).map(|i| FeatureBags { values: &values[i], offsets: &offsets[i], weights: &weights[i] }).collect()
}

/// Trains `steps` steps (announcing `ahead` steps in advance) and returns the outputs
/// and the final rows of the tables.
fn train(collection: TableCollection, steps: i64, ahead: i64) -> (Vec<u32>, Vec<Vec<u32>>) {
    let (mut collection, mut seen) = (collection, Vec::new());
    train_steps(&mut collection, 0..steps, ahead, &mut seen);
    (seen, rows_of(&mut collection))
}

/// Trains `steps`, announcing `ahead` steps in advance (none beyond the range),
/// adding the outputs' bits to `seen`.
fn train_steps(collection: &mut TableCollection, steps: std::ops::Range<i64>, ahead: i64, seen: &mut Vec<u32>) {
    for k in steps.start..(steps.start + ahead).min(steps.end) {
        let (v, o, w) = step(k);
        collection.announce(&features(&v, &o, &w)).unwrap();
    }
    for k in steps.clone() {
        if k + ahead < steps.end {
            let (v, o, w) = step(k + ahead);
            collection.announce(&features(&v, &o, &w)).unwrap();
        }
        let (v, o, w) = step(k);
        // Group dim4-sum: f1's, f2's and f4's two bags; group dim8-mean: f3's.
        let (mut a, mut b) = (vec![0f32; 6 * 4], vec![0f32; 2 * 8]);
        collection.lookup(&features(&v, &o, &w), &mut [&mut a, &mut b], true).unwrap();
        seen.extend(a.iter().chain(&b).map(|x| x.to_bits()));
        let ga: Vec<f32> = a.iter().map(|x| x * 0.5 - 0.01 * k as f32).collect();
        let gb: Vec<f32> = b.iter().map(|x| 1.0 - x).collect();
        apply(collection, &ga, &gb, k % 2 == 1);
    }
}

/// Applies the step's gradients: `ga` (f1's, f2's and f4's two bags of 4, one after
/// the other) and `gb` (f3's two bags of 8), each feature's read where it lies, or, with
/// `interleaved`, from a copy laid out as a KeyedTensor's values (one row per sample:
/// f1 | f2 | f3 | f4, 20 values; each feature a strided view).
fn apply(collection: &mut TableCollection, ga: &[f32], gb: &[f32], interleaved: bool) {
    let grads = |values, stride| FeatureGrads { values, stride };
    if !interleaved {
        collection.apply_gradients(&[grads(&ga[..8], 4), grads(&ga[8..16], 4), grads(gb, 8), grads(&ga[16..], 4)]).unwrap();
        return;
    }
    let mut rows = vec![f32::NAN; 2 * 20];
    for b in 0..2 {
        let row = &mut rows[b * 20..][..20];
        row[..4].copy_from_slice(&ga[b * 4..][..4]);
        row[4..8].copy_from_slice(&ga[8 + b * 4..][..4]);
        row[8..16].copy_from_slice(&gb[b * 8..][..8]);
        row[16..].copy_from_slice(&ga[16 + b * 4..][..4]);
    }
    collection.apply_gradients(&[grads(&rows, 20), grads(&rows[4..], 20), grads(&rows[8..], 20), grads(&rows[16..], 20)]).unwrap();
}

fn rows_of(collection: &mut TableCollection) -> Vec<Vec<u32>> {
    (0..3)
        .map(|t| {
            let flat = collection.rows_of(t).unwrap();
            (0..[50, 30, 20][t]).flat_map(|r| flat.row(r).to_vec()).map(f32::to_bits).collect()
        })
        .collect()
}

#[test]
fn a_crashed_collection_resumes_at_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tiered = CollectionConfig { table_dir: Some(dir.path().to_path_buf()), write_buffer: 0.2, ..config(0.1, 0.2) };
    let mut seen = Vec::new();
    let mut collection = TableCollection::new(&tiered).unwrap();
    train_steps(&mut collection, 0..12, 2, &mut seen);
    collection.checkpoint(12).unwrap();
    // Steps after the checkpoint whose rows reach the table files, then a crash: the
    // collection is never dropped (its I/O threads are idle after the flush).
    train_steps(&mut collection, 12..20, 2, &mut seen);
    collection.flush().unwrap();
    std::mem::forget(collection);
    let (mut resumed, checkpoint) = TableCollection::resume(&tiered).unwrap();
    assert_eq!(checkpoint, 12);
    train_steps(&mut resumed, 12..30, 2, &mut Vec::new());
    let unbroken = train(TableCollection::new(&config(0.0, 1.0)).unwrap(), 30, 0);
    assert!(rows_of(&mut resumed) == unbroken.1, "resumed rows differ from an unbroken run's");
    let other = CollectionConfig { seed: 8, ..tiered.clone() };
    let err = TableCollection::resume(&other).err().unwrap().to_string();
    assert!(err.contains("collection.json: the checkpoint is of other tables"), "{err}");
    // Numbers rise, after a resume too.
    let err = resumed.checkpoint(12).unwrap_err().to_string();
    assert!(err.contains("checkpoint 12: checkpoint numbers must rise (the last was 12)"), "{err}");
    resumed.checkpoint(30).unwrap();
    assert!(resumed.checkpoint(29).is_err());
    drop(resumed);
    // A fresh collection in the folder removes the old checkpoint: nothing to resume.
    drop(TableCollection::new(&tiered).unwrap());
    let err = TableCollection::resume(&tiered).err().unwrap().to_string();
    assert!(err.contains("collection.json") && err.contains("No such file"), "{err}");
}

#[test]
fn tables_of_one_dim_and_pooling_share_a_group_and_keep_their_own_initial_rows() {
    let mut collection = TableCollection::new(&config(0.1, 0.2)).unwrap();
    let groups: Vec<_> = collection.groups().map(|g| (g.name.clone(), g.tables.clone(), g.first_rows.clone(), g.rows)).collect();
    assert_eq!(groups, [("dim4-sum".to_string(), vec![0, 2], vec![0, 50], 70), ("dim8-mean".to_string(), vec![1], vec![0], 30)]);
    // Table c's rows are those it would have alone: its own seed, from its own row 0.
    let c = collection.rows_of(2).unwrap();
    let layout = RowLayout::new(4, &Optimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 });
    let alone = FlatTable::new(20, layout, RowInit::Uniform { seed: crate::hash::mix64(7 ^ crate::hash::mix64(2)), scale: 0.1 });
    assert!(c == alone, "table c's initial rows differ from its own");
    // A value of f4 is a row of c, not of a: row 19 is in range for c (20 rows).
    let (mut v, o, w) = step(0);
    v[3][0] = 20;
    let (mut a, mut b) = (vec![0f32; 6 * 4], vec![0f32; 2 * 8]);
    let err = collection.lookup(&features(&v, &o, &w), &mut [&mut a, &mut b], false).unwrap_err().to_string();
    assert_eq!(err, "feature `f4`: value 0 is 20, out of range for a table of 20 rows");
    // One tiered table, one storage thread, one set of counters a group.
    assert_eq!(collection.stats().len(), 2);
}

#[test]
fn gradients_read_in_place_from_strided_views_update_as_contiguous_ones() {
    let run = |interleaved: bool| {
        let mut collection = TableCollection::new(&config(0.1, 0.2)).unwrap();
        for k in 0..12 {
            let (v, o, w) = step(k);
            let (mut a, mut b) = (vec![0f32; 6 * 4], vec![0f32; 2 * 8]);
            collection.lookup(&features(&v, &o, &w), &mut [&mut a, &mut b], true).unwrap();
            let ga: Vec<f32> = a.iter().map(|x| x * 0.5 - 0.01 * k as f32).collect();
            let gb: Vec<f32> = b.iter().map(|x| 1.0 - x).collect();
            apply(&mut collection, &ga, &gb, interleaved);
        }
        rows_of(&mut collection)
    };
    assert!(run(true) == run(false), "strided gradients updated other rows or values");
}

#[test]
fn tiered_tables_of_two_dims_match_all_in_host_bit_for_bit() {
    let reference = train(TableCollection::new(&config(0.0, 1.0)).unwrap(), 30, 0);
    for (device, host, ahead) in [(0.1, 0.2, 0), (0.1, 0.2, 3), (0.0, 0.1, 2)] {
        let tiered = train(TableCollection::new(&config(device, host)).unwrap(), 30, ahead);
        assert!(tiered == reference, "device {device} host {host} ahead {ahead}");
    }
}

#[test]
fn bad_steps_are_refused_before_anything_moves() {
    let mut collection = TableCollection::new(&config(0.1, 0.2)).unwrap();
    let (mut v, o, w) = step(1);
    v[2][1] = 30;
    let mut a = vec![0f32; 24];
    let mut b = vec![0f32; 16];
    let err = collection.lookup(&features(&v, &o, &w), &mut [&mut a, &mut b], true).unwrap_err().to_string();
    assert_eq!(err, "feature `f3`: value 1 is 30, out of range for a table of 30 rows");
    assert_eq!(collection.stats().iter().map(|(_, s)| s.lookups).sum::<u64>(), 0);
    let (v, mut o, w) = step(1);
    o[0] = vec![0, 3, 2];
    let err = collection.lookup(&features(&v, &o, &w), &mut [&mut a, &mut b], true).unwrap_err().to_string();
    assert_eq!(err, "feature `f1`: offsets must not decrease (offset 2 is 2, after 3)");
    fn flat(values: &[f32]) -> FeatureGrads<'_> {
        FeatureGrads { values, stride: 4 }
    }
    let err = collection.apply_gradients(&[flat(&a), flat(&a), flat(&b), flat(&a)]).unwrap_err().to_string();
    assert_eq!(err, "apply_gradients without a lookup before it");
    let (v, o, w) = step(1);
    let mut short = vec![0f32; 3];
    let err = collection.lookup(&features(&v, &o, &w), &mut [&mut short, &mut b], true).unwrap_err().to_string();
    assert_eq!(err, "table group `dim4-sum`: lookup output holds 3 values, the batch needs 24");
    assert_eq!(collection.stats().iter().map(|(_, s)| s.lookups).sum::<u64>(), 0);
    // Gradients too few, or too short for a feature's bags, are refused before any row
    // changes; the step's gradients can then still be given.
    collection.lookup(&features(&v, &o, &w), &mut [&mut a, &mut b], true).unwrap();
    let before = rows_of(&mut collection);
    let err = collection.apply_gradients(&[flat(&a), flat(&a), flat(&b)]).unwrap_err().to_string();
    assert_eq!(err, "3 gradients given, the tables have 4 features");
    let short = FeatureGrads { values: &b[..15], stride: 8 };
    let err = collection.apply_gradients(&[flat(&a), flat(&a), short, flat(&a)]).unwrap_err().to_string();
    assert_eq!(err, "feature `f3`: the gradient holds 15 values at a stride of 8; its 2 bags of dim 8 need 16 at a stride of at least 8");
    let overlapping = FeatureGrads { values: &b, stride: 4 };
    assert!(collection.apply_gradients(&[flat(&a), flat(&a), overlapping, flat(&a)]).is_err());
    assert!(rows_of(&mut collection) == before, "a refused update changed rows");
    collection.apply_gradients(&[flat(&a), flat(&a), FeatureGrads { values: &b, stride: 8 }, flat(&a)]).unwrap();
    let bad = config(1.5, 0.0);
    assert_eq!(
        TableCollection::new(&bad).err().unwrap().to_string(),
        "collection config: device = 1.5: a share of each table group's rows, from 0 to 1"
    );
}
