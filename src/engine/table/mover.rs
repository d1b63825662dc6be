//! Placement's moves carried out on the tiered table's slabs ([`Mover`]): the data
//! copies, dirty bits, rows written down and statistics of each [`Move`].

use super::staging::Staging;
use super::tier::MemoryTiers;
use crate::engine::placement::{Level, Move, Tiers, WriteBack};
use crate::engine::stats::EngineStats;
use crate::engine::EngineError;

/// The table's tiers as placement moves rows through them: each [`Move`] carried out
/// on the slabs (data copies, dirty bits, rows written down, statistics).
pub(super) struct Mover<'a> {
    pub(super) tiers: &'a mut MemoryTiers,
    pub(super) staging: &'a mut Staging,
    pub(super) stats: &'a mut EngineStats,
    /// Holds the row being moved.
    pub(super) row: &'a mut [f32],
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
                } else if self.staging.wants_victim(row) && !self.tiers.holds(Level::Device, row) {
                    let host = self.tiers.tier_mut(Level::Host)?;
                    host.load_row(slot, self.row)?;
                    self.staging.keep_victim(row, self.row, self.stats);
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
                            host.overwrite(slot, self.row)?;
                        }
                        WriteBack::ToStore => self.staging.write_down(row, self.row, self.stats),
                    }
                } else if write_back == WriteBack::ToStore && self.staging.wants_victim(row) {
                    device.load_row(slot, self.row)?;
                    self.stats.bytes_device_to_host += (self.row.len() * 4) as u64;
                    self.staging.keep_victim(row, self.row, self.stats);
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
                } else if self.staging.wants_victim(row) {
                    self.staging.keep_victim(row, self.row, self.stats);
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
