//! Placement: the one copy of the rules that move a looked-up row between the device
//! tier and the host tier. Given the two tiers' policies and a lookup, [`Placement`]
//! calls the policies and decides the [`Move`]s, in order; it holds no rows.
//! [`TieredTable`](super::table::TieredTable) carries the moves out on its slabs, and
//! the planner's two-level replay ([`TwoLevel`](crate::sim::TwoLevel)) only counts
//! them, so the two cannot drift apart.
//!
//! The data path of one lookup, as the moves tell it:
//! - the device's policy looks the row up ([`Move::Looked`]); a device hit is served
//!   from there. Its victim, if it evicted one, leaves the device: inclusive, a dirty
//!   copy is written back into the host's copy or down to the store
//!   ([`Move::EvictFromDevice`]); exclusive, it is demoted into the host
//!   ([`Move::Demote`]) unless the host refuses it ([`Move::DemotionRefused`]).
//! - a device miss the device does not admit is looked up in the host as in a cache of
//!   its own: the host's policy may evict ([`Move::EvictFromHost`]) and admit the row
//!   from the store ([`Move::PromoteFromStore`]).
//! - a row the device admits comes up from the host (inclusive: a copy,
//!   [`Move::CopyUpFromHost`], after the host has seen the lookup; exclusive: the row
//!   itself, [`Move::MoveUpFromHost`]) or else from the store.
//!
//! Pins: the engine pins each row of a batch in both tiers' policies as the row is
//! placed ([`Placement::pin`]), and unpins them all when the next batch starts
//! ([`Placement::unpin_all`]), so that a batch never evicts a row it has looked up, and
//! the rows stay through the batch's gradient update. A pinned row is never a victim;
//! a tier whose rows are all pinned does not admit a miss, which is then served from
//! below (the store's copy, or the host's when the device refuses). Rows are pinned as
//! they are placed, not all before: a row of the batch not looked up yet sits anywhere in
//! a policy's order, and passing over it at every eviction cost the default job 60 ms a
//! step (docs/BENCHMARKS.md), where a row just looked up sits where no victim is sought.

use serde::{Deserialize, Serialize};
use strata_policies::{EvictionPolicy, Request};

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

/// One of the two memory tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Device,
    Host,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Device => "device",
            Level::Host => "host",
        })
    }
}

/// Where a dirty row leaving the device is written back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteBack {
    /// Into the row's copy in the host, which becomes dirty.
    IntoHostCopy,
    /// Down to the store.
    ToStore,
}

/// One step of placing a looked-up row. Every move names only tiers that exist, and
/// the moves of one lookup are carried out in the order they are decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// The lookup reached `tier`, whose policy held the row (`hit`) or not: one hit or
    /// one miss in that tier's statistics. A device hit is the whole placement.
    Looked { tier: Level, hit: bool },
    /// The host's policy evicted `row`: it leaves the host, and a dirty row is written
    /// down to the store.
    EvictFromHost { row: u64 },
    /// Inclusive: the device's policy evicted `row`. It leaves the device; a dirty row
    /// is written back as `write_back` says, a clean one dropped (the copy below is as
    /// new).
    EvictFromDevice { row: u64, write_back: WriteBack },
    /// Exclusive: the device's policy evicted `row` and the host admitted it: the row
    /// moves down into the host, dirty or not.
    Demote { row: u64 },
    /// Exclusive: the device's policy evicted `row` and the host refused it (or there is
    /// no host). Read out of the device to be demoted, it is written down to the store
    /// when dirty and dropped when clean.
    DemotionRefused { row: u64 },
    /// `row` comes into `into`, clean, from the store (the copy read ahead, the copy
    /// this step queued for the store, or a read now).
    PromoteFromStore { row: u64, into: Level },
    /// Inclusive: `row` comes into the device, clean, copied from the host, which keeps
    /// its copy.
    CopyUpFromHost { row: u64 },
    /// Exclusive: `row` moves from the host up into the device, dirty or not.
    MoveUpFromHost { row: u64 },
}

/// The tiers rows are placed in, as placement sees them: whether a tier really holds a
/// row, and a way to carry out each move as soon as it is decided (so that the next
/// question sees its effect).
pub trait Tiers {
    type Error;

    /// Whether `tier` holds `row` now (false for a tier that does not exist). A policy
    /// may count a row resident that has not arrived: static placement pins its hot set
    /// when profiling ends, and the rows come in on their first lookups.
    fn holds(&self, tier: Level, row: u64) -> bool;

    /// Carries out one move.
    fn carry_out(&mut self, step: Move) -> Result<(), Self::Error>;
}

