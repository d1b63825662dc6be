//! The experiment tests' shared pieces: the `strata` binary, a tiny experiment config
//! (three set-ups) and its serving section, killing a run after a checkpoint, and the
//! figures of a report that a resumed run reproduces.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env("STRATA_LOG", "error").output().unwrap()
}

pub const CONFIG: &str = r#"
[data]
batch_size = 32
train_batches = 30
eval_batches = 4
eval_every = 10
[data.synthetic]
scale = 0.0005
seed = 3
[model]
embedding_dim = 8
bottom_mlp = [16, 8]
top_mlp = [16]
interaction = { kind = "dcnv2", layers = 1, low_rank = 4 }
dense_optimizer = { kind = "sgd", lr = 0.05 }
seed = 1
threads = 1
[engine]
optimizer = { kind = "row_wise_adagrad", lr = 0.05 }
init_scale = 0.05
[[setup]]
name = "ideal"
device = 0
host = 1e9
[[setup]]
name = "lru, prefetch 2"
device = 0.01
host = 0.05
window = 2
[[setup]]
name = "arc exclusive"
device = 0.01
host = 0.05
policy = "arc"
hierarchy = "exclusive"
"#;

/// Per-table widths for the 26 tables: three groups (8, 4 and 16).
pub const MIXED_DIMS: &str = "[8, 4, 8, 16, 4, 8, 8, 4, 16, 8, 8, 4, 8, 16, 4, 8, 8, 4, 16, 8, 8, 4, 8, 16, 4, 8]";

pub const SERVE: &str = "[serve]\nrequests = 24\nbatch_size = 8\nwarmup = 4\n";

/// Runs `strata run CONFIG --out OUT` and kills it with SIGKILL once the set-up number
/// `setup` has committed a checkpoint.
pub fn kill_after_a_checkpoint(config: &Path, out: &Path, setup: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("STRATA_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest = out.join("checkpoints").join(setup).join("manifest.json");
    while !manifest.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", manifest.display());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The figures a resumed run reproduces exactly.
pub fn results(setups: &[Value]) -> Vec<Value> {
    setups
        .iter()
        .map(|s| {
            let o = &s["outcome"];
            serde_json::json!([
                s["name"],
                s["auc"],
                s["logloss"],
                s["prediction_checksum"],
                o["steps"],
                o["samples"],
                o["checkpoints"],
                o["losses"],
                o["evaluations"]
            ])
        })
        .collect()
}

pub fn report(out: &Path) -> Vec<Value> {
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    report["setups"].as_array().unwrap().clone()
}
