//! Pooling of embedding bags and its backward pass: the sum or mean of each bag's rows
//! (each times its lookup's weight in a weighted batch), read in place from whichever
//! tier holds them, in bag order; and [`RowGradients`], which sums the gradient of each
//! distinct row of a batch over its lookups in bag order. One function each, so results
//! have the same bits wherever the rows live.

use serde::{Deserialize, Serialize};

use super::dtype::{bf16_to_f32, f16_to_f32, halves};
use super::{Dtype, EngineError};

/// How the rows of one bag are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Sum,
    Mean,
}

impl Pooling {
    /// As configs (and `benches/embedding_step.py --pooling`) name it.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Sum => "sum",
            Pooling::Mean => "mean",
        }
    }
}

/// Rows ahead of the one being added whose cache lines are requested early: enough
/// misses in flight to cover memory latency without evicting rows before use (for dim
/// 128, 8 to 12 measured best on the Intel VM of 2026-11, 24 on the AMD EPYC VM of
/// 2026-12: 11.4-11.7 ms against 10.1-10.5 for the flat table's lookup, against 10).
const PREFETCH_ROWS: usize = 24;

/// Distinct rows whose gradients are summed, then applied, together (as many as
/// [`Optimizer::gradient_sums`](super::Optimizer::gradient_sums) interleaves).
pub const UPDATE_GROUP: usize = 8;

/// An empty vector of row references that reuses `refs`' allocation (the references
/// themselves cannot outlive the step that borrowed the rows; the buffer can).
pub fn reuse_refs<'a>(mut refs: Vec<&[f32]>) -> Vec<&'a [f32]> {
    refs.clear();
    // Same size and alignment: the standard library collects in place, keeping the
    // allocation.
    refs.into_iter().map(|_| -> &'a [f32] { unreachable!("the vector is empty") }).collect()
}

/// Requests every cache line of `values`.
#[inline(always)]
pub fn prefetch(values: &[f32]) {
    for line in (0..values.len()).step_by(16) {
        strata_policies::prefetch_element(values, line);
    }
}

/// Pools bags of rows: bag `b` is `rows[bag_offsets[b]..bag_offsets[b + 1]]`, and
/// `out[b * dim..(b + 1) * dim]` becomes the sum (or mean) of the first `dim` values of
/// its rows (stored rows' value words, read as `dtype`: half-precision values are
/// widened to `f32` as they are added), accumulated in bag order starting from the first
/// row. With `weights` (one per row; empty = unweighted) each row is first multiplied by
/// its weight, and the mean divides the weighted sum by the bag's length (as TorchRec's
/// weighted bags do). An empty bag gives zeros. No allocation; the inner loop runs over
/// `dim` and vectorises (with the widest vectors the CPU has,
/// [`super::with_wide_vectors`]).
///
/// # Panics
/// If `out` does not hold `dim` floats per bag, the offsets are not non-decreasing
/// within `rows`, `weights` is neither empty nor one per row, or a row has fewer than
/// `dim` values.
pub fn pool_bags(rows: &[&[f32]], bag_offsets: &[usize], weights: &[f32], dim: usize, dtype: Dtype, pooling: Pooling, out: &mut [f32]) {
    let bags = bag_offsets.len().saturating_sub(1);
    assert_eq!(out.len(), bags * dim, "pool_bags: out holds {} floats for {bags} bags of dim {dim}", out.len());
    assert!(weights.is_empty() || weights.len() == rows.len(), "pool_bags: {} weights for {} rows", weights.len(), rows.len());
    if dim == 0 {
        return;
    }
    match dtype {
        Dtype::F32 => pool_bags_of::<F32Values>(rows, bag_offsets, weights, pooling, out, dim),
        Dtype::F16 => pool_bags_of::<F16Values>(rows, bag_offsets, weights, pooling, out, dim),
        Dtype::Bf16 => pool_bags_of::<Bf16Values>(rows, bag_offsets, weights, pooling, out, dim),
    }
}

/// A stored row's values as `f32`s, for one dtype.
trait StoredValues {
    /// The first `dim` values of `row` (its value words).
    fn values(row: &[f32], dim: usize) -> impl Iterator<Item = f32> + '_;
}

struct F32Values;
struct F16Values;
struct Bf16Values;

impl StoredValues for F32Values {
    #[inline(always)]
    fn values(row: &[f32], dim: usize) -> impl Iterator<Item = f32> + '_ {
        row[..dim].iter().copied()
    }
}

