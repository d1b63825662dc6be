//! `strata bench simulate`: Strata's simulator and libCacheSim's `process_trace` on the
//! same generated oracleGeneral trace, one policy at a time, in one run, with the
//! ratio of their request rates and a check that their miss ratios agree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_policies::{AdmissionConfig, PolicyConfig};

use strata::data::{SyntheticConfig, SyntheticTrace};
use strata::sim::{write_oracle_general, Capacity, Simulation};
use strata::trace::{KeySource, OracleGeneralReader};

/// Where the libCacheSim driver script lives.
pub const LIBCACHESIM_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/libcachesim_replay.py");

/// The Python interpreter with `libcachesim` installed: `$STRATA_PYTHON`, else the
/// one on the PATH.
pub fn python() -> PathBuf {
    super::python_from_env("STRATA_PYTHON", None)
}

/// What `libcachesim_replay.py` prints per policy.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PeerResult {
    pub policy: String,
    pub capacity_rows: u64,
    pub requests: u64,
    pub misses: u64,
    pub miss_ratio: f64,
    pub seconds: f64,
    pub requests_per_sec: f64,
}

#[derive(Deserialize)]
struct PeerOutput {
    results: Vec<PeerResult>,
}

/// Runs libCacheSim on `trace` through `python`; one result per policy.
pub fn run_libcachesim(
    python: &Path,
    trace: &Path,
    format: &str,
    capacity_rows: u64,
    policies: &[String],
) -> anyhow::Result<Vec<PeerResult>> {
    let mut args = vec![trace.as_os_str().to_owned(), format.into(), capacity_rows.to_string().into()];
    args.extend(policies.iter().map(Into::into));
    let parsed: PeerOutput = super::run_python_json(python, LIBCACHESIM_SCRIPT, &args, "run `make venv` or set STRATA_PYTHON")?;
    Ok(parsed.results)
}

/// One row of the side-by-side comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub policy: String,
    pub capacity_rows: u64,
    pub strata_misses: u64,
    pub libcachesim_misses: u64,
    pub strata_miss_ratio: f64,
    pub libcachesim_miss_ratio: f64,
    pub strata_requests_per_sec: f64,
    pub libcachesim_requests_per_sec: f64,
    /// Strata's request rate over libCacheSim's.
    pub speedup: f64,
}

/// Settings of `strata bench simulate`.
pub struct BenchSimulate {
    pub requests: u64,
    pub synthetic: SyntheticConfig,
    pub capacities: Vec<Capacity>,
    pub policies: Vec<String>,
    pub python: PathBuf,
    pub dir: PathBuf,
}

impl BenchSimulate {
    /// Generates the trace, runs both simulators policy by policy (single-threaded,
    /// each a full pass that reads the file) and returns the comparison.
    pub fn run(&self) -> anyhow::Result<(u64, u64, Vec<Comparison>)> {
        std::fs::create_dir_all(&self.dir)?;
        let trace = self.dir.join(format!("bench-{}.oracleGeneral", self.requests));
        let mut source = SyntheticTrace::new(&self.synthetic, self.requests)?;
        write_oracle_general(&mut source, &trace)?;
        let open = || OracleGeneralReader::open(&trace).map(|r| Box::new(r) as Box<dyn KeySource>);

        // Fix the capacities in rows first, so neither side counts distinct keys inside
        // its timed replay.
        let distinct = Simulation {
            policies: vec![PolicyConfig::Fifo],
            capacities: vec![Capacity::Rows(1)],
            admission: AdmissionConfig::default(),
            lru_curve: None,
            threads: 1,
            scratch_dir: self.dir.clone(),
        }
        .run(&open)?
        .distinct_rows;

        let mut rows = Vec::new();
        for capacity in &self.capacities {
            let capacity_rows = capacity.rows(distinct);
            let peer = run_libcachesim(&self.python, &trace, "oracle-general", capacity_rows, &self.policies)?;
            for (name, peer) in self.policies.iter().zip(peer) {
                let simulation = Simulation {
                    policies: vec![PolicyConfig::from_name(name)?],
                    capacities: vec![Capacity::Rows(capacity_rows)],
                    admission: AdmissionConfig::default(),
                    lru_curve: None,
                    threads: 1,
                    scratch_dir: self.dir.clone(),
                };
                let ours = simulation.run(&open)?.results.remove(0);
                rows.push(Comparison {
                    policy: name.clone(),
                    capacity_rows,
                    strata_misses: ours.misses,
                    libcachesim_misses: peer.misses,
                    strata_miss_ratio: ours.miss_ratio,
                    libcachesim_miss_ratio: peer.miss_ratio,
                    strata_requests_per_sec: ours.requests_per_sec,
                    libcachesim_requests_per_sec: peer.requests_per_sec,
                    speedup: ours.requests_per_sec / peer.requests_per_sec,
                });
            }
        }
        let _ = std::fs::remove_file(&trace);
        Ok((self.requests, distinct, rows))
    }
}

/// The comparison as a Markdown table.
pub fn markdown(requests: u64, distinct: u64, rows: &[Comparison]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{requests} requests, {distinct} distinct rows, one thread each\n");
    out.push_str("| policy | capacity | Strata miss ratio | libCacheSim miss ratio | Strata M req/s | libCacheSim M req/s | speedup |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.5} | {:.5} | {:.2} | {:.2} | {:.2}x |",
            r.policy,
            r.capacity_rows,
            r.strata_miss_ratio,
            r.libcachesim_miss_ratio,
            r.strata_requests_per_sec / 1e6,
            r.libcachesim_requests_per_sec / 1e6,
            r.speedup
        );
    }
    out
}
