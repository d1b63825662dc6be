//! The capacity planner: its exact LRU curves equal the simulator's LRU at every
//! capacity (per table and over all tables), its SHARDS curves stay within the stated
//! bound, its two-level replay counts exactly what the engine counts per tier, and
//! `strata plan` writes a plan whose Pareto front is monotone, or a one-line error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use strata::data::TableLayout;
use strata::engine::batch::Batch;
use strata::engine::placement::Hierarchy;
use strata::plan::curves::PassOptions;
use strata::plan::{SHARDS_BOUND, SHARDS_BOUND_MIN_SAMPLED_ROWS};
use strata::sim::{Capacity, Simulation, TwoLevel, TwoLevelConfig};
use strata::trace::{KeySource, TraceError, TraceRecord, NEVER};
use strata_policies::mrc::StackDistances;
use strata_policies::{AdmissionConfig, PolicyConfig};

/// A trace held in memory.
struct Keys {
    keys: Vec<u64>,
    at: usize,
}

impl KeySource for Keys {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        let end = (self.at + max).min(self.keys.len());
        out.extend(self.keys[self.at..end].iter().map(|&key| TraceRecord { key, next_access: NEVER }));
        self.at = end;
        Ok(())
    }
}

fn keys(keys: &[u64]) -> Box<dyn KeySource> {
    Box::new(Keys { keys: keys.to_vec(), at: 0 })
}

/// LRU miss ratios at every capacity `1..=distinct` by the policy-lab simulator.
fn simulated_lru(trace: &[u64], distinct: u64) -> Vec<f64> {
    let simulation = Simulation {
        policies: vec![PolicyConfig::Lru],
        capacities: (1..=distinct).map(Capacity::Rows).collect(),
        admission: AdmissionConfig::default(),
        lru_curve: None,
        threads: 1,
        scratch_dir: std::env::temp_dir(),
    };
    let report = simulation.run(&|| Ok(keys(trace))).expect("simulation runs");
    let mut results = report.results;
    results.sort_by_key(|r| r.capacity_rows);
    results.iter().map(|r| r.miss_ratio).collect()
}

/// A seeded skewed multi-table stream: each sample draws `multi_hot[t]` rows of table t
/// (row = floor(rows * u^2), so low rows are hot), as global rows of `layout`.
fn multi_table_trace(layout: &TableLayout, samples: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut trace = Vec::new();
    for _ in 0..samples {
        for t in 0..layout.tables() {
            for _ in 0..layout.multi_hot()[t] {
                let u: f64 = rng.gen();
                let row = ((layout.rows()[t] as f64 * u * u) as u64).min(layout.rows()[t] - 1);
                trace.push(layout.global_row(t, row));
            }
        }
    }
    trace
}

#[test]
fn exact_lru_curves_equal_the_simulator_at_every_capacity_per_table_and_over_all_tables() {
    for seed in [1, 2] {
        let layout = TableLayout::new(vec![40, 150, 400], vec![1, 2, 3]);
        let trace = multi_table_trace(&layout, 2500, seed);
        let spec = PassOptions {
            layout: Some(layout.clone()),
            sample_rate: 1.0,
            simulate_rate: 1.0,
            setups: Vec::new(),
            count_from: 0,
            batch_lookups: 600,
            threads: 2,
        };
        let pass = spec.run(keys(&trace).as_mut(), None).expect("pass runs");
        assert_eq!(pass.requests, trace.len() as u64);
        // All tables together: the pass's keys are the global rows.
        let distinct = pass.distinct_rows;
        let all: Vec<u64> = (1..=distinct).collect();
        assert_eq!(pass.all.miss_ratios(&all), simulated_lru(&trace, distinct), "seed {seed}: all tables");
        // Each table: the simulator replays that table's lookups alone.
        assert_eq!(pass.tables.len(), 3);
        for (t, table) in pass.tables.iter().enumerate() {
            let first = layout.global_row(t, 0);
            let own: Vec<u64> =
                trace.iter().copied().filter(|&id| id >= first && id - first < layout.rows()[t]).map(|id| id - first).collect();
            let distinct = table.curve.distinct_rows();
            assert!(distinct > 10, "table {t} sees {distinct} rows");
            let capacities: Vec<u64> = (1..=distinct).collect();
            assert_eq!(table.curve.miss_ratios(&capacities), simulated_lru(&own, distinct), "seed {seed}: table {t}");
        }
    }
}

/// A Zipf(`exponent`) trace over `rows` rows, hot rows scattered over the id space.
fn zipf_trace(rows: u64, exponent: f64, requests: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let zipf = Zipf::new(rows, exponent).unwrap();
    (0..requests).map(|_| (zipf.sample(&mut rng) as u64 - 1).wrapping_mul(0x9E37_79B9) % (rows * 7)).collect()
}

