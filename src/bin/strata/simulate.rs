//! `strata simulate`: a trace replayed through cache policies at several capacities,
//! printed as a Markdown table or JSON, with miss-ratio curves on request.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use strata::data::TableLayout;
use strata::lab;
use strata::report;
use strata::sim::Simulation;
use strata::trace::TraceFormat;
use strata_policies::AdmissionConfig;

use crate::args::{capacities, parse_policies, threads};

#[derive(Args)]
pub struct SimulateArgs {
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

pub fn simulate(args: SimulateArgs) -> Result<()> {
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
