//! The storage tier: the [`BackingStore`] that holds every row of the table, the table
//! file that implements it on NVMe (checksummed 4 KiB-aligned pages read through
//! io_uring, mmap or a pread thread pool, written in parallel runs of pages, with an undo
//! journal for crash recovery), and the I/O thread that serves a store with its
//! write-back buffer, so that reads for future batches run while the consumer works on
//! the current one. `remote` holds the remote tier: a store on Redis Cluster;
//! `file_cache` a local file cache in front of a slower store (the remote tier).

mod aligned;
mod error;
#[cfg(any(test, feature = "test-utils"))]
mod faults;
mod file_cache;
pub mod format;
mod io_uring;
mod journal;
mod open;
mod pread_pool;
mod read_config;
mod reader;
pub mod remote;
mod service;
mod table_file;
mod write_buffer;

pub use self::error::StorageError;
#[cfg(any(test, feature = "test-utils"))]
pub use self::faults::{FaultPlan, PageFault};
pub use self::file_cache::{FileCacheStats, FileCached};
pub use self::journal::{journal_path, remove_journal, roll_back, sync_folder, write_atomically, RollBack};
pub use self::read_config::{direct_io_refused, resolve_read_path, OnIoError, ReadConfig, ReadPath};
pub use self::service::{PendingRead, StagedRows, StorageService, StorageThreadTime};
pub use self::table_file::{StorageStats, TableFile};
pub use self::write_buffer::WriteBufferStats;
use super::{EngineError, RowLayout};

/// Every row of the table, addressable by global row index.
pub trait BackingStore: Send {
    /// What it is, for reports (e.g. the file and its read path).
    fn describe(&self) -> String;
    fn layout(&self) -> RowLayout;
    fn rows(&self) -> u64;
    /// Reads whole rows (values and state), `out[i * floats..]` from `rows[i]`.
    fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError>;
    /// Writes whole rows.
    fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError>;
    /// Makes every write durable.
    fn sync(&mut self) -> Result<(), EngineError>;
    /// The file that holds the rows durably, if any (`None`: the rows live in memory,
    /// and a checkpoint must copy them out).
    fn file(&self) -> Option<&std::path::Path> {
        None
    }
    /// Makes the store's current (synced) rows committed checkpoint `checkpoint`, which a
    /// crashed run can come back to: a table file starts a fresh undo journal. Nothing
    /// to do for a store without a file.
    fn protect_checkpoint(&mut self, _checkpoint: u64) -> Result<(), EngineError> {
        Ok(())
    }
    /// The counters of a store behind a local file cache ([`FileCached`]); `None` for
    /// any other.
    fn file_cache_stats(&self) -> Option<FileCacheStats> {
        None
    }
}
