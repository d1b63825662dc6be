//! Helpers shared by the integration tests (each test crate uses some of them).
#![allow(dead_code)]

#[cfg(feature = "torch")]
pub mod experiment;
#[cfg(feature = "torch")]
pub mod model;
pub mod transparency;

use std::path::Path;

use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::pool::Pooling;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, RowInit, RowLayout};
use strata::sim::TwoLevelConfig;

/// Folders to create tables in: the system temp folder, and one on the checkout's disk
/// (the temp folder may be a tmpfs, where O_DIRECT is refused and buffered I/O is used).
pub fn folders() -> Vec<tempfile::TempDir> {
    let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-test");
    std::fs::create_dir_all(&on_disk).expect("create target-test");
    vec![tempfile::tempdir().expect("temp dir"), tempfile::tempdir_in(on_disk).expect("temp dir on disk")]
}

/// The engine's table for a two-level set-up (its policy in both tiers, emulated
/// device) over an in-memory store of `rows` zero rows of dim 4; and their layout.
pub fn tiered_over_flat(setup: &TwoLevelConfig, rows: u64) -> (TieredTable, RowLayout) {
    let optimizer = Optimizer::Sgd { lr: 0.1 };
    let layout = RowLayout::new(4, &optimizer);
    let config = TableConfig {
        device: TierConfig::rows(setup.device_rows as usize, setup.policy.clone()),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(setup.host_rows as usize, setup.policy.clone()),
        hierarchy: setup.hierarchy,
        optimizer,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Default::default(),
    };
    (TieredTable::new(&config, Box::new(FlatTable::new(rows, layout, RowInit::Zeros))).expect("table"), layout)
}
