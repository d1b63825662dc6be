//! The jobs a config file describes: `strata run` (a training experiment or the policy
//! lab, or `--resume` of an interrupted experiment), `strata serve` (a serving replica of
//! an experiment's published table) and `strata plan`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use strata::lab::{self, LabConfig};
use strata::report;

use crate::bench;

#[derive(Args)]
pub struct RunArgs {
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
}

#[derive(Args)]
pub struct ServeArgs {
    /// The experiment config whose training publishes to the cluster (`[publish]`),
    /// with its `[serve]` requests.
    config: PathBuf,
    /// The set-up whose tiers and policies the replica uses (default: the first).
    #[arg(long)]
    setup: Option<String>,
    /// Also write the replica's outcome as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct PlanArgs {
    /// The plan config, e.g. configs/plan.toml.
    config: PathBuf,
    /// Output folder (default: the config's `output.dir`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also run the engine on a few of the planned configurations and print
    /// predicted against measured hit ratios and throughput.
    #[arg(long)]
    validate: bool,
}

/// `strata run`: a config, or `--resume DIR`.
pub fn run(args: RunArgs) -> Result<()> {
    match args {
        RunArgs { config: Some(config), out, resume: None } => run_config(&config, out.as_deref()),
        RunArgs { resume: Some(dir), .. } => resume(&dir),
        RunArgs { config: None, resume: None, .. } => Err(anyhow::anyhow!("run: give a CONFIG or --resume DIR")),
    }
}

/// Runs a config: a training experiment when it has a `[model]` section, else the
/// policy lab.
fn run_config(path: &Path, out: Option<&Path>) -> Result<()> {
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
    use anyhow::Context;

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
    anyhow::bail!("{}: resuming a training experiment needs the `torch` feature (build with `make build`)", dir.display())
}

#[cfg(not(feature = "torch"))]
fn run_experiment(path: &Path, _text: &str, _out: Option<&Path>) -> Result<()> {
    anyhow::bail!("{}: training experiments need the `torch` feature (build with `make build`)", path.display())
}

/// `strata serve`: one serving replica of the config's published table.
#[cfg(feature = "torch")]
pub fn serve(args: ServeArgs) -> Result<()> {
    use anyhow::Context;

    let text = strata::config::read(&args.config)?;
    let config = strata::experiment::ExperimentConfig::parse(&args.config, &text)?;
    strata::interrupt::install().context("installing the interrupt handler")?;
    let outcome = strata::experiment::serve_replica(&config, &args.config, args.setup.as_deref())?;
    print!("{}", strata::experiment::replica_markdown(&outcome));
    if let Some(path) = &args.out {
        report::write_file(path, serde_json::to_string_pretty(&outcome)?.as_bytes())?;
        eprintln!("outcome in {}", path.display());
    }
    Ok(())
}

#[cfg(not(feature = "torch"))]
pub fn serve(args: ServeArgs) -> Result<()> {
    anyhow::bail!("{}: serving replicas need the `torch` feature (build with `make build`)", args.config.display())
}

/// `strata plan`: the plan's reports, and with `validate` the engine's check of it.
pub fn plan(args: PlanArgs) -> Result<()> {
    let PlanArgs { config: path, out, validate } = args;
    let out = out.as_deref();
    let text = strata::config::read(&path)?;
    if strata::plan::serving::ServingPlanConfig::is_serving_plan(&text) {
        return plan_serving(&path, &text, out, validate);
    }
    let config = strata::plan::PlanConfig::parse(&path, &text)?;
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

/// `strata plan` of a serving plan: the smallest host tier keeping the experiment's
/// serving p99 within the bound, and with `validate` the experiment served at it.
#[cfg(feature = "torch")]
fn plan_serving(path: &Path, text: &str, out: Option<&Path>, validate: bool) -> Result<()> {
    use strata::plan::serving::{self, ServingPlanConfig};

    let config = ServingPlanConfig::parse(path, text)?;
    let experiment_path = &config.serving.experiment;
    let experiment = strata::experiment::ExperimentConfig::parse(experiment_path, &strata::config::read(experiment_path)?)?;
    let Some(serve) = &experiment.serve else {
        anyhow::bail!("{}: serving.experiment {} has no [serve] section", path.display(), experiment_path.display());
    };
    if experiment.data.train_batches > 0 {
        anyhow::bail!(
            "{}: serving.experiment {} trains before it serves; a serving plan replays its requests from empty tiers (set train_batches = 0)",
            path.display(),
            experiment_path.display()
        );
    }
    if experiment.table_groups().map_err(anyhow::Error::msg)?.len() > 1 {
        anyhow::bail!(
            "{}: serving.experiment {} has tables of several embedding_dim or pooling; serving plans model one table group for now",
            path.display(),
            experiment_path.display()
        );
    }
    let workload = experiment.serving_workload(serve)?;
    let plan = serving::plan_serving(&config, &workload)?;
    let dir = out.unwrap_or(&config.output.dir);
    serving::write_reports(&plan, &config, dir)?;
    print!("{}", serving::markdown(&plan));
    if validate {
        strata::interrupt::install()?;
        let checks = bench::validate_serving::run(&experiment, &plan, &dir.join("validate"))?;
        println!();
        print!("{}", bench::validate_serving::markdown(&plan, &checks));
        report::write_file(&dir.join("validate.json"), serde_json::to_string_pretty(&checks)?.as_bytes())?;
    }
    eprintln!("reports in {}", dir.display());
    Ok(())
}

#[cfg(not(feature = "torch"))]
fn plan_serving(path: &Path, _text: &str, _out: Option<&Path>, _validate: bool) -> Result<()> {
    anyhow::bail!("{}: serving plans read a serving experiment, which needs the `torch` feature (build with `make build`)", path.display())
}
