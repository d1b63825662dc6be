//! Serving replicas fed by training, end to end on a real Redis Cluster: `strata run`
//! on a config with `[publish]` trains (publishing every few steps) and serves in
//! process; then two `strata serve` processes at once, with other tiers and policies,
//! follow the published table and give every prediction bit for bit as the in-process
//! serving run over the final table does, and report that they are up to date. A
//! replica of a config without `[publish]` is a one-line error.

use std::process::Command;

use serde_json::Value;
use strata::engine::storage::remote::LocalCluster;

fn strata() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.env("STRATA_LOG", "error");
    command
}

const CONFIG: &str = r#"
[data]
batch_size = 32
train_batches = 24
eval_batches = 0
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
requests = 40
batch_size = 16
warmup = 5
follow_every = 4
[[setup]]
name = "trainer"
device = 0.01
host = 0.05
window = 2
[[setup]]
name = "replica lru"
device = 0.01
host = 0.05
window = 2
[[setup]]
name = "replica s3fifo exclusive"
device = 0
host = 0.1
policy = "s3fifo"
hierarchy = "exclusive"
"#;

#[test]
fn replicas_fed_by_training_predict_exactly_what_serving_the_final_table_does() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| format!("\"{n}\"")).collect();
    let config = dir.path().join("exp.toml");
    // Training runs the first set-up only; the replicas use the others.
    let trainer_only = CONFIG.split("[[setup]]\nname = \"replica lru\"").next().unwrap();
    let publish = format!("[publish]\nevery = 5\n[publish.cluster]\nnodes = [{}]\ntable = \"dlrm\"\nreplicas = 1\n", nodes.join(", "));
    let output = format!("[output]\ndir = \"{}\"\n", dir.path().join("out").display());
    std::fs::write(&config, format!("{trainer_only}\n{publish}\n{output}")).unwrap();
    let run = strata().args(["run", config.to_str().unwrap()]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let trained = &report["setups"][0];
    let checksum = trained["prediction_checksum"].as_str().unwrap().to_string();

    // Replicas of the full config (same model, data and [publish]), two at once.
    let replicas_config = dir.path().join("replicas.toml");
    std::fs::write(&replicas_config, format!("{CONFIG}\n{publish}\n{output}")).unwrap();
    let spawn = |setup: &str, out: &str| {
        strata()
            .args(["serve", replicas_config.to_str().unwrap(), "--setup", setup, "--out"])
            .arg(dir.path().join(out))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let replicas = [spawn("replica lru", "a.json"), spawn("replica s3fifo exclusive", "b.json")];
    for child in replicas {
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        assert!(String::from_utf8_lossy(&done.stdout).contains("prediction checksum"), "{}", String::from_utf8_lossy(&done.stdout));
    }
    // 24 steps published every 5: versions 1..=4 at steps 5..20, version 5 after the last.
    for (name, setup) in [("a.json", "replica lru"), ("b.json", "replica s3fifo exclusive")] {
        let outcome: Value = serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap();
        assert_eq!(outcome["setup"], setup);
        assert_eq!(outcome["serving"]["prediction_checksum"].as_str().unwrap(), checksum, "{setup}: predictions");
        let last = &outcome["replica"]["final_staleness"];
        assert_eq!((last["applied_version"].as_u64(), last["versions_behind"].as_u64()), (Some(5), Some(0)), "{outcome}");
        assert_eq!(last["connected"], true);
        assert_eq!(outcome["replica"]["applied"][0]["version"], 5, "caught up before the first request");
        assert!(outcome["serving"]["engine"]["host"]["misses"].as_u64().unwrap() > 0, "rows came from the cluster");
    }
}

#[test]
fn a_replica_of_a_config_without_publish_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exp.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = strata().args(["serve", config.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exp.toml") && stderr.contains("[publish]") && stderr.lines().count() == 1, "{stderr}");
    let out = strata().args(["serve", config.to_str().unwrap(), "--setup", "nope"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("[publish]"), "{stderr}");
}
