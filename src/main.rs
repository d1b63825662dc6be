//! The `strata` command line: the policy lab (`simulate`, `gen-trace`, `run`), training
//! data files from the synthetic stream (`gen-data`), capacity planning (`plan`), the
//! side-by-side benchmarks (`bench`) and the hardware profile of this machine
//! (`calibrate`).

mod bench;
mod calibrate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use strata::data::{write_synthetic, DriftConfig, FileFormat, SyntheticConfig, SyntheticTrace};
use strata::engine::storage::ReadPath;
use strata::engine::storage::TableFile;
use strata::engine::{Optimizer, RowInit, RowLayout};
use strata::lab::{self, LabConfig};
use strata::sim::{parse_capacities, write_oracle_general, Capacity, Simulation};
use strata::trace::{KeySource, TextWriter, TraceFormat, CHUNK};
use strata::{data::TableLayout, report};
use strata_policies::{AdmissionConfig, PolicyConfig};

#[derive(Parser)]
#[command(name = "strata", version, about = "Tiered-memory embedding engine and cache-policy lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a trace through cache policies at several capacities.
    Simulate(SimulateArgs),
    /// Write a synthetic Criteo-shaped trace (text or oracleGeneral).
    GenTrace(GenTraceArgs),
    /// Write the synthetic stream as training data files: Criteo TSV or the MLPerf
    /// NumPy layout, one set of files per day.
    GenData(GenDataArgs),
    /// Run the job described by a config file (a training experiment or the policy
    /// lab), or resume an interrupted training experiment.
    Run {
        /// The TOML config, e.g. configs/default.toml (training) or configs/policy-lab.toml.
        #[arg(required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// Output folder (default: the config's `output.dir`).
        #[arg(long, conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Resume the training experiment whose output folder is DIR, with the config
        /// saved there: from the latest committed checkpoint of the set-up it was in.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        resume: Option<PathBuf>,
    },
    /// Plan tier capacities: the cheapest device/host sizes and policies that meet a
    /// throughput target, and the Pareto front of cost against throughput.
    Plan {
        /// The plan config, e.g. configs/plan.toml.
        config: PathBuf,
        /// Output folder (default: the config's `output.dir`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also run the engine on a few of the planned configurations and print
        /// predicted against measured hit ratios and throughput.
        #[arg(long)]
        validate: bool,
    },
    /// Benchmarks run side by side with a peer.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Measure this machine's tiers (host memory, device, storage, host-to-device link)
    /// with the benchmarks' probes and write them as a hardware profile.
    Calibrate {
        /// The profile file to write.
        #[arg(long, default_value = "out/calibrate/profile.toml")]
        out: PathBuf,
        /// Folder for the scratch table file (created and removed when missing): put it
        /// on the drive the storage tier will use.
        #[arg(long, default_value = "out/calibrate/scratch")]
        dir: PathBuf,
        /// Row width (floats) of the gathered and read rows.
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Device tier to measure: auto (CUDA when present, else emulated), cuda or emulated.
        #[arg(long, default_value = "auto")]
        device: strata::engine::device::DeviceKind,
        /// Run each probe briefly on small buffers and files (rough figures).
        #[arg(long)]
        quick: bool,
    },
    /// Create a storage-tier table file, streaming it to disk in bounded memory.
    InitTable {
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
    },
}

#[derive(Args)]
struct SimulateArgs {
    /// The trace file.
    #[arg(long)]
    trace: PathBuf,
    /// txt, oracle-general or criteo-tsv (default: guessed from the file name).
    #[arg(long)]
    format: Option<TraceFormat>,
    /// Comma-separated policies: lru, fifo, clock, lfu, arc, s3fifo, sieve, tinylfu,
    /// belady, lookahead[:window], static[:profile_requests].
    #[arg(long, default_value = "lru,fifo,clock,lfu,arc,s3fifo,sieve,tinylfu,belady")]
    policies: String,
    /// Comma-separated capacities: below 1.0 a fraction of the distinct rows, else rows.
    #[arg(long, default_value = "0.01,0.05,0.1")]
    capacity: String,
    /// Admission policy: always, frequency[:threshold] or probabilistic[:probability].
    #[arg(long, default_value = "always")]
    admission: String,
    /// Print one JSON document instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Write miss-ratio curves (mrc.csv, mrc.svg, with the exact LRU curve) to --out.
    #[arg(long)]
    mrc: bool,
    /// Sample the LRU curve (SHARDS) at this rate instead of computing it exactly.
    #[arg(long, default_value_t = 1.0)]
    mrc_sample_rate: f64,
    /// Folder for the files --mrc writes (report.json, results.csv, mrc.csv, mrc.svg),
    /// and for the annotated copy a future-aware policy needs of a trace without
    /// next-access times.
    #[arg(long, default_value = "out/simulate")]
    out: PathBuf,
    /// Threads replaying policies side by side (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Criteo TSV only: scale of the MLPerf table cardinalities the hashes are reduced by.
    #[arg(long, default_value_t = 1.0)]
    criteo_scale: f64,
}

