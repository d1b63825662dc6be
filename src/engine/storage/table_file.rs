//! [`TableFile`]: one table stored in a file of checksummed 4 KiB-aligned pages, read
//! through the page reader, written in parallel runs of pages, its pages saved to the
//! undo journal before they are overwritten while it protects a checkpoint.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::aligned::AlignedBuf;
#[cfg(any(test, feature = "test-utils"))]
use super::faults::FaultPlan;
use super::format::{self, Header, HEADER_BYTES};
use super::io_uring::PageRing;
use super::journal::{remove_journal, Journal};
use super::open::{open_file, read_header};
use super::read_config::{resolve_read_path, OnIoError, ReadConfig, ReadPath};
use super::reader::{pread_reader, PageIoError, Reader};
use super::{BackingStore, StorageError};
use crate::engine::{EngineError, InitRows, RowLayout};

/// Bytes of pages one read or write batch moves at most (the I/O buffer size), unless
/// the queue depth or a single page needs more.
const BATCH_BYTES: usize = 1 << 20;
/// Bytes `create` writes per call.
const CREATE_WRITE_BYTES: usize = 8 << 20;

/// Counters of one open table file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// `read_rows` calls.
    pub read_calls: u64,
    pub rows_read: u64,
    /// Pages read from the file, by `read_rows` and by partial-page writes.
    pub pages_read: u64,
    pub bytes_read: u64,
    /// `write_rows` calls.
    pub write_calls: u64,
    pub rows_written: u64,
    pub pages_written: u64,
    pub bytes_written: u64,
    /// Pages that failed their checksum.
    pub checksum_failures: u64,
    /// Read or write batches transferred again after a failure (`OnIoError::Retry`).
    pub retries: u64,
    /// Pages saved to the undo journal before their first overwrite since a checkpoint
    /// (read from the file for it: counted in `pages_read` too).
    pub pages_journaled: u64,
}

/// One table stored in a file: a header page, then rows (values and optimizer state)
/// packed into checksummed pages. See docs/FORMATS.md, "Table files".
pub struct TableFile {
    path: PathBuf,
    header: Header,
    file: Arc<File>,
    writable: bool,
    read_path: ReadPath,
    direct_io: bool,
    reader: Reader,
    /// Pages per read or write batch.
    batch_pages: usize,
    write_buf: Option<AlignedBuf>,
    /// `(page, request index)` of the current call, sorted.
    order: Vec<(u64, usize)>,
    offsets: Vec<u64>,
    stats: StorageStats,
    on_io_error: OnIoError,
    /// Injected faults (tests only; see [`TableFile::inject_faults`]).
    #[cfg(any(test, feature = "test-utils"))]
    faults: Option<FaultPlan>,
    /// The undo journal, while the file protects a committed checkpoint.
    journal: Option<Journal>,
}

impl TableFile {
    /// Writes a new table of `rows` rows initialised by `init`, streaming pages in
    /// bounded memory, then opens it with the default read configuration.
    pub fn create(path: &Path, rows: u64, layout: RowLayout, init: impl InitRows) -> Result<TableFile, StorageError> {
        let header = Header::new(rows, layout).map_err(|message| StorageError::BadLayout { path: path.to_path_buf(), message })?;
        let io_error = |position: String| move |e| StorageError::io(path, position, e);
        // A journal left by an earlier table at this path protects nothing now.
        remove_journal(path)?;
        let mut file = File::create(path).map_err(io_error("creating".into()))?;
        let mut header_page = vec![0u8; HEADER_BYTES];
        header.encode(&mut header_page);
        file.write_all(&header_page).map_err(io_error("writing the header".into()))?;
        let page_size = header.page_size;
        let pages_per_write = (CREATE_WRITE_BYTES / page_size).max(1);
        let mut block = vec![0u8; pages_per_write * page_size];
        let mut row = vec![0f32; layout.words()];
        let mut first_page = 0;
        while first_page < header.pages() {
            let count = (header.pages() - first_page).min(pages_per_write as u64) as usize;
            let block = &mut block[..count * page_size];
            block.fill(0);
            for (i, page) in block.chunks_exact_mut(page_size).enumerate() {
                let index = first_page + i as u64;
                for r in header.rows_of_page(index) {
                    init.fill(r, layout, &mut row);
                    let at = header.offset_in_page(r);
                    encode_row(&row, &mut page[at..at + layout.bytes()]);
                }
                format::seal_page(index, page);
            }
            file.write_all(block).map_err(io_error(format!("writing pages {first_page}..{}", first_page + count as u64)))?;
            first_page += count as u64;
        }
        file.sync_all().map_err(io_error("fsync".into()))?;
        drop(file);
        TableFile::open(path, ReadPath::default())
    }

