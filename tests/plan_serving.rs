//! Serving plans: the planner's request-by-request replay reads from the store exactly
//! the rows the engine reads for each request, and `strata plan` of a serving plan
//! answers the smallest host tier meeting the p99 bound, then (`--validate`) serves the
//! experiment there and at the next smaller host tier, where each request reads the
//! store rows the plan predicted; a bad serving plan is a one-line error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use serde_json::Value;
use strata::engine::batch::Batch;
use strata::engine::placement::Hierarchy;
use strata::engine::Dtype;
use strata::engine::Optimizer;
use strata::plan::config::RowSpec;
use strata::plan::serving::{store_rows_per_request, ServingWorkload};
use strata::sim::TwoLevelConfig;
use strata_policies::PolicyConfig;

/// Rows each measured request read from the store, served by the engine.
fn engine_store_rows(workload: &ServingWorkload, setup: &TwoLevelConfig) -> Vec<u64> {
    let (mut table, layout) = common::tiered_over_flat(setup, workload.table_rows);
    let (mut out, mut rows, mut start) = (Vec::new(), Vec::new(), 0);
    for (r, ids) in workload.requests.iter().enumerate() {
        let batch = Batch::new(ids.clone(), (0..=ids.len()).collect(), start);
        start += ids.len() as u64;
        out.resize(batch.bags() * 4, 0.0);
        let before = table.store_bytes_read();
        table.lookup(&batch, &mut out).expect("lookup");
        if r >= workload.warmup {
            rows.push((table.store_bytes_read() - before) / layout.bytes() as u64);
        }
    }
    rows
}

#[test]
fn the_replay_reads_each_request_s_store_rows_as_the_engine_does() {
    let table_rows = 5000u64;
    let zipf = Zipf::new(table_rows, 0.95).unwrap();
    let mut rng = SmallRng::seed_from_u64(17);
    // Requests of 40 to 120 lookups, through tiers from a few requests' rows up.
    let requests: Vec<Vec<u64>> = (0..300).map(|r| (0..40 + (r * 7) % 81).map(|_| zipf.sample(&mut rng) as u64 - 1).collect()).collect();
    let workload = ServingWorkload {
        description: "zipf".into(),
        requests,
        warmup: 100,
        table_rows,
        rows: RowSpec { dim: 4, dtype: Dtype::F32, optimizer: Optimizer::Sgd { lr: 0.1 } },
    };
    for name in ["lru", "s3fifo", "clock", "sieve", "arc"] {
        for hierarchy in [Hierarchy::Inclusive, Hierarchy::Exclusive] {
            for (device_rows, host_rows) in [(0, 150), (50, 300), (0, 2000), (100, 2000), (200, 4000), (0, 5000)] {
                let setup = TwoLevelConfig { policy: PolicyConfig::from_name(name).unwrap(), device_rows, host_rows, hierarchy };
                let planned = store_rows_per_request(&setup, &workload).unwrap();
                assert_eq!(planned.len(), 200);
                assert!(planned.iter().sum::<u64>() > 0, "{name}: some request reads the store");
                let served = engine_store_rows(&workload, &setup);
                assert_eq!(planned, served, "{name} {hierarchy:?} device {device_rows} host {host_rows}");
            }
        }
    }
}

fn strata() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.env("STRATA_LOG", "error");
    command
}

/// A serving experiment (serve only, from a fresh table file) and a serving plan of
/// it with `in_memory_p99_us`; returns the plan config's path.
fn serving_plan(dir: &Path, in_memory_p99_us: f64, extra: &str) -> PathBuf {
    let experiment = dir.join("serve.toml");
    std::fs::write(
        &experiment,
        format!(
            r#"
[data]
batch_size = 32
train_batches = 0
eval_batches = 0
[data.synthetic]
scale = 0.0001
seed = 5
[model]
embedding_dim = 8
bottom_mlp = [16, 8]
top_mlp = [16]
interaction = {{ kind = "dot" }}
dense_optimizer = {{ kind = "sgd", lr = 0.05 }}
seed = 1
threads = 1
[engine]
optimizer = {{ kind = "row_wise_adagrad", lr = 0.05 }}
init_scale = 0.05
table_file = "{table}"
[serve]
requests = 40
batch_size = 4
warmup = 400
[[setup]]
name = "ideal"
device = 0
host = 1e9
preload = true
"#,
            table = dir.join("table.strata").display()
        ),
    )
    .unwrap();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/dev-vm-calibrated.toml");
    let plan = dir.join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"
[serving]
experiment = "{experiment}"
in_memory_p99_us = {in_memory_p99_us}
{extra}
[hardware]
profiles = ["{profile}"]
[candidates]
policies = ["lru", "s3fifo"]
device = [0.0, 0.01]
host = [0.5, 0.2, 1.0]
[output]
dir = "{out}"
"#,
            experiment = experiment.display(),
            profile = profile.display(),
            out = dir.join("out").display()
        ),
    )
    .unwrap();
    plan
}

fn plan_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/serving-plan.json")).unwrap()).unwrap()
}