#[derive(Args)]
struct SyntheticArgs {
    /// Scale of the MLPerf table cardinalities.
    #[arg(long, default_value_t = 0.001)]
    scale: f64,
    /// Zipf exponents: one for all tables or 26 comma-separated.
    #[arg(long, default_value = "1.05")]
    zipf: String,
    /// One lookup per table instead of the MLPerf multi-hot sizes.
    #[arg(long)]
    one_hot: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shift every table's hot set every this many samples (0 = no drift).
    #[arg(long, default_value_t = 0)]
    drift_every: u64,
    /// How far the hot set shifts each time, as a fraction of the table.
    #[arg(long, default_value_t = 0.1)]
    drift_fraction: f64,
}

impl SyntheticArgs {
    fn config(&self) -> Result<SyntheticConfig> {
        let zipf = self
            .zipf
            .split(',')
            .map(|s| s.trim().parse::<f64>().with_context(|| format!("--zipf: `{s}` is not a number")))
            .collect::<Result<Vec<_>>>()?;
        let config = SyntheticConfig {
            scale: self.scale,
            zipf,
            multi_hot: !self.one_hot,
            seed: self.seed,
            drift: (self.drift_every > 0).then_some(DriftConfig { every_samples: self.drift_every, fraction: self.drift_fraction }),
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
struct GenTraceArgs {
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
struct GenDataArgs {
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

#[derive(Subcommand)]
enum BenchCommand {
    /// Strata's simulator against libCacheSim's process_trace on the same trace.
    Simulate {
        #[arg(long, default_value_t = 10_000_000)]
        requests: u64,
        /// Comma-separated capacities (fractions of distinct rows, or rows).
        #[arg(long, default_value = "0.01")]
        capacity: String,
        #[arg(long, default_value = "lru,fifo,clock,lfu:0,arc,s3fifo,sieve,tinylfu,belady")]
        policies: String,
        #[command(flatten)]
        synthetic: SyntheticArgs,
        /// Folder for the temporary trace.
        #[arg(long, default_value = "out/bench")]
        dir: PathBuf,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Storage-tier random row reads (io_uring, mmap, pread) against fio on one file.
    Storage {
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
    },
    /// A Zipf lookup stream through the tiered table, with and without prefetch, next
    /// to the same stream served entirely from host memory.
    Lookup {
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
    },
    /// The embedding part of a training step (pooled lookup + row-wise Adagrad, host
    /// memory, one thread) in Strata against FBGEMM's CPU kernels on the same batches.
    Embedding {
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
    },
    /// Pooled embedding-bag gather from a host slab against plain memory copy (and, with
    /// `--backend cuda`, pinned host-to-device copy and device gather).
    Gather {
        /// host, emulated or cuda.
        #[arg(long, default_value = "host")]
        backend: bench::gather::GatherBackend,
        /// Rows in the slab (default: as many as fit in about 1.5 GB).
        #[arg(long)]
        rows: Option<usize>,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Rows per bag.
        #[arg(long, default_value_t = 32)]
        bag: usize,
        /// Bags per batch.
        #[arg(long, default_value_t = 4096)]
        batch: usize,
    },
}

fn parse_policies(list: &str) -> Result<Vec<PolicyConfig>> {
    let policies = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|name| PolicyConfig::from_name(name.trim()).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    if policies.is_empty() {
        bail!("--policies: give at least one policy");
    }
    Ok(policies)
}

fn capacities(list: &str) -> Result<Vec<Capacity>> {
    let capacities = parse_capacities(list).map_err(|e| anyhow::anyhow!("--capacity: {e}"))?;
    if capacities.is_empty() {
        bail!("--capacity: give at least one capacity");
    }
    Ok(capacities)
}

fn threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn simulate(args: SimulateArgs) -> Result<()> {
    let policies = parse_policies(&args.policies)?;
    let capacities = capacities(&args.capacity)?;
    let admission = AdmissionConfig::from_name(&args.admission).map_err(|e| anyhow::anyhow!("--admission: {e}"))?;
    if !(args.mrc_sample_rate > 0.0 && args.mrc_sample_rate <= 1.0) {
        bail!("--mrc-sample-rate must be in (0, 1], got {}", args.mrc_sample_rate);
    }
    let format = args.format.unwrap_or_else(|| TraceFormat::from_path(&args.trace));
    let tables = TableLayout::criteo(args.criteo_scale, false);
    let simulation = Simulation {
        policies,
        capacities,
        admission,
        lru_curve: args.mrc.then_some(args.mrc_sample_rate),
        threads: threads(args.threads),
        scratch_dir: args.out.clone(),
    };
    let result = simulation.run(&|| format.open(&args.trace, tables.rows()))?;
    if args.mrc {
        let input = serde_json::json!({ "trace": args.trace, "format": format.to_string() });
        lab::write_reports(&result, true, &args.out, &input)?;
        tracing::info!("wrote report.json, results.csv, mrc.csv and mrc.svg to {}", args.out.display());
    }
    if args.json {
        let json = serde_json::json!({
            "trace": args.trace,
            "format": format.to_string(),
            "requests": result.requests,
            "distinct_rows": result.distinct_rows,
            "read_seconds": result.read_seconds,
            "results": result.results,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", report::markdown(&result));
    }
    Ok(())
}

fn gen_trace(args: GenTraceArgs) -> Result<()> {
    let config = args.synthetic.config()?;
    let format = args.format.unwrap_or_else(|| TraceFormat::from_path(&args.out));
    let mut source = SyntheticTrace::new(&config, args.requests)?;
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

fn gen_data(args: GenDataArgs) -> Result<()> {
    let config = args.synthetic.config()?;
    let format = if args.format == "tsv" { FileFormat::CriteoTsv } else { FileFormat::MlperfNumpy };
    let files = write_synthetic(&config, format, &args.out, args.days, args.samples)?;
    eprintln!("wrote {} days of {} samples to {} ({} files)", args.days, args.samples, args.out.display(), files.len());
    Ok(())
}

fn init_table(out: &Path, rows: u64, dim: usize, optimizer: &str, init: &str, seed: u64, scale: f32) -> Result<()> {
    let optimizer = match optimizer {
        "sgd" => Optimizer::Sgd { lr: 0.01 },
        _ => Optimizer::default(),
    };
    let init = match init {
        "zeros" => RowInit::Zeros,
        _ => RowInit::Uniform { seed, scale },
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let table = TableFile::create(out, rows, RowLayout::new(dim, &optimizer), init)?;
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

/// `strata plan`: the plan's reports, and with `validate` the engine's check of it.
fn plan(path: &Path, out: Option<&Path>, validate: bool) -> Result<()> {
    let config = strata::plan::PlanConfig::load(path)?;
    let report = strata::plan::plan(&config)?;
    let dir = out.unwrap_or(&config.output.dir);
    strata::plan::write_reports(&report, &config, dir)?;
    print!("{}", strata::plan::markdown(&report));
    if validate {
        let checks = bench::validate_plan::run(&config, &report)?;
        let text = bench::validate_plan::markdown(&report, &checks);
        println!();
        print!("{text}");
        report::write_file(&dir.join("validate.json"), serde_json::to_string_pretty(&checks)?.as_bytes())?;
    }
    eprintln!("reports in {}", dir.display());
    Ok(())
}

/// Runs a config: a training experiment when it has a `[model]` section, else the
/// policy lab.
fn run(path: &Path, out: Option<&Path>) -> Result<()> {
    let text = strata::config::read(path)?;
    let is_experiment = toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("model"));
    if is_experiment {
        return run_experiment(path, &text, out);
    }
    let config = LabConfig::parse(path, &text)?;
    let (_, summary) = lab::run(&config, out)?;
    print!("{summary}");
    eprintln!("reports in {}", out.unwrap_or(&config.output.dir).display());
    Ok(())
}

#[cfg(feature = "torch")]
fn run_experiment(path: &Path, text: &str, out: Option<&Path>) -> Result<()> {
    let config = strata::experiment::ExperimentConfig::parse(path, text)?;
    // Ctrl-C (or SIGTERM) stops after the current step, flushes and writes the reports.
    strata::interrupt::install().context("installing the interrupt handler")?;
    let (_, summary) = strata::experiment::run(&config, out)?;
    print!("{summary}");
    eprintln!("reports in {}", out.unwrap_or(&config.output.dir).display());
    Ok(())
}

/// Resumes the training experiment saved in `dir`.
#[cfg(feature = "torch")]
fn resume(dir: &Path) -> Result<()> {
    let (_, _, summary) = strata::experiment::resume(dir)?;
    print!("{summary}");
    eprintln!("reports in {}", dir.display());
    Ok(())
}

#[cfg(not(feature = "torch"))]
fn resume(dir: &Path) -> Result<()> {
    bail!("{}: resuming a training experiment needs the `torch` feature (build with `make build`)", dir.display())
}

#[cfg(not(feature = "torch"))]
fn run_experiment(path: &Path, _text: &str, _out: Option<&Path>) -> Result<()> {
    bail!("{}: training experiments need the `torch` feature (build with `make build`)", path.display())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Simulate(args) => simulate(args),
        Command::GenTrace(args) => gen_trace(args),
        Command::GenData(args) => gen_data(args),
        Command::Run { config: Some(config), out, resume: None } => run(&config, out.as_deref()),
        Command::Run { resume: Some(dir), .. } => resume(&dir),
        Command::Run { config: None, resume: None, .. } => Err(anyhow::anyhow!("run: give a CONFIG or --resume DIR")),
        Command::Plan { config, out, validate } => plan(&config, out.as_deref(), validate),
        Command::Calibrate { out, dir, dim, device, quick } => (|| {
            let measured = calibrate::calibrate(&calibrate::CalibrateOptions { dir, dim, device, quick })?;
            calibrate::write(&measured.profile, &out)?;
            print!("{}", measured.summary);
            println!("\nwrote {}", out.display());
            Ok(())
        })(),
        Command::InitTable { out, rows, dim, optimizer, init, seed, scale, force } => {
            if out.exists() && !force {
                Err(anyhow::anyhow!("{}: already exists; pass --force to replace it", out.display()))
            } else {
                init_table(&out, rows, dim, &optimizer, &init, seed, scale)
            }
        }
        Command::Bench(BenchCommand::Lookup {
            file,
            synthetic,
            dim,
            batch,
            warmup,
            batches,
            device,
            host,
            window,
            policy,
            read_path,
            json,
        }) => (|| {
            let bench = bench::lookup::LookupBench {
                file,
                synthetic: synthetic.config()?,
                dim,
                batch,
                warmup,
                batches,
                device,
                host,
                window,
                policy: PolicyConfig::from_name(&policy)?,
                read_path,
            };
            if let Some(dir) = bench.file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            }
            let results = bench.run()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", bench::lookup::markdown(&bench, &results));
            }
            Ok(())
        })(),
        Command::Bench(BenchCommand::Storage { file, rows, dim, reads, depth, batch, fio_seconds }) => {
            bench::storage::StorageBench { file, rows, dim, reads, depth, batch, fio_seconds }.run().map(|report| print!("{report}"))
        }
        Command::Bench(BenchCommand::Gather { backend, rows, dim, bag, batch }) => bench::gather::run(backend, rows, dim, bag, batch),
        Command::Bench(BenchCommand::Embedding { synthetic, dim, batch, batches, warmup, iters, dir, json }) => (|| {
            let bench = bench::embedding::EmbeddingBench {
                synthetic: synthetic.config()?,
                dim,
                batch,
                batches,
                warmup,
                iters,
                python: bench::embedding::python(),
                dir,
            };
            let report = bench.run()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", bench::embedding::markdown(&report));
            }
            Ok(())
        })(),
        Command::Bench(BenchCommand::Simulate { requests, capacity, policies, synthetic, dir, json }) => (|| {
            parse_policies(&policies)?;
            let bench = bench::simulate::BenchSimulate {
                requests,
                synthetic: synthetic.config()?,
                capacities: capacities(&capacity)?,
                policies: policies.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                python: bench::simulate::python(),
                dir,
            };
            let (requests, distinct, rows) = bench.run()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "requests": requests, "distinct_rows": distinct, "results": rows }))?
                );
            } else {
                print!("{}", bench::simulate::markdown(requests, distinct, &rows));
            }
            Ok(())
        })(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if interrupted(&e) => {
            eprintln!("strata: {e}");
            ExitCode::from(strata::interrupt::EXIT_STATUS)
        }
        Err(e) => {
            eprintln!("strata: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` is a run stopped by a signal (not a failure: its own exit status).
#[cfg(feature = "torch")]
fn interrupted(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref(), Some(strata::experiment::ExperimentError::Interrupted { .. }))
}

#[cfg(not(feature = "torch"))]
fn interrupted(_error: &anyhow::Error) -> bool {
    false
}

/// An error and its causes on one line, each cause once: errors that already print
/// their source (`PATH: ...: No such file or directory`) do not repeat it.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
