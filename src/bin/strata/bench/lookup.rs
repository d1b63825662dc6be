//! `strata bench lookup`: a Zipf lookup stream of synthetic Criteo-shaped batches served
//! by the tiered table, with and without read-ahead, next to the same stream served
//! entirely from host memory (the engine with every row in its host tier, and a flat
//! in-memory table).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use strata::data::{SyntheticBatches, SyntheticConfig};
use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::prefetch::Prefetcher;
use strata::engine::stats::EngineStats;
use strata::engine::storage::{BackingStore, ReadPath, TableFile};
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, Rounding, RowInit, RowLayout};
use strata_policies::PolicyConfig;

use crate::args::SyntheticArgs;

/// `strata bench lookup`'s options.
#[derive(Args)]
pub struct LookupBenchArgs {
    /// The table file; created when missing or of another shape.
    #[arg(long, default_value = "out/bench/lookup.strata")]
    file: PathBuf,
    #[command(flatten)]
    synthetic: SyntheticArgs,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Samples per batch (214 lookups each).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    #[arg(long, default_value_t = 60)]
    batches: u64,
    /// Device tier as a fraction of the rows.
    #[arg(long, default_value_t = 0.02)]
    device: f64,
    /// Host tier as a fraction of the rows.
    #[arg(long, default_value_t = 0.10)]
    host: f64,
    /// Batches read ahead in the prefetch setup.
    #[arg(long, default_value_t = 4)]
    window: usize,
    #[arg(long, default_value = "lru")]
    policy: String,
    #[arg(long, default_value = "io_uring")]
    read_path: ReadPath,
    /// Print JSON (with every engine statistic) instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// A stream of synthetic batches served from a table file: what a timed lookup run
/// needs, shared by `bench lookup` and `plan --validate`.
pub struct LookupStream {
    pub file: PathBuf,
    pub synthetic: SyntheticConfig,
    pub dim: usize,
    /// Samples per batch.
    pub batch: usize,
    /// Batches served before the timed ones.
    pub warmup: u64,
    /// Timed batches.
    pub batches: u64,
    pub read_path: ReadPath,
}

#[derive(Serialize)]
pub struct SetupResult {
    pub name: String,
    pub lookups_per_sec: f64,
    pub stall_fraction: f64,
    pub device_hit_ratio: Option<f64>,
    pub host_hit_ratio: Option<f64>,
    pub store_rows_read: u64,
    /// Lookups timed.
    pub lookups: u64,
    pub resident_mib: f64,
    pub stats: Option<EngineStats>,
}

/// The process's resident set, MiB (Linux).
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

impl LookupStream {
    fn stream(&self, count: u64) -> Result<SyntheticBatches> {
        Ok(SyntheticBatches::new(&self.synthetic, self.batch, Some(count))?)
    }

    /// Creates the table file when it is missing; an existing file must have the
    /// benchmark's shape (it is never overwritten).
    pub fn table_file(&self, rows: u64, layout: RowLayout) -> Result<()> {
        if !self.file.exists() {
            eprintln!("creating {} ({rows} rows, dim {})", self.file.display(), layout.dim);
            TableFile::create(&self.file, rows, layout, RowInit::Uniform { seed: 7, scale: 0.05 })
                .with_context(|| format!("creating {}", self.file.display()))?;
            return Ok(());
        }
        let table = TableFile::open(&self.file, ReadPath::Pread)?;
        if table.rows() != rows || table.layout() != layout {
            bail!(
                "{}: holds {} rows of dim {} with {} state values; this benchmark needs {rows} rows of dim {} with {} (pass another --file)",
                self.file.display(),
                table.rows(),
                table.layout().dim,
                table.layout().state,
                layout.dim,
                layout.state
            );
        }
        Ok(())
    }

