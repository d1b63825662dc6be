//! The io_uring path: page reads submitted in batches up to a queue depth into one
//! page-aligned buffer (registered with the kernel where RLIMIT_MEMLOCK allows), and
//! page writes from the caller's buffers at the same depth.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types, IoUring};

use super::aligned::AlignedBuf;
use super::reader::PageIoError;

/// An io_uring instance and the buffer its reads land in. The ring is declared first so
/// it is dropped (and its buffer registration released) before the buffer.
pub struct PageRing {
    ring: IoUring,
    buf: AlignedBuf,
    depth: usize,
    registered: bool,
    /// Set when a submission failed with reads possibly still in flight: the buffer can
    /// no longer be trusted, so every later read fails.
    broken: bool,
}

/// Whether RLIMIT_MEMLOCK lets this process lock `bytes` more bytes.
pub fn memlock_allows(bytes: usize) -> bool {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return false;
    }
    limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur as u128 >= bytes as u128
}

impl PageRing {
    /// Sets up a ring of `depth` entries and a buffer of `buffer_bytes`, registering the
    /// buffer when the memlock limit allows it (and the kernel accepts it).
    pub fn new(depth: u32, buffer_bytes: usize) -> io::Result<PageRing> {
        let depth = depth.max(1);
        let ring = IoUring::new(depth.next_power_of_two())?;
        let mut reader = PageRing { ring, buf: AlignedBuf::zeroed(buffer_bytes), depth: depth as usize, registered: false, broken: false };
        if memlock_allows(reader.buf.len()) {
            let iovec = libc::iovec { iov_base: reader.buf.as_mut_ptr().cast(), iov_len: reader.buf.len() };
            // SAFETY: the buffer lives as long as the ring (same struct, dropped after it)
            // and never moves.
            match unsafe { reader.ring.submitter().register_buffers(&[iovec]) } {
                Ok(()) => reader.registered = true,
                Err(e) => tracing::info!("io_uring: buffer registration refused ({e}); using plain buffers"),
            }
        } else {
            tracing::info!("io_uring: RLIMIT_MEMLOCK is below the {} KiB read buffer; using plain buffers", reader.buf.len() / 1024);
        }
        Ok(reader)
    }

    pub fn registered(&self) -> bool {
        self.registered
    }

    /// The buffer reads land in.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Reads `offsets.len()` pages of `page_size` bytes, page `i` from `offsets[i]` into
    /// `buffer_mut()[i * page_size..]`, keeping up to `depth` reads in flight.
    pub fn read_pages(&mut self, fd: RawFd, offsets: &[u64], page_size: usize) -> Result<(), PageIoError> {
        assert!(offsets.len() * page_size <= self.buf.len(), "read chunk larger than the io_uring buffer");
        let (base, registered) = (self.buf.as_mut_ptr(), self.registered);
        let entry = |slot: usize| {
            // SAFETY: slot `slot` lies inside the buffer (asserted above).
            let target = unsafe { base.add(slot * page_size) };
            if registered {
                opcode::ReadFixed::new(types::Fd(fd), target, page_size as u32, 0).offset(offsets[slot]).build()
            } else {
                opcode::Read::new(types::Fd(fd), target, page_size as u32).offset(offsets[slot]).build()
            }
        };
        self.transfer(offsets.len(), entry, |_| page_size, "read")
    }

    /// Writes `runs[i].1` at file offset `runs[i].0` for every run, keeping up to `depth`
    /// writes in flight. The buffers must stay untouched until this returns.
    pub fn write_runs(&mut self, fd: RawFd, runs: &[(u64, &[u8])]) -> Result<(), PageIoError> {
        let entry = |slot: usize| {
            let (offset, bytes) = runs[slot];
            opcode::Write::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32).offset(offset).build()
        };
        self.transfer(runs.len(), entry, |slot| runs[slot].1.len(), "write")
    }

    /// Submits operation `entry(slot)` for every slot in `0..count`, up to `depth` at a
    /// time, and reaps them all; an operation moving fewer than `len(slot)` bytes fails.
    fn transfer(
        &mut self,
        count: usize,
        entry: impl Fn(usize) -> squeue::Entry,
        len: impl Fn(usize) -> usize,
        what: &str,
    ) -> Result<(), PageIoError> {
        if self.broken {
            let message = "io_uring ring unusable after an earlier submission failure";
            return Err(PageIoError { slot: 0, source: io::Error::other(message) });
        }
        let (mut next, mut in_flight, mut first_error) = (0usize, 0usize, None::<PageIoError>);
        while next < count && first_error.is_none() || in_flight > 0 {
            while first_error.is_none() && next < count && in_flight < self.depth {
                // SAFETY: the memory each entry names stays valid until it completes: we
                // reap every submitted operation before returning, and the buffers
                // outlive this call (the ring's own buffer outlives the ring).
                if unsafe { self.ring.submission().push(&entry(next).user_data(next as u64)) }.is_err() {
                    break;
                }
                next += 1;
                in_flight += 1;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(PageIoError { slot: next.saturating_sub(1), source: e });
                }
            }
            for completion in self.ring.completion() {
                in_flight -= 1;
                let slot = completion.user_data() as usize;
                let result = completion.result();
                let failure = if result < 0 {
                    Some(io::Error::from_raw_os_error(-result))
                } else if result as usize != len(slot) {
                    Some(io::Error::new(io::ErrorKind::UnexpectedEof, format!("short {what}: {result} of {} bytes", len(slot))))
                } else {
                    None
                };
                if let (Some(source), None) = (failure, &first_error) {
                    first_error = Some(PageIoError { slot, source });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