    /// Opens a table with `read_path` and the default queue depth and threads.
    pub fn open(path: &Path, read_path: ReadPath) -> Result<TableFile, StorageError> {
        TableFile::open_with(path, ReadConfig { read_path, ..ReadConfig::default() })
    }

    /// Opens a table, validating its header and length, and sets up the read path:
    /// io_uring falls back to pread (with a warning) where it cannot be set up, and
    /// O_DIRECT falls back to buffered I/O where the file system refuses it.
    pub fn open_with(path: &Path, config: ReadConfig) -> Result<TableFile, StorageError> {
        let want_direct = config.read_path != ReadPath::Mmap;
        let (file, writable, direct_io) = open_file(path, want_direct)?;
        let header = read_header(path, &file)?;
        let file = Arc::new(file);
        let batch_pages = (BATCH_BYTES / header.page_size).max(config.queue_depth as usize).max(1);
        let buffer_bytes = batch_pages * header.page_size;
        let (read_path, reader) = match config.read_path {
            ReadPath::IoUring => {
                let probe = PageRing::new(config.queue_depth, buffer_bytes).and_then(|mut ring| {
                    ring.read_pages(file.as_raw_fd(), &[0], HEADER_BYTES).map_err(|e| e.source)?;
                    Ok(ring)
                });
                match probe {
                    Ok(ring) => (ReadPath::IoUring, Reader::IoUring(Box::new(ring))),
                    Err(e) => {
                        let (path_used, reason) = resolve_read_path(ReadPath::IoUring, Some(&e));
                        tracing::warn!("{}: {}; falling back to {path_used}", path.display(), reason.unwrap_or_default());
                        (path_used, pread_reader(path, &file, config.pread_threads, buffer_bytes)?)
                    }
                }
            }
            ReadPath::Mmap => {
                // SAFETY: the map is only read through `Reader::read`, which copies pages
                // out; a file truncated by another process while mapped is outside what
                // this type guards against (documented in docs/FORMATS.md).
                let map = unsafe { memmap2::Mmap::map(&*file) }.map_err(|e| StorageError::io(path, "mmap", e))?;
                if let Err(e) = map.advise(memmap2::Advice::Random) {
                    tracing::debug!("{}: madvise(MADV_RANDOM) refused: {e}", path.display());
                }
                (ReadPath::Mmap, Reader::Mmap { map, buf: AlignedBuf::zeroed(buffer_bytes) })
            }
            ReadPath::Pread => (ReadPath::Pread, pread_reader(path, &file, config.pread_threads, buffer_bytes)?),
        };
        Ok(TableFile {
            path: path.to_path_buf(),
            header,
            file,
            writable,
            read_path,
            direct_io,
            reader,
            batch_pages,
            write_buf: None,
            order: Vec::new(),
            offsets: Vec::new(),
            stats: StorageStats::default(),
            on_io_error: config.on_io_error,
            #[cfg(any(test, feature = "test-utils"))]
            faults: None,
            journal: None,
        })
    }

    pub fn layout(&self) -> RowLayout {
        self.header.layout
    }

