//! Criteo click logs (Kaggle and 1TB) as TSV: `label, 13 integer features, 26
//! categorical features as 32-bit hex hashes`, empty = missing. Categorical hashes
//! become rows of the 26 tables by `hash mod table rows`, as the MLPerf loaders do.
//! The writer turns samples back into such lines.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{KeySource, TraceError, TraceRecord, NEVER};
use crate::data::{Sample, TableLayout, CRITEO_DENSE_FEATURES};

const FIELDS: usize = 1 + CRITEO_DENSE_FEATURES + 26;

/// Streams a Criteo TSV file as samples, or as a trace of the global row ids of its
/// categorical features (one request per table per line).
pub struct CriteoTsvReader {
    path: PathBuf,
    input: BufReader<File>,
    layout: TableLayout,
    line: u64,
    buf: Vec<u8>,
    sample: Sample,
}

impl CriteoTsvReader {
    /// `table_rows` must hold 26 row counts (for example [`TableLayout::criteo`]).
    pub fn open(path: &Path, table_rows: &[u64]) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
        if table_rows.len() != 26 || table_rows.contains(&0) {
            return Err(TraceError::Parse {
                path: path.to_path_buf(),
                line: 0,
                message: format!("a Criteo TSV needs 26 non-empty tables, got {:?}", table_rows),
            });
        }
        Ok(CriteoTsvReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            layout: TableLayout::new(table_rows.to_vec(), vec![1; 26]),
            line: 0,
            buf: Vec::new(),
            sample: Sample::default(),
        })
    }

    fn error(&self, message: String) -> TraceError {
        TraceError::Parse { path: self.path.clone(), line: self.line, message }
    }

    /// Reads the next line into `sample` (raw dense counts, negatives clamped to 0, as
    /// MLPerf does; one global row id per table). Returns false at the end.
    pub fn next_sample(&mut self, sample: &mut Sample) -> Result<bool, TraceError> {
        loop {
            self.buf.clear();
            let n = self.input.read_until(b'\n', &mut self.buf).map_err(|e| TraceError::io(&self.path, e))?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            if !self.buf.trim_ascii().is_empty() {
                break;
            }
        }
        let line = std::str::from_utf8(&self.buf)
            .map_err(|e| self.error(format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1)))?
            .trim_end_matches(['\n', '\r']);
        let count = line.split('\t').count();
        if count != FIELDS {
            return Err(self.error(format!("expected {FIELDS} tab-separated fields, found {count}")));
        }
        sample.ids.clear();
        for (column, field) in line.split('\t').enumerate() {
            match column {
                0 => {
                    sample.label = match field {
                        "0" => 0.0,
                        "1" => 1.0,
                        other => return Err(self.error(format!("column 1: label must be 0 or 1, found `{other}`"))),
                    }
                }
                c if c <= CRITEO_DENSE_FEATURES => {
                    let value = if field.is_empty() {
                        0
                    } else {
                        field.parse::<i64>().map_err(|_| self.error(format!("column {}: expected an integer, found `{field}`", c + 1)))?
                    };
                    sample.dense[c - 1] = value.max(0) as f32;
                }
                c => {
                    let table = c - 1 - CRITEO_DENSE_FEATURES;
                    let hash = if field.is_empty() {
                        0
                    } else {
                        u64::from_str_radix(field, 16)
                            .map_err(|_| self.error(format!("column {}: expected a hex hash, found `{field}`", c + 1)))?
                    };
                    sample.ids.push(self.layout.global_row(table, hash % self.layout.rows()[table]));
                }
            }
        }
        Ok(true)
    }
}

impl KeySource for CriteoTsvReader {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        let mut sample = std::mem::take(&mut self.sample);
        while out.len() + 26 <= max.max(26) {
            if !self.next_sample(&mut sample)? {
                break;
            }
            out.extend(sample.ids.iter().map(|&key| TraceRecord { key, next_access: NEVER }));
        }
        self.sample = sample;
        Ok(())
    }
}

/// Writes samples as Criteo TSV lines: each table's row (the id less the table's first
/// global row) as the hex hash, which reads back as the same row for the same tables.
pub struct CriteoTsvWriter {
    path: PathBuf,
    out: BufWriter<File>,
    layout: TableLayout,
    line: String,
}

impl CriteoTsvWriter {
    /// `layout` must have 26 tables of one lookup each.
    pub fn create(path: &Path, layout: &TableLayout) -> Result<Self, TraceError> {
        if layout.tables() != 26 || layout.lookups_per_sample() != 26 {
            return Err(TraceError::Parse {
                path: path.to_path_buf(),
                line: 0,
                message: "a Criteo TSV holds one id for each of 26 tables (generate with one lookup per table)".into(),
            });
        }
        let file = File::create(path).map_err(|e| TraceError::io(path, e))?;
        Ok(CriteoTsvWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            layout: layout.clone(),
            line: String::new(),
        })
    }

    pub fn write(&mut self, sample: &Sample) -> Result<(), TraceError> {
        use std::fmt::Write as _;
        self.line.clear();
        let _ = write!(self.line, "{}", sample.label as u8);
        for &count in &sample.dense {
            let _ = write!(self.line, "\t{}", count as i64);
        }
        for (t, &id) in sample.ids.iter().enumerate() {
            let _ = write!(self.line, "\t{:08x}", id - self.layout.global_row(t, 0));
        }
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes()).map_err(|e| TraceError::io(&self.path, e))
    }

    pub fn finish(mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|e| TraceError::io(&self.path, e))
    }
}
