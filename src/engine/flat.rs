//! The flat table: every row in one in-memory array. It is the reference the tiered
//! table is compared with, and a backing store for tables that fit in memory.

use super::batch::Batch;
use super::host::{advise_huge_pages, HUGE_PAGES_FROM};
use super::pool::{pool_bags, prefetch, reuse_refs, Pooling, RowGradients, UPDATE_GROUP};
use super::storage::BackingStore;
use super::{EngineError, InitRows, Optimizer, Rounding, RowLayout, StoredUpdate};

/// All rows in one in-memory array: the reference the tiered table is compared with,
/// and a backing store for tables that fit in memory.
#[derive(Clone, Debug)]
pub struct FlatTable {
    layout: RowLayout,
    data: Vec<f32>,
    /// Per-step buffers, kept as the tiered table keeps its own so that a step
    /// allocates nothing once they have grown: the row of every lookup for pooling
    /// (empty between lookups), each bag's gradient (empty between updates), the
    /// gradient grouping and one group's summed gradients.
    row_refs: Vec<&'static [f32]>,
    bag_refs: Vec<&'static [f32]>,
    gradients: RowGradients,
    group_grads: Vec<f32>,
    /// How updates reach the stored rows (and round into half-precision ones).
    update: StoredUpdate,
}

/// Two flat tables are equal when their rows are (the step buffers are scratch).
impl PartialEq for FlatTable {
    fn eq(&self, other: &Self) -> bool {
        self.layout == other.layout && self.data == other.data
    }
}

impl FlatTable {
    pub fn new(rows: u64, layout: RowLayout, init: impl InitRows) -> Self {
        let floats = layout.words();
        let len = rows as usize * floats;
        let mut data: Vec<f32> = Vec::with_capacity(len);
        if len * 4 >= HUGE_PAGES_FROM {
            advise_huge_pages(data.as_mut_ptr().cast(), len * 4);
        }
        data.resize(len, 0f32);
        for (r, row) in data.chunks_exact_mut(floats).enumerate() {
            init.fill(r as u64, layout, row);
        }
        FlatTable {
            layout,
            data,
            row_refs: Vec::new(),
            bag_refs: Vec::new(),
            gradients: RowGradients::default(),
            group_grads: Vec::new(),
            update: StoredUpdate::new(layout, Rounding::Nearest),
        }
    }

    /// The same table, its half-precision rows updated with `rounding` (nearest by
    /// default; `f32` rows are never rounded).
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.update = StoredUpdate::new(self.layout, rounding);
        self
    }

    pub fn row(&self, row: u64) -> &[f32] {
        let f = self.layout.words();
        &self.data[row as usize * f..(row as usize + 1) * f]
    }

    /// Every row, one after the other.
    pub fn rows_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn row_mut(&mut self, row: u64) -> &mut [f32] {
        let f = self.layout.words();
        &mut self.data[row as usize * f..(row as usize + 1) * f]
    }

    /// The all-in-memory lookup: pools `batch`'s bags into `out`.
    pub fn lookup(&mut self, batch: &Batch, pooling: Pooling, out: &mut [f32]) {
        let (values, words) = (self.layout.value_words(), self.layout.words());
        let mut refs = reuse_refs(std::mem::take(&mut self.row_refs));
        refs.extend(batch.ids.iter().map(|&r| &self.data[r as usize * words..][..values]));
        pool_bags(&refs, &batch.bag_offsets, &batch.weights, self.layout.dim, self.layout.dtype, pooling, out);
        self.row_refs = reuse_refs(refs);
    }

    /// The all-in-memory update: the same gradient grouping, sums and optimizer as the
    /// tiered table, [`UPDATE_GROUP`] rows at a time, each row updated in place.
    ///
    /// # Panics
    /// If the batch's rows and bags do not fit the grouping's keys (see
    /// [`RowGradients::group`]) or `bag_grads` holds fewer than `dim` values per bag.
    pub fn apply_gradients(&mut self, batch: &Batch, bag_grads: &[f32], optimizer: &Optimizer, pooling: Pooling) {
        let (dim, floats) = (self.layout.dim, self.layout.words());
        if let Err(e) = self.gradients.group(&batch.ids, &batch.bag_offsets, !batch.weights.is_empty()) {
            panic!("FlatTable::apply_gradients: {e}");
        }
        let mut bag_refs = reuse_refs(std::mem::take(&mut self.bag_refs));
        bag_refs.extend(bag_grads.chunks_exact(dim.max(1)));
        self.group_grads.resize(UPDATE_GROUP * dim, 0.0);
        let rows = self.gradients.rows();
        let mut sums = [0f32; UPDATE_GROUP];
        for (first, group) in (0..).step_by(UPDATE_GROUP).zip(rows.chunks(UPDATE_GROUP)) {
            for &row in rows.iter().skip(first + UPDATE_GROUP).take(UPDATE_GROUP) {
                prefetch(&self.data[row as usize * floats..][..floats]);
            }
            let grads = &mut self.group_grads[..group.len() * dim];
            self.gradients.sum(first..first + group.len(), &batch.bag_offsets, &batch.weights, &bag_refs, dim, pooling, grads);
            let sums = &mut sums[..group.len()];
            optimizer.gradient_sums(grads, dim, sums);
            for ((&row, grad), &sum) in group.iter().zip(grads.chunks_exact(dim)).zip(sums.iter()) {
                self.update.apply(optimizer, &mut self.data[row as usize * floats..][..floats], grad, sum, row, batch.start);
            }
        }
        self.bag_refs = reuse_refs(bag_refs);
    }

    fn check(&self, row: u64) -> Result<(), EngineError> {
        let rows = self.rows();
        if row >= rows {
            return Err(EngineError::RowOutOfRange { row, rows });
        }
        Ok(())
    }
}

