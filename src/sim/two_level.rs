//! The two-level cache of the engine replayed without rows: a device tier over a host
//! tier, each run by its own policy, placed by the engine's own placement core
//! (`engine::placement`: inclusive, the host sees the device's misses; exclusive,
//! device victims are demoted into the host and host hits move up), whose moves are
//! only counted here, so the per-tier hit counts equal the engine's. Lookups in batches
//! pin their rows as they are placed, until the next batch, as the engine does.
//! Optionally spatially sampled (SHARDS applied to any policy): only the
//! kept rows are replayed, through tiers scaled by the sampling rate.

use strata_policies::mrc::SpatialSampler;
use strata_policies::{PolicyConfig, PolicyConfigError, Request, NEVER};

use crate::engine::placement::{Hierarchy, Level, Move, Placement, Tiers};

/// One two-level set-up: a policy (the same in both tiers), the tier sizes in rows
/// (0 = no such tier) and how the tiers relate.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoLevelConfig {
    pub policy: PolicyConfig,
    pub device_rows: u64,
    pub host_rows: u64,
    pub hierarchy: Hierarchy,
}

/// Lookups counted by the tier that served them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierCounts {
    pub lookups: u64,
    /// Lookups the device tier hit.
    pub device_hits: u64,
    /// Lookups that reached the host tier (device misses).
    pub host_lookups: u64,
    /// Lookups the host tier hit.
    pub host_hits: u64,
    /// Rows read from the store: the store's lookups, each row once per batch.
    pub store_reads: u64,
}

impl TierCounts {
    /// Fraction of all lookups served by the device.
    pub fn device_share(&self) -> f64 {
        self.device_hits as f64 / self.lookups.max(1) as f64
    }

    /// Fraction of all lookups served by the host.
    pub fn host_share(&self) -> f64 {
        self.host_hits as f64 / self.lookups.max(1) as f64
    }

    /// Fraction of all lookups served by the store.
    pub fn store_share(&self) -> f64 {
        1.0 - self.device_share() - self.host_share()
    }

    /// Rows read from the store per lookup (below the store share when a batch looks
    /// up one stored row more than once).
    pub fn store_reads_per_lookup(&self) -> f64 {
        self.store_reads as f64 / self.lookups.max(1) as f64
    }

    /// The host's hit ratio as the engine counts it: of the lookups that reached it.
    pub fn host_hit_ratio(&self) -> f64 {
        self.host_hits as f64 / self.host_lookups.max(1) as f64
    }
}

/// Rows by id, one bit each.
#[derive(Default)]
struct RowSet(Vec<u64>);

