//! Batches of lookups for the engine from the synthetic generator: one bag per
//! (sample, table), `multi_hot[t]` lookups in bag `t` of each sample; with features,
//! each sample's dense counts and click label too. `Rebatch` cuts any stream of
//! feature batches into batches of another size (serving requests).

use super::{Sample, SyntheticConfig, SyntheticConfigError, SyntheticSource, TableLayout, CRITEO_DENSE_FEATURES};
use crate::engine::batch::Batch;

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

    /// The stream over tables of any shape (see [`SyntheticSource::with_layout`]).
    pub fn with_layout(
        config: &SyntheticConfig,
        layout: TableLayout,
        batch_size: usize,
        count: Option<u64>,
    ) -> Result<Self, SyntheticConfigError> {
        let source = SyntheticSource::with_layout(config, layout)?;
        Ok(SyntheticBatches { source, batch_size, remaining: count, start: 0, features: None })
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
        batch.weights = self.source.weights(self.start, &batch.bag_offsets);
        batch.dense = dense;
        batch.labels = labels;
        self.start += batch.ids.len() as u64;
        Some(batch)
    }
}

/// Cuts a stream of feature batches (labels and dense values) into batches of `samples`
/// samples each, in order, with the stream positions kept; the last batch is shorter
/// when the stream ends mid-way. A batch without labels cannot be cut and passes as is.
pub struct Rebatch<I> {
    source: I,
    samples: usize,
    /// The source batch being cut, and its first sample not handed out yet.
    current: Option<(Batch, usize)>,
}

impl<I: Iterator<Item = Batch>> Rebatch<I> {
    pub fn new(source: I, samples: usize) -> Self {
        Rebatch { source, samples: samples.max(1), current: None }
    }
}

