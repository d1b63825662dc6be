//! Shutdown of the prefetch pipeline: an error in the middle of training (a page read
//! or write that fails, a bad batch, a batch source that panics) returns the error, stops
//! and joins every thread (batch source, storage thread, pread workers) and flushes the
//! trained rows, or says the store failed and writes nothing more; a stop request ends
//! training between steps with the table equal to a flat run of that many steps; and
//! `strata run` interrupted by SIGINT flushes the table, writes the partial reports and
//! exits with status 130 (a second SIGINT exits at once).
//!
//! Each scenario runs under a watchdog that fails the test instead of hanging it. The
//! tests share this process's threads and its stop flag, so they run one at a time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use strata::data::{SyntheticBatches, SyntheticConfig};
use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::{BackingStore, FaultPlan, PageFault, ReadConfig, ReadPath, TableFile};
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{EngineError, Optimizer, RowInit, RowLayout};
use strata::model::train::{ServeOptions, Serving, TrainError, TrainOptions, Training};
use strata::model::Dlrm;
use strata_policies::PolicyConfig;

mod common;
use common::folders;
use common::model::small_model;

const DIM: usize = 8;
const OPTIMIZER: Optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
const INIT: RowInit = RowInit::Uniform { seed: 9, scale: 0.05 };
const STEPS: u64 = 30;
/// Samples per batch: 32 x 214 lookups, at most that many distinct rows.
const BATCH: usize = 32;
const LOOKUPS_PER_BATCH: usize = BATCH * 214;

/// One scenario at a time: they count this process's threads and share its stop flag.
static SERIAL: Mutex<()> = Mutex::new(());

fn synthetic() -> SyntheticConfig {
    SyntheticConfig { scale: 0.0005, seed: 5, ..SyntheticConfig::default() }
}

fn rows() -> u64 {
    synthetic().layout().total_rows()
}

fn layout() -> RowLayout {
    RowLayout::new(DIM, &OPTIMIZER)
}

fn batches(count: u64) -> Vec<Batch> {
    SyntheticBatches::new(&synthetic(), BATCH, Some(count)).unwrap().with_features().collect()
}

/// Every row of `store`.
fn all_rows(store: &mut dyn BackingStore) -> Vec<f32> {
    let rows: Vec<u64> = (0..store.rows()).collect();
    let mut data = vec![0f32; rows.len() * store.layout().words()];
    store.read_rows(&rows, &mut data).unwrap();
    data
}

/// Every row of the table file at `path`, re-opened with each read path (every page
/// must verify, and all must agree).
fn file_rows(path: &Path) -> Vec<f32> {
    let mut first: Option<Vec<f32>> = None;
    for read_path in ReadPath::ALL {
        let rows = all_rows(&mut TableFile::open(path, read_path).expect("re-open"));
        match &first {
            Some(f) => assert!(&rows == f, "{read_path} reads other rows"),
            None => first = Some(rows),
        }
    }
    first.unwrap()
}

/// The table after `steps` training steps entirely in host memory.
fn reference_rows(steps: u64) -> Vec<f32> {
    let store = FlatTable::new(rows(), layout(), INIT);
    let mut table = TieredTable::new(&TableConfig::host_only(rows(), OPTIMIZER, Pooling::Sum), Box::new(store)).unwrap();
    let outcome = Training::new(&mut small_model(DIM), &mut table).run(batches(steps).into_iter()).unwrap();
    assert_eq!(outcome.steps, steps);
    all_rows(&mut *table.close().unwrap())
}

/// The number of steps after which the flat reference equals `rows`, searched in `range`.
fn steps_matching(rows: &[f32], range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    range.rev().find(|&steps| reference_rows(steps) == rows)
}

/// Threads of this process whose names start with `prefix`, once joined threads have
/// left `/proc/self/task`: the kernel wakes a joiner as a thread exits, a moment before it
/// removes the thread's entry, so a thread just joined may still be listed. One that is
/// still listed after a second was not joined.
fn threads_named(prefix: &str) -> Vec<String> {
    let listed = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .filter(|name| name.starts_with(prefix))
            .collect()
    };
    for _ in 0..100 {
        let names = listed();
        if names.is_empty() {
            return names;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    listed()
}

/// Runs `scenario` on a thread of its own and fails if it has not finished within
/// `limit` (a hang, not a slow machine: the limit is far above the run's length).
fn within<T: Send + 'static>(limit: Duration, scenario: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = done.send(scenario());
    });
    match finished.recv_timeout(limit) {
        Ok(value) => {
            worker.join().unwrap();
            value
        }
        // The scenario panicked (its message is printed already): fail with it.
        Err(mpsc::RecvTimeoutError::Disconnected) => std::panic::resume_unwind(worker.join().unwrap_err()),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the scenario hung: no result after {limit:?}"),
    }
}

