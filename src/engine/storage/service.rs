//! The storage I/O thread: it owns the backing store and its write-back buffer and runs
//! reads, writes, syncs and checkpoint commits in the order sent, so that reads for
//! future batches run while the consumer works on the current one; the bookkeeping of
//! the first failed write, after which the store serves nothing more; and where the
//! thread's time goes (its CPU time competes with the consumer's for the cores).

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::write_buffer::{WriteBuffer, WriteBufferStats};
use super::{BackingStore, FileCacheStats};
use crate::engine::{EngineError, RowLayout};

/// Rows read from the backing store for one batch, in the order asked.
#[derive(Debug, Default)]
pub struct StagedRows {
    pub rows: Vec<u64>,
    pub data: Vec<f32>,
    /// Seconds the I/O thread spent reading them.
    pub read_seconds: f64,
}

enum Command {
    /// A read; `ahead` for rows of a future batch (read-ahead), which is served after
    /// every other command waiting. A read-ahead that ends up after a write of some of
    /// its rows returns the newer rows, which the caller drops as possibly stale, as it
    /// does a read that raced a write.
    Read {
        rows: Vec<u64>,
        ahead: bool,
        reply: mpsc::Sender<Result<StagedRows, EngineError>>,
    },
    Write {
        rows: Vec<u64>,
        data: Vec<f32>,
    },
    Sync {
        reply: mpsc::Sender<Result<(), EngineError>>,
    },
    /// Sent right after a checkpoint's sync and commit (nothing written in between).
    ProtectCheckpoint {
        checkpoint: u64,
        reply: mpsc::Sender<Result<(), EngineError>>,
    },
}

/// Where the storage thread's time goes: CPU seconds (its own CPU clock) on reads
/// (submissions, completions, page checksums, copies out of the pages) and on writes
/// (the write-back buffer, pages read, patched and resealed, the undo journal, syncs and
/// checkpoint commits), and the wall seconds of the writes. With the wall seconds of the
/// reads (`store_read_seconds`) they say how busy the thread is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageThreadTime {
    pub read_cpu_seconds: f64,
    pub write_cpu_seconds: f64,
    pub write_seconds: f64,
}

impl StorageThreadTime {
    /// The time since `earlier`, a snapshot of the same thread's.
    pub fn since(&self, earlier: &StorageThreadTime) -> StorageThreadTime {
        self.combine(earlier, crate::engine::SINCE)
    }

    pub fn combine(&self, other: &StorageThreadTime, op: crate::engine::Combine) -> StorageThreadTime {
        let seconds = op.seconds;
        StorageThreadTime {
            read_cpu_seconds: seconds(self.read_cpu_seconds, other.read_cpu_seconds),
            write_cpu_seconds: seconds(self.write_cpu_seconds, other.write_cpu_seconds),
            write_seconds: seconds(self.write_seconds, other.write_seconds),
        }
    }

    /// Adds the CPU and wall seconds since `(cpu, wall)` to reads or to writes.
    fn add(&mut self, reading: bool, (cpu, wall): (f64, Instant)) {
        let used = thread_cpu_seconds() - cpu;
        if reading {
            self.read_cpu_seconds += used;
        } else {
            self.write_cpu_seconds += used;
            self.write_seconds += wall.elapsed().as_secs_f64();
        }
    }
}

/// The calling thread's CPU time, seconds.
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// A ticket for rows being read in the background.
pub struct PendingRead(mpsc::Receiver<Result<StagedRows, EngineError>>);

impl PendingRead {
    /// Waits for the rows; returns them and how long the caller waited.
    pub fn wait(self) -> Result<(StagedRows, Duration), EngineError> {
        let start = Instant::now();
        let staged = self.0.recv().map_err(|_| EngineError::IoThreadGone)??;
        Ok((staged, start.elapsed()))
    }
}

/// The first failed write (or sync) of the storage thread. It is reported once as it
/// happened, by the next command that can return an error; from then on every command
/// fails with [`EngineError::StoreFailed`], reads included (a read queued behind the
/// failed write too), so no read hands out a row older than a write that did not land,
/// and nothing more is written: the file keeps what it held when the write failed.
#[derive(Default)]
struct WriteFailure {
    unreported: Option<EngineError>,
    message: Option<String>,
}

impl WriteFailure {
    fn happened(&self) -> bool {
        self.message.is_some()
    }

