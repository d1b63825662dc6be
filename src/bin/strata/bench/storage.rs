//! `strata bench storage`: random single-row reads per second through each read path of
//! a table file, next to fio's 4 KiB O_DIRECT io_uring random reads on the same file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use strata::engine::storage::format::Header;
use strata::engine::storage::{ReadConfig, ReadPath, TableFile};
use strata::engine::{RowInit, RowLayout};

use super::probe::random_row_reads;

/// `strata bench storage`'s options.
#[derive(Args)]
pub struct StorageBenchArgs {
    /// The table file; created when missing.
    #[arg(long)]
    file: PathBuf,
    /// Rows when creating (default: 4 GiB of dim-128 rows).
    #[arg(long, default_value_t = 7 << 20)]
    rows: u64,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Random rows read per read path.
    #[arg(long, default_value_t = 200_000)]
    reads: u64,
    /// io_uring queue depth and fio iodepth.
    #[arg(long, default_value_t = 32)]
    depth: u32,
    /// Rows per read_rows call.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 10)]
    fio_seconds: u32,
}

struct Measured {
    label: String,
    io: String,
    reads: u64,
    seconds: f64,
}

impl StorageBenchArgs {
    /// Runs every read path and fio; returns the Markdown report.
    pub fn run(&self) -> Result<String> {
        if !self.file.exists() {
            if let Some(dir) = self.file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            }
            let layout = RowLayout::f32(self.dim, 1);
            let bytes = Header::new(self.rows, layout).map_or(0, |header| header.file_len());
            eprintln!(
                "creating {} ({} rows of dim {}, {:.2} GiB)",
                self.file.display(),
                self.rows,
                self.dim,
                bytes as f64 / (1u64 << 30) as f64
            );
            let started = Instant::now();
            TableFile::create(&self.file, self.rows, layout, RowInit::Uniform { seed: 1, scale: 0.01 })?;
            eprintln!("created in {:.1} s", started.elapsed().as_secs_f64());
        }
        let default_threads = ReadConfig::default().pread_threads;
        let mut runs = vec![(ReadPath::IoUring, default_threads), (ReadPath::Mmap, default_threads), (ReadPath::Pread, default_threads)];
        if self.depth as usize != default_threads {
            runs.push((ReadPath::Pread, self.depth as usize));
        }
        let mut measured = Vec::new();
        for (read_path, pread_threads) in runs {
            let config = ReadConfig { read_path, queue_depth: self.depth, pread_threads, ..ReadConfig::default() };
            measured.push(self.measure(config)?);
        }
        let fio = run_fio(&self.file, self.depth, self.fio_seconds);
        let table = TableFile::open(&self.file, ReadPath::Pread)?;
        Ok(self.markdown(&table, &measured, fio))
    }

    fn measure(&self, config: ReadConfig) -> Result<Measured> {
        let mut table = TableFile::open_with(&self.file, config)?;
        let seconds = random_row_reads(&mut table, self.reads, self.batch, 42)?;
        let (label, io) = match table.read_path() {
            ReadPath::IoUring => (
                format!("io_uring, depth {}", config.queue_depth),
                format!(
                    "{}, {} buffers",
                    if table.direct_io() { "O_DIRECT" } else { "buffered" },
                    if table.registered_buffers() { "registered" } else { "plain" }
                ),
            ),
            ReadPath::Mmap => ("mmap (MADV_RANDOM), 1 thread".to_string(), "page cache".to_string()),
            ReadPath::Pread => (
                format!("pread pool, {} threads", config.pread_threads),
                (if table.direct_io() { "O_DIRECT" } else { "buffered" }).to_string(),
            ),
        };
        let label = if table.read_path() == config.read_path { label } else { format!("{label} (asked for {})", config.read_path) };
        eprintln!("{label}: {:.0} reads/s", self.reads as f64 / seconds);
        Ok(Measured { label, io, reads: self.reads, seconds })
    }

    fn markdown(&self, table: &TableFile, measured: &[Measured], fio: Result<f64>) -> String {
        let size = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut s = format!(
            "File: {} ({:.2} GiB, {} rows of dim {} + {} state floats, {}-byte pages); random single-row reads, {} rows per read_rows call; page cache dropped before each path.\n\n",
            self.file.display(),
            size as f64 / (1u64 << 30) as f64,
            table.rows(),
            table.layout().dim,
            table.layout().state,
            table.header().page_size,
            self.batch
        );
        s += "| read path | I/O | reads | seconds | reads/s | vs fio |\n|---|---|---:|---:|---:|---:|\n";
        let fio_iops = fio.as_ref().ok().copied();
        for m in measured {
            let rate = m.reads as f64 / m.seconds;
            let ratio = fio_iops.map_or("n/a".to_string(), |f| format!("{:.0}%", 100.0 * rate / f));
            s += &format!("| {} | {} | {} | {:.2} | {:.0} | {} |\n", m.label, m.io, m.reads, m.seconds, rate, ratio);
        }
        match fio {
            Ok(iops) => {
                s += &format!(
                    "| fio randread, io_uring, iodepth {} | O_DIRECT, 4 KiB | {:.0} | {} | {:.0} | 100% |\n",
                    self.depth,
                    iops * self.fio_seconds as f64,
                    self.fio_seconds,
                    iops
                )
            }
            Err(e) => s += &format!("\nfio did not run: {e:#}\n"),
        }
        s
    }
}

/// fio's read IOPS for 4 KiB O_DIRECT random reads through io_uring at `depth`.
fn run_fio(file: &std::path::Path, depth: u32, seconds: u32) -> Result<f64> {
    let output = Command::new("fio")
        .args(["--name=randread", &format!("--filename={}", file.display()), "--rw=randread", "--bs=4k", "--direct=1"])
        .args(["--ioengine=io_uring", &format!("--iodepth={depth}"), &format!("--runtime={seconds}")])
        .args(["--time_based", "--output-format=json"])
        .output()
        .context("running fio (install it with `apt-get install -y fio`, as benches/storage_vs_fio.sh does)")?;
    if !output.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout.find('{').map(|at| &stdout[at..]).context("fio printed no JSON")?;
    let report: serde_json::Value = serde_json::from_str(json).context("parsing fio's JSON")?;
    report["jobs"][0]["read"]["iops"].as_f64().context("fio's JSON has no jobs[0].read.iops")
}
