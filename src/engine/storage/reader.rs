//! The page reader of a table file: where pages are read into and how, through the read
//! path in use (io_uring, a memory map or the pread pool), and how a batch's runs of
//! pages are written back through it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::aligned::AlignedBuf;
use super::io_uring::PageRing;
use super::pread_pool::PreadPool;
use super::StorageError;

/// A page transfer that failed: `slot` is its position in the batch.
pub(crate) struct PageIoError {
    pub slot: usize,
    pub source: io::Error,
}

/// Where pages are read into and how.
pub(super) enum Reader {
    IoUring(Box<PageRing>),
    Mmap { map: memmap2::Mmap, buf: AlignedBuf },
    Pread { pool: PreadPool, buf: AlignedBuf },
}

impl Reader {
    /// Reads the pages at `offsets` into consecutive page slots of [`Reader::pages`].
    pub(super) fn read(&mut self, file: &File, offsets: &[u64], page_size: usize) -> Result<(), PageIoError> {
        match self {
            Reader::IoUring(ring) => ring.read_pages(file.as_raw_fd(), offsets, page_size),
            Reader::Mmap { map, buf } => {
                for (slot, &offset) in offsets.iter().enumerate() {
                    let start = offset as usize;
                    let page = map.get(start..start + page_size).ok_or_else(|| PageIoError {
                        slot,
                        source: io::Error::new(io::ErrorKind::UnexpectedEof, "page lies past the end of the map"),
                    })?;
                    buf[slot * page_size..(slot + 1) * page_size].copy_from_slice(page);
                }
                Ok(())
            }
            Reader::Pread { pool, buf } => pool.read_pages(offsets, page_size, buf),
        }
    }

    /// The page slots the last read filled.
    pub(super) fn pages(&mut self) -> &mut [u8] {
        match self {
            Reader::IoUring(ring) => ring.buffer_mut(),
            Reader::Mmap { buf, .. } | Reader::Pread { buf, .. } => buf,
        }
    }

    /// Writes every `(offset, bytes)` run: in parallel through the ring or the pread
    /// threads, one after another where pages are read through the memory map.
    pub(super) fn write(&mut self, file: &File, runs: &[(u64, &[u8])]) -> Result<(), PageIoError> {
        match self {
            Reader::IoUring(ring) => ring.write_runs(file.as_raw_fd(), runs),
            Reader::Pread { pool, .. } => pool.write_runs(runs),
            Reader::Mmap { .. } => runs
                .iter()
                .enumerate()
                .try_for_each(|(slot, &(offset, bytes))| file.write_all_at(bytes, offset).map_err(|source| PageIoError { slot, source })),
        }
    }
}

pub(super) fn pread_reader(path: &Path, file: &Arc<File>, threads: usize, buffer_bytes: usize) -> Result<Reader, StorageError> {
    let pool = PreadPool::new(file.clone(), threads).map_err(|e| StorageError::io(path, "starting pread threads", e))?;
    Ok(Reader::Pread { pool, buf: AlignedBuf::zeroed(buffer_bytes) })
}
