//! The `strata` command line: the policy lab (`simulate`, `gen-trace`, `run`), training
//! experiments and their serving replicas (`run`, `serve`), training
//! data files from the synthetic stream (`gen-data`), capacity planning (`plan`), the
//! side-by-side benchmarks (`bench`) and the hardware profile of this machine
//! (`calibrate`). This file holds the commands and the exit status; each group of
//! commands lives in its own module with its arguments.

mod args;
mod bench;
mod calibrate;
mod generate;
mod run;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "strata", version, about = "Tiered-memory embedding engine and cache-policy lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a trace through cache policies at several capacities.
    Simulate(simulate::SimulateArgs),
    /// Write a synthetic Criteo-shaped trace (text or oracleGeneral).
    GenTrace(generate::GenTraceArgs),
    /// Write the synthetic stream as training data files: Criteo TSV or the MLPerf
    /// NumPy layout, one set of files per day.
    GenData(generate::GenDataArgs),
    /// Run the job described by a config file (a training experiment or the policy
    /// lab), or resume an interrupted training experiment.
    Run(run::RunArgs),
    /// Serve an experiment's requests as a replica of the table its training publishes
    /// to a Redis Cluster (`[publish]`), taking in each new version between requests.
    Serve(run::ServeArgs),
    /// Plan tier capacities: the cheapest device/host sizes and policies that meet a
    /// throughput target, and the Pareto front of cost against throughput.
    Plan(run::PlanArgs),
    /// Benchmarks run side by side with a peer.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Measure this machine's tiers (host memory, device, storage, host-to-device link)
    /// with the benchmarks' probes and write them as a hardware profile.
    Calibrate(calibrate::CalibrateArgs),
    /// Create a storage-tier table file, streaming it to disk in bounded memory.
    InitTable(generate::InitTableArgs),
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
        Command::Simulate(args) => simulate::simulate(args),
        Command::GenTrace(args) => generate::gen_trace(args),
        Command::GenData(args) => generate::gen_data(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => run::serve(args),
        Command::Plan(args) => run::plan(args),
        Command::Bench(bench) => bench.run(),
        Command::Calibrate(options) => calibrate::run(&options),
        Command::InitTable(args) => generate::init_table(args),
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