impl RowSet {
    fn contains(&self, id: u64) -> bool {
        self.0.get((id / 64) as usize).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    fn insert(&mut self, id: u64) {
        let word = (id / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (id % 64);
    }

    fn remove(&mut self, id: u64) {
        if let Some(word) = self.0.get_mut((id / 64) as usize) {
            *word &= !(1 << (id % 64));
        }
    }
}

/// The two tiers as the replay keeps them: which rows each really holds (a static
/// placement counts rows resident before they arrive), kept from placement's moves,
/// and the counts of the lookups served.
#[derive(Default)]
struct SimTiers {
    device: RowSet,
    host: RowSet,
    counts: TierCounts,
    /// The lookup being placed is counted.
    counted: bool,
    /// A memory tier hit the lookup being placed.
    served: bool,
    /// Rows that left both memory tiers during the batch being replayed: the engine
    /// keeps them for the rest of the batch's step, so a later lookup reads nothing.
    left_in_batch: rustc_hash::FxHashSet<u64>,
}

impl SimTiers {
    fn rows(&mut self, tier: Level) -> &mut RowSet {
        match tier {
            Level::Device => &mut self.device,
            Level::Host => &mut self.host,
        }
    }
}

impl Tiers for SimTiers {
    type Error = std::convert::Infallible;

    fn holds(&self, tier: Level, row: u64) -> bool {
        match tier {
            Level::Device => self.device.contains(row),
            Level::Host => self.host.contains(row),
        }
    }

    fn carry_out(&mut self, step: Move) -> Result<(), Self::Error> {
        let counted = u64::from(self.counted);
        match step {
            Move::Looked { tier, hit } => {
                self.served |= hit;
                let c = &mut self.counts;
                match tier {
                    Level::Device => c.device_hits += counted * u64::from(hit),
                    Level::Host => {
                        c.host_lookups += counted;
                        c.host_hits += counted * u64::from(hit);
                    }
                }
            }
            Move::EvictFromHost { row } => {
                self.host.remove(row);
                if !self.device.contains(row) {
                    self.left_in_batch.insert(row);
                }
            }
            Move::EvictFromDevice { row, .. } | Move::DemotionRefused { row } => {
                self.device.remove(row);
                if !self.host.contains(row) {
                    self.left_in_batch.insert(row);
                }
            }
            Move::Demote { row } => {
                self.device.remove(row);
                self.host.insert(row);
            }
            Move::PromoteFromStore { row, into } => self.rows(into).insert(row),
            Move::CopyUpFromHost { row } => self.device.insert(row),
            Move::MoveUpFromHost { row } => {
                self.host.remove(row);
                self.device.insert(row);
            }
        }
        Ok(())
    }
}

/// Replays lookups through one two-level set-up.
pub struct TwoLevel {
    config: TwoLevelConfig,
    sampler: SpatialSampler,
    placement: Placement,
    tiers: SimTiers,
    /// Lookups before this stream position fill the tiers but are not counted.
    count_from: u64,
    /// Lookups per batch (the store reads a batch's rows once), the batch being
    /// replayed, and the rows it has looked up.
    batch_lookups: u64,
    batch: u64,
    looked_up_in_batch: rustc_hash::FxHashSet<u64>,
}

impl TwoLevel {
    /// Every lookup replayed through tiers of the configured sizes.
    pub fn new(config: &TwoLevelConfig) -> Result<TwoLevel, PolicyConfigError> {
        Self::sampled(config, SpatialSampler::new(1.0))
    }

    /// Only the rows `sampler` keeps, through tiers scaled by its rate (and a static
    /// placement's profiling length or an LFU's explicit aging period scaled alike).
    pub fn sampled(config: &TwoLevelConfig, sampler: SpatialSampler) -> Result<TwoLevel, PolicyConfigError> {
        let policy = scaled_policy(&config.policy, sampler.rate());
        let tier = |rows: u64| match sampler.scale_capacity(rows) {
            0 => Ok(None),
            rows => policy.build(rows as usize).map(Some),
        };
        Ok(TwoLevel {
            config: config.clone(),
            sampler,
            placement: Placement::new(config.hierarchy, tier(config.device_rows)?, tier(config.host_rows)?),
            tiers: SimTiers::default(),
            count_from: 0,
            batch_lookups: u64::MAX,
            batch: 0,
            looked_up_in_batch: Default::default(),
        })
    }

    /// Lookups before stream position `position` warm the tiers up without being counted.
    pub fn count_from(mut self, position: u64) -> Self {
        self.count_from = position;
        self
    }

    /// Lookups come in batches of `lookups` (default: one endless batch, nothing pinned):
    /// each lookup pins its row until the next batch starts, as the engine's do.
    pub fn batches_of(mut self, lookups: u64) -> Self {
        self.batch_lookups = lookups.max(1);
        self
    }

    pub fn config(&self) -> &TwoLevelConfig {
        &self.config
    }

    pub fn sampler(&self) -> SpatialSampler {
        self.sampler
    }

    /// The counts so far (of the kept rows' lookups when sampling).
    pub fn counts(&self) -> TierCounts {
        self.tiers.counts
    }

    /// The counts of a sampled replay corrected as SHARDS_adj corrects a sampled curve:
    /// the kept rows took `counts().lookups` of the stream's `all_lookups` counted
    /// lookups, where `all_lookups * rate` were expected; the difference (mostly a hot
    /// row in or out of the sample) is credited to the top tier as hits, which is where
    /// the hottest rows are served. Unsampled counts come back as they are.
    pub fn shards_adjusted_counts(&self, all_lookups: u64) -> TierCounts {
        let c = self.tiers.counts;
        if self.sampler.keeps_all() {
            return c;
        }
        let expected = (all_lookups as f64 * self.sampler.rate()).round() as i64;
        let shift = expected - c.lookups as i64;
        let add = |x: u64| (x as i64 + shift).max(0) as u64;
        let mut adjusted = TierCounts { lookups: expected.max(0) as u64, ..c };
        // The credited lookups are memory hits: the store's reads stay as counted.
        if self.placement.has(Level::Device) {
            adjusted.device_hits = add(c.device_hits).min(adjusted.lookups);
        } else if self.placement.has(Level::Host) {
            adjusted.host_lookups = adjusted.lookups;
            adjusted.host_hits = add(c.host_hits).min(adjusted.lookups);
        }
        adjusted
    }

    /// Replays lookups (`time` = stream position) of rows the sampler keeps: the caller
    /// filters once for every set-up sharing a sampler (and may renumber the kept rows).
    pub fn replay(&mut self, requests: &[Request]) {
        for req in requests {
            self.lookup(Request { next_access: NEVER, ..*req });
        }
    }

    /// Replays the lookups of `ids`, the first at stream position `start`, skipping the
    /// rows the sampler leaves out.
    pub fn replay_ids(&mut self, ids: &[u64], start: u64) {
        for (i, &id) in ids.iter().enumerate() {
            if self.sampler.keeps(id) {
                self.lookup(Request { id, time: start + i as u64, next_access: NEVER });
            }
        }
    }

    /// One lookup: placed, and when no memory tier served it, counted as a store read
    /// if it is its row's first lookup in the batch and the row did not leave the
    /// memory tiers earlier in the batch. The engine reads a batch's rows once: a row in
    /// memory when the batch starts is never read for it (one the batch pushes out is
    /// kept for the rest of its step), and one that is not is read once.
    fn lookup(&mut self, req: Request) {
        let batch = req.time / self.batch_lookups;
        if batch != self.batch {
            self.batch = batch;
            self.looked_up_in_batch.clear();
            self.tiers.left_in_batch.clear();
            self.placement.unpin_all();
        }
        let counted = req.time >= self.count_from;
        let tiers = &mut self.tiers;
        tiers.counted = counted;
        tiers.served = false;
        tiers.counts.lookups += u64::from(counted);
        let Ok(()) = self.placement.place(&req, tiers);
        if self.batch_lookups != u64::MAX {
            self.placement.pin(req.id);
        }
        let first = self.looked_up_in_batch.insert(req.id) && !tiers.left_in_batch.contains(&req.id);
        if !tiers.served && counted && first {
            tiers.counts.store_reads += 1;
        }
    }
}

/// `policy` for a replay of a `rate` sample of the rows: request counts it is
/// configured with (a static placement's profiling length, an explicit LFU aging
/// period) shrink with the requests.
fn scaled_policy(policy: &PolicyConfig, rate: f64) -> PolicyConfig {
    let scale = |n: u64| ((n as f64 * rate).round() as u64).max(1);
    match policy {
        PolicyConfig::Static { profile_requests } if rate < 1.0 => PolicyConfig::Static { profile_requests: scale(*profile_requests) },
        PolicyConfig::Lfu { aging_period: Some(p) } if rate < 1.0 && *p > 0 => PolicyConfig::Lfu { aging_period: Some(scale(*p)) },
        other => other.clone(),
    }
}
