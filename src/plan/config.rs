//! The plan config (`strata plan CONFIG`, e.g. `configs/plan.toml`): the workload, the
//! row shape, the hardware profiles to compare, the throughput target and the candidate
//! policies and tier sizes; every field is documented in `configs/README.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_policies::PolicyConfig;

use super::profile::HardwareProfile;
use crate::config::{ConfigError, OutputSpec};
use crate::engine::host::HostSlab;
use crate::engine::placement::Hierarchy;
use crate::engine::storage::ReadPath;
use crate::engine::{Dtype, Optimizer, RowLayout};
use crate::lab::TraceSpec;
use crate::sim::TwoLevelConfig;

/// A plan config file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// The lookups to plan for: the lab's `[trace]` table (synthetic or a file).
    pub workload: TraceSpec,
    pub rows: RowSpec,
    pub hardware: HardwareSpec,
    pub target: TargetSpec,
    pub candidates: CandidateSpec,
    #[serde(default)]
    pub run: RunSpec,
    #[serde(default)]
    pub curves: CurveSpec,
    #[serde(default)]
    pub validate: ValidateSpec,
    #[serde(default = "default_output")]
    pub output: OutputSpec,
}

fn default_output() -> OutputSpec {
    OutputSpec { dir: PathBuf::from("out/plan") }
}

/// The shape of a row.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    pub dim: usize,
    /// Storage type of the embedding values (the optimizer state stays `f32`).
    #[serde(default)]
    pub dtype: Dtype,
    #[serde(default)]
    pub optimizer: Optimizer,
}

impl RowSpec {
    /// The row as every tier stores it.
    pub fn layout(&self) -> RowLayout {
        RowLayout::new(self.dim, &self.optimizer).with_dtype(self.dtype)
    }

    /// Bytes of one row's values and optimizer state.
    pub fn row_bytes(&self) -> u64 {
        self.layout().bytes() as u64
    }

    /// Bytes a row takes in a memory tier's slab (64-byte aligned, as the host slab
    /// lays rows out).
    pub fn slab_bytes(&self) -> u64 {
        HostSlab::stride_bytes(self.layout()) as u64
    }

    /// Bytes of the embedding values alone (what a pooled lookup reads).
    pub fn value_bytes(&self) -> u64 {
        4 * self.layout().value_words() as u64
    }
}

/// The hardware: profile files merged into one [`HardwareProfile`] per alternative.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareSpec {
    /// Profile files every alternative uses.
    #[serde(default)]
    pub profiles: Vec<PathBuf>,
    /// Alternatives to compare: each adds its files to `profiles` (each of `[device]`,
    /// `[host]`, `[storage]`, `[link]` must come from exactly one file); empty = the one
    /// alternative `profiles`.
    #[serde(default)]
    pub compare: Vec<Vec<PathBuf>>,
}

/// The throughput to reach: samples/s or lookups/s (one of the two).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub samples_per_sec: Option<f64>,
    pub lookups_per_sec: Option<f64>,
}

/// Sizes in the candidate grid are fractions of the table's rows or GB of slab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    #[default]
    Fraction,
    Gb,
}

/// The configurations to consider: every policy at every (device, host) size pair.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSpec {
    /// Policy names as `strata simulate --policies` takes them (one policy runs both tiers).
    pub policies: Vec<String>,
    #[serde(default)]
    pub hierarchy: Hierarchy,
    #[serde(default)]
    pub unit: SizeUnit,
    /// Device tier sizes (0 = no device tier).
    pub device: Vec<f64>,
    /// Host tier sizes (0 = no host tier).
    pub host: Vec<f64>,
}

/// How the engine serves the lookups.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSpec {
    /// Samples per batch.
    pub batch: usize,
    /// Prefetch overlap: storage reads run behind the rest of a batch.
    pub prefetch: bool,
    /// Fraction of the requests that warm the tiers up before hits are counted.
    pub warmup: f64,
    /// Lookups per sample; absent = the layout's (214 multi-hot, 26 one-hot), or 1 for
    /// a plain key trace.
    pub lookups_per_sample: Option<usize>,
    /// CPU time the engine spends placing one lookup (policies, row maps), ns; it is
    /// paid on top of the hardware's time on any machine.
    pub engine_ns_per_lookup: f64,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec { batch: 256, prefetch: true, warmup: 0.2, lookups_per_sample: None, engine_ns_per_lookup: 60.0 }
    }
}

