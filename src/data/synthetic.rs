//! The seeded, streaming Criteo-shaped generator: per-table Zipf row popularity with an
//! optional drifting hot set, log-normal dense features, and labels drawn from a hidden
//! logistic model of the ids and dense features (so a DLRM can learn them). No table
//! is materialised: a row's popularity rank maps to its id by an affine permutation.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use super::layout::{TableLayout, CRITEO_DENSE_FEATURES};
use crate::config::PerTable;
use crate::hash::mix64;
use crate::trace::{KeySource, TraceError, TraceRecord, NEVER};

/// Settings of the synthetic generator (`[data.synthetic]` / `[trace.synthetic]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Multiplies every MLPerf cardinality (rounded up, at least one row per table).
    pub scale: f64,
    /// Zipf exponent of row popularity: one value for every table, or one per table.
    pub zipf: Vec<f64>,
    /// MLPerf multi-hot sizes (214 lookups per sample) or one lookup per table.
    pub multi_hot: bool,
    /// Seed of the whole stream.
    pub seed: u64,
    /// Moves the hot set over time; absent = a stationary hot set.
    pub drift: Option<DriftConfig>,
    /// Whether a table's lookups carry weights (TorchRec's weighted features, FBGEMM's
    /// `per_sample_weights`): one for every table, or one per table. A weighted
    /// lookup's weight is uniform in [0.5, 1.5), drawn from the seed and its stream
    /// position; the lookups of unweighted tables in a weighted batch weigh 1. Batches
    /// only: traces carry no weights.
    pub weighted: PerTable<bool>,
}

/// Hot-set drift: every `every_samples` samples each table's popularity ranking shifts
/// by `fraction` of the table's rows, so yesterday's hot rows cool down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    pub every_samples: u64,
    pub fraction: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { scale: 0.001, zipf: vec![1.05], multi_hot: true, seed: 1, drift: None, weighted: false.into() }
    }
}

/// A configuration the generator cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticConfigError {
    #[error("synthetic.scale {0}")]
    Scale(String),
    #[error("synthetic.zipf needs 1 or {tables} exponents, got {got}")]
    ZipfCount { tables: usize, got: usize },
    #[error("synthetic.zipf exponent {0} must be positive")]
    ZipfValue(f64),
    #[error("synthetic.weighted needs 1 or {tables} values, got {got}")]
    WeightedCount { tables: usize, got: usize },
    #[error("synthetic.drift.every_samples must be at least 1 and fraction within [0, 1]")]
    Drift,
    #[error("scan.every and scan.length must be at least 1")]
    Scan,
}

impl SyntheticConfig {
    pub fn layout(&self) -> TableLayout {
        TableLayout::criteo(self.scale, self.multi_hot)
    }

    pub fn validate(&self) -> Result<(), SyntheticConfigError> {
        TableLayout::check_criteo_scale(self.scale).map_err(SyntheticConfigError::Scale)?;
        self.validate_sampling(CRITEO_TABLES)
    }

    /// The exponents (1 or one per table) and the drift, for `tables` tables.
    fn validate_sampling(&self, tables: usize) -> Result<(), SyntheticConfigError> {
        if self.zipf.len() != 1 && self.zipf.len() != tables {
            return Err(SyntheticConfigError::ZipfCount { tables, got: self.zipf.len() });
        }
        if let Some(&bad) = self.zipf.iter().find(|&&s| !(s > 0.0 && s.is_finite())) {
            return Err(SyntheticConfigError::ZipfValue(bad));
        }
        self.weighted.of(tables).map_err(|got| SyntheticConfigError::WeightedCount { tables, got })?;
        if let Some(d) = &self.drift {
            if d.every_samples == 0 || !(0.0..=1.0).contains(&d.fraction) {
                return Err(SyntheticConfigError::Drift);
            }
        }
        Ok(())
    }
}

const CRITEO_TABLES: usize = 26;

/// One generated sample: raw dense counts, the global row ids of every lookup (table by
/// table, `multi_hot[t]` ids for table `t`) and the click label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub dense: [f32; CRITEO_DENSE_FEATURES],
    pub ids: Vec<u64>,
    pub label: f32,
}

