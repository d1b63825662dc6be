//! Batches of lookups for the engine from the synthetic generator: one bag per
//! (sample, table), `multi_hot[t]` lookups in bag `t` of each sample.

use super::{SyntheticConfig, SyntheticConfigError, SyntheticSource};
use crate::engine::table::Batch;

/// An endless (or `count`-long) stream of engine batches of `batch_size` samples.
pub struct SyntheticBatches {
    source: SyntheticSource,
    batch_size: usize,
    remaining: Option<u64>,
    start: u64,
}

impl SyntheticBatches {
    pub fn new(config: &SyntheticConfig, batch_size: usize, count: Option<u64>) -> Result<Self, SyntheticConfigError> {
        Ok(SyntheticBatches { source: SyntheticSource::new(config)?, batch_size, remaining: count, start: 0 })
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
        for _ in 0..self.batch_size {
            self.source.next_ids(&mut ids);
            let mut end = ids.len() - per_sample;
            for &h in &hot {
                end += h;
                offsets.push(end);
            }
        }
        let batch = Batch::new(ids, offsets, self.start);
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
    }
}
