//! The update half of a training step: the gradients of a batch's pooled bags summed
//! per distinct row and applied by the optimizer in whichever tier holds each row (in
//! place in host memory, in one call for a CUDA slab, read, updated and written down
//! for a row only in the store).

use super::TieredTable;
use crate::engine::batch::Batch;
use crate::engine::pool::{reuse_refs, RowGradients, UPDATE_GROUP};
use crate::engine::{Buffer, EngineError};

impl TieredTable {
    /// Applies the gradients of `batch`'s pooled outputs (`bag_grads`, `bags * dim`,
    /// shaped as [`TieredTable::lookup`]'s output): see
    /// [`TieredTable::apply_bag_gradients`].
    pub fn apply_gradients(&mut self, batch: &Batch, bag_grads: &[f32]) -> Result<(), EngineError> {
        let dim = self.layout.dim;
        if bag_grads.len() != batch.bags() * dim {
            return Err(EngineError::Length { what: Buffer::Gradients, got: bag_grads.len(), needs: batch.bags() * dim });
        }
        let mut refs = reuse_refs(std::mem::take(&mut self.bag_refs));
        refs.extend(bag_grads.chunks_exact(dim.max(1)));
        let applied = self.apply_bag_gradients(batch, &refs);
        self.bag_refs = reuse_refs(refs);
        applied
    }

    /// Applies the gradients of `batch`'s pooled outputs, bag `b`'s `dim` values in
    /// `bag_grads[b]` (read where the caller keeps them: rows of a strided tensor, say),
    /// to exactly the rows of the batch, in whichever tier holds each: one summed
    /// gradient per distinct row ([`RowGradients`]), applied in place as soon as its
    /// group of rows is summed for rows in host memory, in one call for rows in a CUDA
    /// slab.
    pub fn apply_bag_gradients(&mut self, batch: &Batch, bag_grads: &[&[f32]]) -> Result<(), EngineError> {
        let dim = self.layout.dim;
        if bag_grads.len() != batch.bags() || bag_grads.iter().any(|g| g.len() != dim) {
            let got = bag_grads.iter().map(|g| g.len()).sum();
            return Err(EngineError::Length { what: Buffer::Gradients, got, needs: batch.bags() * dim });
        }
        self.check_rows(batch)?;
        self.device_slots.clear();
        self.device_grads.clear();
        let mut gradients = std::mem::take(&mut self.gradients);
        let mut grads = std::mem::take(&mut self.group_grads);
        grads.resize(UPDATE_GROUP * dim, 0.0);
        let applied = gradients
            .group(&batch.ids, &batch.bag_offsets, !batch.weights.is_empty())
            .and_then(|()| self.apply_grouped(&gradients, batch, bag_grads, &mut grads));
        self.gradients = gradients;
        self.group_grads = grads;
        applied?;
        // Rows in a CUDA slab (only the device's can be) were queued: one call.
        if let Some(device) = self.tiers.device.as_mut().filter(|_| !self.device_slots.is_empty()) {
            device.slab.apply(&self.device_slots, &self.device_grads, &self.optimizer)?;
        }
        self.staging.flush_writes()
    }

    /// Sums and applies the gradients of `gradients`' rows, [`UPDATE_GROUP`] rows at a
    /// time (`grads` holds one group), fetching the slot-map entries two groups ahead
    /// and the rows one group ahead.
    fn apply_grouped(
        &mut self,
        gradients: &RowGradients,
        batch: &Batch,
        bag_grads: &[&[f32]],
        grads: &mut [f32],
    ) -> Result<(), EngineError> {
        let dim = self.layout.dim;
        let rows = gradients.rows();
        let mut sums = [0f32; UPDATE_GROUP];
        for (g, group) in rows.chunks(UPDATE_GROUP).enumerate() {
            let first = g * UPDATE_GROUP;
            for &row in rows.iter().skip(first + 2 * UPDATE_GROUP).take(UPDATE_GROUP) {
                self.tiers.prefetch_slots(row);
            }
            for &row in rows.iter().skip(first + UPDATE_GROUP).take(UPDATE_GROUP) {
                self.prefetch_row(row);
            }
            let grads = &mut grads[..group.len() * dim];
            gradients.sum(first..first + group.len(), &batch.bag_offsets, &batch.weights, bag_grads, dim, self.pooling, grads);
            let sums = &mut sums[..group.len()];
            self.optimizer.gradient_sums(grads, dim, sums);
            for (k, ((&row, grad), &sum)) in group.iter().zip(grads.chunks_exact(dim)).zip(sums.iter()).enumerate() {
                self.apply_row_gradient(row, grad, sum, &rows[first + k..], batch.start)?;
            }
        }
        Ok(())
    }

    /// Applies one row's summed gradient (and its [`Optimizer::gradient_sums`] value)
    /// where the row's newest copy is (rounded, into a half-precision row, as the
    /// table's rounding says for the step starting at `step_start`), and marks it
    /// dirty; rows in a CUDA slab are
    /// queued in `device_slots` / `device_grads`. `rest` (this row and those after it)
    /// lets the first row found only in the store bring all such rows in one read.
    fn apply_row_gradient(&mut self, row: u64, grad: &[f32], sum: f32, rest: &[u64], step_start: u64) -> Result<(), EngineError> {
        let optimizer = self.optimizer;
        match self.tiers.newest_mut(row) {
            Some((tier, slot)) => {
                tier.mark_dirty(slot);
                match tier.slab.host_row_mut(slot) {
                    Some(values) => self.update.apply(&optimizer, values, grad, sum, row, step_start),
                    None => {
                        self.device_slots.push(slot);
                        self.device_grads.extend_from_slice(grad);
                    }
                }
            }
            None => {
                if !self.staging.is_staged(row) {
                    self.staging.stage_unstaged(rest.iter().copied(), &self.tiers, &mut self.stats)?;
                }
                self.staging.read_row(row, &mut self.row_buffer, &mut self.stats)?;
                self.update.apply(&optimizer, &mut self.row_buffer, grad, sum, row, step_start);
                self.staging.write_down(row, &self.row_buffer, &mut self.stats);
            }
        }
        Ok(())
    }
}
