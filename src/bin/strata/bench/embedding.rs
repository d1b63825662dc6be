//! `strata bench embedding`: the embedding part of a training step (pooled lookup plus
//! row-wise Adagrad update, all in host memory, one thread) in Strata's flat table and
//! in the tiered table with every row in its host tier, next to FBGEMM's CPU kernels
//! (`benches/fbgemm_compare.py`) on exactly the same batches, in one run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use strata::data::{SyntheticBatches, SyntheticConfig, TableLayout};
use strata::engine::batch::Batch;
use strata::engine::flat::FlatTable;
use strata::engine::pool::Pooling;
use strata::engine::table::config::TableConfig;
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, RowInit, RowLayout};

use crate::args::SyntheticArgs;

/// Where the FBGEMM driver script lives.
pub const FBGEMM_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/fbgemm_compare.py");

/// The torch venv the Makefile installs (keep in step with its TORCH_VERSION).
const TORCH_VENV: &str = ".cache/strata/venv-torch-2.11.0";

/// The gradient of every pooled output value, on both sides.
const GRAD: f32 = 0.01;

/// The Python interpreter with torch and fbgemm-gpu-cpu: `$STRATA_TORCH_PYTHON`, else
/// the Makefile's torch venv when it exists, else `python3` on the PATH.
fn python() -> PathBuf {
    let venv = std::env::var_os("HOME").map(|home| Path::new(&home).join(TORCH_VENV).join("bin/python"));
    super::python_from_env("STRATA_TORCH_PYTHON", venv)
}

/// `strata bench embedding`'s options.
#[derive(Args)]
pub struct EmbeddingBenchArgs {
    #[command(flatten)]
    synthetic: SyntheticArgs,
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
    /// Folder for the batches handed to the FBGEMM script.
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

/// What `fbgemm_compare.py` prints (the fields used here).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FbgemmResult {
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

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingReport {
    pub tables: usize,
    pub total_rows: u64,
    pub dim: usize,
    pub batch: usize,
    pub lookups_per_step: f64,
    pub distinct_rows_per_step: f64,
    pub strata: Vec<StepResult>,
    pub fbgemm: FbgemmResult,
}

/// One batch in FBGEMM's form: table-major bag offsets (`tables * batch + 1`) and
/// indices within each table. Strata's batches are sample-major (bag `s * tables + t`)
/// with global rows.
pub fn to_table_major(batch: &Batch, layout: &TableLayout, samples: usize) -> Result<(Vec<i64>, Vec<i64>)> {
    let tables = layout.tables();
    if batch.bags() != samples * tables {
        bail!("batch has {} bags, expected {samples} samples x {tables} tables", batch.bags());
    }
    let mut offsets = Vec::with_capacity(batch.bags() + 1);
    let mut indices = Vec::with_capacity(batch.ids.len());
    offsets.push(0i64);
    for (t, &rows) in layout.rows().iter().enumerate() {
        let base = layout.global_row(t, 0);
        for s in 0..samples {
            let bag = s * tables + t;
            for &id in &batch.ids[batch.bag_offsets[bag]..batch.bag_offsets[bag + 1]] {
                let local = id.checked_sub(base).filter(|&r| r < rows);
                let Some(local) = local else { bail!("row {id} of bag {bag} is outside table {t}") };
                indices.push(local as i64);
            }
            offsets.push(indices.len() as i64);
        }
    }
    Ok((offsets, indices))
}

/// Writes the batches for `fbgemm_compare.py --indices`: per batch, its offsets then
/// its indices, little-endian int64.
fn write_indices(path: &Path, batches: &[(Vec<i64>, Vec<i64>)]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (offsets, indices) in batches {
        for v in offsets.iter().chain(indices) {
            out.write_all(&v.to_le_bytes())?;
        }
    }
    out.flush().with_context(|| format!("{}", path.display()))
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
    fn optimizer() -> Optimizer {
        Optimizer::default()
    }

    /// Times `lookup` then `update` on each batch, after the warm-up steps.
    fn timed(
        &self,
        name: &str,
        batches: &[Batch],
        mut lookup: impl FnMut(&Batch) -> Result<()>,
        mut update: impl FnMut(&Batch) -> Result<()>,
    ) -> Result<StepResult> {
        for k in 0..self.warmup {
            lookup(&batches[k % batches.len()])?;
            update(&batches[k % batches.len()])?;
        }
        let (mut seconds, mut looking) = (0.0, 0.0);
        let mut lookups = 0usize;
        let cpu = process_cpu_seconds();
        for k in 0..self.iters {
            let batch = &batches[(self.warmup + k) % batches.len()];
            let start = Instant::now();
            lookup(batch)?;
            let looked = start.elapsed().as_secs_f64();
            update(batch)?;
            seconds += start.elapsed().as_secs_f64();
            looking += looked;
            lookups += batch.ids.len();
        }
        let cpu = process_cpu_seconds() - cpu;
        Ok(StepResult {
            name: name.into(),
            seconds_per_step: seconds / self.iters as f64,
            lookup_seconds_per_step: looking / self.iters as f64,
            cpu_seconds_per_step: cpu / self.iters as f64,
            lookups_per_sec: lookups as f64 / seconds,
        })
    }

    /// Runs both sides and prints their table (or JSON).
    pub fn run(&self) -> Result<()> {
        let report = self.compare(&self.synthetic.config()?, &python())?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", markdown(&report));
        }
        Ok(())
    }