/// How the miss-ratio curves and policy simulations are computed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurveSpec {
    /// SHARDS rate of the pass: 1.0 exact, below 1.0 sampled, 0 = automatic (exact up
    /// to `exact_requests` requests, else `exact_requests / requests`).
    pub sample_rate: f64,
    pub exact_requests: u64,
    /// Lookups each two-level simulation replays at most (spatially sampled beyond).
    pub simulate_requests: u64,
    /// Threads for the pass (0 = one per core).
    pub threads: usize,
}

impl Default for CurveSpec {
    fn default() -> Self {
        CurveSpec { sample_rate: 0.0, exact_requests: 20_000_000, simulate_requests: 2_000_000, threads: 0 }
    }
}

/// `--validate`: the engine runs on some of the planned configurations.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateSpec {
    /// The table file (created when missing).
    pub table: PathBuf,
    /// Configurations run (3-5 is plenty).
    pub configurations: usize,
    pub read_path: ReadPath,
    /// Batches read ahead when `run.prefetch` is on.
    pub window: usize,
}

impl Default for ValidateSpec {
    fn default() -> Self {
        ValidateSpec { table: PathBuf::from("out/plan/table.strata"), configurations: 4, read_path: ReadPath::IoUring, window: 4 }
    }
}

/// One hardware alternative: a name and its merged profile.
#[derive(Clone, Debug)]
pub struct Hardware {
    pub name: String,
    pub profile: HardwareProfile,
}

impl PlanConfig {
    /// Reads and checks a plan config: a bad field, value or profile file is a one-line
    /// error naming the file (and, for TOML errors, the line and column).
    pub fn load(path: &Path) -> Result<PlanConfig, ConfigError> {
        Self::parse(path, &crate::config::read(path)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<PlanConfig, ConfigError> {
        let config: PlanConfig = crate::config::parse_toml(path, text)?;
        config.check().map_err(|message| ConfigError::new(path, message))?;
        config.hardware().map_err(|e| ConfigError::new(path, e))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.workload.check("workload")?;
        if self.rows.dim == 0 {
            return Err("rows.dim must be at least 1".into());
        }
        match (self.target.samples_per_sec, self.target.lookups_per_sec) {
            (Some(t), None) | (None, Some(t)) if t > 0.0 && t.is_finite() => {}
            (Some(t), None) | (None, Some(t)) => return Err(format!("target: the throughput must be positive, got {t}")),
            _ => return Err("target: give samples_per_sec or lookups_per_sec (one of them)".into()),
        }
        self.candidates.check()?;
        if self.run.batch == 0 {
            return Err("run.batch must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.run.warmup) {
            return Err(format!("run.warmup must be in [0, 1), got {}", self.run.warmup));
        }
        if self.run.lookups_per_sample == Some(0) {
            return Err("run.lookups_per_sample must be at least 1".into());
        }
        if !(self.run.engine_ns_per_lookup >= 0.0 && self.run.engine_ns_per_lookup.is_finite()) {
            return Err(format!("run.engine_ns_per_lookup must be at least 0, got {}", self.run.engine_ns_per_lookup));
        }
        let rate = self.curves.sample_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("curves.sample_rate must be in [0, 1] (0 = automatic), got {rate}"));
        }
        if self.curves.exact_requests == 0 || self.curves.simulate_requests == 0 {
            return Err("curves.exact_requests and curves.simulate_requests must be at least 1".into());
        }
        self.hardware.check()
    }

    /// The candidate policies ([`CandidateSpec::policies`]).
    pub fn policies(&self) -> Result<Vec<PolicyConfig>, String> {
        self.candidates.policies()
    }

    /// The hardware alternatives ([`HardwareSpec::alternatives`]).
    pub fn hardware(&self) -> Result<Vec<Hardware>, ConfigError> {
        self.hardware.alternatives()
    }

    /// Lookups in one batch.
    pub fn lookups_per_batch(&self) -> u64 {
        (self.run.batch * self.lookups_per_sample()) as u64
    }

    pub fn lookups_per_sample(&self) -> usize {
        self.run.lookups_per_sample.unwrap_or_else(|| self.workload.layout().map_or(1, |l| l.lookups_per_sample()))
    }

    /// The target in lookups/s.
    pub fn target_lookups_per_sec(&self) -> f64 {
        match (self.target.lookups_per_sec, self.target.samples_per_sec) {
            (Some(l), _) => l,
            (None, Some(s)) => s * self.lookups_per_sample() as f64,
            (None, None) => 0.0,
        }
    }

    /// A candidate size in rows, for a table of `table_rows` rows.
    pub fn size_rows(&self, size: f64, table_rows: u64) -> u64 {
        self.candidates.size_rows(size, table_rows, self.rows.slab_bytes())
    }
}

impl HardwareSpec {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.profiles.is_empty() && self.compare.is_empty() {
            return Err("hardware: give profile files (hardware.profiles, hardware.compare)".into());
        }
        Ok(())
    }

