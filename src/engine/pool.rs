//! Pooling of embedding bags and its backward pass: the sum or mean of each bag's rows,
//! read in place from whichever tier holds them, in bag order; and [`RowGradients`],
//! which sums the gradient of each distinct row of a batch over its lookups in bag
//! order. One function each, so results have the same bits wherever the rows live.

use serde::{Deserialize, Serialize};

use super::EngineError;

/// How the rows of one bag are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Sum,
    Mean,
}

/// Rows ahead of the one being added whose cache lines are requested early (8 to 12
/// measured best on the development VM for dim 128: enough misses in flight to cover
/// DRAM latency without evicting rows before use).
const PREFETCH_ROWS: usize = 10;

/// Requests every cache line of `values`.
#[inline(always)]
pub fn prefetch(values: &[f32]) {
    for line in (0..values.len()).step_by(16) {
        strata_policies::prefetch_element(values, line);
    }
}

/// Pools bags of rows: bag `b` is `rows[bag_offsets[b]..bag_offsets[b + 1]]`, and
/// `out[b * dim..(b + 1) * dim]` becomes the sum (or mean) of the first `dim` values of
/// its rows, accumulated in bag order starting from the first row. An empty bag gives
/// zeros. No allocation; the inner loop runs over `dim` and vectorises (with the widest
/// vectors the CPU has, [`super::with_wide_vectors`]).
///
/// # Panics
/// If `out` does not hold `dim` floats per bag, the offsets are not non-decreasing
/// within `rows`, or a row has fewer than `dim` values.
pub fn pool_bags(rows: &[&[f32]], bag_offsets: &[usize], dim: usize, pooling: Pooling, out: &mut [f32]) {
    let bags = bag_offsets.len().saturating_sub(1);
    assert_eq!(out.len(), bags * dim, "pool_bags: out holds {} floats for {bags} bags of dim {dim}", out.len());
    if dim == 0 {
        return;
    }
    super::with_wide_vectors(
        #[inline(always)]
        || {
            for (b, acc) in out.chunks_exact_mut(dim).enumerate() {
                let (start, end) = (bag_offsets[b], bag_offsets[b + 1]);
                pool_bag(&rows[start..end], rows.get(start + PREFETCH_ROWS..).unwrap_or_default(), pooling, acc);
            }
        },
    );
}