    pub fn rows(&self) -> u64 {
        self.header.rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header: geometry of the pages.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The read path in use (pread where io_uring was requested but refused).
    pub fn read_path(&self) -> ReadPath {
        self.read_path
    }

    /// Whether reads and writes bypass the page cache (O_DIRECT).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// Whether the io_uring read buffer is registered with the kernel.
    pub fn registered_buffers(&self) -> bool {
        matches!(&self.reader, Reader::IoUring(ring) if ring.registered())
    }

    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// Test hook: from now on, page transfers suffer the faults `plan` arms (after the
    /// real read, or instead of the real write of a run). Keep a clone of the plan to
    /// arm faults later. See docs/RELIABILITY.md. Built for the crate's own tests and with
    /// the `test-utils` feature only.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn inject_faults(&mut self, plan: FaultPlan) {
        self.faults = Some(plan);
    }

    /// Makes the file's current contents (durable: after [`TableFile::sync`]) the
    /// committed checkpoint `checkpoint`: from now on each page's bytes are saved to the
    /// undo journal (`<path>.journal`) before the page is first overwritten, one journal
    /// append and fsync per [`TableFile::write_rows`] call, so that [`roll_back`] can
    /// bring the file back to them after a crash. Called again at each checkpoint.
    pub fn protect_checkpoint(&mut self, checkpoint: u64) -> Result<(), StorageError> {
        match &mut self.journal {
            Some(journal) => journal.reset(checkpoint),
            None => {
                self.journal = Some(Journal::start(&self.path, &self.header, checkpoint)?);
                Ok(())
            }
        }
    }

