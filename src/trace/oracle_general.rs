//! libCacheSim's oracleGeneral binary traces: packed little-endian records
//! `u32 time, u64 id, u32 size, i64 next_access_vtime` (-1 = never again).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use super::{KeySource, TraceError, TraceRecord, NEVER};

/// Bytes in one oracleGeneral record.
pub const RECORD_BYTES: usize = 24;

fn decode(bytes: &[u8]) -> (u32, u64, u32, i64) {
    let time = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    let size = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let next = i64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    (time, id, size, next)
}

fn encode(time: u32, id: u64, size: u32, next: i64, out: &mut [u8]) {
    out[0..4].copy_from_slice(&time.to_le_bytes());
    out[4..12].copy_from_slice(&id.to_le_bytes());
    out[12..16].copy_from_slice(&size.to_le_bytes());
    out[16..24].copy_from_slice(&next.to_le_bytes());
}

/// Reads from `input` until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Streams an oracleGeneral trace. The object size is read but not used: Strata's
/// rows all have the same size, so a cache's capacity counts rows.
pub struct OracleGeneralReader {
    path: PathBuf,
    input: File,
    buf: Vec<u8>,
    record: u64,
}

impl OracleGeneralReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let input = File::open(path).map_err(|e| TraceError::io(path, e))?;
        Ok(OracleGeneralReader { path: path.to_path_buf(), input, buf: Vec::new(), record: 0 })
    }
}

impl KeySource for OracleGeneralReader {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        self.buf.resize(max * RECORD_BYTES, 0);
        let n = fill(&mut self.input, &mut self.buf).map_err(|e| TraceError::io(&self.path, e))?;
        let whole = n / RECORD_BYTES;
        for (i, bytes) in self.buf[..whole * RECORD_BYTES].chunks_exact(RECORD_BYTES).enumerate() {
            let (_time, key, _size, next) = decode(bytes);
            let next_access = match next {
                -1 => NEVER,
                n if n >= 0 => n as u64,
                n => {
                    let record = self.record + i as u64;
                    return Err(TraceError::BadRecord {
                        path: self.path.clone(),
                        record,
                        offset: record * RECORD_BYTES as u64,
                        message: format!("next_access_vtime {n} is negative (only -1 means never)"),
                    });
                }
            };
            out.push(TraceRecord { key, next_access });
        }
        if n % RECORD_BYTES != 0 {
            let record = self.record + whole as u64;
            return Err(TraceError::Truncated {
                path: self.path.clone(),
                record,
                offset: record * RECORD_BYTES as u64,
                bytes: n % RECORD_BYTES,
            });
        }
        self.record += whole as u64;
        Ok(())
    }

    fn has_next_access(&self) -> bool {
        true
    }
}

/// Writes an oracleGeneral trace with `time` = request index and `size` = 1. The
/// next-access fields are written as -1; [`OracleGeneralWriter::finish`] fills them in
/// with one backward pass over the file, so the whole trace is never held in memory.
pub struct OracleGeneralWriter {
    path: PathBuf,
    out: BufWriter<File>,
    records: u64,
}

impl OracleGeneralWriter {
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let file = File::create(path).map_err(|e| TraceError::io(path, e))?;
        Ok(OracleGeneralWriter { path: path.to_path_buf(), out: BufWriter::with_capacity(1 << 20, file), records: 0 })
    }

    pub fn write(&mut self, key: u64) -> Result<(), TraceError> {
        let mut record = [0u8; RECORD_BYTES];
        encode(self.records as u32, key, 1, -1, &mut record);
        self.records += 1;
        self.out.write_all(&record).map_err(|e| TraceError::io(&self.path, e))
    }

    /// Flushes and fills in every record's `next_access_vtime`.
    pub fn finish(mut self) -> Result<u64, TraceError> {
        self.out.flush().map_err(|e| TraceError::io(&self.path, e))?;
        drop(self.out);
        annotate_next_access(&self.path)?;
        Ok(self.records)
    }
}

/// Rewrites the `next_access_vtime` of every record of the oracleGeneral file at `path`
/// to the index of the next record with the same id (-1 if none), walking the file
/// backwards a chunk at a time. Memory: one entry per distinct id plus one chunk.
pub fn annotate_next_access(path: &Path) -> Result<(), TraceError> {
    const CHUNK_RECORDS: u64 = 1 << 18;
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| TraceError::io(path, e))?;
    let len = file.metadata().map_err(|e| TraceError::io(path, e))?.len();
    let records = len / RECORD_BYTES as u64;
    if len % RECORD_BYTES as u64 != 0 {
        return Err(TraceError::Truncated {
            path: path.to_path_buf(),
            record: records,
            offset: records * RECORD_BYTES as u64,
            bytes: (len % RECORD_BYTES as u64) as usize,
        });
    }
    let mut next_seen: FxHashMap<u64, u64> = FxHashMap::default();
    let mut buf = Vec::new();
    let mut end = records;
    while end > 0 {
        let start = end.saturating_sub(CHUNK_RECORDS);
        let offset = start * RECORD_BYTES as u64;
        buf.resize(((end - start) as usize) * RECORD_BYTES, 0);
        file.seek(SeekFrom::Start(offset)).map_err(|e| TraceError::io(path, e))?;
        file.read_exact(&mut buf).map_err(|e| TraceError::io(path, e))?;
        for (i, bytes) in buf.chunks_exact_mut(RECORD_BYTES).enumerate().rev() {
            let index = start + i as u64;
            let (time, id, size, _) = decode(bytes);
            let next = next_seen.insert(id, index).map_or(-1, |n| n as i64);
            encode(time, id, size, next, bytes);
        }
        file.seek(SeekFrom::Start(offset)).map_err(|e| TraceError::io(path, e))?;
        file.write_all(&buf).map_err(|e| TraceError::io(path, e))?;
        end = start;
    }
    file.sync_all().map_err(|e| TraceError::io(path, e))
}
