//! Where a training run's samples come from (`[data.synthetic]`, `[data.criteo_tsv]` or
//! `[data.mlperf_numpy]`), read as streams of engine batches whose read errors surface
//! as errors naming the file and position; and writing the synthetic stream as such
//! files (`strata gen-data`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::mlperf::{day_files, MlperfDay, MlperfDayWriter};
use super::{Sample, SyntheticConfig, SyntheticSource, TableLayout};
use crate::engine::batch::Batch;
use crate::trace::{CriteoTsvLine, CriteoTsvReader, CriteoTsvWriter, TraceError};

/// Everything that can go wrong reading or writing data files; each names the file and,
/// past the header, the position (line, or row).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Tsv(#[from] TraceError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: row {row}: {message}")]
    Row { path: PathBuf, row: u64, message: String },
    #[error("{0}")]
    Setting(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }
}

/// Something that hands out samples in order.
pub trait SampleReader: Send {
    /// Fills `sample` with the next sample; false at the end.
    fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, DataError>;

    /// The weights of a batch's lookups (ids from stream position `start`, bags at
    /// `offsets`): none unless the reader has them (files carry no weights).
    fn weights(&self, _start: u64, _offsets: &[usize]) -> Vec<f32> {
        Vec::new()
    }
}

impl<R: SampleReader + ?Sized> SampleReader for Box<R> {
    fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, DataError> {
        (**self).next_sample(sample)
    }

    fn weights(&self, start: u64, offsets: &[usize]) -> Vec<f32> {
        (**self).weights(start, offsets)
    }
}

/// A Criteo TSV line as a sample: its label, dense counts and one row id per table.
impl SampleReader for CriteoTsvReader {
    fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, DataError> {
        let mut line = CriteoTsvLine::default();
        if !self.next_line(&mut line)? {
            return Ok(false);
        }
        sample.label = line.label;
        sample.dense = line.dense;
        sample.ids.clear();
        sample.ids.extend_from_slice(&line.rows);
        Ok(true)
    }
}

/// `[data.criteo_tsv]`: Criteo TSV files, read in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriteoTsvSpec {
    pub train_files: Vec<PathBuf>,
    /// Held-out files (needed when `eval_batches` > 0).
    #[serde(default)]
    pub eval_files: Vec<PathBuf>,
    /// Multiplies every MLPerf cardinality; hashes are folded `mod rows`.
    #[serde(default = "full_scale")]
    pub scale: f64,
}

/// `[data.mlperf_numpy]`: days of the MLPerf / TorchRec NumPy layout in one folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlperfNumpySpec {
    pub dir: PathBuf,
    pub train_days: Vec<u32>,
    /// Held-out days (needed when `eval_batches` > 0); MLPerf holds out day 23.
    #[serde(default)]
    pub eval_days: Vec<u32>,
    /// Read `day_{i}_sparse_multi_hot.npz` (the MLPerf DLRM-DCNv2 multi-hot sizes)
    /// instead of the one-hot `day_{i}_sparse.npy`.
    #[serde(default)]
    pub multi_hot: bool,
    /// Multiplies every MLPerf cardinality; ids are folded `mod rows`.
    #[serde(default = "full_scale")]
    pub scale: f64,
}

fn full_scale() -> f64 {
    1.0
}

fn check_scale(scale: f64) -> Result<(), DataError> {
    TableLayout::check_criteo_scale(scale).map_err(|why| DataError::Setting(format!("scale {why}")))
}

/// The one data source of a run.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    Synthetic(SyntheticConfig),
    CriteoTsv(CriteoTsvSpec),
    MlperfNumpy(MlperfNumpySpec),
}

impl DataSource {
    /// The tables the ids index: the MLPerf cardinalities times the source's scale.
    pub fn layout(&self) -> TableLayout {
        match self {
            DataSource::Synthetic(config) => config.layout(),
            DataSource::CriteoTsv(spec) => TableLayout::criteo(spec.scale, false),
            DataSource::MlperfNumpy(spec) => TableLayout::criteo(spec.scale, spec.multi_hot),
        }
    }

