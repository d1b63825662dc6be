//! The NumPy `.npy` array format and `.npz` archives of arrays (as `np.savez` writes
//! them: uncompressed zip members): header parsing and writing, and positioned reads
//! of whole rows, so an array of any size is read in bounded memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DataError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The element types Strata reads and writes (little-endian, as numpy writes them on
/// every common machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I32,
    I64,
}

impl Dtype {
    /// The numpy type string (`descr`).
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::I64 => 8,
        }
    }

    fn from_descr(descr: &str) -> Option<Dtype> {
        match descr {
            "<f4" => Some(Dtype::F32),
            "<i4" => Some(Dtype::I32),
            "<i8" => Some(Dtype::I64),
            _ => None,
        }
    }

    /// Element `index` of `bytes` (holding elements of this type) as an integer;
    /// floats are truncated.
    pub fn int_at(self, bytes: &[u8], index: usize) -> i64 {
        let at = index * self.size();
        match self {
            Dtype::I32 => i64::from(i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))),
            Dtype::I64 => i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")),
            Dtype::F32 => f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as i64,
        }
    }

    /// Element `index` of `bytes` as a float.
    pub fn f32_at(self, bytes: &[u8], index: usize) -> f32 {
        let at = index * self.size();
        match self {
            Dtype::F32 => f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")),
            other => other.int_at(bytes, index) as f32,
        }
    }
}

/// One array in a file: where its C-order data starts, its type and shape. Rows are
/// read with positioned reads, never the whole array at once.
#[derive(Debug)]
pub struct NpyArray {
    file: Arc<File>,
    /// The file, or `archive.npz:member.npy` for a member of an archive.
    name: PathBuf,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    data_offset: u64,
}

impl NpyArray {
    /// Opens the `.npy` file at `path` and reads its header.
    pub fn open(path: &Path) -> Result<NpyArray, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        NpyArray::at(Arc::new(file), path.to_path_buf(), 0, len)
    }

    /// The array whose `.npy` bytes (header and data) lie at `offset..offset + len` of
    /// `file`.
    fn at(file: Arc<File>, name: PathBuf, offset: u64, len: u64) -> Result<NpyArray, DataError> {
        let format = |message: String| DataError::Format { path: name.clone(), message };
        let mut preamble = [0u8; 12];
        let got = read_up_to(&file, &mut preamble[..len.min(12) as usize], offset).map_err(|e| DataError::io(&name, e))?;
        if got < 10 || &preamble[..6] != MAGIC {
            return Err(format("not a NumPy .npy array (no \\x93NUMPY magic at byte 0)".into()));
        }
        let (header_len, header_start) = match preamble[6] {
            1 => (u64::from(u16::from_le_bytes([preamble[8], preamble[9]])), 10),
            2 | 3 if got == 12 => (u64::from(u32::from_le_bytes(preamble[8..12].try_into().expect("4 bytes"))), 12),
            version => return Err(format(format!("unsupported .npy format version {version}.{}", preamble[7]))),
        };
        if header_start + header_len > len {
            return Err(format(format!("header of {header_len} bytes runs past the end of the file")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, offset + header_start).map_err(|e| DataError::io(&name, e))?;
        let header = String::from_utf8(header).map_err(|_| format("header is not text".into()))?;
        let (dtype, shape) = parse_header(&header).map_err(|m| format(format!("header: {m}")))?;
        let data_offset = header_start + header_len;
        let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        let data_len = elements.and_then(|n| n.checked_mul(dtype.size() as u64));
        match data_len {
            Some(bytes) if data_offset + bytes <= len => {}
            _ => {
                return Err(format(format!(
                    "shape {shape:?} of {} needs {} data bytes after byte {data_offset}, the file holds {}",
                    dtype.descr(),
                    data_len.map_or("too many".to_string(), |b| b.to_string()),
                    len - data_offset
                )))
            }
        }
        Ok(NpyArray { file, name, dtype, shape, data_offset: offset + data_offset })
    }

    /// The file (or `archive:member`) the array is in, for error messages.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Rows: the first dimension (1 for a 0-d array).
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row: the product of the other dimensions.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product::<u64>() as usize
    }

    /// Fills `out` with the bytes of rows `first..first + count`.
    pub fn read_rows(&self, first: u64, count: usize, out: &mut Vec<u8>) -> Result<(), DataError> {
        let row_bytes = (self.row_len() * self.dtype.size()) as u64;
        out.resize(count * row_bytes as usize, 0);
        self.file.read_exact_at(out, self.data_offset + first * row_bytes).map_err(|e| DataError::Row {
            path: self.name.clone(),
            row: first,
            message: format!("reading {count} rows: {e}"),
        })
    }
}