impl<I: Iterator<Item = Batch>> Iterator for Rebatch<I> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let (mut ids, mut offsets, mut dense, mut labels) = (Vec::new(), vec![0], Vec::new(), Vec::new());
        let mut weights = Vec::new();
        let mut start = None;
        while labels.len() < self.samples {
            let (batch, first) = match self.current.take() {
                Some(current) => current,
                None => match self.source.next() {
                    Some(batch) if batch.labels.is_empty() && labels.is_empty() => return Some(batch),
                    Some(batch) if batch.labels.is_empty() => {
                        self.current = Some((batch, 0));
                        break;
                    }
                    Some(batch) => (batch, 0),
                    None => break,
                },
            };
            let bags_per_sample = batch.bags() / batch.labels.len();
            let take = (self.samples - labels.len()).min(batch.labels.len() - first);
            let (bag_lo, bag_hi) = (first * bags_per_sample, (first + take) * bags_per_sample);
            let (id_lo, id_hi) = (batch.bag_offsets[bag_lo], batch.bag_offsets[bag_hi]);
            start.get_or_insert(batch.start + id_lo as u64);
            let base = ids.len();
            ids.extend_from_slice(&batch.ids[id_lo..id_hi]);
            if !batch.weights.is_empty() {
                weights.extend_from_slice(&batch.weights[id_lo..id_hi]);
            }
            offsets.extend(batch.bag_offsets[bag_lo + 1..=bag_hi].iter().map(|&o| o - id_lo + base));
            dense.extend_from_slice(&batch.dense[first * CRITEO_DENSE_FEATURES..(first + take) * CRITEO_DENSE_FEATURES]);
            labels.extend_from_slice(&batch.labels[first..first + take]);
            if first + take < batch.labels.len() {
                self.current = Some((batch, first + take));
            }
        }
        let start = start?;
        let mut batch = Batch::new(ids, offsets, start);
        batch.weights = weights;
        batch.dense = dense;
        batch.labels = labels;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_tables_carry_weights_drawn_from_their_stream_positions() {
        let mut weighted = vec![false; 26];
        weighted[1] = true;
        weighted[20] = true;
        let config = SyntheticConfig { scale: 0.0005, weighted: crate::config::PerTable::Each(weighted), ..SyntheticConfig::default() };
        let batches: Vec<Batch> = SyntheticBatches::new(&config, 4, Some(3)).unwrap().with_features().collect();
        for batch in &batches {
            assert_eq!(batch.weights.len(), batch.ids.len());
            for (b, bag) in batch.bag_offsets.windows(2).enumerate() {
                for &w in &batch.weights[bag[0]..bag[1]] {
                    match b % 26 {
                        1 | 20 => assert!((0.5..1.5).contains(&w) && w != 1.0, "bag {b}: {w}"),
                        _ => assert_eq!(w, 1.0, "bag {b} is of an unweighted table"),
                    }
                }
            }
        }
        // Cut into requests of 3 samples, every lookup keeps its weight.
        let whole: Vec<(u64, f32)> = batches.iter().flat_map(|b| b.ids.iter().copied().zip(b.weights.iter().copied())).collect();
        let cut: Vec<(u64, f32)> =
            Rebatch::new(batches.clone().into_iter(), 3).flat_map(|b| b.ids.into_iter().zip(b.weights).collect::<Vec<_>>()).collect();
        assert_eq!(cut, whole);
        let unweighted = SyntheticBatches::new(&SyntheticConfig { scale: 0.0005, ..SyntheticConfig::default() }, 4, Some(1)).unwrap();
        assert!(unweighted.map(|b| b.weights).all(|w| w.is_empty()), "no weights unless asked");
        let wrong = SyntheticConfig { weighted: crate::config::PerTable::Each(vec![true; 3]), ..config };
        assert_eq!(wrong.validate().unwrap_err().to_string(), "synthetic.weighted needs 1 or 26 values, got 3");
    }

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

    #[test]
    fn rebatching_keeps_every_sample_in_order_with_stream_positions() {
        let config = SyntheticConfig { scale: 0.0005, multi_hot: false, ..SyntheticConfig::default() };
        let whole: Vec<Batch> = SyntheticBatches::new(&config, 12, Some(1)).unwrap().with_features().collect();
        let cut: Vec<Batch> = Rebatch::new(SyntheticBatches::new(&config, 4, Some(3)).unwrap().with_features(), 5).collect();
        assert_eq!(cut.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), vec![5, 5, 2]);
        for b in &cut {
            b.validate().unwrap();
            assert_eq!(b.bags(), 26 * b.labels.len());
            assert_eq!(b.dense.len(), CRITEO_DENSE_FEATURES * b.labels.len());
        }
        assert_eq!(cut.iter().map(|b| b.start).collect::<Vec<_>>(), vec![0, 5 * 26, 10 * 26]);
        let joined = |f: &dyn Fn(&Batch) -> Vec<f32>| cut.iter().flat_map(f).collect::<Vec<f32>>();
        assert_eq!(cut.iter().flat_map(|b| b.ids.clone()).collect::<Vec<_>>(), whole[0].ids);
        assert_eq!(joined(&|b| b.dense.clone()), whole[0].dense);
        assert_eq!(joined(&|b| b.labels.clone()), whole[0].labels);
        // Multi-hot bags: offsets follow the ids of each sample's own bags.
        let config = SyntheticConfig { scale: 0.0005, ..SyntheticConfig::default() };
        let whole: Vec<Batch> = SyntheticBatches::new(&config, 6, Some(1)).unwrap().with_features().collect();
        let cut: Vec<Batch> = Rebatch::new(SyntheticBatches::new(&config, 3, Some(2)).unwrap().with_features(), 4).collect();
        assert_eq!(cut[1].start, 4 * 214);
        assert_eq!(cut[1].bag_offsets, whole[0].bag_offsets[4 * 26..].iter().map(|o| o - 4 * 214).collect::<Vec<_>>());
        let plain: Vec<Batch> = Rebatch::new(SyntheticBatches::new(&config, 3, Some(2)).unwrap(), 4).collect();
        assert_eq!(plain.len(), 2, "batches without labels pass unchanged");
    }
}
