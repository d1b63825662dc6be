//! `strata bench remote`: rows per second through the remote tier's read and write
//! paths (`RedisStore::read_rows` / `write_rows` on a Redis Cluster), next to
//! `redis-benchmark` sending the same commands (MGET / MSET, the same keys per command,
//! value size and pipeline depth, one connection per master) to the same cluster in the
//! same run.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::Serialize;
use strata::engine::storage::remote::{RedisStore, RemoteConfig, RemoteStats};
use strata::engine::storage::BackingStore;
use strata::engine::{Optimizer, RowInit, RowLayout};

/// `strata bench remote`'s options.
#[derive(Args)]
pub struct RemoteBenchArgs {
    /// Cluster nodes, `host:port` comma-separated (any node will do); default: a local
    /// cluster of 3 masters + 3 replicas on loopback ports, started for the run and torn
    /// down after it (Redis from Debian's packages: `make redis`).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// The table's rows (dim floats + a row-wise Adagrad accumulator each).
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Rows per read_rows / write_rows call.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Calls timed per path (the row-order paths make at least enough to cover the
    /// table once).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Consecutive rows under one hash tag (one slot).
    #[arg(long, default_value_t = 64)]
    block_rows: u64,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// One path: Strata's rate, the shape of the commands it sent, and redis-benchmark's
/// rate for commands of that shape.
#[derive(Serialize)]
struct PathFigures {
    path: &'static str,
    rows: u64,
    seconds: f64,
    rows_per_s: f64,
    keys_per_command: f64,
    commands_per_pipeline: f64,
    /// What redis-benchmark was given: keys per command and pipeline depth (rounded).
    peer_keys: usize,
    peer_pipeline: usize,
    peer_keys_per_s: f64,
    vs_peer: f64,
}

#[derive(Serialize)]
struct Report {
    nodes: Vec<String>,
    masters: usize,
    local_cluster: bool,
    rows: u64,
    dim: usize,
    value_bytes: usize,
    batch: usize,
    block_rows: u64,
    redis_benchmark: String,
    paths: Vec<PathFigures>,
}

/// The rows of one timed path: calls of `batch` rows each.
enum Rows {
    /// `batch` consecutive rows per call, from row 0 on, starting again at 0 after the
    /// table's last row; enough calls to cover the table at least once.
    InOrder,
    /// `calls` calls of `batch` distinct rows drawn uniformly.
    Random,
}

impl RemoteBenchArgs {
    pub fn run(self) -> Result<()> {
        if self.rows == 0 || self.dim == 0 || self.batch == 0 || self.calls == 0 || self.block_rows == 0 {
            bail!("--rows, --dim, --batch, --calls and --block-rows must be positive");
        }
        if self.batch as u64 > self.rows {
            bail!("--batch {} is more than the table's {} rows", self.batch, self.rows);
        }
        let version = redis_benchmark_version()?;
        let (local, nodes) = super::cluster_nodes(&self.nodes)?;
        let report = self.measure(&nodes, version, local.is_some())?;
        match self.json {
            true => println!("{}", serde_json::to_string_pretty(&report)?),
            false => print!("{}", markdown(&report)),
        }
        Ok(())
    }

    fn measure(&self, nodes: &[String], redis_benchmark: String, local_cluster: bool) -> Result<Report> {
        let layout = RowLayout::new(self.dim, &Optimizer::RowWiseAdagrad { lr: 0.01, eps: 1e-8 });
        let value_bytes = layout.words() * 4 + 4;
        let config = RemoteConfig { block_rows: self.block_rows, ..RemoteConfig::new(nodes.to_vec(), "strata-bench") };
        let mut store = RedisStore::create(&config, self.rows, layout, RowInit::Uniform { seed: 1, scale: 0.01 })?;
        let masters = store.masters();
        let mut paths = Vec::new();
        // Writes first, so that every key exists when the reads run (on both sides).
        for (path, command, rows) in [
            ("write, row order", "MSET", Rows::InOrder),
            ("write, random rows", "MSET", Rows::Random),
            ("read, random rows", "MGET", Rows::Random),
            ("read, row order", "MGET", Rows::InOrder),
        ] {
            let (rows_done, seconds, stats) = self.time_path(&mut store, command, rows)?;
            let keys_per_command = rows_done as f64 / stats.commands.max(1) as f64;
            let commands_per_pipeline = stats.commands as f64 / stats.pipelines.max(1) as f64;
            let (peer_keys, peer_pipeline) = (keys_per_command.round().max(1.0) as usize, commands_per_pipeline.round().max(1.0) as usize);
            // As many keys as Strata moved, and at least ten times the table's rows: long
            // enough for redis-benchmark's rate (it times in milliseconds), and its writes
            // leave (nearly) every key of its key space there for its reads.
            let keys = rows_done.max(10 * self.rows);
            let requests = keys.div_ceil(peer_keys as u64);
            let keyspace = self.rows.div_ceil(masters.len() as u64);
            let rps = run_redis_benchmark(&nodes[0], command, peer_keys, peer_pipeline, masters.len(), requests, keyspace, value_bytes)?;
            let rows_per_s = rows_done as f64 / seconds;
            let peer_keys_per_s = rps * peer_keys as f64;
            eprintln!(
                "{path}: strata {rows_per_s:.0} rows/s ({keys_per_command:.1} keys/command, {commands_per_pipeline:.0} commands/pipeline), redis-benchmark {peer_keys_per_s:.0} keys/s"
            );
            paths.push(PathFigures {
                path,
                rows: rows_done,
                seconds,
                rows_per_s,
                keys_per_command,
                commands_per_pipeline,
                peer_keys,
                peer_pipeline,
                peer_keys_per_s,
                vs_peer: rows_per_s / peer_keys_per_s,
            });
        }
        Ok(Report {
            nodes: nodes.to_vec(),
            masters: masters.len(),
            local_cluster,
            rows: self.rows,
            dim: self.dim,
            value_bytes,
            batch: self.batch,
            block_rows: self.block_rows,
            redis_benchmark,
            paths,
        })
    }

    /// Times one path; returns the rows moved, the seconds and the store's counters of
    /// the path alone.
    fn time_path(&self, store: &mut RedisStore, command: &str, rows: Rows) -> Result<(u64, f64, RemoteStats)> {
        let calls: Vec<Vec<u64>> = match rows {
            Rows::InOrder => {
                let (mut calls, mut first) = (Vec::new(), 0);
                while calls.len() < self.calls || calls.len() * self.batch < self.rows as usize {
                    let end = (first + self.batch as u64).min(self.rows);
                    calls.push((first..end).collect());
                    first = if end == self.rows { 0 } else { end };
                }
                calls
            }
            Rows::Random => {
                let mut rng = SmallRng::seed_from_u64(7);
                (0..self.calls).map(|_| sample(&mut rng, self.rows as usize, self.batch).into_iter().map(|r| r as u64).collect()).collect()
            }
        };
        let floats = store.layout().words();
        let mut buffer = vec![0.5f32; self.batch * floats];
        let before = store.stats();
        let start = Instant::now();
        for rows in &calls {
            let buffer = &mut buffer[..rows.len() * floats];
            match command {
                "MSET" => store.write_rows(rows, buffer)?,
                _ => store.read_rows(rows, buffer)?,
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let after = store.stats();
        let stats = RemoteStats { commands: after.commands - before.commands, pipelines: after.pipelines - before.pipelines, ..after };
        if stats.retries != before.retries {
            eprintln!("note: {} retries during the timed calls", stats.retries - before.retries);
        }
        Ok((calls.iter().map(|c| c.len() as u64).sum(), seconds, stats))
    }
}

fn redis_benchmark_version() -> Result<String> {
    let output = Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .context("redis-benchmark not found: it comes with Debian's redis-tools (`make redis` installs it)")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs redis-benchmark in cluster mode (`{tag}` in a key is replaced with a tag of the
/// node each connection is on, so every command goes to a master owning its keys):
/// `requests` commands of `keys` keys each (`__rand_int__` below `keyspace`), `pipeline`
/// deep, over `clients` connections; returns its requests per second.
#[allow(clippy::too_many_arguments)]
fn run_redis_benchmark(
    seed: &str,
    command: &str,
    keys: usize,
    pipeline: usize,
    clients: usize,
    requests: u64,
    keyspace: u64,
    value_bytes: usize,
) -> Result<f64> {
    let (host, port) = seed.rsplit_once(':').context("a node is host:port")?;
    let value = "x".repeat(value_bytes);
    let mut args: Vec<String> = vec![command.to_string()];
    for _ in 0..keys {
        args.push("strata-bench:{tag}:__rand_int__".to_string());
        if command == "MSET" {
            args.push(value.clone());
        }
    }
    let output = Command::new("redis-benchmark")
        .args(["--cluster", "-h", host, "-p", port, "--csv"])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string(), "-n", &requests.to_string(), "-r", &keyspace.to_string()])
        .args(&args)
        .output()
        .context("running redis-benchmark")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("redis-benchmark failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    // CSV: a header line, then `"<command>","<rps>",...`.
    let rps = stdout
        .lines()
        .filter(|line| !line.starts_with("\"test\""))
        .find_map(|line| line.split(',').nth(1).and_then(|field| field.trim_matches('"').parse::<f64>().ok()));
    rps.with_context(|| format!("redis-benchmark printed no rate: {}", stdout.trim()))
}

fn markdown(report: &Report) -> String {
    let mut s = format!(
        "Remote tier on Redis Cluster ({} masters{}; {}): a table of {} rows of dim {} + 1 state float ({} bytes per value with its checksum), {} rows per call, {} rows per hash tag; against {} in cluster mode, one connection per master, the same command, keys per command, value size and pipeline depth.\n\n",
        report.masters,
        if report.local_cluster { ", a local cluster of 3 masters + 3 replicas on loopback" } else { "" },
        report.nodes.join(","),
        report.rows,
        report.dim,
        report.value_bytes,
        report.batch,
        report.block_rows,
        report.redis_benchmark,
    );
    s += "| path | rows | strata rows/s | keys per command | commands per pipeline | redis-benchmark (keys, pipeline) | redis-benchmark keys/s | vs redis-benchmark |\n";
    s += "|---|---:|---:|---:|---:|---|---:|---:|\n";
    for p in &report.paths {
        s += &format!(
            "| {} | {} | {:.0} | {:.1} | {:.0} | {} {} x, -P {} | {:.0} | {:.2}x |\n",
            p.path,
            p.rows,
            p.rows_per_s,
            p.keys_per_command,
            p.commands_per_pipeline,
            if p.path.starts_with("write") { "MSET" } else { "MGET" },
            p.peer_keys,
            p.peer_pipeline,
            p.peer_keys_per_s,
            p.vs_peer
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_moves_its_rows_and_redis_benchmark_runs_beside_it() {
        let cluster = strata::engine::storage::remote::LocalCluster::start().expect("starting a local Redis Cluster");
        let args = RemoteBenchArgs { nodes: Vec::new(), rows: 3000, dim: 8, batch: 500, calls: 3, block_rows: 64, json: false };
        let report = args.measure(&cluster.nodes(), redis_benchmark_version().unwrap(), true).unwrap();
        assert_eq!(report.masters, 3);
        assert_eq!(report.value_bytes, (8 + 1) * 4 + 4);
        // Row order: calls of 500 rows until the table is covered (6 calls); random: 3.
        let rows: Vec<u64> = report.paths.iter().map(|p| p.rows).collect();
        assert_eq!(rows, vec![3000, 1500, 1500, 3000]);
        for path in &report.paths {
            // Row order fills whole blocks of 64 rows (one slot each); random rows share
            // a slot a few at a time.
            assert!(path.keys_per_command >= 1.0 && path.keys_per_command <= 64.0, "{}: {}", path.path, path.keys_per_command);
            assert!(path.peer_keys_per_s > 0.0 && path.rows_per_s > 0.0, "{}", path.path);
        }
        // Calls of 500 consecutive rows: one MSET per block of 64 each call touches.
        let commands: u64 = (0..3000u64).step_by(500).map(|first| (first + 499) / 64 - first / 64 + 1).sum();
        assert_eq!(report.paths[3].keys_per_command, report.paths[0].keys_per_command);
        assert_eq!(report.paths[0].keys_per_command, 3000.0 / commands as f64);
        assert!(markdown(&report).contains("| read, random rows | 1500 |"));
    }
}
