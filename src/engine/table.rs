//! The tiered table: one embedding table (all tables of a model, under one global row
//! index) spread over a device tier, a host tier and the backing store, with the
//! policies of `strata-policies` deciding residency. Lookups pool embedding bags;
//! gradient updates run in whichever tier holds each row; dirty rows are written down
//! on eviction and on `flush`.
//!
//! The parts, each in `table/`: the configuration (`config`), a memory tier and the
//! pair of them (`tier`), the rows on their way to and from the store (`staging`),
//! placement's moves carried out on the slabs (`mover`), and the gradient update
//! (`update`); placement itself is `engine::placement`.
//!
//! Transparency is the law here: where a row lives never changes a result. Every
//! lookup reads a row's newest copy (device, else host, else the store), bags are
//! pooled in bag order by one function, and updates go through `Optimizer::apply_row`.

pub mod config;
mod mover;
mod staging;
mod tier;
mod update;

use std::time::Instant;

use rustc_hash::FxHashMap;
use strata_policies::Request;

use self::config::TableConfig;
use self::mover::Mover;
use self::staging::Staging;
use self::tier::{MemoryTiers, Tier};
use super::batch::Batch;
use super::device::open_device;
use super::device::DeviceKind;
use super::host::HostSlab;
use super::placement::{Hierarchy, Level, Placement};
use super::pool::{pool_bags, reuse_refs, Pooling, RowGradients};
use super::stats::EngineStats;
use super::storage::remote::Changed;
use super::storage::{BackingStore, StagedRows, StorageService};
use super::{Buffer, Dtype, EngineError, Optimizer, RowLayout, StoredUpdate};

/// Lookups ahead whose row -> slot entries are fetched early.
const SLOTS_AHEAD: usize = 16;

/// An embedding table over a device tier, a host tier and a backing store.
pub struct TieredTable {
    layout: RowLayout,
    rows: u64,
    optimizer: Optimizer,
    /// How updates reach stored rows (and round into half-precision ones).
    update: StoredUpdate,
    pooling: Pooling,
    placement: Placement,
    tiers: MemoryTiers,
    staging: Staging,
    /// One whole row (values and state) on its way between tiers or to the store.
    row_buffer: Vec<f32>,
    /// Per-step buffers, kept so that a step allocates nothing once they have grown:
    /// the batch's rows that CPU code cannot read in place (in a CUDA slab, or only in
    /// the store), copied out for pooling (row -> offset in `copies`); the row of every
    /// lookup for pooling and each bag's gradient (empty between steps: see
    /// [`reuse_refs`]); the gradient
    /// grouping and one group's summed gradients; the rows and summed gradients of
    /// CUDA-slab rows, updated in one call.
    copied: FxHashMap<u64, usize>,
    copies: Vec<f32>,
    row_refs: Vec<&'static [f32]>,
    bag_refs: Vec<&'static [f32]>,
    gradients: RowGradients,
    group_grads: Vec<f32>,
    device_slots: Vec<u32>,
    device_grads: Vec<f32>,
    stats: EngineStats,
}

