//! A memory tier of the tiered table ([`Tier`]: a slab of row slots, the row <-> slot
//! maps, the dirty bits and the tier's statistics) and the two of them
//! ([`MemoryTiers`]), either of which may be absent.

use strata_policies::{EvictionPolicy, PolicyConfig};

use crate::engine::placement::Level;
use crate::engine::stats::TierStats;
use crate::engine::{EngineError, RowSlab};

/// No slot: the row is not in the tier.
const NIL: u32 = u32::MAX;

/// A memory tier: a slab of slots and the row <-> slot maps. Which rows it holds is
/// its policy's choice, made by [`Placement`](crate::engine::placement::Placement).
pub(super) struct Tier {
    pub(super) slab: Box<dyn RowSlab>,
    slot_of: Vec<u32>,
    row_in: Vec<u64>,
    dirty: Vec<bool>,
    free: Vec<u32>,
    used: u32,
    /// The slab is in host memory: its rows are pooled and updated in place. (Only a
    /// device slab may be elsewhere.)
    pub(super) in_host_memory: bool,
    level: Level,
    pub(super) stats: TierStats,
}

impl Tier {
    /// A tier over `slab` for a table of `rows` rows, and its policy.
    pub(super) fn new(
        level: Level,
        slab: Box<dyn RowSlab>,
        policy: &PolicyConfig,
        rows: u64,
    ) -> Result<(Tier, Box<dyn EvictionPolicy>), EngineError> {
        let slots = slab.slots();
        // A tier that holds every row keeps no eviction order (see `Resident`).
        let policy = policy.build_for_rows(slots, rows)?;
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

    pub(super) fn slot(&self, row: u64) -> Option<u32> {
        let s = self.slot_of[row as usize];
        (s != NIL).then_some(s)
    }

    /// The slot of `row`, which placement says this tier holds.
    pub(super) fn resident_slot(&self, row: u64) -> Result<u32, EngineError> {
        // A match, not `ok_or`: an error built on every call is also dropped on every
        // call, out of line (3.8% of a tiered step's profile samples).
        match self.slot(row) {
            Some(slot) => Ok(slot),
            None => Err(EngineError::NotInTier { tier: self.level, row }),
        }
    }

    fn take_slot(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.used += 1;
            self.used - 1
        })
    }

    /// Stores `data` as `row` in a free slot.
    pub(super) fn admit(&mut self, row: u64, data: &[f32], dirty: bool) -> Result<(), EngineError> {
        let slot = self.take_slot();
        self.store_row(slot, data)?;
        self.slot_of[row as usize] = slot;
        self.row_in[slot as usize] = row;
        self.dirty[slot as usize] = dirty;
        Ok(())
    }

    /// Writes `data` over the row in `slot`, which becomes dirty.
    pub(super) fn overwrite(&mut self, slot: u32, data: &[f32]) -> Result<(), EngineError> {
        self.store_row(slot, data)?;
        self.dirty[slot as usize] = true;
        Ok(())
    }

    /// Fails when the tier holds `row` with an update not yet written down.
    pub(super) fn check_clean(&self, row: u64) -> Result<(), EngineError> {
        match self.slot(row) {
            Some(slot) if self.dirty[slot as usize] => Err(EngineError::RefreshDirty { tier: self.level, row }),
            _ => Ok(()),
        }
    }

    /// Writes `data`, the store's newer copy, over the clean row in `slot` (it stays
    /// clean).
    pub(super) fn replace_clean(&mut self, slot: u32, data: &[f32]) -> Result<(), EngineError> {
        debug_assert!(!self.dirty[slot as usize], "checked by check_clean");
        self.store_row(slot, data)
    }

    /// Marks the row in `slot` dirty (updated in place).
    pub(super) fn mark_dirty(&mut self, slot: u32) {
        self.dirty[slot as usize] = true;
    }

    /// Forgets `row` (the policy already has); returns its slot and dirty bit.
    pub(super) fn detach(&mut self, row: u64) -> Result<(u32, bool), EngineError> {
        let slot = self.resident_slot(row)?;
        self.slot_of[row as usize] = NIL;
        self.free.push(slot);
        Ok((slot, self.dirty[slot as usize]))
    }

    /// Every row the tier holds.
    pub(super) fn resident_rows(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.used).filter(|&s| self.slot(self.row_in[s as usize]) == Some(s)).map(|s| self.row_in[s as usize])
    }

    /// `(row, slot)` of every resident dirty row.
    pub(super) fn dirty_rows(&self) -> Vec<(u64, u32)> {
        (0..self.used)
            .filter(|&s| self.dirty[s as usize] && self.slot(self.row_in[s as usize]) == Some(s))
            .map(|s| (self.row_in[s as usize], s))
            .collect()
    }

    /// Copies a dirty row out for writing down and marks it clean.
    pub(super) fn clean(&mut self, slot: u32, out: &mut [f32]) -> Result<(), EngineError> {
        self.load_row(slot, out)?;
        self.dirty[slot as usize] = false;
        self.stats.write_backs += 1;
        Ok(())
    }

    pub(super) fn load_row(&self, slot: u32, out: &mut [f32]) -> Result<(), EngineError> {
        Ok(self.slab.load(&[slot], out)?)
    }

    fn store_row(&mut self, slot: u32, row: &[f32]) -> Result<(), EngineError> {
        Ok(self.slab.store(&[slot], row)?)
    }
}

