//! The tiered table: one embedding table (all tables of a model, under one global row
//! index) spread over a device tier, a host tier and the backing store, with the
//! policies of `strata-policies` deciding residency. Lookups pool embedding bags;
//! gradient updates run in whichever tier holds each row; dirty rows are written down
//! on eviction and on `flush`.
//!
//! Transparency is the law here: where a row lives never changes a result. Every
//! lookup reads a row's newest copy (device, else host, else the store), bags are
//! pooled in bag order by one function, and updates go through `Optimizer::apply_row`.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use strata_policies::{EvictionPolicy, PolicyConfig, Request};

use super::batch::Batch;
use super::device::{open_device, DeviceKind};
use super::host::HostSlab;
use super::pool::{pool_bags, Pooling, RowGradients};
use super::stats::{EngineStats, TierStats};
use super::storage::{BackingStore, PendingRead, StagedRows, StorageService};
use super::{EngineError, Optimizer, RowLayout, RowSlab};

const NIL: u32 = u32::MAX;

/// The read-ahead of one future batch: the reads fetching its rows that were in no
/// memory tier, each with the write sequence number it was sent after, and its
/// distinct rows until it has been topped up.
struct Planned {
    reads: Vec<(PendingRead, u32)>,
    to_top_up: Option<Vec<u64>>,
}

/// How the device and host tiers relate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hierarchy {
    /// A row promoted to the device keeps its host copy (when the host admits it);
    /// device evictions write dirty rows into that copy.
    #[default]
    Inclusive,
    /// A row lives in at most one of device and host: promotion moves it up, eviction
    /// from the device demotes it to the host.
    Exclusive,
}

/// One tier's size and policy. The size is given as `rows`, or as a byte budget
/// (`bytes`: as many rows as fit at the slab's 64-byte-aligned row stride); 0 = no
/// such tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    #[serde(default)]
    pub rows: usize,
    #[serde(default)]
    pub bytes: u64,
    pub policy: PolicyConfig,
}

impl TierConfig {
    /// A tier of `rows` rows.
    pub fn rows(rows: usize, policy: PolicyConfig) -> Self {
        TierConfig { rows, bytes: 0, policy }
    }

    /// A tier of as many rows as fit in `bytes`.
    pub fn bytes(bytes: u64, policy: PolicyConfig) -> Self {
        TierConfig { rows: 0, bytes, policy }
    }

    /// The tier's capacity in rows for rows of `layout`.
    pub fn capacity(&self, tier: &str, layout: RowLayout) -> Result<usize, EngineError> {
        match (self.rows, self.bytes) {
            (rows, 0) => Ok(rows),
            (0, bytes) => {
                let stride = HostSlab::stride_bytes(layout) as u64;
                match bytes / stride {
                    0 => Err(EngineError::Config(format!("{tier}: {bytes} bytes hold no row of {stride} bytes"))),
                    rows => Ok(rows as usize),
                }
            }
            _ => Err(EngineError::Config(format!("{tier}: give rows or bytes, not both"))),
        }
    }
}

/// The shape and behaviour of a tiered table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub device: TierConfig,
    #[serde(default)]
    pub device_backend: DeviceKind,
    pub host: TierConfig,
    #[serde(default)]
    pub hierarchy: Hierarchy,
    #[serde(default)]
    pub optimizer: Optimizer,
    #[serde(default)]
    pub pooling: Pooling,
    /// Dirty rows the storage thread holds before writing them down in page order
    /// (host memory beyond the host tier; 0 = each step's write-backs go straight down).
    #[serde(default)]
    pub write_buffer_rows: usize,
}

impl TableConfig {
    /// Every one of `rows` rows in the host tier (LRU), no device tier: the
    /// all-in-memory set-up the tiered ones are compared with.
    pub fn host_only(rows: u64, optimizer: Optimizer, pooling: Pooling) -> Self {
        TableConfig {
            device: TierConfig::rows(0, PolicyConfig::Lru),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(rows as usize, PolicyConfig::Lru),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling,
            write_buffer_rows: 0,
        }
    }
}

/// Distinct rows whose gradients are summed, then applied, together (as many as
/// [`Optimizer::gradient_sums`] interleaves).
const UPDATE_GROUP: usize = 8;

/// Lookups ahead whose row -> slot entries are fetched early.
const SLOTS_AHEAD: usize = 16;

/// Where a row's newest copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Device(u32),
    Host(u32),
    Store,
}

/// A memory tier: a slab of slots, the policy that fills it, and the row <-> slot maps.
struct Tier {
    slab: Box<dyn RowSlab>,
    policy: Box<dyn EvictionPolicy>,
    slot_of: Vec<u32>,
    row_in: Vec<u64>,
    dirty: Vec<bool>,
    free: Vec<u32>,
    used: u32,
    /// The slab is in host memory: its rows are pooled and updated in place.
    in_host_memory: bool,
    stats: TierStats,
}

