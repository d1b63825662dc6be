//! Training and serving experiments end to end: `strata run` on a tiny config trains
//! and serves every set-up, writes every report, and the placement set-ups reach the
//! same AUC, log-loss and predictions as the all-in-memory one; a bad experiment config
//! fails before any work; training on files `gen-data` wrote gives the synthetic
//! stream's losses bit for bit, and a bad line deep in a file fails the run naming the
//! file and the line.

use std::path::Path;

use serde_json::Value;

mod common;
use common::experiment::{kill_after_a_checkpoint, report, results, strata, CONFIG, MIXED_DIMS, SERVE};

#[test]
fn an_experiment_writes_its_reports_and_placement_never_changes_results() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exp.toml");
    let file = dir.path().join("table.strata");
    std::fs::write(
        &config,
        format!("{CONFIG}\n[output]\ndir = \"{}\"\n", dir.path().join("out").display())
            .replace("init_scale = 0.05\n", &format!("init_scale = 0.05\ntable_file = \"{}\"\n", file.display())),
    )
    .unwrap();
    let out = strata(&["run", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("| ideal |") && summary.contains("| arc exclusive |"), "{summary}");
    for name in ["report.json", "report.csv", "report.html", "loss.svg", "throughput.svg", "hit_ratio.svg"] {
        assert!(dir.path().join("out").join(name).exists(), "{name} missing");
    }
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let setups = report["setups"].as_array().unwrap();
    assert_eq!(setups.len(), 3);
    for s in setups {
        for field in ["name", "samples_per_sec", "stall_fraction", "hit_ratio", "auc", "logloss"] {
            assert!(s.get(field).is_some(), "{field} missing");
        }
        assert_eq!(s["auc"], setups[0]["auc"], "AUC of {}", s["name"]);
        assert_eq!(s["logloss"], setups[0]["logloss"], "log-loss of {}", s["name"]);
        assert_eq!(s["outcome"]["losses"], setups[0]["outcome"]["losses"], "losses of {}", s["name"]);
        assert!(s["queries_per_sec"].is_null() && s["serving"].is_null(), "no [serve], no serving figures");
        // Where the steps' time went: every part measured, none beyond the steps' time.
        let (times, seconds) = (&s["outcome"]["step_times"], s["outcome"]["seconds"].as_f64().unwrap());
        let parts: Vec<f64> = ["next_batch", "engine", "waiting_for_rows", "dense"].map(|p| times[p].as_f64().unwrap()).to_vec();
        assert!(parts.iter().all(|&p| p >= 0.0) && parts[1] > 0.0 && parts[3] > 0.0, "{times}");
        assert!(parts.iter().sum::<f64>() <= seconds + 1e-6, "{times} within {seconds} s");
    }
    let stall = setups[2]["outcome"]["engine"]["stall_seconds"].as_f64().unwrap();
    let waited = setups[2]["outcome"]["step_times"]["waiting_for_rows"].as_f64().unwrap();
    assert!(waited <= stall, "the training steps' waits ({waited} s) are among the run's ({stall} s)");
    assert!(summary.contains("Where a training step's time goes") && summary.contains("waiting for rows"), "{summary}");
    assert!(!dir.path().join("out/latency.svg").exists());
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
    // A file cache needs a remote table below it, and a policy that does not need the future.
    let cache = "[engine.file_cache]\npath = \"cache.strata\"\nsize = 0.1\n";
    let remote = "[engine.remote]\nnodes = [\"127.0.0.1:1\"]\ntable = \"t\"\n";
    let cases = [
        (format!("{CONFIG}\n{cache}"), "a file cache sits in front of [engine.remote]"),
        (format!("{CONFIG}\n{remote}{cache}policy = \"belady\"\n"), "needs the future"),
        (format!("{CONFIG}\n{remote}{}", cache.replace("0.1", "-1")), "engine.file_cache: size"),
        // Tables of several widths: one per table or one for all, DCNv2 only, no remote table.
        (CONFIG.replace("embedding_dim = 8", "embedding_dim = [8, 4, 8]"), "model.embedding_dim gives 3 widths for 26 tables"),
        (
            CONFIG.replace("init_scale = 0.05", "init_scale = 0.05\npooling = [\"sum\", \"mean\"]"),
            "engine.pooling gives 2 poolings for 26 tables",
        ),
        (
            CONFIG
                .replace("embedding_dim = 8", &format!("embedding_dim = {MIXED_DIMS}"))
                .replace("interaction = { kind = \"dcnv2\", layers = 1, low_rank = 4 }", "interaction = { kind = \"dot\" }"),
            "dot takes tables of one embedding_dim",
        ),
        (
            format!("{}\n{remote}", CONFIG.replace("embedding_dim = 8", &format!("embedding_dim = {MIXED_DIMS}"))),
            "engine.remote: a remote table holds rows of one width",
        ),
    ];
    for (text, message) in cases {
        std::fs::write(&config, text).unwrap();
        let out = strata(&["run", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("bad.toml") && stderr.contains(message), "{stderr}");
        assert!(!out_dir.exists() && !dir.path().join("cache.strata").exists(), "nothing may be written for a bad config");
    }
}

/// Writes `config` (with its table file and output folder in `dir`), runs it and returns
/// the report's set-ups and the Markdown summary.
fn run_in(dir: &Path, config: &str) -> (Vec<Value>, String) {
    let path = dir.join("exp.toml");
    let with_file =
        config.replace("init_scale = 0.05\n", &format!("init_scale = 0.05\ntable_file = \"{}\"\n", dir.join("table.strata").display()));
    std::fs::write(&path, format!("{with_file}\n[output]\ndir = \"{}\"\n", dir.join("out").display())).unwrap();
    let out = strata(&["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap();
    (report["setups"].as_array().unwrap().clone(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks the serving figures of every set-up: `requests` measured requests of
/// `batch_size` queries, ordered percentiles, the same predictions everywhere.
fn check_serving(setups: &[Value], requests: u64, batch_size: u64) {
    for s in setups {
        let name = &s["name"];
        for field in [
            "queries_per_sec",
            "p50_us",
            "p95_us",
            "p99_us",
            "p99_vs_first",
            "serve_stall_fraction",
            "serve_hit_ratio",
            "prediction_checksum",
        ] {
            assert!(!s[field].is_null(), "{field} missing for {name}");
        }
        let (p50, p95, p99) = (s["p50_us"].as_f64().unwrap(), s["p95_us"].as_f64().unwrap(), s["p99_us"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{name}: {p50} {p95} {p99}");
        assert_eq!(s["serving"]["requests"], requests, "{name}");
        assert_eq!(s["serving"]["queries"], requests * batch_size, "{name}");
        assert_eq!(s["serving"]["latencies_us"].as_array().unwrap().len() as u64, requests, "{name}");
        assert_eq!(s["prediction_checksum"], setups[0]["prediction_checksum"], "predictions of {name}");
        // The I/O floor: each request's store rows at the store's measured rate.
        let serving = &s["serving"];
        let rows: Vec<u64> = serving["store_rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        assert_eq!(rows.len() as u64, requests, "{name}");
        let (rate, floor) = (serving["store_rows_per_sec"].as_f64().unwrap(), serving["io_floor_p99_us"].as_f64().unwrap());
        if rows.iter().any(|&r| r > 0) {
            let most = *rows.iter().max().unwrap() as f64;
            assert!(rate > 0.0 && floor > 0.0 && floor <= most / rate * 1e6 * (1.0 + 1e-9), "{name}: {floor} us at {rate} rows/s");
            assert!(s["p99_vs_io_floor"].as_f64().unwrap() > 0.0, "{name}");
        } else {
            assert!(floor == 0.0 && s["p99_vs_io_floor"].is_null(), "{name}: no store read, no floor");
        }
    }
    assert_eq!(setups[0]["p99_vs_first"], 1.0);
}

#[test]
fn training_then_serving_reports_latency_and_the_same_predictions_for_every_setup() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}\n{SERVE}", CONFIG.replace("eval_every = 10", "eval_every = 10\ncheckpoint_every = 7"));
    let (setups, summary) = run_in(dir.path(), &config);
    assert_eq!(setups.len(), 3);
    check_serving(&setups, 24, 8);
    for s in &setups {
        assert_eq!(s["checkpoints"], 4, "steps 7, 14, 21 and 28 of 30");
        assert_eq!(s["outcome"]["losses"], setups[0]["outcome"]["losses"], "losses of {}", s["name"]);
        assert!(!s["samples_per_sec"].is_null() && !s["auc"].is_null());
    }
    assert!(setups[1]["serve_hit_ratio"]["device"].as_f64().unwrap() > 0.0);
    assert!(setups[0]["serve_hit_ratio"]["device"].is_null(), "the ideal set-up has no device tier");
    assert!(summary.contains("Training") && summary.contains("Serving") && summary.contains("p99 vs first"), "{summary}");
    assert!(summary.contains("I/O floor p99 us") && summary.contains("p99 vs floor"), "{summary}");
    let with_floor = setups.iter().filter(|s| !s["p99_vs_io_floor"].is_null()).count();
    assert!(with_floor >= 1, "the tiered set-ups read rows from the table file while serving");
    let out = dir.path().join("out");
    for name in ["latency.svg", "hit_ratio.svg", "loss.svg", "throughput.svg"] {
        assert!(out.join(name).exists(), "{name} missing");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "every plot inlined");
    assert!(html.contains("Serving latency per request") && html.contains("Hit ratio per tier"));
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert!(header.contains(&"p99_us") && header.contains(&"prediction_checksum") && header.contains(&"checkpoints"));
    assert_eq!(csv.lines().count(), 4);
}

#[test]
fn a_serve_only_experiment_serves_the_initial_table() {
    let dir = tempfile::tempdir().unwrap();
    let serve_only = CONFIG.replace("train_batches = 30", "train_batches = 0").replace("eval_batches = 4", "eval_batches = 0");
    let config = format!("{serve_only}\n{SERVE}").replace("name = \"ideal\"\n", "name = \"ideal\"\npreload = true\n");
    let (setups, summary) = run_in(dir.path(), &config);
    check_serving(&setups, 24, 8);
    for s in &setups {
        assert!(s["samples_per_sec"].is_null() && s["auc"].is_null() && s["outcome"].is_null(), "{}: no training", s["name"]);
    }
    // Preloaded, the all-in-memory set-up never reads the store while serving.
    assert_eq!(setups[0]["serve_hit_ratio"]["host"], 1.0);
    assert_eq!(setups[0]["serving"]["engine"]["bytes_store_to_host"], 0);
    assert!(setups[1]["serving"]["engine"]["bytes_store_to_host"].as_u64().unwrap() > 0);
    for s in &setups {
        assert_eq!(s["serving"]["engine"]["store_writes"], 0, "{}: serving dirties no row", s["name"]);
    }
    assert!(!summary.contains("Training") && summary.contains("| ideal |"), "{summary}");
    assert!(!dir.path().join("out/loss.svg").exists());
}

#[test]
fn a_bad_serve_config_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let path = dir.path().join("serve.toml");
    let run = |config: String| {
        std::fs::write(&path, format!("{config}\n[output]\ndir = \"{}\"\n", out_dir.display())).unwrap();
        let out = strata(&["run", path.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(!out_dir.exists(), "nothing may be written for a bad config");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(format!("{CONFIG}\n{}", SERVE.replace("batch_size = 8", "batch_size = 0")));
    assert!(stderr.contains("serve.toml") && stderr.contains("serve") && stderr.contains("batch_size"), "{stderr}");
    let stderr = run(format!("{CONFIG}\n{SERVE}percentile = 99\n"));
    assert!(stderr.contains("percentile") && stderr.contains("line 41"), "{stderr}");
    let stderr = run(CONFIG.replace("train_batches = 30", "train_batches = 0"));
    assert!(stderr.contains("train_batches") && stderr.contains("[serve]"), "{stderr}");
    let stderr = run(format!("{CONFIG}\n{SERVE}").replace("name = \"arc exclusive\"\n", "name = \"arc exclusive\"\npreload = true\n"));
    assert!(stderr.contains("arc exclusive") && stderr.contains("preload") && stderr.contains("every row"), "{stderr}");
}

/// A two-set-up experiment on `data` (the `[data.*]` source table).
fn experiment(data: &str) -> String {
    let head = "[data]\nbatch_size = 32\ntrain_batches = 20\neval_batches = 4\neval_every = 10\n";
    let model = &CONFIG[CONFIG.find("[model]").unwrap()..CONFIG.find("[[setup]]").unwrap()];
    let setups = "[[setup]]\nname = \"ideal\"\ndevice = 0\nhost = 1e9\n[[setup]]\nname = \"lru, prefetch 2\"\ndevice = 0.01\nhost = 0.05\nwindow = 2\n";
    format!("{head}{data}\n{model}{setups}")
}

/// Losses and evaluations of every set-up of the experiment `text`.
fn train_losses(dir: &Path, text: &str) -> Vec<(Vec<f32>, Vec<strata::model::train::Evaluation>)> {
    let path = dir.join("exp.toml");
    let config = strata::experiment::ExperimentConfig::parse(&path, text).unwrap();
    let (results, _) = strata::experiment::run(&config, Some(&dir.join("out"))).unwrap();
    results.into_iter().map(|r| r.outcome.expect("trained")).map(|o| (o.losses, o.evaluations)).collect()
}

fn gen_data(dir: &Path, format: &str, one_hot: bool) {
    let mut args = vec!["gen-data", "--format", format, "--out", dir.to_str().unwrap(), "--samples", "640", "--days", "2"];
    args.extend_from_slice(&["--scale", "0.0005", "--seed", "3"]);
    if one_hot {
        args.push("--one-hot");
    }
    let out = strata(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn training_on_generated_files_matches_the_synthetic_stream_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (numpy, tsv) = (dir.path().join("numpy"), dir.path().join("tsv"));
    gen_data(&numpy, "numpy", false);
    gen_data(&tsv, "tsv", true);
    let cases = [
        (
            "[data.synthetic]\nscale = 0.0005\nseed = 3\n".to_string(),
            format!(
                "[data.mlperf_numpy]\ndir = \"{}\"\ntrain_days = [0]\neval_days = [1]\nmulti_hot = true\nscale = 0.0005\n",
                numpy.display()
            ),
        ),
        (
            "[data.synthetic]\nscale = 0.0005\nseed = 3\nmulti_hot = false\n".to_string(),
            format!(
                "[data.criteo_tsv]\ntrain_files = [\"{}\"]\neval_files = [\"{}\"]\nscale = 0.0005\n",
                tsv.join("day_0.tsv").display(),
                tsv.join("day_1.tsv").display()
            ),
        ),
    ];
    for (synthetic, files) in cases {
        let expected = train_losses(dir.path(), &experiment(&synthetic));
        let got = train_losses(dir.path(), &experiment(&files));
        assert_eq!(expected.len(), 2);
        for ((losses, evaluations), (expected_losses, expected_evaluations)) in got.iter().zip(&expected) {
            assert_eq!(losses.len(), 20);
            assert_eq!(losses, expected_losses, "{files}");
            assert_eq!(evaluations.len(), 2);
            assert_eq!(evaluations, expected_evaluations, "{files}");
        }
    }
}

/// Runs the experiment `text` through the CLI and returns its one error line.
fn run_fails(dir: &Path, text: &str) -> String {
    let config = dir.join("exp.toml");
    std::fs::write(&config, format!("{text}\n[output]\ndir = \"{}\"\n", dir.join("out").display())).unwrap();
    let out = strata(&["run", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("training `")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    lines[0].to_string()
}

#[test]
fn a_missing_or_doubly_named_data_source_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.tsv");
    let error = run_fails(
        dir.path(),
        &experiment(&format!("[data.criteo_tsv]\ntrain_files = [\"{}\"]\neval_files = [\"{}\"]\n", missing.display(), missing.display())),
    );
    assert!(error.contains("exp.toml: data: ") && error.contains(&format!("{}: No such file", missing.display())), "{error}");
    assert!(!dir.path().join("out").exists(), "nothing may be written for a bad config");
    let error = run_fails(dir.path(), &experiment(&format!("[data.mlperf_numpy]\ndir = \"{}\"\ntrain_days = [0]\n", dir.path().display())));
    assert!(error.contains("eval_days"), "{error}");
    let error = run_fails(
        dir.path(),
        &experiment(&format!("[data.mlperf_numpy]\ndir = \"{}\"\ntrain_days = [0]\neval_days = [1]\n", dir.path().display())),
    );
    assert!(error.contains(&format!("{}: No such file", dir.path().join("day_0_dense.npy").display())), "{error}");
    let error = run_fails(
        dir.path(),
        &experiment(&format!("[data.synthetic]\nseed = 1\n[data.mlperf_numpy]\ndir = \"{}\"\ntrain_days = [0]\n", dir.path().display())),
    );
    assert!(error.contains("give one of [data.synthetic], [data.criteo_tsv] and [data.mlperf_numpy]"), "{error}");
    assert!(!dir.path().join("out").exists(), "nothing may be written for a bad config");
}

#[test]
fn a_bad_line_deep_in_a_training_file_fails_the_run_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    gen_data(dir.path(), "tsv", true);
    let train = dir.path().join("day_0.tsv");
    let text = std::fs::read_to_string(&train).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut fields: Vec<&str> = lines[99].split('\t').collect();
    fields[1] = "1.5";
    lines[99] = fields.join("\t");
    std::fs::write(&train, lines.join("\n") + "\n").unwrap();
    let data = format!(
        "[data.criteo_tsv]\ntrain_files = [\"{}\"]\neval_files = [\"{}\"]\nscale = 0.0005\n",
        train.display(),
        dir.path().join("day_1.tsv").display()
    );
    let error = run_fails(dir.path(), &experiment(&data));
    assert!(error.contains(&format!("{}:100: column 2: expected an integer, found `1.5`", train.display())), "{error}");
    assert!(error.contains("setup `ideal`") && error.contains(&format!("batch at {}", 3 * 32 * 26)), "{error}");
    assert_eq!(error.matches("expected an integer").count(), 1, "the cause once: {error}");
}

#[test]
fn the_numpy_config_parses_against_files_gen_data_writes() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "gen-data",
        "--format",
        "numpy",
        "--out",
        dir.path().to_str().unwrap(),
        "--samples",
        "10",
        "--days",
        "2",
        "--scale",
        "0.002",
        "--seed",
        "42",
    ];
    let out = strata(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/train-numpy.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("data/train-small-numpy", dir.path().to_str().unwrap());
    let config = strata::experiment::ExperimentConfig::parse(&path, &text).unwrap();
    assert_eq!(config.rows(), 408_382);
}

#[test]
fn every_shipped_experiment_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Experiments (a [model] section) that read files need them generated first.
        if path.extension().is_some_and(|e| e == "toml") && text.contains("\n[model]") && !text.contains("[data.mlperf_numpy]") {
            strata::experiment::ExperimentConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} experiment configs found");
}

#[test]
fn an_in_memory_run_killed_after_a_checkpoint_resumes_to_the_same_results() {
    // No table file: checkpoints snapshot the in-memory rows.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exp.toml");
    let text = format!(
        "{}\n{SERVE}",
        CONFIG.replace("eval_every = 10", "eval_every = 10\ncheckpoint_every = 2").replace("train_batches = 30", "train_batches = 60")
    );
    std::fs::write(&config, &text).unwrap();
    let reference = dir.path().join("reference");
    let out = strata(&["run", config.to_str().unwrap(), "--out", reference.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let resumed = dir.path().join("resumed");
    kill_after_a_checkpoint(&config, &resumed, "1-lru__prefetch_2");
    let folder = resumed.join("checkpoints/1-lru__prefetch_2");
    assert!(resumed.join("checkpoints/0-ideal/result.json").exists(), "the first set-up finished");
    assert!(
        std::fs::read_dir(&folder).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("rows-")),
        "a snapshot of the rows"
    );
    let out = strata(&["run", "--resume", resumed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (expected, actual) = (report(&reference), report(&resumed));
    assert_eq!(results(&actual), results(&expected));
    assert_eq!(actual[0]["outcome"]["resumed_at"], 0, "finished before: its recorded result");
    let at = actual[1]["outcome"]["resumed_at"].as_u64().unwrap();
    assert!(at > 0 && at % 2 == 0, "resumed at a checkpoint step, not {at}");
    assert_eq!(actual[2]["outcome"]["resumed_at"], 0);
    // A finished run resumes to the same results again, running nothing.
    let out = strata(&["run", "--resume", resumed.to_str().unwrap()]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("finished before"));
    assert_eq!(results(&report(&resumed)), results(&expected));
}

#[test]
fn resume_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let one_line = |out: std::process::Output| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        stderr
    };
    let nothing = dir.path().join("nothing");
    let stderr = one_line(strata(&["run", "--resume", nothing.to_str().unwrap()]));
    assert!(stderr.contains("nothing/checkpoints/config.json") && stderr.contains("no run to resume"), "{stderr}");
    // A run has a CONFIG or --resume DIR, not both (a usage error from the parser).
    let out = strata(&["run", "x.toml", "--resume", nothing.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be used with '--resume <DIR>'"));

    let config = dir.path().join("exp.toml");
    std::fs::write(
        &config,
        CONFIG.replace("eval_every = 10", "eval_every = 10\ncheckpoint_every = 2").replace("train_batches = 30", "train_batches = 200"),
    )
    .unwrap();
    let out = dir.path().join("out");
    kill_after_a_checkpoint(&config, &out, "0-ideal");
    let manifest = out.join("checkpoints/0-ideal/manifest.json");
    let text: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let dense = out.join("checkpoints/0-ideal").join(text["dense_state"].as_str().unwrap());
    // The saved config edited: every manifest is of another config.
    let saved = out.join("checkpoints/config.json");
    let original = std::fs::read_to_string(&saved).unwrap();
    std::fs::write(&saved, original.replace("\"eval_every\": 10", "\"eval_every\": 5")).unwrap();
    let stderr = one_line(strata(&["run", "--resume", out.to_str().unwrap()]));
    assert!(stderr.contains("0-ideal/manifest.json") && stderr.contains("the config changed"), "{stderr}");
    std::fs::write(&saved, original.replace("\"eval_every\": 10", "\"colour\": 1, \"eval_every\": 10")).unwrap();
    let stderr = one_line(strata(&["run", "--resume", out.to_str().unwrap()]));
    assert!(stderr.contains("checkpoints/config.json") && stderr.contains("colour"), "{stderr}");
    std::fs::write(&saved, &original).unwrap();
    std::fs::remove_file(&dense).unwrap();
    let stderr = one_line(strata(&["run", "--resume", out.to_str().unwrap()]));
    assert!(stderr.contains(dense.to_str().unwrap()) && stderr.contains("missing"), "{stderr}");
}
