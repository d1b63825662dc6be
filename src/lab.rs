//! The policy lab job of `strata run CONFIG`: a trace (synthetic or a file), a grid of
//! policies and capacities, and the reports it writes (JSON, CSV, Markdown, SVG).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_policies::{AdmissionConfig, PolicyConfig};

use crate::config::OutputSpec;
use crate::data::{ScanConfig, SyntheticConfig, SyntheticTrace, TableLayout};
use crate::report::{self, ReportError};
use crate::sim::{Capacity, SimulateError, Simulation, SimulationReport};
use crate::trace::{KeySource, TraceError, TraceFormat};

/// A lab config file (`configs/policy-lab.toml`); every field is documented in
/// `configs/README.md`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    pub trace: TraceSpec,
    pub simulate: SimulateSpec,
    #[serde(default)]
    pub output: OutputSpec,
}

/// Where the requests come from.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TraceSpec {
    /// The synthetic Criteo-shaped generator, `requests` lookups long, with sequential
    /// scans mixed in when `scan` is given.
    Synthetic {
        requests: u64,
        #[serde(default)]
        synthetic: SyntheticConfig,
        #[serde(default)]
        scan: Option<ScanConfig>,
    },
    /// A trace file; the format is guessed from the name when not given.
    File {
        path: PathBuf,
        format: Option<TraceFormat>,
        /// Criteo TSV only: the MLPerf cardinalities are scaled by this factor.
        #[serde(default = "one")]
        criteo_scale: f64,
    },
}

fn one() -> f64 {
    1.0
}

/// The policies and capacities to compare.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSpec {
    /// Policy names as `strata simulate --policies` takes them (`lru`, `s3fifo`,
    /// `lookahead:4096`, ...).
    pub policies: Vec<String>,
    /// Capacities: below 1.0 a fraction of the distinct rows, else rows.
    pub capacities: Vec<f64>,
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Compute miss-ratio curves (the exact LRU curve by stack distances in the same pass).
    #[serde(default = "yes")]
    pub mrc: bool,
    /// SHARDS sampling rate of the LRU curve; 1.0 = exact.
    #[serde(default = "one")]
    pub mrc_sample_rate: f64,
    /// Threads replaying policies side by side (0 = one per core).
    #[serde(default)]
    pub threads: usize,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    File(#[from] crate::config::ConfigError),
}

impl LabConfig {
    /// Reads and checks a config file; every problem names the file (and, for TOML
    /// errors, the line and column).
    pub fn load(path: &Path) -> Result<LabConfig, LabError> {
        Self::parse(path, &crate::config::read(path)?)
    }

