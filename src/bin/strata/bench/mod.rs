//! The side-by-side benchmarks behind `strata bench`: each runs Strata next to a peer
//! or a machine limit in the same run and prints the ratio; each bench's options are its
//! command-line arguments. `probe` holds the measurements they share with
//! `strata calibrate`, `validate_plan` and `validate_serving` the engine's checks of
//! `strata plan --validate`.

pub mod embedding;
pub mod gather;
pub mod lookup;
pub mod probe;
pub mod remote;
#[cfg(feature = "torch")]
pub mod remote_training;
pub mod replicas;
pub mod simulate;
pub mod storage;
pub mod validate_plan;
#[cfg(feature = "torch")]
pub mod validate_serving;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Strata's simulator against libCacheSim's process_trace on the same trace.
    Simulate(simulate::SimulateBenchArgs),
    /// Storage-tier random row reads (io_uring, mmap, pread) against fio on one file.
    Storage(storage::StorageBenchArgs),
    /// A Zipf lookup stream through the tiered table, with and without prefetch, next
    /// to the same stream served entirely from host memory.
    Lookup(lookup::LookupBenchArgs),
    /// The embedding part of a training step (pooled lookup + row-wise Adagrad, host
    /// memory, one thread) in Strata against FBGEMM's CPU kernels on the same batches.
    Embedding(embedding::EmbeddingBenchArgs),
    /// Pooled embedding-bag gather from a host slab against plain memory copy (and, with
    /// `--backend cuda`, pinned host-to-device copy and device gather).
    Gather(gather::GatherBenchArgs),
    /// The remote tier's row reads and writes on a Redis Cluster against redis-benchmark
    /// sending the same MGET / MSET commands to the same cluster.
    Remote(remote::RemoteBenchArgs),
    /// Serving queries/s and latency with several replicas of one published table at
    /// once, next to the trainer serving the same requests in process.
    Replicas(replicas::ReplicasBenchArgs),
    /// An experiment config trained with its table on a Redis Cluster, each set-up's
    /// samples/s against the first's (all in host memory in configs/default.toml).
    #[cfg(feature = "torch")]
    RemoteTraining(remote_training::RemoteTrainingBenchArgs),
}

impl BenchCommand {
    /// Runs the benchmark and prints its report.
    pub fn run(self) -> Result<()> {
        match self {
            BenchCommand::Simulate(bench) => bench.run(),
            BenchCommand::Storage(bench) => bench.run().map(|report| print!("{report}")),
            BenchCommand::Lookup(bench) => bench.run(),
            BenchCommand::Embedding(bench) => bench.run(),
            BenchCommand::Gather(bench) => bench.run(),
            BenchCommand::Remote(bench) => bench.run(),
            BenchCommand::Replicas(bench) => bench.run(),
            #[cfg(feature = "torch")]
            BenchCommand::RemoteTraining(bench) => bench.run(),
        }
    }
}

/// The cluster a remote bench runs against: `nodes` when given, else a local cluster
/// of 3 masters + 3 replicas started now (kept alive by the returned handle, torn down
/// when it drops).
pub fn cluster_nodes(nodes: &[String]) -> Result<(Option<strata::engine::storage::remote::LocalCluster>, Vec<String>)> {
    use strata::engine::storage::remote::LocalCluster;
    if !nodes.is_empty() {
        return Ok((None, nodes.to_vec()));
    }
    eprintln!("starting a local Redis Cluster (3 masters + 3 replicas on loopback ports)");
    let local = LocalCluster::start().map_err(anyhow::Error::msg)?;
    let nodes = local.nodes();
    Ok((Some(local), nodes))
}

/// A Python interpreter: `$var` when set, else `fallback` when that file exists, else
/// `python3` on the PATH.
pub fn python_from_env(var: &str, fallback: Option<PathBuf>) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).or_else(|| fallback.filter(|p| p.is_file())).unwrap_or_else(|| PathBuf::from("python3"))
}
/// Runs `python script args..` and parses the one JSON document it prints on stdout;
/// `setup` tells the user how to get a working interpreter.
pub fn run_python_json<T: serde::de::DeserializeOwned, S: AsRef<std::ffi::OsStr>>(
    python: &Path,
    script: &str,
    args: &[S],
    setup: &str,
) -> Result<T> {
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("{}: cannot start ({e}); {setup}", python.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{} {script} failed: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("no message")
        );
    }
    serde_json::from_slice(&output.stdout).map_err(|e| anyhow::anyhow!("{script}: unreadable output: {e}"))
}
