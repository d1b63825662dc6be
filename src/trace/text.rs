//! Plain text traces: one decimal key per line, as libCacheSim's `txt` reader takes.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{KeySource, TraceError, TraceRecord, NEVER};

/// Streams a text trace. Blank lines are skipped; anything else that is not an
/// unsigned decimal integer is an error naming the line.
pub struct TextReader {
    path: PathBuf,
    input: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
}

impl TextReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
        Ok(TextReader { path: path.to_path_buf(), input: BufReader::with_capacity(1 << 20, file), line: 0, buf: Vec::new() })
    }
}

/// Parses an unsigned decimal key, trimming surrounding ASCII white space.
fn parse_key(text: &[u8]) -> Option<u64> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in text {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

impl KeySource for TextReader {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        while out.len() < max {
            self.buf.clear();
            let n = self.input.read_until(b'\n', &mut self.buf).map_err(|e| TraceError::io(&self.path, e))?;
            if n == 0 {
                break;
            }
            self.line += 1;
            if self.buf.trim_ascii().is_empty() {
                continue;
            }
            match parse_key(&self.buf) {
                Some(key) => out.push(TraceRecord { key, next_access: NEVER }),
                None => {
                    let shown: String = String::from_utf8_lossy(self.buf.trim_ascii()).chars().take(40).collect();
                    return Err(TraceError::Parse {
                        path: self.path.clone(),
                        line: self.line,
                        message: format!("expected an unsigned integer key, found `{shown}`"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Writes a text trace, one key per line.
pub struct TextWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TextWriter {
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let file = File::create(path).map_err(|e| TraceError::io(path, e))?;
        Ok(TextWriter { path: path.to_path_buf(), out: BufWriter::with_capacity(1 << 20, file) })
    }

    pub fn write(&mut self, key: u64) -> Result<(), TraceError> {
        writeln!(self.out, "{key}").map_err(|e| TraceError::io(&self.path, e))
    }

    pub fn finish(mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|e| TraceError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn parses_keys_and_rejects_garbage() {
        assert_eq!(parse_key(b"42\n"), Some(42));
        assert_eq!(parse_key(b"  7 \r\n"), Some(7));
        assert_eq!(parse_key(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_key(b"18446744073709551616"), None);
        assert_eq!(parse_key(b"000000000000000000000042"), Some(42), "leading zeros are no overflow");
        assert_eq!(parse_key(b"12a"), None);
        assert_eq!(parse_key(b"-1"), None);
        assert_eq!(parse_key(b""), None);
    }
}
