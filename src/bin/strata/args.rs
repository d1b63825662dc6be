//! Arguments more than one command takes: the synthetic stream's flags (scans included),
//! and the parsers
//! of policy and capacity lists and thread counts.

use anyhow::{bail, Context, Result};
use clap::Args;
use strata::data::{DriftConfig, ScanConfig, SyntheticConfig, SyntheticTrace};
use strata::sim::{parse_capacities, Capacity};
use strata_policies::PolicyConfig;

#[derive(Args)]
pub struct SyntheticArgs {
    /// Scale of the MLPerf table cardinalities.
    #[arg(long, default_value_t = 0.001)]
    scale: f64,
    /// Zipf exponents: one for all tables or 26 comma-separated.
    #[arg(long, default_value = "1.05")]
    zipf: String,
    /// One lookup per table instead of the MLPerf multi-hot sizes.
    #[arg(long)]
    one_hot: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shift every table's hot set every this many samples (0 = no drift).
    #[arg(long, default_value_t = 0)]
    drift_every: u64,
    /// How far the hot set shifts each time, as a fraction of the table.
    #[arg(long, default_value_t = 0.1)]
    drift_fraction: f64,
    /// Mix a sequential scan into the trace after every this many lookups (0 = none).
    #[arg(long, default_value_t = 0)]
    scan_every: u64,
    /// Rows each scan reads, going on from where the last one stopped.
    #[arg(long, default_value_t = 10_000)]
    scan_length: u64,
}

impl SyntheticArgs {
    /// The generator's config, checked.
    pub fn config(&self) -> Result<SyntheticConfig> {
        let zipf = self
            .zipf
            .split(',')
            .map(|s| s.trim().parse::<f64>().with_context(|| format!("--zipf: `{s}` is not a number")))
            .collect::<Result<Vec<_>>>()?;
        let config = SyntheticConfig {
            scale: self.scale,
            zipf,
            multi_hot: !self.one_hot,
            seed: self.seed,
            drift: (self.drift_every > 0).then_some(DriftConfig { every_samples: self.drift_every, fraction: self.drift_fraction }),
            weighted: false.into(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The trace of `requests` lookups these options describe, scans included.
    pub fn trace(&self, requests: u64) -> Result<SyntheticTrace> {
        let trace = SyntheticTrace::new(&self.config()?, requests)?;
        Ok(match self.scan_every {
            0 => trace,
            every => trace.with_scans(&ScanConfig { every, length: self.scan_length }).context("--scan-length")?,
        })
    }
}

/// The policies of a comma-separated `--policies` list (at least one).
pub fn parse_policies(list: &str) -> Result<Vec<PolicyConfig>> {
    let policies = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|name| PolicyConfig::from_name(name.trim()).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    if policies.is_empty() {
        bail!("--policies: give at least one policy");
    }
    Ok(policies)
}

/// The capacities of a comma-separated `--capacity` list (at least one).
pub fn capacities(list: &str) -> Result<Vec<Capacity>> {
    let capacities = parse_capacities(list).map_err(|e| anyhow::anyhow!("--capacity: {e}"))?;
    if capacities.is_empty() {
        bail!("--capacity: give at least one capacity");
    }
    Ok(capacities)
}

/// A `--threads` count: 0 is one per core.
pub fn threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}