    /// Checks the settings and opens every file the source names (reading the NumPy
    /// headers), so a missing or malformed file fails before any work starts.
    /// `held_out` says whether held-out batches are asked for.
    pub fn check(&self, held_out: bool) -> Result<(), DataError> {
        let layout = self.layout();
        match self {
            DataSource::Synthetic(config) => config.validate().map_err(|e| DataError::Setting(format!("synthetic: {e}"))),
            DataSource::CriteoTsv(spec) => {
                check_scale(spec.scale)?;
                if spec.train_files.is_empty() || held_out && spec.eval_files.is_empty() {
                    return Err(DataError::Setting("criteo_tsv: give train_files, and eval_files when eval_batches > 0".into()));
                }
                for path in spec.train_files.iter().chain(&spec.eval_files) {
                    CriteoTsvReader::open(path, layout.rows())?;
                }
                Ok(())
            }
            DataSource::MlperfNumpy(spec) => {
                check_scale(spec.scale)?;
                if spec.train_days.is_empty() || held_out && spec.eval_days.is_empty() {
                    return Err(DataError::Setting("mlperf_numpy: give train_days, and eval_days when eval_batches > 0".into()));
                }
                for &day in spec.train_days.iter().chain(&spec.eval_days) {
                    MlperfDay::open(&spec.dir, day, &layout, spec.multi_hot)?;
                }
                Ok(())
            }
        }
    }

    /// The samples of the training (`held_out` false) or held-out files; for the
    /// synthetic source the one stream.
    fn samples(&self, held_out: bool) -> Result<Box<dyn SampleReader>, DataError> {
        let layout = self.layout();
        Ok(match self {
            DataSource::Synthetic(config) => {
                Box::new(SyntheticSource::new(config).map_err(|e| DataError::Setting(format!("synthetic: {e}")))?)
            }
            DataSource::CriteoTsv(spec) => {
                let files = if held_out { &spec.eval_files } else { &spec.train_files };
                Box::new(InOrder::new(files.clone(), move |path: &PathBuf| Ok(CriteoTsvReader::open(path, layout.rows())?)))
            }
            DataSource::MlperfNumpy(spec) => {
                let days = if held_out { &spec.eval_days } else { &spec.train_days };
                let (dir, multi_hot) = (spec.dir.clone(), spec.multi_hot);
                Box::new(InOrder::new(days.clone(), move |&day: &u32| MlperfDay::open(&dir, day, &layout, multi_hot)))
            }
        })
    }

    /// Training batches of `batch_size` samples, at most `count` (files may end
    /// sooner; their last batch may be smaller).
    pub fn train(&self, batch_size: usize, count: u64) -> Result<BatchStream, DataError> {
        Ok(BatchStream::new(SampleBatches::new(self.samples(false)?, &self.layout(), batch_size, count, 0)))
    }

    /// Held-out batches: for the synthetic source the `count` batches that follow the
    /// `train_count` training batches in the stream; for files the first `count`
    /// batches of the held-out files. Either way their stream positions (`start`)
    /// follow those of `train_count` full training batches, so they never collide with
    /// a training batch's.
    pub fn held_out(&self, batch_size: usize, train_count: u64, count: u64) -> Result<Vec<Batch>, DataError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let layout = self.layout();
        let mut samples = self.samples(true)?;
        if let DataSource::Synthetic(_) = self {
            let mut sample = Sample::default();
            for _ in 0..train_count * batch_size as u64 {
                samples.next_sample(&mut sample)?;
            }
        }
        let start = train_count * (batch_size * layout.lookups_per_sample()) as u64;
        SampleBatches::new(samples, &layout, batch_size, count, start).collect()
    }
}

impl SampleReader for SyntheticSource {
    fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, DataError> {
        SyntheticSource::next_sample(self, sample);
        Ok(true)
    }

    fn weights(&self, start: u64, offsets: &[usize]) -> Vec<f32> {
        SyntheticSource::weights(self, start, offsets)
    }
}

/// Opens the reader of one item.
type Opener<T, R> = Box<dyn FnMut(&T) -> Result<R, DataError> + Send>;

/// Readers opened one after another, each when the previous one ends.
struct InOrder<T, R> {
    items: std::vec::IntoIter<T>,
    open: Opener<T, R>,
    current: Option<R>,
}

impl<T, R> InOrder<T, R> {
    fn new(items: Vec<T>, open: impl FnMut(&T) -> Result<R, DataError> + Send + 'static) -> Self {
        InOrder { items: items.into_iter(), open: Box::new(open), current: None }
    }
}

impl<T: Send, R: SampleReader> SampleReader for InOrder<T, R> {
    fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, DataError> {
        loop {
            if let Some(reader) = self.current.as_mut() {
                if reader.next_sample(sample)? {
                    return Ok(true);
                }
            }
            match self.items.next() {
                Some(item) => self.current = Some((self.open)(&item)?),
                None => return Ok(false),
            }
        }
    }
}

/// Groups samples into batches: one bag per (sample, table), `start` the stream
/// position of the batch's first id. Stops after an error.
struct SampleBatches<R> {
    reader: R,
    multi_hot: Vec<usize>,
    batch_size: usize,
    remaining: u64,
    start: u64,
    sample: Sample,
}