/// Per-table sampling state: Zipf over popularity ranks, and the affine permutation
/// `row = (a * ((rank + shift) mod n) + b) mod n` from rank to row.
struct TableSampler {
    rows: u64,
    zipf: Zipf<f64>,
    a: u64,
    b: u64,
    shift: u64,
    shift_step: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A hash mapped to a uniform value in [-1, 1).
fn signed_unit(hash: u64) -> f32 {
    ((hash >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

impl TableSampler {
    fn new(rows: u64, exponent: f64, table: usize, seed: u64, drift_fraction: f64) -> Self {
        let zipf = Zipf::new(rows, exponent).expect("validated: rows >= 1, exponent > 0");
        let h = mix64(seed ^ mix64(table as u64 + 1));
        let mut a = (h % rows.max(2)) | 1;
        while gcd(a, rows) != 1 {
            a += 2;
        }
        let shift_step = (rows as f64 * drift_fraction).round() as u64;
        TableSampler { rows, zipf, a: a % rows.max(1), b: mix64(h) % rows, shift: 0, shift_step }
    }

    #[inline]
    fn sample(&self, rng: &mut SmallRng) -> u64 {
        if self.rows == 1 {
            return 0;
        }
        let rank = self.zipf.sample(rng) as u64 - 1;
        let shifted = (rank + self.shift) % self.rows;
        ((u128::from(self.a) * u128::from(shifted) + u128::from(self.b)) % u128::from(self.rows)) as u64
    }
}

/// Streams samples of the synthetic Criteo-shaped data set.
pub struct SyntheticSource {
    layout: TableLayout,
    /// Which tables' lookups carry weights (empty: none does).
    weighted: Vec<bool>,
    tables: Vec<TableSampler>,
    rng: SmallRng,
    seed: u64,
    drift_every: u64,
    samples: u64,
}

impl SyntheticSource {
    pub fn new(config: &SyntheticConfig) -> Result<Self, SyntheticConfigError> {
        config.validate()?;
        Self::with_layout(config, config.layout())
    }

    /// The generator over tables of any rows and lookups per sample (`layout`) instead
    /// of the scaled Criteo ones: `config.scale` and `multi_hot` are not used.
    pub fn with_layout(config: &SyntheticConfig, layout: TableLayout) -> Result<Self, SyntheticConfigError> {
        config.validate_sampling(layout.tables())?;
        let drift_fraction = config.drift.as_ref().map_or(0.0, |d| d.fraction);
        let tables = layout
            .rows()
            .iter()
            .enumerate()
            .map(|(t, &rows)| {
                let exponent = if config.zipf.len() == 1 { config.zipf[0] } else { config.zipf[t] };
                TableSampler::new(rows, exponent, t, config.seed, drift_fraction)
            })
            .collect();
        let weighted = config.weighted.of(layout.tables()).unwrap_or_default();
        Ok(SyntheticSource {
            weighted: if weighted.contains(&true) { weighted } else { Vec::new() },
            layout,
            tables,
            rng: SmallRng::seed_from_u64(config.seed),
            seed: config.seed,
            drift_every: config.drift.as_ref().map_or(0, |d| d.every_samples),
            samples: 0,
        })
    }

    pub fn layout(&self) -> &TableLayout {
        &self.layout
    }

    /// The weights of a batch's lookups (`ids` from stream position `start`, bag `b` of
    /// table `b % tables` at `offsets[b]..offsets[b + 1]`); empty when no table is
    /// weighted.
    pub fn weights(&self, start: u64, offsets: &[usize]) -> Vec<f32> {
        if self.weighted.is_empty() {
            return Vec::new();
        }
        let mut weights = Vec::with_capacity(offsets.last().copied().unwrap_or(0));
        for (b, bag) in offsets.windows(2).enumerate() {
            let weighted = self.weighted[b % self.weighted.len()];
            weights.extend((bag[0]..bag[1]).map(|i| match weighted {
                true => 0.5 + (mix64(self.seed ^ mix64(start + i as u64)) >> 40) as f32 / (1u64 << 24) as f32,
                false => 1.0,
            }));
        }
        weights
    }

    fn advance_drift(&mut self) {
        if self.drift_every > 0 && self.samples > 0 && self.samples.is_multiple_of(self.drift_every) {
            for t in &mut self.tables {
                t.shift = (t.shift + t.shift_step) % t.rows;
            }
        }
        self.samples += 1;
    }

    /// Appends the global row ids of the next sample's lookups to `ids`, without
    /// drawing dense features or a label (the fast path for traces).
    pub fn next_ids(&mut self, ids: &mut Vec<u64>) {
        self.advance_drift();
        for (t, sampler) in self.tables.iter().enumerate() {
            for _ in 0..self.layout.multi_hot()[t] {
                let row = sampler.sample(&mut self.rng);
                ids.push(self.layout.global_row(t, row));
            }
        }
    }

    /// Fills `sample` with the next sample: ids, dense features and the label of the
    /// hidden model.
    pub fn next_sample(&mut self, sample: &mut Sample) {
        sample.ids.clear();
        self.next_ids(&mut sample.ids);
        let mut logit = -1.2f32;
        for (f, dense) in sample.dense.iter_mut().enumerate() {
            let normal: f32 = self.rng.sample(rand_distr::StandardNormal);
            let count = (1.5 + 0.3 * f as f32 + 1.2 * normal).exp().floor();
            *dense = count;
            let weight = signed_unit(mix64(self.seed ^ 0xD0 ^ (f as u64) << 8));
            logit += 0.4 * weight * ((count + 3.0).ln() - 2.0);
        }
        let mut start = 0;
        for &hot in self.layout.multi_hot() {
            let bag = &sample.ids[start..start + hot];
            let sum: f32 = bag.iter().map(|&id| signed_unit(mix64(self.seed ^ mix64(id)))).sum();
            logit += 0.6 * sum / (hot as f32).sqrt();
            start += hot;
        }
        let p = 1.0 / (1.0 + (-logit).exp());
        sample.label = if self.rng.gen::<f32>() < p { 1.0 } else { 0.0 };
    }
}

/// Sequential scans mixed into a synthetic trace (`[trace.scan]`): after every `every`
/// lookups of the stream come `length` consecutive global row ids, each scan going on
/// from where the last one stopped and wrapping around the whole table space, as a
/// batch job reading every row would. It is the classic test of scan resistance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    pub every: u64,
    pub length: u64,
}

impl ScanConfig {
    pub fn validate(&self) -> Result<(), SyntheticConfigError> {
        if self.every == 0 || self.length == 0 {
            return Err(SyntheticConfigError::Scan);
        }
        Ok(())
    }
}

/// The lookups of the synthetic stream as a trace of global row ids, `requests` long,
/// with scans mixed in if asked.
pub struct SyntheticTrace {
    source: SyntheticSource,
    remaining: u64,
    pending: Vec<u64>,
    cursor: usize,
    scan: Option<ScanState>,
}

/// Where the scans of a trace stand.
struct ScanState {
    config: ScanConfig,
    /// Stream lookups left before the next scan starts.
    until_scan: u64,
    /// Rows left in the scan under way.
    scan_left: u64,
    next_row: u64,
    total_rows: u64,
}

impl SyntheticTrace {
    pub fn new(config: &SyntheticConfig, requests: u64) -> Result<Self, SyntheticConfigError> {
        Ok(SyntheticTrace { source: SyntheticSource::new(config)?, remaining: requests, pending: Vec::new(), cursor: 0, scan: None })
    }

    /// The same trace with `scan`'s sequential scans mixed in (the length stays).
    pub fn with_scans(mut self, scan: &ScanConfig) -> Result<Self, SyntheticConfigError> {
        scan.validate()?;
        let total_rows = self.source.layout().total_rows();
        self.scan = Some(ScanState { config: *scan, until_scan: scan.every, scan_left: 0, next_row: 0, total_rows });
        Ok(self)
    }

    /// Appends at most `limit` lookups of the generated stream (no scans), and at least
    /// one if `limit` is not 0.
    fn stream(&mut self, out: &mut Vec<TraceRecord>, limit: usize) {
        if self.cursor == self.pending.len() {
            self.pending.clear();
            self.cursor = 0;
            self.source.next_ids(&mut self.pending);
        }
        let take = (self.pending.len() - self.cursor).min(limit);
        out.extend(self.pending[self.cursor..self.cursor + take].iter().map(|&key| TraceRecord { key, next_access: NEVER }));
        self.cursor += take;
    }
}

impl KeySource for SyntheticTrace {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        while out.len() < max && self.remaining > 0 {
            let room = (max - out.len()).min(self.remaining as usize);
            let before = out.len();
            match self.scan.as_mut() {
                None => self.stream(out, room),
                Some(scan) if scan.scan_left > 0 => {
                    let take = scan.scan_left.min(room as u64);
                    for _ in 0..take {
                        out.push(TraceRecord { key: scan.next_row, next_access: NEVER });
                        scan.next_row = (scan.next_row + 1) % scan.total_rows;
                    }
                    scan.scan_left -= take;
                    if scan.scan_left == 0 {
                        scan.until_scan = scan.config.every;
                    }
                }
                Some(scan) => {
                    let limit = scan.until_scan.min(room as u64) as usize;
                    self.stream(out, limit);
                    let scan = self.scan.as_mut().expect("matched above");
                    scan.until_scan -= (out.len() - before) as u64;
                    if scan.until_scan == 0 {
                        scan.scan_left = scan.config.length;
                    }
                }
            }
            self.remaining -= (out.len() - before) as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticConfig {
        SyntheticConfig { scale: 0.0005, ..SyntheticConfig::default() }
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let draw = |seed| {
            let mut src = SyntheticSource::new(&SyntheticConfig { seed, ..small() }).unwrap();
            let mut s = Sample::default();
            (0..50)
                .map(|_| {
                    src.next_sample(&mut s);
                    (s.ids.clone(), s.label)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn ids_stay_inside_their_tables_and_follow_multi_hot() {
        let mut src = SyntheticSource::new(&small()).unwrap();
        let layout = src.layout().clone();
        let mut s = Sample::default();
        for _ in 0..200 {
            src.next_sample(&mut s);
            assert_eq!(s.ids.len(), 214);
            let mut start = 0;
            for t in 0..layout.tables() {
                for &id in &s.ids[start..start + layout.multi_hot()[t]] {
                    assert!(id >= layout.global_row(t, 0) && id <= layout.global_row(t, layout.rows()[t] - 1));
                }
                start += layout.multi_hot()[t];
            }
        }
    }

    #[test]
    fn popularity_is_skewed_and_drift_moves_the_hot_row() {
        let hottest = |drift: Option<DriftConfig>, skip: usize| {
            let mut src = SyntheticSource::new(&SyntheticConfig { drift, ..small() }).unwrap();
            let mut ids = Vec::new();
            for _ in 0..skip {
                ids.clear();
                src.next_ids(&mut ids);
            }
            let mut counts = std::collections::HashMap::new();
            for _ in 0..2000 {
                ids.clear();
                src.next_ids(&mut ids);
                *counts.entry(ids[0]).or_insert(0u32) += 1; // table 0: 20 000 rows
            }
            let (&row, &count) = counts.iter().max_by_key(|(_, &c)| c).unwrap();
            (row, count)
        };
        let (still_row, still_count) = hottest(None, 0);
        assert!(still_count > 100, "Zipf(1.05) top row should take >5% of 2000 draws, got {still_count}");
        let (late_row, _) = hottest(None, 3000);
        assert_eq!(still_row, late_row);
        let drift = || Some(DriftConfig { every_samples: 1000, fraction: 0.1 });
        let (early, _) = hottest(drift(), 0);
        let (late, _) = hottest(drift(), 3000);
        assert_ne!(early, late);
    }

    #[test]
    fn positive_rate_is_plausible() {
        let mut src = SyntheticSource::new(&small()).unwrap();
        let mut s = Sample::default();
        let n = 4000;
        let positives: f32 = (0..n)
            .map(|_| {
                src.next_sample(&mut s);
                s.label
            })
            .sum();
        let rate = positives / n as f32;
        assert!(rate > 0.05 && rate < 0.6, "positive rate {rate}");
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(SyntheticSource::new(&SyntheticConfig { scale: 0.0, ..small() }).is_err());
        assert!(SyntheticSource::new(&SyntheticConfig { zipf: vec![1.0, 2.0], ..small() }).is_err());
        assert!(SyntheticSource::new(&SyntheticConfig { zipf: vec![-1.0], ..small() }).is_err());
    }

    #[test]
    fn trace_has_exactly_the_requested_length() {
        let mut trace = SyntheticTrace::new(&small(), 1000).unwrap();
        let mut out = Vec::new();
        let mut total = 0;
        loop {
            trace.next_chunk(&mut out, 300).unwrap();
            if out.is_empty() {
                break;
            }
            total += out.len();
        }
        assert_eq!(total, 1000);
    }

    /// Every lookup of a trace, read in chunks of `chunk`.
    fn all_keys(mut trace: SyntheticTrace, chunk: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut keys = Vec::new();
        loop {
            trace.next_chunk(&mut out, chunk).unwrap();
            if out.is_empty() {
                return keys;
            }
            keys.extend(out.iter().map(|r| r.key));
        }
    }

    #[test]
    fn scans_interleave_consecutive_rows_with_the_stream() {
        let scan = ScanConfig { every: 500, length: 120 };
        let plain = all_keys(SyntheticTrace::new(&small(), 2000).unwrap(), 77);
        let mixed = all_keys(SyntheticTrace::new(&small(), 2000).unwrap().with_scans(&scan).unwrap(), 77);
        assert_eq!(mixed.len(), 2000);
        // 500 stream lookups, 120 scanned rows, 500 more, ... ; the scans go on from
        // where the last stopped, and the stream from where it paused.
        let mut stream = plain.iter();
        let mut next_row = 0;
        for (i, &key) in mixed.iter().enumerate() {
            if i % 620 < 500 {
                assert_eq!(Some(&key), stream.next(), "lookup {i}");
            } else {
                assert_eq!(key, next_row, "lookup {i}");
                next_row += 1;
            }
        }
        assert_eq!(next_row, 3 * 120);
        // The chunk size does not change the trace.
        assert_eq!(all_keys(SyntheticTrace::new(&small(), 2000).unwrap().with_scans(&scan).unwrap(), 4096), mixed);
        assert!(SyntheticTrace::new(&small(), 10).unwrap().with_scans(&ScanConfig { every: 0, length: 1 }).is_err());
        assert!(SyntheticTrace::new(&small(), 10).unwrap().with_scans(&ScanConfig { every: 1, length: 0 }).is_err());
    }
}
