//! Training over the remote tier: `strata run` with the table on a real cluster (directly
//! or behind a local file cache) gives, under several policies, tiers and read-ahead,
//! the losses, AUC and predictions of the in-memory flat table; and when the cluster fails beyond what it can mend (a master
//! and its replica killed mid-run) the run stops with a one-line error naming the key,
//! slot and node, the last checkpoint stays intact, and once the two nodes are back
//! `strata run --resume` finishes with every result identical to a run that never
//! failed.

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
fn training_over_the_cluster_matches_the_in_memory_table_under_every_set_up() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let dir = tempfile::tempdir().unwrap();
    let setups = "[[setup]]\nname = \"s3fifo exclusive\"\ndevice = 0.005\nhost = 0.03\npolicy = \"s3fifo\"\nhierarchy = \"exclusive\"\n\
                  [[setup]]\nname = \"lookahead, write buffer\"\ndevice = 0.01\nhost = 0.05\npolicy = \"lookahead:20000\"\nwindow = 3\nwrite_buffer = 0.01\n";
    let short = CONFIG.replace("train_batches = 200", "train_batches = 40");
    let in_memory = dir.path().join("in-memory.toml");
    std::fs::write(&in_memory, short.split("[[setup]]").next().unwrap().to_string() + "[[setup]]\nname = \"flat\"\ndevice = 0\nhost = 0\n")
        .unwrap();
    let flat = dir.path().join("flat");
    let out = strata(&["run", in_memory.to_str().unwrap(), "--out", flat.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let over_cluster = config(dir.path(), &cluster, "policies");
    let text = std::fs::read_to_string(&over_cluster).unwrap().replace("train_batches = 200", "train_batches = 40");
    std::fs::write(&over_cluster, format!("{text}\n{setups}")).unwrap();
    let remote = dir.path().join("remote");
    let out = strata(&["run", over_cluster.to_str().unwrap(), "--out", remote.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (expected, actual) = (results(&flat), results(&remote));
    assert_eq!(actual.len(), 3);
    for result in &actual {
        assert_eq!(result, &expected[0], "a set-up over the cluster against the flat in-memory table");
    }
    // The same set-ups with a local file cache between the host tier and the cluster.
    let behind_cache = config(dir.path(), &cluster, "cached");
    let text = std::fs::read_to_string(&behind_cache).unwrap().replace("train_batches = 200", "train_batches = 40");
    let cache = format!("[engine.file_cache]\npath = \"{}\"\nsize = 0.1\npolicy = \"clock\"\n", dir.path().join("cache.strata").display());
    std::fs::write(&behind_cache, format!("{text}\n{cache}\n{setups}")).unwrap();
    let cached = dir.path().join("cached");
    let out = strata(&["run", behind_cache.to_str().unwrap(), "--out", cached.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let actual = results(&cached);
    assert_eq!(actual.len(), 3);
    for result in &actual {
        assert_eq!(result, &expected[0], "a set-up over a file cache in front of the cluster against the flat in-memory table");
    }
    let report: Value = serde_json::from_slice(&std::fs::read(cached.join("report.json")).unwrap()).unwrap();
    let storage = report["setups"][0]["outcome"]["engine"]["storage"].as_str().unwrap();
    assert!(storage.starts_with("file cache") && storage.contains("clock") && storage.contains("redis cluster"), "{storage}");
    // The file cache's counters reach the report: it served rows, and admitted some.
    let engine = &report["setups"][0]["outcome"]["engine"];
    let cache = &engine["file_cache"];
    let (hits, misses) = (cache["hits"].as_u64().unwrap(), cache["misses"].as_u64().unwrap());
    assert!(hits > 0 && misses > 0 && cache["admitted"].as_u64().unwrap() > 0, "{cache}");
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
