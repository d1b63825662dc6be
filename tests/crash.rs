//! The crash test: `strata run` on a small training experiment with frequent checkpoints
//! and a table file is killed with SIGKILL at random (seeded) moments and resumed with
//! `strata run --resume`, again and again. After every kill the table file, rolled back
//! with its journal (on a copy, so that the resumed run does its own roll-back), must
//! hold exactly the rows of the last committed checkpoint: every row's checksum equals
//! that of an in-process reference run (through the library, on an in-memory table) at
//! the same step. Every resumed run must end with the results and the table of a run
//! that never stopped. Prints the kills and mismatches (docs/RELIABILITY.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use strata::engine::flat::FlatTable;
use strata::engine::grouped::Embeddings;
use strata::engine::storage::{journal_path, roll_back, BackingStore, ReadPath, RollBack, TableFile};
use strata::engine::table::config::TableConfig;
use strata::engine::table::TieredTable;
use strata::engine::{RowInit, RowLayout};
use strata::experiment::ExperimentConfig;
use strata::model::train::{CheckpointFailure, Checkpointer, TrainOptions, TrainedSteps, Training};
use strata::model::Dlrm;

/// The experiment: two set-ups sharing the table file (tiny tiers, so that evictions
/// write pages between checkpoints; the first with a write-back buffer and read-ahead,
/// the second exclusive), a checkpoint every 3 of 39 steps, Adam on the dense model,
/// evaluations and serving.
const CONFIG: &str = r#"
[data]
batch_size = 32
train_batches = 39
eval_batches = 2
eval_every = 10
checkpoint_every = 3
[data.synthetic]
scale = 0.0005
seed = 11
[model]
embedding_dim = 8
bottom_mlp = [16, 8]
top_mlp = [16]
interaction = { kind = "dcnv2", layers = 1, low_rank = 4 }
dense_optimizer = { kind = "adam", lr = 0.01 }
seed = 5
threads = 1
[engine]
optimizer = { kind = "row_wise_adagrad", lr = 0.05 }
init_scale = 0.05
init_seed = 9
table_file = "TABLE"
[serve]
requests = 8
batch_size = 16
[[setup]]
name = "lru buffered"
device = 0.002
host = 0.01
write_buffer = 0.005
window = 2
[[setup]]
name = "arc exclusive"
device = 0.002
host = 0.02
policy = "arc"
hierarchy = "exclusive"
"#;

/// Kills to reach at least, over as many interrupted runs as it takes.
const KILLS: u64 = 50;
const SEED: u64 = 2024;

fn config_text(table: &Path) -> String {
    CONFIG.replace("TABLE", table.to_str().expect("UTF-8 path"))
}

fn row_checksum(row: &[f32]) -> u64 {
    row.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3))
}

fn checksums(store: &mut dyn BackingStore) -> Vec<u64> {
    let floats = store.layout().words();
    let rows: Vec<u64> = (0..store.rows()).collect();
    let mut data = vec![0f32; rows.len() * floats];
    store.read_rows(&rows, &mut data).expect("read every row");
    data.chunks_exact(floats).map(row_checksum).collect()
}

/// Row checksums after every checkpoint step, from one run through the library.
struct RowsAtCheckpoints {
    layout: RowLayout,
    rows: u64,
    at_step: BTreeMap<u64, Vec<u64>>,
}

impl Checkpointer for RowsAtCheckpoints {
    fn checkpoint(&mut self, _model: &Dlrm, table: &mut dyn Embeddings, done: &TrainedSteps) -> Result<(), CheckpointFailure> {
        let mut copy = FlatTable::new(self.rows, self.layout, RowInit::Zeros);
        table.only()?.snapshot_into(&mut copy)?;
        self.at_step.insert(done.steps, checksums(&mut copy));
        Ok(())
    }
}

