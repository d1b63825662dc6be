//! The pread path: a small pool of threads issuing positioned reads (one per page) and
//! writes (one per run of pages) in parallel, fed by a channel.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::reader::PageIoError;

/// One transfer: `len` bytes at `offset` into `dest` (or from it, when `write`),
/// answered on `done`.
struct PageJob {
    offset: u64,
    dest: *mut u8,
    len: usize,
    write: bool,
    slot: usize,
    done: Sender<(usize, io::Result<()>)>,
}

// SAFETY: `dest` points into a buffer that `PreadPool::run`'s caller keeps borrowed
// (mutably for reads), disjoint per job, until every job has answered or been dropped.
unsafe impl Send for PageJob {}

/// Worker threads reading pages of one file.
pub struct PreadPool {
    jobs: Option<Sender<PageJob>>,
    workers: Vec<JoinHandle<()>>,
}

impl PreadPool {
    pub fn new(file: Arc<File>, threads: usize) -> io::Result<PreadPool> {
        let (jobs, queue) = crossbeam_channel::unbounded::<PageJob>();
        let workers = (0..threads.max(1))
            .map(|i| {
                let (file, queue): (Arc<File>, Receiver<PageJob>) = (file.clone(), queue.clone());
                std::thread::Builder::new().name(format!("strata-pread-{i}")).spawn(move || {
                    for job in queue {
                        // SAFETY: see `PageJob`: the range is ours alone until we answer.
                        let dest = unsafe { std::slice::from_raw_parts_mut(job.dest, job.len) };
                        let outcome = if job.write { file.write_all_at(dest, job.offset) } else { file.read_exact_at(dest, job.offset) };
                        let _ = job.done.send((job.slot, outcome));
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(PreadPool { jobs: Some(jobs), workers })
    }

    /// Reads page `i` of `page_size` bytes from `offsets[i]` into `buf[i * page_size..]`.
    pub fn read_pages(&self, offsets: &[u64], page_size: usize, buf: &mut [u8]) -> Result<(), PageIoError> {
        assert!(offsets.len() * page_size <= buf.len(), "read chunk larger than the pread buffer");
        let base = buf.as_mut_ptr();
        // SAFETY: slot ranges are disjoint and inside `buf` (asserted above).
        let jobs = offsets.iter().enumerate().map(|(slot, &offset)| (offset, unsafe { base.add(slot * page_size) }, page_size));
        self.run(jobs, false)
    }

    /// Writes `runs[i].1` at file offset `runs[i].0`, the runs in parallel.
    pub fn write_runs(&self, runs: &[(u64, &[u8])]) -> Result<(), PageIoError> {
        // The workers only read through these pointers (`write: true`).
        self.run(runs.iter().map(|&(offset, bytes)| (offset, bytes.as_ptr().cast_mut(), bytes.len())), true)
    }

    /// Hands every `(offset, memory, len)` transfer to the workers and waits for all.
    fn run(&self, transfers: impl Iterator<Item = (u64, *mut u8, usize)>, write: bool) -> Result<(), PageIoError> {
        let jobs = self.jobs.as_ref().expect("pool is running until dropped");
        let (done, answers) = crossbeam_channel::unbounded();
        let (mut sent, mut stopped) = (0, false);
        for (slot, (offset, dest, len)) in transfers.enumerate() {
            if jobs.send(PageJob { offset, dest, len, write, slot, done: done.clone() }).is_err() {
                stopped = true;
                break;
            }
            sent += 1;
        }
        // Only the jobs hold senders now: if a worker dies, its job's sender is dropped
        // and `recv` below ends instead of waiting forever.
        drop(done);
        let mut first_error = None;
        if stopped {
            first_error = Some(PageIoError { slot: sent, source: io::Error::other("pread worker threads have stopped") });
        }
        for _ in 0..sent {
            match answers.recv() {
                Ok((_, Ok(()))) => {}
                Ok((slot, Err(source))) => {
                    first_error.get_or_insert(PageIoError { slot, source });
                }
                Err(_) => {
                    first_error
                        .get_or_insert(PageIoError { slot: 0, source: io::Error::other("a pread worker thread stopped mid-transfer") });
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for PreadPool {
    fn drop(&mut self) {
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
