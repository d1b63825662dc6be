//! A local file cache in front of a slower store: [`FileCached`] keeps up to `slots` rows
//! of the store below (the remote tier, as HugeCTR's HPS keeps a persistent local
//! database below its Redis tier) in a table file of its own on local NVMe, the rows it
//! holds chosen by one of the lab's eviction policies. It is itself a [`BackingStore`],
//! so the memory tiers, their policies, the read-ahead and the write-back buffer work
//! over it as over any store.
//!
//! - A read looks each row up in the policy: a hit is read from the cache file; a miss
//!   is read from below and, if the policy admits it, written into a slot of the cache
//!   file, clean. A dirty row the policy evicts is written down below first (before the
//!   call's reads from below, so a row evicted and read again in one call reads back its
//!   newest bytes).
//! - A write goes into the cache file where the row has a slot (the slot becomes dirty)
//!   and straight down below where it has none; writes are not accesses for the policy.
//! - [`BackingStore::sync`] writes every dirty slot down and syncs the store below: after
//!   a sync (a flush, a checkpoint) the store below holds every row, and the cache file
//!   only copies of it. The slot map lives in memory: a cache file is never reopened.
//!
//! A failed call leaves the slot map ahead of the file, so every later call fails with
//! the first failure: the engine stops a run at a store error in any case.

use std::collections::HashMap;

use strata_policies::{EvictionPolicy, PolicyConfig, Request};

use super::{BackingStore, StorageError, TableFile};
use crate::engine::EngineError;

/// Counters of a [`FileCached`] store since it was made (in a table's
/// [`EngineStats`](crate::engine::stats::EngineStats) as `file_cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCacheStats {
    /// Rows read from the cache file.
    pub hits: u64,
    /// Rows read from the store below.
    pub misses: u64,
    /// Rows read from below and written into a slot.
    pub admitted: u64,
    /// Dirty rows written down below, on eviction or at a sync.
    pub written_back: u64,
    /// Rows written straight down below (no slot).
    pub written_through: u64,
}

impl FileCacheStats {
    /// What happened since `earlier`.
    pub fn since(&self, earlier: &FileCacheStats) -> FileCacheStats {
        self.combine(earlier, crate::engine::SINCE)
    }

    pub fn combine(&self, other: &FileCacheStats, op: crate::engine::Combine) -> FileCacheStats {
        let count = op.count;
        FileCacheStats {
            hits: count(self.hits, other.hits),
            misses: count(self.misses, other.misses),
            admitted: count(self.admitted, other.admitted),
            written_back: count(self.written_back, other.written_back),
            written_through: count(self.written_through, other.written_through),
        }
    }
}

/// Where one row of a read comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The `i`-th slot read from the cache file in this call (as it was when the call
    /// began).
    Slot(usize),
    /// The `i`-th row read from below in this call.
    Below(usize),
}

/// A slot no row holds.
const FREE: u64 = u64::MAX;

/// A store below a local file cache of a fixed number of rows (see the module's notes).
pub struct FileCached {
    cache: TableFile,
    below: Box<dyn BackingStore>,
    policy: Box<dyn EvictionPolicy>,
    policy_name: String,
    slot_of: HashMap<u64, u64>,
    /// The row each slot holds, or [`FREE`].
    owner: Vec<u64>,
    dirty: Vec<bool>,
    free: Vec<u64>,
    time: u64,
    stats: FileCacheStats,
    /// The first failure, after which every call fails.
    broken: Option<String>,
}

impl FileCached {
    /// A cache of `cache.rows()` slots (the table file `cache`, whose layout must be the
    /// store's) in front of `below`, its rows chosen by `policy`, which must not need
    /// the future (a cache below the memory tiers sees no batch ahead).
    pub fn new(cache: TableFile, below: Box<dyn BackingStore>, policy: &PolicyConfig) -> Result<FileCached, EngineError> {
        let path = cache.path().to_path_buf();
        let refuse = |message: String| EngineError::from(StorageError::BadLayout { path: path.clone(), message });
        if cache.layout() != below.layout() {
            let (has, needs) = (cache.layout(), below.layout());
            return Err(refuse(format!("the file cache holds rows of {has:?}, the store below {needs:?}")));
        }
        Self::check_policy(policy).map_err(&refuse)?;
        let slots = cache.rows();
        let built = policy.build(slots as usize).map_err(|e| refuse(format!("policy {}: {e}", policy.label())))?;
        Ok(FileCached {
            cache,
            below,
            policy: built,
            policy_name: policy.label(),
            slot_of: HashMap::new(),
            owner: vec![FREE; slots as usize],
            dirty: vec![false; slots as usize],
            // Popped from the end: slots fill in file order while any is free.
            free: (0..slots).rev().collect(),
            time: 0,
            stats: FileCacheStats::default(),
            broken: None,
        })
    }

