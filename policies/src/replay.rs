//! The trace-replay core: feeds requests to a policy and counts hits and misses.

use crate::{Admission, EvictionPolicy, Request};

/// Counts from replaying requests through one policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub requests: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl ReplayStats {
    pub fn hits(&self) -> u64 {
        self.requests - self.misses
    }
    pub fn miss_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.misses as f64 / self.requests as f64
        }
    }
}

/// Replays `requests` through `policy` (behind `admission`), adding to `stats`.
pub fn replay(policy: &mut dyn EvictionPolicy, admission: &mut Admission, requests: &[Request], stats: &mut ReplayStats) {
    if admission.admits_everything() {
        policy.access_batch(requests, stats);
        return;
    }
    stats.requests += requests.len() as u64;
    for req in requests {
        let resident = policy.contains(req.id);
        let admit = admission.observe(req.id, resident);
        if resident || admit {
            let access = policy.access(req);
            stats.misses += u64::from(!access.hit);
            stats.evictions += u64::from(access.evicted.is_some());
        } else {
            stats.misses += 1;
        }
    }
}
