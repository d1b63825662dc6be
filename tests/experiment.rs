//! Training experiments end to end: `strata run` on a tiny config trains every set-up,
//! writes every report, and the placement set-ups reach the same AUC and log-loss as
//! the all-in-memory one; a bad experiment config fails before any work.

use std::process::Command;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env("STRATA_LOG", "error").output().unwrap()
}

const CONFIG: &str = r#"
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

#[test]
fn an_experiment_writes_its_reports_and_placement_never_changes_results() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exp.toml");
    let file = dir.path().join("table.strata");
    std::fs::write(&config, format!("{CONFIG}\n[output]\ndir = \"{}\"\n", dir.path().join("out").display()).replace("init_scale = 0.05\n", &format!("init_scale = 0.05\ntable_file = \"{}\"\n", file.display()))).unwrap();
    let out = strata(&["run", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("| ideal |") && summary.contains("| arc exclusive |"), "{summary}");
    for name in ["report.json", "report.csv", "report.html", "loss.svg", "throughput.svg"] {
        assert!(dir.path().join("out").join(name).exists(), "{name} missing");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let setups = report["setups"].as_array().unwrap();
    assert_eq!(setups.len(), 3);
    for s in setups {
        for field in ["name", "samples_per_sec", "stall_fraction", "hit_ratio", "auc", "logloss"] {
            assert!(s.get(field).is_some(), "{field} missing");
        }
        assert_eq!(s["auc"], setups[0]["auc"], "AUC of {}", s["name"]);
        assert_eq!(s["logloss"], setups[0]["logloss"], "log-loss of {}", s["name"]);
        assert_eq!(s["outcome"]["losses"], setups[0]["outcome"]["losses"], "losses of {}", s["name"]);
    }
    assert!(setups[1]["hit_ratio"]["device"].as_f64().unwrap() > 0.0);
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("lru, prefetch 2"));
}

#[test]
fn a_bad_experiment_config_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let bad = CONFIG.replace("policy = \"arc\"", "policy = \"nope\"");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, format!("{bad}\n[output]\ndir = \"{}\"\n", out_dir.display())).unwrap();
    let out = strata(&["run", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.toml") && stderr.contains("arc exclusive") && stderr.contains("nope"), "{stderr}");
    assert!(!out_dir.exists(), "nothing may be written for a bad config");
    let unknown = CONFIG.replace("eval_every = 10", "eval_every = 10\ncolour = 1");
    std::fs::write(&config, unknown).unwrap();
    let out = strata(&["run", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("colour") && stderr.contains("line"), "{stderr}");
}
