//! The configuration of a tiered table: each memory tier's size and policy
//! ([`TierConfig`]) and the table's shape and behaviour ([`TableConfig`]), as read from
//! TOML.

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfig;

use crate::engine::device::DeviceKind;
use crate::engine::host::HostSlab;
use crate::engine::placement::{Hierarchy, Level};
use crate::engine::pool::Pooling;
use crate::engine::{EngineError, Optimizer, Rounding, RowLayout};

/// One tier's size and policy. The size is given as `rows`, or as a byte budget
/// (`bytes`: as many rows as fit at the slab's 64-byte-aligned row stride); 0 = no
/// such tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    #[serde(default)]
    pub rows: usize,
    #[serde(default)]
    pub bytes: u64,
    pub policy: PolicyConfig,
}

impl TierConfig {
    /// A tier of `rows` rows.
    pub fn rows(rows: usize, policy: PolicyConfig) -> Self {
        TierConfig { rows, bytes: 0, policy }
    }

    /// A tier of as many rows as fit in `bytes`.
    pub fn bytes(bytes: u64, policy: PolicyConfig) -> Self {
        TierConfig { rows: 0, bytes, policy }
    }

    /// The capacity in rows of `tier`, configured by `self`, for rows of `layout`.
    pub fn capacity(&self, tier: Level, layout: RowLayout) -> Result<usize, EngineError> {
        match (self.rows, self.bytes) {
            (rows, 0) => Ok(rows),
            (0, bytes) => {
                let stride = HostSlab::stride_bytes(layout) as u64;
                match bytes / stride {
                    0 => Err(EngineError::TierTooSmall { tier, bytes, stride }),
                    rows => Ok(rows as usize),
                }
            }
            (rows, bytes) => Err(EngineError::TierSizedTwice { tier, rows, bytes }),
        }
    }
}

/// The shape and behaviour of a tiered table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub device: TierConfig,
    #[serde(default)]
    pub device_backend: DeviceKind,
    pub host: TierConfig,
    #[serde(default)]
    pub hierarchy: Hierarchy,
    #[serde(default)]
    pub optimizer: Optimizer,
    #[serde(default)]
    pub pooling: Pooling,
    /// Dirty rows the storage thread holds before writing them down in page order
    /// (host memory beyond the host tier; 0 = each step's write-backs go straight down).
    #[serde(default)]
    pub write_buffer_rows: usize,
    /// How updates are written into half-precision rows.
    #[serde(default)]
    pub rounding: Rounding,
}

impl TableConfig {
    /// Every one of `rows` rows in the host tier (LRU), no device tier: the
    /// all-in-memory set-up the tiered ones are compared with.
    pub fn host_only(rows: u64, optimizer: Optimizer, pooling: Pooling) -> Self {
        TableConfig {
            device: TierConfig::rows(0, PolicyConfig::Lru),
            device_backend: DeviceKind::Emulated,
            host: TierConfig::rows(rows as usize, PolicyConfig::Lru),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling,
            write_buffer_rows: 0,
            rounding: Rounding::Nearest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_sizes_in_rows_or_bytes() {
        let layout = RowLayout::f32(128, 1); // 516 bytes -> 576-byte stride
        assert_eq!(TierConfig::rows(10, PolicyConfig::Lru).capacity(Level::Host, layout).unwrap(), 10);
        assert_eq!(TierConfig::bytes(576 * 1000 + 5, PolicyConfig::Lru).capacity(Level::Host, layout).unwrap(), 1000);
        let err = TierConfig::bytes(100, PolicyConfig::Lru).capacity(Level::Host, layout).unwrap_err().to_string();
        assert!(err.contains("host") && err.contains("100 bytes"), "{err}");
        let both = TierConfig { rows: 1, bytes: 1 << 20, policy: PolicyConfig::Lru };
        assert!(both.capacity(Level::Device, layout).is_err());
    }

    #[test]
    fn a_tier_sized_both_ways_names_both_sizes() {
        let both = TierConfig { rows: 1, bytes: 1 << 20, policy: PolicyConfig::Lru };
        let err = both.capacity(Level::Device, RowLayout::f32(4, 0)).unwrap_err().to_string();
        assert_eq!(err, "engine config: device: give rows or bytes, not both (rows = 1, bytes = 1048576)");
    }

    #[test]
    fn table_config_from_toml_rejects_unknown_fields() {
        let text = "hierarchy = \"exclusive\"\n[device]\nrows = 100\npolicy = { kind = \"lru\" }\n[host]\nbytes = 1073741824\npolicy = { kind = \"s3fifo\" }\n";
        let config: TableConfig = toml::from_str(text).unwrap();
        assert_eq!(config.hierarchy, Hierarchy::Exclusive);
        assert_eq!(config.host.bytes, 1 << 30);
        assert!(toml::from_str::<TableConfig>(&format!("{text}colour = 1\n")).is_err());
    }
}
