//! Read-ahead staging and the write queue of the tiered table ([`Staging`]): the rows
//! on their way between the store and the memory tiers. Reads of planned batches go
//! out ahead (and are topped up), the rows a batch needs from the store are staged
//! before it is placed, and dirty rows are queued and sent in one write per step, with
//! the bookkeeping that keeps a read from handing out a row older than a write.

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use super::tier::MemoryTiers;
use crate::engine::batch::Batch;
use crate::engine::stats::EngineStats;
use crate::engine::storage::{BackingStore, PendingRead, StagedRows, StorageService};
use crate::engine::{EngineError, RowLayout};

/// Rows of one read-ahead command: a few milliseconds of random reads, so that a read
/// the consumer waits for (rows that left memory after their read-ahead was planned)
/// never waits long behind the read-ahead of later batches.
const READ_AHEAD_PIECE_ROWS: usize = 512;

/// The read-ahead of one future batch: the reads fetching its rows that were in no
/// memory tier, each with the write sequence number it was sent after, and its
/// distinct rows until it has been topped up.
struct Planned {
    reads: Vec<(PendingRead, u32)>,
    to_top_up: Option<Vec<u64>>,
}

/// The rows on their way between the store and the memory tiers: the read-ahead of
/// batches not yet looked up, the rows staged for the batch being placed, and the
/// dirty rows queued for the store, with the bookkeeping that keeps a read from
/// handing out a row older than a write.
pub(super) struct Staging {
    storage: StorageService,
    /// `f32`s per row.
    floats: usize,
    /// Read-ahead for batches not yet looked up, by batch start position.
    pending: FxHashMap<u64, Planned>,
    /// Rows some pending read-ahead is fetching.
    in_flight: FxHashSet<u64>,
    /// Rows read from the store for the batch being placed: row -> offset in `staged`.
    staged_index: FxHashMap<u64, usize>,
    staged: StagedRows,
    /// Every row of the batch being placed, listed by [`Staging::store_rows`] (for
    /// [`Staging::keep_victim`]).
    batch_rows: FxHashSet<u64>,
    /// Sequence number of the write command that last carried each row to the store
    /// (0 = never), to reject read-ahead data that a later write made stale.
    written_at: Vec<u32>,
    /// Write commands sent to the store so far.
    write_seq: u32,
    /// Read-ahead sent before this write sequence number is stale for every row
    /// (another writer may have changed any of them).
    all_written_at: u32,
    /// Whether a write command went out after the last flush's sync.
    written_since_sync: bool,
    /// Dirty rows queued for the store, written in one batch per step.
    write_rows: Vec<u64>,
    write_data: Vec<f32>,
    /// Row -> its newest copy's place in `write_rows`, until they are sent.
    queued: FxHashMap<u64, usize>,
}

impl Staging {
    pub(super) fn new(storage: StorageService, layout: RowLayout, rows: u64) -> Staging {
        Staging {
            storage,
            floats: layout.words(),
            pending: FxHashMap::default(),
            in_flight: Default::default(),
            staged_index: FxHashMap::default(),
            staged: StagedRows::default(),
            batch_rows: Default::default(),
            written_at: vec![0; rows as usize],
            write_seq: 0,
            all_written_at: 0,
            written_since_sync: false,
            write_rows: Vec::new(),
            write_data: Vec::new(),
            queued: FxHashMap::default(),
        }
    }

