//! Writing files from nothing: a synthetic trace (`gen-trace`), training data files from
//! the synthetic stream (`gen-data`), and a storage-tier table file (`init-table`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use strata::data::{write_synthetic, FileFormat};
use strata::engine::storage::TableFile;
use strata::engine::{Optimizer, RowInit, RowLayout};
use strata::sim::write_oracle_general;
use strata::trace::{KeySource, TextWriter, TraceFormat, CHUNK};

use crate::args::SyntheticArgs;

#[derive(Args)]
pub struct GenTraceArgs {
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// txt or oracle-general (default: guessed from the file name).
    #[arg(long)]
    format: Option<TraceFormat>,
    /// Requests (lookups) to write.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    #[command(flatten)]
    synthetic: SyntheticArgs,
}

#[derive(Args)]
pub struct GenDataArgs {
    /// `tsv` (day_{i}.tsv; needs --one-hot) or `numpy` (day_{i}_dense.npy,
    /// day_{i}_labels.npy, and day_{i}_sparse.npy or, multi-hot, day_{i}_sparse_multi_hot.npz).
    #[arg(long, value_parser = ["tsv", "numpy"])]
    format: String,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Samples in each day's files.
    #[arg(long)]
    samples: u64,
    /// Days; the stream runs on from one day into the next.
    #[arg(long, default_value_t = 1)]
    days: u32,
    #[command(flatten)]
    synthetic: SyntheticArgs,
}

#[derive(Args)]
pub struct InitTableArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    rows: u64,
    #[arg(long)]
    dim: usize,
    /// Decides the optimizer state stored with each row.
    #[arg(long, default_value = "rowwise-adagrad", value_parser = ["rowwise-adagrad", "sgd"])]
    optimizer: String,
    #[arg(long, default_value = "uniform", value_parser = ["zeros", "uniform"])]
    init: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Uniform init range: values in [-scale, scale).
    #[arg(long, default_value_t = 0.01)]
    scale: f32,
    /// Replace an existing file (which may hold trained rows).
    #[arg(long)]
    force: bool,
}

pub fn gen_trace(args: GenTraceArgs) -> Result<()> {
    let format = args.format.unwrap_or_else(|| TraceFormat::from_path(&args.out));
    let mut source = args.synthetic.trace(args.requests)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    match format {
        TraceFormat::OracleGeneral => {
            write_oracle_general(&mut source, &args.out)?;
        }
        TraceFormat::Txt => {
            let mut writer = TextWriter::create(&args.out)?;
            let mut chunk = Vec::with_capacity(CHUNK);
            loop {
                source.next_chunk(&mut chunk, CHUNK)?;
                if chunk.is_empty() {
                    break;
                }
                for r in &chunk {
                    writer.write(r.key)?;
                }
            }
            writer.finish()?;
        }
        TraceFormat::CriteoTsv => bail!("gen-trace writes txt or oracle-general traces, not criteo-tsv"),
    }
    eprintln!("wrote {} requests to {} ({format})", args.requests, args.out.display());
    Ok(())
}

pub fn gen_data(args: GenDataArgs) -> Result<()> {
    let config = args.synthetic.config()?;
    let format = if args.format == "tsv" { FileFormat::CriteoTsv } else { FileFormat::MlperfNumpy };
    let files = write_synthetic(&config, format, &args.out, args.days, args.samples)?;
    eprintln!("wrote {} days of {} samples to {} ({} files)", args.days, args.samples, args.out.display(), files.len());
    Ok(())
}

pub fn init_table(args: InitTableArgs) -> Result<()> {
    let InitTableArgs { out, rows, dim, optimizer, init, seed, scale, force } = args;
    if out.exists() && !force {
        bail!("{}: already exists; pass --force to replace it", out.display());
    }
    let optimizer = match optimizer.as_str() {
        "sgd" => Optimizer::Sgd { lr: 0.01 },
        _ => Optimizer::default(),
    };
    let init = match init.as_str() {
        "zeros" => RowInit::Zeros,
        _ => RowInit::Uniform { seed, scale },
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let table = TableFile::create(&out, rows, RowLayout::new(dim, &optimizer), init)?;
    let header = table.header();
    eprintln!(
        "wrote {rows} rows (dim {dim}, {} state floats) in {} pages of {} bytes to {} ({} bytes)",
        header.layout.state,
        header.pages(),
        header.page_size,
        out.display(),
        header.file_len()
    );
    Ok(())
}
