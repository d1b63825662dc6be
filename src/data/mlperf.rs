//! The MLPerf DLRM / TorchRec preprocessed Criteo layout, one set of files per day:
//! `day_{i}_dense.npy` (f32 `[N, 13]`, `log(x + 3)` of the counts), `day_{i}_labels.npy`
//! (`[N]` or `[N, 1]`, 0 or 1) and either `day_{i}_sparse.npy` (int32/int64 `[N, 26]`,
//! one id per table) or `day_{i}_sparse_multi_hot.npz` (arrays `"0"`..`"25"`, int32/int64
//! `[N, multi_hot[t]]`). Read as samples a chunk of rows at a time; written from samples.

use std::path::{Path, PathBuf};

use super::npy::{open_npz, Dtype, NpyArray, NpyWriter};
use super::{DataError, Sample, SampleReader, TableLayout, CRITEO_DENSE_FEATURES};

/// Rows read from each array at a time.
const CHUNK_ROWS: u64 = 1024;

/// The three files of day `day` in `dir`: dense, labels, sparse.
pub fn day_files(dir: &Path, day: u32, multi_hot: bool) -> [PathBuf; 3] {
    let sparse = if multi_hot { format!("day_{day}_sparse_multi_hot.npz") } else { format!("day_{day}_sparse.npy") };
    [dir.join(format!("day_{day}_dense.npy")), dir.join(format!("day_{day}_labels.npy")), dir.join(sparse)]
}

/// The dense value the files hold for a raw count: `log(x + 3)`, as TorchRec stores it.
pub fn log_count(count: f32) -> f32 {
    (f64::from(count) + 3.0).ln() as f32
}

/// The raw count back from a stored `log(x + 3)`: Criteo's dense features are whole
/// numbers, so the inverse is rounded, which makes it exact for counts below 10^6.
/// (The model applies `log(max(x, 0) + 3)` to raw counts itself.)
pub fn count_of(logged: f32) -> f32 {
    (f64::from(logged).exp() - 3.0).round() as f32
}

/// One day's arrays, read as samples.
pub struct MlperfDay {
    dense: NpyArray,
    labels: NpyArray,
    /// One array `[N, 26]`, or one `[N, multi_hot[t]]` per table.
    sparse: Vec<NpyArray>,
    layout: TableLayout,
    rows: u64,
    /// The rows in the buffers, and the next row to hand out.
    chunk_start: u64,
    chunk_end: u64,
    next: u64,
    dense_buf: Vec<u8>,
    labels_buf: Vec<u8>,
    sparse_bufs: Vec<Vec<u8>>,
}

fn shape_error(array: &NpyArray, expected: &str) -> DataError {
    DataError::Format {
        path: array.name().to_path_buf(),
        message: format!("expected {expected}, found shape {:?} of {}", array.shape, array.dtype.descr()),
    }
}

