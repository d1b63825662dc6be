//! The undo journal of a table file (`<table>.journal`): the bytes every page held at
//! the last committed checkpoint, saved before the page is first overwritten after it,
//! so that a crashed run can roll the file back to that checkpoint. See
//! docs/RELIABILITY.md, "Checkpoints".
//!
//! Layout: a header (`MAGIC`, version, page size, data pages of the table, the
//! checkpoint id it protects, a CRC-32 of those fields), then entries, each a page index
//! (`u64`), the page's bytes and a CRC-32 of the checkpoint id, the index and the bytes.
//! All integers little-endian. A run of entries is fsynced before any of their pages is
//! written, so an entry that does not verify (a torn append) is one whose page was
//! never overwritten: reading stops there.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, Header};
use super::StorageError;

/// The first 8 bytes of every journal.
const MAGIC: [u8; 8] = *b"STRATAJN";
const VERSION: u32 = 1;
/// Magic, version, page size, data pages, checkpoint id, CRC-32.
const JOURNAL_HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 4;

/// The journal of the table file at `table`: the same path with `.journal` appended.
pub fn journal_path(table: &Path) -> PathBuf {
    let mut name = table.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// The journal a table file writes while it protects a checkpoint.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    checkpoint: u64,
    page_size: usize,
    pages: u64,
    /// Bytes in the file (header and whole entries).
    len: u64,
    /// One bit per data page: saved since the checkpoint.
    saved: Vec<u64>,
    entry: Vec<u8>,
}

impl Journal {
    /// Creates (or truncates) the journal of the table at `table` to protect checkpoint
    /// `checkpoint`: writes the header and makes it durable, with the folder entry.
    pub fn start(table: &Path, header: &Header, checkpoint: u64) -> Result<Journal, StorageError> {
        let path = journal_path(table);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, "creating the journal", e))?;
        let mut journal = Journal {
            path,
            file,
            checkpoint,
            page_size: header.page_size,
            pages: header.pages(),
            len: 0,
            saved: vec![0; header.pages().div_ceil(64) as usize],
            entry: Vec::new(),
        };
        journal.reset(checkpoint)?;
        sync_folder(&journal.path)?;
        Ok(journal)
    }

    /// Empties the journal and makes it protect checkpoint `checkpoint` (the table file
    /// holds that checkpoint's rows, durably, when this is called).
    pub fn reset(&mut self, checkpoint: u64) -> Result<(), StorageError> {
        let io = |position: &str| {
            let path = self.path.clone();
            let position = position.to_string();
            move |e| StorageError::io(&path, position, e)
        };
        self.file.set_len(0).map_err(io("truncating the journal"))?;
        let header = encode_header(self.page_size, self.pages, checkpoint);
        self.file.write_all_at(&header, 0).map_err(io("writing the journal header"))?;
        self.file.sync_data().map_err(io("fsync of the journal"))?;
        self.checkpoint = checkpoint;
        self.len = header.len() as u64;
        self.saved.fill(0);
        Ok(())
    }

    /// Whether `page` still holds the checkpoint's bytes unsaved (it needs an entry
    /// before it is overwritten).
    pub fn needs(&self, page: u64) -> bool {
        self.saved[(page / 64) as usize] & (1 << (page % 64)) == 0
    }

    /// Appends an entry per `(page, bytes)` (not yet durable: see [`Journal::sync`]).
    pub fn append<'a>(&mut self, pages: impl Iterator<Item = (u64, &'a [u8])>) -> Result<(), StorageError> {
        let mut entry = std::mem::take(&mut self.entry);
        entry.clear();
        let mut saved = Vec::new();
        for (page, bytes) in pages {
            debug_assert_eq!(bytes.len(), self.page_size);
            let start = entry.len();
            entry.extend_from_slice(&page.to_le_bytes());
            entry.extend_from_slice(bytes);
            let crc = entry_checksum(self.checkpoint, &entry[start..]);
            entry.extend_from_slice(&crc.to_le_bytes());
            saved.push(page);
        }
        let outcome = self.file.write_all_at(&entry, self.len).map_err(|e| StorageError::io(&self.path, "appending to the journal", e));
        if outcome.is_ok() {
            self.len += entry.len() as u64;
            for page in saved {
                self.saved[(page / 64) as usize] |= 1 << (page % 64);
            }
        }
        self.entry = entry;
        outcome
    }

    /// Makes the appended entries durable: call before writing their pages.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|e| StorageError::io(&self.path, "fsync of the journal", e))
    }
}

fn encode_header(page_size: usize, pages: u64, checkpoint: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(JOURNAL_HEADER_BYTES);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(page_size as u32).to_le_bytes());
    header.extend_from_slice(&pages.to_le_bytes());
    header.extend_from_slice(&checkpoint.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

fn entry_checksum(checkpoint: u64, entry: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&checkpoint.to_le_bytes());
    hasher.update(entry);
    hasher.finalize()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// What [`roll_back`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollBack {
    /// No journal next to the table.
    NoJournal,
    /// A journal that protects nothing any more (an older checkpoint, or a header that
    /// never became durable), removed.
    Discarded { reason: String },
    /// The journal of the committed checkpoint: its pages were written back, the table
    /// synced and the journal removed. `torn` when its last entry was incomplete.
    RolledBack { pages: u64, torn: bool },
}