    /// Refuses a policy that needs the future: a cache below the memory tiers sees no
    /// batch ahead (the one check, for [`FileCached::new`] and for configs).
    pub fn check_policy(policy: &PolicyConfig) -> Result<(), String> {
        match policy.needs_future() {
            true => Err(format!("policy {} needs the future, which a cache below the memory tiers does not see", policy.label())),
            false => Ok(()),
        }
    }

    pub fn stats(&self) -> FileCacheStats {
        self.stats
    }

    /// Rows held in the cache file now.
    pub fn cached_rows(&self) -> usize {
        self.slot_of.len()
    }

    /// The store below, with the cache file dropped (rows written since the last sync
    /// and still only in the cache are lost: sync first).
    pub fn into_below(self) -> Box<dyn BackingStore> {
        self.below
    }

    /// Runs `call`; a failure breaks the cache for every later call.
    fn guarded<T>(&mut self, call: impl FnOnce(&mut Self) -> Result<T, EngineError>) -> Result<T, EngineError> {
        if let Some(first) = &self.broken {
            return Err(EngineError::FileCacheBroken { cache: self.cache.path().to_path_buf(), first: first.clone() });
        }
        let outcome = call(self);
        if let Err(e) = &outcome {
            self.broken = Some(e.to_string());
        }
        outcome
    }

    /// Checks a request before it changes anything: its rows in range, its buffer sized.
    fn check_request(&self, operation: &'static str, rows: &[u64], floats_given: usize) -> Result<(), EngineError> {
        if let Some(&row) = rows.iter().find(|&&row| row >= self.rows()) {
            return Err(EngineError::RowOutOfRange { row, rows: self.rows() });
        }
        let floats = self.layout().words();
        if floats_given == rows.len() * floats {
            return Ok(());
        }
        let path = self.cache.path().to_path_buf();
        Err(StorageError::BufferSize { path, operation, rows: rows.len(), floats, expected: rows.len() * floats, actual: floats_given }
            .into())
    }

    fn read(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
        let floats = self.layout().words();
        let mut sources = Vec::with_capacity(rows.len());
        // Rows read from below in this call (each once), and where each is among them.
        let mut from_below: Vec<u64> = Vec::new();
        let mut read_here: HashMap<u64, usize> = HashMap::new();
        // Slots to read from the cache file: hits, then dirty victims.
        let mut slots: Vec<u64> = Vec::new();
        let mut victims: Vec<u64> = Vec::new();
        let mut victim_slots: Vec<u64> = Vec::new();
        for &row in rows {
            let access = self.policy.access(&Request::new(row, self.time));
            self.time += 1;
            // (A victim with no slot had not arrived: nothing to write back.)
            if let Some((victim, slot)) = access.evicted.and_then(|v| Some((v, self.slot_of.remove(&v)?))) {
                if std::mem::take(&mut self.dirty[slot as usize]) {
                    victims.push(victim);
                    victim_slots.push(slot);
                }
                self.owner[slot as usize] = FREE;
                self.free.push(slot);
            }
            let has_slot = self.slot_of.contains_key(&row);
            if let Some(&i) = read_here.get(&row) {
                // Read from below earlier in this call (admitted then or not): clean.
                sources.push(Source::Below(i));
            } else if access.hit && has_slot {
                sources.push(Source::Slot(slots.len()));
                slots.push(self.slot_of[&row]);
            } else {
                read_here.insert(row, from_below.len());
                sources.push(Source::Below(from_below.len()));
                from_below.push(row);
            }
            // A row admitted now, or one the policy counts resident that has not arrived
            // (static placement pins its hot set without reading it): it takes a slot.
            // (A policy holds no more rows than there are slots; were one ever to, the
            // row would only be read from below again, never served wrong.)
            if (access.inserted || access.hit) && !has_slot {
                if let Some(slot) = self.free.pop() {
                    self.slot_of.insert(row, slot);
                    self.owner[slot as usize] = row;
                }
            }
        }
        // Everything the cache file holds that this call needs, before any slot is reused.
        let hits = slots.len();
        slots.extend_from_slice(&victim_slots);
        let mut cached = vec![0f32; slots.len() * floats];
        self.cache.read_rows(&slots, &mut cached)?;
        if !victims.is_empty() {
            self.below.write_rows(&victims, &cached[hits * floats..])?;
            self.stats.written_back += victims.len() as u64;
        }
        let mut fetched = vec![0f32; from_below.len() * floats];
        self.below.read_rows(&from_below, &mut fetched)?;
        // Each row admitted in this call into the slot it still holds, clean (a row read
        // from below that holds a slot now was given it in this call).
        let (admitted, positions): (Vec<u64>, Vec<usize>) =
            from_below.iter().enumerate().filter_map(|(i, row)| self.slot_of.get(row).map(|&slot| (slot, i))).unzip();
        let mut admitted_rows = vec![0f32; admitted.len() * floats];
        for (k, &i) in positions.iter().enumerate() {
            admitted_rows[k * floats..(k + 1) * floats].copy_from_slice(&fetched[i * floats..(i + 1) * floats]);
        }
        self.cache.write_rows(&admitted, &admitted_rows)?;
        self.stats.admitted += admitted.len() as u64;
        self.stats.hits += hits as u64;
        self.stats.misses += from_below.len() as u64;
        for (out, source) in out.chunks_exact_mut(floats).zip(sources) {
            out.copy_from_slice(match source {
                Source::Slot(i) => &cached[i * floats..(i + 1) * floats],
                Source::Below(i) => &fetched[i * floats..(i + 1) * floats],
            });
        }
        Ok(())
    }

