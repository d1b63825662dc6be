//! Engine statistics: per-tier hits, misses, promotions, evictions and write-backs,
//! bytes moved per link, consumer stall time and a lookup-latency histogram; exported
//! as JSON.

use std::time::Duration;

use serde::Serialize;

/// Counters of one memory tier. Hits and misses count lookups that reached the tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TierStats {
    /// What ran the tier (`host`, `emulated-device`, `cuda:0 (...)`).
    pub backend: String,
    pub capacity_rows: u64,
    pub hits: u64,
    pub misses: u64,
    /// Rows brought into the tier on a lookup.
    pub promotions: u64,
    /// Rows demoted into the tier from the tier above (exclusive hierarchy).
    pub demotions_in: u64,
    pub evictions: u64,
    /// Dirty rows written to the level below (on eviction or flush).
    pub write_backs: u64,
}

impl TierStats {
    /// Counts one lookup that reached the tier.
    pub fn record(&mut self, hit: bool) {
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
    }

    pub fn hit_ratio(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}

/// Lookup latencies in power-of-two microsecond buckets (bucket `i` holds latencies
/// below `2^i` us).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyHistogram {
    pub buckets_us_pow2: Vec<u64>,
    pub count: u64,
    pub total_seconds: f64,
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        let us = latency.as_micros() as u64;
        let bucket = (64 - us.leading_zeros()) as usize;
        if bucket >= self.buckets_us_pow2.len() {
            self.buckets_us_pow2.resize(bucket + 1, 0);
        }
        self.buckets_us_pow2[bucket] += 1;
        self.count += 1;
        self.total_seconds += latency.as_secs_f64();
    }

    /// The upper bound (microseconds) of the bucket holding quantile `q` in [0, 1].
    pub fn quantile_us(&self, q: f64) -> u64 {
        let target = (q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets_us_pow2.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return 1u64 << i;
            }
        }
        0
    }
}

/// Everything the engine counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EngineStats {
    /// The backing store, as it describes itself.
    pub storage: String,
    pub device: Option<TierStats>,
    pub host: Option<TierStats>,
    pub batches: u64,
    pub lookups: u64,
    /// Requests the policies saw (one per lookup).
    pub requests: u64,
    /// Seconds the consumer waited for rows from the store.
    pub stall_seconds: f64,
    /// Seconds the I/O thread spent reading (overlapped with the consumer when read ahead).
    pub store_read_seconds: f64,
    /// Rows read ahead for future batches.
    pub prefetched_rows: u64,
    /// Rows read ahead a second time, for the next batch, because they left the memory
    /// tiers after its read-ahead was planned.
    pub topped_up_rows: u64,
    /// Read-ahead rows dropped because a write made them stale.
    pub stale_prefetches: u64,
    /// Rows read at lookup time in one batch because they left the memory tiers after
    /// their batch's read-ahead was planned.
    pub late_store_reads: u64,
    /// Single rows read synchronously (not staged: the slow path).
    pub sync_store_reads: u64,
    /// Rows written to the store (through the write-back buffer when there is one).
    pub store_writes: u64,
    pub write_buffer: crate::engine::write_buffer::WriteBufferStats,
    pub bytes_store_to_host: u64,
    pub bytes_host_to_store: u64,
    pub bytes_host_to_device: u64,
    pub bytes_device_to_host: u64,
    pub lookup_latency: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = LatencyHistogram::default();
        for us in [1, 3, 3, 10, 100] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count, 5);
        assert_eq!(h.quantile_us(0.5), 4);
        assert_eq!(h.quantile_us(1.0), 128);
    }
}