/// Brings the table file at `table` back to committed checkpoint `committed`: if its
/// journal protects that checkpoint, every saved page is written back (the first entry
/// of a page wins), the table is fsynced and the journal removed; a journal of an older
/// checkpoint is removed unread. Run before opening the table.
pub fn roll_back(table: &Path, committed: u64) -> Result<RollBack, StorageError> {
    let path = journal_path(table);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RollBack::NoJournal),
        Err(e) => return Err(StorageError::io(&path, "opening the journal", e)),
    };
    let mut reader = io::BufReader::with_capacity(1 << 20, &mut file);
    let mut header = [0u8; JOURNAL_HEADER_BYTES];
    let discard = |reason: String| -> Result<RollBack, StorageError> {
        remove(&path)?;
        Ok(RollBack::Discarded { reason })
    };
    if let Err(e) = reader.read_exact(&mut header) {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return discard("incomplete header".into());
        }
        return Err(StorageError::io(&path, "reading the journal header", e));
    }
    let body = JOURNAL_HEADER_BYTES - 4;
    if header[..8] != MAGIC || u32_at(&header, body) != crc32fast::hash(&header[..body]) {
        return discard("header does not verify".into());
    }
    let bad = |message: String| StorageError::BadHeader { path: path.clone(), message };
    let version = u32_at(&header, 8);
    if version != VERSION {
        return Err(bad(format!("journal version {version}, this build reads {VERSION}")));
    }
    let (page_size, pages, checkpoint) = (u32_at(&header, 12) as usize, u64_at(&header, 16), u64_at(&header, 24));
    if checkpoint < committed {
        return discard(format!("it protects checkpoint {checkpoint}, superseded by {committed}"));
    }
    if checkpoint > committed {
        return Err(bad(format!(
            "the journal protects checkpoint {checkpoint}, newer than the committed checkpoint {committed}: the manifest is not this table's"
        )));
    }
    let (target, table_header) = open_table(table)?;
    if table_header.page_size != page_size || table_header.pages() != pages {
        return Err(bad(format!(
            "journal of {pages} pages of {page_size} bytes, but {} has {} pages of {} bytes",
            table.display(),
            table_header.pages(),
            table_header.page_size
        )));
    }
    let mut entry = vec![0u8; 8 + page_size + 4];
    let mut restored = vec![0u64; pages.div_ceil(64) as usize];
    let (mut count, mut torn) = (0u64, false);
    loop {
        match read_full(&mut reader, &mut entry) {
            Ok(0) => break,
            Ok(n) if n < entry.len() => {
                torn = true;
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(StorageError::io(&path, "reading the journal", e)),
        }
        let stored = u32_at(&entry, 8 + page_size);
        let page = u64_at(&entry, 0);
        if stored != entry_checksum(checkpoint, &entry[..8 + page_size]) || page >= pages {
            torn = true;
            break;
        }
        let bit = 1u64 << (page % 64);
        if restored[(page / 64) as usize] & bit != 0 {
            continue;
        }
        restored[(page / 64) as usize] |= bit;
        let bytes = &entry[8..8 + page_size];
        if let Err((stored, computed)) = format::verify_page(page, bytes) {
            return Err(bad(format!("saved page {page} fails its checksum (stored {stored:#010x}, computed {computed:#010x})")));
        }
        target
            .write_all_at(bytes, table_header.page_offset(page))
            .map_err(|e| StorageError::io(table, format!("rolling back page {page}"), e))?;
        count += 1;
    }
    target.sync_data().map_err(|e| StorageError::io(table, "fsync after rolling back", e))?;
    remove(&path)?;
    Ok(RollBack::RolledBack { pages: count, torn })
}

/// Removes a journal that protects nothing (the table's contents are being replaced).
pub fn remove_journal(table: &Path) -> Result<(), StorageError> {
    let path = journal_path(table);
    match std::fs::metadata(&path) {
        Ok(_) => remove(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(&path, "reading metadata", e)),
    }
}

fn remove(path: &Path) -> Result<(), StorageError> {
    std::fs::remove_file(path).map_err(|e| StorageError::io(path, "removing the journal", e))?;
    sync_folder(path)
}

/// Writes `bytes` to `path` crash-safely: a sibling `.tmp` file, synced, renamed over
/// `path`, the folder synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    let temporary = PathBuf::from(name);
    (|| {
        let mut file = File::create(&temporary)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    })()
    .map_err(|e| StorageError::io(&temporary, "writing", e))?;
    std::fs::rename(&temporary, path).map_err(|e| StorageError::io(path, format!("renaming {} over it", temporary.display()), e))?;
    sync_folder(path)
}

/// Makes the folder entry of `path` (created, renamed or removed) durable.
pub fn sync_folder(path: &Path) -> Result<(), StorageError> {
    let folder = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(folder).and_then(|dir| dir.sync_all()).map_err(|e| StorageError::io(folder, "fsync of the folder", e))
}

/// Reads as much of `buf` as the reader has: the bytes read (fewer only at the end).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The table file opened for rolling back (buffered), and its header.
fn open_table(table: &Path) -> Result<(File, Header), StorageError> {
    let file = OpenOptions::new().read(true).write(true).open(table).map_err(|e| StorageError::io(table, "opening", e))?;
    let header = super::open::read_header(table, &file)?;
    Ok((file, header))
}