const WATCHDOG: Duration = Duration::from_secs(300);

/// A tiered table over a fresh table file at `path` holding the reference's initial rows.
fn tiered(path: &Path, read_path: ReadPath, plan: &FaultPlan, host_rows: usize, write_buffer_rows: usize) -> TieredTable {
    TableFile::create(path, rows(), layout(), INIT).unwrap();
    let mut file = TableFile::open_with(path, ReadConfig { read_path, pread_threads: 4, ..ReadConfig::default() }).unwrap();
    file.inject_faults(plan.clone());
    let config = TableConfig {
        device: TierConfig::rows(64, PolicyConfig::Lru),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(host_rows, PolicyConfig::Lru),
        hierarchy: Hierarchy::Inclusive,
        optimizer: OPTIMIZER,
        pooling: Pooling::Sum,
        write_buffer_rows,
        rounding: Default::default(),
    };
    TieredTable::new(&config, Box::new(file)).unwrap()
}

/// Trains `table` on `source`, checks the batch thread is joined when `train` returns
/// and the storage threads once the table is dropped; returns the error.
fn train_until_error(mut table: TieredTable, source: impl Iterator<Item = Batch> + Send + 'static, window: usize) -> TrainError {
    let options = TrainOptions { window, ..TrainOptions::default() };
    let error = Training::new(&mut small_model(DIM), &mut table).options(options).run(source).expect_err("the run fails");
    assert_eq!(threads_named("strata-batches"), Vec::<String>::new(), "the batch source thread is joined: {error}");
    drop(table);
    assert_eq!(threads_named("strata-"), Vec::<String>::new(), "the storage and pread threads are joined: {error}");
    error
}

#[test]
fn a_failed_read_mid_training_stops_every_thread_and_flushes_the_trained_rows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let all = batches(STEPS);
    // A page none of whose rows is looked up before batch `first_use`: the fault armed
    // when the source hands out batch 10 fires on that page's first read.
    let header = *TableFile::create(&folders()[0].path().join("probe.strata"), rows(), layout(), INIT).unwrap().header();
    let first_use = |page: u64| all.iter().position(|b| b.ids.iter().any(|&r| header.page_of(r) == page));
    let (page, first) = (0..header.pages())
        .filter_map(|page| Some((page, first_use(page)?)))
        .rfind(|&(_, first)| (15..25).contains(&first))
        .expect("a page first read late in the run");
    for folder in folders() {
        for (window, read_path) in [(0, ReadPath::IoUring), (3, ReadPath::Pread), (2, ReadPath::Mmap)] {
            let path = folder.path().join("table.strata");
            let plan = FaultPlan::new();
            // Every row fits in the host tier: nothing is written before the flush, so the
            // read is the only thing that fails.
            let table = tiered(&path, read_path, &plan, rows() as usize, 0);
            let arm = plan.clone();
            let source = all.clone().into_iter().inspect(move |batch| {
                if batch.start == 10 * LOOKUPS_PER_BATCH as u64 {
                    arm.arm(page, PageFault::ReadEio, 1);
                }
            });
            let error = within(WATCHDOG, move || train_until_error(table, source, window).to_string());
            assert!(error.contains(&format!("page {page} (")) && error.contains("Input/output error"), "{error}");
            assert!(!error.contains("not flushed"), "{error}");
            assert_eq!(plan.fired(), 1);
            // The rows of every step before the failed one are in the file.
            let on_disk = file_rows(&path);
            let lowest = (first - window) as u64;
            let steps = steps_matching(&on_disk, lowest..=first as u64);
            assert!(steps.is_some(), "window {window} {read_path}: the file holds no whole number of steps in {lowest}..={first}");
        }
    }
}