/// The policies of the device and host tiers (`None` where there is no such tier),
/// how the tiers relate, and the lookups placed so far.
pub struct Placement {
    hierarchy: Hierarchy,
    device: Option<Box<dyn EvictionPolicy>>,
    host: Option<Box<dyn EvictionPolicy>>,
    /// Lookups placed so far, the one being placed included: the request time at which
    /// the host sees a demoted row.
    placed: u64,
}

impl Placement {
    pub fn new(hierarchy: Hierarchy, device: Option<Box<dyn EvictionPolicy>>, host: Option<Box<dyn EvictionPolicy>>) -> Self {
        Placement { hierarchy, device, host, placed: 0 }
    }

    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    pub fn has(&self, tier: Level) -> bool {
        match tier {
            Level::Device => self.device.is_some(),
            Level::Host => self.host.is_some(),
        }
    }

    /// Lookups placed so far.
    pub fn placed(&self) -> u64 {
        self.placed
    }

    /// Unpins every row (a new batch starts).
    pub fn unpin_all(&mut self) {
        for policy in [&mut self.device, &mut self.host].into_iter().flatten() {
            policy.unpin_all();
        }
    }

    /// Pins `row` in both tiers' policies, with the rows pinned so far: a row the batch
    /// being placed has looked up.
    pub fn pin(&mut self, row: u64) {
        for policy in [&mut self.device, &mut self.host].into_iter().flatten() {
            policy.pin(row);
        }
    }

    /// Asks the CPU for both policies' metadata of `row` (their cache misses dominate).
    #[inline]
    pub fn prefetch(&self, row: u64) {
        for policy in [&self.device, &self.host].into_iter().flatten() {
            policy.prefetch(row);
        }
    }

    /// Places one lookup: calls the policies and carries out the moves they decide on
    /// `tiers`, in order.
    pub fn place<T: Tiers>(&mut self, req: &Request, tiers: &mut T) -> Result<(), T::Error> {
        self.placed += 1;
        let Some(device) = self.device.as_mut() else { return self.look_in_host(req, tiers) };
        let access = device.access(req);
        // A row the policy counts resident that never came in comes in now, a miss.
        let arrives = access.hit && !tiers.holds(Level::Device, req.id);
        let hit = access.hit && !arrives;
        tiers.carry_out(Move::Looked { tier: Level::Device, hit })?;
        if let Some(victim) = access.evicted {
            self.evict_from_device(victim, tiers)?;
        }
        if hit {
            return Ok(());
        }
        if !access.inserted && !arrives {
            return self.look_in_host(req, tiers);
        }
        // The row enters the device: from the host or the store.
        let from_host = match self.hierarchy {
            Hierarchy::Inclusive => {
                self.look_in_host(req, tiers)?;
                self.host.is_some() && tiers.holds(Level::Host, req.id)
            }
            Hierarchy::Exclusive => match self.host.as_mut() {
                Some(host) => {
                    let held = tiers.holds(Level::Host, req.id);
                    tiers.carry_out(Move::Looked { tier: Level::Host, hit: held })?;
                    if held {
                        host.remove(req.id);
                    }
                    held
                }
                None => false,
            },
        };
        tiers.carry_out(match (from_host, self.hierarchy) {
            (false, _) => Move::PromoteFromStore { row: req.id, into: Level::Device },
            (true, Hierarchy::Inclusive) => Move::CopyUpFromHost { row: req.id },
            (true, Hierarchy::Exclusive) => Move::MoveUpFromHost { row: req.id },
        })
    }

    /// The host serves a lookup as a cache of its own (the device missed it or did not
    /// admit it; inclusive, the host also sees the lookups the device admits).
    fn look_in_host<T: Tiers>(&mut self, req: &Request, tiers: &mut T) -> Result<(), T::Error> {
        let Some(host) = self.host.as_mut() else { return Ok(()) };
        let access = host.access(req);
        tiers.carry_out(Move::Looked { tier: Level::Host, hit: access.hit })?;
        // Even a hit may evict (W-TinyLFU rebalancing its segments).
        if let Some(victim) = access.evicted {
            tiers.carry_out(Move::EvictFromHost { row: victim })?;
        }
        if access.inserted {
            tiers.carry_out(Move::PromoteFromStore { row: req.id, into: Level::Host })?;
        }
        Ok(())
    }