impl StoredValues for F16Values {
    #[inline(always)]
    fn values(row: &[f32], dim: usize) -> impl Iterator<Item = f32> + '_ {
        halves(row)[..dim].iter().map(|&h| f16_to_f32(h))
    }
}

impl StoredValues for Bf16Values {
    #[inline(always)]
    fn values(row: &[f32], dim: usize) -> impl Iterator<Item = f32> + '_ {
        halves(row)[..dim].iter().map(|&h| bf16_to_f32(h))
    }
}

#[inline(always)]
fn pool_bags_of<V: StoredValues>(rows: &[&[f32]], bag_offsets: &[usize], weights: &[f32], pooling: Pooling, out: &mut [f32], dim: usize) {
    super::with_wide_vectors(
        #[inline(always)]
        || {
            for (b, acc) in out.chunks_exact_mut(dim).enumerate() {
                let (start, end) = (bag_offsets[b], bag_offsets[b + 1]);
                let bag_weights = weights.get(start..end).unwrap_or_default();
                pool_bag::<V>(&rows[start..end], bag_weights, rows.get(start + PREFETCH_ROWS..).unwrap_or_default(), pooling, acc);
            }
        },
    );
}

/// Pools one bag into `acc` (`dim` values), each row times its weight when `weights`
/// has one per row, prefetching `ahead[i]` while adding row `i`.
#[inline(always)]
fn pool_bag<V: StoredValues>(bag: &[&[f32]], weights: &[f32], ahead: &[&[f32]], pooling: Pooling, acc: &mut [f32]) {
    let dim = acc.len();
    let Some((first, rest)) = bag.split_first() else {
        acc.fill(0.0);
        return;
    };
    if let Some(row) = ahead.first() {
        prefetch(row);
    }
    match weights.split_first() {
        None => {
            acc.iter_mut().zip(V::values(first, dim)).for_each(|(a, v)| *a = v);
            for (i, row) in rest.iter().enumerate() {
                if let Some(row) = ahead.get(i + 1) {
                    prefetch(row);
                }
                acc.iter_mut().zip(V::values(row, dim)).for_each(|(a, v)| *a += v);
            }
        }
        Some((&w0, rest_weights)) => {
            acc.iter_mut().zip(V::values(first, dim)).for_each(|(a, v)| *a = w0 * v);
            for (i, (row, &w)) in rest.iter().zip(rest_weights).enumerate() {
                if let Some(row) = ahead.get(i + 1) {
                    prefetch(row);
                }
                acc.iter_mut().zip(V::values(row, dim)).for_each(|(a, v)| *a += w * v);
            }
        }
    }
    if pooling == Pooling::Mean {
        let n = bag.len() as f32;
        acc.iter_mut().for_each(|a| *a /= n);
    }
}

/// Gradient rows fetched ahead of the one being added.
const PREFETCH_GRADS: usize = 8;

/// Bits per radix digit at most: 2048 counters (16 KiB). Measured a little faster than
/// 8-bit digits on the development VM: two passes over 21-bit rows instead of three.
const RADIX_BITS: u32 = 11;

