//! The prefetch pipeline: a source thread produces batches into a bounded channel
//! (back-pressure bounds memory), the consumer side keeps a window of `window` batches
//! ahead of the one being served, fills in each lookup's next access within that
//! window (for the lookahead policies) and starts the store reads of every batch as it
//! enters the window. Window 0 is the baseline: no read-ahead, no lookahead.
//! Dropping the prefetcher (at the end, or when the consumer stops early on an error or
//! a stop request) disconnects the channel and joins the source thread, which stops at
//! its next send; a source thread that panicked is an error, never a short stream.
//! The window itself ([`LookaheadWindow`]) is its own type, for callers that bring
//! their own batches (the Python read-ahead wrapper).

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rustc_hash::FxHashMap;

use super::batch::Batch;
use super::EngineError;

/// The batches read ahead of the one being served, each lookup's next access within
/// them filled in as batches enter.
#[derive(Debug, Default)]
pub struct LookaheadWindow {
    queue: VecDeque<Batch>,
    /// Row -> stream position of its latest lookup still in the window.
    last_seen: FxHashMap<u64, u64>,
}

impl LookaheadWindow {
    /// Batches in the window.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The batch that leaves the window next.
    pub fn front(&self) -> Option<&Batch> {
        self.queue.front()
    }

    /// Adds `batch` (its `start` its stream position, after every batch in the window)
    /// at the back, filling in next-access times: of earlier batches in the window, and
    /// within `batch`. Returns the batch as it stands in the window.
    pub fn push(&mut self, mut batch: Batch) -> &Batch {
        for i in 0..batch.ids.len() {
            let row = batch.ids[i];
            let position = batch.start + i as u64;
            if let Some(previous) = self.last_seen.insert(row, position) {
                if previous >= batch.start {
                    batch.next_access[(previous - batch.start) as usize] = position;
                } else if let Some(earlier) = self.queue.iter_mut().find(|b| previous >= b.start && previous < b.start + b.ids.len() as u64)
                {
                    earlier.next_access[(previous - earlier.start) as usize] = position;
                }
            }
        }
        self.queue.push_back(batch);
        self.queue.back().unwrap_or_else(|| unreachable!("just pushed"))
    }

    /// Empties the window (batches announced that will not be served); returns them.
    pub fn clear(&mut self) -> Vec<Batch> {
        self.last_seen.clear();
        self.queue.drain(..).collect()
    }

    /// Takes the front batch out of the window.
    pub fn pop(&mut self) -> Option<Batch> {
        let batch = self.queue.pop_front()?;
        for (i, &row) in batch.ids.iter().enumerate() {
            if self.last_seen.get(&row) == Some(&(batch.start + i as u64)) {
                self.last_seen.remove(&row);
            }
        }
        Some(batch)
    }
}

/// Serves batches to the consumer `window` batches behind the source.
pub struct Prefetcher {
    window: usize,
    incoming: Option<mpsc::Receiver<Batch>>,
    source: Option<JoinHandle<()>>,
    ahead: LookaheadWindow,
}

impl Prefetcher {
    /// Starts the source thread over `batches` (each batch's `start` must be its
    /// stream position).
    pub fn new(batches: impl Iterator<Item = Batch> + Send + 'static, window: usize) -> Self {
        let (send, incoming) = mpsc::sync_channel(window + 1);
        let source = std::thread::Builder::new()
            .name("strata-batches".into())
            .spawn(move || {
                for batch in batches {
                    if send.send(batch).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the batch source thread");
        Prefetcher { window, incoming: Some(incoming), source: Some(source), ahead: LookaheadWindow::default() }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// The next batch to serve, with its rows' store reads already under way: every
    /// batch entering the window is given to `read_ahead` (a table's `prefetch`).
    pub fn next(&mut self, mut read_ahead: impl FnMut(&Batch) -> Result<(), EngineError>) -> Result<Option<Batch>, EngineError> {
        while self.ahead.len() <= self.window {
            let Some(incoming) = self.incoming.as_ref() else { break };
            match incoming.recv() {
                Ok(batch) => {
                    let batch = self.ahead.push(batch);
                    if self.window > 0 {
                        read_ahead(batch)?;
                    }
                }
                Err(_) => {
                    self.incoming = None;
                    self.join_source()?;
                }
            }
        }
        Ok(self.ahead.pop())
    }

    /// Joins the source thread once its batches have ended: a source that panicked is
    /// an error, not a shorter stream.
    fn join_source(&mut self) -> Result<(), EngineError> {
        match self.source.take().map(JoinHandle::join) {
            Some(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "it panicked".into());
                Err(EngineError::SourceFailed { panic: message })
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        drop(self.incoming.take());
        if let Some(source) = self.source.take() {
            let _ = source.join();
        }
    }
}