    /// Keeps the first failure, to be reported by the next [`WriteFailure::check`].
    fn record(&mut self, error: EngineError) {
        if !self.happened() {
            self.message = Some(error.to_string());
            self.unreported = Some(error);
        }
    }

    /// Keeps the first failure, already reported to the caller.
    fn record_reported(&mut self, error: &EngineError) {
        if !self.happened() {
            self.message = Some(error.to_string());
        }
    }

    fn check(&mut self) -> Result<(), EngineError> {
        if let Some(error) = self.unreported.take() {
            return Err(error);
        }
        match &self.message {
            Some(message) => Err(EngineError::StoreFailed { earlier: message.clone() }),
            None => Ok(()),
        }
    }
}

fn lock(failure: &Mutex<WriteFailure>) -> std::sync::MutexGuard<'_, WriteFailure> {
    failure.lock().expect("not poisoned")
}

/// The I/O thread that owns the backing store and its write-back buffer. Commands run
/// in the order sent, so a read sent after a write sees the written rows.
pub struct StorageService {
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<Box<dyn BackingStore>>>,
    /// A failed write, reported on the next command, which fails like all after it.
    failed_write: Arc<Mutex<WriteFailure>>,
    buffer_stats: Arc<Mutex<WriteBufferStats>>,
    /// The store's file-cache counters as of the last command, for a file-cached store.
    cache_stats: Arc<Mutex<Option<FileCacheStats>>>,
    /// The thread's time as of the last command.
    time: Arc<Mutex<StorageThreadTime>>,
    describe: String,
    layout: RowLayout,
    rows: u64,
    file: Option<std::path::PathBuf>,
}

