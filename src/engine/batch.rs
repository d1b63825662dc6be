//! A batch of lookups ([`Batch`]): the bags, their rows' next accesses and weights, and
//! the checks that a batch is well formed.

use strata_policies::NEVER;

use super::EngineError;

/// A batch of lookups: `ids` are global rows, bag `b` is
/// `ids[bag_offsets[b]..bag_offsets[b + 1]]`. `next_access` (one per id, [`NEVER`]
/// when unknown) feeds the future-aware policies; `start` is the stream position of
/// `ids[0]`. `weights` (one per id, or empty for unweighted bags) scale each lookup's
/// row in its bag, as TorchRec's weighted bags and FBGEMM's `per_sample_weights` do.
/// For training, `dense` (13 raw counts per sample) and `labels` (one per sample) ride
/// along; the engine itself never reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub ids: Vec<u64>,
    pub bag_offsets: Vec<usize>,
    pub next_access: Vec<u64>,
    pub start: u64,
    pub weights: Vec<f32>,
    pub dense: Vec<f32>,
    pub labels: Vec<f32>,
}

impl Batch {
    /// A batch whose future is unknown.
    pub fn new(ids: Vec<u64>, bag_offsets: Vec<usize>, start: u64) -> Self {
        let next_access = vec![NEVER; ids.len()];
        Batch { ids, bag_offsets, next_access, start, weights: Vec::new(), dense: Vec::new(), labels: Vec::new() }
    }

    pub fn bags(&self) -> usize {
        self.bag_offsets.len().saturating_sub(1)
    }

    /// Checks the batch's shape: bag offsets start at 0, never decrease and end at the
    /// last id; one next-access time per id; no weights or one per id.
    pub fn validate(&self) -> Result<(), EngineError> {
        let offsets = &self.bag_offsets;
        let last = offsets.len().saturating_sub(1);
        let wrong = if offsets.first() != Some(&0) {
            Some(0)
        } else if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1]) {
            Some(i + 1)
        } else {
            (offsets[last] != self.ids.len()).then_some(last)
        };
        if let Some(index) = wrong {
            return Err(EngineError::BagOffsets { start: self.start, ids: self.ids.len(), index, offset: offsets.get(index).copied() });
        }
        if self.next_access.len() != self.ids.len() {
            return Err(EngineError::NextAccessCount { start: self.start, times: self.next_access.len(), ids: self.ids.len() });
        }
        if !self.weights.is_empty() && self.weights.len() != self.ids.len() {
            return Err(EngineError::WeightCount { start: self.start, weights: self.weights.len(), ids: self.ids.len() });
        }
        Ok(())
    }

    /// The distinct rows in order of first appearance.
    pub fn unique_rows(&self) -> Vec<u64> {
        let mut seen = rustc_hash::FxHashSet::default();
        self.ids.iter().copied().filter(|id| seen.insert(*id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misshapen_batch_says_where_and_with_what_numbers() {
        let error = |offsets: Vec<usize>| Batch::new(vec![1, 2, 3], offsets, 40).validate().unwrap_err().to_string();
        assert_eq!(error(vec![1, 3]), "batch at 40: bag offsets must rise from 0 to the 3 ids (offset 0 is 1)");
        assert_eq!(error(vec![0, 2, 1, 3]), "batch at 40: bag offsets must rise from 0 to the 3 ids (offset 2 is 1)");
        assert_eq!(error(vec![0, 2]), "batch at 40: bag offsets must rise from 0 to the 3 ids (offset 1 is 2)");
        assert_eq!(error(vec![]), "batch at 40: bag offsets must rise from 0 to the 3 ids (there are none)");
        let mut batch = Batch::new(vec![1, 2, 3], vec![0, 3], 40);
        batch.next_access.pop();
        assert_eq!(batch.validate().unwrap_err().to_string(), "batch at 40: 2 next-access times for 3 ids");
        let mut batch = Batch::new(vec![1, 2, 3], vec![0, 3], 40);
        batch.weights = vec![1.0; 2];
        assert_eq!(batch.validate().unwrap_err().to_string(), "batch at 40: 2 weights for 3 ids");
        assert!(Batch::new(vec![1, 2, 3], vec![0, 1, 1, 3], 40).validate().is_ok());
    }
}