    fn write(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError> {
        let floats = self.layout().words();
        let (mut into_slots, mut slot_data) = (Vec::new(), Vec::new());
        let (mut through, mut through_data) = (Vec::new(), Vec::new());
        for (&row, values) in rows.iter().zip(data.chunks_exact(floats)) {
            match self.slot_of.get(&row) {
                Some(&slot) => {
                    into_slots.push(slot);
                    slot_data.extend_from_slice(values);
                }
                None => {
                    through.push(row);
                    through_data.extend_from_slice(values);
                }
            }
        }
        self.cache.write_rows(&into_slots, &slot_data)?;
        for &slot in &into_slots {
            self.dirty[slot as usize] = true;
        }
        self.below.write_rows(&through, &through_data)?;
        self.stats.written_through += through.len() as u64;
        Ok(())
    }

    /// Writes every dirty slot down below, in chunks, and syncs it.
    fn write_back_all(&mut self) -> Result<(), EngineError> {
        const CHUNK: usize = 4096;
        let floats = self.layout().words();
        let dirty: Vec<u64> = (0..self.owner.len() as u64).filter(|&slot| self.dirty[slot as usize]).collect();
        let mut buffer = Vec::new();
        for chunk in dirty.chunks(CHUNK) {
            buffer.resize(chunk.len() * floats, 0.0);
            self.cache.read_rows(chunk, &mut buffer)?;
            let rows: Vec<u64> = chunk.iter().map(|&slot| self.owner[slot as usize]).collect();
            self.below.write_rows(&rows, &buffer)?;
            for &slot in chunk {
                self.dirty[slot as usize] = false;
            }
            self.stats.written_back += chunk.len() as u64;
        }
        self.below.sync()
    }
}

impl BackingStore for FileCached {
    fn describe(&self) -> String {
        let (slots, policy, below) = (self.owner.len(), &self.policy_name, self.below.describe());
        format!("file cache {} ({slots} rows, {policy}) over {below}", self.cache.path().display())
    }
    fn layout(&self) -> crate::engine::RowLayout {
        self.below.layout()
    }
    fn rows(&self) -> u64 {
        self.below.rows()
    }
    fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
        self.check_request("read_rows", rows, out.len())?;
        self.guarded(|store| store.read(rows, out))
    }
    fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError> {
        self.check_request("write_rows", rows, data.len())?;
        self.guarded(|store| store.write(rows, data))
    }
    fn sync(&mut self) -> Result<(), EngineError> {
        self.guarded(Self::write_back_all)
    }
    /// The store below's file: the cache file is never where the rows are kept.
    fn file(&self) -> Option<&std::path::Path> {
        self.below.file()
    }
    fn protect_checkpoint(&mut self, checkpoint: u64) -> Result<(), EngineError> {
        self.guarded(|store| store.below.protect_checkpoint(checkpoint))
    }
    fn file_cache_stats(&self) -> Option<FileCacheStats> {
        Some(self.stats)
    }
}

#[cfg(test)]
mod tests;
