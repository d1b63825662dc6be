//! The prefetch pipeline: a source thread produces batches into a bounded channel
//! (back-pressure bounds memory), the consumer side keeps a window of `window` batches
//! ahead of the one being served, fills in each lookup's next access within that
//! window (for the lookahead policies) and starts the store reads of every batch as it
//! enters the window. Window 0 is the baseline: no read-ahead, no lookahead.
//! Dropping the prefetcher (at the end, or when the consumer stops early on an error or
//! a stop request) disconnects the channel and joins the source thread, which stops at
//! its next send; a source thread that panicked is an error, never a short stream.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rustc_hash::FxHashMap;

use super::batch::Batch;
use super::table::TieredTable;
use super::EngineError;

/// Serves batches to the consumer `window` batches behind the source.
pub struct Prefetcher {
    window: usize,
    incoming: Option<mpsc::Receiver<Batch>>,
    source: Option<JoinHandle<()>>,
    queue: VecDeque<Batch>,
    /// Row -> stream position of its latest lookup still in the window.
    last_seen: FxHashMap<u64, u64>,
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
        Prefetcher { window, incoming: Some(incoming), source: Some(source), queue: VecDeque::new(), last_seen: FxHashMap::default() }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// The next batch to serve, with its rows' store reads already under way.
    pub fn next(&mut self, table: &mut TieredTable) -> Result<Option<Batch>, EngineError> {
        while self.queue.len() <= self.window {
            let Some(incoming) = self.incoming.as_ref() else { break };
            match incoming.recv() {
                Ok(mut batch) => {
                    self.annotate_into(&mut batch);
                    if self.window > 0 {
                        table.prefetch(&batch)?;
                    }
                    self.queue.push_back(batch);
                }
                Err(_) => {
                    self.incoming = None;
                    self.join_source()?;
                }
            }
        }
        let Some(batch) = self.queue.pop_front() else { return Ok(None) };
        for (i, &row) in batch.ids.iter().enumerate() {
            if self.last_seen.get(&row) == Some(&(batch.start + i as u64)) {
                self.last_seen.remove(&row);
            }
        }
        Ok(Some(batch))
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

    /// Fills next-access times: of earlier batches in the window, and within `batch`.
    fn annotate_into(&mut self, batch: &mut Batch) {
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