/// Pools one bag into `acc` (`dim` values), prefetching `ahead[i]` while adding row `i`.
#[inline(always)]
fn pool_bag(bag: &[&[f32]], ahead: &[&[f32]], pooling: Pooling, acc: &mut [f32]) {
    let dim = acc.len();
    let Some((first, rest)) = bag.split_first() else {
        acc.fill(0.0);
        return;
    };
    if let Some(row) = ahead.first() {
        prefetch(&row[..dim.min(row.len())]);
    }
    acc.copy_from_slice(&first[..dim]);
    for (i, row) in rest.iter().enumerate() {
        if let Some(row) = ahead.get(i + 1) {
            prefetch(&row[..dim.min(row.len())]);
        }
        for (a, &v) in acc.iter_mut().zip(&row[..dim]) {
            *a += v;
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
/// The lookups are grouped by a stable LSD radix sort of `row << bag_bits | bag` keys
/// on their row bits (only as many passes as the largest row needs), which keeps each
/// row's lookups in bag order: a row's gradient is the sum, from zero and in bag
/// order, of the output gradients of the bags that hold it (each times `1 / len` for
/// mean pooling), whatever the order in which rows are visited.
#[derive(Debug, Default)]
pub struct RowGradients {
    /// Every lookup as `row << bag_bits | bag`, sorted by [`RowGradients::group`].
    keys: Vec<u64>,
    /// The other half of each radix pass.
    spare: Vec<u64>,
    bag_bits: u32,
    /// Per pass, where each digit's lookups go.
    counts: Vec<usize>,
    /// The distinct rows, ascending, and where each one's lookups start in `keys` (one
    /// more entry: the end).
    rows: Vec<u64>,
    starts: Vec<usize>,
}

impl RowGradients {
    /// Groups the lookups of the bags `ids[bag_offsets[b]..bag_offsets[b + 1]]` by row.
    /// An error if a row and a bag number do not fit one 64-bit key together (rows
    /// and bags beyond 2^40 and 2^24, say).
    ///
    /// # Panics
    /// If the offsets are not non-decreasing within `ids`.
    pub fn group(&mut self, ids: &[u64], bag_offsets: &[usize]) -> Result<(), EngineError> {
        let bag_count = bag_offsets.len().saturating_sub(1);
        let largest = ids.iter().copied().max().unwrap_or(0);
        let row_bits = u64::BITS - largest.leading_zeros();
        let bag_bits = usize::BITS - bag_count.saturating_sub(1).leading_zeros();
        if row_bits + bag_bits > u64::BITS {
            return Err(EngineError::BatchTooLarge { bags: bag_count, largest_row: largest });
        }
        self.bag_bits = bag_bits;
        self.keys.clear();
        for b in 0..bag_count {
            let bag = &ids[bag_offsets[b]..bag_offsets[b + 1]];
            self.keys.extend(bag.iter().map(|&row| row << bag_bits | b as u64));
        }
        self.sort(row_bits);
        self.rows.clear();
        self.starts.clear();
        let mut previous = None;
        for (i, &key) in self.keys.iter().enumerate() {
            let row = key >> bag_bits;
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
        let shift = |p: u32| self.bag_bits + p * width;
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

    fn bag_mask(&self) -> u64 {
        1u64.checked_shl(self.bag_bits).map_or(u64::MAX, |bit| bit - 1)
    }

    /// The distinct rows of the last grouped batch, ascending.
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// Writes the gradients of `rows()[rows]` into `out` (`dim` values each): for each
    /// row, the sum from zero, in bag order, of `bag_grads[b * dim..(b + 1) * dim]`
    /// (times `1 / len` of bag `b` for mean pooling) over the bags `b` of its lookups.
    /// `bag_offsets` are the ones the batch was grouped with.
    ///
    /// # Panics
    /// If `rows` is out of range, `out` does not hold `dim` values per row, or
    /// `bag_grads` holds fewer than `dim` values per bag.
    pub fn sum(
        &self,
        rows: std::ops::Range<usize>,
        bag_offsets: &[usize],
        bag_grads: &[f32],
        dim: usize,
        pooling: Pooling,
        out: &mut [f32],
    ) {
        assert_eq!(out.len(), rows.len() * dim, "RowGradients::sum: {} values for {} rows of dim {dim}", out.len(), rows.len());
        let bag_mask = self.bag_mask();
        super::with_wide_vectors(
            #[inline(always)]
            || {
                for (k, out) in rows.zip(out.chunks_exact_mut(dim.max(1))) {
                    out.fill(0.0);
                    for i in self.starts[k]..self.starts[k + 1] {
                        if let Some(&ahead) = self.keys.get(i + PREFETCH_GRADS) {
                            prefetch(&bag_grads[(ahead & bag_mask) as usize * dim..][..dim]);
                        }
                        let bag = (self.keys[i] & bag_mask) as usize;
                        let scale = match pooling {
                            Pooling::Sum => 1.0,
                            Pooling::Mean => 1.0 / (bag_offsets[bag + 1] - bag_offsets[bag]) as f32,
                        };
                        for (s, &g) in out.iter_mut().zip(&bag_grads[bag * dim..(bag + 1) * dim]) {
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

    fn naive(rows: &[Vec<f32>], offsets: &[usize], dim: usize, pooling: Pooling) -> Vec<f32> {
        let mut out = Vec::new();
        for w in offsets.windows(2) {
            let bag = &rows[w[0]..w[1]];
            for j in 0..dim {
                let mut acc = match bag.first() {
                    Some(r) => r[j],
                    None => 0.0,
                };
                for r in bag.iter().skip(1) {
                    acc += r[j];
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
        for dim in [1, 5, 16, 128] {
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
            for pooling in [Pooling::Sum, Pooling::Mean] {
                let mut out = vec![f32::NAN; (offsets.len() - 1) * dim];
                pool_bags(&refs, &offsets, dim, pooling, &mut out);
                let want = naive(&rows, &offsets, dim, pooling);
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "dim {dim} {pooling:?}"
                );
            }
        }
    }

    /// The per-row sums the old aggregation produced: a hash map of rows in order of
    /// first appearance, each lookup's bag gradient (times its scale) added in bag order.
    fn first_appearance_sums(ids: &[u64], offsets: &[usize], grads: &[f32], dim: usize, pooling: Pooling) -> Vec<(u64, Vec<f32>)> {
        let mut index = std::collections::HashMap::new();
        let mut out: Vec<(u64, Vec<f32>)> = Vec::new();
        for b in 0..offsets.len() - 1 {
            let bag = &ids[offsets[b]..offsets[b + 1]];
            let scale = match pooling {
                Pooling::Sum => 1.0,
                Pooling::Mean => 1.0 / bag.len() as f32,
            };
            for &row in bag {
                let i = *index.entry(row).or_insert_with(|| {
                    out.push((row, vec![0.0; dim]));
                    out.len() - 1
                });
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
            for pooling in [Pooling::Sum, Pooling::Mean] {
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
                gradients.group(&ids, &offsets).unwrap();
                let mut want = first_appearance_sums(&ids, &offsets, &grads, dim, pooling);
                want.sort_by_key(|&(row, _)| row);
                let rows: Vec<u64> = want.iter().map(|&(row, _)| row).collect();
                assert_eq!(gradients.rows(), rows, "dim {dim} {pooling:?}");
                // All rows at once, and each on its own.
                let mut all = vec![f32::NAN; want.len() * dim];
                gradients.sum(0..want.len(), &offsets, &grads, dim, pooling, &mut all);
                let mut one = vec![f32::NAN; dim];
                for (k, ((row, sum), all)) in want.iter().zip(all.chunks_exact(dim)).enumerate() {
                    gradients.sum(k..k + 1, &offsets, &grads, dim, pooling, &mut one);
                    let want: Vec<u32> = sum.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "dim {dim} {pooling:?} row {row}");
                    assert_eq!(one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "dim {dim} {pooling:?} row {row}");
                }
            }
        }
    }

    #[test]
    fn row_gradients_of_no_lookups_and_of_keys_beyond_64_bits() {
        let mut gradients = RowGradients::default();
        gradients.group(&[], &[0, 0, 0]).unwrap();
        assert!(gradients.rows().is_empty());
        // Only row 0: nothing to sort.
        gradients.group(&[0, 0, 0], &[0, 2, 3]).unwrap();
        assert_eq!(gradients.rows(), [0]);
        let mut out = [f32::NAN; 2];
        gradients.sum(0..1, &[0, 2, 3], &[1.0, 2.0, 0.5, 0.25], 2, Pooling::Mean, &mut out);
        assert_eq!(out, [0.5 + 0.5 + 0.5, 1.0 + 1.0 + 0.25]);
        // A 63-bit row and 4 bags (2 bits) do not fit one 64-bit key.
        let err = gradients.group(&[1 << 62, 0, 1, 2], &[0, 1, 2, 3, 4]).unwrap_err().to_string();
        assert!(err.contains("4 bags") && err.contains("too large"), "{err}");
        gradients.group(&[1 << 62, 0], &[0, 1, 2]).unwrap();
        assert_eq!(gradients.rows(), [0, 1 << 62]);
    }

    #[test]
    fn empty_bags_give_zeros() {
        let a = [1.0f32, 2.0];
        let rows: Vec<&[f32]> = vec![&a, &a];
        let mut out = [f32::NAN; 8];
        pool_bags(&rows, &[0, 0, 2, 2, 2], 2, Pooling::Mean, &mut out);
        assert_eq!(out, [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        pool_bags(&[], &[0], 2, Pooling::Sum, &mut []);
    }
}