/// The backward pass of pooling: groups a batch's lookups by row, so that each
/// distinct row's gradient can be summed ([`RowGradients::sum`]) and applied at once.
/// Keeps its buffers from one batch to the next: a training step allocates nothing once
/// they have grown to the batch size.
///
/// The lookups are grouped by a stable LSD radix sort of `row << low_bits | bag` keys
/// (`| lookup` for a weighted batch, whose gradients need each lookup's weight) on
/// their row bits (only as many passes as the largest row needs), which keeps each
/// row's lookups in bag order: a row's gradient is the sum, from zero and in bag
/// order, of the output gradients of the bags that hold it (each times its lookup's
/// weight, and times `1 / len` for mean pooling), whatever the order in which rows are
/// visited.
#[derive(Clone, Debug, Default)]
pub struct RowGradients {
    /// Every lookup as `row << low_bits | bag` (or `| lookup`), sorted by
    /// [`RowGradients::group`].
    keys: Vec<u64>,
    /// The other half of each radix pass.
    spare: Vec<u64>,
    low_bits: u32,
    /// For a batch grouped by lookup, each lookup's bag; empty otherwise.
    lookup_bags: Vec<u32>,
    /// Per pass, where each digit's lookups go.
    counts: Vec<usize>,
    /// The distinct rows, ascending, and where each one's lookups start in `keys` (one
    /// more entry: the end).
    rows: Vec<u64>,
    starts: Vec<usize>,
}

impl RowGradients {
    /// Groups the lookups of the bags `ids[bag_offsets[b]..bag_offsets[b + 1]]` by row;
    /// `by_lookup` keeps each lookup's position too, which a weighted batch's
    /// [`RowGradients::sum`] needs. An error if a row and a bag (or lookup) number do not
    /// fit one 64-bit key together (rows and bags beyond 2^40 and 2^24, say).
    ///
    /// # Panics
    /// If the offsets are not non-decreasing within `ids`.
    pub fn group(&mut self, ids: &[u64], bag_offsets: &[usize], by_lookup: bool) -> Result<(), EngineError> {
        let bag_count = bag_offsets.len().saturating_sub(1);
        let largest = ids.iter().copied().max().unwrap_or(0);
        let row_bits = u64::BITS - largest.leading_zeros();
        let low_count = if by_lookup { ids.len() } else { bag_count };
        let low_bits = usize::BITS - low_count.saturating_sub(1).leading_zeros();
        if row_bits + low_bits > u64::BITS || (by_lookup && bag_count > u32::MAX as usize) {
            return Err(EngineError::BatchTooLarge { bags: bag_count, largest_row: largest });
        }
        self.low_bits = low_bits;
        self.keys.clear();
        self.lookup_bags.clear();
        for b in 0..bag_count {
            let bag = bag_offsets[b]..bag_offsets[b + 1];
            if by_lookup {
                self.keys.extend(bag.clone().map(|i| ids[i] << low_bits | i as u64));
                self.lookup_bags.extend(bag.map(|_| b as u32));
            } else {
                self.keys.extend(ids[bag].iter().map(|&row| row << low_bits | b as u64));
            }
        }
        self.sort(row_bits);
        self.rows.clear();
        self.starts.clear();
        let mut previous = None;
        for (i, &key) in self.keys.iter().enumerate() {
            let row = key >> low_bits;
            if previous != Some(row) {
                self.rows.push(row);
                self.starts.push(i);
                previous = Some(row);
            }
        }
        self.starts.push(self.keys.len());
        Ok(())
    }

    /// Sorts the keys by their `row_bits` row bits. The keys start in bag order and the
    /// sort is stable, so the lookups of a row stay in bag order.
    fn sort(&mut self, row_bits: u32) {
        let passes = row_bits.div_ceil(RADIX_BITS);
        if passes == 0 {
            return;
        }
        // Equal-width digits: 21 bits sort in two passes of 11 bits.
        let width = row_bits.div_ceil(passes);
        let buckets = 1usize << width;
        let mask = buckets as u64 - 1;
        let n = self.keys.len();
        self.spare.resize(n, 0);
        let counts = &mut self.counts;
        counts.clear();
        counts.resize(buckets * passes as usize, 0);
        let shift = |p: u32| self.low_bits + p * width;
        for &key in &self.keys {
            for p in 0..passes {
                counts[p as usize * buckets + ((key >> shift(p)) & mask) as usize] += 1;
            }
        }
        for p in 0..passes {
            let counts = &mut counts[p as usize * buckets..][..buckets];
            // Every lookup in one bucket: this digit is already in order.
            if counts.contains(&n) {
                continue;
            }
            let mut at = 0;
            for c in counts.iter_mut() {
                let here = *c;
                *c = at;
                at += here;
            }
            let shift = shift(p);
            for &key in &self.keys {
                let slot = &mut counts[((key >> shift) & mask) as usize];
                self.spare[*slot] = key;
                *slot += 1;
            }
            std::mem::swap(&mut self.keys, &mut self.spare);
        }
    }

