//! Experiments whose rows or bags differ from the plain default: f16 and bf16 values, a
//! width and pooling per table (one table group per pair), weighted bags. In every
//! set-up they train and serve to the results of the all-in-host one, and a run killed
//! after a checkpoint resumes to them.

use serde_json::Value;

mod common;
use common::experiment::{kill_after_a_checkpoint, report, results, strata, CONFIG, MIXED_DIMS, SERVE};

/// `[engine] weights_precision = "f16"` (and bf16, rounding stochastically): every set-up
/// trains to the same losses and AUC as the all-in-host one, the store's rows move in
/// 20 bytes instead of 36 (8 values in 4 words, beside the f32 accumulator) with the
/// same rows read as the f32 run, and a run killed after a checkpoint resumes to the same
/// results (the checkpoint records the dtype).
#[test]
fn half_precision_rows_train_alike_in_every_setup_at_half_the_bytes_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let with = |dtype: &str, rounding: &str, out: &str| {
        let config = dir.path().join(format!("{out}.toml"));
        let engine = format!(
            "init_scale = 0.05\nweights_precision = \"{dtype}\"\nrounding = \"{rounding}\"\ntable_file = \"{}\"\n",
            dir.path().join(format!("{out}.strata")).display()
        );
        let text = CONFIG
            .replace("init_scale = 0.05\n", &engine)
            .replace("eval_every = 10", "eval_every = 10\ncheckpoint_every = 2")
            .replace("train_batches = 30", "train_batches = 60");
        std::fs::write(&config, text).unwrap();
        let out = dir.path().join(out);
        let run = strata(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        (config, out)
    };
    let (_, wide) = with("f32", "nearest", "f32");
    let (config, half) = with("f16", "nearest", "f16");
    let (wide, half) = (report(&wide), report(&half));
    for s in &half {
        assert_eq!(s["outcome"]["losses"], half[0]["outcome"]["losses"], "losses of {}", s["name"]);
        assert_eq!(s["auc"], half[0]["auc"], "AUC of {}", s["name"]);
    }
    assert_ne!(half[0]["outcome"]["losses"], wide[0]["outcome"]["losses"], "f16 rows round: the losses move");
    for (h, w) in half.iter().zip(&wide).skip(1) {
        let (h, w) = (h["bytes_store_to_host"].as_u64().unwrap(), w["bytes_store_to_host"].as_u64().unwrap());
        assert!(w > 0 && h * 36 == w * 20, "the same rows at 20 bytes instead of 36: {h} against {w}");
    }
    let (_, stochastic) = with("bf16", "stochastic", "bf16");
    let stochastic = report(&stochastic);
    assert!(stochastic.iter().all(|s| s["outcome"]["losses"] == stochastic[0]["outcome"]["losses"]));
    // Killed after a checkpoint of the second set-up, resumed: the same results.
    let resumed = dir.path().join("resumed");
    kill_after_a_checkpoint(&config, &resumed, "1-lru__prefetch_2");
    let out = strata(&["run", "--resume", resumed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&report(&resumed)), results(&half));
}

/// Mean pooling in tables 1 and 3, sum in the others: with [`MIXED_DIMS`], five groups.
const MIXED_POOLING: &str = r#"["sum", "mean", "sum", "mean", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum", "sum"]"#;

/// `[model] embedding_dim` with a width per table (DCNv2 over their concatenation) and
/// `[engine] pooling` per table: the tables are stored and tiered in one group per dim
/// and pooling, each with its own table file and its share of the tiers, and every
/// set-up trains and serves to the same losses, AUC and predictions as the all-in-host
/// one; a run killed after a checkpoint (one table file per group rolled back) resumes
/// to the same results.
#[test]
fn tables_of_several_widths_and_poolings_train_alike_in_every_setup_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mixed.toml");
    let file = dir.path().join("table.strata");
    let text = format!(
        "{}\n{SERVE}",
        CONFIG
            .replace("embedding_dim = 8", &format!("embedding_dim = {MIXED_DIMS}"))
            .replace("bottom_mlp = [16, 8]", "bottom_mlp = [16, 12]")
            .replace(
                "init_scale = 0.05\n",
                &format!("init_scale = 0.05\ntable_file = \"{}\"\npooling = {MIXED_POOLING}\n", file.display()),
            )
            .replace("eval_every = 10", "eval_every = 10\ncheckpoint_every = 2")
            .replace("train_batches = 30", "train_batches = 60")
    );
    std::fs::write(&config, &text).unwrap();
    let reference = dir.path().join("reference");
    let out = strata(&["run", config.to_str().unwrap(), "--out", reference.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for group in ["dim8-sum", "dim4-mean", "dim16-mean", "dim4-sum", "dim16-sum"] {
        assert!(dir.path().join(format!("table-{group}.strata")).exists(), "the table file of group {group}");
    }
    assert!(!file.exists(), "one file per group, none for all tables");
    let setups = report(&reference);
    assert_eq!(setups.len(), 3);
    for s in &setups {
        assert_eq!(s["outcome"]["losses"], setups[0]["outcome"]["losses"], "losses of {}", s["name"]);
        assert_eq!(s["auc"], setups[0]["auc"], "AUC of {}", s["name"]);
        assert_eq!(s["prediction_checksum"], setups[0]["prediction_checksum"], "predictions of {}", s["name"]);
    }
    for s in &setups[1..] {
        let hit = s["hit_ratio"]["host"].as_f64().unwrap();
        assert!(hit > 0.0 && hit < 1.0 && s["bytes_store_to_host"].as_u64().unwrap() > 0, "{} is tiered: {s}", s["name"]);
    }
    let resumed = dir.path().join("resumed");
    kill_after_a_checkpoint(&config, &resumed, "1-lru__prefetch_2");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(resumed.join("checkpoints/1-lru__prefetch_2/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["tables"].as_array().map(Vec::len), Some(5), "one table state per group: {manifest}");
    let out = strata(&["run", "--resume", resumed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&report(&resumed)), results(&setups));
}

/// `[data.synthetic] weighted`: bags of weighted tables scale each lookup's row by its
/// weight (and its gradient), alike in every set-up; the losses differ from the
/// unweighted run's.
#[test]
fn weighted_bags_train_alike_in_every_setup() {
    let dir = tempfile::tempdir().unwrap();
    let run = |weighted: &str, out: &str| {
        let config = dir.path().join(format!("{out}.toml"));
        std::fs::write(&config, CONFIG.replace("seed = 3\n", &format!("seed = 3\nweighted = {weighted}\n"))).unwrap();
        let out = dir.path().join(out);
        let run = strata(&["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        report(&out)
    };
    let weighted = run(&format!("[{}]", ["true", "false"].repeat(13).join(", ")), "weighted");
    for s in &weighted {
        assert_eq!(s["outcome"]["losses"], weighted[0]["outcome"]["losses"], "losses of {}", s["name"]);
        assert_eq!(s["auc"], weighted[0]["auc"], "AUC of {}", s["name"]);
    }
    let plain = run("false", "plain");
    assert_ne!(weighted[0]["outcome"]["losses"], plain[0]["outcome"]["losses"], "the weights change the pooled values");
}