#[test]
fn shards_curves_stay_within_the_stated_bound_on_zipf_traces() {
    for (exponent, rate, seed) in [(0.8, 0.05, 3), (1.0, 0.02, 4), (1.2, 0.05, 5)] {
        let trace = zipf_trace(400_000, exponent, 1_500_000, seed);
        let mut exact = StackDistances::exact();
        let mut sampled = StackDistances::sampled(rate);
        for &id in &trace {
            exact.access(id);
            sampled.access(id);
        }
        let smallest = (SHARDS_BOUND_MIN_SAMPLED_ROWS as f64 / rate).ceil() as u64;
        let capacities = strata::report::log_grid(smallest, exact.distinct_rows(), 24);
        let worst =
            exact.miss_ratios(&capacities).iter().zip(sampled.miss_ratios(&capacities)).map(|(e, s)| (e - s).abs()).fold(0.0, f64::max);
        assert!(worst <= SHARDS_BOUND, "Zipf {exponent}, rate {rate}: worst error {worst}");
    }
}

/// Per-tier hits and misses of the engine serving `trace` in batches.
fn engine_counts(trace: &[u64], rows: u64, setup: &TwoLevelConfig) -> (u64, u64, u64, u64, u64) {
    let (mut table, layout) = common::tiered_over_flat(setup, rows);
    let mut out = Vec::new();
    for (b, ids) in trace.chunks(97).enumerate() {
        let batch = Batch::new(ids.to_vec(), (0..=ids.len()).collect(), (b * 97) as u64);
        out.resize(batch.bags() * 4, 0.0);
        table.lookup(&batch, &mut out).expect("lookup");
    }
    let stats = table.stats();
    let (dh, dm) = stats.device.map_or((0, 0), |d| (d.hits, d.misses));
    let (hh, hm) = stats.host.map_or((0, 0), |h| (h.hits, h.misses));
    (dh, dm, hh, hm, stats.bytes_store_to_host / layout.bytes() as u64)
}

#[test]
fn two_level_replay_counts_what_the_engine_counts_per_tier() {
    let rows = 3000;
    let trace: Vec<u64> = zipf_trace(rows, 0.9, 40_000, 9).into_iter().map(|id| id % rows).collect();
    let policies = ["lru", "fifo", "clock", "s3fifo", "sieve", "tinylfu", "arc", "static:5000"];
    for name in policies {
        for hierarchy in [Hierarchy::Inclusive, Hierarchy::Exclusive] {
            for (device_rows, host_rows) in [(50, 400), (200, 200), (300, 0), (0, 500), (0, 0)] {
                let setup = TwoLevelConfig { policy: PolicyConfig::from_name(name).unwrap(), device_rows, host_rows, hierarchy };
                let mut sim = TwoLevel::new(&setup).unwrap().batches_of(97);
                sim.replay_ids(&trace, 0);
                let c = sim.counts();
                let (dh, dm, hh, hm, store_reads) = engine_counts(&trace, rows, &setup);
                let what = format!("{name} {hierarchy:?} device {device_rows} host {host_rows}");
                assert_eq!(c.lookups, trace.len() as u64, "{what}");
                assert_eq!(c.device_hits, dh, "{what}: device hits");
                if device_rows > 0 {
                    assert_eq!(c.lookups - c.device_hits, dm, "{what}: device misses");
                }
                assert_eq!((c.host_hits, c.host_lookups - c.host_hits), (hh, hm), "{what}: host hits, misses");
                // Each row a batch looks up is read from the store at most once for it,
                // never when it was in memory as the batch began (the engine keeps a row
                // the batch pushes out for the rest of its step), as the replay counts.
                // (Static placement counts rows resident before they arrive, which the
                // engine then reads: its store reads are not checked here.)
                if name != "static:5000" {
                    assert_eq!(c.store_reads, store_reads, "{what}: rows read from the store");
                }
            }
        }
    }
}

#[test]
fn one_tier_lru_and_exclusive_lru_split_is_the_curve_and_inclusive_two_tier_lru_is_close() {
    let rows = 20_000;
    let trace: Vec<u64> = zipf_trace(rows, 1.0, 200_000, 11).into_iter().map(|id| id % rows).collect();
    let mut curve = StackDistances::exact();
    trace.iter().for_each(|&id| curve.access(id));
    let m = |c: u64| curve.miss_ratios(&[c])[0];
    for (d, h) in [(100, 2000), (500, 500), (1000, 8000)] {
        let counts = |hierarchy| {
            let mut sim = TwoLevel::new(&TwoLevelConfig { policy: PolicyConfig::Lru, device_rows: d, host_rows: h, hierarchy }).unwrap();
            sim.replay_ids(&trace, 0);
            sim.counts()
        };
        let n = trace.len() as f64;
        // Exclusive LRU is one LRU stack cut in two: the device holds the top d rows,
        // the host the next h - 1 (the demoted victim takes the host's last place
        // before the requested row is looked for there).
        let exclusive = counts(Hierarchy::Exclusive);
        assert!((exclusive.device_share() - (1.0 - m(d))).abs() < 1e-12);
        assert!((exclusive.host_hits as f64 / n - (m(d) - m(d + h - 1))).abs() < 1e-12, "exclusive {d}/{h}");
        // Inclusive: the host sees only the device's misses, so it is not an LRU over
        // the stream; m(d) - m(h) is an approximation (docs/PLANNING.md).
        let inclusive = counts(Hierarchy::Inclusive);
        assert!((inclusive.device_share() - (1.0 - m(d))).abs() < 1e-12);
        let approx = if h > d { m(d) - m(h) } else { 0.0 };
        assert!((inclusive.host_share() - approx).abs() < 0.02, "inclusive {d}/{h}: {} vs {approx}", inclusive.host_share());
    }
}

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn profile(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles").join(name).display().to_string()
}