    /// Starts reading, in the background, the rows of a future `batch` that are in no
    /// memory tier now.
    pub(super) fn read_ahead(&mut self, batch: &Batch, tiers: &MemoryTiers, stats: &mut EngineStats) -> Result<(), EngineError> {
        // Rows already being read for an earlier batch in the window are left out: that
        // batch places them before this one is served.
        let unique = batch.unique_rows();
        let missing = self.unread_store_rows(&unique, tiers);
        stats.prefetched_rows += missing.len() as u64;
        // In pieces, so that a read the consumer waits for queues behind one piece at most.
        let reads = missing
            .chunks(READ_AHEAD_PIECE_ROWS)
            .map(|piece| Ok((self.storage.read_ahead(piece.to_vec())?, self.write_seq)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        self.pending.insert(batch.start, Planned { reads, to_top_up: Some(unique) });
        Ok(())
    }

    /// Tops up the read-ahead of the next planned batch after `served_start`: its rows
    /// that were in a memory tier when it was planned but have left since are read now,
    /// while the batch just looked up is computed, instead of late at its own lookup.
    pub(super) fn top_up_next(&mut self, served_start: u64, tiers: &MemoryTiers, stats: &mut EngineStats) -> Result<(), EngineError> {
        let Some(next) = self.pending.keys().copied().filter(|&start| start > served_start).min() else { return Ok(()) };
        let Some(unique) = self.pending.get_mut(&next).and_then(|planned| planned.to_top_up.take()) else { return Ok(()) };
        let missing = self.unread_store_rows(&unique, tiers);
        stats.topped_up_rows += missing.len() as u64;
        if !missing.is_empty() {
            let read = self.storage.read(missing)?;
            if let Some(planned) = self.pending.get_mut(&next) {
                planned.reads.push((read, self.write_seq));
            }
        }
        Ok(())
    }

    /// Drops the read-ahead of the batch at `start`, which will not be looked up: waits
    /// for its reads (so no row stays marked as being read) and forgets them.
    pub(super) fn cancel_read_ahead(&mut self, start: u64) -> Result<(), EngineError> {
        let Some(planned) = self.pending.remove(&start) else { return Ok(()) };
        for (read, _) in planned.reads {
            let (staged, _) = read.wait()?;
            for row in &staged.rows {
                self.in_flight.remove(row);
            }
        }
        Ok(())
    }

    /// Those of `rows` that are in no memory tier and not being read for an earlier
    /// batch, marked as being read now.
    fn unread_store_rows(&mut self, rows: &[u64], tiers: &MemoryTiers) -> Vec<u64> {
        let missing: Vec<u64> = rows.iter().copied().filter(|&r| !tiers.in_memory(r) && !self.in_flight.contains(&r)).collect();
        self.in_flight.extend(missing.iter().copied());
        missing
    }

    /// Stages the store rows `batch` needs: the read-ahead if there was one, else a
    /// read now. Time spent waiting is consumer stall.
    pub(super) fn stage(&mut self, batch: &Batch, tiers: &MemoryTiers, stats: &mut EngineStats) -> Result<(), EngineError> {
        let store_rows = self.store_rows(batch, tiers);
        self.staged_index.clear();
        self.staged.rows.clear();
        self.staged.data.clear();
        let reads = match self.pending.remove(&batch.start) {
            Some(planned) => planned.reads,
            // Every row is in a memory tier and nothing was read ahead: no round trip
            // to the storage thread.
            None if store_rows.is_empty() => return Ok(()),
            None => vec![(self.storage.read(store_rows.clone())?, self.write_seq)],
        };
        for (read, sent_after) in reads {
            let (staged, waited) = read.wait()?;
            for row in &staged.rows {
                self.in_flight.remove(row);
            }
            self.take_staged(staged, waited, sent_after, stats);
        }
        // Rows that left the memory tiers after the read-ahead was planned (or whose
        // staged copy went stale): one more batched read, not one read per row.
        self.stage_unstaged(store_rows, tiers, stats)
    }

    /// Adds the rows of a finished read (sent after write command `sent_after`) to the
    /// staged rows; the wait is stall. A row carried to the store by a write sent after
    /// the read may have been read before the write landed: that copy is dropped (the
    /// row is read again if needed).
    fn take_staged(&mut self, staged: StagedRows, waited: Duration, sent_after: u32, stats: &mut EngineStats) {
        stats.stall_seconds += waited.as_secs_f64();
        stats.store_read_seconds += staged.read_seconds;
        stats.bytes_store_to_host += (staged.data.len() * 4) as u64;
        let base = self.staged.data.len();
        for (i, &row) in staged.rows.iter().enumerate() {
            if self.written_at[row as usize] <= sent_after && self.all_written_at <= sent_after {
                self.staged_index.insert(row, base + i * self.floats);
            } else {
                stats.stale_prefetches += 1;
            }
        }
        self.staged.rows.extend_from_slice(&staged.rows);
        self.staged.data.extend_from_slice(&staged.data);
    }

    /// Reads those of `rows` that are in no memory tier and not staged from the store
    /// now, in one batch, into the staged rows.
    pub(super) fn stage_unstaged(
        &mut self,
        rows: impl IntoIterator<Item = u64>,
        tiers: &MemoryTiers,
        stats: &mut EngineStats,
    ) -> Result<(), EngineError> {
        let mut late: Vec<u64> = rows.into_iter().filter(|r| !tiers.in_memory(*r) && !self.staged_index.contains_key(r)).collect();
        if late.is_empty() {
            return Ok(());
        }
        late.sort_unstable();
        late.dedup();
        self.flush_writes()?;
        stats.late_store_reads += late.len() as u64;
        let (more, waited) = self.storage.read(late)?.wait()?;
        stats.late_read_stall_seconds += waited.as_secs_f64();
        self.take_staged(more, waited, self.write_seq, stats);
        Ok(())
    }

    /// The distinct rows of `batch` that are in no memory tier, in order of first
    /// appearance; every distinct row of `batch` goes into `batch_rows`.
    fn store_rows(&mut self, batch: &Batch, tiers: &MemoryTiers) -> Vec<u64> {
        self.batch_rows.clear();
        let mut rows = Vec::new();
        for (i, &row) in batch.ids.iter().enumerate() {
            if let Some(&ahead) = batch.ids.get(i + super::SLOTS_AHEAD) {
                tiers.prefetch_slots(ahead);
            }
            // Nothing moves between tiers here: a row's first lookup decides.
            if self.batch_rows.insert(row) && !tiers.in_memory(row) {
                rows.push(row);
            }
        }
        rows
    }

    /// Whether `row`, a clean row leaving the memory tiers, belongs to the batch being
    /// placed, which may look it up or update it again ([`Staging::keep_victim`]).
    pub(super) fn wants_victim(&self, row: u64) -> bool {
        self.batch_rows.contains(&row) && !self.staged_index.contains_key(&row)
    }

    /// Keeps `data`, the values of clean row `row` (as the store holds it) that the
    /// batch's own placement pushed out of the memory tiers, staged for the rest of the
    /// batch's step: a later lookup or update of it reads no row from the store twice.
    pub(super) fn keep_victim(&mut self, row: u64, data: &[f32], stats: &mut EngineStats) {
        self.staged_index.insert(row, self.staged.data.len());
        self.staged.rows.push(row);
        self.staged.data.extend_from_slice(data);
        stats.kept_victims += 1;
    }

    pub(super) fn is_staged(&self, row: u64) -> bool {
        self.staged_index.contains_key(&row)
    }

    /// Reads row `row` from the store into `out`: the staged copy when it is still
    /// valid, the copy queued for the store when this step wrote it down (a row its own
    /// batch pushed out), else a synchronous read (the slow path).
    pub(super) fn read_row(&mut self, row: u64, out: &mut [f32], stats: &mut EngineStats) -> Result<(), EngineError> {
        if let Some(&at) = self.staged_index.get(&row) {
            out.copy_from_slice(&self.staged.data[at..at + out.len()]);
            return Ok(());
        }
        if let Some(&i) = self.queued.get(&row) {
            out.copy_from_slice(&self.write_data[i * out.len()..(i + 1) * out.len()]);
            stats.queued_reads += 1;
            return Ok(());
        }
        self.flush_writes()?;
        let start = Instant::now();
        let (staged, _) = self.storage.read(vec![row])?.wait()?;
        let waited = start.elapsed().as_secs_f64();
        stats.stall_seconds += waited;
        stats.sync_read_stall_seconds += waited;
        stats.sync_store_reads += 1;
        stats.bytes_store_to_host += (out.len() * 4) as u64;
        out.copy_from_slice(&staged.data);
        Ok(())
    }

    /// Another writer changed `rows` in the store: read-ahead copies of them fetched
    /// before now may be older and are dropped when they arrive (as after a write of
    /// this table's own), and staged copies are dropped at once.
    pub(super) fn changed_in_store(&mut self, rows: &[u64]) {
        self.write_seq += 1;
        for &row in rows {
            self.written_at[row as usize] = self.write_seq;
            self.staged_index.remove(&row);
        }
    }

    /// [`Staging::changed_in_store`] for every row of the table.
    pub(super) fn all_changed_in_store(&mut self) {
        self.write_seq += 1;
        self.all_written_at = self.write_seq;
        self.staged_index.clear();
    }

    /// Queues a row for the store.
    pub(super) fn write_down(&mut self, row: u64, data: &[f32], stats: &mut EngineStats) {
        self.staged_index.remove(&row);
        self.written_at[row as usize] = self.write_seq + 1; // the command that carries it
        self.queued.insert(row, self.write_rows.len());
        self.write_rows.push(row);
        self.write_data.extend_from_slice(data);
        stats.store_writes += 1;
        stats.bytes_host_to_store += (data.len() * 4) as u64;
    }

    /// Sends the queued rows to the store in one write command.
    pub(super) fn flush_writes(&mut self) -> Result<(), EngineError> {
        if self.write_rows.is_empty() {
            return Ok(());
        }
        self.write_seq += 1;
        self.written_since_sync = true;
        self.queued.clear();
        let rows = std::mem::take(&mut self.write_rows);
        let data = std::mem::take(&mut self.write_data);
        self.storage.write(rows, data)
    }

    pub(super) fn storage(&self) -> &StorageService {
        &self.storage
    }

    /// Sends the queued rows and makes every write durable.
    pub(super) fn sync(&mut self) -> Result<(), EngineError> {
        self.flush_writes()?;
        self.storage.sync()?;
        self.written_since_sync = false;
        Ok(())
    }

    /// Whether rows were written (or queued) since the last [`Staging::sync`].
    pub(super) fn unsynced_writes(&self) -> bool {
        self.written_since_sync || !self.write_rows.is_empty()
    }

    /// Drops the read-ahead, stops the I/O thread and hands the store back.
    pub(super) fn into_store(mut self) -> Result<Box<dyn BackingStore>, EngineError> {
        self.pending.clear();
        self.storage.into_store()
    }
}
