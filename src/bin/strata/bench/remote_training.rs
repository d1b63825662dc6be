//! `strata bench remote-training`: an experiment config trained with its table on a
//! Redis Cluster (`[engine.remote]` in place of `table_file`), each set-up's samples/s
//! against the first set-up's (the all-in-host one in configs/default.toml), in one
//! run on one cluster; `--file-cache` puts a local file cache in front of the cluster.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

/// `strata bench remote-training`'s options.
#[derive(Args)]
pub struct RemoteTrainingBenchArgs {
    /// The experiment config; its table goes to the cluster.
    #[arg(long, default_value = "configs/default.toml")]
    config: PathBuf,
    /// The set-ups to run, by position from 0 (default: all); the first given is the
    /// one the others are compared with.
    #[arg(long, value_delimiter = ',')]
    setups: Vec<usize>,
    /// Cluster nodes, `host:port` comma-separated; default: a local cluster of 3
    /// masters + 3 replicas on loopback ports, started for the run and torn down after.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Replicas each write waits for (`[engine.remote] replicas`).
    #[arg(long, default_value_t = 0)]
    replicas: u32,
    /// Puts a local file cache of this many rows (below 1: a fraction of the table)
    /// between the host tier and the cluster (`[engine.file_cache]`, in the output
    /// folder).
    #[arg(long)]
    file_cache: Option<f64>,
    /// The file cache's policy.
    #[arg(long, default_value = "lru")]
    file_cache_policy: String,
    /// Output folder for the experiment's reports (default: a temporary one).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl RemoteTrainingBenchArgs {
    pub fn run(self) -> Result<()> {
        let (local, nodes) = super::cluster_nodes(&self.nodes)?;
        let text = strata::config::read(&self.config)?;
        let mut config: toml::Table = toml::from_str(&text).with_context(|| format!("{}", self.config.display()))?;
        let engine = config.get_mut("engine").and_then(|e| e.as_table_mut()).context("the config has no [engine]")?;
        engine.remove("table_file");
        let remote = toml::Table::from_iter([
            ("nodes".to_string(), toml::Value::from(nodes.clone())),
            ("table".to_string(), "bench-training".into()),
            ("replicas".to_string(), i64::from(self.replicas).into()),
        ]);
        engine.insert("remote".into(), remote.into());
        let dir = tempfile::tempdir()?;
        let out = self.out.clone().unwrap_or_else(|| dir.path().to_path_buf());
        if let Some(size) = self.file_cache {
            let cache = toml::Table::from_iter([
                ("path".to_string(), toml::Value::from(out.join("file-cache.strata").display().to_string())),
                ("size".to_string(), size.into()),
                ("policy".to_string(), self.file_cache_policy.clone().into()),
            ]);
            engine.insert("file_cache".into(), cache.into());
        }
        if !self.setups.is_empty() {
            let all = config.get("setup").and_then(|s| s.as_array()).cloned().unwrap_or_default();
            let chosen: Vec<toml::Value> = self.setups.iter().filter_map(|&i| all.get(i).cloned()).collect();
            if chosen.len() != self.setups.len() {
                bail!("--setups: the config has {} set-ups (0..{})", all.len(), all.len().saturating_sub(1));
            }
            config.insert("setup".into(), chosen.into());
        }
        let patched = toml::to_string(&config)?;
        let experiment = strata::experiment::ExperimentConfig::parse(&self.config, &patched)?;
        let (results, summary) = strata::experiment::run(&experiment, Some(&out))?;
        println!(
            "{} with its table on Redis Cluster ({}; {} masters), replicas = {}{}:\n",
            self.config.display(),
            if local.is_some() { "a local cluster of 3 masters + 3 replicas on loopback" } else { "the given cluster" },
            3,
            self.replicas,
            match self.file_cache {
                Some(size) => format!(", behind a local file cache of {size} ({})", self.file_cache_policy),
                None => String::new(),
            }
        );
        print!("{summary}");
        let first = results.first().and_then(|r| r.samples_per_sec).unwrap_or(0.0);
        println!();
        for r in &results {
            if let Some(sps) = r.samples_per_sec {
                let cache = r.outcome.as_ref().and_then(|o| o.engine.file_cache).filter(|c| c.hits + c.misses > 0).map(|c| {
                    let read = (c.hits + c.misses) as f64;
                    format!(
                        " (file cache: {:.1}% of {} store reads hit, {} rows admitted)",
                        100.0 * c.hits as f64 / read,
                        c.hits + c.misses,
                        c.admitted
                    )
                });
                let share = sps / first.max(1e-9);
                println!("- {}: {sps:.0} samples/s, {share:.2} of `{}`{}", r.name, results[0].name, cache.unwrap_or_default());
            }
        }
        Ok(())
    }
}
