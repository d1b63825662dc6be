//! Engine statistics: per-tier hits, misses, promotions, evictions and write-backs,
//! bytes moved per link, consumer stall time and a lookup-latency histogram; exported
//! as JSON. Also the nearest-rank percentile every latency report uses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Combine, PLUS, SINCE};

/// Counters of one memory tier. Hits and misses count lookups that reached the tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

    /// The counts since `earlier`, a snapshot of the same tier.
    pub fn since(&self, earlier: &TierStats) -> TierStats {
        self.combine(earlier, SINCE)
    }

    pub fn combine(&self, other: &TierStats, op: Combine) -> TierStats {
        let count = op.count;
        TierStats {
            backend: self.backend.clone(),
            capacity_rows: op.size(self.capacity_rows, other.capacity_rows),
            hits: count(self.hits, other.hits),
            misses: count(self.misses, other.misses),
            promotions: count(self.promotions, other.promotions),
            demotions_in: count(self.demotions_in, other.demotions_in),
            evictions: count(self.evictions, other.evictions),
            write_backs: count(self.write_backs, other.write_backs),
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

    /// The latencies recorded since `earlier`, a snapshot of the same histogram.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        self.combine(earlier, SINCE)
    }

    pub fn combine(&self, other: &LatencyHistogram, op: Combine) -> LatencyHistogram {
        let mut buckets = self.buckets_us_pow2.clone();
        buckets.resize(buckets.len().max(other.buckets_us_pow2.len()), 0);
        for (bucket, &theirs) in buckets.iter_mut().zip(&other.buckets_us_pow2) {
            *bucket = (op.count)(*bucket, theirs);
        }
        LatencyHistogram {
            buckets_us_pow2: buckets,
            count: (op.count)(self.count, other.count),
            total_seconds: (op.seconds)(self.total_seconds, other.total_seconds),
        }
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

/// The nearest-rank `q` quantile of `sorted` (ascending): the smallest value with at
/// least `q` of the values at or below it; 0 for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Everything the engine counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// The I/O thread's CPU time on reads and on writes (what it takes from the cores
    /// the consumer runs on) and the wall time of its writes.
    #[serde(default)]
    pub storage_thread: crate::engine::storage::StorageThreadTime,
    /// Rows read ahead for future batches.
    pub prefetched_rows: u64,
    /// Rows read ahead a second time, for the next batch, because they left the memory
    /// tiers after its read-ahead was planned.
    pub topped_up_rows: u64,
    /// Read-ahead rows dropped because a write made them stale.
    pub stale_prefetches: u64,
    /// Memory-tier copies read again because another writer changed their rows in the
    /// store ([`TieredTable::refresh`](crate::engine::table::TieredTable::refresh)).
    #[serde(default)]
    pub refreshed_rows: u64,
    /// Rows read in one batch at lookup or update time because they left the memory
    /// tiers after their batch's read-ahead was planned, or during its own placement.
    pub late_store_reads: u64,
    /// Single rows read synchronously (not staged: the slow path).
    pub sync_store_reads: u64,
    /// Of `stall_seconds`: the waits for the late batched reads, and for the single
    /// rows read synchronously (the rest waited for read-ahead or a batch's own read).
    #[serde(default)]
    pub late_read_stall_seconds: f64,
    #[serde(default)]
    pub sync_read_stall_seconds: f64,
    /// Rows taken back from the writes queued for the store in the same step (a row
    /// its own batch pushed out of the memory tiers), with no store read.
    pub queued_reads: u64,
    /// Clean rows the batch's own placement pushed out of the memory tiers, kept staged
    /// for the rest of its step, so that a later lookup or update reads no row twice.
    #[serde(default)]
    pub kept_victims: u64,
    /// Rows written to the store (through the write-back buffer when there is one).
    pub store_writes: u64,
    pub write_buffer: crate::engine::storage::WriteBufferStats,
    /// The local file cache's counters, where the store is behind one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_cache: Option<crate::engine::storage::FileCacheStats>,
    pub bytes_store_to_host: u64,
    pub bytes_host_to_store: u64,
    pub bytes_host_to_device: u64,
    pub bytes_device_to_host: u64,
    pub lookup_latency: LatencyHistogram,
}

impl EngineStats {
    /// What happened since `earlier`, a snapshot of the same table: one phase of a run
    /// (training, serving) on its own.
    pub fn since(&self, earlier: &EngineStats) -> EngineStats {
        self.combine(earlier, SINCE)
    }

    /// Two tables' counters as one table's (the groups of a grouped table).
    pub fn plus(&self, other: &EngineStats) -> EngineStats {
        self.combine(other, PLUS)
    }

    fn combine(&self, other: &EngineStats, op: Combine) -> EngineStats {
        let tier = |ours: &Option<TierStats>, theirs: &Option<TierStats>| match (ours, theirs) {
            (Some(ours), Some(theirs)) => Some(ours.combine(theirs, op)),
            (ours, _) => ours.clone(),
        };
        let (count, seconds) = (op.count, op.seconds);
        EngineStats {
            storage: self.storage.clone(),
            device: tier(&self.device, &other.device),
            host: tier(&self.host, &other.host),
            batches: count(self.batches, other.batches),
            lookups: count(self.lookups, other.lookups),
            requests: count(self.requests, other.requests),
            stall_seconds: seconds(self.stall_seconds, other.stall_seconds),
            store_read_seconds: seconds(self.store_read_seconds, other.store_read_seconds),
            storage_thread: self.storage_thread.combine(&other.storage_thread, op),
            prefetched_rows: count(self.prefetched_rows, other.prefetched_rows),
            topped_up_rows: count(self.topped_up_rows, other.topped_up_rows),
            stale_prefetches: count(self.stale_prefetches, other.stale_prefetches),
            refreshed_rows: count(self.refreshed_rows, other.refreshed_rows),
            late_store_reads: count(self.late_store_reads, other.late_store_reads),
            sync_store_reads: count(self.sync_store_reads, other.sync_store_reads),
            late_read_stall_seconds: seconds(self.late_read_stall_seconds, other.late_read_stall_seconds),
            sync_read_stall_seconds: seconds(self.sync_read_stall_seconds, other.sync_read_stall_seconds),
            queued_reads: count(self.queued_reads, other.queued_reads),
            kept_victims: count(self.kept_victims, other.kept_victims),
            store_writes: count(self.store_writes, other.store_writes),
            write_buffer: self.write_buffer.combine(&other.write_buffer, op),
            file_cache: self.file_cache.map(|ours| other.file_cache.map_or(ours, |theirs| ours.combine(&theirs, op))),
            bytes_store_to_host: count(self.bytes_store_to_host, other.bytes_store_to_host),
            bytes_host_to_store: count(self.bytes_host_to_store, other.bytes_host_to_store),
            bytes_host_to_device: count(self.bytes_host_to_device, other.bytes_host_to_device),
            bytes_device_to_host: count(self.bytes_device_to_host, other.bytes_device_to_host),
            lookup_latency: self.lookup_latency.combine(&other.lookup_latency, op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&sorted, 0.5), percentile(&sorted, 0.95), percentile(&sorted, 0.99)), (50.0, 95.0, 99.0));
        assert_eq!((percentile(&[7.0], 0.99), percentile(&[], 0.5)), (7.0, 0.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.0), 1.0);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = LatencyHistogram::default();
        for us in [1, 3, 3, 10, 100] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count, 5);
        assert_eq!(h.quantile_us(0.5), 4);
        assert_eq!(h.quantile_us(1.0), 128);
        let before = h.clone();
        h.record(Duration::from_micros(3));
        let later = h.since(&before);
        assert_eq!((later.count, later.buckets_us_pow2.iter().sum::<u64>(), later.quantile_us(1.0)), (1, 1, 4));
    }

    #[test]
    fn stats_since_a_snapshot_count_only_what_came_after() {
        let tier = |hits, misses| Some(TierStats { backend: "host".into(), capacity_rows: 10, hits, misses, ..TierStats::default() });
        let before = EngineStats { host: tier(5, 7), lookups: 12, store_writes: 2, stall_seconds: 0.5, ..EngineStats::default() };
        let after = EngineStats { host: tier(9, 8), lookups: 17, store_writes: 2, stall_seconds: 0.75, ..EngineStats::default() };
        let phase = after.since(&before);
        assert_eq!(phase.host, tier(4, 1));
        assert_eq!((phase.lookups, phase.store_writes, phase.stall_seconds), (5, 0, 0.25));
        assert_eq!(phase.device, None);
    }
}
