//! Miss-ratio curves in one pass: exact LRU curves from stack distances (Mattson et al.,
//! 1970) and SHARDS spatially sampled curves for long traces (Waldspurger et al., FAST
//! 2015, the `SHARDS_adj` correction).
//!
//! The LRU stack distance of a request is the number of distinct other rows requested
//! since the previous request for the same row; a cache of `c` rows hits exactly the
//! requests whose distance is below `c`. Distances are counted with a Fenwick tree over
//! "last access" markers that is compacted when full, so memory stays proportional to
//! the distinct rows, not to the trace length.

const NOT_SEEN: u32 = u32::MAX;

/// Accumulates the LRU stack-distance histogram of a request stream over dense ids.
#[derive(Clone, Debug)]
pub struct StackDistances {
    /// Dense id -> marker slot of its last access (NOT_SEEN if never seen or unsampled).
    last_slot: Vec<u32>,
    /// Slot -> dense id owning the marker there (NOT_SEEN if free).
    slot_owner: Vec<u32>,
    /// Fenwick tree (1-based) counting live markers per slot.
    fenwick: Vec<u32>,
    next_slot: usize,
    live: usize,
    /// `histogram[d]`: sampled requests at stack distance `d` (in sampled rows).
    histogram: Vec<u64>,
    cold_misses: u64,
    sampled_requests: u64,
    requests: u64,
    /// Spatial sampling: which rows are tracked.
    sampler: SpatialSampler,
}

const MODULUS: u64 = 1 << 24;

fn hash(id: u64) -> u64 {
    let mut x = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// SHARDS spatial sampling: a row is kept when `hash(id) % 2^24 < threshold`, so a
/// kept row keeps every one of its requests, and a cache of `c` rows over the kept
/// rows behaves like one of `c / rate` rows over all of them. Shared by the sampled
/// LRU curve and the planner's sampled policy simulations, so both see the same rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpatialSampler {
    threshold: u64,
}

impl SpatialSampler {
    /// Keeps about `rate` (clamped into (0, 1]) of the rows; 1.0 keeps every row.
    pub fn new(rate: f64) -> Self {
        SpatialSampler { threshold: ((rate.clamp(0.0, 1.0) * MODULUS as f64).round() as u64).clamp(1, MODULUS) }
    }

    /// The sampling rate actually used (1.0 when every row is kept).
    pub fn rate(&self) -> f64 {
        self.threshold as f64 / MODULUS as f64
    }

    /// Whether every row is kept.
    pub fn keeps_all(&self) -> bool {
        self.threshold == MODULUS
    }

    /// Whether the requests of row `id` are kept.
    #[inline]
    pub fn keeps(&self, id: u64) -> bool {
        self.keeps_all() || hash(id) % MODULUS < self.threshold
    }

    /// A capacity of `rows` over all rows scaled to the kept rows (at least one row
    /// when `rows` is not 0).
    pub fn scale_capacity(&self, rows: u64) -> u64 {
        if rows == 0 {
            0
        } else {
            ((rows as f64 * self.rate()).round() as u64).max(1)
        }
    }
}

impl StackDistances {
    /// Exact distances: every request is tracked.
    pub fn exact() -> Self {
        Self::with_sampler(SpatialSampler::new(1.0))
    }

    /// SHARDS sampling at `rate` in (0, 1]: only rows whose hash falls below the rate
    /// are tracked, and their distances are scaled by `1 / rate`. Points where
    /// `capacity * rate` is below about 100 rows rest on few sampled rows and can be
    /// off by several points of miss ratio.
    pub fn sampled(rate: f64) -> Self {
        Self::with_sampler(SpatialSampler::new(rate))
    }

    fn with_sampler(sampler: SpatialSampler) -> Self {
        let slots = 1024;
        StackDistances {
            last_slot: Vec::new(),
            slot_owner: vec![NOT_SEEN; slots],
            fenwick: vec![0; slots + 1],
            next_slot: 0,
            live: 0,
            histogram: Vec::new(),
            cold_misses: 0,
            sampled_requests: 0,
            requests: 0,
            sampler,
        }
    }

    /// The sampling rate actually used (1.0 when exact).
    pub fn rate(&self) -> f64 {
        self.sampler.rate()
    }

    /// Distinct rows seen, estimated from the sampled ones (exact when not sampling).
    pub fn distinct_rows(&self) -> u64 {
        (self.live as f64 / self.rate()).round() as u64
    }

