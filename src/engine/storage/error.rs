//! `StorageError`: every failure of a table file, each naming the file and where in it.

use std::io;
use std::path::PathBuf;

/// A failure reading, writing, creating or opening a table file. Every message starts
/// with the file's path and says where: the header, a page and its rows, or a row.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {position}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// Where the I/O failed: `creating`, `reading the header`, `fsync`.
        position: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: header: {message}", path.display())]
    BadHeader { path: PathBuf, message: String },
    #[error(
        "{}: file is {actual} bytes but its header describes {expected} bytes ({pages} pages of {page_size} bytes after the {header_bytes}-byte header): truncated or extended",
        path.display()
    )]
    BadLength { path: PathBuf, expected: u64, actual: u64, pages: u64, page_size: usize, header_bytes: usize },
    #[error("{}: {position}: {action} row {row}: {source}{}", path.display(), tries(*attempts))]
    PageIo {
        path: PathBuf,
        /// The page that failed (the first of a run of pages written together).
        page: u64,
        /// `page 12 (rows 84..91)`, or `pages 12..=14 (rows 84..105)` for a run.
        position: String,
        /// `reading` or `writing`.
        action: &'static str,
        /// A row of the request the page was read or written for.
        row: u64,
        /// Transfers tried (more than 1 under `OnIoError::Retry`).
        attempts: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: page {page} (rows {first_row}..{end_row}): checksum mismatch (stored {stored:#010x}, computed {computed:#010x}) {action} row {row}{}",
        path.display(), tries(*attempts)
    )]
    ChecksumMismatch {
        path: PathBuf,
        page: u64,
        first_row: u64,
        end_row: u64,
        stored: u32,
        computed: u32,
        /// `reading` or `writing`: writing a row into a page read back for the rest of its rows.
        action: &'static str,
        row: u64,
        /// Reads tried, each failing its checksum (more than 1 under `OnIoError::Retry`).
        attempts: u32,
    },
    #[error("{}: row {row} (entry {index} of the request) is out of range: the table has {rows} rows", path.display())]
    RowOutOfRange { path: PathBuf, row: u64, index: usize, rows: u64 },
    #[error("{}: {operation}: the buffer holds {actual} floats, {rows} rows of {floats} floats need {expected}", path.display())]
    BufferSize { path: PathBuf, operation: &'static str, rows: usize, floats: usize, expected: usize, actual: usize },
    #[error("{}: bad row layout: {message}", path.display())]
    BadLayout { path: PathBuf, message: String },
    #[error("{}: opened read-only (the file is not writable), cannot write rows", path.display())]
    ReadOnly { path: PathBuf },
}

/// The note a message ends with when a transfer was tried more than once.
fn tries(attempts: u32) -> String {
    if attempts > 1 {
        format!(" ({attempts} tries)")
    } else {
        String::new()
    }
}

impl StorageError {
    pub(crate) fn io(path: &std::path::Path, position: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io { path: path.to_path_buf(), position: position.into(), source }
    }
}