/// Reads as many bytes as there are into `buf` from `offset`.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Parses the Python dict literal of a `.npy` header:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 13), }`.
fn parse_header(header: &str) -> Result<(Dtype, Vec<u64>), String> {
    let value = |key: &str| -> Result<&str, String> {
        let at = header.find(&format!("'{key}'")).ok_or_else(|| format!("no `{key}` entry"))?;
        let rest = header[at + key.len() + 2..].trim_start();
        rest.strip_prefix(':').map(str::trim_start).ok_or_else(|| format!("no `:` after `{key}`"))
    };
    let descr = value("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("`descr` is not a quoted string")?;
    let dtype = Dtype::from_descr(descr).ok_or_else(|| format!("dtype `{descr}` is not one of <f4, <i4, <i8"))?;
    if value("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported (save with C order)".into());
    }
    let shape = value("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("`shape` is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>().map_err(|_| format!("shape entry `{d}` is not a whole number")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, shape))
}

/// The `.npy` header (format 1.0, padded to a multiple of 64 bytes) of an array.
fn header_bytes(dtype: Dtype, shape: &[u64]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("{one},"),
        _ => shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
    };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': ({dims}), }}", dtype.descr());
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + dict.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes
}

/// Streams one array of a known shape to a `.npy` file, a few rows at a time.
pub struct NpyWriter {
    path: PathBuf,
    out: BufWriter<File>,
    dtype: Dtype,
    remaining: u64,
}

impl NpyWriter {
    pub fn create(path: &Path, dtype: Dtype, shape: &[u64]) -> Result<NpyWriter, DataError> {
        let file = File::create(path).map_err(|e| DataError::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header_bytes(dtype, shape)).map_err(|e| DataError::io(path, e))?;
        Ok(NpyWriter { path: path.to_path_buf(), out, dtype, remaining: shape.iter().product() })
    }

    /// Appends `values`, converted to the array's type.
    pub fn write_f32(&mut self, values: &[f32]) -> Result<(), DataError> {
        assert_eq!(self.dtype, Dtype::F32, "{}: writing floats into a {} array", self.path.display(), self.dtype.descr());
        self.take(values.len())?;
        values.iter().try_for_each(|v| self.out.write_all(&v.to_le_bytes())).map_err(|e| DataError::io(&self.path, e))
    }

    pub fn write_ints(&mut self, values: impl IntoIterator<Item = i64>) -> Result<(), DataError> {
        for v in values {
            self.take(1)?;
            let path = &self.path;
            let written = match self.dtype {
                Dtype::I32 => {
                    let v =
                        i32::try_from(v).map_err(|_| DataError::Format { path: path.clone(), message: format!("{v} does not fit <i4") })?;
                    self.out.write_all(&v.to_le_bytes())
                }
                Dtype::I64 => self.out.write_all(&v.to_le_bytes()),
                Dtype::F32 => self.out.write_all(&(v as f32).to_le_bytes()),
            };
            written.map_err(|e| DataError::io(path, e))?;
        }
        Ok(())
    }

    fn take(&mut self, count: usize) -> Result<(), DataError> {
        self.remaining = self
            .remaining
            .checked_sub(count as u64)
            .ok_or_else(|| DataError::Format { path: self.path.clone(), message: "more values written than the shape holds".into() })?;
        Ok(())
    }

    /// Flushes the file; every element of the shape must have been written.
    pub fn finish(mut self) -> Result<(), DataError> {
        if self.remaining != 0 {
            return Err(DataError::Format { path: self.path, message: format!("{} values short of the shape", self.remaining) });
        }
        self.out.flush().map_err(|e| DataError::io(&self.path, e))
    }
}