/// The reference: the config's training in process, on an in-memory table (placement
/// never changes rows), recording every row's checksum at each checkpoint step.
fn reference_rows(config: &ExperimentConfig) -> (BTreeMap<u64, Vec<u64>>, Vec<f32>) {
    let layout = RowLayout::new(config.model.embedding_dim.single().unwrap(), &config.engine.optimizer);
    let rows = config.rows();
    let init = RowInit::Uniform { seed: config.engine.init_seed, scale: config.engine.init_scale };
    let store = FlatTable::new(rows, layout, init);
    let mut table =
        TieredTable::new(&TableConfig::host_only(rows, config.engine.optimizer, config.engine.pooling.single().unwrap()), Box::new(store))
            .expect("table");
    let mut model = Dlrm::new(&config.model, strata::data::CRITEO_CARDINALITIES.len()).expect("model");
    let batches = config.data.source().train(config.data.batch_size, config.data.train_batches).expect("batches");
    let options = TrainOptions { window: 0, eval_every: 0, checkpoint_every: config.data.checkpoint_every };
    let mut recorder = RowsAtCheckpoints { layout, rows, at_step: BTreeMap::new() };
    let outcome =
        Training::new(&mut model, &mut table).options(options).checkpointer(&mut recorder).run(batches).expect("reference training");
    (recorder.at_step, outcome.losses)
}

fn strata(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("STRATA_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata")
}

fn finish(child: Child) {
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "strata failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The set-up folder holding the manifest of an unfinished set-up, if any.
fn manifest_of_unfinished(out: &Path) -> Option<PathBuf> {
    let folders = std::fs::read_dir(out.join("checkpoints")).ok()?;
    folders
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.is_dir() && !dir.join("result.json").exists())
        .map(|dir| dir.join("manifest.json"))
        .find(|manifest| manifest.exists())
}

/// What one kill left behind, checked on a copy of the table and its journal.
struct Check {
    /// Rows whose checksum differs from the reference at the checkpoint's step.
    mismatched_rows: usize,
    /// Pages the journal restored.
    rolled_back: u64,
}

fn check_after_kill(out: &Path, table: &Path, scratch: &Path, reference: &BTreeMap<u64, Vec<u64>>) -> Option<Check> {
    let manifest_path = manifest_of_unfinished(out)?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("manifest JSON");
    assert_eq!(manifest["tables"][0]["path"].as_str(), Some(table.to_str().unwrap()), "{}", manifest_path.display());
    let (step, id) = (manifest["steps"].as_u64().expect("steps"), manifest["checkpoint"].as_u64().expect("id"));
    let copy = scratch.join("table.copy");
    std::fs::copy(table, &copy).expect("copy the table");
    let _ = std::fs::remove_file(journal_path(&copy));
    if journal_path(table).exists() {
        std::fs::copy(journal_path(table), journal_path(&copy)).expect("copy the journal");
    }
    let rolled_back = match roll_back(&copy, id).expect("roll back") {
        RollBack::RolledBack { pages, .. } => pages,
        RollBack::NoJournal | RollBack::Discarded { .. } => 0,
    };
    let mut recovered = TableFile::open(&copy, ReadPath::Pread).expect("open the rolled-back copy");
    let actual = checksums(&mut recovered);
    let expected = reference.get(&step).unwrap_or_else(|| panic!("no reference at step {step}"));
    let mismatched_rows = actual.iter().zip(expected).filter(|(a, e)| a != e).count() + actual.len().abs_diff(expected.len());
    if mismatched_rows > 0 {
        eprintln!(
            "MISMATCH: {} after rolling back to checkpoint {id} (step {step}): {mismatched_rows} rows differ",
            manifest_path.display()
        );
    }
    Some(Check { mismatched_rows, rolled_back })
}

/// The figures of a report that a resumed run must reproduce exactly.
fn results_of(out: &Path) -> Vec<Value> {
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("JSON");
    report["setups"]
        .as_array()
        .expect("setups")
        .iter()
        .map(|s| {
            let o = &s["outcome"];
            serde_json::json!({
                "name": s["name"], "auc": s["auc"], "logloss": s["logloss"],
                "prediction_checksum": s["prediction_checksum"],
                "steps": o["steps"], "samples": o["samples"], "checkpoints": o["checkpoints"],
                "losses": o["losses"], "evaluations": o["evaluations"],
            })
        })
        .collect()
}

