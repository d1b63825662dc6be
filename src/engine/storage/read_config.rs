//! How a table file is opened: the read path (io_uring, mmap or pread), the queue depth
//! and threads behind it, what to do when a page transfer fails, and the fallbacks where
//! io_uring or O_DIRECT is refused.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How pages are read from a table file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPath {
    /// Batched io_uring reads with O_DIRECT into one (registered) aligned buffer.
    #[default]
    IoUring,
    /// A shared memory map (memmap2), advised for random access.
    Mmap,
    /// A thread pool issuing O_DIRECT preads in parallel.
    Pread,
}

impl ReadPath {
    pub const ALL: [ReadPath; 3] = [ReadPath::IoUring, ReadPath::Mmap, ReadPath::Pread];
}

impl fmt::Display for ReadPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadPath::IoUring => "io_uring",
            ReadPath::Mmap => "mmap",
            ReadPath::Pread => "pread",
        })
    }
}

impl FromStr for ReadPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "io_uring" | "io-uring" => Ok(ReadPath::IoUring),
            "mmap" => Ok(ReadPath::Mmap),
            "pread" => Ok(ReadPath::Pread),
            other => Err(format!("unknown read path `{other}`: expected io_uring, mmap or pread")),
        }
    }
}

/// What a table file does when a page transfer fails (EIO, a short read or write) or a
/// page read fails its checksum: `"stop"` (fail the call at once) or `{ retry = N }`
/// (transfer the batch's pages again, up to N more times, warning each time; a page
/// that failed its checksum is only accepted once a re-read verifies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnIoError {
    #[default]
    Stop,
    Retry(u32),
}

impl OnIoError {
    /// Transfers tried again at most after the first one failed.
    pub fn retries(self) -> u32 {
        match self {
            OnIoError::Stop => 0,
            OnIoError::Retry(n) => n,
        }
    }
}

/// How a table file is opened: the read path and what to do when I/O fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadConfig {
    pub read_path: ReadPath,
    /// io_uring reads in flight at once.
    pub queue_depth: u32,
    /// Threads of the pread pool.
    pub pread_threads: usize,
    pub on_io_error: OnIoError,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig { read_path: ReadPath::IoUring, queue_depth: 32, pread_threads: 8, on_io_error: OnIoError::Stop }
    }
}

/// Whether an error from opening or reading with O_DIRECT means the file system refuses
/// direct I/O (tmpfs, some overlay file systems), so buffered I/O should be used.
pub fn direct_io_refused(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINVAL)
}

/// The read path to use given why the io_uring probe failed, if it did: the requested
/// one, or pread and the reason for the log when io_uring was requested and refused.
pub fn resolve_read_path(requested: ReadPath, uring_refusal: Option<&io::Error>) -> (ReadPath, Option<String>) {
    match (requested, uring_refusal) {
        (ReadPath::IoUring, Some(e)) => (ReadPath::Pread, Some(format!("io_uring is unavailable ({e})"))),
        (path, _) => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_path_parses_and_prints() {
        for path in ReadPath::ALL {
            assert_eq!(path.to_string().parse::<ReadPath>(), Ok(path));
        }
        assert!("aio".parse::<ReadPath>().expect_err("unknown").contains("io_uring, mmap or pread"));
        let config: ReadConfig = toml::from_str("read_path = \"mmap\"").expect("valid toml");
        assert_eq!(config.read_path, ReadPath::Mmap);
    }

    #[test]
    fn refused_io_uring_falls_back_to_pread_with_the_reason() {
        let refused = io::Error::from_raw_os_error(libc::EPERM);
        let (path, reason) = resolve_read_path(ReadPath::IoUring, Some(&refused));
        assert_eq!(path, ReadPath::Pread);
        assert!(reason.expect("a reason").contains("io_uring is unavailable"));
        assert_eq!(resolve_read_path(ReadPath::IoUring, None), (ReadPath::IoUring, None));
        assert_eq!(resolve_read_path(ReadPath::Mmap, Some(&refused)), (ReadPath::Mmap, None));
    }

    #[test]
    fn only_einval_means_direct_io_is_refused() {
        assert!(direct_io_refused(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!direct_io_refused(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!direct_io_refused(&io::Error::other("other")));
    }
}