/// The device and host tiers, either of which may be absent.
pub(super) struct MemoryTiers {
    pub(super) device: Option<Tier>,
    pub(super) host: Option<Tier>,
}

impl MemoryTiers {
    /// The tier `level`, which placement says the table has.
    pub(super) fn tier_mut(&mut self, level: Level) -> Result<&mut Tier, EngineError> {
        let tier = match level {
            Level::Device => self.device.as_mut(),
            Level::Host => self.host.as_mut(),
        };
        // A match, not `ok_or`, as in `Tier::resident_slot`.
        match tier {
            Some(tier) => Ok(tier),
            None => Err(EngineError::NoTier { tier: level }),
        }
    }

    pub(super) fn holds(&self, level: Level, row: u64) -> bool {
        let tier = match level {
            Level::Device => &self.device,
            Level::Host => &self.host,
        };
        tier.as_ref().is_some_and(|tier| tier.slot(row).is_some())
    }

    /// Each tier's statistics (`None` for an absent tier).
    pub(super) fn stats(&self) -> (Option<TierStats>, Option<TierStats>) {
        (self.device.as_ref().map(|t| t.stats.clone()), self.host.as_ref().map(|t| t.stats.clone()))
    }

    /// The tiers there are, the device first.
    pub(super) fn present(&self) -> impl Iterator<Item = &Tier> {
        [self.device.as_ref(), self.host.as_ref()].into_iter().flatten()
    }

    /// The tier holding `row`'s newest copy (the device's, else the host's) and its
    /// slot there; `None` when only the store holds the row.
    pub(super) fn newest(&self, row: u64) -> Option<(&Tier, u32)> {
        self.present().find_map(|tier| tier.slot(row).map(|slot| (tier, slot)))
    }

    /// [`MemoryTiers::present`], writable.
    pub(super) fn present_mut(&mut self) -> impl Iterator<Item = &mut Tier> {
        [self.device.as_mut(), self.host.as_mut()].into_iter().flatten()
    }

    /// [`MemoryTiers::newest`], writable.
    pub(super) fn newest_mut(&mut self, row: u64) -> Option<(&mut Tier, u32)> {
        self.present_mut().find_map(|tier| tier.slot(row).map(|slot| (tier, slot)))
    }

    /// Whether a memory tier holds `row`.
    pub(super) fn in_memory(&self, row: u64) -> bool {
        self.newest(row).is_some()
    }

    /// Asks the CPU for `row`'s entries in the row -> slot maps.
    #[inline(always)]
    pub(super) fn prefetch_slots(&self, row: u64) {
        for tier in self.present() {
            strata_policies::prefetch_element(&tier.slot_of, row as usize);
        }
    }
}