impl TieredTable {
    /// Builds the tiers around `store` (which holds every row).
    pub fn new(config: &TableConfig, store: Box<dyn BackingStore>) -> Result<TieredTable, EngineError> {
        let layout = store.layout();
        let rows = store.rows();
        if layout.state != config.optimizer.state_floats() {
            return Err(EngineError::OptimizerState { store: store.describe(), has: layout.state, needs: config.optimizer.state_floats() });
        }
        // The CUDA kernels pool and update f32 rows: half-precision rows live in the
        // emulated device where the backend is left to choose.
        let device_backend = match (config.device_backend, layout.dtype) {
            (DeviceKind::Auto, Dtype::F16 | Dtype::Bf16) => DeviceKind::Emulated,
            (DeviceKind::Cuda, Dtype::F16 | Dtype::Bf16) if config.device.capacity(Level::Device, layout)? > 0 => {
                return Err(EngineError::DtypeOnCuda { store: store.describe(), dtype: layout.dtype });
            }
            (backend, _) => backend,
        };
        let (device, device_policy) = match config.device.capacity(Level::Device, layout)? {
            0 => (None, None),
            n => {
                let (tier, policy) = Tier::new(Level::Device, open_device(device_backend, n, layout)?, &config.device.policy, rows)?;
                (Some(tier), Some(policy))
            }
        };
        let (host, host_policy) = match config.host.capacity(Level::Host, layout)? {
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
            update: StoredUpdate::new(layout, config.rounding),
            pooling: config.pooling,
            placement: Placement::new(config.hierarchy, device_policy, host_policy),
            tiers,
            staging: Staging::new(storage, layout, rows),
            row_buffer: vec![0.0; layout.words()],
            copied: FxHashMap::default(),
            copies: Vec::new(),
            row_refs: Vec::new(),
            bag_refs: Vec::new(),
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
        self.check_row_range(&batch.ids)
    }

    /// Fails on the first of `rows` beyond the table.
    fn check_row_range(&self, rows: &[u64]) -> Result<(), EngineError> {
        match rows.iter().find(|&&r| r >= self.rows) {
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

    /// Forgets the read-ahead of `batch` (given to [`TieredTable::prefetch`]), which
    /// will not be looked up after all.
    pub fn cancel_prefetch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        self.staging.cancel_read_ahead(batch.start)
    }

    /// Places every lookup of `batch` (policies decide, rows move), pinning each row as
    /// it is placed: the batch never evicts a row it has looked up, and its rows stay
    /// pinned until the next batch is placed, through the batch's gradient update.
    fn place_batch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        self.check_rows(batch)?;
        self.staging.stage(batch, &self.tiers, &mut self.stats)?;
        self.placement.unpin_all();
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
            self.placement.pin(id);
        }
        self.staging.flush_writes()
    }