impl Tier {
    fn new(slab: Box<dyn RowSlab>, policy: &PolicyConfig, rows: u64) -> Result<Tier, EngineError> {
        let slots = slab.slots();
        let policy = policy.build(slots).map_err(|e| EngineError::Config(e.to_string()))?;
        let backend = slab.backend();
        let in_host_memory = slab.host_row(0).is_some();
        Ok(Tier {
            slab,
            policy,
            slot_of: vec![NIL; rows as usize],
            row_in: vec![0; slots],
            dirty: vec![false; slots],
            free: Vec::new(),
            used: 0,
            in_host_memory,
            stats: TierStats { backend, capacity_rows: slots as u64, ..TierStats::default() },
        })
    }

    fn slot(&self, row: u64) -> Option<u32> {
        let s = self.slot_of[row as usize];
        (s != NIL).then_some(s)
    }

    fn take_slot(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.used += 1;
            self.used - 1
        })
    }

    fn attach(&mut self, row: u64, slot: u32, dirty: bool) {
        self.slot_of[row as usize] = slot;
        self.row_in[slot as usize] = row;
        self.dirty[slot as usize] = dirty;
    }

    /// Forgets `row` (the policy already has); returns its slot and dirty bit.
    fn detach(&mut self, row: u64) -> (u32, bool) {
        let slot = self.slot_of[row as usize];
        debug_assert_ne!(slot, NIL, "detaching a row that is not resident");
        self.slot_of[row as usize] = NIL;
        self.free.push(slot);
        (slot, self.dirty[slot as usize])
    }

    /// `(row, slot)` of every resident dirty row.
    fn dirty_rows(&self) -> Vec<(u64, u32)> {
        (0..self.used)
            .filter(|&s| self.dirty[s as usize] && self.slot(self.row_in[s as usize]) == Some(s))
            .map(|s| (self.row_in[s as usize], s))
            .collect()
    }

    /// Copies a dirty row out for writing down and marks it clean.
    fn clean(&mut self, slot: u32, out: &mut [f32]) -> Result<(), EngineError> {
        self.load_row(slot, out)?;
        self.dirty[slot as usize] = false;
        self.stats.write_backs += 1;
        Ok(())
    }

    fn load_row(&self, slot: u32, out: &mut [f32]) -> Result<(), EngineError> {
        Ok(self.slab.load(&[slot], out)?)
    }

    fn store_row(&mut self, slot: u32, row: &[f32]) -> Result<(), EngineError> {
        Ok(self.slab.store(&[slot], row)?)
    }
}

/// An embedding table over a device tier, a host tier and a backing store.
pub struct TieredTable {
    layout: RowLayout,
    rows: u64,
    hierarchy: Hierarchy,
    optimizer: Optimizer,
    pooling: Pooling,
    device: Option<Tier>,
    host: Option<Tier>,
    storage: StorageService,
    /// Read-ahead for batches not yet looked up, by batch start position.
    pending: FxHashMap<u64, Planned>,
    /// Rows some pending read-ahead is fetching.
    in_flight: rustc_hash::FxHashSet<u64>,
    /// Rows read from the store for the batch being placed: row -> offset in `staged`.
    staged_index: FxHashMap<u64, usize>,
    staged: StagedRows,
    /// Sequence number of the write command that last carried each row to the store
    /// (0 = never), to reject read-ahead data that a later write made stale.
    written_at: Vec<u32>,
    /// Write commands sent to the store so far.
    write_seq: u32,
    /// Whether a write command went out after the last flush's sync.
    written_since_sync: bool,
    /// Dirty rows queued for the store, written in one batch per step.
    write_rows: Vec<u64>,
    write_data: Vec<f32>,
    /// Row -> its newest copy's place in `write_rows`, until they are sent.
    queued: FxHashMap<u64, usize>,
    /// Row buffers for moving rows between tiers.
    spare_rows: Vec<Vec<f32>>,
    /// Per-step buffers, kept so that a step allocates nothing once they have grown:
    /// the batch's rows that CPU code cannot read in place (in a CUDA slab, or only in
    /// the store), copied out for pooling (row -> offset in `copies`); the row of every
    /// lookup for pooling (empty between lookups: see [`reuse_refs`]); the gradient
    /// grouping and one group's summed gradients; the rows and summed gradients of
    /// CUDA-slab rows, updated in one call.
    copied: FxHashMap<u64, usize>,
    /// Rows already listed by [`TieredTable::store_rows`].
    seen_rows: rustc_hash::FxHashSet<u64>,
    copies: Vec<f32>,
    row_refs: Vec<&'static [f32]>,
    gradients: RowGradients,
    group_grads: Vec<f32>,
    device_slots: Vec<u32>,
    device_grads: Vec<f32>,
    stats: EngineStats,
}