    /// The hardware alternatives, each a merged profile (errors name the profile file).
    pub fn alternatives(&self) -> Result<Vec<Hardware>, ConfigError> {
        let alternatives: Vec<Vec<PathBuf>> = if self.compare.is_empty() {
            vec![self.profiles.clone()]
        } else {
            self.compare.iter().map(|extra| self.profiles.iter().chain(extra).cloned().collect()).collect()
        };
        alternatives
            .into_iter()
            .zip(0..)
            .map(|(files, i)| {
                let profile = HardwareProfile::load(&files)?;
                // Named by the files that set it apart (all of them when there is one).
                let own = if self.compare.is_empty() { &self.profiles } else { &self.compare[i] };
                let name = own.iter().map(|p| p.file_stem().unwrap_or_default().to_string_lossy()).collect::<Vec<_>>().join("+");
                Ok(Hardware { name, profile })
            })
            .collect()
    }
}

impl CandidateSpec {
    pub(super) fn check(&self) -> Result<(), String> {
        self.policies()?;
        if self.device.is_empty() || self.host.is_empty() {
            return Err("candidates: give at least one device and one host size".into());
        }
        for (tier, sizes) in [("device", &self.device), ("host", &self.host)] {
            if let Some(bad) = sizes.iter().find(|&&s| !(s >= 0.0 && s.is_finite()) || (self.unit == SizeUnit::Fraction && s > 1.0)) {
                let range = if self.unit == SizeUnit::Fraction { "a fraction of the table in [0, 1]" } else { "GB, at least 0" };
                return Err(format!("candidates.{tier}: {bad} is not {range}"));
            }
        }
        Ok(())
    }

    /// The candidate policies; future-aware ones are refused (the planner replays the
    /// lookups without next-access times).
    pub fn policies(&self) -> Result<Vec<PolicyConfig>, String> {
        if self.policies.is_empty() {
            return Err("candidates.policies: give at least one policy".into());
        }
        self.policies
            .iter()
            .map(|name| {
                let policy = PolicyConfig::from_name(name).map_err(|e| format!("candidates.policies: {e}"))?;
                if policy.needs_future() {
                    return Err(format!("candidates.policies: `{name}` needs next-access times, which the planner does not replay"));
                }
                Ok(policy)
            })
            .collect()
    }

    /// The candidate set-ups in rows, without repeats, in grid order (policy, device,
    /// host), each with its policy's name as the config gives it.
    pub fn setups(&self, table_rows: u64, slab_bytes: u64) -> Result<Vec<(String, TwoLevelConfig)>, String> {
        let size = |s: f64| self.size_rows(s, table_rows, slab_bytes);
        let mut setups: Vec<(String, TwoLevelConfig)> = Vec::new();
        for (name, policy) in self.policies.iter().zip(self.policies()?) {
            for &d in &self.device {
                for &h in &self.host {
                    let setup =
                        TwoLevelConfig { policy: policy.clone(), device_rows: size(d), host_rows: size(h), hierarchy: self.hierarchy };
                    if !setups.iter().any(|(_, s)| *s == setup) {
                        setups.push((name.clone(), setup));
                    }
                }
            }
        }
        Ok(setups)
    }

    /// A candidate size in rows, for a table of `table_rows` rows of `slab_bytes` each.
    pub fn size_rows(&self, size: f64, table_rows: u64, slab_bytes: u64) -> u64 {
        match self.unit {
            SizeUnit::Fraction => (size * table_rows as f64).round() as u64,
            SizeUnit::Gb => ((size * 1e9 / slab_bytes as f64) as u64).min(table_rows),
        }
    }
}