    /// Pools the bags of `batch` into `out` (`bags * dim` values), placing its rows first.
    pub fn lookup(&mut self, batch: &Batch, out: &mut [f32]) -> Result<(), EngineError> {
        let start = Instant::now();
        let dim = self.layout.dim;
        if out.len() != batch.bags() * dim {
            return Err(EngineError::Length { what: Buffer::LookupOutput, got: out.len(), needs: batch.bags() * dim });
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
        pool_bags(&refs, &batch.bag_offsets, &batch.weights, dim, self.layout.dtype, self.pooling, out);
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
        let values_words = self.layout.value_words();
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
                Some(values) => refs.push(&values[..values_words]),
                None => return Err(reuse_refs(refs)),
            }
        }
        Ok(refs)
    }

    /// Copies the values of `batch`'s rows that CPU code cannot read in place (in a CUDA
    /// slab, or only in the store after this batch's own evictions) into `copies`.
    fn copy_out(&mut self, batch: &Batch) -> Result<(), EngineError> {
        let values = self.layout.value_words();
        self.copied.clear();
        self.copies.clear();
        if let Some(device) = self.tiers.device.as_ref().filter(|d| !d.in_host_memory) {
            self.device_slots.clear();
            for &row in &batch.ids {
                if let Some(slot) = device.slot(row) {
                    if !self.copied.contains_key(&row) {
                        self.copied.insert(row, self.device_slots.len() * values);
                        self.device_slots.push(slot);
                    }
                }
            }
            self.copies.resize(self.device_slots.len() * values, 0.0);
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
                self.copies.extend_from_slice(&self.row_buffer[..values]);
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
                        host.overwrite(host_slot, data)?;
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
        self.staging.sync()
    }

    /// Takes in `rows`, changed in the store by another writer (a trainer publishing to
    /// the cluster table a serving replica reads): every memory-tier copy of them is
    /// read again from the store and replaced in place, clean, and read-ahead fetched
    /// for them before now is dropped, so no later lookup hands out a copy older than
    /// the store's. Residency does not change (the policies are not told), so a
    /// replica's hits and misses are those of a table that never changed. A changed row
    /// with an update not yet written down is an error: a table being trained cannot
    /// also follow another writer. Returns the memory-tier copies replaced.
    pub fn refresh(&mut self, rows: &[u64]) -> Result<u64, EngineError> {
        self.check_row_range(rows)?;
        let mut cached: Vec<u64> = rows.iter().copied().filter(|&row| self.tiers.in_memory(row)).collect();
        cached.sort_unstable();
        cached.dedup();
        for tier in self.tiers.present() {
            cached.iter().try_for_each(|&row| tier.check_clean(row))?;
        }
        self.staging.changed_in_store(rows);
        if cached.is_empty() {
            return Ok(0);
        }
        let (fresh, _) = self.staging.storage().read(cached)?.wait()?;
        let floats = self.layout.words();
        let mut replaced = 0;
        for (&row, data) in fresh.rows.iter().zip(fresh.data.chunks_exact(floats)) {
            for tier in self.tiers.present_mut() {
                if let Some(slot) = tier.slot(row) {
                    tier.replace_clean(slot, data)?;
                    replaced += 1;
                }
            }
        }
        self.stats.refreshed_rows += replaced;
        Ok(replaced)
    }

    /// [`TieredTable::refresh`] of every row: another writer may have changed any of
    /// them (a replica that missed versions).
    pub fn refresh_all(&mut self) -> Result<u64, EngineError> {
        let mut cached: Vec<u64> = self.tiers.present().flat_map(|tier| tier.resident_rows()).collect();
        cached.sort_unstable();
        cached.dedup();
        let replaced = self.refresh(&cached)?;
        self.staging.all_changed_in_store();
        Ok(replaced)
    }

    /// Takes in what a published table's follower says changed: [`TieredTable::refresh`]
    /// of those rows, or [`TieredTable::refresh_all`].
    pub fn take_in(&mut self, changed: Changed<'_>) -> Result<u64, EngineError> {
        match changed {
            Changed::Rows(rows) => self.refresh(rows),
            Changed::All => self.refresh_all(),
        }
    }

    /// The file that holds the rows durably (`None` for an in-memory store, whose
    /// rows a checkpoint copies out with [`TieredTable::snapshot_into`]).
    pub fn store_file(&self) -> Option<&std::path::Path> {
        self.staging.storage().file()
    }

    /// Makes what the store holds now committed checkpoint `checkpoint` (a table file
    /// starts a fresh undo journal): call after [`TieredTable::flush`], once the
    /// checkpoint is committed, with no write in between.
    pub fn protect_checkpoint(&mut self, checkpoint: u64) -> Result<(), EngineError> {
        if self.staging.unsynced_writes() {
            return Err(EngineError::CheckpointNotFlushed { store: self.staging.storage().describe().to_string(), checkpoint });
        }
        self.staging.storage().protect_checkpoint(checkpoint)
    }

    /// Flushes, then reads `rows` (values and state) from the store: the rows as
    /// training has left them, whichever tier holds them, in the order of `rows`.
    pub fn read_rows(&mut self, rows: Vec<u64>) -> Result<StagedRows, EngineError> {
        self.check_row_range(&rows)?;
        self.flush()?;
        Ok(self.staging.storage().read(rows)?.wait()?.0)
    }

    /// Flushes, then copies every row (values and state) into `target` and syncs it.
    pub fn snapshot_into(&mut self, target: &mut dyn BackingStore) -> Result<(), EngineError> {
        const CHUNK: u64 = 1 << 16;
        self.flush()?;
        for first in (0..self.rows).step_by(CHUNK as usize) {
            let (staged, _) = self.staging.storage().read((first..(first + CHUNK).min(self.rows)).collect())?.wait()?;
            target.write_rows(&staged.rows, &staged.data)?;
        }
        target.sync()
    }

    /// Flushes, stops the I/O thread and hands the store back.
    pub fn close(mut self) -> Result<Box<dyn BackingStore>, EngineError> {
        self.flush()?;
        self.staging.into_store()
    }

    /// Seconds lookups and updates have waited for rows from the store (the
    /// `stall_seconds` of [`TieredTable::stats`], without copying the rest).
    pub fn stall_seconds(&self) -> f64 {
        self.stats.stall_seconds
    }

    /// Bytes of rows read from the store into the memory tiers so far (the
    /// `bytes_store_to_host` of [`TieredTable::stats`], without copying the rest).
    pub fn store_bytes_read(&self) -> u64 {
        self.stats.bytes_store_to_host
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.requests = self.placement.placed();
        (stats.device, stats.host) = self.tiers.stats();
        stats.write_buffer = self.staging.storage().write_buffer_stats();
        stats.file_cache = self.staging.storage().file_cache_stats();
        stats.storage_thread = self.staging.storage().thread_time();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::config::TierConfig;
    use super::*;
    use crate::engine::device::DeviceKind;
    use strata_policies::PolicyConfig;

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
            rounding: Default::default(),
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
    fn the_storage_thread_s_time_is_counted_by_reads_and_writes() {
        use crate::engine::flat::FlatTable;
        use crate::engine::RowInit;
        let optimizer = Optimizer::Sgd { lr: 0.1 };
        let store = FlatTable::new(1000, RowLayout::new(4, &optimizer), RowInit::Uniform { seed: 1, scale: 0.1 });
        let config = TableConfig {
            device: TierConfig::rows(0, PolicyConfig::Lru),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(50, PolicyConfig::Lru),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0,
            rounding: Default::default(),
        };
        let mut table = TieredTable::new(&config, Box::new(store)).unwrap();
        assert_eq!(table.stats().storage_thread, crate::engine::storage::StorageThreadTime::default(), "nothing ran yet");
        let batch = Batch::new((0..200).collect(), (0..=200).collect(), 0);
        let mut out = vec![0f32; 200 * 4];
        table.lookup(&batch, &mut out).unwrap();
        let read = table.stats().storage_thread;
        assert!(read.read_cpu_seconds > 0.0 && read.write_cpu_seconds == 0.0 && read.write_seconds == 0.0, "{read:?}");
        table.apply_gradients(&batch, &vec![1.0; 200 * 4]).unwrap();
        table.flush().unwrap();
        let written = table.stats().storage_thread.since(&read);
        assert!(
            written.write_cpu_seconds > 0.0 && written.write_seconds > 0.0,
            "evicted dirty rows and the flush were written: {written:?}"
        );
    }

    /// A batch whose distinct rows exceed the host tier: each row it looks up is pinned,
    /// so the rows it pushes out are those it has not looked up yet (kept for the step),
    /// and once the tier holds only its rows the rest are refused (served from the rows
    /// staged for the step): each row is read from the store once.
    #[test]
    fn a_batch_larger_than_its_tier_reads_each_of_its_rows_from_the_store_once() {
        use crate::engine::flat::FlatTable;
        use crate::engine::RowInit;
        let optimizer = Optimizer::Sgd { lr: 0.1 };
        let layout = RowLayout::new(4, &optimizer);
        let store = FlatTable::new(100, layout, RowInit::Uniform { seed: 3, scale: 0.1 });
        let config = TableConfig {
            device: TierConfig::rows(0, PolicyConfig::Lru),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(3, PolicyConfig::Lru),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0,
            rounding: Default::default(),
        };
        let mut table = TieredTable::new(&config, Box::new(store)).unwrap();
        let mut out = vec![0f32; 7 * 4];
        table.lookup(&Batch::new(vec![1, 2, 3], (0..=3).collect(), 0), &mut out[..12]).unwrap();
        // Rows 1-3 are in the host when the batch starts. 1 is looked up and pinned; 4
        // and 5 push out 2 and 3 (kept for the step); 6 finds only pinned rows and is
        // refused; 1 hits; 2 and 3 come from the kept copies; then every row is updated.
        let ids = vec![1, 4, 5, 6, 1, 2, 3];
        let batch = Batch::new(ids.clone(), (0..=ids.len()).collect(), 3);
        table.lookup(&batch, &mut out).unwrap();
        table.apply_gradients(&batch, &vec![0.5; ids.len() * 4]).unwrap();
        let stats = table.stats();
        assert_eq!(stats.bytes_store_to_host, 6 * layout.bytes() as u64, "six distinct rows, each read once: {stats:?}");
        assert_eq!((stats.sync_store_reads, stats.kept_victims), (0, 2), "rows 2 and 3 kept for the step: {stats:?}");
        let host = stats.host.unwrap();
        assert_eq!((host.hits, host.misses, host.promotions, host.evictions), (2, 3 + 5, 3 + 2, 2), "{host:?}");
        assert!([1, 4, 5].iter().all(|&r| table.tiers.in_memory(r)) && !table.tiers.in_memory(6));
    }

    /// A batch never evicts a row it has looked up: over a host tier of four rows, the
    /// second batch looks up 4, then 5-8; without pins LRU would push 4 out for 8 and
    /// miss it again, with them 8 is refused and 4 hits. The pins last until the next
    /// batch, whose misses evict again. Each row misses and is read once per batch that
    /// finds it in no tier, nothing is kept for a step or read back from the write queue,
    /// and the values are those of an all-in-memory table.
    #[test]
    fn a_batch_never_evicts_a_row_it_has_looked_up() {
        use crate::engine::flat::FlatTable;
        use crate::engine::RowInit;
        let optimizer = Optimizer::Sgd { lr: 0.1 };
        let layout = RowLayout::new(4, &optimizer);
        let init = RowInit::Uniform { seed: 5, scale: 0.1 };
        let mut flat = FlatTable::new(100, layout, init);
        let config = TableConfig {
            device: TierConfig::rows(0, PolicyConfig::Lru),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(4, PolicyConfig::Lru),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0,
            rounding: Default::default(),
        };
        let mut table = TieredTable::new(&config, Box::new(FlatTable::new(100, layout, init))).unwrap();
        // (rows, rows of them in no tier when the batch starts, rows refused)
        let batches: [(&[u64], u64, &[u64]); 4] = [
            (&[1, 2, 3, 4], 4, &[]),
            (&[4, 5, 6, 7, 8, 4], 4, &[8]),
            // Unpinned again: 8 pushes out 6, the least recently used.
            (&[5, 8, 5, 8], 1, &[]),
            (&[9, 4, 9, 4], 1, &[]),
        ];
        let (mut start, mut reads) = (0, 0);
        for (b, &(ids, new_rows, refused)) in batches.iter().enumerate() {
            let batch = Batch::new(ids.to_vec(), (0..=ids.len()).collect(), start);
            start += ids.len() as u64;
            let (mut out, mut want) = (vec![0f32; ids.len() * 4], vec![0f32; ids.len() * 4]);
            table.lookup(&batch, &mut out).unwrap();
            flat.lookup(&batch, Pooling::Sum, &mut want);
            assert_eq!(out, want, "batch {b}");
            let grads: Vec<f32> = (0..ids.len() * 4).map(|i| 0.01 * (i as f32 + b as f32)).collect();
            table.apply_gradients(&batch, &grads).unwrap();
            flat.apply_gradients(&batch, &grads, &optimizer, Pooling::Sum);
            reads += new_rows;
            let stats = table.stats();
            assert_eq!(stats.bytes_store_to_host, reads * layout.bytes() as u64, "batch {b}: {stats:?}");
            // Only the rows in no tier missed, once each: no row came back into the
            // host, kept for the step or out of the write queue.
            assert_eq!(stats.host.as_ref().unwrap().misses, reads, "batch {b}: {stats:?}");
            assert_eq!((stats.kept_victims, stats.queued_reads, stats.sync_store_reads), (0, 0, 0), "batch {b}: {stats:?}");
            for &row in ids {
                assert_eq!(table.tiers.in_memory(row), !refused.contains(&row), "batch {b}: row {row}");
            }
        }
        assert_eq!(table.stats().host.unwrap().evictions, 3 + 1 + 1, "1-3 in the second batch, 6, 7");
        let rows: Vec<u64> = (1..=9).collect();
        let stored = table.read_rows(rows.clone()).unwrap();
        for (i, &row) in rows.iter().enumerate() {
            assert_eq!(stored.data[i * layout.words()..][..layout.words()], *flat.row(row), "row {row}");
        }
    }
}
