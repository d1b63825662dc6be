//! `strata bench simulate`: Strata's simulator and libCacheSim's `process_trace` on the
//! same generated oracleGeneral trace, one policy at a time, in one run, with the
//! ratio of their request rates and a check that their miss ratios agree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use strata_policies::{AdmissionConfig, PolicyConfig};

use strata::sim::{write_oracle_general, Capacity, Simulation};
use strata::trace::{KeySource, OracleGeneralReader};

use crate::args::{capacities, parse_policies, SyntheticArgs};

/// Where the libCacheSim driver script lives.
pub const LIBCACHESIM_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/libcachesim_replay.py");

/// The Python interpreter with `libcachesim` installed: `$STRATA_PYTHON`, else the
/// one on the PATH.
fn python() -> PathBuf {
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

/// `strata bench simulate`'s options.
#[derive(Args)]
pub struct SimulateBenchArgs {
    #[arg(long, default_value_t = 10_000_000)]
    requests: u64,
    /// Comma-separated capacities (fractions of distinct rows, or rows).
    #[arg(long, default_value = "0.01")]
    capacity: String,
    #[arg(long, default_value = "lru,fifo,clock,lfu:0,arc,s3fifo,sieve,tinylfu,belady")]
    policies: String,
    #[command(flatten)]
    synthetic: SyntheticArgs,
    /// Runs of each side per (policy, capacity); each side's fastest counts (on a shared
    /// machine a neighbour's burst then has to hit every run to show).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Folder for the temporary trace.
    #[arg(long, default_value = "out/bench")]
    dir: PathBuf,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

impl SimulateBenchArgs {
    /// Runs the comparison and prints its table (or JSON).
    pub fn run(&self) -> anyhow::Result<()> {
        parse_policies(&self.policies)?;
        let capacities = capacities(&self.capacity)?;
        let policies: Vec<String> = self.policies.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let (requests, distinct, rows) = self.compare(&capacities, &policies, &python())?;
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "requests": requests, "distinct_rows": distinct, "repeat": self.repeat.max(1), "results": rows })
                )?
            );
        } else {
            print!("{}", markdown(requests, distinct, self.repeat.max(1), &rows));
        }
        Ok(())
    }

    /// Generates the trace, runs both simulators policy by policy (single-threaded,
    /// each a full pass that reads the file) and returns the comparison.
    fn compare(&self, capacities: &[Capacity], policies: &[String], python: &Path) -> anyhow::Result<(u64, u64, Vec<Comparison>)> {
        std::fs::create_dir_all(&self.dir)?;
        let trace = self.dir.join(format!("bench-{}.oracleGeneral", self.requests));
        let mut source = self.synthetic.trace(self.requests)?;
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
        for capacity in capacities {
            let capacity_rows = capacity.rows(distinct);
            let mut peers: Vec<PeerResult> = Vec::new();
            for _ in 0..self.repeat.max(1) {
                let run = run_libcachesim(python, &trace, "oracle-general", capacity_rows, policies)?;
                if peers.is_empty() {
                    peers = run;
                } else {
                    for (best, new) in peers.iter_mut().zip(run) {
                        if new.requests_per_sec > best.requests_per_sec {
                            *best = new;
                        }
                    }
                }
            }
            for (name, peer) in policies.iter().zip(peers) {
                let simulation = Simulation {
                    policies: vec![PolicyConfig::from_name(name)?],
                    capacities: vec![Capacity::Rows(capacity_rows)],
                    admission: AdmissionConfig::default(),
                    lru_curve: None,
                    threads: 1,
                    scratch_dir: self.dir.clone(),
                };
                let mut ours = simulation.run(&open)?.results.remove(0);
                for _ in 1..self.repeat.max(1) {
                    let again = simulation.run(&open)?.results.remove(0);
                    if again.requests_per_sec > ours.requests_per_sec {
                        ours = again;
                    }
                }
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
fn markdown(requests: u64, distinct: u64, repeat: usize, rows: &[Comparison]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{requests} requests, {distinct} distinct rows, one thread each, the fastest of {repeat} run(s) a side\n");
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
