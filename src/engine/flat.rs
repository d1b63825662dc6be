//! The flat table: every row in one in-memory array. It is the reference the tiered
//! table is compared with, and a backing store for tables that fit in memory.

use super::batch::{aggregate_gradients, Batch};
use super::pool::{pool_bags, Pooling};
use super::storage::BackingStore;
use super::{EngineError, Optimizer, RowInit, RowLayout};

/// All rows in one in-memory array: the reference the tiered table is compared with,
/// and a backing store for tables that fit in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatTable {
    layout: RowLayout,
    data: Vec<f32>,
}

impl FlatTable {
    pub fn new(rows: u64, layout: RowLayout, init: RowInit) -> Self {
        let floats = layout.floats();
        let mut data = vec![0f32; rows as usize * floats];
        for (r, row) in data.chunks_exact_mut(floats).enumerate() {
            init.fill(r as u64, layout, row);
        }
        FlatTable { layout, data }
    }

    pub fn row(&self, row: u64) -> &[f32] {
        let f = self.layout.floats();
        &self.data[row as usize * f..(row as usize + 1) * f]
    }

    /// Every row, one after the other.
    pub fn rows_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn row_mut(&mut self, row: u64) -> &mut [f32] {
        let f = self.layout.floats();
        &mut self.data[row as usize * f..(row as usize + 1) * f]
    }

    /// The all-in-memory lookup: pools `batch`'s bags into `out`.
    pub fn lookup(&self, batch: &Batch, pooling: Pooling, out: &mut [f32]) {
        let dim = self.layout.dim;
        let rows: Vec<&[f32]> = batch.ids.iter().map(|&r| &self.row(r)[..dim]).collect();
        pool_bags(&rows, &batch.bag_offsets, &batch.weights, dim, pooling, out);
    }

    /// The all-in-memory update: the same gradient aggregation and optimizer as the
    /// tiered table.
    pub fn apply_gradients(&mut self, batch: &Batch, bag_grads: &[f32], optimizer: &Optimizer, pooling: Pooling) {
        let dim = self.layout.dim;
        let (rows, grads) = aggregate_gradients(batch, bag_grads, dim, pooling);
        for (i, &r) in rows.iter().enumerate() {
            optimizer.apply_row(self.row_mut(r), &grads[i * dim..(i + 1) * dim]);
        }
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
        (self.data.len() / self.layout.floats()) as u64
    }
    fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
        let f = self.layout.floats();
        for (&r, dst) in rows.iter().zip(out.chunks_exact_mut(f)) {
            self.check(r)?;
            dst.copy_from_slice(self.row(r));
        }
        Ok(())
    }
    fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError> {
        let f = self.layout.floats();
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
