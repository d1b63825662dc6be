//! `strata bench replicas`: serving queries/s and latency with 1, 2 and 4 replicas of one
//! published table at once, next to one process serving the same requests from the
//! trainer's own table in the same run. The trainer (`strata run` on the config's
//! first set-up, publishing to the cluster) runs first; then for each count that many
//! `strata serve` processes (the config's second set-up, or the first) start together.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

/// `strata bench replicas`' options.
#[derive(Args)]
pub struct ReplicasBenchArgs {
    /// An experiment config with `[publish]` and `[serve]`; its `[publish.cluster]`
    /// nodes are replaced by the cluster used.
    #[arg(long, default_value = "configs/replicas.toml")]
    config: PathBuf,
    /// Replicas started at once, one count after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    replicas: Vec<usize>,
    /// Cluster nodes, `host:port` comma-separated; default: a local cluster of 3
    /// masters + 3 replicas on loopback ports, started for the run and torn down after.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// One count of replicas serving at once.
#[derive(Serialize)]
struct Round {
    replicas: usize,
    /// Queries/s of all replicas together, and of each.
    queries_per_sec: f64,
    per_replica_queries_per_sec: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    /// Every replica's predictions equal the trainer's own serving run's.
    predictions_match: bool,
    versions_applied: Vec<u64>,
}

#[derive(Serialize)]
struct Report {
    config: PathBuf,
    nodes: Vec<String>,
    local_cluster: bool,
    trainer_setup: String,
    replica_setup: String,
    /// The trainer's in-process serving of the same requests over its own table.
    single_process_queries_per_sec: f64,
    single_process_p99_us: f64,
    rounds: Vec<Round>,
}

impl ReplicasBenchArgs {
    pub fn run(self) -> Result<()> {
        let (local, nodes) = super::cluster_nodes(&self.nodes)?;
        let report = self.measure(&nodes, local.is_some())?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", markdown(&report));
        }
        Ok(())
    }

    fn measure(&self, nodes: &[String], local_cluster: bool) -> Result<Report> {
        let text = strata::config::read(&self.config)?;
        let mut config: toml::Table = toml::from_str(&text).with_context(|| format!("{}", self.config.display()))?;
        let dir = tempfile::tempdir()?;
        let setups = config.get("setup").and_then(|s| s.as_array()).cloned().unwrap_or_default();
        let name_of = |i: usize| setups.get(i).and_then(|s| s.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        let (Some(trainer_setup), Some(cluster)) = (name_of(0), config.get_mut("publish").and_then(|p| p.get_mut("cluster"))) else {
            bail!("{}: needs [publish.cluster] and at least one [[setup]]", self.config.display())
        };
        let replica_setup = name_of(1).unwrap_or_else(|| trainer_setup.clone());
        cluster.as_table_mut().context("[publish.cluster] is a table")?.insert("nodes".into(), nodes.to_vec().into());
        let out = dir.path().join("out");
        config.insert("output".into(), toml::Table::from_iter([("dir".to_string(), out.display().to_string().into())]).into());
        let replicas_config = dir.path().join("replicas.toml");
        std::fs::write(&replicas_config, toml::to_string(&config)?)?;
        // The trainer runs the first set-up only.
        config.insert("setup".into(), vec![setups[0].clone()].into());
        let trainer_config = dir.path().join("trainer.toml");
        std::fs::write(&trainer_config, toml::to_string(&config)?)?;

        eprintln!("training `{trainer_setup}`, publishing to the cluster");
        let exe = std::env::current_exe()?;
        let trained = Command::new(&exe).arg("run").arg(&trainer_config).stdout(Stdio::null()).output()?;
        if !trained.status.success() {
            bail!("strata run {}: {}", trainer_config.display(), last_line(&trained.stderr));
        }
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json"))?)?;
        let trainer = &report["setups"][0];
        let checksum = trainer["prediction_checksum"].as_str().context("the trainer's run served no requests: give [serve]")?.to_string();

        let mut rounds = Vec::new();
        for &count in &self.replicas {
            eprintln!("{count} replica(s) of `{replica_setup}` at once");
            rounds.push(serve_round(&exe, &replicas_config, &replica_setup, count, dir.path(), &checksum)?);
        }
        Ok(Report {
            config: self.config.clone(),
            nodes: nodes.to_vec(),
            local_cluster,
            trainer_setup,
            replica_setup,
            single_process_queries_per_sec: trainer["queries_per_sec"].as_f64().unwrap_or(0.0),
            single_process_p99_us: trainer["p99_us"].as_f64().unwrap_or(0.0),
            rounds,
        })
    }
}

fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr).lines().last().unwrap_or("no message").to_string()
}

/// `count` `strata serve` processes started together; their outcomes.
fn serve_round(exe: &Path, config: &Path, setup: &str, count: usize, dir: &Path, checksum: &str) -> Result<Round> {
    let outs: Vec<PathBuf> = (0..count).map(|i| dir.join(format!("replica-{count}-{i}.json"))).collect();
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            Command::new(exe)
                .arg("serve")
                .arg(config)
                .args(["--setup", setup, "--out"])
                .arg(out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for child in children {
        let done = child.wait_with_output()?;
        if !done.status.success() {
            bail!("strata serve {}: {}", config.display(), last_line(&done.stderr));
        }
    }
    let mut round = Round {
        replicas: count,
        queries_per_sec: 0.0,
        per_replica_queries_per_sec: Vec::new(),
        p50_us: Vec::new(),
        p99_us: Vec::new(),
        predictions_match: true,
        versions_applied: Vec::new(),
    };
    for out in outs {
        let outcome: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
        let serving = &outcome["serving"];
        let qps = serving["queries_per_sec"].as_f64().unwrap_or(0.0);
        round.queries_per_sec += qps;
        round.per_replica_queries_per_sec.push(qps);
        round.p50_us.push(serving["p50_us"].as_f64().unwrap_or(0.0));
        round.p99_us.push(serving["p99_us"].as_f64().unwrap_or(0.0));
        round.predictions_match &= serving["prediction_checksum"].as_str() == Some(checksum);
        round.versions_applied.push(outcome["replica"]["final_staleness"]["applied_version"].as_u64().unwrap_or(0));
    }
    Ok(round)
}

fn markdown(report: &Report) -> String {
    let cluster = if report.local_cluster { "a local cluster of 3 masters + 3 replicas on loopback" } else { "the given cluster" };
    let mut text = format!(
        "Serving replicas of one published table ({}; {cluster}): replicas of `{}` started together, each over the \
         cluster; beside them the trainer `{}` serving the same requests in process from its own table: {:.0} queries/s, \
         p99 {:.0} us.\n\n\
         | replicas | queries/s, all together | per replica | p50 us (each) | p99 us (each) | worst p99 vs single process | predictions = single process |\n\
         |---:|---:|---|---|---|---:|---|\n",
        report.config.display(),
        report.replica_setup,
        report.trainer_setup,
        report.single_process_queries_per_sec,
        report.single_process_p99_us,
    );
    let list = |values: &[f64]| values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ");
    for r in &report.rounds {
        let worst = r.p99_us.iter().copied().fold(0.0, f64::max);
        text.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {:.2}x | {} |\n",
            r.replicas,
            r.queries_per_sec,
            list(&r.per_replica_queries_per_sec),
            list(&r.p50_us),
            list(&r.p99_us),
            worst / report.single_process_p99_us.max(1e-9),
            if r.predictions_match { "yes" } else { "NO" },
        ));
    }
    text
}
