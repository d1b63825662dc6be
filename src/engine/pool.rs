//! Pooling of embedding bags: the sum or mean of each bag's rows, read in place from
//! whichever tier holds them, in bag order, so the result has the same bits wherever
//! the rows came from.

use serde::{Deserialize, Serialize};

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
fn prefetch(values: &[f32]) {
    for line in (0..values.len()).step_by(16) {
        strata_policies::prefetch_element(values, line);
    }
}

/// Pools bags of rows: bag `b` is `rows[bag_offsets[b]..bag_offsets[b + 1]]`, and
/// `out[b * dim..(b + 1) * dim]` becomes the sum (or mean) of the first `dim` values of
/// its rows, accumulated in bag order starting from the first row. An empty bag gives
/// zeros. No allocation; the inner loop runs over `dim` and vectorises.
///
/// # Panics
/// If `out` does not hold `dim` floats per bag, the offsets are not non-decreasing
/// within `rows`, or a row has fewer than `dim` values.
pub fn pool_bags(rows: &[&[f32]], bag_offsets: &[usize], dim: usize, pooling: Pooling, out: &mut [f32]) {
    let bags = bag_offsets.len().saturating_sub(1);
    assert_eq!(out.len(), bags * dim, "pool_bags: out holds {} floats for {bags} bags of dim {dim}", out.len());
    for (b, acc) in out.chunks_exact_mut(dim.max(1)).enumerate().take(bags) {
        let (start, end) = (bag_offsets[b], bag_offsets[b + 1]);
        let bag = &rows[start..end];
        let Some((first, rest)) = bag.split_first() else {
            acc.fill(0.0);
            continue;
        };
        if let Some(ahead) = rows.get(start + PREFETCH_ROWS) {
            prefetch(&ahead[..dim.min(ahead.len())]);
        }
        acc.copy_from_slice(&first[..dim]);
        for (i, row) in rest.iter().enumerate() {
            if let Some(ahead) = rows.get(start + 1 + i + PREFETCH_ROWS) {
                prefetch(&ahead[..dim.min(ahead.len())]);
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
