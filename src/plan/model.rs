//! The planner's throughput and cost model: per-tier shares of the lookups, bytes per
//! row, the batch and a hardware profile give the time of one batch (with and without
//! the storage reads overlapped), hence lookups/s and samples/s; tier sizes and prices
//! give the cost. Also the Pareto front of cost against throughput.

use serde::Serialize;

use super::profile::{HardwareProfile, TierProfile};
use crate::sim::TierCounts;

/// Bytes the store reads for one row: a whole page (rows are packed into 4 KiB pages
/// and read with O_DIRECT, docs/FORMATS.md).
pub const STORE_PAGE_BYTES: u64 = 4096;

/// What a batch moves and computes, from the per-tier shares of its lookups.
#[derive(Clone, Copy, Debug)]
pub struct BatchShape {
    /// Lookups in one batch.
    pub lookups: u64,
    /// Samples in one batch.
    pub samples: u64,
    /// Bytes of a row's embedding values (what pooling reads).
    pub value_bytes: u64,
    /// Bytes of a whole row (values and optimizer state: what moves between tiers).
    pub row_bytes: u64,
    /// CPU time the engine spends placing one lookup, ns.
    pub engine_ns_per_lookup: f64,
}

/// The time of one batch, by part, seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct BatchTime {
    pub engine: f64,
    pub device: f64,
    pub host: f64,
    pub link: f64,
    /// The store's reads with the consumer waiting for them.
    pub storage: f64,
    /// The same reads behind the consumer's work (read-ahead), at the rate the store
    /// keeps up while the storage thread shares the cores with it.
    pub storage_shared: f64,
}

impl BatchTime {
    /// Every part one after the other.
    pub fn serial(&self) -> f64 {
        self.engine + self.device + self.host + self.link + self.storage
    }

    /// With prefetch overlap: the storage reads run behind the rest.
    pub fn overlapped(&self) -> f64 {
        self.storage_shared.max(self.engine + self.device + self.host + self.link)
    }
}

/// Seconds for a memory tier to gather `rows` random rows of `bytes` each: bounded by
/// its row rate (`iops`) and by its bandwidth, whichever binds.
pub fn gather_seconds(tier: &TierProfile, rows: f64, bytes: u64) -> f64 {
    if rows <= 0.0 {
        return 0.0;
    }
    (rows / tier.iops).max(rows * bytes as f64 / (tier.bandwidth_gbps * 1e9))
}

/// Seconds for the store to read `rows` random rows of `row_bytes`: each is one random
/// read of the pages it spans, at the drive's random-read rate (`iops`, measured as
/// 4 KiB reads); the sequential bandwidth binds only rows spanning several pages.
pub fn store_read_seconds(storage: &TierProfile, rows: f64, row_bytes: u64) -> f64 {
    let pages = row_bytes.div_ceil(STORE_PAGE_BYTES).max(1);
    let by_reads = rows / storage.iops;
    if pages == 1 {
        by_reads
    } else {
        by_reads.max(rows * (pages * STORE_PAGE_BYTES) as f64 / (storage.bandwidth_gbps * 1e9))
    }
}

/// The predicted time of one batch whose lookups `counts` splits across the tiers.
pub fn batch_time(shape: &BatchShape, counts: &TierCounts, hw: &HardwareProfile) -> BatchTime {
    let n = shape.lookups as f64;
    let device_rows = n * counts.device_share();
    let host_rows = n * counts.host_share();
    let store_rows = n * counts.store_reads_per_lookup();
    // Store rows are staged in host memory and pooled from there; every row the device
    // does not hold crosses the link to it.
    let crossing = host_rows + store_rows;
    let link =
        if crossing > 0.0 { hw.link.latency_us * 1e-6 + crossing * shape.row_bytes as f64 / (hw.link.bandwidth_gbps * 1e9) } else { 0.0 };
    let read = |storage: &TierProfile| {
        if store_rows > 0.0 {
            storage.latency_us * 1e-6 + store_read_seconds(storage, store_rows, shape.row_bytes)
        } else {
            0.0
        }
    };
    let shared = TierProfile { iops: hw.shared_store_iops(), ..hw.storage.clone() };
    BatchTime {
        // Placing every lookup, and the consumer's work on each row read from the store.
        engine: n * shape.engine_ns_per_lookup * 1e-9 + store_rows * hw.store_row_seconds(),
        device: gather_seconds(&hw.device, device_rows, shape.value_bytes),
        host: gather_seconds(&hw.host, host_rows + store_rows, shape.value_bytes),
        link,
        storage: read(&hw.storage),
        storage_shared: read(&shared),
    }
}

/// The bill of one configuration, in the profiles' currency.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cost {
    pub device_gb: f64,
    pub host_gb: f64,
    pub storage_gb: f64,
    pub total: f64,
    /// Every tier's size is within its profile's capacity.
    pub fits: bool,
}