    /// Serves warm-up then timed batches through a tiered table; returns the timed part.
    pub fn run_tiered(&self, name: &str, config: &TableConfig, window: usize, preload: bool) -> Result<SetupResult> {
        let store = TableFile::open(&self.file, self.read_path)?;
        let rows = store.rows();
        let mut table = TieredTable::new(config, Box::new(store))?;
        let dim = self.dim;
        let mut out = Vec::new();
        if preload {
            // Bring every row into the host tier first: "served entirely from memory".
            let chunk = 65_536u64;
            for first in (0..rows).step_by(chunk as usize) {
                let ids: Vec<u64> = (first..(first + chunk).min(rows)).collect();
                let batch = Batch::new(ids.clone(), (0..=ids.len()).collect(), first);
                out.resize(batch.bags() * dim, 0.0);
                table.lookup(&batch, &mut out)?;
            }
        }
        let mut prefetcher = Prefetcher::new(self.stream(self.warmup + self.batches)?, window);
        let mut served = 0;
        let mut timer = None;
        let mut baseline = EngineStats::default();
        let mut lookups = 0u64;
        while let Some(batch) = prefetcher.next(|b| table.prefetch(b))? {
            if served == self.warmup {
                baseline = table.stats();
                timer = Some(Instant::now());
            }
            out.resize(batch.bags() * dim, 0.0);
            table.lookup(&batch, &mut out)?;
            if served >= self.warmup {
                lookups += batch.ids.len() as u64;
            }
            served += 1;
        }
        let seconds = timer.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let stats = table.stats();
        let hit = |now: Option<&strata::engine::stats::TierStats>, before: Option<&strata::engine::stats::TierStats>| {
            now.map(|n| {
                let (h0, m0) = before.map_or((0, 0), |b| (b.hits, b.misses));
                let (h, m) = (n.hits - h0, n.misses - m0);
                h as f64 / (h + m).max(1) as f64
            })
        };
        Ok(SetupResult {
            name: name.to_string(),
            lookups_per_sec: lookups as f64 / seconds.max(1e-9),
            stall_fraction: (stats.stall_seconds - baseline.stall_seconds) / seconds.max(1e-9),
            device_hit_ratio: hit(stats.device.as_ref(), baseline.device.as_ref()),
            host_hit_ratio: hit(stats.host.as_ref(), baseline.host.as_ref()),
            store_rows_read: (stats.bytes_store_to_host - baseline.bytes_store_to_host) / (4 * (dim as u64 + 1)),
            lookups,
            resident_mib: resident_mib(),
            stats: Some(stats),
        })
    }