    /// The open file, for callers that advise the kernel about it (the benchmark drops
    /// its cached pages).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads whole rows (values then state): `rows[i]` into `out[i * floats..]`. Rows may
    /// come in any order and repeat; each page needed is read once per call and its
    /// checksum verified before any of its rows are copied out.
    pub fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), StorageError> {
        let floats = self.header.layout.words();
        self.check_request("read_rows", rows, out.len())?;
        self.stats.read_calls += 1;
        self.stats.rows_read += rows.len() as u64;
        let mut order = std::mem::take(&mut self.order);
        self.sort_by_page(rows, &mut order);
        let header = self.header;
        let outcome = (|| {
            let mut start = 0;
            while start < order.len() {
                let end = self.batch_end(&order, start);
                let batch = &order[start..end];
                let pages = self.read_batch(batch, "reading", rows)?;
                let mut slot = 0;
                for (i, &(page, index)) in batch.iter().enumerate() {
                    if i > 0 && page != batch[i - 1].0 {
                        slot += 1;
                    }
                    let at = slot * header.page_size + header.offset_in_page(rows[index]);
                    decode_row(&pages[at..at + 4 * floats], &mut out[index * floats..(index + 1) * floats]);
                }
                start = end;
            }
            Ok(())
        })();
        self.order = order;
        outcome
    }

    /// Writes whole rows: `data[i * floats..]` into `rows[i]`, a later duplicate winning.
    /// Pages are grouped; pages not fully covered are read (and verified) first; every
    /// page of a batch is resealed and written with one write per run of adjacent pages,
    /// the runs in parallel (io_uring or the pread threads).
    pub fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), StorageError> {
        if !self.writable {
            return Err(StorageError::ReadOnly { path: self.path.clone() });
        }
        let floats = self.header.layout.words();
        self.check_request("write_rows", rows, data.len())?;
        self.stats.write_calls += 1;
        self.stats.rows_written += rows.len() as u64;
        let page_size = self.header.page_size;
        let mut write_buf = self.write_buf.take().unwrap_or_else(|| AlignedBuf::zeroed(self.batch_pages * page_size));
        let mut order = std::mem::take(&mut self.order);
        self.sort_by_page(rows, &mut order);
        let outcome = (|| {
            self.save_to_journal(&order, rows)?;
            let mut start = 0;
            let mut covered = Vec::new();
            while start < order.len() {
                let end = self.batch_end(&order, start);
                let batch = &order[start..end];
                // Pages whose every row is written need no read.
                let mut partial = Vec::new();
                let mut pages = Vec::new();
                for group in batch.chunk_by(|a, b| a.0 == b.0) {
                    let page = group[0].0;
                    covered.clear();
                    covered.extend(group.iter().map(|&(_, index)| rows[index]));
                    covered.sort_unstable();
                    covered.dedup();
                    if covered.len() < self.header.rows_of_page(page).count() {
                        partial.push(group[0]);
                    }
                    pages.push(page);
                }
                let buf = &mut write_buf[..pages.len() * page_size];
                buf.fill(0);
                if !partial.is_empty() {
                    let read = self.read_batch(&partial, "writing", rows)?;
                    for (k, &(page, _)) in partial.iter().enumerate() {
                        let slot = pages.binary_search(&page).expect("partial pages are among the batch's pages");
                        buf[slot * page_size..(slot + 1) * page_size].copy_from_slice(&read[k * page_size..(k + 1) * page_size]);
                    }
                }
                let mut slot = 0;
                for (i, &(page, index)) in batch.iter().enumerate() {
                    if i > 0 && page != batch[i - 1].0 {
                        slot += 1;
                    }
                    let at = slot * page_size + self.header.offset_in_page(rows[index]);
                    encode_row(&data[index * floats..(index + 1) * floats], &mut buf[at..at + 4 * floats]);
                }
                for (slot, &page) in pages.iter().enumerate() {
                    format::seal_page(page, &mut buf[slot * page_size..(slot + 1) * page_size]);
                }
                let mut runs = Vec::new();
                let mut run_pages = Vec::new();
                let mut run_start = 0;
                for run in pages.chunk_by(|a, b| a + 1 == *b) {
                    runs.push((self.header.page_offset(run[0]), &buf[run_start * page_size..(run_start + run.len()) * page_size]));
                    run_pages.push((run[0], run.len() as u64));
                    run_start += run.len();
                }
                let mut attempt = 1;
                while let Err(e) = self.write_runs(&runs, &run_pages) {
                    let (first, count) = run_pages[e.slot.min(run_pages.len() - 1)];
                    let row = rows[batch[batch.partition_point(|&(page, _)| page < first)].1];
                    let error = self.page_error(first, first + count - 1, "writing", row, attempt, e.source);
                    self.retry_or_fail(error, &mut attempt)?;
                }
                self.stats.pages_written += pages.len() as u64;
                self.stats.bytes_written += (pages.len() * page_size) as u64;
                start = end;
            }
            Ok(())
        })();
        self.order = order;
        self.write_buf = Some(write_buf);
        outcome
    }

    /// Saves the pages of `order` (sorted by page) that the journal still needs, read
    /// and verified in batches, then makes the journal durable: before any is written.
    fn save_to_journal(&mut self, order: &[(u64, usize)], rows: &[u64]) -> Result<(), StorageError> {
        let Some(mut journal) = self.journal.take() else { return Ok(()) };
        let outcome = (|| {
            let needed: Vec<(u64, usize)> =
                order.chunk_by(|a, b| a.0 == b.0).map(|group| group[0]).filter(|&(page, _)| journal.needs(page)).collect();
            if needed.is_empty() {
                return Ok(());
            }
            let page_size = self.header.page_size;
            for batch in needed.chunks(self.batch_pages) {
                let pages = self.read_batch(batch, "journaling", rows)?;
                journal
                    .append(batch.iter().enumerate().map(|(slot, &(page, _))| (page, &pages[slot * page_size..(slot + 1) * page_size])))?;
            }
            journal.sync()?;
            self.stats.pages_journaled += needed.len() as u64;
            Ok(())
        })();
        self.journal = Some(journal);
        outcome
    }

    /// Flushes written pages to the device (fdatasync).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|e| StorageError::io(&self.path, "fsync", e))
    }

    fn check_request(&self, operation: &'static str, rows: &[u64], buffer_floats: usize) -> Result<(), StorageError> {
        let floats = self.header.layout.words();
        if buffer_floats != rows.len() * floats {
            return Err(StorageError::BufferSize {
                path: self.path.clone(),
                operation,
                rows: rows.len(),
                floats,
                expected: rows.len() * floats,
                actual: buffer_floats,
            });
        }
        match rows.iter().position(|&row| row >= self.header.rows) {
            Some(index) => Err(StorageError::RowOutOfRange { path: self.path.clone(), row: rows[index], index, rows: self.header.rows }),
            None => Ok(()),
        }
    }

    fn sort_by_page(&self, rows: &[u64], order: &mut Vec<(u64, usize)>) {
        order.clear();
        order.extend(rows.iter().enumerate().map(|(index, &row)| (self.header.page_of(row), index)));
        order.sort_unstable();
    }

    /// The end of the batch starting at `order[start]`: at most `batch_pages` pages.
    fn batch_end(&self, order: &[(u64, usize)], start: usize) -> usize {
        let mut pages = 0;
        let mut end = start;
        while end < order.len() {
            if end == start || order[end].0 != order[end - 1].0 {
                if pages == self.batch_pages {
                    break;
                }
                pages += 1;
            }
            end += 1;
        }
        end
    }

    /// Reads and verifies the distinct pages of `batch` (sorted by page) into page slots,
    /// trying again as `on_io_error` allows.
    fn read_batch(&mut self, batch: &[(u64, usize)], action: &'static str, rows: &[u64]) -> Result<&[u8], StorageError> {
        let mut offsets = std::mem::take(&mut self.offsets);
        offsets.clear();
        let mut first_of_slot = Vec::new();
        for (i, &(page, _)) in batch.iter().enumerate() {
            if i == 0 || page != batch[i - 1].0 {
                offsets.push(self.header.page_offset(page));
                first_of_slot.push(i);
            }
        }
        let mut attempt = 1;
        let outcome = loop {
            match self.read_and_verify(&offsets, batch, &first_of_slot, action, rows, attempt) {
                Ok(()) => break Ok(()),
                Err(error) => {
                    if let Err(error) = self.retry_or_fail(error, &mut attempt) {
                        break Err(error);
                    }
                }
            }
        };
        let bytes = offsets.len() * self.header.page_size;
        self.offsets = offsets;
        outcome?;
        Ok(&self.reader.pages()[..bytes])
    }

    /// One try of [`TableFile::read_batch`]: every page read, then every page verified
    /// before any is used.
    fn read_and_verify(
        &mut self,
        offsets: &[u64],
        batch: &[(u64, usize)],
        first_of_slot: &[usize],
        action: &'static str,
        rows: &[u64],
        attempt: u32,
    ) -> Result<(), StorageError> {
        let page_size = self.header.page_size;
        let outcome = self.reader.read(&self.file, offsets, page_size);
        #[cfg(any(test, feature = "test-utils"))]
        let outcome = match (outcome, &self.faults) {
            (Ok(()), Some(plan)) => plan.after_read(first_of_slot.iter().map(|&i| batch[i].0), self.reader.pages(), page_size),
            (outcome, _) => outcome,
        };
        if let Err(e) = outcome {
            let (page, index) = batch[first_of_slot[e.slot.min(first_of_slot.len() - 1)]];
            return Err(self.page_error(page, page, action, rows[index], attempt, e.source));
        }
        self.stats.pages_read += offsets.len() as u64;
        self.stats.bytes_read += (offsets.len() * page_size) as u64;
        let pages = self.reader.pages();
        for (slot, &first) in first_of_slot.iter().enumerate() {
            let (page, index) = batch[first];
            if let Err((stored, computed)) = format::verify_page(page, &pages[slot * page_size..(slot + 1) * page_size]) {
                self.stats.checksum_failures += 1;
                let span = self.header.rows_of_page(page);
                return Err(StorageError::ChecksumMismatch {
                    path: self.path.clone(),
                    page,
                    first_row: span.start,
                    end_row: span.end,
                    stored,
                    computed,
                    action,
                    row: rows[index],
                    attempts: attempt,
                });
            }
        }
        Ok(())
    }

    /// Writes every `(offset, bytes)` run of pages (`run_pages[i]` = `(first page,
    /// pages)`), but not the runs an injected fault fails.
    fn write_runs(&mut self, runs: &[(u64, &[u8])], run_pages: &[(u64, u64)]) -> Result<(), PageIoError> {
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(plan) = &self.faults {
            let mut failed = plan.before_write(run_pages);
            if !failed.is_empty() {
                let kept: Vec<usize> = (0..runs.len()).filter(|&slot| failed.iter().all(|f| f.slot != slot)).collect();
                let kept_runs: Vec<(u64, &[u8])> = kept.iter().map(|&slot| runs[slot]).collect();
                self.reader
                    .write(&self.file, &kept_runs)
                    .map_err(|e| PageIoError { slot: kept[e.slot.min(kept.len() - 1)], source: e.source })?;
                return Err(failed.swap_remove(0));
            }
        }
        // `run_pages` only serves fault injection here.
        #[cfg(not(any(test, feature = "test-utils")))]
        let _ = run_pages;
        self.reader.write(&self.file, runs)
    }

    /// After failed try number `attempt`: counts a retry and warns if `on_io_error`
    /// allows one more, else returns the error.
    fn retry_or_fail(&mut self, error: StorageError, attempt: &mut u32) -> Result<(), StorageError> {
        if *attempt > self.on_io_error.retries() {
            return Err(error);
        }
        tracing::warn!("{error}; trying again ({} of {} retries)", *attempt, self.on_io_error.retries());
        self.stats.retries += 1;
        *attempt += 1;
        Ok(())
    }

    /// The error of a failed transfer of pages `first..=last`, `action` (`reading` or
    /// `writing`) request row `row`.
    fn page_error(&self, first: u64, last: u64, action: &'static str, row: u64, attempts: u32, source: io::Error) -> StorageError {
        let position = if first == last {
            describe_page(&self.header, first)
        } else {
            format!("pages {first}..={last} (rows {}..{})", self.header.rows_of_page(first).start, self.header.rows_of_page(last).end)
        };
        StorageError::PageIo { path: self.path.clone(), page: first, position, action, row, attempts, source }
    }
}

