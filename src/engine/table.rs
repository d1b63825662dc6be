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
use super::placement::{Hierarchy, Level, Move, Placement, Tiers, WriteBack};
use super::pool::{pool_bags, Pooling, RowGradients};
use super::stats::{EngineStats, TierStats};
use super::storage::{BackingStore, PendingRead, StagedRows, StorageService};
use super::{EngineError, Optimizer, RowLayout, RowSlab};

const NIL: u32 = u32::MAX;

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

/// A memory tier: a slab of slots and the row <-> slot maps. Which rows it holds is
/// its policy's choice, made by [`Placement`].
struct Tier {
    slab: Box<dyn RowSlab>,
    slot_of: Vec<u32>,
    row_in: Vec<u64>,
    dirty: Vec<bool>,
    free: Vec<u32>,
    used: u32,
    /// The slab is in host memory: its rows are pooled and updated in place. (Only a
    /// device slab may be elsewhere.)
    in_host_memory: bool,
    level: Level,
    stats: TierStats,
}

impl Tier {
    /// A tier over `slab` for a table of `rows` rows, and its policy.
    fn new(level: Level, slab: Box<dyn RowSlab>, policy: &PolicyConfig, rows: u64) -> Result<(Tier, Box<dyn EvictionPolicy>), EngineError> {
        let slots = slab.slots();
        let policy = policy.build(slots).map_err(|e| EngineError::Config(e.to_string()))?;
        let backend = slab.backend();
        let in_host_memory = slab.host_row(0).is_some();
        let tier = Tier {
            slab,
            slot_of: vec![NIL; rows as usize],
            row_in: vec![0; slots],
            dirty: vec![false; slots],
            free: Vec::new(),
            used: 0,
            in_host_memory,
            level,
            stats: TierStats { backend, capacity_rows: slots as u64, ..TierStats::default() },
        };
        Ok((tier, policy))
    }

    fn slot(&self, row: u64) -> Option<u32> {
        let s = self.slot_of[row as usize];
        (s != NIL).then_some(s)
    }

    /// The slot of `row`, which placement says this tier holds.
    fn resident_slot(&self, row: u64) -> Result<u32, EngineError> {
        self.slot(row).ok_or(EngineError::NotInTier { tier: self.level, row })
    }