    /// Times Strata's two tables and FBGEMM (through `python`) on the same batches of
    /// `synthetic`.
    fn compare(&self, synthetic: &SyntheticConfig, python: &Path) -> Result<EmbeddingReport> {
        if self.batch == 0 || self.batches == 0 || self.iters == 0 || self.dim == 0 {
            bail!("--batch, --batches, --iters and --dim must be at least 1");
        }
        let layout = synthetic.layout();
        let rows = layout.total_rows();
        let batches: Vec<Batch> = SyntheticBatches::new(synthetic, self.batch, Some(self.batches))?.collect();
        let lookups: Vec<u64> = batches.iter().map(|b| b.ids.len() as u64).collect();
        let distinct: Vec<u64> = batches.iter().map(|b| b.unique_rows().len() as u64).collect();

        // FBGEMM's copy of the batches, written first so a broken layout fails early.
        std::fs::create_dir_all(&self.dir).with_context(|| format!("{}", self.dir.display()))?;
        let file = self.dir.join("embedding-indices.bin");
        let fb: Vec<(Vec<i64>, Vec<i64>)> = batches.iter().map(|b| to_table_major(b, &layout, self.batch)).collect::<Result<_>>()?;
        write_indices(&file, &fb)?;
        drop(fb);

        let optimizer = Self::optimizer();
        let row_layout = RowLayout::new(self.dim, &optimizer);
        let init = RowInit::Uniform { seed: synthetic.seed, scale: 0.05 };
        let grads = vec![GRAD; self.batch * layout.tables() * self.dim];
        let mut out = vec![0f32; grads.len()];
        let mut strata = Vec::new();

        // Both closures use the table, one after the other.
        let flat = std::cell::RefCell::new(FlatTable::new(rows, row_layout, init));
        strata.push(self.timed(
            "strata flat table",
            &batches,
            |b| {
                flat.borrow().lookup(b, Pooling::Sum, &mut out);
                Ok(())
            },
            |b| {
                flat.borrow_mut().apply_gradients(b, &grads, &optimizer, Pooling::Sum);
                Ok(())
            },
        )?);
        drop(flat);

        let config = TableConfig::host_only(rows, optimizer, Pooling::Sum);
        let table = std::cell::RefCell::new(TieredTable::new(&config, Box::new(FlatTable::new(rows, row_layout, init)))?);
        // Every row the batches touch is in the host tier before timing.
        for b in &batches {
            table.borrow_mut().lookup(b, &mut out)?;
        }
        strata.push(self.timed(
            "strata tiered, all rows in host tier",
            &batches,
            |b| Ok(table.borrow_mut().lookup(b, &mut out)?),
            |b| Ok(table.borrow_mut().apply_gradients(b, &grads)?),
        )?);
        drop(table);

        let args: Vec<String> = vec![
            "--rows".into(),
            layout.rows().iter().map(u64::to_string).collect::<Vec<_>>().join(","),
            "--dim".into(),
            self.dim.to_string(),
            "--batch".into(),
            self.batch.to_string(),
            "--bag".into(),
            layout.multi_hot().iter().map(usize::to_string).collect::<Vec<_>>().join(","),
            "--indices".into(),
            file.display().to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--iters".into(),
            self.iters.to_string(),
            "--seed".into(),
            synthetic.seed.to_string(),
            "--threads".into(),
            "1".into(),
        ];
        let fbgemm: Result<FbgemmResult> =
            super::run_python_json(python, FBGEMM_SCRIPT, &args, "run `make bench-fbgemm` or set STRATA_TORCH_PYTHON");
        std::fs::remove_file(&file).ok();
        let fbgemm = fbgemm?;
        check_same_work(&lookups, &distinct, &fbgemm)?;

        let steps = lookups.len() as f64;
        Ok(EmbeddingReport {
            tables: layout.tables(),
            total_rows: rows,
            dim: self.dim,
            batch: self.batch,
            lookups_per_step: lookups.iter().sum::<u64>() as f64 / steps,
            distinct_rows_per_step: distinct.iter().sum::<u64>() as f64 / steps,
            strata,
            fbgemm,
        })
    }
}

