//! Static placement: profile row frequencies, then pin the hottest rows forever.

use crate::{Access, EvictionPolicy, Request};

/// Static frequency-ranked placement, the classic "hot embedding rows live on the GPU"
/// setup (e.g. FAE: Adnan, Maboud, Mahajan and Nair, "Accelerating Recommendation System
/// Training by Leveraging Popular Choices", VLDB 2022, which profiles a sample of the
/// input to place hot embedding rows on the GPU). During the first `profile_requests` requests it only counts
/// frequencies and caches nothing (every request misses); it then pins the
/// `capacity` most frequent rows (ties broken by lower id) and from then on serves hits
/// for pinned rows and misses for everything else, never inserting or evicting.
/// libCacheSim has no equivalent.
#[derive(Debug)]
pub struct StaticPlacement {
    capacity: usize,
    profile_requests: u64,
    seen: u64,
    counts: Vec<u32>,
    pinned: Vec<bool>,
    len: usize,
}

impl StaticPlacement {
    /// A static cache of `capacity` rows profiled over `profile_requests` requests.
    /// Panics if `capacity` is 0.
    pub fn new(capacity: usize, profile_requests: u64) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        StaticPlacement { capacity, profile_requests, seen: 0, counts: Vec::new(), pinned: Vec::new(), len: 0 }
    }

    /// Whether the profiling phase is over (rows are pinned).
    pub fn is_pinned(&self) -> bool {
        self.seen >= self.profile_requests
    }

    fn pin(&mut self) {
        let mut ranked: Vec<(u32, u64)> = self.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(id, &c)| (c, id as u64)).collect();
        // Highest count first, then lower id.
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.truncate(self.capacity);
        self.pinned = vec![false; self.counts.len()];
        for &(_, id) in &ranked {
            self.pinned[id as usize] = true;
        }
        self.len = ranked.len();
        self.counts = Vec::new();
    }
}

impl EvictionPolicy for StaticPlacement {
    fn name(&self) -> &'static str {
        "static"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn contains(&self, id: u64) -> bool {
        self.pinned.get(id as usize).copied().unwrap_or(false)
    }

    fn access(&mut self, req: &Request) -> Access {
        if self.seen < self.profile_requests {
            let i = req.id as usize;
            if i >= self.counts.len() {
                let n = (i + 1).max(self.counts.len() * 2).max(1024);
                self.counts.resize(n, 0);
            }
            self.counts[i] = self.counts[i].saturating_add(1);
            self.seen += 1;
            if self.seen == self.profile_requests {
                self.pin();
            }
            return Access::default();
        }
        Access { hit: self.contains(req.id), inserted: false, evicted: None }
    }

    /// Static placement never evicts (its hot set stays, the rest is never admitted),
    /// so a pin holds with nothing to record.
    fn pin(&mut self, _id: u64) {}
    fn unpin_all(&mut self) {}

    fn remove(&mut self, id: u64) -> bool {
        match self.pinned.get_mut(id as usize) {
            Some(p) if *p => {
                *p = false;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }
}