impl<R: SampleReader> SampleBatches<R> {
    fn new(reader: R, layout: &TableLayout, batch_size: usize, count: u64, start: u64) -> Self {
        SampleBatches { reader, multi_hot: layout.multi_hot().to_vec(), batch_size, remaining: count, start, sample: Sample::default() }
    }

    fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        let (mut ids, mut offsets, mut dense, mut labels) = (Vec::new(), vec![0], Vec::new(), Vec::new());
        while labels.len() < self.batch_size && self.reader.next_sample(&mut self.sample)? {
            ids.extend_from_slice(&self.sample.ids);
            dense.extend_from_slice(&self.sample.dense);
            labels.push(self.sample.label);
            let mut end = ids.len() - self.sample.ids.len();
            for &width in &self.multi_hot {
                end += width;
                offsets.push(end);
            }
        }
        if labels.is_empty() {
            return Ok(None);
        }
        let mut batch = Batch::new(ids, offsets, self.start);
        batch.weights = self.reader.weights(self.start, &batch.bag_offsets);
        batch.dense = dense;
        batch.labels = labels;
        self.start += batch.ids.len() as u64;
        Ok(Some(batch))
    }
}

impl<R: SampleReader> Iterator for SampleBatches<R> {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let batch = self.next_batch().transpose();
        if matches!(batch, Some(Err(_)) | None) {
            self.remaining = 0;
        }
        batch
    }
}

/// The first read error of a [`BatchStream`]: the stream position of the batch being
/// read, and the error. Shared with whoever consumes the stream on another thread.
#[derive(Clone, Debug, Default)]
pub struct ReadFailure(Arc<Mutex<Option<(u64, DataError)>>>);

impl ReadFailure {
    pub fn take(&self) -> Option<(u64, DataError)> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// Batches as the prefetcher takes them (`Iterator<Item = Batch>`): a read error ends
/// the stream and waits in [`BatchStream::failure`] for the consumer to report.
pub struct BatchStream {
    batches: Box<dyn Iterator<Item = Result<Batch, DataError>> + Send>,
    next_start: u64,
    failure: ReadFailure,
}

impl BatchStream {
    fn new(batches: impl Iterator<Item = Result<Batch, DataError>> + Send + 'static) -> Self {
        BatchStream { batches: Box::new(batches), next_start: 0, failure: ReadFailure::default() }
    }

    /// Where the stream's read error lands, if one happens.
    pub fn failure(&self) -> ReadFailure {
        self.failure.clone()
    }
}

impl Iterator for BatchStream {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match self.batches.next()? {
            Ok(batch) => {
                self.next_start = batch.start + batch.ids.len() as u64;
                Some(batch)
            }
            Err(error) => {
                *self.failure.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((self.next_start, error));
                None
            }
        }
    }
}

/// The file formats `strata gen-data` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// `day_{i}.tsv`, Criteo TSV (one lookup per table).
    CriteoTsv,
    /// The MLPerf NumPy layout (`day_{i}_*.npy`, `.npz` for multi-hot).
    MlperfNumpy,
}

/// Writes `days` days of `samples` samples each of the synthetic stream into `dir` (the
/// stream runs on from one day into the next) and returns the files written.
pub fn write_synthetic(
    config: &SyntheticConfig,
    format: FileFormat,
    dir: &Path,
    days: u32,
    samples: u64,
) -> Result<Vec<PathBuf>, DataError> {
    let mut source = SyntheticSource::new(config).map_err(|e| DataError::Setting(format!("synthetic: {e}")))?;
    let layout = source.layout().clone();
    if format == FileFormat::CriteoTsv && config.multi_hot {
        return Err(DataError::Setting("a Criteo TSV holds one id per table: generate with one lookup per table (`--one-hot`)".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut sample = Sample::default();
    let mut written = Vec::new();
    for day in 0..days {
        match format {
            FileFormat::CriteoTsv => {
                let path = dir.join(format!("day_{day}.tsv"));
                let mut writer = CriteoTsvWriter::create(&path, layout.rows())?;
                let mut line = CriteoTsvLine::default();
                for _ in 0..samples {
                    source.next_sample(&mut sample);
                    // One-hot (checked above): one id for each of the 26 tables.
                    line.label = sample.label;
                    line.dense = sample.dense;
                    line.rows.copy_from_slice(&sample.ids);
                    writer.write(&line)?;
                }
                writer.finish()?;
                written.push(path);
            }
            FileFormat::MlperfNumpy => {
                let mut writer = MlperfDayWriter::create(dir, day, samples, &layout, config.multi_hot)?;
                for _ in 0..samples {
                    source.next_sample(&mut sample);
                    writer.write(&sample)?;
                }
                writer.finish()?;
                written.extend(day_files(dir, day, config.multi_hot));
            }
        }
    }
    Ok(written)
}
