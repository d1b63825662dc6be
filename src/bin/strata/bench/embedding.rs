//! `strata bench embedding`: the embedding part of a training step (pooled lookup plus
//! row-wise Adagrad update, all in host memory, one thread) in Strata's engine (its flat
//! table, the tiered table with every row in its host tier, and the table collection
//! behind `strata.torch`, called from Rust) and in `strata.torch` from Python, next to
//! FBGEMM's CPU kernels, all through `benches/embedding_step.py` on exactly the same
//! batches, in one run. The tables are the MLPerf layout (`--scale`, `--dim`) or a
//! `--tables` file of tables of their own rows, dims, pooling and weights.

mod tables;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use strata::data::SyntheticBatches;
use strata::engine::batch::Batch;
use strata::engine::collection::{CollectionConfig, EmbeddingTableConfig, FeatureGrads, TableCollection};
use strata::engine::flat::FlatTable;
use strata::engine::storage::ReadPath;
use strata::engine::table::config::TableConfig;
use strata::engine::table::TieredTable;
use strata::engine::{Dtype, Optimizer, Rounding, RowInit, RowLayout};
use strata_policies::PolicyConfig;
use tables::{BenchTable, TableBags};

use crate::args::SyntheticArgs;

/// Where the PyTorch-side driver script lives.
pub const STEP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/embedding_step.py");

/// The torch venv the Makefile installs (keep in step with its TORCH_VERSION).
const TORCH_VENV: &str = ".cache/strata/venv-torch-2.11.0";

/// The gradient of every pooled output value, on every side.
const GRAD: f32 = 0.01;

/// The Python interpreter with torch, fbgemm-gpu-cpu and strata: `$STRATA_TORCH_PYTHON`,
/// else the Makefile's torch venv when it exists, else `python3` on the PATH.
fn python() -> PathBuf {
    let venv = std::env::var_os("HOME").map(|home| Path::new(&home).join(TORCH_VENV).join("bin/python"));
    super::python_from_env("STRATA_TORCH_PYTHON", venv)
}

/// `strata bench embedding`'s options.
#[derive(Args)]
pub struct EmbeddingBenchArgs {
    #[command(flatten)]
    synthetic: SyntheticArgs,
    /// Tables of their own shapes instead of the MLPerf layout: a TOML file of
    /// `[[table]]`s (name, rows, dim, bag; optional pooling, weighted, count), as
    /// configs/bench-tbe.toml. `--zipf` (one exponent) and `--seed` still apply.
    #[arg(long)]
    tables: Option<PathBuf>,
    /// Every table's dim, with the MLPerf layout.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Samples per step (214 lookups each with the MLPerf multi-hot sizes).
    #[arg(long, default_value_t = 2048)]
    batch: usize,
    /// Distinct batches, cycled through the timed steps.
    #[arg(long, default_value_t = 4)]
    batches: u64,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Folder for the batches handed to the Python driver.
    #[arg(long, default_value = "out/bench")]
    dir: PathBuf,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// One timed set-up.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub name: String,
    pub seconds_per_step: f64,
    /// The pooled lookup's share of a step (the rest is the update).
    pub lookup_seconds_per_step: f64,
    /// CPU seconds of the whole process per step (every thread): less disturbed than
    /// wall time when other work shares the machine.
    pub cpu_seconds_per_step: f64,
    pub lookups_per_sec: f64,
}

/// What `embedding_step.py` prints (the fields used here), for either module.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ScriptResult {
    #[serde(rename = "impl")]
    pub name: String,
    pub threads: usize,
    pub lookups_per_batch: Vec<u64>,
    pub distinct_rows_per_batch: Vec<u64>,
    pub seconds_per_step: f64,
    /// The forward (pooled lookup) share of a step; the backward holds the update.
    pub forward_seconds_per_step: f64,
    /// CPU seconds of the whole Python process per step.
    pub cpu_seconds_per_step: f64,
    pub lookups_per_sec: f64,
    pub versions: serde_json::Value,
}