/// Both sides must have looked up the same rows and updated the same distinct rows.
pub fn check_same_work(lookups: &[u64], distinct: &[u64], fbgemm: &FbgemmResult) -> Result<()> {
    if fbgemm.lookups_per_batch != lookups || fbgemm.distinct_rows_per_batch != distinct {
        bail!(
            "FBGEMM did other work: lookups {:?} vs Strata {:?}, distinct rows {:?} vs {:?}",
            fbgemm.lookups_per_batch,
            lookups,
            fbgemm.distinct_rows_per_batch,
            distinct
        );
    }
    if fbgemm.threads != 1 {
        bail!("FBGEMM ran on {} threads, not 1", fbgemm.threads);
    }
    Ok(())
}

/// The comparison as Markdown: one row per set-up, with its speed relative to FBGEMM.
fn markdown(report: &EmbeddingReport) -> String {
    let mut s = String::new();
    let versions = &report.fbgemm.versions;
    let _ = writeln!(
        s,
        "Embedding step (pooled SUM lookup + row-wise Adagrad), host memory, 1 thread: {} tables, {} rows, dim {}, batch {}, {:.0} lookups and {:.0} distinct rows per step; torch {}, fbgemm_gpu {}\n",
        report.tables,
        report.total_rows,
        report.dim,
        report.batch,
        report.lookups_per_step,
        report.distinct_rows_per_step,
        versions["torch"].as_str().unwrap_or("?"),
        versions["fbgemm_gpu"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(s, "| set-up | ms/step | lookup ms | update ms | M lookups/s | vs FBGEMM | CPU ms/step | vs FBGEMM (CPU) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let fb = &report.fbgemm;
    let row = |s: &mut String, name: &str, step: f64, lookup: f64, rate: f64, cpu: f64| {
        let _ = writeln!(
            s,
            "| {name} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2}x | {:.1} | {:.2}x |",
            step * 1e3,
            lookup * 1e3,
            (step - lookup) * 1e3,
            rate / 1e6,
            rate / fb.lookups_per_sec,
            cpu * 1e3,
            fb.cpu_seconds_per_step / cpu
        );
    };
    let name = "FBGEMM SplitTableBatchedEmbeddingBagsCodegen (CPU)";
    row(&mut s, name, fb.seconds_per_step, fb.forward_seconds_per_step, fb.lookups_per_sec, fb.cpu_seconds_per_step);
    for r in &report.strata {
        row(&mut s, &r.name, r.seconds_per_step, r.lookup_seconds_per_step, r.lookups_per_sec, r.cpu_seconds_per_step);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_major_keeps_every_lookup_in_its_table() {
        // Two tables of 3 and 5 rows, bags of 2 and 1, two samples (sample-major).
        let layout = TableLayout::new(vec![3, 5], vec![2, 1]);
        let batch = Batch::new(vec![0, 2, 3 + 4, 1, 1, 3], vec![0, 2, 3, 5, 6], 0);
        let (offsets, indices) = to_table_major(&batch, &layout, 2).unwrap();
        assert_eq!(offsets, vec![0, 2, 4, 5, 6]);
        assert_eq!(indices, vec![0, 2, 1, 1, 4, 0]);
    }

    #[test]
    fn table_major_rejects_rows_of_another_table() {
        let layout = TableLayout::new(vec![3, 5], vec![1, 1]);
        // Bag 0 (table 0) holds global row 4, which is table 1's.
        let batch = Batch::new(vec![4, 3], vec![0, 1, 2], 0);
        assert!(to_table_major(&batch, &layout, 1).is_err());
        assert!(to_table_major(&batch, &layout, 2).is_err());
    }

    #[test]
    fn script_output_parses_and_must_match_the_work() {
        let json = r#"{"impl": "x", "threads": 1, "lookups_per_batch": [6, 6], "distinct_rows_per_batch": [4, 5],
            "seconds_per_step": 0.5, "forward_seconds_per_step": 0.2, "cpu_seconds_per_step": 0.4, "lookups_per_sec": 12.0, "versions": {"torch": "2.11.0", "fbgemm_gpu": "1.6.0"}}"#;
        let r: FbgemmResult = serde_json::from_str(json).unwrap();
        assert_eq!(r.lookups_per_sec, 12.0);
        assert_eq!(r.versions["fbgemm_gpu"], "1.6.0");
        assert!(check_same_work(&[6, 6], &[4, 5], &r).is_ok());
        assert!(check_same_work(&[6, 6], &[4, 4], &r).is_err());
        assert!(check_same_work(&[6], &[4], &r).is_err());
    }
}
