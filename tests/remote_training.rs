//! Training over the remote tier when the cluster fails beyond what it can mend: a
//! master and its replica killed mid-run stop `strata run` with a one-line error naming
//! the key, slot and node, the last checkpoint stays intact, and once the two nodes are
//! back `strata run --resume` finishes with every result (losses, AUC, predictions)
//! identical to a run that never failed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata::engine::storage::remote::LocalCluster;

const CONFIG: &str = r#"
[data]
batch_size = 32
train_batches = 200
eval_batches = 2
checkpoint_every = 10
[data.synthetic]
scale = 0.0005
seed = 3
[model]
embedding_dim = 8
bottom_mlp = [16, 8]
top_mlp = [16]
interaction = { kind = "dot" }
dense_optimizer = { kind = "adam", lr = 0.01 }
seed = 1
threads = 1
[engine]
optimizer = { kind = "row_wise_adagrad", lr = 0.05 }
init_scale = 0.05
[serve]
requests = 10
batch_size = 16
[[setup]]
name = "lru over the cluster"
device = 0.01
host = 0.05
window = 2
"#;

fn config(dir: &Path, cluster: &LocalCluster, table: &str) -> std::path::PathBuf {
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| format!("\"{n}\"")).collect();
    let remote = format!("[engine.remote]\nnodes = [{}]\ntable = \"{table}\"\nreplicas = 1\nretry_seconds = 2\n", nodes.join(", "));
    let path = dir.join(format!("{table}.toml"));
    std::fs::write(&path, format!("{CONFIG}\n{remote}")).unwrap();
    path
}

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env("STRATA_LOG", "error").output().unwrap()
}

/// The figures a resumed run reproduces exactly.
fn results(out: &Path) -> Vec<Value> {
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let setups = report["setups"].as_array().unwrap();
    setups
        .iter()
        .map(|s| {
            let o = &s["outcome"];
            serde_json::json!([s["auc"], s["logloss"], s["prediction_checksum"], o["steps"], o["losses"], o["evaluations"]])
        })
        .collect()
}

#[test]
fn a_master_and_its_replica_killed_stop_the_run_and_resume_reproduces_an_unbroken_one() {
    let mut cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let out = strata(&["run", config(dir.path(), &cluster, "unbroken").to_str().unwrap(), "--out", reference.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let failing = config(dir.path(), &cluster, "failing");
    let resumed = dir.path().join("resumed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", failing.to_str().unwrap(), "--out", resumed.to_str().unwrap()])
        .env("STRATA_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = resumed.join("checkpoints/0-lru_over_the_cluster/manifest.json");
    while !manifest.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", manifest.display());
        std::thread::sleep(Duration::from_millis(2));
    }
    let master = cluster.masters()[0].clone();
    let replica = cluster.replica_of(&master).expect("every master has a replica");
    cluster.kill(&replica).unwrap();
    cluster.kill(&master).unwrap();
    let killed_at = Instant::now();
    let failed = child.wait_with_output().unwrap();
    assert!(!failed.status.success(), "the run cannot finish with a shard gone");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let line = stderr.lines().find(|l| l.starts_with("strata: error:")).unwrap_or_else(|| panic!("{stderr}"));
    eprintln!("the failed run: {line}");
    assert!(line.contains("slot") && line.contains(&master) && line.contains("gave up"), "{line}");
    assert!(killed_at.elapsed() < Duration::from_secs(60), "stopped within the retry bound");
    let committed: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert!(committed["steps"].as_u64().unwrap() >= 10, "{committed}");

    cluster.restart(&master).unwrap();
    cluster.restart(&replica).unwrap();
    let out = strata(&["run", "--resume", resumed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&resumed), results(&reference));
}