impl ScriptResult {
    fn step(&self) -> StepResult {
        StepResult {
            name: self.name.clone(),
            seconds_per_step: self.seconds_per_step,
            lookup_seconds_per_step: self.forward_seconds_per_step,
            cpu_seconds_per_step: self.cpu_seconds_per_step,
            lookups_per_sec: self.lookups_per_sec,
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingReport {
    pub tables: Vec<BenchTable>,
    pub batch: usize,
    pub lookups_per_step: f64,
    pub distinct_rows_per_step: f64,
    /// Strata's engine called from Rust: the flat and tiered single tables (when every
    /// table has one dim and pooling and none is weighted), then the collection.
    pub strata: Vec<StepResult>,
    /// `strata.torch` from Python, over the same collection.
    pub python: ScriptResult,
    pub fbgemm: ScriptResult,
}

impl EmbeddingReport {
    /// What the Python boundary costs: `strata.torch`'s step against the same
    /// collection's step called from Rust, as a fraction (0.05 = 5% slower).
    pub fn python_overhead(&self) -> f64 {
        let rust = self.strata.last().map_or(f64::NAN, |r| r.seconds_per_step);
        self.python.seconds_per_step / rust - 1.0
    }
}

/// CPU seconds this process has run, all threads together.
fn process_cpu_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; the clock exists on every Linux.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } == 0;
    if ok {
        now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
    } else {
        f64::NAN
    }
}

impl EmbeddingBenchArgs {
    /// Times `lookup` then `update` on each batch (index), after every batch has been
    /// stepped through once and the warm-up steps.
    fn timed(
        &self,
        name: &str,
        lookups: &[u64],
        mut lookup: impl FnMut(usize) -> Result<()>,
        mut update: impl FnMut(usize) -> Result<()>,
    ) -> Result<StepResult> {
        let first = self.warmup.max(lookups.len());
        for k in 0..first {
            lookup(k % lookups.len())?;
            update(k % lookups.len())?;
        }
        let (mut seconds, mut looking) = (0.0, 0.0);
        let mut done = 0u64;
        let cpu = process_cpu_seconds();
        for k in 0..self.iters {
            let b = (first + k) % lookups.len();
            let start = Instant::now();
            lookup(b)?;
            let looked = start.elapsed().as_secs_f64();
            update(b)?;
            seconds += start.elapsed().as_secs_f64();
            looking += looked;
            done += lookups[b];
        }
        let cpu = process_cpu_seconds() - cpu;
        Ok(StepResult {
            name: name.into(),
            seconds_per_step: seconds / self.iters as f64,
            lookup_seconds_per_step: looking / self.iters as f64,
            cpu_seconds_per_step: cpu / self.iters as f64,
            lookups_per_sec: done as f64 / seconds,
        })
    }

    /// Runs every side and prints their table (or JSON).
    pub fn run(&self) -> Result<()> {
        let report = self.compare(&python())?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", markdown(&report));
        }
        Ok(())
    }

    /// The benchmark's tables.
    fn tables(&self) -> Result<Vec<BenchTable>> {
        match &self.tables {
            Some(path) => tables::read_tables(path),
            None => Ok(tables::layout_tables(&self.synthetic.config()?.layout(), self.dim)),
        }
    }