    /// `row`, the device's victim, leaves the device.
    fn evict_from_device<T: Tiers>(&mut self, row: u64, tiers: &mut T) -> Result<(), T::Error> {
        match self.hierarchy {
            Hierarchy::Inclusive => {
                let write_back = if tiers.holds(Level::Host, row) { WriteBack::IntoHostCopy } else { WriteBack::ToStore };
                tiers.carry_out(Move::EvictFromDevice { row, write_back })
            }
            Hierarchy::Exclusive => {
                let admitted = match self.host.as_mut() {
                    Some(host) => {
                        let access = host.access(&Request::new(row, self.placed));
                        debug_assert!(!access.hit, "exclusive: a device row is not in the host");
                        if let Some(victim) = access.evicted {
                            tiers.carry_out(Move::EvictFromHost { row: victim })?;
                        }
                        access.inserted
                    }
                    None => false,
                };
                tiers.carry_out(if admitted { Move::Demote { row } } else { Move::DemotionRefused { row } })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_policies::PolicyConfig;

    /// Residency kept from the moves, and the moves themselves.
    #[derive(Default)]
    struct Recorder {
        device: std::collections::BTreeSet<u64>,
        host: std::collections::BTreeSet<u64>,
        moves: Vec<Move>,
    }

    impl Tiers for Recorder {
        type Error = std::convert::Infallible;

        fn holds(&self, tier: Level, row: u64) -> bool {
            match tier {
                Device => self.device.contains(&row),
                Host => self.host.contains(&row),
            }
        }

        fn carry_out(&mut self, step: Move) -> Result<(), Self::Error> {
            match step {
                Move::Looked { .. } => {}
                Move::EvictFromHost { row } => assert!(self.host.remove(&row)),
                Move::EvictFromDevice { row, .. } | Move::DemotionRefused { row } => assert!(self.device.remove(&row)),
                Move::Demote { row } => assert!(self.device.remove(&row) && self.host.insert(row)),
                Move::PromoteFromStore { row, into: Device } | Move::CopyUpFromHost { row } => assert!(self.device.insert(row)),
                Move::PromoteFromStore { row, into: Host } => assert!(self.host.insert(row)),
                Move::MoveUpFromHost { row } => assert!(self.host.remove(&row) && self.device.insert(row)),
            }
            self.moves.push(step);
            Ok(())
        }
    }

    fn placement(hierarchy: Hierarchy, policy: &str, device: usize, host: usize) -> Placement {
        let policy = PolicyConfig::from_name(policy).unwrap();
        let build = |rows: usize| (rows > 0).then(|| policy.build(rows).unwrap());
        Placement::new(hierarchy, build(device), build(host))
    }

    /// The moves of looking up `rows` in turn.
    fn moves(placement: &mut Placement, tiers: &mut Recorder, rows: &[u64]) -> Vec<Move> {
        place_rows(placement, tiers, rows, false)
    }

    /// The moves of looking up `rows` in turn, each pinned once placed, as the engine
    /// places a batch.
    fn pinned_moves(placement: &mut Placement, tiers: &mut Recorder, rows: &[u64]) -> Vec<Move> {
        place_rows(placement, tiers, rows, true)
    }

    fn place_rows(placement: &mut Placement, tiers: &mut Recorder, rows: &[u64], pin: bool) -> Vec<Move> {
        tiers.moves.clear();
        for (time, &id) in rows.iter().enumerate() {
            placement.place(&Request::new(id, time as u64), tiers).unwrap();
            if pin {
                placement.pin(id);
            }
        }
        std::mem::take(&mut tiers.moves)
    }

    use Level::{Device, Host};

    #[test]
    fn inclusive_rows_come_up_through_the_host_and_dirty_victims_go_back_into_its_copy() {
        let mut p = placement(Hierarchy::Inclusive, "lru", 1, 2);
        let mut tiers = Recorder::default();
        assert_eq!(
            moves(&mut p, &mut tiers, &[1]),
            [
                Move::Looked { tier: Device, hit: false },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 1, into: Host },
                Move::CopyUpFromHost { row: 1 },
            ]
        );
        assert_eq!(
            moves(&mut p, &mut tiers, &[2, 2]),
            [
                Move::Looked { tier: Device, hit: false },
                Move::EvictFromDevice { row: 1, write_back: WriteBack::IntoHostCopy },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 2, into: Host },
                Move::CopyUpFromHost { row: 2 },
                Move::Looked { tier: Device, hit: true },
            ]
        );
        // Row 3 pushes row 2 out of the device (into its host copy), row 1 out of the host.
        assert_eq!(
            moves(&mut p, &mut tiers, &[3]),
            [
                Move::Looked { tier: Device, hit: false },
                Move::EvictFromDevice { row: 2, write_back: WriteBack::IntoHostCopy },
                Move::Looked { tier: Host, hit: false },
                Move::EvictFromHost { row: 1 },
                Move::PromoteFromStore { row: 3, into: Host },
                Move::CopyUpFromHost { row: 3 },
            ]
        );
    }

    #[test]
    fn exclusive_victims_move_down_and_host_rows_move_up() {
        let mut p = placement(Hierarchy::Exclusive, "lru", 1, 1);
        let mut tiers = Recorder::default();
        assert_eq!(
            moves(&mut p, &mut tiers, &[1, 2]),
            [
                Move::Looked { tier: Device, hit: false },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 1, into: Device },
                Move::Looked { tier: Device, hit: false },
                Move::Demote { row: 1 },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 2, into: Device },
            ]
        );
        assert_eq!(
            moves(&mut p, &mut tiers, &[1]),
            [
                Move::Looked { tier: Device, hit: false },
                // Demoting row 2 pushes row 1 out of the host before it can move up.
                Move::EvictFromHost { row: 1 },
                Move::Demote { row: 2 },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 1, into: Device },
            ]
        );
        let mut p = placement(Hierarchy::Exclusive, "lru", 1, 2);
        let mut tiers = Recorder::default();
        assert_eq!(moves(&mut p, &mut tiers, &[1, 2, 1])[9..], [Move::Looked { tier: Host, hit: true }, Move::MoveUpFromHost { row: 1 }]);
    }

    #[test]
    fn without_a_host_victims_are_refused_and_rows_come_from_the_store() {
        let mut p = placement(Hierarchy::Exclusive, "lru", 1, 0);
        let mut tiers = Recorder::default();
        assert_eq!(
            moves(&mut p, &mut tiers, &[1, 2])[2..],
            [Move::Looked { tier: Device, hit: false }, Move::DemotionRefused { row: 1 }, Move::PromoteFromStore { row: 2, into: Device }]
        );
        let mut p = placement(Hierarchy::Inclusive, "lru", 1, 0);
        let mut tiers = Recorder::default();
        assert_eq!(moves(&mut p, &mut tiers, &[1, 2])[3], Move::EvictFromDevice { row: 1, write_back: WriteBack::ToStore });
        let mut p = placement(Hierarchy::Inclusive, "lru", 0, 1);
        let mut tiers = Recorder::default();
        assert_eq!(
            moves(&mut p, &mut tiers, &[1, 1]),
            [
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 1, into: Host },
                Move::Looked { tier: Host, hit: true }
            ]
        );
    }

    #[test]
    fn a_pinned_batch_keeps_its_rows_and_a_full_tier_refuses_the_rest() {
        let mut p = placement(Hierarchy::Inclusive, "lru", 1, 2);
        let mut tiers = Recorder::default();
        // The device holds row 1, pinned once looked up: row 2 is not admitted there, only
        // in the host.
        assert_eq!(
            pinned_moves(&mut p, &mut tiers, &[1, 2])[4..],
            [
                Move::Looked { tier: Device, hit: false },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 2, into: Host }
            ]
        );
        let mut p = placement(Hierarchy::Exclusive, "lru", 1, 1);
        let mut tiers = Recorder::default();
        // 1 fills the device, 2 the host; both full of pinned rows, 3 is in neither.
        assert_eq!(
            pinned_moves(&mut p, &mut tiers, &[1, 2, 3])[3..],
            [
                Move::Looked { tier: Device, hit: false },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 2, into: Host },
                Move::Looked { tier: Device, hit: false },
                Move::Looked { tier: Host, hit: false },
            ]
        );
        // The next batch unpins them: 3 comes in, 1 is demoted, 2 leaves.
        p.unpin_all();
        assert_eq!(
            pinned_moves(&mut p, &mut tiers, &[3]),
            [
                Move::Looked { tier: Device, hit: false },
                Move::EvictFromHost { row: 2 },
                Move::Demote { row: 1 },
                Move::Looked { tier: Host, hit: false },
                Move::PromoteFromStore { row: 3, into: Device },
            ]
        );
    }

    #[test]
    fn statically_pinned_rows_arrive_on_their_first_lookup_as_misses() {
        let mut p = placement(Hierarchy::Inclusive, "static:2", 1, 0);
        let mut tiers = Recorder::default();
        // Profiling: two lookups of row 5, neither admitted.
        assert_eq!(moves(&mut p, &mut tiers, &[5, 5]), [Move::Looked { tier: Device, hit: false }; 2]);
        assert_eq!(
            moves(&mut p, &mut tiers, &[5, 5]),
            [
                Move::Looked { tier: Device, hit: false },
                Move::PromoteFromStore { row: 5, into: Device },
                Move::Looked { tier: Device, hit: true }
            ]
        );
    }
}