impl BackingStore for FlatTable {
    fn describe(&self) -> String {
        "in-memory flat table".into()
    }
    fn layout(&self) -> RowLayout {
        self.layout
    }
    fn rows(&self) -> u64 {
        (self.data.len() / self.layout.words()) as u64
    }
    fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
        let f = self.layout.words();
        for (&r, dst) in rows.iter().zip(out.chunks_exact_mut(f)) {
            self.check(r)?;
            dst.copy_from_slice(self.row(r));
        }
        Ok(())
    }
    fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError> {
        let f = self.layout.words();
        for (&r, src) in rows.iter().zip(data.chunks_exact(f)) {
            self.check(r)?;
            self.row_mut(r).copy_from_slice(src);
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{TestValues, ADAGRAD};
    use crate::engine::RowInit;

    /// The grouped update, eight rows at a time with kept buffers, against the plainest
    /// computation: each row's gradient summed over its lookups in order into a map,
    /// then `apply_row` one row at a time; over steps of several groups and a part
    /// group, weighted mean bags with repeated rows and an empty bag.
    #[test]
    fn the_grouped_update_is_the_row_by_row_update_of_summed_gradients() {
        let (rows, dim) = (40u64, 5usize);
        let layout = RowLayout::new(dim, &ADAGRAD);
        let init = RowInit::Uniform { seed: 4, scale: 0.5 };
        let mut flat = FlatTable::new(rows, layout, init);
        let mut plain = FlatTable::new(rows, layout, init);
        let mut values = TestValues::new(11);
        for step in 0..4u64 {
            let ids: Vec<u64> = (0..60).map(|_| values.next_u64() % (21 + step)).collect();
            let mut bag_offsets: Vec<usize> = (0..=60).step_by(4).collect();
            bag_offsets.insert(3, 8); // an empty bag
            let mut batch = Batch::new(ids, bag_offsets, step * 60);
            batch.weights = (0..60).map(|_| values.next_f32(2.0)).collect();
            let mut out = vec![0f32; batch.bags() * dim];
            flat.lookup(&batch, Pooling::Mean, &mut out);
            let refs: Vec<&[f32]> = batch.ids.iter().map(|&r| &plain.row(r)[..dim]).collect();
            let mut want = vec![0f32; out.len()];
            pool_bags(&refs, &batch.bag_offsets, &batch.weights, dim, crate::engine::Dtype::F32, Pooling::Mean, &mut want);
            assert_eq!(out, want, "step {step}: lookup");

            let mut bag_grads = vec![0f32; out.len()];
            values.fill(&mut bag_grads, 1.0);
            flat.apply_gradients(&batch, &bag_grads, &ADAGRAD, Pooling::Mean);
            let mut summed: std::collections::BTreeMap<u64, Vec<f32>> = Default::default();
            for (b, bag) in batch.bag_offsets.windows(2).enumerate() {
                for i in bag[0]..bag[1] {
                    let scale = batch.weights[i] * (1.0 / (bag[1] - bag[0]) as f32);
                    let sum = summed.entry(batch.ids[i]).or_insert_with(|| vec![0.0; dim]);
                    for (s, &g) in sum.iter_mut().zip(&bag_grads[b * dim..][..dim]) {
                        *s += g * scale;
                    }
                }
            }
            for (&row, grad) in &summed {
                ADAGRAD.apply_row(plain.row_mut(row), grad);
            }
            assert!(summed.len() > 2 * UPDATE_GROUP, "step {step}: {} rows, more than two groups", summed.len());
            assert_eq!(flat, plain, "step {step}: rows after the update");
        }
    }
}