    fn low_mask(&self) -> u64 {
        1u64.checked_shl(self.low_bits).map_or(u64::MAX, |bit| bit - 1)
    }

    /// The distinct rows of the last grouped batch, ascending.
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// Writes the gradients of `rows()[rows]` into `out` (`dim` values each): for each
    /// row, the sum from zero, in bag order, of `bag_grads[b]` (bag `b`'s gradient,
    /// `dim` values, wherever the caller keeps it) times a coefficient, over the bags `b` of its lookups. The coefficient is 1 (sum
    /// pooling) or `1 / len` of bag `b` (mean), times the lookup's weight where
    /// `weights` has one per lookup (the batch must then have been grouped
    /// `by_lookup`). `bag_offsets` are the ones the batch was grouped with.
    ///
    /// # Panics
    /// If `rows` is out of range, `out` does not hold `dim` values per row, `bag_grads`
    /// has no slice of `dim` values for some bag, or `weights` is given for a batch not
    /// grouped by lookup.
    #[allow(clippy::too_many_arguments)] // one batch's pieces, read in place
    pub fn sum(
        &self,
        rows: std::ops::Range<usize>,
        bag_offsets: &[usize],
        weights: &[f32],
        bag_grads: &[&[f32]],
        dim: usize,
        pooling: Pooling,
        out: &mut [f32],
    ) {
        assert_eq!(out.len(), rows.len() * dim, "RowGradients::sum: {} values for {} rows of dim {dim}", out.len(), rows.len());
        let weighted = !weights.is_empty();
        assert!(!weighted || weights.len() == self.lookup_bags.len(), "RowGradients::sum: weights for a batch not grouped by lookup");
        let low_mask = self.low_mask();
        let bag_of = |key: u64| match weighted {
            true => self.lookup_bags[(key & low_mask) as usize] as usize,
            false => (key & low_mask) as usize,
        };
        super::with_wide_vectors(
            #[inline(always)]
            || {
                for (k, out) in rows.zip(out.chunks_exact_mut(dim.max(1))) {
                    out.fill(0.0);
                    for i in self.starts[k]..self.starts[k + 1] {
                        if let Some(&ahead) = self.keys.get(i + PREFETCH_GRADS) {
                            prefetch(&bag_grads[bag_of(ahead)][..dim]);
                        }
                        let key = self.keys[i];
                        let bag = bag_of(key);
                        let pooled = match pooling {
                            Pooling::Sum => 1.0,
                            Pooling::Mean => 1.0 / (bag_offsets[bag + 1] - bag_offsets[bag]) as f32,
                        };
                        let scale = if weighted { weights[(key & low_mask) as usize] * pooled } else { pooled };
                        for (s, &g) in out.iter_mut().zip(&bag_grads[bag][..dim]) {
                            *s += g * scale;
                        }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::TestValues;

    /// The weight of lookup `i` (1 where `weights` is empty, which the engine never
    /// multiplies by: 1 * x is x).
    fn weight(weights: &[f32], i: usize) -> f32 {
        weights.get(i).copied().unwrap_or(1.0)
    }

    fn naive(rows: &[Vec<f32>], offsets: &[usize], weights: &[f32], dim: usize, pooling: Pooling) -> Vec<f32> {
        let mut out = Vec::new();
        for w in offsets.windows(2) {
            let bag = &rows[w[0]..w[1]];
            for j in 0..dim {
                let mut acc = match bag.first() {
                    Some(r) => weight(weights, w[0]) * r[j],
                    None => 0.0,
                };
                for (k, r) in bag.iter().enumerate().skip(1) {
                    acc += weight(weights, w[0] + k) * r[j];
                }
                if pooling == Pooling::Mean && !bag.is_empty() {
                    acc /= bag.len() as f32;
                }
                out.push(acc);
            }
        }
        out
    }

    #[test]
    fn sum_and_mean_match_naive_bit_for_bit() {
        let mut values = TestValues::new(9);
        for dim in [1, 5, 16, 32, 45, 128, 160, 300] {
            // Rows carry an extra state value after `dim`, which must be ignored.
            let rows: Vec<Vec<f32>> = (0..300)
                .map(|_| {
                    let mut r = vec![0f32; dim + 1];
                    values.fill(&mut r, 1.0);
                    r
                })
                .collect();
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            let mut offsets = vec![0usize];
            while *offsets.last().unwrap() < rows.len() {
                let next = offsets.last().unwrap() + (values.next_u64() % 40) as usize;
                offsets.push(next.min(rows.len()));
            }
            let mut weights = vec![0f32; rows.len()];
            values.fill(&mut weights, 2.0);
            for (pooling, weights) in [Pooling::Sum, Pooling::Mean].into_iter().flat_map(|p| [(p, &[][..]), (p, &weights[..])]) {
                let mut out = vec![f32::NAN; (offsets.len() - 1) * dim];
                pool_bags(&refs, &offsets, weights, dim, Dtype::F32, pooling, &mut out);
                let want = naive(&rows, &offsets, weights, dim, pooling);
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "dim {dim} {pooling:?} weighted {}",
                    !weights.is_empty()
                );
            }
        }
    }

    /// The per-row sums the old aggregation produced: a hash map of rows in order of
    /// first appearance, each lookup's bag gradient (times its scale, and its weight if
    /// any) added in bag order.
    fn first_appearance_sums(
        ids: &[u64],
        offsets: &[usize],
        weights: &[f32],
        grads: &[f32],
        dim: usize,
        pooling: Pooling,
    ) -> Vec<(u64, Vec<f32>)> {
        let mut index = std::collections::HashMap::new();
        let mut out: Vec<(u64, Vec<f32>)> = Vec::new();
        for b in 0..offsets.len() - 1 {
            let bag = &ids[offsets[b]..offsets[b + 1]];
            let scale = match pooling {
                Pooling::Sum => 1.0,
                Pooling::Mean => 1.0 / bag.len() as f32,
            };
            for (k, &row) in bag.iter().enumerate() {
                let i = *index.entry(row).or_insert_with(|| {
                    out.push((row, vec![0.0; dim]));
                    out.len() - 1
                });
                let scale = if weights.is_empty() { scale } else { weights[offsets[b] + k] * scale };
                for (acc, &g) in out[i].1.iter_mut().zip(&grads[b * dim..(b + 1) * dim]) {
                    *acc += g * scale;
                }
            }
        }
        out
    }

    #[test]
    fn row_gradients_match_first_appearance_sums_bit_for_bit() {
        let mut values = TestValues::new(4);
        // One instance for every batch: its buffers are reused.
        let mut gradients = RowGradients::default();
        // Rows below 4 (one radix pass), 300 (one), 2^21 (two) and 2^40 (four).
        for (dim, largest) in [(1, 4u64), (5, 300), (16, 1 << 21), (128, 1 << 40)] {
            for (pooling, weighted) in [(Pooling::Sum, false), (Pooling::Mean, false), (Pooling::Sum, true), (Pooling::Mean, true)] {
                let (mut ids, mut offsets) = (Vec::new(), vec![0usize]);
                for _ in 0..200 {
                    // Empty bags, and rows repeated within a bag and across bags.
                    for _ in 0..values.next_u64() % 6 {
                        let r = values.next_u64();
                        ids.push(if r.is_multiple_of(3) { r % 4 } else { r % largest });
                    }
                    offsets.push(ids.len());
                }
                let mut grads = vec![0f32; 200 * dim];
                values.fill(&mut grads, 1.0);
                let mut weights = vec![0f32; if weighted { ids.len() } else { 0 }];
                values.fill(&mut weights, 2.0);
                gradients.group(&ids, &offsets, weighted).unwrap();
                let mut want = first_appearance_sums(&ids, &offsets, &weights, &grads, dim, pooling);
                let grads: Vec<&[f32]> = grads.chunks_exact(dim).collect();
                want.sort_by_key(|&(row, _)| row);
                let rows: Vec<u64> = want.iter().map(|&(row, _)| row).collect();
                assert_eq!(gradients.rows(), rows, "dim {dim} {pooling:?} weighted {weighted}");
                // All rows at once, and each on its own.
                let mut all = vec![f32::NAN; want.len() * dim];
                gradients.sum(0..want.len(), &offsets, &weights, &grads, dim, pooling, &mut all);
                let mut one = vec![f32::NAN; dim];
                for (k, ((row, sum), all)) in want.iter().zip(all.chunks_exact(dim)).enumerate() {
                    gradients.sum(k..k + 1, &offsets, &weights, &grads, dim, pooling, &mut one);
                    let want: Vec<u32> = sum.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(
                        all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want,
                        "dim {dim} {pooling:?} weighted {weighted} row {row}"
                    );
                    assert_eq!(
                        one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want,
                        "dim {dim} {pooling:?} weighted {weighted} row {row}"
                    );
                }
            }
        }
    }

    #[test]
    fn row_gradients_of_no_lookups_and_of_keys_beyond_64_bits() {
        let mut gradients = RowGradients::default();
        gradients.group(&[], &[0, 0, 0], false).unwrap();
        assert!(gradients.rows().is_empty());
        // Only row 0: nothing to sort.
        gradients.group(&[0, 0, 0], &[0, 2, 3], false).unwrap();
        assert_eq!(gradients.rows(), [0]);
        let mut out = [f32::NAN; 2];
        let grads: [&[f32]; 2] = [&[1.0, 2.0], &[0.5, 0.25]];
        gradients.sum(0..1, &[0, 2, 3], &[], &grads, 2, Pooling::Mean, &mut out);
        assert_eq!(out, [0.5 + 0.5 + 0.5, 1.0 + 1.0 + 0.25]);
        // Weighted: lookups 0, 1 (bag 0, len 2) and 2 (bag 1) weigh 2, 4 and 8.
        gradients.group(&[0, 0, 0], &[0, 2, 3], true).unwrap();
        gradients.sum(0..1, &[0, 2, 3], &[2.0, 4.0, 8.0], &grads, 2, Pooling::Mean, &mut out);
        assert_eq!(out, [1.0 + 2.0 + 4.0, 2.0 + 4.0 + 2.0]);
        // A 63-bit row and 4 bags (2 bits) do not fit one 64-bit key.
        let err = gradients.group(&[1 << 62, 0, 1, 2], &[0, 1, 2, 3, 4], false).unwrap_err().to_string();
        assert!(err.contains("4 bags") && err.contains("too large"), "{err}");
        gradients.group(&[1 << 62, 0], &[0, 1, 2], false).unwrap();
        assert_eq!(gradients.rows(), [0, 1 << 62]);
    }

    #[test]
    fn empty_bags_give_zeros() {
        let a = [1.0f32, 2.0];
        let rows: Vec<&[f32]> = vec![&a, &a];
        let mut out = [f32::NAN; 8];
        pool_bags(&rows, &[0, 0, 2, 2, 2], &[], 2, Dtype::F32, Pooling::Mean, &mut out);
        assert_eq!(out, [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        pool_bags(&[], &[0], &[], 2, Dtype::F32, Pooling::Sum, &mut []);
    }
}