    /// Times Strata's engine from Rust, `strata.torch` and FBGEMM (both through `python`)
    /// on the same batches.
    fn compare(&self, python: &Path) -> Result<EmbeddingReport> {
        if self.batch == 0 || self.batches == 0 || self.iters == 0 || self.dim == 0 {
            bail!("--batch, --batches, --iters and --dim must be at least 1");
        }
        let tables = self.tables()?;
        let pooling = tables[0].pooling;
        if tables.iter().any(|t| t.pooling != pooling) {
            bail!("FBGEMM's TBE pools every table alike: give every table the same pooling");
        }
        let synthetic = self.synthetic.config()?;
        let layout = tables::layout_of(&tables);
        let generated = SyntheticBatches::with_layout(&synthetic, layout.clone(), self.batch, Some(self.batches))?;
        let batches: Vec<Batch> = generated.collect();
        let split: Vec<Vec<TableBags>> = (0..batches.len())
            .map(|k| tables::split_by_table(&batches[k], &tables, &layout, self.batch, synthetic.seed, k as u64))
            .collect::<Result<_>>()?;
        let lookups: Vec<u64> = batches.iter().map(|b| b.ids.len() as u64).collect();
        let distinct: Vec<u64> = batches.iter().map(|b| b.unique_rows().len() as u64).collect();

        // The Python side's copy of the batches, written first so a broken layout fails
        // early.
        std::fs::create_dir_all(&self.dir).with_context(|| format!("{}", self.dir.display()))?;
        let indices = self.dir.join("embedding-indices.bin");
        let weighted = tables.iter().any(|t| t.weighted);
        let weights = weighted.then(|| self.dir.join("embedding-weights.bin"));
        tables::write_batches(&indices, weights.as_deref(), &split)?;

        let optimizer = Optimizer::default();
        let mut strata = Vec::new();
        if tables.iter().all(|t| t.dim == tables[0].dim) && !weighted {
            strata.extend(self.single_tables(&batches, &lookups, &tables, synthetic.seed, &optimizer)?);
        }
        strata.push(self.collection(&tables, &split, &lookups, synthetic.seed, &optimizer)?);

        let list = |f: &dyn Fn(&BenchTable) -> String| tables.iter().map(f).collect::<Vec<_>>().join(",");
        let mut args: Vec<String> = vec![
            "--rows".into(),
            list(&|t| t.rows.to_string()),
            "--dim".into(),
            list(&|t| t.dim.to_string()),
            "--pooling".into(),
            list(&|t| t.pooling.name().into()),
            "--weighted".into(),
            list(&|t| u8::from(t.weighted).to_string()),
            "--batch".into(),
            self.batch.to_string(),
            "--bag".into(),
            list(&|t| t.bag.to_string()),
            "--indices".into(),
            indices.display().to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--iters".into(),
            self.iters.to_string(),
            "--seed".into(),
            synthetic.seed.to_string(),
            "--threads".into(),
            "1".into(),
        ];
        if let Some(w) = &weights {
            args.extend(["--weights".into(), w.display().to_string()]);
        }
        let script = |module: &str| -> Result<ScriptResult> {
            let mut all = vec!["--impl".to_string(), module.into()];
            all.extend(args.iter().cloned());
            let result: ScriptResult =
                super::run_python_json(python, STEP_SCRIPT, &all, "run `make bench-fbgemm` or set STRATA_TORCH_PYTHON")?;
            check_same_work(&lookups, &distinct, &result)?;
            Ok(result)
        };
        let results = script("fbgemm").and_then(|fbgemm| Ok((fbgemm, script("strata")?)));
        std::fs::remove_file(&indices).ok();
        if let Some(w) = &weights {
            std::fs::remove_file(w).ok();
        }
        let (fbgemm, python) = results?;

        let steps = lookups.len() as f64;
        Ok(EmbeddingReport {
            tables,
            batch: self.batch,
            lookups_per_step: lookups.iter().sum::<u64>() as f64 / steps,
            distinct_rows_per_step: distinct.iter().sum::<u64>() as f64 / steps,
            strata,
            python,
            fbgemm,
        })
    }

    /// Strata's flat table and its tiered table with every row in the host tier, each
    /// one table over every table's rows (global ids, sample-major bags), for `tables`
    /// of one dim and pooling.
    fn single_tables(
        &self,
        batches: &[Batch],
        lookups: &[u64],
        tables: &[BenchTable],
        seed: u64,
        optimizer: &Optimizer,
    ) -> Result<Vec<StepResult>> {
        let (rows, dim, pooling) = (tables.iter().map(|t| t.rows).sum(), tables[0].dim, tables[0].pooling);
        let row_layout = RowLayout::new(dim, optimizer);
        let init = RowInit::Uniform { seed, scale: 0.05 };
        let grads = vec![GRAD; batches[0].bags() * dim];
        let mut out = vec![0f32; grads.len()];
        let mut results = Vec::new();

        // Both closures use the table, one after the other.
        let flat = RefCell::new(FlatTable::new(rows, row_layout, init));
        results.push(self.timed(
            "strata flat table (Rust)",
            lookups,
            |b| {
                flat.borrow_mut().lookup(&batches[b], pooling, &mut out);
                Ok(())
            },
            |b| {
                flat.borrow_mut().apply_gradients(&batches[b], &grads, optimizer, pooling);
                Ok(())
            },
        )?);
        drop(flat);

        let config = TableConfig::host_only(rows, *optimizer, pooling);
        let table = RefCell::new(TieredTable::new(&config, Box::new(FlatTable::new(rows, row_layout, init)))?);
        results.push(self.timed(
            "strata tiered, all rows in host tier (Rust)",
            lookups,
            |b| Ok(table.borrow_mut().lookup(&batches[b], &mut out)?),
            |b| Ok(table.borrow_mut().apply_gradients(&batches[b], &grads)?),
        )?);
        Ok(results)
    }