    /// Requests seen, sampled or not.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn fenwick_add(&mut self, slot: usize, delta: i32) {
        let mut i = slot + 1;
        while i < self.fenwick.len() {
            self.fenwick[i] = self.fenwick[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Live markers in slots `0..=slot`.
    fn fenwick_prefix(&self, slot: usize) -> u64 {
        let mut i = slot + 1;
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.fenwick[i]);
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// Renumbers the live markers to slots `0..live` (keeping their order) and makes
    /// room for as many again.
    fn compact(&mut self) {
        let slots = (2 * self.live).max(1024);
        let mut owners = vec![NOT_SEEN; slots];
        let mut n = 0;
        for &owner in &self.slot_owner[..self.next_slot] {
            if owner != NOT_SEEN {
                owners[n] = owner;
                self.last_slot[owner as usize] = n as u32;
                n += 1;
            }
        }
        // Slots 0..n each hold one marker; Fenwick node i covers 1-based (i - lowbit(i), i].
        let fenwick = (0..=slots).map(|i| if i == 0 { 0 } else { i.min(n).saturating_sub(i - (i & i.wrapping_neg())) as u32 }).collect();
        self.slot_owner = owners;
        self.fenwick = fenwick;
        self.next_slot = n;
    }

    /// Records one request for dense id `id`.
    pub fn access(&mut self, id: u64) {
        self.requests += 1;
        if !self.sampler.keeps(id) {
            return;
        }
        self.sampled_requests += 1;
        let index = id as usize;
        if index >= self.last_slot.len() {
            self.last_slot.resize((index + 1).max(self.last_slot.len() * 2), NOT_SEEN);
        }
        let previous = self.last_slot[index];
        if previous == NOT_SEEN {
            self.cold_misses += 1;
            self.live += 1;
        } else {
            let previous = previous as usize;
            let distance = self.live as u64 - self.fenwick_prefix(previous);
            let d = distance as usize;
            if d >= self.histogram.len() {
                self.histogram.resize((d + 1).max(self.histogram.len() * 2), 0);
            }
            self.histogram[d] += 1;
            self.fenwick_add(previous, -1);
            self.slot_owner[previous] = NOT_SEEN;
        }
        if self.next_slot == self.slot_owner.len() {
            self.compact();
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        self.slot_owner[slot] = id as u32;
        self.last_slot[index] = slot as u32;
        self.fenwick_add(slot, 1);
    }

    /// Forgets the counts so far but not the stack: later requests are counted with
    /// their true distances, as in a cache warmed up by the requests before.
    pub fn restart_counts(&mut self) {
        self.histogram.iter_mut().for_each(|h| *h = 0);
        self.cold_misses = 0;
        self.sampled_requests = 0;
        self.requests = 0;
    }

    /// LRU miss ratios at each capacity (in rows), in the order given.
    pub fn miss_ratios(&self, capacities: &[u64]) -> Vec<f64> {
        if self.requests == 0 {
            return vec![0.0; capacities.len()];
        }
        let rate = self.rate();
        // SHARDS_adj: the expected number of sampled requests is requests * rate; the
        // shortfall (or excess) is credited to distance 0, where it changes no curve
        // point but the denominator.
        let expected = self.requests as f64 * rate;
        let total: u64 = self.histogram.iter().sum();
        capacities
            .iter()
            .map(|&capacity| {
                let limit = ((capacity as f64 * rate).round() as usize).min(self.histogram.len());
                let hits: u64 = self.histogram[..limit].iter().sum();
                let misses = self.cold_misses + (total - hits);
                if self.sampler.keeps_all() {
                    misses as f64 / self.requests as f64
                } else {
                    (misses as f64 / expected.max(1.0)).clamp(0.0, 1.0)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::StackDistances;

    /// LRU miss count by brute force: a recency list.
    fn lru_misses(trace: &[u64], capacity: usize) -> u64 {
        let mut stack: Vec<u64> = Vec::new();
        let mut misses = 0;
        for &id in trace {
            if let Some(pos) = stack.iter().position(|&x| x == id) {
                stack.remove(pos);
            } else {
                misses += 1;
                if stack.len() == capacity {
                    stack.pop();
                }
            }
            stack.insert(0, id);
        }
        misses
    }

    #[test]
    fn exact_curve_equals_brute_force_lru_through_compactions() {
        let mut x = 12345u64;
        let trace: Vec<u64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 3000).min(x % 97 * 31 % 3000)
            })
            .collect();
        let mut sd = StackDistances::exact();
        trace.iter().for_each(|&id| sd.access(id));
        let capacities = [1, 2, 10, 100, 500, 1000, 2999, 3000, 5000];
        let ratios = sd.miss_ratios(&capacities);
        for (&c, &r) in capacities.iter().zip(&ratios) {
            let expected = lru_misses(&trace, c as usize) as f64 / trace.len() as f64;
            assert_eq!(r, expected, "capacity {c}");
        }
    }

    #[test]
    fn hand_computed_distances() {
        // a b c a b c: distances -, -, -, 2, 2, 2 -> capacity 3 hits three times.
        let mut sd = StackDistances::exact();
        for id in [0, 1, 2, 0, 1, 2] {
            sd.access(id);
        }
        assert_eq!(sd.miss_ratios(&[2, 3]), vec![1.0, 0.5]);
    }

    #[test]
    fn sampled_curve_stays_close_to_the_exact_curve() {
        // A skewed trace: key = floor(n * u^3) concentrates requests on small keys.
        let mut x = 99u64;
        let mut exact = StackDistances::exact();
        let mut sampled = StackDistances::sampled(0.1);
        for _ in 0..400_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let id = (100_000.0 * u * u * u) as u64;
            exact.access(id);
            sampled.access(id);
        }
        assert!((sampled.rate() - 0.1).abs() < 1e-6);
        // SHARDS is reliable where capacity * rate covers enough sampled rows (here 100+).
        let capacities = [1000, 5000, 20_000, 50_000];
        for ((c, e), s) in capacities.iter().zip(exact.miss_ratios(&capacities)).zip(sampled.miss_ratios(&capacities)) {
            assert!((e - s).abs() < 0.02, "capacity {c}: exact {e}, sampled {s}");
        }
    }
}