/// An empty vector of row references that reuses `refs`' allocation (the references
/// themselves cannot outlive the step that borrowed the rows; the buffer can).
fn reuse_refs<'a>(mut refs: Vec<&[f32]>) -> Vec<&'a [f32]> {
    refs.clear();
    // Same size and alignment: the standard library collects in place, keeping the
    // allocation.
    refs.into_iter().map(|_| -> &'a [f32] { unreachable!("the vector is empty") }).collect()
}

impl TieredTable {
    /// Builds the tiers around `store` (which holds every row).
    pub fn new(config: &TableConfig, store: Box<dyn BackingStore>) -> Result<TieredTable, EngineError> {
        let layout = store.layout();
        let rows = store.rows();
        if layout.state != config.optimizer.state_floats() {
            return Err(EngineError::Config(format!(
                "{}: rows carry {} optimizer values, the configured optimizer needs {}",
                store.describe(),
                layout.state,
                config.optimizer.state_floats()
            )));
        }
        let device = match config.device.capacity("device", layout)? {
            0 => None,
            n => Some(Tier::new(open_device(config.device_backend, n, layout)?, &config.device.policy, rows)?),
        };
        let host = match config.host.capacity("host", layout)? {
            0 => None,
            n => Some(Tier::new(Box::new(HostSlab::new(n, layout)?), &config.host.policy, rows)?),
        };
        let storage = StorageService::start(store, config.write_buffer_rows);
        let stats = EngineStats {
            storage: storage.describe().to_string(),
            device: device.as_ref().map(|t| t.stats.clone()),
            host: host.as_ref().map(|t| t.stats.clone()),
            ..EngineStats::default()
        };
        Ok(TieredTable {
            layout,
            rows,
            hierarchy: config.hierarchy,
            optimizer: config.optimizer,
            pooling: config.pooling,
            device,
            host,
            storage,
            pending: FxHashMap::default(),
            in_flight: Default::default(),
            staged_index: FxHashMap::default(),
            staged: StagedRows::default(),
            written_at: vec![0; rows as usize],
            write_seq: 0,
            written_since_sync: false,
            write_rows: Vec::new(),
            write_data: Vec::new(),
            queued: FxHashMap::default(),
            spare_rows: Vec::new(),
            copied: FxHashMap::default(),
            seen_rows: Default::default(),
            copies: Vec::new(),
            row_refs: Vec::new(),
            gradients: RowGradients::default(),
            group_grads: Vec::new(),
            device_slots: Vec::new(),
            device_grads: Vec::new(),
            stats,
        })
    }

    pub fn layout(&self) -> RowLayout {
        self.layout
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// A buffer for one whole row (recycled: row moves are on the hot path).
    fn row_buffer(&mut self) -> Vec<f32> {
        self.spare_rows.pop().unwrap_or_else(|| vec![0.0; self.layout.floats()])
    }

    fn recycle(&mut self, buffer: Vec<f32>) {
        self.spare_rows.push(buffer);
    }

    /// Asks the CPU for `row`'s entries in the row -> slot maps.
    #[inline(always)]
    fn prefetch_slots(&self, row: u64) {
        for tier in [self.device.as_ref(), self.host.as_ref()].into_iter().flatten() {
            strata_policies::prefetch_element(&tier.slot_of, row as usize);
        }
    }

    /// Asks the CPU for `row` (values and state) where it is in host memory.
    fn prefetch_row(&self, row: u64) {
        let values = match self.place(row) {
            Place::Device(slot) => self.device.as_ref().and_then(|d| d.slab.host_row(slot)),
            Place::Host(slot) => self.host.as_ref().and_then(|h| h.slab.host_row(slot)),
            Place::Store => None,
        };
        if let Some(values) = values {
            super::pool::prefetch(values);
        }
    }

    fn place(&self, row: u64) -> Place {
        if let Some(s) = self.device.as_ref().and_then(|t| t.slot(row)) {
            return Place::Device(s);
        }
        if let Some(s) = self.host.as_ref().and_then(|t| t.slot(row)) {
            return Place::Host(s);
        }
        Place::Store
    }

    fn check_rows(&self, batch: &Batch) -> Result<(), EngineError> {
        batch.validate()?;
        match batch.ids.iter().find(|&&r| r >= self.rows) {
            Some(&row) => Err(EngineError::RowOutOfRange { row, rows: self.rows }),
            None => Ok(()),
        }
    }

    /// Starts reading, in the background, the rows of a future `batch` that are in no
    /// memory tier now. [`TieredTable::lookup`] of that batch picks them up.
    pub fn prefetch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        self.check_rows(batch)?;
        // Rows already being read for an earlier batch in the window are left out: that
        // batch places them before this one is served.
        let unique = batch.unique_rows();
        let missing = self.unread_store_rows(&unique);
        self.stats.prefetched_rows += missing.len() as u64;
        let read = self.storage.read(missing)?;
        self.pending.insert(batch.start, Planned { reads: vec![(read, self.write_seq)], to_top_up: Some(unique) });
        Ok(())
    }

    /// Tops up the read-ahead of the next planned batch after `served_start`: its rows
    /// that were in a memory tier when it was planned but have left since are read now,
    /// while the batch just looked up is computed, instead of late at its own lookup.
    fn top_up_next(&mut self, served_start: u64) -> Result<(), EngineError> {
        let Some(next) = self.pending.keys().copied().filter(|&start| start > served_start).min() else { return Ok(()) };
        let Some(unique) = self.pending.get_mut(&next).and_then(|planned| planned.to_top_up.take()) else { return Ok(()) };
        let missing = self.unread_store_rows(&unique);
        self.stats.topped_up_rows += missing.len() as u64;
        if !missing.is_empty() {
            let read = self.storage.read(missing)?;
            self.pending.get_mut(&next).expect("planned above").reads.push((read, self.write_seq));
        }
        Ok(())
    }

    /// Those of `rows` that are in no memory tier and not being read for an earlier
    /// batch, marked as being read now.
    fn unread_store_rows(&mut self, rows: &[u64]) -> Vec<u64> {
        let missing: Vec<u64> = rows.iter().copied().filter(|&r| self.place(r) == Place::Store && !self.in_flight.contains(&r)).collect();
        self.in_flight.extend(missing.iter().copied());
        missing
    }

    /// Stages the store rows `batch` needs: the read-ahead if there was one, else a
    /// read now. Time spent waiting is consumer stall.
    fn stage(&mut self, batch: &Batch) -> Result<(), EngineError> {
        let store_rows = self.store_rows(batch);
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
            self.take_staged(staged, waited, sent_after);
        }
        // Rows that left the memory tiers after the read-ahead was planned (or whose
        // staged copy went stale): one more batched read, not one read per row.
        self.stage_unstaged(store_rows)
    }

    /// Adds the rows of a finished read (sent after write command `sent_after`) to the
    /// staged rows; the wait is stall. A row carried to the store by a write sent after
    /// the read may have been read before the write landed: that copy is dropped (the
    /// row is read again if needed).
    fn take_staged(&mut self, staged: StagedRows, waited: Duration, sent_after: u32) {
        self.stats.stall_seconds += waited.as_secs_f64();
        self.stats.store_read_seconds += staged.read_seconds;
        self.stats.bytes_store_to_host += (staged.data.len() * 4) as u64;
        let floats = self.layout.floats();
        let base = self.staged.data.len();
        for (i, &row) in staged.rows.iter().enumerate() {
            if self.written_at[row as usize] <= sent_after {
                self.staged_index.insert(row, base + i * floats);
            } else {
                self.stats.stale_prefetches += 1;
            }
        }
        self.staged.rows.extend_from_slice(&staged.rows);
        self.staged.data.extend_from_slice(&staged.data);
    }

    /// Reads those of `rows` that are in no memory tier and not staged from the store
    /// now, in one batch, into the staged rows.
    fn stage_unstaged(&mut self, rows: impl IntoIterator<Item = u64>) -> Result<(), EngineError> {
        let mut late: Vec<u64> =
            rows.into_iter().filter(|r| self.place(*r) == Place::Store && !self.staged_index.contains_key(r)).collect();
        if late.is_empty() {
            return Ok(());
        }
        late.sort_unstable();
        late.dedup();
        self.flush_writes()?;
        self.stats.late_store_reads += late.len() as u64;
        let (more, waited) = self.storage.read(late)?.wait()?;
        self.take_staged(more, waited, self.write_seq);
        Ok(())
    }

    /// The distinct rows of `batch` that are in no memory tier, in order of first
    /// appearance.
    fn store_rows(&mut self, batch: &Batch) -> Vec<u64> {
        let mut seen = std::mem::take(&mut self.seen_rows);
        seen.clear();
        let mut rows = Vec::new();
        for (i, &row) in batch.ids.iter().enumerate() {
            if let Some(&ahead) = batch.ids.get(i + SLOTS_AHEAD) {
                self.prefetch_slots(ahead);
            }
            if self.place(row) == Place::Store && seen.insert(row) {
                rows.push(row);
            }
        }
        self.seen_rows = seen;
        rows
    }

    /// Reads row `row` from the store into `out`: the staged copy when it is still
    /// valid, the copy queued for the store when this step wrote it down (a row its own
    /// batch pushed out), else a synchronous read (the slow path).
    fn read_from_store(&mut self, row: u64, out: &mut [f32]) -> Result<(), EngineError> {
        if let Some(&at) = self.staged_index.get(&row) {
            out.copy_from_slice(&self.staged.data[at..at + out.len()]);
            return Ok(());
        }
        if let Some(&i) = self.queued.get(&row) {
            out.copy_from_slice(&self.write_data[i * out.len()..(i + 1) * out.len()]);
            self.stats.queued_reads += 1;
            return Ok(());
        }
        self.flush_writes()?;
        let start = Instant::now();
        let (staged, _) = self.storage.read(vec![row])?.wait()?;
        self.stats.stall_seconds += start.elapsed().as_secs_f64();
        self.stats.sync_store_reads += 1;
        self.stats.bytes_store_to_host += (out.len() * 4) as u64;
        out.copy_from_slice(&staged.data);
        Ok(())
    }

    /// Queues a row for the store.
    fn write_down(&mut self, row: u64, data: &[f32]) {
        self.staged_index.remove(&row);
        self.written_at[row as usize] = self.write_seq + 1; // the command that carries it
        self.queued.insert(row, self.write_rows.len());
        self.write_rows.push(row);
        self.write_data.extend_from_slice(data);
        self.stats.store_writes += 1;
        self.stats.bytes_host_to_store += (data.len() * 4) as u64;
    }

    fn flush_writes(&mut self) -> Result<(), EngineError> {
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

    /// A row leaves the host (its policy evicted it).
    fn evict_from_host(&mut self, row: u64) -> Result<(), EngineError> {
        let host = self.host.as_mut().expect("host tier exists");
        let (slot, dirty) = host.detach(row);
        host.stats.evictions += 1;
        if dirty {
            host.stats.write_backs += 1;
            let mut data = self.row_buffer();
            self.host.as_ref().expect("host tier exists").load_row(slot, &mut data)?;
            self.write_down(row, &data);
            self.recycle(data);
        }
        Ok(())
    }

    /// Serves `req` from the host tier (the device missed or did not admit it): on a
    /// host miss the row is read from the store into a host slot if admitted.
    fn touch_host(&mut self, req: &Request) -> Result<(), EngineError> {
        let Some(host) = self.host.as_mut() else { return Ok(()) };
        let access = host.policy.access(req);
        host.stats.record(access.hit);
        // Even a hit may evict (W-TinyLFU rebalancing its segments).
        if let Some(victim) = access.evicted {
            self.evict_from_host(victim)?;
        }
        if access.inserted {
            let mut data = self.row_buffer();
            self.read_from_store(req.id, &mut data)?;
            let host = self.host.as_mut().expect("host tier exists");
            let slot = host.take_slot();
            host.store_row(slot, &data)?;
            host.attach(req.id, slot, false);
            host.stats.promotions += 1;
            self.recycle(data);
        }
        Ok(())
    }

    /// A row leaves the device: its newest data goes to the host copy (inclusive) or is
    /// demoted into the host (exclusive), or to the store.
    fn evict_from_device(&mut self, row: u64) -> Result<(), EngineError> {
        let device = self.device.as_mut().expect("device tier exists");
        let (slot, dirty) = device.detach(row);
        device.stats.evictions += 1;
        if !dirty && self.hierarchy == Hierarchy::Inclusive {
            return Ok(()); // the copy below is as new
        }
        let mut data = self.row_buffer();
        self.device.as_ref().expect("device tier exists").load_row(slot, &mut data)?;
        self.stats.bytes_device_to_host += (data.len() * 4) as u64;
        self.settle_device_victim(row, dirty, &data)?;
        self.recycle(data);
        Ok(())
    }

    fn settle_device_victim(&mut self, row: u64, dirty: bool, data: &[f32]) -> Result<(), EngineError> {
        match self.hierarchy {
            Hierarchy::Inclusive => {
                if !dirty {
                    return Ok(());
                }
                self.device.as_mut().expect("device").stats.write_backs += 1;
                match self.host.as_mut().and_then(|h| h.slot(row).map(|s| (h, s))) {
                    Some((host, slot)) => {
                        host.store_row(slot, data)?;
                        host.dirty[slot as usize] = true;
                    }
                    None => self.write_down(row, data),
                }
            }
            Hierarchy::Exclusive => {
                let time = self.stats.requests;
                let admitted = match self.host.as_mut() {
                    Some(host) => {
                        let access = host.policy.access(&Request::new(row, time));
                        debug_assert!(!access.hit, "exclusive: a device row is not in the host");
                        if let Some(victim) = access.evicted {
                            self.evict_from_host(victim)?;
                        }
                        access.inserted
                    }
                    None => false,
                };
                if admitted {
                    let host = self.host.as_mut().expect("host");
                    let slot = host.take_slot();
                    host.store_row(slot, data)?;
                    host.attach(row, slot, dirty);
                    host.stats.demotions_in += 1;
                } else if dirty {
                    self.device.as_mut().expect("device").stats.write_backs += 1;
                    self.write_down(row, data);
                }
            }
        }
        Ok(())
    }

    /// Runs one lookup through the policies, moving rows between tiers as they decide.
    fn touch(&mut self, req: &Request) -> Result<(), EngineError> {
        self.stats.requests += 1;
        let Some(device) = self.device.as_mut() else { return self.touch_host(req) };
        let access = device.policy.access(req);
        // A policy may count a row resident that never came in (static placement pins its
        // hot set when profiling ends): such a row comes in on its first lookup, a miss.
        let arrives = access.hit && device.slot(req.id).is_none();
        device.stats.record(access.hit && !arrives);
        if let Some(victim) = access.evicted {
            self.evict_from_device(victim)?;
        }
        if access.hit && !arrives {
            return Ok(());
        }
        if !access.inserted && !arrives {
            return self.touch_host(req);
        }
        // The row enters the device: take its data from the host or the store.
        let mut data = self.row_buffer();
        let dirty = match self.hierarchy {
            Hierarchy::Inclusive => {
                self.touch_host(req)?;
                match self.host.as_ref().and_then(|h| h.slot(req.id).map(|s| (h, s))) {
                    Some((host, slot)) => host.load_row(slot, &mut data)?,
                    None => self.read_from_store(req.id, &mut data)?,
                }
                false
            }
            Hierarchy::Exclusive => match self.host.as_mut().and_then(|h| h.slot(req.id).map(|_| h)) {
                Some(host) => {
                    host.stats.record(true);
                    host.policy.remove(req.id);
                    let (slot, dirty) = host.detach(req.id);
                    host.load_row(slot, &mut data)?;
                    dirty
                }
                None => {
                    if let Some(host) = self.host.as_mut() {
                        host.stats.record(false);
                    }
                    self.read_from_store(req.id, &mut data)?;
                    false
                }
            },
        };
        let device = self.device.as_mut().expect("device tier exists");
        let slot = device.take_slot();
        device.store_row(slot, &data)?;
        device.attach(req.id, slot, dirty);
        device.stats.promotions += 1;
        self.stats.bytes_host_to_device += (data.len() * 4) as u64;
        self.recycle(data);
        Ok(())
    }

    /// Places every lookup of `batch` (policies decide, rows move).
    fn place_batch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        self.check_rows(batch)?;
        self.stage(batch)?;
        const AHEAD: usize = 16;
        for (i, &id) in batch.ids.iter().enumerate() {
            // The policies' metadata for rows a little ahead: its cache misses dominate.
            if let Some(&ahead) = batch.ids.get(i + AHEAD) {
                for tier in [self.device.as_ref(), self.host.as_ref()].into_iter().flatten() {
                    tier.policy.prefetch(ahead);
                }
                self.prefetch_slots(ahead);
            }
            let req = Request { id, time: batch.start + i as u64, next_access: batch.next_access[i] };
            self.touch(&req)?;
        }
        self.flush_writes()
    }

    /// Pools the bags of `batch` into `out` (`bags * dim` values), placing its rows first.
    pub fn lookup(&mut self, batch: &Batch, out: &mut [f32]) -> Result<(), EngineError> {
        let start = Instant::now();
        let dim = self.layout.dim;
        if out.len() != batch.bags() * dim {
            return Err(EngineError::Shape(format!("lookup output holds {} values, the batch needs {}", out.len(), batch.bags() * dim)));
        }
        self.place_batch(batch)?;
        self.copied.clear();
        self.copies.clear();
        let spare = std::mem::take(&mut self.row_refs);
        let refs = match self.rows_in_place(batch, spare) {
            Ok(refs) => refs,
            Err(spare) => {
                // Some rows are where CPU code cannot read them: copy those out first.
                self.copy_out(batch)?;
                self.rows_in_place(batch, spare).unwrap_or_else(|_| unreachable!("every row is in host memory or copied"))
            }
        };
        pool_bags(&refs, &batch.bag_offsets, dim, self.pooling, out);
        self.row_refs = reuse_refs(refs);
        self.top_up_next(batch.start)?;
        self.stats.lookups += batch.ids.len() as u64;
        self.stats.batches += 1;
        self.stats.lookup_latency.record(start.elapsed());
        Ok(())
    }

    /// The values of every lookup of `batch`, in batch order, read in place (or from
    /// `copies`); the emptied buffer back if some row is neither.
    fn rows_in_place<'a>(&'a self, batch: &Batch, refs: Vec<&[f32]>) -> Result<Vec<&'a [f32]>, Vec<&'static [f32]>> {
        let dim = self.layout.dim;
        let mut refs = reuse_refs(refs);
        for (i, &row) in batch.ids.iter().enumerate() {
            if let Some(&ahead) = batch.ids.get(i + SLOTS_AHEAD) {
                self.prefetch_slots(ahead);
            }
            let values = match self.place(row) {
                Place::Device(slot) => match self.device.as_ref().filter(|d| d.in_host_memory) {
                    Some(device) => device.slab.host_row(slot),
                    None => self.copied.get(&row).map(|&at| &self.copies[at..]),
                },
                Place::Host(slot) => self.host.as_ref().and_then(|h| h.slab.host_row(slot)),
                Place::Store => self.copied.get(&row).map(|&at| &self.copies[at..]),
            };
            match values {
                Some(values) => refs.push(&values[..dim]),
                None => return Err(reuse_refs(refs)),
            }
        }
        Ok(refs)
    }

    /// Copies the values of `batch`'s rows that CPU code cannot read in place (in a CUDA
    /// slab, or only in the store after this batch's own evictions) into `copies`.
    fn copy_out(&mut self, batch: &Batch) -> Result<(), EngineError> {
        let dim = self.layout.dim;
        self.copied.clear();
        self.copies.clear();
        if let Some(device) = self.device.as_ref().filter(|d| !d.in_host_memory) {
            self.device_slots.clear();
            for &row in &batch.ids {
                if let Some(slot) = device.slot(row) {
                    if !self.copied.contains_key(&row) {
                        self.copied.insert(row, self.device_slots.len() * dim);
                        self.device_slots.push(slot);
                    }
                }
            }
            self.copies.resize(self.device_slots.len() * dim, 0.0);
            device.slab.gather(&self.device_slots, &mut self.copies)?;
            self.stats.bytes_device_to_host += (self.copies.len() * 4) as u64;
            self.device_slots.clear();
        }
        // Rows this batch's own placement pushed out of the memory tiers: one read.
        self.stage_unstaged(batch.ids.iter().copied())?;
        let mut data = self.row_buffer();
        for &row in &batch.ids {
            if self.place(row) == Place::Store && !self.copied.contains_key(&row) {
                self.read_from_store(row, &mut data)?;
                self.copied.insert(row, self.copies.len());
                self.copies.extend_from_slice(&data[..dim]);
            }
        }
        self.recycle(data);
        Ok(())
    }

    /// Applies the gradients of `batch`'s pooled outputs (`bag_grads`, `bags * dim`)
    /// to exactly the rows of the batch, in whichever tier holds each: one summed
    /// gradient per distinct row ([`RowGradients`]), applied in place as soon as its
    /// group of rows is summed for rows in host memory, in one call for rows in a CUDA
    /// slab.
    pub fn apply_gradients(&mut self, batch: &Batch, bag_grads: &[f32]) -> Result<(), EngineError> {
        let dim = self.layout.dim;
        if bag_grads.len() != batch.bags() * dim {
            return Err(EngineError::Shape(format!("gradients hold {} values, the batch needs {}", bag_grads.len(), batch.bags() * dim)));
        }
        self.check_rows(batch)?;
        self.device_slots.clear();
        self.device_grads.clear();
        let mut gradients = std::mem::take(&mut self.gradients);
        let mut grads = std::mem::take(&mut self.group_grads);
        grads.resize(UPDATE_GROUP * dim, 0.0);
        let applied =
            gradients.group(&batch.ids, &batch.bag_offsets).and_then(|()| self.apply_grouped(&gradients, batch, bag_grads, &mut grads));
        self.gradients = gradients;
        self.group_grads = grads;
        applied?;
        if !self.device_slots.is_empty() {
            let device = self.device.as_mut().expect("device");
            device.slab.apply(&self.device_slots, &self.device_grads, &self.optimizer)?;
        }
        self.flush_writes()
    }

    /// Sums and applies the gradients of `gradients`' rows, [`UPDATE_GROUP`] rows at a
    /// time (`grads` holds one group), fetching the slot-map entries two groups ahead
    /// and the rows one group ahead.
    fn apply_grouped(&mut self, gradients: &RowGradients, batch: &Batch, bag_grads: &[f32], grads: &mut [f32]) -> Result<(), EngineError> {
        let dim = self.layout.dim;
        let rows = gradients.rows();
        let mut sums = [0f32; UPDATE_GROUP];
        for (g, group) in rows.chunks(UPDATE_GROUP).enumerate() {
            let first = g * UPDATE_GROUP;
            for &row in rows.iter().skip(first + 2 * UPDATE_GROUP).take(UPDATE_GROUP) {
                self.prefetch_slots(row);
            }
            for &row in rows.iter().skip(first + UPDATE_GROUP).take(UPDATE_GROUP) {
                self.prefetch_row(row);
            }
            let grads = &mut grads[..group.len() * dim];
            gradients.sum(first..first + group.len(), &batch.bag_offsets, bag_grads, dim, self.pooling, grads);
            let sums = &mut sums[..group.len()];
            self.optimizer.gradient_sums(grads, dim, sums);
            for (k, ((&row, grad), &sum)) in group.iter().zip(grads.chunks_exact(dim)).zip(sums.iter()).enumerate() {
                self.apply_row_gradient(row, grad, sum, &rows[first + k..])?;
            }
        }
        Ok(())
    }

    /// Applies one row's summed gradient (and its [`Optimizer::gradient_sums`] value)
    /// where the row's newest copy is, and marks it dirty; rows in a CUDA slab are
    /// queued in `device_slots` / `device_grads`. `rest` (this row and those after it)
    /// lets the first row found only in the store bring all such rows in one read.
    fn apply_row_gradient(&mut self, row: u64, grad: &[f32], sum: f32, rest: &[u64]) -> Result<(), EngineError> {
        let optimizer = self.optimizer;
        match self.place(row) {
            Place::Device(slot) => {
                let device = self.device.as_mut().expect("device");
                device.dirty[slot as usize] = true;
                match device.slab.host_row_mut(slot) {
                    Some(values) => optimizer.apply_row_with_sum(values, grad, sum),
                    None => {
                        self.device_slots.push(slot);
                        self.device_grads.extend_from_slice(grad);
                    }
                }
            }
            Place::Host(slot) => {
                let host = self.host.as_mut().expect("host");
                host.dirty[slot as usize] = true;
                optimizer.apply_row_with_sum(host.slab.host_row_mut(slot).expect("host slab"), grad, sum);
            }
            Place::Store => {
                if !self.staged_index.contains_key(&row) {
                    self.stage_unstaged(rest.iter().copied())?;
                }
                let mut data = self.row_buffer();
                self.read_from_store(row, &mut data)?;
                optimizer.apply_row_with_sum(&mut data, grad, sum);
                self.write_down(row, &data);
                self.recycle(data);
            }
        }
        Ok(())
    }

    /// Writes every dirty row down to the store and makes it durable; rows stay cached.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        let mut data = self.row_buffer();
        // Device rows first: inclusive ones land in their host copy when there is one.
        for (row, slot) in self.device.as_ref().map_or_else(Vec::new, Tier::dirty_rows) {
            self.device.as_mut().expect("device").clean(slot, &mut data)?;
            match self.host.as_mut().and_then(|h| h.slot(row).map(|s| (h, s))) {
                Some((host, host_slot)) if self.hierarchy == Hierarchy::Inclusive => {
                    host.store_row(host_slot, &data)?;
                    host.dirty[host_slot as usize] = true;
                }
                _ => self.write_down(row, &data),
            }
        }
        for (row, slot) in self.host.as_ref().map_or_else(Vec::new, Tier::dirty_rows) {
            self.host.as_mut().expect("host").clean(slot, &mut data)?;
            self.write_down(row, &data);
        }
        self.recycle(data);
        self.flush_writes()?;
        self.storage.sync()?;
        self.written_since_sync = false;
        Ok(())
    }

    /// The file that holds the rows durably (`None` for an in-memory store, whose
    /// rows a checkpoint copies out with [`TieredTable::snapshot_into`]).
    pub fn store_file(&self) -> Option<&std::path::Path> {
        self.storage.file()
    }

    /// Makes what the store holds now committed checkpoint `checkpoint` (a table file
    /// starts a fresh undo journal): call after [`TieredTable::flush`], once the
    /// checkpoint is committed, with no write in between.
    pub fn protect_checkpoint(&mut self, checkpoint: u64) -> Result<(), EngineError> {
        if self.written_since_sync || !self.write_rows.is_empty() {
            return Err(EngineError::Config(format!(
                "{}: protecting checkpoint {checkpoint} needs a flush first (rows were written since the last one)",
                self.storage.describe()
            )));
        }
        self.storage.protect_checkpoint(checkpoint)
    }

    /// Flushes, then copies every row (values and state) into `target` and syncs it:
    /// the rows as training has left them, whichever tier holds them.
    pub fn snapshot_into(&mut self, target: &mut dyn BackingStore) -> Result<(), EngineError> {
        const CHUNK: u64 = 1 << 16;
        self.flush()?;
        for first in (0..self.rows).step_by(CHUNK as usize) {
            let rows: Vec<u64> = (first..(first + CHUNK).min(self.rows)).collect();
            let (staged, _) = self.storage.read(rows)?.wait()?;
            target.write_rows(&staged.rows, &staged.data)?;
        }
        target.sync()
    }

    /// Flushes, stops the I/O thread and hands the store back.
    pub fn close(mut self) -> Result<Box<dyn BackingStore>, EngineError> {
        self.flush()?;
        self.pending.clear();
        self.storage.into_store()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.device = self.device.as_ref().map(|t| t.stats.clone());
        stats.host = self.host.as_ref().map(|t| t.stats.clone());
        stats.write_buffer = self.storage.write_buffer_stats();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_sizes_in_rows_or_bytes() {
        let layout = RowLayout { dim: 128, state: 1 }; // 516 bytes -> 576-byte stride
        assert_eq!(TierConfig::rows(10, PolicyConfig::Lru).capacity("host", layout).unwrap(), 10);
        assert_eq!(TierConfig::bytes(576 * 1000 + 5, PolicyConfig::Lru).capacity("host", layout).unwrap(), 1000);
        let err = TierConfig::bytes(100, PolicyConfig::Lru).capacity("host", layout).unwrap_err().to_string();
        assert!(err.contains("host") && err.contains("100 bytes"), "{err}");
        let both = TierConfig { rows: 1, bytes: 1 << 20, policy: PolicyConfig::Lru };
        assert!(both.capacity("device", layout).is_err());
    }

    #[test]
    fn statically_pinned_rows_come_into_the_device_on_first_use() {
        use crate::engine::flat::FlatTable;
        use crate::engine::RowInit;
        let optimizer = Optimizer::Sgd { lr: 0.1 };
        let store = FlatTable::new(100, RowLayout::new(4, &optimizer), RowInit::Uniform { seed: 1, scale: 0.1 });
        let config = TableConfig {
            device: TierConfig::rows(5, PolicyConfig::from_name("static:20").unwrap()),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(0, PolicyConfig::Lru),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0,
        };
        let mut table = TieredTable::new(&config, Box::new(store)).unwrap();
        let hot = [3u64, 7, 11, 42, 99];
        let mut out = vec![0f32; hot.len() * 4];
        for step in 0..10u64 {
            // 5 lookups a batch: the profile (20 requests) ends after the 4th batch.
            table.lookup(&Batch::new(hot.to_vec(), (0..=hot.len()).collect(), step * 5), &mut out).unwrap();
        }
        let device = table.stats().device.unwrap();
        assert_eq!((device.promotions, device.misses, device.hits), (5, 20 + 5, 25), "{device:?}");
        let read = table.stats().bytes_store_to_host;
        table.lookup(&Batch::new(hot.to_vec(), (0..=hot.len()).collect(), 50), &mut out).unwrap();
        assert_eq!(table.stats().bytes_store_to_host, read, "pinned rows are served from the device");
    }

    #[test]
    fn table_config_from_toml_rejects_unknown_fields() {
        let text = "hierarchy = \"exclusive\"\n[device]\nrows = 100\npolicy = { kind = \"lru\" }\n[host]\nbytes = 1073741824\npolicy = { kind = \"s3fifo\" }\n";
        let config: TableConfig = toml::from_str(text).unwrap();
        assert_eq!(config.hierarchy, Hierarchy::Exclusive);
        assert_eq!(config.host.bytes, 1 << 30);
        assert!(toml::from_str::<TableConfig>(&format!("{text}colour = 1\n")).is_err());
    }
}