    /// Parses and checks the text of a config file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<LabConfig, LabError> {
        let config_error = |message: String| LabError::Config { path: path.to_path_buf(), message };
        let config: LabConfig = crate::config::parse_toml(path, text)?;
        config.simulation(Path::new(".")).map_err(&config_error)?;
        config.trace.check("trace").map_err(config_error)?;
        Ok(config)
    }

    /// The simulation this config asks for.
    pub fn simulation(&self, scratch_dir: &Path) -> Result<Simulation, String> {
        let policies = self
            .simulate
            .policies
            .iter()
            .map(|name| PolicyConfig::from_name(name).map_err(|e| format!("simulate.policies: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let capacities = self
            .simulate
            .capacities
            .iter()
            .map(|&c| Capacity::try_from(c).map_err(|e| format!("simulate.capacities: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if policies.is_empty() || capacities.is_empty() {
            return Err("simulate: give at least one policy and one capacity".into());
        }
        let rate = self.simulate.mrc_sample_rate;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(format!("simulate.mrc_sample_rate must be in (0, 1], got {rate}"));
        }
        Ok(Simulation {
            policies,
            capacities,
            admission: self.simulate.admission.clone(),
            lru_curve: self.simulate.mrc.then_some(rate),
            threads: match self.simulate.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            scratch_dir: scratch_dir.to_path_buf(),
        })
    }

    /// Opens the configured trace from its start.
    pub fn open_trace(&self) -> Result<Box<dyn KeySource>, TraceError> {
        self.trace.open()
    }
}

impl TraceSpec {
    /// Checks the generator settings or the Criteo scale; `table` names the config
    /// table in the message (`trace`, `workload`).
    pub fn check(&self, table: &str) -> Result<(), String> {
        match self {
            TraceSpec::Synthetic { synthetic, scan, .. } => {
                synthetic.validate().map_err(|e| format!("{table}.{e}"))?;
                if synthetic.weighted.values().contains(&true) {
                    return Err(format!(
                        "{table}.synthetic.weighted: a trace is keys only; weighted bags are for training and serving data"
                    ));
                }
                scan.as_ref().map_or(Ok(()), ScanConfig::validate).map_err(|e| format!("{table}.{e}"))
            }
            TraceSpec::File { criteo_scale, .. } => {
                TableLayout::check_criteo_scale(*criteo_scale).map_err(|why| format!("{table}.criteo_scale {why}"))
            }
        }
    }

    /// Opens the trace from its start (the spec must have passed [`TraceSpec::check`]).
    pub fn open(&self) -> Result<Box<dyn KeySource>, TraceError> {
        match self {
            TraceSpec::Synthetic { requests, synthetic, scan } => {
                let trace = SyntheticTrace::new(synthetic, *requests).expect("validated when the config was loaded");
                Ok(Box::new(match scan {
                    Some(scan) => trace.with_scans(scan).expect("validated when the config was loaded"),
                    None => trace,
                }))
            }
            TraceSpec::File { path, criteo_scale, .. } => {
                self.format().expect("a file").open(path, TableLayout::criteo(*criteo_scale, false).rows())
            }
        }
    }

    /// A file trace's format, given or guessed from its name.
    pub fn format(&self) -> Option<TraceFormat> {
        match self {
            TraceSpec::Synthetic { .. } => None,
            TraceSpec::File { path, format, .. } => Some(format.unwrap_or_else(|| TraceFormat::from_path(path))),
        }
    }

    /// The tables the trace's keys are global rows of: the generator's layout, or the
    /// Criteo layout of a Criteo TSV file; `None` for a plain key trace (txt,
    /// oracleGeneral), whose keys are only names.
    pub fn layout(&self) -> Option<TableLayout> {
        match self {
            TraceSpec::Synthetic { synthetic, .. } => Some(synthetic.layout()),
            TraceSpec::File { criteo_scale, .. } => {
                (self.format() == Some(TraceFormat::CriteoTsv)).then(|| TableLayout::criteo(*criteo_scale, false))
            }
        }
    }
}

/// Runs the lab job and writes its reports into `out` (the config's folder if `None`).
/// Returns the report and the Markdown summary.
pub fn run(config: &LabConfig, out: Option<&Path>) -> Result<(SimulationReport, String), LabError> {
    let dir = out.unwrap_or(&config.output.dir);
    std::fs::create_dir_all(dir).map_err(|e| ReportError::new(dir, e))?;
    let simulation = config.simulation(dir).map_err(|message| LabError::Config { path: dir.to_path_buf(), message })?;
    let result = simulation.run(&|| config.open_trace())?;
    write_reports(&result, config.simulate.mrc, dir, &serde_json::to_value(config).unwrap_or_default())?;
    let summary = report::markdown(&result);
    Ok((result, summary))
}

/// Writes `report.json`, `results.csv` and, with curves, `mrc.csv` and `mrc.svg`.
pub fn write_reports(result: &SimulationReport, with_curves: bool, dir: &Path, input: &serde_json::Value) -> Result<(), ReportError> {
    let curves = if with_curves { report::curves(result, 48) } else { Vec::new() };
    let json = serde_json::json!({
        "input": input,
        "requests": result.requests,
        "distinct_rows": result.distinct_rows,
        "read_seconds": result.read_seconds,
        "results": result.results,
        "curves": curves,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| ReportError::new(dir, e))?;
    report::write_file(&dir.join("report.json"), text.as_bytes())?;
    report::write_file(&dir.join("results.csv"), report::results_csv(result).as_bytes())?;
    if with_curves {
        report::write_file(&dir.join("mrc.csv"), report::curves_csv(&curves, result.distinct_rows).as_bytes())?;
        report::plot_curves(&curves, "Miss ratio against capacity", &dir.join("mrc.svg"))?;
    }
    Ok(())
}