impl StorageService {
    /// Starts the I/O thread over `store`, holding up to `write_buffer_rows` dirty rows
    /// before writing them down in page order (0 = each write goes straight down).
    pub fn start(mut store: Box<dyn BackingStore>, write_buffer_rows: usize) -> Self {
        let describe = store.describe();
        let layout = store.layout();
        let rows = store.rows();
        let file = store.file().map(|path| path.to_path_buf());
        let (commands, inbox) = mpsc::channel::<Command>();
        let failed_write = Arc::new(Mutex::new(WriteFailure::default()));
        let failed = failed_write.clone();
        let mut buffer = WriteBuffer::new(write_buffer_rows, layout.words());
        let buffer_stats = Arc::new(Mutex::new(buffer.stats));
        let shared_stats = buffer_stats.clone();
        let cache_stats = Arc::new(Mutex::new(store.file_cache_stats()));
        let shared_cache_stats = cache_stats.clone();
        let time = Arc::new(Mutex::new(StorageThreadTime::default()));
        let shared_time = time.clone();
        let thread = std::thread::Builder::new()
            .name("strata-storage".into())
            .spawn(move || {
                let mut spent = StorageThreadTime::default();
                // Commands taken from the inbox, in the order sent, apart from the
                // read-ahead, which waits while any other command does (see `Read`).
                let (mut queue, mut read_ahead) = (VecDeque::new(), VecDeque::new());
                let mut disconnected = false;
                loop {
                    loop {
                        match inbox.try_recv() {
                            Ok(command) => take(command, &mut queue, &mut read_ahead),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                disconnected = true;
                                break;
                            }
                        }
                    }
                    let command = match queue.pop_front().or_else(|| read_ahead.pop_front()) {
                        Some(command) => command,
                        // Held rows go down a piece at a time while no command waits.
                        None if buffer.wants_draining() && !lock(&failed).happened() && !disconnected => {
                            let began = (thread_cpu_seconds(), Instant::now());
                            if let Err(e) = drain_piece(&mut *store, &mut buffer) {
                                lock(&failed).record(e);
                            }
                            spent.add(false, began);
                            *shared_stats.lock().expect("not poisoned") = buffer.stats;
                            *shared_time.lock().expect("not poisoned") = spent;
                            continue;
                        }
                        None if disconnected => break,
                        None => match inbox.recv() {
                            Ok(command) => {
                                take(command, &mut queue, &mut read_ahead);
                                continue;
                            }
                            Err(_) => break,
                        },
                    };
                    let (began, reading) = ((thread_cpu_seconds(), Instant::now()), matches!(command, Command::Read { .. }));
                    // Answered once the counters below include the command.
                    let answer = match command {
                        Command::Read { rows, reply, .. } => {
                            Some(Answer::Rows(reply, read_staged(&mut *store, &mut buffer, &failed, rows)))
                        }
                        Command::Write { rows, data } => {
                            if lock(&failed).happened() {
                                continue;
                            }
                            let written = if buffer.capacity() == 0 {
                                store.write_rows(&rows, &data)
                            } else {
                                buffer.insert(&rows, &data);
                                let mut written = Ok(());
                                while written.is_ok() && buffer.len() > buffer.capacity() {
                                    written = drain_piece(&mut *store, &mut buffer);
                                }
                                written
                            };
                            if let Err(e) = written {
                                lock(&failed).record(e);
                            }
                            None
                        }
                        Command::Sync { reply } => {
                            let healthy = lock(&failed).check();
                            let result = healthy.and_then(|()| drain(&mut *store, &mut buffer)).and_then(|()| store.sync());
                            if let Err(e) = &result {
                                lock(&failed).record_reported(e);
                            }
                            Some(Answer::Done(reply, result))
                        }
                        Command::ProtectCheckpoint { checkpoint, reply } => {
                            let healthy = lock(&failed).check();
                            let result = healthy.and_then(|()| {
                                debug_assert!(buffer.is_empty(), "a checkpoint's sync drained the buffer");
                                store.protect_checkpoint(checkpoint)
                            });
                            if let Err(e) = &result {
                                lock(&failed).record_reported(e);
                            }
                            Some(Answer::Done(reply, result))
                        }
                    };
                    spent.add(reading, began);
                    *shared_stats.lock().expect("not poisoned") = buffer.stats;
                    *shared_cache_stats.lock().expect("not poisoned") = store.file_cache_stats();
                    *shared_time.lock().expect("not poisoned") = spent;
                    match answer {
                        Some(Answer::Rows(reply, result)) => drop(reply.send(result)),
                        Some(Answer::Done(reply, result)) => drop(reply.send(result)),
                        None => {}
                    }
                }
                // Dropped without a sync: what is still held goes down all the same,
                // unless a write failed (the file stays as it was then).
                if !lock(&failed).happened() {
                    if let Err(e) = drain(&mut *store, &mut buffer) {
                        tracing::error!("{}: writing the held dirty rows on shutdown: {e}", store.describe());
                    }
                }
                store
            })
            .expect("spawning the storage thread");
        StorageService {
            commands: Some(commands),
            thread: Some(thread),
            failed_write,
            buffer_stats,
            cache_stats,
            time,
            describe,
            layout,
            rows,
            file,
        }
    }

    /// The write-back buffer's counters as of the last command the thread finished.
    pub fn write_buffer_stats(&self) -> WriteBufferStats {
        *self.buffer_stats.lock().expect("not poisoned")
    }

    /// The file cache's counters (a file-cached store only) as of the last command the
    /// thread finished.
    pub fn file_cache_stats(&self) -> Option<FileCacheStats> {
        *self.cache_stats.lock().expect("not poisoned")
    }

    /// Where the storage thread's time went, as of the last command it finished.
    pub fn thread_time(&self) -> StorageThreadTime {
        *self.time.lock().expect("not poisoned")
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn layout(&self) -> RowLayout {
        self.layout
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file that holds the rows durably (see [`BackingStore::file`]).
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        lock(&self.failed_write).check()?;
        self.commands.as_ref().ok_or(EngineError::IoThreadGone)?.send(command).map_err(|_| EngineError::IoThreadGone)
    }

    /// Starts reading `rows` in the background. No rows are answered at once, without a
    /// round trip through the I/O thread (a batch whose rows are all in memory never
    /// waits behind the store).
    pub fn read(&self, rows: Vec<u64>) -> Result<PendingRead, EngineError> {
        self.send_read(rows, false)
    }

    /// [`StorageService::read`] of rows a future batch needs: served after every other
    /// command waiting, so that a read the consumer waits for now never queues behind it.
    pub fn read_ahead(&self, rows: Vec<u64>) -> Result<PendingRead, EngineError> {
        self.send_read(rows, true)
    }

    fn send_read(&self, rows: Vec<u64>, ahead: bool) -> Result<PendingRead, EngineError> {
        let (reply, receive) = mpsc::channel();
        if rows.is_empty() {
            lock(&self.failed_write).check()?;
            let _ = reply.send(Ok(StagedRows::default()));
            return Ok(PendingRead(receive));
        }
        self.send(Command::Read { rows, ahead, reply })?;
        Ok(PendingRead(receive))
    }

    /// Queues a write; an error surfaces on the next call (and fails every later one).
    pub fn write(&self, rows: Vec<u64>, data: Vec<f32>) -> Result<(), EngineError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.send(Command::Write { rows, data })
    }

    /// Waits for every queued write and makes it durable.
    pub fn sync(&self) -> Result<(), EngineError> {
        let (reply, receive) = mpsc::channel();
        self.send(Command::Sync { reply })?;
        receive.recv().map_err(|_| EngineError::IoThreadGone)?
    }

    /// After a [`StorageService::sync`] whose rows a checkpoint has committed, with no
    /// write in between: see [`BackingStore::protect_checkpoint`].
    pub fn protect_checkpoint(&self, checkpoint: u64) -> Result<(), EngineError> {
        let (reply, receive) = mpsc::channel();
        self.send(Command::ProtectCheckpoint { checkpoint, reply })?;
        receive.recv().map_err(|_| EngineError::IoThreadGone)?
    }
}

