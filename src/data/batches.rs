//! Batches of lookups for the engine from the synthetic generator: one bag per
//! (sample, table), `multi_hot[t]` lookups in bag `t` of each sample; with features,
//! each sample's dense counts and click label too.

use super::{Sample, SyntheticConfig, SyntheticConfigError, SyntheticSource};
use crate::engine::table::Batch;

/// An endless (or `count`-long) stream of engine batches of `batch_size` samples.
pub struct SyntheticBatches {
    source: SyntheticSource,
    batch_size: usize,
    remaining: Option<u64>,
    start: u64,
    features: Option<Sample>,
}

impl SyntheticBatches {
    pub fn new(config: &SyntheticConfig, batch_size: usize, count: Option<u64>) -> Result<Self, SyntheticConfigError> {
        Ok(SyntheticBatches { source: SyntheticSource::new(config)?, batch_size, remaining: count, start: 0, features: None })
    }

    /// Also draws each sample's dense features and label (for training and serving).
    pub fn with_features(mut self) -> Self {
        self.features = Some(Sample::default());
        self
    }

    pub fn source(&self) -> &SyntheticSource {
        &self.source
    }
}

impl Iterator for SyntheticBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if let Some(remaining) = self.remaining.as_mut() {
            if *remaining == 0 {
                return None;
            }
            *remaining -= 1;
        }
        let per_sample = self.source.layout().lookups_per_sample();
        let hot: Vec<usize> = self.source.layout().multi_hot().to_vec();
        let mut ids = Vec::with_capacity(self.batch_size * per_sample);
        let mut offsets = Vec::with_capacity(self.batch_size * hot.len() + 1);
        offsets.push(0);
        let (mut dense, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..self.batch_size {
            match self.features.as_mut() {
                Some(sample) => {
                    self.source.next_sample(sample);
                    ids.extend_from_slice(&sample.ids);
                    dense.extend_from_slice(&sample.dense);
                    labels.push(sample.label);
                }
                None => self.source.next_ids(&mut ids),
            }
            let mut end = ids.len() - per_sample;
            for &h in &hot {
                end += h;
                offsets.push(end);
            }
        }
        let mut batch = Batch::new(ids, offsets, self.start);
        batch.dense = dense;
        batch.labels = labels;
        self.start += batch.ids.len() as u64;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_have_one_bag_per_sample_and_table() {
        let config = SyntheticConfig { scale: 0.0005, ..SyntheticConfig::default() };
        let batches: Vec<Batch> = SyntheticBatches::new(&config, 3, Some(2)).unwrap().collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].bags(), 3 * 26);
        assert_eq!(batches[0].ids.len(), 3 * 214);
        assert_eq!(batches[0].bag_offsets[1], 3);
        assert_eq!(*batches[0].bag_offsets.last().unwrap(), 3 * 214);
        assert_eq!(batches[1].start, 3 * 214);
        assert!(batches[0].dense.is_empty() && batches[0].labels.is_empty());
    }

    #[test]
    fn feature_batches_carry_dense_values_and_labels_with_the_same_ids() {
        let config = SyntheticConfig { scale: 0.0005, ..SyntheticConfig::default() };
        let plain: Vec<Batch> = SyntheticBatches::new(&config, 4, Some(1)).unwrap().collect();
        let full: Vec<Batch> = SyntheticBatches::new(&config, 4, Some(1)).unwrap().with_features().collect();
        assert_eq!(full[0].dense.len(), 4 * 13);
        assert_eq!(full[0].labels.len(), 4);
        assert!(full[0].labels.iter().all(|&l| l == 0.0 || l == 1.0));
        assert_eq!(full[0].bag_offsets, plain[0].bag_offsets);
    }
}
