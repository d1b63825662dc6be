//! Fault injection for the storage tier, a test hook: a [`FaultPlan`] set on a
//! `TableFile` makes chosen page reads fail with EIO, come back short or with a flipped
//! byte, and chosen page writes fail, at the page-transfer level, around the real read
//! path (io_uring, mmap or pread), so the table's own error handling, checksums and
//! retries are what the tests exercise. Compiled for tests and the `test-utils` feature
//! only.

use std::io;
use std::sync::{Arc, Mutex};

use super::reader::PageIoError;

/// What happens to one transfer of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFault {
    /// The read fails with EIO.
    ReadEio,
    /// The read delivers only the first `bytes` bytes of the page (the rest of the
    /// page's buffer is zeroed) and fails as a short read.
    ShortRead { bytes: usize },
    /// The read succeeds but byte `offset` of the page comes back flipped, so the page
    /// fails its checksum.
    FlipByte { offset: usize },
    /// The write of the run of pages holding this page fails with EIO before any of
    /// the run reaches the file; the batch's other runs are written.
    WriteEio,
}

impl PageFault {
    fn on_write(self) -> bool {
        self == PageFault::WriteEio
    }
}

struct Armed {
    page: u64,
    fault: PageFault,
    remaining: u32,
}

#[derive(Default)]
struct Plan {
    armed: Vec<Armed>,
    fired: u64,
}

/// Faults armed on pages of one table file. Clones share the plan, so a test keeps one
/// to arm faults while the table it was set on (`TableFile::inject_faults`) is owned by
/// a storage thread. A plan costs a table one branch per read or write batch when set,
/// nothing else.
#[derive(Clone, Default)]
pub struct FaultPlan(Arc<Mutex<Plan>>);

impl FaultPlan {
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Makes the next `times` reads (for the read faults) or writes (for
    /// [`PageFault::WriteEio`]) of data page `page` suffer `fault`.
    pub fn arm(&self, page: u64, fault: PageFault, times: u32) {
        self.plan().armed.push(Armed { page, fault, remaining: times });
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.plan().armed.clear();
    }

    /// Faults that have fired so far.
    pub fn fired(&self) -> u64 {
        self.plan().fired
    }

    /// Transfers still armed to fail.
    pub fn remaining(&self) -> u64 {
        self.plan().armed.iter().map(|a| u64::from(a.remaining)).sum()
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // A test that panicked while holding the lock leaves a usable plan.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies the read faults armed on `pages` (read into consecutive slots of
    /// `buf`); returns the first slot that failed.
    pub(crate) fn after_read(&self, pages: impl Iterator<Item = u64>, buf: &mut [u8], page_size: usize) -> Result<(), PageIoError> {
        let mut plan = self.plan();
        let mut first_error = None;
        for (slot, page) in pages.enumerate() {
            let Some(fault) = plan.take(page, false) else { continue };
            let slot_bytes = &mut buf[slot * page_size..(slot + 1) * page_size];
            let failure = match fault {
                PageFault::ReadEio => Some(io::Error::from_raw_os_error(libc::EIO)),
                PageFault::ShortRead { bytes } => {
                    let bytes = bytes.min(page_size - 1);
                    slot_bytes[bytes..].fill(0);
                    let message = format!("short read: {bytes} of {page_size} bytes");
                    Some(io::Error::new(io::ErrorKind::UnexpectedEof, message))
                }
                PageFault::FlipByte { offset } => {
                    slot_bytes[offset % page_size] ^= 0x40;
                    None
                }
                PageFault::WriteEio => unreachable!("write faults are not taken on reads"),
            };
            if let (Some(source), None) = (failure, &first_error) {
                first_error = Some(PageIoError { slot, source });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Which runs of pages (`(first page, page count)`) a write must fail, each with
    /// its error; the caller writes the others.
    pub(crate) fn before_write(&self, runs: &[(u64, u64)]) -> Vec<PageIoError> {
        let mut plan = self.plan();
        let mut failed = Vec::new();
        for (slot, &(first, count)) in runs.iter().enumerate() {
            // Every armed page of the run fires (each counts one failed write).
            let hits = (first..first + count).filter(|&page| plan.take(page, true).is_some()).count();
            if hits > 0 {
                failed.push(PageIoError { slot, source: io::Error::from_raw_os_error(libc::EIO) });
            }
        }
        failed
    }
}

impl Plan {
    /// Takes one firing of the first fault armed on `page` for a write or a read.
    fn take(&mut self, page: u64, write: bool) -> Option<PageFault> {
        let armed = self.armed.iter_mut().find(|a| a.page == page && a.remaining > 0 && a.fault.on_write() == write)?;
        armed.remaining -= 1;
        let fault = armed.fault;
        self.armed.retain(|a| a.remaining > 0);
        self.fired += 1;
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_the_armed_number_of_times_on_their_page_only() {
        let plan = FaultPlan::new();
        plan.arm(3, PageFault::ReadEio, 2);
        plan.arm(5, PageFault::FlipByte { offset: 7 }, 1);
        plan.arm(3, PageFault::WriteEio, 1);
        let mut buf = vec![0u8; 3 * 16];
        let err = plan.after_read([4, 5, 3].into_iter(), &mut buf, 16).expect_err("page 3 fails");
        assert_eq!((err.slot, err.source.raw_os_error()), (2, Some(libc::EIO)));
        assert_eq!(buf[16 + 7], 0x40, "page 5's byte flipped");
        assert_eq!((plan.fired(), plan.remaining()), (2, 2));
        assert!(plan.after_read([3].into_iter(), &mut buf, 16).is_err());
        assert!(plan.after_read([3, 5].into_iter(), &mut buf, 16).is_ok(), "both read faults spent");
        let failed = plan.before_write(&[(0, 2), (2, 2)]);
        assert_eq!(failed.iter().map(|e| e.slot).collect::<Vec<_>>(), vec![1]);
        assert!(plan.before_write(&[(2, 2)]).is_empty());
        assert_eq!((plan.fired(), plan.remaining()), (4, 0));
    }

    #[test]
    fn a_short_read_zeroes_the_rest_of_the_page() {
        let plan = FaultPlan::new();
        plan.arm(0, PageFault::ShortRead { bytes: 10 }, 1);
        let mut buf = vec![7u8; 32];
        let err = plan.after_read([0].into_iter(), &mut buf, 32).expect_err("short");
        assert_eq!(err.source.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.source.to_string().contains("short read: 10 of 32 bytes"));
        assert!(buf[..10].iter().all(|&b| b == 7) && buf[10..].iter().all(|&b| b == 0));
    }
}
