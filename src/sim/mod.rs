//! The policy lab's trace simulator: streams a trace once, maps its keys to dense ids,
//! and replays every (policy, capacity) pair on each chunk, with exact or sampled LRU
//! miss-ratio curves from the same pass; and the engine's two-level cache replayed
//! without rows (`TwoLevel`), for the capacity planner.

mod capacity;
mod two_level;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use strata_policies::mrc::StackDistances;
use strata_policies::{replay, Admission, AdmissionConfig, EvictionPolicy, PolicyConfig, ReplayStats, Request};

pub use capacity::{parse_capacities, Capacity};
pub use two_level::{TierCounts, TwoLevel, TwoLevelConfig};

use crate::progress::Progress;
use crate::trace::{KeyRemapper, KeySource, OracleGeneralWriter, TraceError, TraceRecord, CHUNK};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub policies: Vec<PolicyConfig>,
    pub capacities: Vec<Capacity>,
    pub admission: AdmissionConfig,
    /// Compute the LRU stack-distance curve in the same pass; `Some(rate)` < 1 samples.
    pub lru_curve: Option<f64>,
    /// Worker threads replaying policies side by side (1 = one policy at a time).
    pub threads: usize,
    /// Where a temporary oracleGeneral copy goes when a future-aware policy meets a
    /// trace without next-access times.
    pub scratch_dir: PathBuf,
}

/// One (policy, capacity) result.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyResult {
    pub policy: String,
    pub capacity_rows: u64,
    /// The capacity as a fraction of the trace's distinct rows.
    pub capacity_fraction: f64,
    pub requests: u64,
    pub misses: u64,
    pub miss_ratio: f64,
    pub evictions: u64,
    /// Seconds replaying this policy, plus the seconds reading and mapping the trace
    /// (which every policy needs, as libCacheSim's `process_trace` reads its own).
    pub seconds: f64,
    pub requests_per_sec: f64,
}

/// The outcome of a simulation.
#[derive(Clone, Debug, Serialize)]
pub struct SimulationReport {
    pub requests: u64,
    pub distinct_rows: u64,
    /// Seconds spent reading the trace and mapping its keys (shared by all policies).
    pub read_seconds: f64,
    pub results: Vec<PolicyResult>,
    #[serde(skip)]
    pub lru_curve: Option<StackDistances>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Policy(#[from] strata_policies::PolicyConfigError),
    #[error("the trace is empty: nothing to simulate")]
    EmptyTrace,
    #[error("nothing to simulate: give at least one policy and one capacity")]
    NothingToDo,
}

struct Simulator {
    label: String,
    capacity: u64,
    policy: Box<dyn EvictionPolicy>,
    admission: Admission,
    stats: ReplayStats,
    seconds: f64,
}

impl Simulator {
    fn run(&mut self, requests: &[Request]) {
        let start = Instant::now();
        replay(self.policy.as_mut(), &mut self.admission, requests, &mut self.stats);
        self.seconds += start.elapsed().as_secs_f64();
    }
}

/// Replays one chunk through every simulator on `threads` threads. Policies differ in
/// cost by 5x and more, so a fixed split leaves threads idle: each thread takes the
/// next simulator from a shared queue, the slowest so far first (longest processing
/// time first keeps the last one to finish short).
fn replay_on_threads(simulators: &mut [Simulator], requests: &[Request], threads: usize) {
    let mut order: Vec<&mut Simulator> = simulators.iter_mut().collect();
    order.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let queue = std::sync::Mutex::new(order.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().expect("no simulator panics while holding the queue").next();
                match next {
                    Some(simulator) => simulator.run(requests),
                    None => break,
                }
            });
        }
    });
}

/// Counts the trace's requests and distinct keys with one streaming pass.
fn count_distinct(source: &mut dyn KeySource, remap: &mut KeyRemapper) -> Result<u64, TraceError> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut requests = 0;
    let progress = Progress::new("counting distinct rows", None);
    loop {
        source.next_chunk(&mut chunk, CHUNK)?;
        if chunk.is_empty() {
            progress.finish();
            return Ok(requests);
        }
        requests += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
        for r in &chunk {
            remap.dense_id(r.key);
        }
    }
}

/// Copies a key stream into an oracleGeneral file with next-access times filled in.
pub fn write_oracle_general(source: &mut dyn KeySource, path: &Path) -> Result<u64, TraceError> {
    let mut writer = OracleGeneralWriter::create(path)?;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        source.next_chunk(&mut chunk, CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for r in &chunk {
            writer.write(r.key)?;
        }
    }
    writer.finish()
}

