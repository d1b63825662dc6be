//! Criteo click logs (Kaggle and 1TB) as TSV: `label, 13 integer features, 26
//! categorical features as 32-bit hex hashes`, empty = missing. Categorical hashes
//! become rows of the 26 tables by `hash mod table rows`, as the MLPerf loaders do.
//! The reader hands out each line as a [`CriteoTsvLine`] (or, as a key source, just its
//! 26 row ids); the writer turns such lines back into text. Turning lines into training
//! samples is `data`'s business.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{KeySource, TraceError, TraceRecord, NEVER};

/// Integer ("dense") features of a line.
const DENSE_FIELDS: usize = 13;
/// Categorical features of a line, one per table.
const TABLES: usize = 26;
const FIELDS: usize = 1 + DENSE_FIELDS + TABLES;

/// One line of a Criteo TSV, as the reader fills it and the writer takes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CriteoTsvLine {
    /// The click label, 0.0 or 1.0.
    pub label: f32,
    /// The integer features as raw counts: missing = 0, negatives clamped to 0 (as
    /// MLPerf does).
    pub dense: [f32; DENSE_FIELDS],
    /// Each categorical feature as the global row id it names: the table's first row
    /// plus `hash mod` the table's rows (missing = hash 0).
    pub rows: [u64; TABLES],
}

/// The first global row of each of the 26 tables, after checking there are 26 and none
/// is empty.
fn first_rows(path: &Path, table_rows: &[u64]) -> Result<[u64; TABLES], TraceError> {
    if table_rows.len() != TABLES || table_rows.contains(&0) {
        return Err(TraceError::Parse {
            path: path.to_path_buf(),
            line: 0,
            message: format!("a Criteo TSV needs {TABLES} non-empty tables, got {:?}", table_rows),
        });
    }
    let mut first = [0; TABLES];
    for t in 1..TABLES {
        first[t] = first[t - 1] + table_rows[t - 1];
    }
    Ok(first)
}

/// Streams a Criteo TSV file line by line, or as a trace of the global row ids of its
/// categorical features (one request per table per line).
pub struct CriteoTsvReader {
    path: PathBuf,
    input: BufReader<File>,
    table_rows: Vec<u64>,
    first_rows: [u64; TABLES],
    line: u64,
    buf: Vec<u8>,
}

impl CriteoTsvReader {
    /// `table_rows` must hold the row counts of the 26 tables the hashes are folded into.
    pub fn open(path: &Path, table_rows: &[u64]) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
        let first_rows = first_rows(path, table_rows)?;
        Ok(CriteoTsvReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            table_rows: table_rows.to_vec(),
            first_rows,
            line: 0,
            buf: Vec::new(),
        })
    }

    fn error(&self, message: String) -> TraceError {
        TraceError::Parse { path: self.path.clone(), line: self.line, message }
    }

    /// Reads the next non-blank line into `out`. Returns false at the end.
    pub fn next_line(&mut self, out: &mut CriteoTsvLine) -> Result<bool, TraceError> {
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
        for (column, field) in line.split('\t').enumerate() {
            match column {
                0 => {
                    out.label = match field {
                        "0" => 0.0,
                        "1" => 1.0,
                        other => return Err(self.error(format!("column 1: label must be 0 or 1, found `{other}`"))),
                    }
                }
                c if c <= DENSE_FIELDS => {
                    let value = if field.is_empty() {
                        0
                    } else {
                        field.parse::<i64>().map_err(|_| self.error(format!("column {}: expected an integer, found `{field}`", c + 1)))?
                    };
                    out.dense[c - 1] = value.max(0) as f32;
                }
                c => {
                    let table = c - 1 - DENSE_FIELDS;
                    let hash = if field.is_empty() {
                        0
                    } else {
                        u64::from_str_radix(field, 16)
                            .map_err(|_| self.error(format!("column {}: expected a hex hash, found `{field}`", c + 1)))?
                    };
                    out.rows[table] = self.first_rows[table] + hash % self.table_rows[table];
                }
            }
        }
        Ok(true)
    }
}

impl KeySource for CriteoTsvReader {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        let mut line = CriteoTsvLine::default();
        while out.len() + TABLES <= max.max(TABLES) {
            if !self.next_line(&mut line)? {
                break;
            }
            out.extend(line.rows.iter().map(|&key| TraceRecord { key, next_access: NEVER }));
        }
        Ok(())
    }
}

/// Writes Criteo TSV lines: each table's row (the row id less the table's first global
/// row) as the hex hash, which reads back as the same row for the same tables.
pub struct CriteoTsvWriter {
    path: PathBuf,
    out: BufWriter<File>,
    first_rows: [u64; TABLES],
    text: String,
}

impl CriteoTsvWriter {
    /// `table_rows` must hold the 26 row counts the file will be read back with.
    pub fn create(path: &Path, table_rows: &[u64]) -> Result<Self, TraceError> {
        let first_rows = first_rows(path, table_rows)?;
        let file = File::create(path).map_err(|e| TraceError::io(path, e))?;
        Ok(CriteoTsvWriter { path: path.to_path_buf(), out: BufWriter::with_capacity(1 << 20, file), first_rows, text: String::new() })
    }

    pub fn write(&mut self, line: &CriteoTsvLine) -> Result<(), TraceError> {
        use std::fmt::Write as _;
        self.text.clear();
        let _ = write!(self.text, "{}", line.label as u8);
        for &count in &line.dense {
            let _ = write!(self.text, "\t{}", count as i64);
        }
        for (&row, &first) in line.rows.iter().zip(&self.first_rows) {
            let _ = write!(self.text, "\t{:08x}", row - first);
        }
        self.text.push('\n');
        self.out.write_all(self.text.as_bytes()).map_err(|e| TraceError::io(&self.path, e))
    }

    pub fn finish(mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|e| TraceError::io(&self.path, e))
    }
}