    /// The collection behind `strata.torch` (one tiered table per group of tables of one
    /// dim and pooling, every row in its host tier, in-memory stores), called from Rust as
    /// the Python module calls it.
    fn collection(
        &self,
        tables: &[BenchTable],
        split: &[Vec<TableBags>],
        lookups: &[u64],
        seed: u64,
        optimizer: &Optimizer,
    ) -> Result<StepResult> {
        let config = CollectionConfig {
            tables: tables
                .iter()
                .enumerate()
                .map(|(t, b)| EmbeddingTableConfig {
                    name: b.name.clone(),
                    rows: b.rows,
                    dim: b.dim,
                    pooling: b.pooling,
                    features: vec![format!("f{t}")],
                    init_scale: 0.05,
                    dtype: Dtype::F32,
                })
                .collect(),
            device: 0.0,
            host: 1.0,
            device_policy: PolicyConfig::Lru,
            host_policy: PolicyConfig::Lru,
            hierarchy: Default::default(),
            device_backend: Default::default(),
            optimizer: *optimizer,
            seed,
            table_dir: None,
            read_path: ReadPath::IoUring,
            write_buffer: 0.0,
            rounding: Rounding::Nearest,
        };
        let collection = TableCollection::new(&config)?;
        // An output buffer per table group (each of its tables has one feature of `batch`
        // bags), a gradient buffer per feature, as strata.torch hands them over.
        let mut outs: Vec<Vec<f32>> = collection.groups().map(|g| vec![0.0; g.tables.len() * self.batch * g.dim]).collect();
        let grads: Vec<Vec<f32>> = tables.iter().map(|t| vec![GRAD; self.batch * t.dim]).collect();
        let collection = RefCell::new(collection);
        self.timed(
            "strata collection, all rows in host tier (Rust, the engine behind strata.torch)",
            lookups,
            |b| {
                let features: Vec<_> = split[b].iter().map(TableBags::features).collect();
                let mut outs: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
                Ok(collection.borrow_mut().lookup(&features, &mut outs, true)?)
            },
            |_| {
                let grads: Vec<_> = grads.iter().zip(tables).map(|(g, t)| FeatureGrads { values: g, stride: t.dim }).collect();
                Ok(collection.borrow_mut().apply_gradients(&grads)?)
            },
        )
    }
}

/// Every side must have looked up the same rows and updated the same distinct rows.
pub fn check_same_work(lookups: &[u64], distinct: &[u64], result: &ScriptResult) -> Result<()> {
    if result.lookups_per_batch != lookups || result.distinct_rows_per_batch != distinct {
        bail!(
            "{} did other work: lookups {:?} vs Strata {:?}, distinct rows {:?} vs {:?}",
            result.name,
            result.lookups_per_batch,
            lookups,
            result.distinct_rows_per_batch,
            distinct
        );
    }
    if result.threads != 1 {
        bail!("{} ran on {} threads, not 1", result.name, result.threads);
    }
    Ok(())
}

