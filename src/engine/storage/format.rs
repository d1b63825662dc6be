//! The table file format: the header page, the page geometry, and page checksums.
//!
//! A table file is a 4096-byte header page followed by data pages of `page_size`
//! bytes (a multiple of 4096). Each data page packs `rows_per_page` whole rows (values
//! then optimizer state, little-endian `f32`), zero padding, and in its last 4 bytes a
//! CRC-32 of the page index and the rest of the page. See docs/FORMATS.md, "Table files".

use std::ops::Range;

use crate::engine::{Dtype, RowLayout};

/// The first 8 bytes of every table file.
pub const MAGIC: [u8; 8] = *b"STRATATB";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the header page, and the alignment of every page and I/O buffer.
pub const HEADER_BYTES: usize = 4096;
/// Alignment of pages, page sizes and O_DIRECT buffers.
pub const ALIGN: usize = 4096;
/// Bytes at the end of every page (the header page included) holding its CRC-32.
pub const CHECKSUM_BYTES: usize = 4;

/// What a table file's header says: how many rows, their layout, and the page geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub rows: u64,
    pub layout: RowLayout,
    /// Bytes per data page: the smallest multiple of 4096 holding one row and a checksum.
    pub page_size: usize,
    pub rows_per_page: usize,
}

impl Header {
    /// The geometry of a new table, or why the layout cannot be stored.
    pub fn new(rows: u64, layout: RowLayout) -> Result<Header, String> {
        if layout.dim == 0 {
            return Err("dim must be at least 1".into());
        }
        let row_bytes = layout.bytes();
        if u32::try_from(layout.dim).is_err() || u32::try_from(layout.state).is_err() || row_bytes > (1 << 30) {
            return Err(format!("a row of {layout} is too large (at most 1 GiB)"));
        }
        let page_size = (row_bytes + CHECKSUM_BYTES).div_ceil(ALIGN) * ALIGN;
        let rows_per_page = (page_size - CHECKSUM_BYTES) / row_bytes;
        Ok(Header { rows, layout, page_size, rows_per_page })
    }

    /// Data pages in the file (the last one may be partly filled).
    pub fn pages(&self) -> u64 {
        self.rows.div_ceil(self.rows_per_page as u64)
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        HEADER_BYTES as u64 + self.pages() * self.page_size as u64
    }

    /// Byte offset of data page `page` in the file.
    pub fn page_offset(&self, page: u64) -> u64 {
        HEADER_BYTES as u64 + page * self.page_size as u64
    }

    pub fn page_of(&self, row: u64) -> u64 {
        row / self.rows_per_page as u64
    }

    /// Byte offset of `row` inside its page.
    pub fn offset_in_page(&self, row: u64) -> usize {
        (row % self.rows_per_page as u64) as usize * self.layout.bytes()
    }

    /// The rows stored in `page`.
    pub fn rows_of_page(&self, page: u64) -> Range<u64> {
        let first = page * self.rows_per_page as u64;
        first..(first + self.rows_per_page as u64).min(self.rows)
    }

    /// Writes the header page (4096 bytes) with its checksum.
    pub fn encode(&self, page: &mut [u8]) {
        page[..HEADER_BYTES].fill(0);
        page[0..8].copy_from_slice(&MAGIC);
        page[8..12].copy_from_slice(&VERSION.to_le_bytes());
        page[12..16].copy_from_slice(&self.layout.dtype.code().to_le_bytes());
        page[16..24].copy_from_slice(&self.rows.to_le_bytes());
        page[24..28].copy_from_slice(&(self.layout.dim as u32).to_le_bytes());
        page[28..32].copy_from_slice(&(self.layout.state as u32).to_le_bytes());
        page[32..36].copy_from_slice(&(self.page_size as u32).to_le_bytes());
        page[36..40].copy_from_slice(&(self.rows_per_page as u32).to_le_bytes());
        seal_header(&mut page[..HEADER_BYTES]);
    }