#[test]
fn a_failed_write_mid_training_stops_every_thread_and_says_the_table_was_not_flushed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let header = *TableFile::create(&folders()[0].path().join("probe.strata"), rows(), layout(), INIT).unwrap().header();
    for folder in folders() {
        for (window, write_buffer_rows) in [(0, 0), (2, 16)] {
            let path = folder.path().join("table.strata");
            let plan = FaultPlan::new();
            // A small host tier: dirty rows go down to the store all along.
            let table = tiered(&path, ReadPath::Pread, &plan, 8000, write_buffer_rows);
            let arm = plan.clone();
            let pages = header.pages();
            let source = batches(STEPS).into_iter().inspect(move |batch| {
                if batch.start == 10 * LOOKUPS_PER_BATCH as u64 {
                    (0..pages).for_each(|page| arm.arm(page, PageFault::WriteEio, 1));
                }
            });
            let error = within(WATCHDOG, move || train_until_error(table, source, window).to_string());
            assert!(error.contains("writing row") && error.contains("Input/output error"), "{error}");
            assert!(error.ends_with("; the table was not flushed: the store failed"), "{error}");
            assert!(plan.fired() >= 1);
            // Nothing corrupt was written: every page of the file verifies.
            file_rows(&path);
        }
    }
}

#[test]
fn a_bad_batch_stops_every_thread_and_flushes_the_steps_before_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bad = 12;
    for window in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.strata");
        let table = tiered(&path, ReadPath::IoUring, &FaultPlan::new(), 6000, 32);
        let mut all = batches(STEPS);
        all[bad].ids[7] = rows();
        let error = within(WATCHDOG, move || train_until_error(table, all.into_iter(), window).to_string());
        assert_eq!(error, format!("row {} is out of range: the table has {} rows", rows(), rows()));
        // Batch 12 is refused as it enters the window: the steps before it are flushed.
        let steps = (bad - window) as u64;
        assert!(file_rows(&path) == reference_rows(steps), "window {window}: the file holds the first {steps} steps");
    }
}

#[test]
fn a_batch_source_that_panics_is_an_error_not_a_short_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for window in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.strata");
        let table = tiered(&path, ReadPath::Pread, &FaultPlan::new(), 6000, 0);
        let source = batches(STEPS).into_iter().enumerate().map(|(i, batch)| {
            assert!(i < 9, "the source broke at batch {i}");
            batch
        });
        let error = within(WATCHDOG, move || train_until_error(table, source, window));
        assert!(matches!(error, TrainError::Engine(EngineError::SourceFailed { .. })), "{error}");
        assert_eq!(error.to_string(), "the batch source failed: the source broke at batch 9");
        assert!(file_rows(&path) == reference_rows(9 - window as u64), "window {window}");
    }
}

#[test]
fn a_stop_request_ends_training_between_steps_with_every_row_written() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for window in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.strata");
        let mut table = tiered(&path, ReadPath::IoUring, &FaultPlan::new(), 6000, 16);
        let source = batches(STEPS).into_iter().inspect(|batch| {
            if batch.start == 15 * LOOKUPS_PER_BATCH as u64 {
                strata::interrupt::request();
            }
        });
        let held_out = batches(2);
        let options = TrainOptions { window, eval_every: 5, ..TrainOptions::default() };
        let outcome = within(WATCHDOG, move || {
            let outcome = Training::new(&mut small_model(DIM), &mut table).held_out(&held_out).options(options).run(source);
            strata::interrupt::clear();
            table.close().unwrap();
            outcome.unwrap()
        });
        assert!(outcome.interrupted);
        assert!(outcome.steps <= 16 && outcome.losses.len() as u64 == outcome.steps, "stopped at step {}", outcome.steps);
        let evaluated: Vec<u64> = outcome.evaluations.iter().map(|e| e.step).collect();
        assert!(evaluated.iter().all(|s| s % 5 == 0), "no final evaluation after a stop: {evaluated:?}");
        assert!(file_rows(&path) == reference_rows(outcome.steps), "window {window}: stopped after {} steps", outcome.steps);
    }
    // Serving stops the same way.
    let dir = tempfile::tempdir().unwrap();
    let mut table = tiered(&dir.path().join("serve.strata"), ReadPath::Pread, &FaultPlan::new(), 6000, 0);
    let requests = batches(20).into_iter().inspect(|batch| {
        if batch.start == 8 * LOOKUPS_PER_BATCH as u64 {
            strata::interrupt::request();
        }
    });
    let outcome = within(WATCHDOG, move || {
        let outcome = Serving::new(&mut small_model(DIM), &mut table).options(ServeOptions { window: 2, warmup: 0 }).run(requests);
        strata::interrupt::clear();
        outcome.unwrap()
    });
    assert!(outcome.interrupted && outcome.requests <= 9, "{} requests", outcome.requests);
}