impl MlperfDay {
    /// Opens day `day` in `dir` and checks every array's type and shape against the
    /// layout's 26 tables (multi-hot widths from `layout.multi_hot()`).
    pub fn open(dir: &Path, day: u32, layout: &TableLayout, multi_hot: bool) -> Result<MlperfDay, DataError> {
        let [dense_path, labels_path, sparse_path] = day_files(dir, day, multi_hot);
        let dense = NpyArray::open(&dense_path)?;
        if dense.dtype != Dtype::F32 || dense.shape.len() != 2 || dense.shape[1] != CRITEO_DENSE_FEATURES as u64 {
            return Err(shape_error(&dense, &format!("<f4 of shape [N, {CRITEO_DENSE_FEATURES}]")));
        }
        let rows = dense.rows();
        let labels = NpyArray::open(&labels_path)?;
        if !(labels.shape.len() == 1 || labels.shape.len() == 2 && labels.shape[1] == 1) {
            return Err(shape_error(&labels, "shape [N] or [N, 1]"));
        }
        let tables = layout.tables();
        let sparse = if multi_hot {
            let mut members = open_npz(&sparse_path)?;
            let mut by_table = Vec::with_capacity(tables);
            for t in 0..tables {
                let at = members.iter().position(|(name, _)| *name == t.to_string()).ok_or_else(|| DataError::Format {
                    path: sparse_path.clone(),
                    message: format!("no array `{t}` (a multi-hot archive holds arrays \"0\" to \"{}\")", tables - 1),
                })?;
                by_table.push(members.swap_remove(at).1);
            }
            for (t, array) in by_table.iter().enumerate() {
                let width = layout.multi_hot()[t] as u64;
                if array.dtype == Dtype::F32 || array.shape.len() != 2 || array.shape[1] != width {
                    return Err(shape_error(array, &format!("<i4 or <i8 of shape [N, {width}] (table {t})")));
                }
            }
            by_table
        } else {
            let array = NpyArray::open(&sparse_path)?;
            if array.dtype == Dtype::F32 || array.shape.len() != 2 || array.shape[1] != tables as u64 {
                return Err(shape_error(&array, &format!("<i4 or <i8 of shape [N, {tables}]")));
            }
            vec![array]
        };
        for array in std::iter::once(&labels).chain(&sparse) {
            if array.rows() != rows {
                return Err(DataError::Format {
                    path: array.name().to_path_buf(),
                    message: format!("{} rows, but {} has {rows}", array.rows(), dense_path.display()),
                });
            }
        }
        let buffers = sparse.len();
        Ok(MlperfDay {
            dense,
            labels,
            sparse,
            layout: layout.clone(),
            rows,
            chunk_start: 0,
            chunk_end: 0,
            next: 0,
            dense_buf: Vec::new(),
            labels_buf: Vec::new(),
            sparse_bufs: vec![Vec::new(); buffers],
        })
    }

    fn load_chunk(&mut self) -> Result<(), DataError> {
        let count = CHUNK_ROWS.min(self.rows - self.next) as usize;
        self.dense.read_rows(self.next, count, &mut self.dense_buf)?;
        self.labels.read_rows(self.next, count, &mut self.labels_buf)?;
        for (array, buf) in self.sparse.iter().zip(&mut self.sparse_bufs) {
            array.read_rows(self.next, count, buf)?;
        }
        (self.chunk_start, self.chunk_end) = (self.next, self.next + count as u64);
        Ok(())
    }
}

impl SampleReader for MlperfDay {
    fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, DataError> {
        if self.next == self.rows {
            return Ok(false);
        }
        if self.next == self.chunk_end {
            self.load_chunk()?;
        }
        let (row, local) = (self.next, (self.next - self.chunk_start) as usize);
        let error = |array: &NpyArray, message: String| DataError::Row { path: array.name().to_path_buf(), row, message };
        for (c, value) in sample.dense.iter_mut().enumerate() {
            let logged = Dtype::F32.f32_at(&self.dense_buf, local * CRITEO_DENSE_FEATURES + c);
            if logged.is_nan() {
                return Err(error(&self.dense, format!("column {c}: dense value is NaN")));
            }
            *value = count_of(logged);
        }
        sample.label = match self.labels.dtype.f32_at(&self.labels_buf, local) {
            l if l == 0.0 || l == 1.0 => l,
            other => return Err(error(&self.labels, format!("label must be 0 or 1, found {other}"))),
        };
        sample.ids.clear();
        let rows = self.layout.rows();
        if let [array] = self.sparse.as_slice() {
            for (t, &table_rows) in rows.iter().enumerate() {
                let id = array.dtype.int_at(&self.sparse_bufs[0], local * rows.len() + t);
                sample.ids.push(self.layout.global_row(t, id.rem_euclid(table_rows as i64) as u64));
            }
        } else {
            for (t, (array, buf)) in self.sparse.iter().zip(&self.sparse_bufs).enumerate() {
                let width = self.layout.multi_hot()[t];
                for j in 0..width {
                    let id = array.dtype.int_at(buf, local * width + j);
                    sample.ids.push(self.layout.global_row(t, id.rem_euclid(rows[t] as i64) as u64));
                }
            }
        }
        self.next += 1;
        Ok(true)
    }
}

