//! Embedding-access traces: the formats Strata reads and writes (plain text, libCacheSim
//! oracleGeneral, Criteo TSV as a key source), streamed in chunks so a trace never has
//! to fit in memory.

mod criteo_tsv;
mod oracle_general;
mod remap;
mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use criteo_tsv::{CriteoTsvLine, CriteoTsvReader, CriteoTsvWriter};
pub use oracle_general::{annotate_next_access, OracleGeneralReader, OracleGeneralWriter, RECORD_BYTES};
pub use remap::KeyRemapper;
pub use text::{TextReader, TextWriter};

pub use strata_policies::NEVER;

/// Requests a reader hands out per chunk.
pub const CHUNK: usize = 1 << 16;

/// One request of a trace: the key (a row id, or a hashed key) and, where the format
/// carries it, the position of the next request for the same key ([`NEVER`] if none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    pub key: u64,
    pub next_access: u64,
}

/// Something that yields trace records in order, a chunk at a time (on any thread).
pub trait KeySource: Send {
    /// Clears `out` and fills it with up to `max` records; an empty `out` means the end.
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError>;
    /// Whether the records carry real `next_access` values.
    fn has_next_access(&self) -> bool {
        false
    }
}

/// The on-disk trace formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceFormat {
    /// One decimal key per line (libCacheSim `txt`).
    Txt,
    /// libCacheSim oracleGeneral: packed little-endian `u32 time, u64 id, u32 size,
    /// i64 next_access_vtime` records.
    OracleGeneral,
    /// Criteo click logs: 40 tab-separated fields; the 26 categorical columns become
    /// row ids of the 26 tables.
    CriteoTsv,
}

impl TraceFormat {
    pub const NAMES: &'static str = "txt, oracle-general, criteo-tsv";

    /// Guesses the format from a file name: `.oracleGeneral`/`.bin` are binary,
    /// `.tsv` is Criteo, anything else text.
    pub fn from_path(path: &Path) -> TraceFormat {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.contains("oraclegeneral") || name.ends_with(".bin") {
            TraceFormat::OracleGeneral
        } else if name.ends_with(".tsv") {
            TraceFormat::CriteoTsv
        } else {
            TraceFormat::Txt
        }
    }

    /// Opens `path` for streaming in this format. `criteo_tables` gives the table
    /// sizes a Criteo TSV's categorical hashes are reduced modulo.
    pub fn open(self, path: &Path, criteo_tables: &[u64]) -> Result<Box<dyn KeySource>, TraceError> {
        Ok(match self {
            TraceFormat::Txt => Box::new(TextReader::open(path)?),
            TraceFormat::OracleGeneral => Box::new(OracleGeneralReader::open(path)?),
            TraceFormat::CriteoTsv => Box::new(CriteoTsvReader::open(path, criteo_tables)?),
        })
    }
}

impl FromStr for TraceFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "txt" | "text" | "plain" => Ok(TraceFormat::Txt),
            "oracle-general" | "oraclegeneral" | "oracle_general" => Ok(TraceFormat::OracleGeneral),
            "criteo-tsv" | "criteo" | "tsv" => Ok(TraceFormat::CriteoTsv),
            other => Err(format!("unknown trace format `{other}` (expected one of: {})", Self::NAMES)),
        }
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceFormat::Txt => "txt",
            TraceFormat::OracleGeneral => "oracle-general",
            TraceFormat::CriteoTsv => "criteo-tsv",
        })
    }
}

/// Everything that can go wrong reading or writing a trace; each names the file and
/// the position (line, or record and byte offset).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse { path: PathBuf, line: u64, message: String },
    #[error("{path}: truncated record {record} at byte {offset}: {bytes} of {RECORD_BYTES} bytes")]
    Truncated { path: PathBuf, record: u64, offset: u64, bytes: usize },
    #[error("{path}: record {record} at byte {offset}: {message}")]
    BadRecord { path: PathBuf, record: u64, offset: u64, message: String },
}

impl TraceError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TraceError::Io { path: path.to_path_buf(), source }
    }
}