/// A training experiment long enough to be interrupted, on a table file in `dir`.
fn experiment_config(dir: &Path, batch_size: usize) -> String {
    format!(
        r#"
[data]
batch_size = {batch_size}
train_batches = 100000
eval_batches = 0
[data.synthetic]
scale = 0.0005
seed = 3
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
init_seed = 4
table_file = "{table}"
[[setup]]
name = "lru, prefetch 2"
device = 0.01
host = 0.05
window = 2
write_buffer = 0.01
[output]
dir = "{out}"
"#,
        table = dir.join("table.strata").display(),
        out = dir.join("out").display()
    )
}

/// A running `strata run` and its stderr lines.
struct Run {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(config: &Path) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["run", config.to_str().unwrap()])
            .env("STRATA_LOG", "strata=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Run { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `text` (failing after the watchdog's limit).
    fn wait_for(&mut self, text: &str) {
        loop {
            match self.lines.recv_timeout(WATCHDOG) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no line with `{text}` on stderr; so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the exit (failing after the watchdog's limit); returns its status code
    /// and the whole of stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + WATCHDOG;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("strata did not exit after the signal; stderr so far:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at end of file, closing the channel.
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen.join("\n"))
    }
}

#[test]
fn sigint_during_strata_run_flushes_the_table_and_writes_partial_reports() {
    use strata::experiment::ExperimentConfig;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("run.toml");
        let text = experiment_config(dir.path(), 32);
        std::fs::write(&config_path, &text).unwrap();
        let mut run = Run::start(&config_path);
        run.wait_for("step 5:");
        run.signal(signal);
        let (code, stderr) = run.finish();
        assert_eq!(code, Some(130), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        let steps: u64 = last
            .strip_prefix("strata: setup `lru, prefetch 2`: interrupted at step ")
            .and_then(|rest| rest.split(';').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("last line: {last}\n{stderr}"));
        assert!(last.contains("; table flushed; partial reports in "), "{last}");
        assert!(steps >= 5, "{stderr}");
        // The partial report says how far training went.
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
        let outcome = &report["setups"][0]["outcome"];
        assert_eq!((outcome["steps"].as_u64(), outcome["interrupted"].as_bool()), (Some(steps), Some(true)));
        // The table file holds the rows of exactly those steps: the same run in host
        // memory through the library, stopped after as many steps.
        let config = ExperimentConfig::parse(&config_path, &text).unwrap();
        let rows = config.rows();
        let layout = RowLayout::new(config.model.embedding_dim.single().unwrap(), &config.engine.optimizer);
        let init = RowInit::Uniform { seed: config.engine.init_seed, scale: config.engine.init_scale };
        let host_only = TableConfig::host_only(rows, config.engine.optimizer, config.engine.pooling.single().unwrap());
        let mut table = TieredTable::new(&host_only, Box::new(FlatTable::new(rows, layout, init))).unwrap();
        let mut model = Dlrm::new(&config.model, 26).unwrap();
        let source = config.data.source().train(config.data.batch_size, steps).unwrap();
        Training::new(&mut model, &mut table).run(source).unwrap();
        let want = all_rows(&mut *table.close().unwrap());
        assert!(file_rows(&dir.path().join("table.strata")) == want, "signal {signal}: the file differs from {steps} steps in memory");
    }
}

#[test]
fn a_second_sigint_exits_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("run.toml");
    // Large batches: a step lasts long enough for the second signal to land inside it.
    std::fs::write(&config_path, experiment_config(dir.path(), 4096)).unwrap();
    let mut run = Run::start(&config_path);
    run.wait_for("step 1:");
    run.signal(libc::SIGINT);
    run.wait_for("stopping after the current step");
    run.signal(libc::SIGINT);
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted again; exiting at once"), "{stderr}");
    assert!(!stderr.contains("table flushed"), "{stderr}");
}