    /// Reads a header page, checking magic, version, checksum, dtype and geometry.
    /// The error is a sentence without the file name.
    pub fn decode(page: &[u8]) -> Result<Header, String> {
        if page.len() < HEADER_BYTES {
            return Err(format!("the file is {} bytes, shorter than the {HEADER_BYTES}-byte header", page.len()));
        }
        let page = &page[..HEADER_BYTES];
        let u32_at = |at: usize| u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
        if page[0..8] != MAGIC {
            return Err(format!(
                "bad magic {:?} (expected {:?}): not a Strata table file",
                String::from_utf8_lossy(&page[0..8]),
                String::from_utf8_lossy(&MAGIC)
            ));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!("format version {version} is not supported (this build reads version {VERSION})"));
        }
        let (stored, computed) = (u32_at(HEADER_BYTES - CHECKSUM_BYTES), header_checksum(page));
        if stored != computed {
            return Err(format!("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
        }
        let Some(dtype) = Dtype::from_code(u32_at(12)) else {
            return Err(format!("unknown dtype code {}", u32_at(12)));
        };
        let mut rows_bytes = [0u8; 8];
        rows_bytes.copy_from_slice(&page[16..24]);
        let rows = u64::from_le_bytes(rows_bytes);
        let layout = RowLayout::f32(u32_at(24) as usize, u32_at(28) as usize).with_dtype(dtype);
        let header = Header::new(rows, layout).map_err(|e| format!("dim {}, state {}: {e}", layout.dim, layout.state))?;
        let (page_size, rows_per_page) = (u32_at(32) as usize, u32_at(36) as usize);
        if page_size != header.page_size || rows_per_page != header.rows_per_page {
            return Err(format!(
                "page size {page_size} with {rows_per_page} rows per page does not match rows of {layout} (expected {} bytes, {} rows)",
                header.page_size, header.rows_per_page
            ));
        }
        Ok(header)
    }
}

fn header_checksum(page: &[u8]) -> u32 {
    crc32fast::hash(&page[..HEADER_BYTES - CHECKSUM_BYTES])
}

/// Recomputes and stores the checksum of a header page (4096 bytes).
pub fn seal_header(page: &mut [u8]) {
    let crc = header_checksum(page);
    page[HEADER_BYTES - CHECKSUM_BYTES..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC-32 of data page `index`: over its index (u64 little-endian), then every byte
/// of the page before the checksum. Including the index catches a page written to the
/// wrong place.
pub fn page_checksum(index: u64, page: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(&page[..page.len() - CHECKSUM_BYTES]);
    hasher.finalize()
}

/// Stores the checksum of data page `index` in its last 4 bytes.
pub fn seal_page(index: u64, page: &mut [u8]) {
    let crc = page_checksum(index, page);
    let end = page.len();
    page[end - CHECKSUM_BYTES..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks data page `index`; on a mismatch returns `(stored, computed)`.
pub fn verify_page(index: u64, page: &[u8]) -> Result<(), (u32, u32)> {
    let end = page.len();
    let tail = &page[end - CHECKSUM_BYTES..];
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = page_checksum(index, page);
    if stored == computed {
        Ok(())
    } else {
        Err((stored, computed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_geometry_holds_a_row_and_a_checksum() {
        let h = Header::new(100, RowLayout::f32(128, 1)).expect("valid");
        assert_eq!((h.page_size, h.rows_per_page), (4096, 7));
        assert_eq!(h.pages(), 15);
        assert_eq!(h.rows_of_page(14), 98..100);
        let exact = Header::new(1, RowLayout::f32(1023, 0)).expect("valid");
        assert_eq!((exact.page_size, exact.rows_per_page), (4096, 1));
        let big = Header::new(1, RowLayout::f32(1024, 0)).expect("valid");
        assert_eq!((big.page_size, big.rows_per_page), (8192, 1));
        assert!(Header::new(1, RowLayout::f32(0, 1)).is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_edits() {
        let h = Header::new(12345, RowLayout::f32(16, 1)).expect("valid");
        let mut page = vec![0u8; HEADER_BYTES];
        h.encode(&mut page);
        assert_eq!(Header::decode(&page), Ok(h));
        page[20] ^= 1;
        assert!(Header::decode(&page).expect_err("edited").contains("header checksum mismatch"));
    }
}