/// The cost of `device_rows` + `host_rows` slab rows of `slab_bytes` and a store of
/// `table_rows` rows of `row_bytes` packed into pages.
pub fn cost(hw: &HardwareProfile, device_rows: u64, host_rows: u64, slab_bytes: u64, table_rows: u64, row_bytes: u64) -> Cost {
    let device_gb = (device_rows * slab_bytes) as f64 / 1e9;
    let host_gb = (host_rows * slab_bytes) as f64 / 1e9;
    let rows_per_page = (STORE_PAGE_BYTES / row_bytes.max(1)).max(1);
    let pages = table_rows.div_ceil(rows_per_page) * row_bytes.div_ceil(STORE_PAGE_BYTES).max(1);
    let storage_gb = (pages * STORE_PAGE_BYTES) as f64 / 1e9;
    Cost {
        device_gb,
        host_gb,
        storage_gb,
        total: device_gb * hw.device.price_per_gb + host_gb * hw.host.price_per_gb + storage_gb * hw.storage.price_per_gb,
        fits: device_gb <= hw.device.capacity_gb && host_gb <= hw.host.capacity_gb && storage_gb <= hw.storage.capacity_gb,
    }
}

/// Indices of the Pareto front of `(cost, throughput)` points: sorted by cost, each
/// strictly faster than every cheaper one (so the front is monotone).
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(points[b].1.total_cmp(&points[a].1)));
    let mut best = f64::NEG_INFINITY;
    let mut front = Vec::new();
    for i in order {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's time is its per-lookup placement plus, with an `[engine]` part, its
    /// CPU time per row read from the store; the store's own time is unchanged.
    #[test]
    fn the_engine_time_counts_the_cpu_spent_on_each_store_row() {
        use crate::plan::profile::EngineProfile;
        let shipped = |name: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles").join(name);
        let paths = [shipped("h100-pcie5.toml"), shipped("ddr5-server.toml"), shipped("nvme-gen4.toml")];
        let mut hw = HardwareProfile::load(&paths).unwrap();
        assert!(hw.engine.is_none());
        let shape = BatchShape { lookups: 1000, samples: 10, value_bytes: 512, row_bytes: 516, engine_ns_per_lookup: 60.0 };
        // 1000 lookups: 500 device hits, 300 host hits, 200 rows read from the store.
        let counts = TierCounts { lookups: 1000, device_hits: 500, host_lookups: 500, host_hits: 300, store_reads: 200 };
        let without = batch_time(&shape, &counts, &hw);
        hw.engine = Some(EngineProfile { name: "cpu".into(), store_row_ns: 1000.0, shared_store_iops: None });
        let with = batch_time(&shape, &counts, &hw);
        assert!((without.engine - 60e-6).abs() < 1e-12, "{without:?}");
        assert!((with.engine - (60e-6 + 200.0 * 1e-6)).abs() < 1e-12, "{with:?}");
        assert_eq!((with.device, with.host, with.link, with.storage), (without.device, without.host, without.link, without.storage));
        assert_eq!(with.storage_shared, with.storage, "without a shared rate the store reads at its own");
    }

    /// With a shared store rate, read-ahead's overlap reads at it; reads the consumer
    /// waits for (no overlap) keep the store's own rate.
    #[test]
    fn read_ahead_reads_at_the_rate_the_store_keeps_beside_the_consumer() {
        use crate::plan::profile::EngineProfile;
        let shipped = |name: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles").join(name);
        let paths = [shipped("h100-pcie5.toml"), shipped("ddr5-server.toml"), shipped("nvme-gen4.toml")];
        let mut hw = HardwareProfile::load(&paths).unwrap();
        let shape = BatchShape { lookups: 100_000, samples: 100, value_bytes: 512, row_bytes: 516, engine_ns_per_lookup: 60.0 };
        let counts = TierCounts { lookups: 100_000, device_hits: 0, host_lookups: 100_000, host_hits: 50_000, store_reads: 50_000 };
        let alone = batch_time(&shape, &counts, &hw);
        let iops = hw.storage.iops;
        hw.engine = Some(EngineProfile { name: "cpu".into(), store_row_ns: 0.0, shared_store_iops: Some(iops / 2.0) });
        let beside = batch_time(&shape, &counts, &hw);
        let reads = 50_000.0 / iops;
        assert!((beside.storage - alone.storage).abs() < 1e-12 && (alone.storage_shared - alone.storage).abs() < 1e-12);
        assert!((beside.storage_shared - beside.storage - reads).abs() < 1e-9, "{beside:?}");
        assert!(beside.storage_shared > beside.engine + beside.host + beside.link, "the store binds: {beside:?}");
        assert_eq!(beside.overlapped(), beside.storage_shared);
        assert_eq!(beside.serial(), alone.serial());
    }

    #[test]
    fn pareto_front_is_cheapest_first_and_strictly_faster() {
        let points = [(3.0, 10.0), (1.0, 5.0), (2.0, 4.0), (2.0, 7.0), (4.0, 9.0), (5.0, 12.0)];
        assert_eq!(pareto_front(&points), vec![1, 3, 0, 5]);
    }
}