/// Writes one day of samples in the layout: dense as `log(x + 3)`, labels int32
/// `[N, 1]`, ids (the row within each table) int32, multi-hot through per-table
/// temporary `.npy` files that are then packed into the `.npz`.
pub struct MlperfDayWriter {
    dense: NpyWriter,
    labels: NpyWriter,
    sparse: Vec<NpyWriter>,
    /// Multi-hot: the archive and its members' temporary files.
    archive: Option<(PathBuf, Vec<(String, PathBuf)>)>,
    layout: TableLayout,
}

impl MlperfDayWriter {
    /// Files for `samples` samples of day `day` in `dir`; `multi_hot` writes the `.npz`
    /// (widths from the layout), else every table must have one lookup per sample.
    pub fn create(dir: &Path, day: u32, samples: u64, layout: &TableLayout, multi_hot: bool) -> Result<MlperfDayWriter, DataError> {
        let [dense_path, labels_path, sparse_path] = day_files(dir, day, multi_hot);
        let dense = NpyWriter::create(&dense_path, Dtype::F32, &[samples, CRITEO_DENSE_FEATURES as u64])?;
        let labels = NpyWriter::create(&labels_path, Dtype::I32, &[samples, 1])?;
        let (sparse, archive) = if multi_hot {
            let members: Vec<(String, PathBuf)> =
                (0..layout.tables()).map(|t| (t.to_string(), dir.join(format!(".day_{day}_sparse_{t}.npy.tmp")))).collect();
            let writers = members
                .iter()
                .zip(layout.multi_hot())
                .map(|((_, path), &width)| NpyWriter::create(path, Dtype::I32, &[samples, width as u64]))
                .collect::<Result<Vec<_>, _>>()?;
            (writers, Some((sparse_path, members)))
        } else {
            if layout.multi_hot().iter().any(|&w| w != 1) {
                return Err(DataError::Setting(format!("{}: one-hot sparse files need one lookup per table", sparse_path.display())));
            }
            (vec![NpyWriter::create(&sparse_path, Dtype::I32, &[samples, layout.tables() as u64])?], None)
        };
        Ok(MlperfDayWriter { dense, labels, sparse, archive, layout: layout.clone() })
    }

    pub fn write(&mut self, sample: &Sample) -> Result<(), DataError> {
        let logged: Vec<f32> = sample.dense.iter().map(|&c| log_count(c)).collect();
        self.dense.write_f32(&logged)?;
        self.labels.write_ints(std::iter::once(sample.label as i64))?;
        let mut start = 0;
        for (t, &width) in self.layout.multi_hot().iter().enumerate() {
            let first = self.layout.global_row(t, 0);
            let rows = sample.ids[start..start + width].iter().map(move |&id| (id - first) as i64);
            start += width;
            let writer = if self.sparse.len() == 1 { &mut self.sparse[0] } else { &mut self.sparse[t] };
            writer.write_ints(rows)?;
        }
        Ok(())
    }

    /// Completes the files (packing the `.npz` and removing its temporary files).
    pub fn finish(self) -> Result<(), DataError> {
        self.dense.finish()?;
        self.labels.finish()?;
        for writer in self.sparse {
            writer.finish()?;
        }
        if let Some((path, members)) = self.archive {
            super::npy::write_npz(&path, &members)?;
            for (_, temporary) in &members {
                std::fs::remove_file(temporary).map_err(|e| DataError::io(temporary, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_dense_values_give_back_every_count_below_a_million() {
        for count in (0..1_000_000u32).map(|c| c as f32) {
            assert_eq!(count_of(log_count(count)), count, "count {count}");
        }
    }
}