impl Simulation {
    /// Runs the simulation over the trace that `open` opens (it may be opened more than
    /// once: to count distinct keys, and to add next-access times).
    pub fn run(&self, open: &dyn Fn() -> Result<Box<dyn KeySource>, TraceError>) -> Result<SimulationReport, SimulateError> {
        if self.policies.is_empty() || self.capacities.is_empty() {
            return Err(SimulateError::NothingToDo);
        }
        for p in &self.policies {
            p.build(1)?;
        }
        self.admission.validate()?;
        let mut remap = KeyRemapper::new();
        let needs_distinct = self.capacities.iter().any(|c| matches!(c, Capacity::Fraction(_)));
        let mut known_requests = None;
        if needs_distinct {
            let requests = count_distinct(open()?.as_mut(), &mut remap)?;
            if requests == 0 {
                return Err(SimulateError::EmptyTrace);
            }
            known_requests = Some(requests);
        }

        let needs_future = self.policies.iter().any(PolicyConfig::needs_future);
        let mut source = open()?;
        let mut scratch = None;
        if needs_future && !source.has_next_access() {
            std::fs::create_dir_all(&self.scratch_dir).map_err(|e| TraceError::io(&self.scratch_dir, e))?;
            let path = self.scratch_dir.join(format!("strata-annotated-{}.oracleGeneral", std::process::id()));
            tracing::info!("adding next-access times for the future-aware policies: {}", path.display());
            write_oracle_general(source.as_mut(), &path)?;
            source = Box::new(crate::trace::OracleGeneralReader::open(&path)?);
            scratch = Some(TempFile(path));
        }

        let distinct = remap.distinct();
        let mut simulators = Vec::new();
        for capacity in &self.capacities {
            let rows = capacity.rows(distinct);
            for policy in &self.policies {
                simulators.push(Simulator {
                    label: policy.label(),
                    capacity: rows,
                    policy: policy.build(rows as usize)?,
                    admission: Admission::new(&self.admission)?,
                    stats: ReplayStats::default(),
                    seconds: 0.0,
                });
            }
        }
        let mut curve = self.lru_curve.map(|rate| if rate >= 1.0 { StackDistances::exact() } else { StackDistances::sampled(rate) });

        let progress = Progress::new("simulating", known_requests);
        let mut records: Vec<TraceRecord> = Vec::with_capacity(CHUNK);
        let mut requests: Vec<Request> = Vec::with_capacity(CHUNK);
        let mut ids: Vec<u64> = Vec::with_capacity(CHUNK);
        let mut time = 0u64;
        let mut read_seconds = 0.0;
        let threads = self.threads.clamp(1, simulators.len().max(1));
        loop {
            let start = Instant::now();
            source.next_chunk(&mut records, CHUNK)?;
            if records.is_empty() {
                break;
            }
            remap.map_chunk(records.iter().map(|r| r.key), &mut ids);
            requests.clear();
            requests.extend(records.iter().zip(&ids).enumerate().map(|(i, (r, &id))| Request {
                id,
                time: time + i as u64,
                next_access: r.next_access,
            }));
            time += records.len() as u64;
            read_seconds += start.elapsed().as_secs_f64();
            if let Some(curve) = curve.as_mut() {
                requests.iter().for_each(|r| curve.access(r.id));
            }
            if threads == 1 {
                simulators.iter_mut().for_each(|s| s.run(&requests));
            } else {
                replay_on_threads(&mut simulators, &requests, threads);
            }
            progress.advance(records.len() as u64);
        }
        progress.finish();
        drop(scratch);
        if time == 0 {
            return Err(SimulateError::EmptyTrace);
        }
        let distinct = remap.distinct();
        let results = simulators
            .into_iter()
            .map(|s| {
                let seconds = s.seconds + read_seconds;
                PolicyResult {
                    policy: s.label,
                    capacity_rows: s.capacity,
                    capacity_fraction: s.capacity as f64 / distinct as f64,
                    requests: s.stats.requests,
                    misses: s.stats.misses,
                    miss_ratio: s.stats.miss_ratio(),
                    evictions: s.stats.evictions,
                    seconds,
                    requests_per_sec: s.stats.requests as f64 / seconds.max(1e-9),
                }
            })
            .collect();
        Ok(SimulationReport { requests: time, distinct_rows: distinct, read_seconds, results, lru_curve: curve })
    }
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DriftConfig, ScanConfig, SyntheticConfig, SyntheticTrace};

    fn simulation(threads: usize) -> Simulation {
        Simulation {
            policies: ["lru", "fifo", "arc", "s3fifo", "tinylfu", "belady", "lfu:0"]
                .iter()
                .map(|name| PolicyConfig::from_name(name).unwrap())
                .collect(),
            capacities: vec![Capacity::Fraction(0.01), Capacity::Fraction(0.1), Capacity::Rows(500)],
            admission: AdmissionConfig::default(),
            lru_curve: None,
            threads,
            scratch_dir: std::env::temp_dir(),
        }
    }

    #[test]
    fn replay_on_threads_counts_what_one_thread_counts() {
        let synthetic =
            SyntheticConfig { scale: 0.0005, drift: Some(DriftConfig { every_samples: 50, fraction: 0.05 }), ..SyntheticConfig::default() };
        let open = || -> Result<Box<dyn KeySource>, TraceError> {
            let trace = SyntheticTrace::new(&synthetic, 3 * CHUNK as u64 + 123).unwrap();
            Ok(Box::new(trace.with_scans(&ScanConfig { every: 20_000, length: 3_000 }).unwrap()))
        };
        let counts = |report: SimulationReport| -> Vec<(String, u64, u64, u64)> {
            report.results.into_iter().map(|r| (r.policy, r.capacity_rows, r.misses, r.evictions)).collect()
        };
        let one = counts(simulation(1).run(&open).unwrap());
        assert_eq!(one.len(), 21);
        assert!(one.iter().all(|&(_, _, misses, _)| misses > 0));
        assert_eq!(counts(simulation(3).run(&open).unwrap()), one);
    }
}
