//! A collection's configuration: its tables (name, rows, dim, pooling, dtype, features,
//! initial scale) and how every table group is tiered and updated, and the checks a
//! config must pass before anything is built.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfig;

use super::CollectionError;
use crate::engine::device::DeviceKind;
use crate::engine::placement::Hierarchy;
use crate::engine::pool::Pooling;
use crate::engine::storage::{ReadConfig, ReadPath};
use crate::engine::{Dtype, Optimizer, Rounding};

/// One table: its name, shape, pooling, the features looked up in it, and its initial
/// rows (uniform in `[-init_scale, init_scale)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingTableConfig {
    pub name: String,
    pub rows: u64,
    pub dim: usize,
    #[serde(default)]
    pub pooling: Pooling,
    pub features: Vec<String>,
    pub init_scale: f32,
    /// How the table stores its values (FBGEMM's `weights_precision`, TorchRec's
    /// `data_type`): tables of another dtype are another group.
    #[serde(default)]
    pub dtype: Dtype,
}

/// The tables and how every one of them is tiered and updated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    pub tables: Vec<EmbeddingTableConfig>,
    /// Share of each group's rows in the device tier and in the host tier, in [0, 1].
    pub device: f64,
    pub host: f64,
    pub device_policy: PolicyConfig,
    pub host_policy: PolicyConfig,
    #[serde(default)]
    pub hierarchy: Hierarchy,
    #[serde(default)]
    pub device_backend: DeviceKind,
    pub optimizer: Optimizer,
    /// Seed of every table's initial rows (each table draws its own from it).
    #[serde(default)]
    pub seed: u64,
    /// A folder for the groups' table files (`<group>.strata`, created afresh); none =
    /// in-memory stores.
    pub table_dir: Option<PathBuf>,
    #[serde(default = "default_read_path")]
    pub read_path: ReadPath,
    /// Share of each group's rows the storage thread may hold dirty to write them down in
    /// page order.
    #[serde(default)]
    pub write_buffer: f64,
    /// How updates are written into half-precision rows.
    #[serde(default)]
    pub rounding: Rounding,
}

fn default_read_path() -> ReadPath {
    ReadPath::IoUring
}

pub(super) fn read_config(config: &CollectionConfig) -> ReadConfig {
    ReadConfig { read_path: config.read_path, ..ReadConfig::default() }
}

pub(super) fn check(config: &CollectionConfig) -> Result<(), CollectionError> {
    let fail = |what: String| Err(CollectionError::Config(what));
    if config.tables.is_empty() {
        return fail("no tables".into());
    }
    for (what, share) in [("device", config.device), ("host", config.host), ("write_buffer", config.write_buffer)] {
        if !(0.0..=1.0).contains(&share) {
            return fail(format!("{what} = {share}: a share of each table group's rows, from 0 to 1"));
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut features = std::collections::HashSet::new();
    for table in &config.tables {
        if table.name.is_empty() || !table.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return fail(format!("table name `{}`: use letters, digits, `_` and `-`", table.name));
        }
        if !names.insert(&table.name) {
            return fail(format!("table `{}` given twice", table.name));
        }
        if table.rows == 0 || table.dim == 0 {
            return fail(format!("table `{}`: {} rows of dim {}: both must be positive", table.name, table.rows, table.dim));
        }
        if table.features.is_empty() {
            return fail(format!("table `{}` has no features", table.name));
        }
        for feature in &table.features {
            if !features.insert(feature) {
                return fail(format!("feature `{feature}` is in two tables"));
            }
        }
    }
    Ok(())
}
