//! The two-level cache of the engine replayed without rows: a device tier over a host
//! tier, each run by its own policy, moving rows exactly as `TieredTable::touch` does
//! for lookups (inclusive: the host sees the device's misses; exclusive: device victims
//! are demoted into the host and host hits move up), so the per-tier hit counts equal
//! the engine's. Optionally spatially sampled (SHARDS applied to any policy): only the
//! kept rows are replayed, through tiers scaled by the sampling rate.

use strata_policies::mrc::SpatialSampler;
use strata_policies::{EvictionPolicy, PolicyConfig, PolicyConfigError, Request, NEVER};

use crate::engine::table::Hierarchy;

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

/// A tier's policy and, for a policy that may count rows resident before they arrive
/// (static placement), which rows really are.
struct SimTier {
    policy: Box<dyn EvictionPolicy>,
    resident: Option<Vec<u64>>,
}

impl SimTier {
    fn new(policy: &PolicyConfig, rows: u64) -> Result<Option<SimTier>, PolicyConfigError> {
        if rows == 0 {
            return Ok(None);
        }
        let resident = matches!(policy, PolicyConfig::Static { .. }).then(Vec::new);
        Ok(Some(SimTier { policy: policy.build(rows as usize)?, resident }))
    }

    fn resident(&self, id: u64) -> bool {
        match &self.resident {
            Some(bits) => bits.get((id / 64) as usize).is_some_and(|w| w >> (id % 64) & 1 == 1),
            None => self.policy.contains(id),
        }
    }

    fn mark(&mut self, id: u64, resident: bool) {
        if let Some(bits) = self.resident.as_mut() {
            let word = (id / 64) as usize;
            if word >= bits.len() {
                bits.resize(word + 1, 0);
            }
            if resident {
                bits[word] |= 1 << (id % 64);
            } else {
                bits[word] &= !(1 << (id % 64));
            }
        }
    }

    /// A lookup served by this tier as a cache (`touch_host` in the engine).
    fn touch(&mut self, req: &Request) -> bool {
        let access = self.policy.access(req);
        if let Some(victim) = access.evicted {
            self.mark(victim, false);
        }
        if access.inserted {
            self.mark(req.id, true);
        }
        access.hit
    }
}

/// Replays lookups through one two-level set-up.
pub struct TwoLevel {
    config: TwoLevelConfig,
    sampler: SpatialSampler,
    device: Option<SimTier>,
    host: Option<SimTier>,
    /// Lookups before this stream position fill the tiers but are not counted.
    count_from: u64,
    counts: TierCounts,
    /// Lookups per batch (the store reads a batch's rows once), the batch being
    /// replayed, and the store rows it has read.
    batch_lookups: u64,
    batch: u64,
    read_in_batch: rustc_hash::FxHashSet<u64>,
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
        Ok(TwoLevel {
            config: config.clone(),
            sampler,
            device: SimTier::new(&policy, sampler.scale_capacity(config.device_rows))?,
            host: SimTier::new(&policy, sampler.scale_capacity(config.host_rows))?,
            count_from: 0,
            counts: TierCounts::default(),
            batch_lookups: u64::MAX,
            batch: 0,
            read_in_batch: Default::default(),
        })
    }

    /// Lookups before stream position `position` warm the tiers up without being counted.
    pub fn count_from(mut self, position: u64) -> Self {
        self.count_from = position;
        self
    }

    /// Lookups come in batches of `lookups` (default: one endless batch).
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
        self.counts
    }

    /// The counts of a sampled replay corrected as SHARDS_adj corrects a sampled curve:
    /// the kept rows took `counts().lookups` of the stream's `all_lookups` counted
    /// lookups, where `all_lookups * rate` were expected; the difference (mostly a hot
    /// row in or out of the sample) is credited to the top tier as hits, which is where
    /// the hottest rows are served. Unsampled counts come back as they are.
    pub fn shards_adjusted_counts(&self, all_lookups: u64) -> TierCounts {
        let c = self.counts;
        if self.sampler.keeps_all() {
            return c;
        }
        let expected = (all_lookups as f64 * self.sampler.rate()).round() as i64;
        let shift = expected - c.lookups as i64;
        let add = |x: u64| (x as i64 + shift).max(0) as u64;
        let mut adjusted = TierCounts { lookups: expected.max(0) as u64, ..c };
        // The credited lookups are memory hits: the store's reads stay as counted.
        if self.device.is_some() {
            adjusted.device_hits = add(c.device_hits).min(adjusted.lookups);
        } else if self.host.is_some() {
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

    /// One lookup, as `TieredTable::touch` places it.
    /// Returns whether the store served it.
    fn place(&mut self, req: Request) -> bool {
        let counted = req.time >= self.count_from;
        let c = &mut self.counts;
        c.lookups += u64::from(counted);
        let Some(device) = self.device.as_mut() else {
            if let Some(host) = self.host.as_mut() {
                let hit = host.touch(&req);
                c.host_lookups += u64::from(counted);
                c.host_hits += u64::from(counted && hit);
                return !hit;
            }
            return true;
        };
        let access = device.policy.access(&req);
        let arrives = access.hit && !device.resident(req.id);
        let device_hit = access.hit && !arrives;
        c.device_hits += u64::from(counted && device_hit);
        if let Some(victim) = access.evicted {
            device.mark(victim, false);
            if self.config.hierarchy == Hierarchy::Exclusive {
                // Demoted into the host (the engine's clock has counted this lookup).
                if let Some(host) = self.host.as_mut() {
                    host.touch(&Request::new(victim, req.time + 1));
                }
            }
        }
        if device_hit {
            return false;
        }
        let Some(host) = self.host.as_mut() else {
            if access.inserted || arrives {
                device.mark(req.id, true);
            }
            return true;
        };
        c.host_lookups += u64::from(counted);
        if !access.inserted && !arrives {
            let hit = host.touch(&req);
            c.host_hits += u64::from(counted && hit);
            return !hit;
        }
        device.mark(req.id, true);
        let hit = match self.config.hierarchy {
            Hierarchy::Inclusive => host.touch(&req),
            Hierarchy::Exclusive => {
                let resident = host.resident(req.id);
                if resident {
                    host.policy.remove(req.id);
                    host.mark(req.id, false);
                }
                resident
            }
        };
        c.host_hits += u64::from(counted && hit);
        !hit
    }

    /// One lookup: placed, and when the store serves it, counted as a store read unless
    /// its batch already read that row (the engine reads a batch's rows once).
    fn lookup(&mut self, req: Request) {
        let from_store = self.place(req);
        if from_store && req.time >= self.count_from {
            let batch = req.time / self.batch_lookups;
            if batch != self.batch {
                self.batch = batch;
                self.read_in_batch.clear();
            }
            self.counts.store_reads += u64::from(self.read_in_batch.insert(req.id));
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