fn describe_page(header: &Header, page: u64) -> String {
    let span = header.rows_of_page(page);
    format!("page {page} (rows {}..{})", span.start, span.end)
}

fn encode_row(row: &[f32], bytes: &mut [u8]) {
    for (v, b) in row.iter().zip(bytes.chunks_exact_mut(4)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

fn decode_row(bytes: &[u8], row: &mut [f32]) {
    for (v, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

impl BackingStore for TableFile {
    fn describe(&self) -> String {
        format!("{} ({}{})", self.path().display(), self.read_path(), if self.direct_io() { ", O_DIRECT" } else { ", buffered" })
    }
    fn layout(&self) -> RowLayout {
        TableFile::layout(self)
    }
    fn rows(&self) -> u64 {
        TableFile::rows(self)
    }
    fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
        Ok(TableFile::read_rows(self, rows, out)?)
    }
    fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError> {
        Ok(TableFile::write_rows(self, rows, data)?)
    }
    fn sync(&mut self) -> Result<(), EngineError> {
        Ok(TableFile::sync(self)?)
    }
    fn file(&self) -> Option<&Path> {
        Some(self.path())
    }
    fn protect_checkpoint(&mut self, checkpoint: u64) -> Result<(), EngineError> {
        Ok(TableFile::protect_checkpoint(self, checkpoint)?)
    }
}