impl StorageService {
    /// Makes every write durable, stops the thread and hands the store back.
    pub fn into_store(mut self) -> Result<Box<dyn BackingStore>, EngineError> {
        self.sync()?;
        drop(self.commands.take());
        let thread = self.thread.take().ok_or(EngineError::IoThreadGone)?;
        thread.join().map_err(|_| EngineError::IoThreadGone)
    }
}

/// Puts a command taken from the inbox in line: read-ahead apart, the rest in order.
fn take(command: Command, queue: &mut VecDeque<Command>, read_ahead: &mut VecDeque<Command>) {
    match command {
        Command::Read { ahead: true, .. } => read_ahead.push_back(command),
        other => queue.push_back(other),
    }
}

/// A command's answer, sent once the thread's counters include the command.
enum Answer {
    Rows(mpsc::Sender<Result<StagedRows, EngineError>>, Result<StagedRows, EngineError>),
    Done(mpsc::Sender<Result<(), EngineError>>, Result<(), EngineError>),
}

/// Reads `rows` (through the write-back buffer), unless a write failed.
fn read_staged(
    store: &mut dyn BackingStore,
    buffer: &mut WriteBuffer,
    failed: &Mutex<WriteFailure>,
    rows: Vec<u64>,
) -> Result<StagedRows, EngineError> {
    let start = Instant::now();
    let mut data = vec![0f32; rows.len() * store.layout().words()];
    // The lock is let go before the read: the consumer takes it to send commands.
    let healthy = lock(failed).check();
    healthy.and_then(|()| read_through(store, buffer, &rows, &mut data)).map(|()| StagedRows {
        rows,
        data,
        read_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads `rows` into `out`: held rows from the write-back buffer, the others from the
/// store in one call.
fn read_through(store: &mut dyn BackingStore, buffer: &mut WriteBuffer, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
    if buffer.is_empty() {
        return store.read_rows(rows, out);
    }
    let floats = store.layout().words();
    let (mut missing, mut positions) = (Vec::new(), Vec::new());
    for (i, &row) in rows.iter().enumerate() {
        match buffer.get(row) {
            Some(values) => out[i * floats..(i + 1) * floats].copy_from_slice(values),
            None => {
                missing.push(row);
                positions.push(i);
            }
        }
    }
    buffer.count_read_hits(rows.len() - missing.len());
    if !missing.is_empty() {
        let mut read = vec![0f32; missing.len() * floats];
        store.read_rows(&missing, &mut read)?;
        for (k, &i) in positions.iter().enumerate() {
            out[i * floats..(i + 1) * floats].copy_from_slice(&read[k * floats..(k + 1) * floats]);
        }
    }
    Ok(())
}

/// Rows one piece of the write-back buffer writes down: a few milliseconds of page
/// I/O, so that a read never waits long behind it.
const DRAIN_PIECE_ROWS: usize = 256;

/// Writes one piece of the buffer down to the store, in page order.
fn drain_piece(store: &mut dyn BackingStore, buffer: &mut WriteBuffer) -> Result<(), EngineError> {
    let (rows, data) = buffer.drain_piece(DRAIN_PIECE_ROWS);
    store.write_rows(&rows, &data)
}

/// Writes every row the buffer holds down to the store, in page order (from where the
/// last piece ended, wrapping).
fn drain(store: &mut dyn BackingStore, buffer: &mut WriteBuffer) -> Result<(), EngineError> {
    if buffer.is_empty() {
        return Ok(());
    }
    let (rows, data) = buffer.drain_piece(buffer.len());
    store.write_rows(&rows, &data)
}

impl Drop for StorageService {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