    /// The flat in-memory table: the ideal.
    fn run_flat(&self, rows: u64, layout: RowLayout) -> Result<SetupResult> {
        let mut store = TableFile::open(&self.file, ReadPath::Pread)?;
        let mut flat = FlatTable::new(rows, layout, RowInit::Zeros);
        let chunk = 65_536u64;
        let mut buf = Vec::new();
        for first in (0..rows).step_by(chunk as usize) {
            let ids: Vec<u64> = (first..(first + chunk).min(rows)).collect();
            buf.resize(ids.len() * layout.words(), 0.0);
            BackingStore::read_rows(&mut store, &ids, &mut buf)?;
            flat.write_rows(&ids, &buf)?;
        }
        let stream: Vec<Batch> = self.stream(self.warmup + self.batches)?.skip(self.warmup as usize).collect();
        let mut out = Vec::new();
        let start = Instant::now();
        let mut lookups = 0u64;
        for batch in &stream {
            out.resize(batch.bags() * self.dim, 0.0);
            flat.lookup(batch, Pooling::Sum, &mut out);
            lookups += batch.ids.len() as u64;
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(SetupResult {
            name: "flat in-memory table (ideal)".into(),
            lookups_per_sec: lookups as f64 / seconds.max(1e-9),
            stall_fraction: 0.0,
            device_hit_ratio: None,
            host_hit_ratio: None,
            store_rows_read: 0,
            lookups,
            resident_mib: resident_mib(),
            stats: None,
        })
    }
}

/// The results as a Markdown table, with ratios to the all-in-host setup.
fn markdown(stream: &LookupStream, policy: &PolicyConfig, results: &[SetupResult]) -> String {
    let rows = stream.synthetic.layout().total_rows();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{rows} rows x dim {}, batches of {} samples (214 lookups each), Zipf {:?}, policy {}, {} warm-up + {} timed batches, store {} ({})\n",
        stream.dim,
        stream.batch,
        stream.synthetic.zipf,
        policy.label(),
        stream.warmup,
        stream.batches,
        stream.file.display(),
        stream.read_path
    );
    if let Some(stats) = results.iter().filter_map(|r| r.stats.as_ref()).find(|s| s.device.is_some()) {
        let tier = |t: &Option<strata::engine::stats::TierStats>| t.as_ref().map_or("none".to_string(), |t| t.backend.clone());
        let _ = writeln!(out, "device tier: {}; host tier: {}; store: {}\n", tier(&stats.device), tier(&stats.host), stats.storage);
    }
    out.push_str("| setup | M lookups/s | vs all-in-host | stall | device hits | host hits | store rows read | RSS MiB |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let base = results.first().map_or(1.0, |r| r.lookups_per_sec);
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.0}% | {:.0}% | {} | {} | {} | {:.0} |",
            r.name,
            r.lookups_per_sec / 1e6,
            100.0 * r.lookups_per_sec / base,
            100.0 * r.stall_fraction,
            pct(r.device_hit_ratio),
            pct(r.host_hit_ratio),
            r.store_rows_read,
            r.resident_mib
        );
    }
    out
}

impl LookupBenchArgs {
    /// Runs the four set-ups and prints their table (or JSON).
    pub fn run(&self) -> Result<()> {
        let stream = LookupStream {
            file: self.file.clone(),
            synthetic: self.synthetic.config()?,
            dim: self.dim,
            batch: self.batch,
            warmup: self.warmup,
            batches: self.batches,
            read_path: self.read_path,
        };
        let policy = PolicyConfig::from_name(&self.policy)?;
        if let Some(dir) = stream.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        let results = self.setups(&stream, &policy)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        } else {
            print!("{}", markdown(&stream, &policy, &results));
        }
        Ok(())
    }

    /// All rows in the host tier, the tiers without and with read-ahead, and the flat
    /// table.
    fn setups(&self, stream: &LookupStream, policy: &PolicyConfig) -> Result<Vec<SetupResult>> {
        let optimizer = Optimizer::default();
        let layout = RowLayout::new(stream.dim, &optimizer);
        let rows = stream.synthetic.layout().total_rows();
        stream.table_file(rows, layout)?;
        let tiers = |device: usize, host: usize| TableConfig {
            device: TierConfig::rows(device, policy.clone()),
            device_backend: DeviceKind::Auto,
            host: TierConfig::rows(host, policy.clone()),
            hierarchy: Hierarchy::Inclusive,
            optimizer,
            pooling: Pooling::Sum,
            write_buffer_rows: 0, // lookups write nothing back
            rounding: Rounding::Nearest,
        };
        let device_rows = ((rows as f64 * self.device) as usize).max(1);
        let host_rows = ((rows as f64 * self.host) as usize).max(1);
        let mut results = vec![stream.run_tiered("all rows in the host tier", &tiers(0, rows as usize), 0, true)?];
        results.push(stream.run_tiered(
            &format!("device {:.0}% + host {:.0}%, no prefetch", 100.0 * self.device, 100.0 * self.host),
            &tiers(device_rows, host_rows),
            0,
            false,
        )?);
        results.push(stream.run_tiered(
            &format!("device {:.0}% + host {:.0}%, prefetch window {}", 100.0 * self.device, 100.0 * self.host, self.window),
            &tiers(device_rows, host_rows),
            self.window,
            false,
        )?);
        results.push(stream.run_flat(rows, layout)?);
        Ok(results)
    }
}