fn tiny_config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[workload]
source = "synthetic"
requests = 428_000
[workload.synthetic]
scale = 0.0005
zipf = [1.05]
seed = 3

[rows]
dim = 64

[hardware]
profiles = ["{h100}", "{ddr5}"]
compare = [["{gen4}"], ["{gen5}"]]

[target]
samples_per_sec = 20_000

[candidates]
policies = ["lru", "s3fifo"]
device = [0.0, 0.01, 0.05]
host = [0.0, 0.1, 0.5]

[run]
batch = 100
{extra}
[output]
dir = "{out}"
"#,
        h100 = profile("h100-pcie5.toml"),
        ddr5 = profile("ddr5-server.toml"),
        gen4 = profile("nvme-gen4.toml"),
        gen5 = profile("nvme-gen5.toml"),
        out = dir.join("out").display(),
    );
    let path = dir.join("plan.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn strata_plan_writes_a_monotone_pareto_front_and_configurations_meeting_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), "");
    let output = strata().arg("plan").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("### Cheapest configurations meeting 20000 samples/s"), "{stdout}");
    assert!(stdout.contains("### Pareto front"), "{stdout}");
    let out = dir.path().join("out");
    for file in ["plan.csv", "plan.json", "plan.svg", "mrc.csv", "mrc.svg"] {
        assert!(std::fs::metadata(out.join(file)).map(|m| m.len() > 100).unwrap_or(false), "{file} written");
    }
    let csv = std::fs::read_to_string(out.join("plan.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    // 2 hardware alternatives x 2 policies x 3 device x 3 host sizes.
    assert_eq!(rows.len(), 36);
    let number = |r: &Vec<String>, name: &str| r[col(name)].parse::<f64>().unwrap();
    let mut front: Vec<(f64, f64)> =
        rows.iter().filter(|r| r[col("on_pareto_front")] == "true").map(|r| (number(r, "cost"), number(r, "samples_per_sec"))).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(front.len() >= 2, "{front:?}");
    for pair in front.windows(2) {
        assert!(pair[1].0 > pair[0].0 && pair[1].1 > pair[0].1, "front not monotone: {front:?}");
    }
    // Nothing off the front is both cheaper and faster than a point on it.
    for r in rows.iter().filter(|r| r[col("fits")] == "true") {
        let (cost, speed) = (number(r, "cost"), number(r, "samples_per_sec"));
        assert!(!front.iter().any(|&(c, s)| cost < c && speed > s), "({cost}, {speed}) dominates a front point");
    }
    let meeting: Vec<&Vec<String>> = rows.iter().filter(|r| r[col("meets_target")] == "true").collect();
    assert!(!meeting.is_empty());
    assert!(meeting.iter().all(|r| number(r, "samples_per_sec") >= 20_000.0));
    // Shares of one set-up add up (to the CSV's six decimals: three roundings of up to
    // 5e-7 each), and a bigger host never serves fewer lookups from memory.
    for r in &rows {
        let sum = number(r, "device_share") + number(r, "host_share") + number(r, "store_share");
        assert!((sum - 1.0).abs() < 1.5e-6 + 1e-12, "{r:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(json["plan"]["rows"].as_array().unwrap().len(), 36);
}

fn plan_error(dir: &Path, config: &Path) -> String {
    let output = strata().arg("plan").arg(config).arg("--out").arg(dir.join("o")).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_plan_configs_give_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), "prefetch_depth = 3\n");
    let err = plan_error(dir.path(), &config);
    assert!(err.contains(&format!("{}: line", config.display())) && err.contains("prefetch_depth"), "{err}");

    let config = tiny_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("samples_per_sec = 20_000", "samples_per_sec = -5");
    std::fs::write(&config, text).unwrap();
    let err = plan_error(dir.path(), &config);
    assert!(err.contains(&format!("{}: target: the throughput must be positive, got -5", config.display())), "{err}");

    let config = tiny_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("nvme-gen5.toml", "nvme-gen9.toml");
    std::fs::write(&config, text).unwrap();
    let err = plan_error(dir.path(), &config);
    assert!(err.contains("nvme-gen9.toml") && err.contains("No such file"), "{err}");

    let config = tiny_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("[\"lru\", \"s3fifo\"]", "[\"lru\", \"belady\"]");
    std::fs::write(&config, text).unwrap();
    let err = plan_error(dir.path(), &config);
    assert!(err.contains(&format!("{}: candidates.policies: `belady` needs next-access times", config.display())), "{err}");
}