    fn take_slot(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.used += 1;
            self.used - 1
        })
    }

    /// Stores `data` as `row` in a free slot.
    fn admit(&mut self, row: u64, data: &[f32], dirty: bool) -> Result<(), EngineError> {
        let slot = self.take_slot();
        self.store_row(slot, data)?;
        self.slot_of[row as usize] = slot;
        self.row_in[slot as usize] = row;
        self.dirty[slot as usize] = dirty;
        Ok(())
    }

    /// Forgets `row` (the policy already has); returns its slot and dirty bit.
    fn detach(&mut self, row: u64) -> Result<(u32, bool), EngineError> {
        let slot = self.resident_slot(row)?;
        self.slot_of[row as usize] = NIL;
        self.free.push(slot);
        Ok((slot, self.dirty[slot as usize]))
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

/// The device and host tiers, either of which may be absent.
struct MemoryTiers {
    device: Option<Tier>,
    host: Option<Tier>,
}

impl MemoryTiers {
    /// The tier `level`, which placement says the table has.
    fn tier_mut(&mut self, level: Level) -> Result<&mut Tier, EngineError> {
        match level {
            Level::Device => self.device.as_mut(),
            Level::Host => self.host.as_mut(),
        }
        .ok_or(EngineError::NoTier { tier: level })
    }

    fn holds(&self, level: Level, row: u64) -> bool {
        let tier = match level {
            Level::Device => &self.device,
            Level::Host => &self.host,
        };
        tier.as_ref().is_some_and(|tier| tier.slot(row).is_some())
    }

    /// Each tier's statistics (`None` for an absent tier).
    fn stats(&self) -> (Option<TierStats>, Option<TierStats>) {
        (self.device.as_ref().map(|t| t.stats.clone()), self.host.as_ref().map(|t| t.stats.clone()))
    }

    /// The tiers there are, the device first.
    fn present(&self) -> impl Iterator<Item = &Tier> {
        [self.device.as_ref(), self.host.as_ref()].into_iter().flatten()
    }

    /// The tier holding `row`'s newest copy (the device's, else the host's) and its
    /// slot there; `None` when only the store holds the row.
    fn newest(&self, row: u64) -> Option<(&Tier, u32)> {
        self.present().find_map(|tier| tier.slot(row).map(|slot| (tier, slot)))
    }

    /// [`MemoryTiers::newest`], writable.
    fn newest_mut(&mut self, row: u64) -> Option<(&mut Tier, u32)> {
        [self.device.as_mut(), self.host.as_mut()].into_iter().flatten().find_map(|tier| tier.slot(row).map(|slot| (tier, slot)))
    }

    /// Whether a memory tier holds `row`.
    fn in_memory(&self, row: u64) -> bool {
        self.newest(row).is_some()
    }

    /// Asks the CPU for `row`'s entries in the row -> slot maps.
    #[inline(always)]
    fn prefetch_slots(&self, row: u64) {
        for tier in self.present() {
            strata_policies::prefetch_element(&tier.slot_of, row as usize);
        }
    }
}

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
struct Staging {
    storage: StorageService,
    /// `f32`s per row.
    floats: usize,
    /// Read-ahead for batches not yet looked up, by batch start position.
    pending: FxHashMap<u64, Planned>,
    /// Rows some pending read-ahead is fetching.
    in_flight: rustc_hash::FxHashSet<u64>,
    /// Rows read from the store for the batch being placed: row -> offset in `staged`.
    staged_index: FxHashMap<u64, usize>,
    staged: StagedRows,
    /// Rows already listed by [`Staging::store_rows`].
    seen_rows: rustc_hash::FxHashSet<u64>,
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
}

impl Staging {
    fn new(storage: StorageService, layout: RowLayout, rows: u64) -> Staging {
        Staging {
            storage,
            floats: layout.floats(),
            pending: FxHashMap::default(),
            in_flight: Default::default(),
            staged_index: FxHashMap::default(),
            staged: StagedRows::default(),
            seen_rows: Default::default(),
            written_at: vec![0; rows as usize],
            write_seq: 0,
            written_since_sync: false,
            write_rows: Vec::new(),
            write_data: Vec::new(),
            queued: FxHashMap::default(),
        }
    }

    /// Starts reading, in the background, the rows of a future `batch` that are in no
    /// memory tier now.
    fn read_ahead(&mut self, batch: &Batch, tiers: &MemoryTiers, stats: &mut EngineStats) -> Result<(), EngineError> {
        // Rows already being read for an earlier batch in the window are left out: that
        // batch places them before this one is served.
        let unique = batch.unique_rows();
        let missing = self.unread_store_rows(&unique, tiers);
        stats.prefetched_rows += missing.len() as u64;
        let read = self.storage.read(missing)?;
        self.pending.insert(batch.start, Planned { reads: vec![(read, self.write_seq)], to_top_up: Some(unique) });
        Ok(())
    }

    /// Tops up the read-ahead of the next planned batch after `served_start`: its rows
    /// that were in a memory tier when it was planned but have left since are read now,
    /// while the batch just looked up is computed, instead of late at its own lookup.
    fn top_up_next(&mut self, served_start: u64, tiers: &MemoryTiers, stats: &mut EngineStats) -> Result<(), EngineError> {
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

    /// Those of `rows` that are in no memory tier and not being read for an earlier
    /// batch, marked as being read now.
    fn unread_store_rows(&mut self, rows: &[u64], tiers: &MemoryTiers) -> Vec<u64> {
        let missing: Vec<u64> = rows.iter().copied().filter(|&r| !tiers.in_memory(r) && !self.in_flight.contains(&r)).collect();
        self.in_flight.extend(missing.iter().copied());
        missing
    }

    /// Stages the store rows `batch` needs: the read-ahead if there was one, else a
    /// read now. Time spent waiting is consumer stall.
    fn stage(&mut self, batch: &Batch, tiers: &MemoryTiers, stats: &mut EngineStats) -> Result<(), EngineError> {
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
            if self.written_at[row as usize] <= sent_after {
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
    fn stage_unstaged(
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
        self.take_staged(more, waited, self.write_seq, stats);
        Ok(())
    }

    /// The distinct rows of `batch` that are in no memory tier, in order of first
    /// appearance.
    fn store_rows(&mut self, batch: &Batch, tiers: &MemoryTiers) -> Vec<u64> {
        let mut seen = std::mem::take(&mut self.seen_rows);
        seen.clear();
        let mut rows = Vec::new();
        for (i, &row) in batch.ids.iter().enumerate() {
            if let Some(&ahead) = batch.ids.get(i + SLOTS_AHEAD) {
                tiers.prefetch_slots(ahead);
            }
            if !tiers.in_memory(row) && seen.insert(row) {
                rows.push(row);
            }
        }
        self.seen_rows = seen;
        rows
    }

    fn is_staged(&self, row: u64) -> bool {
        self.staged_index.contains_key(&row)
    }

    /// Reads row `row` from the store into `out`: the staged copy when it is still
    /// valid, the copy queued for the store when this step wrote it down (a row its own
    /// batch pushed out), else a synchronous read (the slow path).
    fn read_row(&mut self, row: u64, out: &mut [f32], stats: &mut EngineStats) -> Result<(), EngineError> {
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
        stats.stall_seconds += start.elapsed().as_secs_f64();
        stats.sync_store_reads += 1;
        stats.bytes_store_to_host += (out.len() * 4) as u64;
        out.copy_from_slice(&staged.data);
        Ok(())
    }

    /// Queues a row for the store.
    fn write_down(&mut self, row: u64, data: &[f32], stats: &mut EngineStats) {
        self.staged_index.remove(&row);
        self.written_at[row as usize] = self.write_seq + 1; // the command that carries it
        self.queued.insert(row, self.write_rows.len());
        self.write_rows.push(row);
        self.write_data.extend_from_slice(data);
        stats.store_writes += 1;
        stats.bytes_host_to_store += (data.len() * 4) as u64;
    }

    /// Sends the queued rows to the store in one write command.
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
}

/// The table's tiers as placement moves rows through them: each [`Move`] carried out
/// on the slabs (data copies, dirty bits, rows written down, statistics).
struct Mover<'a> {
    tiers: &'a mut MemoryTiers,
    staging: &'a mut Staging,
    stats: &'a mut EngineStats,
    /// Holds the row being moved.
    row: &'a mut [f32],
}

impl Mover<'_> {
    /// Takes `row` out of `level` into `self.row`; returns its dirty bit. The copy out
    /// of the device counts as device-to-host bytes.
    fn take_out(&mut self, level: Level, row: u64) -> Result<bool, EngineError> {
        let tier = self.tiers.tier_mut(level)?;
        let (slot, dirty) = tier.detach(row)?;
        tier.load_row(slot, self.row)?;
        if level == Level::Device {
            self.stats.bytes_device_to_host += (self.row.len() * 4) as u64;
        }
        Ok(dirty)
    }

    /// Brings `self.row` into the device as `row`.
    fn promote_into_device(&mut self, row: u64, dirty: bool) -> Result<(), EngineError> {
        let device = self.tiers.tier_mut(Level::Device)?;
        device.admit(row, self.row, dirty)?;
        device.stats.promotions += 1;
        self.stats.bytes_host_to_device += (self.row.len() * 4) as u64;
        Ok(())
    }
}

impl Tiers for Mover<'_> {
    type Error = EngineError;

    fn holds(&self, tier: Level, row: u64) -> bool {
        self.tiers.holds(tier, row)
    }

    fn carry_out(&mut self, step: Move) -> Result<(), EngineError> {
        match step {
            Move::Looked { tier, hit } => self.tiers.tier_mut(tier)?.stats.record(hit),
            Move::EvictFromHost { row } => {
                let host = self.tiers.tier_mut(Level::Host)?;
                let (slot, dirty) = host.detach(row)?;
                host.stats.evictions += 1;
                if dirty {
                    host.stats.write_backs += 1;
                    host.load_row(slot, self.row)?;
                    self.staging.write_down(row, self.row, self.stats);
                }
            }
            Move::EvictFromDevice { row, write_back } => {
                let device = self.tiers.tier_mut(Level::Device)?;
                let (slot, dirty) = device.detach(row)?;
                device.stats.evictions += 1;
                if dirty {
                    device.load_row(slot, self.row)?;
                    device.stats.write_backs += 1;
                    self.stats.bytes_device_to_host += (self.row.len() * 4) as u64;
                    match write_back {
                        WriteBack::IntoHostCopy => {
                            let host = self.tiers.tier_mut(Level::Host)?;
                            let slot = host.resident_slot(row)?;
                            host.store_row(slot, self.row)?;
                            host.dirty[slot as usize] = true;
                        }
                        WriteBack::ToStore => self.staging.write_down(row, self.row, self.stats),
                    }
                }
            }
            Move::Demote { row } => {
                let dirty = self.take_out(Level::Device, row)?;
                self.tiers.tier_mut(Level::Device)?.stats.evictions += 1;
                let host = self.tiers.tier_mut(Level::Host)?;
                host.admit(row, self.row, dirty)?;
                host.stats.demotions_in += 1;
            }
            Move::DemotionRefused { row } => {
                let dirty = self.take_out(Level::Device, row)?;
                let device = self.tiers.tier_mut(Level::Device)?;
                device.stats.evictions += 1;
                if dirty {
                    device.stats.write_backs += 1;
                    self.staging.write_down(row, self.row, self.stats);
                }
            }
            Move::PromoteFromStore { row, into: Level::Device } => {
                self.staging.read_row(row, self.row, self.stats)?;
                self.promote_into_device(row, false)?;
            }
            Move::PromoteFromStore { row, into: Level::Host } => {
                self.staging.read_row(row, self.row, self.stats)?;
                let host = self.tiers.tier_mut(Level::Host)?;
                host.admit(row, self.row, false)?;
                host.stats.promotions += 1;
            }
            Move::CopyUpFromHost { row } => {
                let host = self.tiers.tier_mut(Level::Host)?;
                host.load_row(host.resident_slot(row)?, self.row)?;
                self.promote_into_device(row, false)?;
            }
            Move::MoveUpFromHost { row } => {
                let dirty = self.take_out(Level::Host, row)?;
                self.promote_into_device(row, dirty)?;
            }
        }
        Ok(())
    }
}

/// An embedding table over a device tier, a host tier and a backing store.
pub struct TieredTable {
    layout: RowLayout,
    rows: u64,
    optimizer: Optimizer,
    pooling: Pooling,
    placement: Placement,
    tiers: MemoryTiers,
    staging: Staging,
    /// One whole row (values and state) on its way between tiers or to the store.
    row_buffer: Vec<f32>,
    /// Per-step buffers, kept so that a step allocates nothing once they have grown:
    /// the batch's rows that CPU code cannot read in place (in a CUDA slab, or only in
    /// the store), copied out for pooling (row -> offset in `copies`); the row of every
    /// lookup for pooling (empty between lookups: see [`reuse_refs`]); the gradient
    /// grouping and one group's summed gradients; the rows and summed gradients of
    /// CUDA-slab rows, updated in one call.
    copied: FxHashMap<u64, usize>,
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
        let (device, device_policy) = match config.device.capacity("device", layout)? {
            0 => (None, None),
            n => {
                let (tier, policy) = Tier::new(Level::Device, open_device(config.device_backend, n, layout)?, &config.device.policy, rows)?;
                (Some(tier), Some(policy))
            }
        };
        let (host, host_policy) = match config.host.capacity("host", layout)? {
            0 => (None, None),
            n => {
                let (tier, policy) = Tier::new(Level::Host, Box::new(HostSlab::new(n, layout)?), &config.host.policy, rows)?;
                (Some(tier), Some(policy))
            }
        };
        let tiers = MemoryTiers { device, host };
        let storage = StorageService::start(store, config.write_buffer_rows);
        let (device_stats, host_stats) = tiers.stats();
        let stats =
            EngineStats { storage: storage.describe().to_string(), device: device_stats, host: host_stats, ..EngineStats::default() };
        Ok(TieredTable {
            layout,
            rows,
            optimizer: config.optimizer,
            pooling: config.pooling,
            placement: Placement::new(config.hierarchy, device_policy, host_policy),
            tiers,
            staging: Staging::new(storage, layout, rows),
            row_buffer: vec![0.0; layout.floats()],
            copied: FxHashMap::default(),
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

    /// Asks the CPU for `row` (values and state) where it is in host memory.
    fn prefetch_row(&self, row: u64) {
        if let Some(values) = self.tiers.newest(row).and_then(|(tier, slot)| tier.slab.host_row(slot)) {
            super::pool::prefetch(values);
        }
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
        self.staging.read_ahead(batch, &self.tiers, &mut self.stats)
    }

    /// Places every lookup of `batch` (policies decide, rows move).
    fn place_batch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        self.check_rows(batch)?;
        self.staging.stage(batch, &self.tiers, &mut self.stats)?;
        const AHEAD: usize = 16;
        let mut mover = Mover { tiers: &mut self.tiers, staging: &mut self.staging, stats: &mut self.stats, row: &mut self.row_buffer };
        for (i, &id) in batch.ids.iter().enumerate() {
            // The policies' metadata for rows a little ahead: its cache misses dominate.
            if let Some(&ahead) = batch.ids.get(i + AHEAD) {
                self.placement.prefetch(ahead);
                mover.tiers.prefetch_slots(ahead);
            }
            let req = Request { id, time: batch.start + i as u64, next_access: batch.next_access[i] };
            self.placement.place(&req, &mut mover)?;
        }
        self.staging.flush_writes()
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
        self.staging.top_up_next(batch.start, &self.tiers, &mut self.stats)?;
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
                self.tiers.prefetch_slots(ahead);
            }
            // A row in a CUDA slab or only in the store was copied out.
            let values = match self.tiers.newest(row) {
                Some((tier, slot)) => tier.slab.host_row(slot),
                None => None,
            };
            match values.or_else(|| self.copied.get(&row).map(|&at| &self.copies[at..])) {
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
        if let Some(device) = self.tiers.device.as_ref().filter(|d| !d.in_host_memory) {
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
        self.staging.stage_unstaged(batch.ids.iter().copied(), &self.tiers, &mut self.stats)?;
        for &row in &batch.ids {
            if !self.tiers.in_memory(row) && !self.copied.contains_key(&row) {
                self.staging.read_row(row, &mut self.row_buffer, &mut self.stats)?;
                self.copied.insert(row, self.copies.len());
                self.copies.extend_from_slice(&self.row_buffer[..dim]);
            }
        }
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
        // Rows in a CUDA slab (only the device's can be) were queued: one call.
        if let Some(device) = self.tiers.device.as_mut().filter(|_| !self.device_slots.is_empty()) {
            device.slab.apply(&self.device_slots, &self.device_grads, &self.optimizer)?;
        }
        self.staging.flush_writes()
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
                self.tiers.prefetch_slots(row);
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
        match self.tiers.newest_mut(row) {
            Some((tier, slot)) => {
                tier.dirty[slot as usize] = true;
                match tier.slab.host_row_mut(slot) {
                    Some(values) => optimizer.apply_row_with_sum(values, grad, sum),
                    None => {
                        self.device_slots.push(slot);
                        self.device_grads.extend_from_slice(grad);
                    }
                }
            }
            None => {
                if !self.staging.is_staged(row) {
                    self.staging.stage_unstaged(rest.iter().copied(), &self.tiers, &mut self.stats)?;
                }
                self.staging.read_row(row, &mut self.row_buffer, &mut self.stats)?;
                optimizer.apply_row_with_sum(&mut self.row_buffer, grad, sum);
                self.staging.write_down(row, &self.row_buffer, &mut self.stats);
            }
        }
        Ok(())
    }

    /// Writes every dirty row down to the store and makes it durable; rows stay cached.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        let data = &mut self.row_buffer;
        // Device rows first: inclusive ones land in their host copy when there is one.
        if let Some(device) = self.tiers.device.as_mut() {
            for (row, slot) in device.dirty_rows() {
                device.clean(slot, data)?;
                match self.tiers.host.as_mut().and_then(|h| h.slot(row).map(|s| (h, s))) {
                    Some((host, host_slot)) if self.placement.hierarchy() == Hierarchy::Inclusive => {
                        host.store_row(host_slot, data)?;
                        host.dirty[host_slot as usize] = true;
                    }
                    _ => self.staging.write_down(row, data, &mut self.stats),
                }
            }
        }
        if let Some(host) = self.tiers.host.as_mut() {
            for (row, slot) in host.dirty_rows() {
                host.clean(slot, data)?;
                self.staging.write_down(row, data, &mut self.stats);
            }
        }
        self.staging.flush_writes()?;
        self.staging.storage.sync()?;
        self.staging.written_since_sync = false;
        Ok(())
    }

    /// The file that holds the rows durably (`None` for an in-memory store, whose
    /// rows a checkpoint copies out with [`TieredTable::snapshot_into`]).
    pub fn store_file(&self) -> Option<&std::path::Path> {
        self.staging.storage.file()
    }

    /// Makes what the store holds now committed checkpoint `checkpoint` (a table file
    /// starts a fresh undo journal): call after [`TieredTable::flush`], once the
    /// checkpoint is committed, with no write in between.
    pub fn protect_checkpoint(&mut self, checkpoint: u64) -> Result<(), EngineError> {
        if self.staging.written_since_sync || !self.staging.write_rows.is_empty() {
            return Err(EngineError::Config(format!(
                "{}: protecting checkpoint {checkpoint} needs a flush first (rows were written since the last one)",
                self.staging.storage.describe()
            )));
        }
        self.staging.storage.protect_checkpoint(checkpoint)
    }

    /// Flushes, then copies every row (values and state) into `target` and syncs it:
    /// the rows as training has left them, whichever tier holds them.
    pub fn snapshot_into(&mut self, target: &mut dyn BackingStore) -> Result<(), EngineError> {
        const CHUNK: u64 = 1 << 16;
        self.flush()?;
        for first in (0..self.rows).step_by(CHUNK as usize) {
            let rows: Vec<u64> = (first..(first + CHUNK).min(self.rows)).collect();
            let (staged, _) = self.staging.storage.read(rows)?.wait()?;
            target.write_rows(&staged.rows, &staged.data)?;
        }
        target.sync()
    }

    /// Flushes, stops the I/O thread and hands the store back.
    pub fn close(mut self) -> Result<Box<dyn BackingStore>, EngineError> {
        self.flush()?;
        self.staging.pending.clear();
        self.staging.storage.into_store()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.requests = self.placement.placed();
        (stats.device, stats.host) = self.tiers.stats();
        stats.write_buffer = self.staging.storage.write_buffer_stats();
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