/// The tables in a few words: runs of equal shapes counted.
fn describe(tables: &[BenchTable]) -> String {
    let shape = |t: &BenchTable| {
        let weighted = if t.weighted { ", weighted" } else { "" };
        format!("{} rows x dim {}, {} per bag, {}{weighted}", t.rows, t.dim, t.bag, t.pooling.name())
    };
    let mut runs: Vec<(String, usize)> = Vec::new();
    for t in tables {
        match runs.last_mut() {
            Some((s, n)) if *s == shape(t) => *n += 1,
            _ => runs.push((shape(t), 1)),
        }
    }
    if runs.len() > 4 {
        let rows: u64 = tables.iter().map(|t| t.rows).sum();
        return format!(
            "{} tables, {rows} rows, dims {:?}",
            tables.len(),
            tables.iter().map(|t| t.dim).collect::<std::collections::BTreeSet<_>>()
        );
    }
    runs.iter().map(|(s, n)| format!("{n} x ({s})")).collect::<Vec<_>>().join(" + ")
}

/// The comparison as Markdown: one row per set-up, with its speed relative to FBGEMM,
/// and the Python boundary's cost.
fn markdown(report: &EmbeddingReport) -> String {
    let mut s = String::new();
    let versions = &report.fbgemm.versions;
    let _ = writeln!(
        s,
        "Embedding step (pooled lookup + row-wise Adagrad), host memory, 1 thread: {}; batch {}, {:.0} lookups and {:.0} distinct rows per step; torch {}, fbgemm_gpu {}, strata {}\n",
        describe(&report.tables),
        report.batch,
        report.lookups_per_step,
        report.distinct_rows_per_step,
        versions["torch"].as_str().unwrap_or("?"),
        versions["fbgemm_gpu"].as_str().unwrap_or("?"),
        report.python.versions["strata"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(s, "| set-up | ms/step | lookup ms | update ms | M lookups/s | vs FBGEMM | CPU ms/step | vs FBGEMM (CPU) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let fb = &report.fbgemm;
    let row = |s: &mut String, r: &StepResult| {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2}x | {:.1} | {:.2}x |",
            r.name,
            r.seconds_per_step * 1e3,
            r.lookup_seconds_per_step * 1e3,
            (r.seconds_per_step - r.lookup_seconds_per_step) * 1e3,
            r.lookups_per_sec / 1e6,
            r.lookups_per_sec / fb.lookups_per_sec,
            r.cpu_seconds_per_step * 1e3,
            fb.cpu_seconds_per_step / r.cpu_seconds_per_step
        );
    };
    row(&mut s, &fb.step());
    for r in &report.strata {
        row(&mut s, r);
    }
    row(&mut s, &report.python.step());
    let _ = writeln!(
        s,
        "\nThe Python boundary: strata.torch's step {:+.1}% against the same collection called from Rust.",
        report.python_overhead() * 100.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::engine::pool::Pooling;

    #[test]
    fn script_output_parses_and_must_match_the_work() {
        let json = r#"{"impl": "x", "threads": 1, "lookups_per_batch": [6, 6], "distinct_rows_per_batch": [4, 5],
            "seconds_per_step": 0.5, "forward_seconds_per_step": 0.2, "cpu_seconds_per_step": 0.4, "lookups_per_sec": 12.0, "versions": {"torch": "2.11.0", "fbgemm_gpu": "1.6.0"}}"#;
        let r: ScriptResult = serde_json::from_str(json).unwrap();
        assert_eq!(r.lookups_per_sec, 12.0);
        assert_eq!(r.versions["fbgemm_gpu"], "1.6.0");
        assert!(check_same_work(&[6, 6], &[4, 5], &r).is_ok());
        assert!(check_same_work(&[6, 6], &[4, 4], &r).is_err());
        assert!(check_same_work(&[6], &[4], &r).is_err());
    }

    #[test]
    fn tables_are_described_by_runs_of_one_shape() {
        let t = |rows, dim| BenchTable { name: "t".into(), rows, dim, pooling: Pooling::Sum, bag: 8, weighted: false, count: 1 };
        assert_eq!(
            describe(&[t(200, 128), t(200, 128), t(50, 16)]),
            "2 x (200 rows x dim 128, 8 per bag, sum) + 1 x (50 rows x dim 16, 8 per bag, sum)"
        );
    }
}
