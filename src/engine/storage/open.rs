//! Opening a table file: read-write where it is writable, with O_DIRECT where asked and
//! the file system accepts it, and its header page read and checked against its length.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::aligned::AlignedBuf;
use super::format::{Header, HEADER_BYTES};
use super::read_config::direct_io_refused;
use super::StorageError;

/// Opens the file read-write (read-only where it is not writable), with O_DIRECT when
/// asked and the file system accepts it: the probe opens with O_DIRECT and reads the
/// header page, and falls back to buffered I/O on EINVAL.
pub(super) fn open_file(path: &Path, want_direct: bool) -> Result<(File, bool, bool), StorageError> {
    let open = |writable: bool, direct: bool| {
        OpenOptions::new().read(true).write(writable).custom_flags(if direct { libc::O_DIRECT } else { 0 }).open(path)
    };
    let (file, writable) = match open(true, false) {
        Ok(file) => (file, true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM)) => {
            (open(false, false).map_err(|e| StorageError::io(path, "opening", e))?, false)
        }
        Err(e) => return Err(StorageError::io(path, "opening", e)),
    };
    if !want_direct {
        return Ok((file, writable, false));
    }
    let probe = open(writable, true).and_then(|direct| {
        let mut page = AlignedBuf::zeroed(HEADER_BYTES);
        direct.read_at(&mut page, 0).map(|_| direct)
    });
    match probe {
        Ok(direct) => Ok((direct, writable, true)),
        Err(e) if direct_io_refused(&e) => {
            tracing::info!("{}: O_DIRECT refused by the file system ({e}); using buffered I/O", path.display());
            Ok((file, writable, false))
        }
        Err(e) => Err(StorageError::io(path, "opening with O_DIRECT", e)),
    }
}

/// Reads and validates the header page and the file's length.
pub(super) fn read_header(path: &Path, file: &File) -> Result<Header, StorageError> {
    let actual = file.metadata().map_err(|e| StorageError::io(path, "reading metadata", e))?.len();
    let mut page = AlignedBuf::zeroed(HEADER_BYTES);
    let mut filled = 0;
    while filled < HEADER_BYTES {
        match file.read_at(&mut page[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::io(path, "reading the header", e)),
        }
    }
    let header = Header::decode(&page[..filled]).map_err(|message| StorageError::BadHeader { path: path.to_path_buf(), message })?;
    if actual != header.file_len() {
        return Err(StorageError::BadLength {
            path: path.to_path_buf(),
            expected: header.file_len(),
            actual,
            pages: header.pages(),
            page_size: header.page_size,
            header_bytes: HEADER_BYTES,
        });
    }
    Ok(header)
}