/// The arrays of an `.npz` archive, by member name without `.npy`, in archive order.
pub fn open_npz(path: &Path) -> Result<Vec<(String, NpyArray)>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let format = |message: String| DataError::Format { path: path.to_path_buf(), message };
    let mut archive = zip::ZipArchive::new(file.try_clone().map_err(|e| DataError::io(path, e))?)
        .map_err(|e| format(format!("not a NumPy .npz archive: {e}")))?;
    let file = Arc::new(file);
    let mut arrays = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let member = archive.by_index_raw(index).map_err(|e| format(format!("member {index}: {e}")))?;
        let name = member.name().to_string();
        if member.compression() != zip::CompressionMethod::Stored {
            return Err(format(format!(
                "member `{name}` is compressed ({}); only np.savez (uncompressed) archives are read",
                member.compression()
            )));
        }
        let (start, len) = (member.data_start(), member.size());
        let label = PathBuf::from(format!("{}:{name}", path.display()));
        let array = NpyArray::at(Arc::clone(&file), label, start, len)?;
        arrays.push((name.trim_end_matches(".npy").to_string(), array));
    }
    Ok(arrays)
}

/// Writes an `.npz` archive of the given `.npy` files (member `name.npy` for each),
/// uncompressed as `np.savez` does, copying each file in bounded memory.
pub fn write_npz(path: &Path, members: &[(String, PathBuf)]) -> Result<(), DataError> {
    let zip_error = |e: zip::result::ZipError| DataError::Format { path: path.to_path_buf(), message: format!("writing the archive: {e}") };
    let file = File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut archive = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    for (name, source) in members {
        let mut input = File::open(source).map_err(|e| DataError::io(source, e))?;
        let len = input.metadata().map_err(|e| DataError::io(source, e))?.len();
        let options =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(len >= u64::from(u32::MAX));
        archive.start_file(format!("{name}.npy"), options).map_err(zip_error)?;
        std::io::copy(&mut input, &mut archive).map_err(|e| DataError::io(path, e))?;
    }
    archive.finish().map_err(zip_error)?.flush().map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_64_byte_aligned_and_parse_back() {
        for shape in [vec![7u64], vec![1000, 13], vec![3, 1], vec![]] {
            let bytes = header_bytes(Dtype::I64, &shape);
            assert_eq!(bytes.len() % 64, 0);
            let text = std::str::from_utf8(&bytes[10..]).unwrap();
            assert!(text.ends_with('\n'));
            assert_eq!(parse_header(text).unwrap(), (Dtype::I64, shape));
        }
    }

    #[test]
    fn numpy_style_headers_parse() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4096, 13), }          \n";
        assert_eq!(parse_header(header).unwrap(), (Dtype::F32, vec![4096, 13]));
        assert!(parse_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }").unwrap_err().contains("<f8"));
        assert!(parse_header("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2), }").unwrap_err().contains("Fortran"));
    }

    #[test]
    fn rows_round_trip_through_a_file_and_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let mut writer = NpyWriter::create(&path, Dtype::I32, &[5, 2]).unwrap();
        writer.write_ints((0..10).map(|v| v * 3 - 4)).unwrap();
        writer.finish().unwrap();
        let array = NpyArray::open(&path).unwrap();
        assert_eq!((array.rows(), array.row_len()), (5, 2));
        let mut rows = Vec::new();
        array.read_rows(2, 2, &mut rows).unwrap();
        assert_eq!((0..4).map(|i| array.dtype.int_at(&rows, i)).collect::<Vec<_>>(), vec![8, 11, 14, 17]);

        let npz = dir.path().join("a.npz");
        write_npz(&npz, &[("0".into(), path.clone()), ("1".into(), path)]).unwrap();
        let members = open_npz(&npz).unwrap();
        assert_eq!(members.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["0", "1"]);
        members[1].1.read_rows(4, 1, &mut rows).unwrap();
        assert_eq!((array.dtype.int_at(&rows, 0), array.dtype.int_at(&rows, 1)), (20, 23));
    }
}