#[test]
fn killed_runs_recover_the_last_checkpoint_exactly_and_resume_bit_identically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();

    // The reference run, through the binary, uninterrupted: its final results and table.
    let reference_table = root.join("reference.strata");
    std::fs::write(root.join("reference.toml"), config_text(&reference_table)).expect("config");
    let started = Instant::now();
    finish(strata(&["run", root.join("reference.toml").to_str().unwrap(), "--out", root.join("reference").to_str().unwrap()]));
    let full_run = started.elapsed();
    eprintln!("crash test: the uninterrupted run took {full_run:.1?}");
    let reference_results = results_of(&root.join("reference"));
    let reference_final = std::fs::read(&reference_table).expect("reference table");

    // The rows at every checkpoint step, in process.
    let config = ExperimentConfig::parse(&root.join("reference.toml"), &config_text(&reference_table)).expect("config");
    let (at_step, losses) = reference_rows(&config);
    assert_eq!(at_step.len(), 13);
    assert_eq!(serde_json::json!(losses), reference_results[0]["losses"], "the in-process reference trains as the binary does");

    let mut rng = SmallRng::seed_from_u64(SEED);
    let (mut kills, mut checked, mut mismatches, mut rollbacks, mut pages_rolled_back) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut runs = 0;
    while kills < KILLS {
        runs += 1;
        assert!(runs <= 40, "{kills} kills after {runs} runs: the kills land after the runs end");
        let trial = root.join(format!("run{runs}"));
        std::fs::create_dir_all(&trial).expect("trial dir");
        let table = trial.join("table.strata");
        let config_path = trial.join("crash.toml");
        std::fs::write(&config_path, config_text(&table)).expect("config");
        let out = trial.join("out");
        let mut args = vec!["run".to_string(), config_path.display().to_string(), "--out".into(), out.display().to_string()];
        loop {
            let mut child = strata(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let delay = Duration::from_secs_f64(rng.gen_range(0.0..full_run.as_secs_f64() * 0.35));
            let deadline = Instant::now() + delay;
            let mut exited = false;
            while Instant::now() < deadline {
                if child.try_wait().expect("try_wait").is_some() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if exited {
                finish(child);
                break;
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            kills += 1;
            if let Some(check) = check_after_kill(&out, &table, &trial, &at_step) {
                checked += 1;
                mismatches += u64::from(check.mismatched_rows > 0);
                rollbacks += u64::from(check.rolled_back > 0);
                pages_rolled_back += check.rolled_back;
            }
            // A run killed before it saved its config has nothing to resume: it starts
            // again (`--resume` says so, naming the missing file).
            if out.join("checkpoints/config.json").exists() {
                args = vec!["run".into(), "--resume".into(), out.display().to_string()];
            }
        }
        let results = results_of(&out);
        if results != reference_results {
            mismatches += 1;
            eprintln!("MISMATCH: run {runs}: final results differ from the uninterrupted run");
        }
        if std::fs::read(&table).expect("final table") != reference_final {
            mismatches += 1;
            eprintln!("MISMATCH: run {runs}: final table differs from the uninterrupted run");
        }
    }
    println!(
        "crash test: {runs} runs, {kills} kills (SIGKILL), {checked} after a committed checkpoint checked row by row, \
         {rollbacks} of them rolled back pages ({pages_rolled_back} pages), {mismatches} mismatches"
    );
    eprintln!(
        "crash test: {runs} runs, {kills} kills, {checked} checked, {rollbacks} roll-backs ({pages_rolled_back} pages), {mismatches} mismatches"
    );
    assert_eq!(mismatches, 0);
    assert!(kills >= KILLS);
    assert!(checked >= KILLS / 2, "only {checked} kills came after a committed checkpoint");
    assert!(rollbacks > 0, "no kill left pages to roll back: the journal was never exercised");
}