#[test]
fn strata_plan_answers_the_smallest_host_tier_within_the_bound_and_validates_it() {
    let dir = tempfile::tempdir().unwrap();
    // First a plan whose bound everything meets, for the store's added p99 per set-up.
    let config = serving_plan(dir.path(), 1e9, "");
    let output = strata().arg("plan").arg(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json = plan_json(dir.path());
    let rows = json["plan"]["rows"].as_array().unwrap().clone();
    // 2 policies x 2 device sizes x 3 host sizes, hosts ascending within each group.
    assert_eq!(rows.len(), 12);
    let field = |r: &Value, name: &str| r[name].as_f64().unwrap();
    let lru: Vec<&Value> = rows.iter().filter(|r| r["policy"] == "lru" && r["device_rows"] == 0).collect();
    let hosts: Vec<f64> = lru.iter().map(|r| field(r, "host_rows")).collect();
    assert!(hosts.windows(2).all(|w| w[0] < w[1]), "{hosts:?}");
    assert!(lru.iter().all(|r| r["store_rows"].as_array().unwrap().len() == 40));
    let added: Vec<f64> = lru.iter().map(|r| field(r, "added_p99_us")).collect();
    assert!(added[0] > added[1] && added[1] > 0.0, "a bigger host tier adds less: {added:?}");

    // Now a bound the middle LRU host tier just meets (the added time is at most half
    // the in-memory p99) and the smallest does not.
    let config = serving_plan(dir.path(), 2.0 * added[1], "p99_within = 1.5");
    let output = strata().arg("plan").arg(&config).arg("--validate").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("### The smallest host tier keeping p99 within 1.5x of in-memory"), "{stdout}");
    let json = plan_json(dir.path());
    let rows = json["plan"]["rows"].as_array().unwrap();
    let answers: Vec<usize> = json["plan"]["answers"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap() as usize).collect();
    let answer = answers.iter().map(|&i| &rows[i]).find(|r| r["policy"] == "lru" && r["device_rows"] == 0).expect("an LRU answer");
    assert_eq!(field(answer, "host_rows"), hosts[1], "the middle host tier is the smallest meeting the bound");
    for &i in &answers {
        assert_eq!(rows[i]["meets_bound"], true);
        // The group's smaller host tiers (listed before it) do not meet the bound.
        let same = |r: &Value| r["policy"] == rows[i]["policy"] && r["device_rows"] == rows[i]["device_rows"];
        assert!(rows[..i].iter().filter(|r| same(r)).all(|r| r["meets_bound"] == false));
    }
    // The validation served the all-in-memory set-up, the cheapest answer and the next
    // smaller host tier; every request read the store rows the plan predicted.
    let checks: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/validate.json")).unwrap()).unwrap();
    let checks = checks.as_array().unwrap();
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(checks[0]["predicted_p99_us"].is_null() && checks[0]["measured_store_rows_p99"] == 0.0);
    for check in &checks[1..] {
        assert_eq!(check["requests"], 40);
        assert_eq!(check["requests_with_predicted_store_rows"], 40, "{check}");
    }
    assert_eq!(checks[1]["predicted_within_bound"], false);
    assert_eq!(checks[2]["predicted_within_bound"], true);
    assert!(stdout.contains("### Validation"), "{stdout}");
}

#[test]
fn bad_serving_plans_give_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = |config: &Path| {
        let output = strata().arg("plan").arg(config).output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    let config = serving_plan(dir.path(), 800.0, "p99_within = 0.9");
    let err = error(&config);
    assert!(err.contains(&format!("{}: serving.p99_within must be above 1, got 0.9", config.display())), "{err}");
    let config = serving_plan(dir.path(), -1.0, "");
    assert!(error(&config).contains("serving.in_memory_p99_us must be above 0, got -1"));
    let config = serving_plan(dir.path(), 800.0, "");
    std::fs::write(
        dir.path().join("serve.toml"),
        std::fs::read_to_string(dir.path().join("serve.toml")).unwrap().replace("train_batches = 0", "train_batches = 3"),
    )
    .unwrap();
    let err = error(&config);
    assert!(err.contains("trains before it serves"), "{err}");
    // Tables in two groups (two poolings): the planner models one.
    let config = serving_plan(dir.path(), 800.0, "");
    let mean_first = format!("init_scale = 0.05\npooling = [\"mean\"{}]", ", \"sum\"".repeat(25));
    std::fs::write(
        dir.path().join("serve.toml"),
        std::fs::read_to_string(dir.path().join("serve.toml")).unwrap().replace("init_scale = 0.05", &mean_first),
    )
    .unwrap();
    let err = error(&config);
    assert!(err.contains("serve.toml has tables of several embedding_dim or pooling"), "{err}");
    let config = serving_plan(dir.path(), 800.0, "");
    std::fs::remove_file(dir.path().join("serve.toml")).unwrap();
    let err = error(&config);
    assert!(err.contains("serve.toml") && err.contains("No such file"), "{err}");
}
