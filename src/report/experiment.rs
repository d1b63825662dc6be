//! The reports of a training and serving experiment: one [`SetupResult`] per set-up,
//! written as JSON, CSV, SVG plots, a self-contained HTML page and a Markdown summary.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{plot_bars, plot_series, write_file, ReportError};
use crate::engine::stats::EngineStats;
use crate::model::train::{ServeOutcome, TrainOutcome};

/// One set-up's results. Training figures are `None` when the experiment only serves,
/// serving figures `None` without a `[serve]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupResult {
    pub name: String,
    pub samples_per_sec: Option<f64>,
    /// Share of the training time spent waiting for rows from the store.
    pub stall_fraction: Option<f64>,
    /// Hit ratios of the tiers during training (evaluation lookups included).
    pub hit_ratio: HitRatios,
    pub auc: Option<f64>,
    pub logloss: Option<f64>,
    pub write_backs: Option<u64>,
    pub checkpoints: Option<u64>,
    pub checkpoint_seconds: Option<f64>,
    pub bytes_store_to_host: Option<u64>,
    pub bytes_host_to_store: Option<u64>,
    pub bytes_host_to_device: Option<u64>,
    pub bytes_device_to_host: Option<u64>,
    pub device_backend: Option<String>,
    pub queries_per_sec: Option<f64>,
    pub p50_us: Option<f64>,
    pub p95_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// This set-up's p99 over the first set-up's.
    pub p99_vs_first: Option<f64>,
    /// The p99 of the requests' I/O floors (their store rows at the store's measured
    /// random-read rate), and the p99 latency over it; `None` when no request read from
    /// the store.
    #[serde(default)]
    pub io_floor_p99_us: Option<f64>,
    #[serde(default)]
    pub p99_vs_io_floor: Option<f64>,
    /// Share of the serving time spent waiting for rows from the store.
    pub serve_stall_fraction: Option<f64>,
    /// Hit ratios of the tiers while serving the measured requests.
    pub serve_hit_ratio: HitRatios,
    pub prediction_checksum: Option<String>,
    /// The whole training outcome (losses of every step, evaluations, engine counters).
    pub outcome: Option<TrainOutcome>,
    /// The whole serving outcome (every latency, engine counters).
    pub serving: Option<ServeOutcome>,
}

/// Hit ratio of each tier (`None` for a tier the set-up does not have).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HitRatios {
    pub device: Option<f64>,
    pub host: Option<f64>,
}

impl HitRatios {
    fn of(engine: Option<&EngineStats>) -> HitRatios {
        HitRatios {
            device: engine.and_then(|e| e.device.as_ref()).map(|t| t.hit_ratio()),
            host: engine.and_then(|e| e.host.as_ref()).map(|t| t.hit_ratio()),
        }
    }
}

impl SetupResult {
    /// The figures of set-up `name` from what its training and serving did (`None`
    /// where it did not train or serve); `p99_vs_first` is left for the caller, who
    /// knows the first set-up.
    pub fn new(name: &str, training: Option<TrainOutcome>, serving: Option<ServeOutcome>) -> SetupResult {
        let engine = training.as_ref().map(|t| &t.engine);
        let served = serving.as_ref().map(|s| &s.engine);
        let last = training.as_ref().and_then(|t| t.evaluations.last());
        SetupResult {
            name: name.to_string(),
            samples_per_sec: training.as_ref().map(|t| t.samples_per_sec),
            stall_fraction: training.as_ref().map(|t| t.stall_seconds / t.seconds.max(1e-9)),
            hit_ratio: HitRatios::of(engine),
            auc: last.and_then(|e| e.auc),
            logloss: last.map(|e| e.logloss),
            write_backs: engine.map(|e| e.device.iter().chain(e.host.iter()).map(|t| t.write_backs).sum()),
            checkpoints: training.as_ref().map(|t| t.checkpoints),
            checkpoint_seconds: training.as_ref().map(|t| t.checkpoint_seconds),
            bytes_store_to_host: engine.map(|e| e.bytes_store_to_host),
            bytes_host_to_store: engine.map(|e| e.bytes_host_to_store),
            bytes_host_to_device: engine.map(|e| e.bytes_host_to_device),
            bytes_device_to_host: engine.map(|e| e.bytes_device_to_host),
            device_backend: engine.or(served).and_then(|e| e.device.as_ref()).map(|t| t.backend.clone()),
            queries_per_sec: serving.as_ref().map(|s| s.queries_per_sec),
            p50_us: serving.as_ref().map(|s| s.p50_us),
            p95_us: serving.as_ref().map(|s| s.p95_us),
            p99_us: serving.as_ref().map(|s| s.p99_us),
            p99_vs_first: None,
            io_floor_p99_us: serving.as_ref().map(|s| s.io_floor_p99_us).filter(|&floor| floor > 0.0),
            p99_vs_io_floor: serving.as_ref().filter(|s| s.io_floor_p99_us > 0.0).map(|s| s.p99_us / s.io_floor_p99_us),
            serve_stall_fraction: serving.as_ref().map(|s| s.stall_seconds / s.seconds.max(1e-9)),
            serve_hit_ratio: HitRatios::of(served),
            prediction_checksum: serving.as_ref().map(|s| s.prediction_checksum.clone()),
            outcome: training,
            serving,
        }
    }
}

/// One table of the summaries: a title, its columns, and one row of cells per set-up.
struct SummaryTable {
    title: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

fn percent(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v))
}

/// The training table (when the set-ups trained) and the serving table (when they
/// served), shared by the Markdown and HTML summaries.
fn summary_tables(results: &[SetupResult]) -> Vec<SummaryTable> {
    let mut tables = Vec::new();
    if results.iter().any(|r| r.outcome.is_some()) {
        let base = results.first().and_then(|r| r.samples_per_sec).unwrap_or(1.0);
        let rows = results
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.samples_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
                    r.samples_per_sec.map_or("-".into(), |v| format!("{:.0}%", 100.0 * v / base)),
                    percent(r.stall_fraction),
                    percent(r.hit_ratio.device),
                    percent(r.hit_ratio.host),
                    r.write_backs.map_or("-".into(), |w| w.to_string()),
                    r.auc.map_or("-".into(), |a| format!("{a:.4}")),
                    r.logloss.map_or("-".into(), |l| format!("{l:.4}")),
                ]
            })
            .collect();
        tables.push(SummaryTable {
            title: "Training",
            columns: &["setup", "samples/s", "vs first", "stall", "device hits", "host hits", "write-backs", "AUC", "log-loss"],
            rows,
        });
    }
    if results.iter().any(|r| r.outcome.is_some()) {
        let rows = results
            .iter()
            .filter_map(|r| Some((r, r.outcome.as_ref()?)))
            .map(|(r, o)| {
                let t = &o.step_times;
                let steps = (o.steps - o.resumed_at).max(1) as f64;
                let ms = |seconds: f64| format!("{:.1}", 1e3 * seconds / steps);
                let other = o.seconds - (t.next_batch + t.engine + t.waiting_for_rows + t.dense);
                let storage = &o.engine.storage_thread;
                vec![
                    r.name.clone(),
                    ms(o.seconds),
                    ms(t.dense),
                    ms(t.engine),
                    ms(t.waiting_for_rows),
                    ms(t.next_batch),
                    ms(other.max(0.0)),
                    ms(storage.read_cpu_seconds),
                    ms(storage.write_cpu_seconds),
                    ms(o.engine.store_read_seconds + storage.write_seconds),
                ]
            })
            .collect();
        tables.push(SummaryTable {
            title: "Where a training step's time goes (ms per step)",
            columns: &[
                "setup",
                "step",
                "dense model",
                "engine",
                "waiting for rows",
                "next batch",
                "other",
                "storage thread CPU: reads",
                "writes",
                "storage thread busy",
            ],
            rows,
        });
    }
    if results.iter().any(|r| r.serving.is_some()) {
        let micros = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0}"));
        let rows = results
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.queries_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
                    micros(r.p50_us),
                    micros(r.p95_us),
                    micros(r.p99_us),
                    r.p99_vs_first.map_or("-".into(), |v| format!("{v:.2}x")),
                    micros(r.io_floor_p99_us),
                    r.p99_vs_io_floor.map_or("-".into(), |v| format!("{v:.2}x")),
                    percent(r.serve_stall_fraction),
                    percent(r.serve_hit_ratio.device),
                    percent(r.serve_hit_ratio.host),
                    r.prediction_checksum.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        tables.push(SummaryTable {
            title: "Serving",
            columns: &[
                "setup",
                "queries/s",
                "p50 us",
                "p95 us",
                "p99 us",
                "p99 vs first",
                "I/O floor p99 us",
                "p99 vs floor",
                "stall",
                "device hits",
                "host hits",
                "scores checksum",
            ],
            rows,
        });
    }
    tables
}

/// The Markdown summary: a training and/or a serving table, one row per set-up.
pub fn markdown(results: &[SetupResult]) -> String {
    let mut out = String::new();
    for table in summary_tables(results) {
        let _ = write!(out, "{}\n\n| {} |\n|---|{}\n", table.title, table.columns.join(" | "), "---:|".repeat(table.columns.len() - 1));
        for row in &table.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out.push('\n');
    }
    out
}

const CSV_HEADER: &str =
    "name,samples_per_sec,stall_fraction,device_hit_ratio,host_hit_ratio,write_backs,auc,logloss,checkpoints,checkpoint_seconds,\
queries_per_sec,p50_us,p95_us,p99_us,p99_vs_first,io_floor_p99_us,p99_vs_io_floor,serve_stall_fraction,serve_device_hit_ratio,serve_host_hit_ratio,prediction_checksum\n";

fn csv(results: &[SetupResult]) -> String {
    let mut csv = String::from(CSV_HEADER);
    let float = |x: Option<f64>, digits: usize| x.map_or(String::new(), |v| format!("{v:.digits$}"));
    let int = |x: Option<u64>| x.map_or(String::new(), |v| v.to_string());
    for r in results {
        let cells = [
            r.name.replace(',', ";"),
            float(r.samples_per_sec, 1),
            float(r.stall_fraction, 4),
            float(r.hit_ratio.device, 6),
            float(r.hit_ratio.host, 6),
            int(r.write_backs),
            float(r.auc, 6),
            float(r.logloss, 6),
            int(r.checkpoints),
            float(r.checkpoint_seconds, 4),
            float(r.queries_per_sec, 1),
            float(r.p50_us, 1),
            float(r.p95_us, 1),
            float(r.p99_us, 1),
            float(r.p99_vs_first, 4),
            float(r.io_floor_p99_us, 1),
            float(r.p99_vs_io_floor, 4),
            float(r.serve_stall_fraction, 4),
            float(r.serve_hit_ratio.device, 6),
            float(r.serve_hit_ratio.host, 6),
            r.prediction_checksum.clone().unwrap_or_default(),
        ];
        let _ = writeln!(csv, "{}", cells.join(","));
    }
    csv
}

/// Writes report.json, report.csv, the plots that apply (throughput.svg and loss.svg
/// for training, latency.svg for serving, hit_ratio.svg always) and report.html with
/// every table and plot inlined.
pub fn write_reports(config: &impl Serialize, results: &[SetupResult], dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::json!({ "config": config, "setups": results });
    let text = serde_json::to_string_pretty(&json).map_err(|e| ReportError::new(dir, e))?;
    write_file(&dir.join("report.json"), text.as_bytes())?;
    write_file(&dir.join("report.csv"), csv(results).as_bytes())?;
    let names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    let column = |value: &dyn Fn(&SetupResult) -> Option<f64>| results.iter().map(|r| value(r).unwrap_or(f64::NAN)).collect::<Vec<f64>>();
    let mut plots = Vec::new();
    let trained = results.iter().any(|r| r.outcome.is_some());
    let served = results.iter().any(|r| r.serving.is_some());
    if trained {
        plot_bars(
            &names,
            &[("samples/s".into(), column(&|r| r.samples_per_sec))],
            "Training throughput",
            "samples/s",
            &dir.join("throughput.svg"),
        )?;
        // Loss curves (the training loss, averaged over 10 steps) on one plot.
        let losses: Vec<(String, Vec<(f64, f64)>)> = results
            .iter()
            .filter_map(|r| r.outcome.as_ref().map(|o| (r, o)))
            .map(|(r, o)| {
                let points = o
                    .losses
                    .chunks(10)
                    .enumerate()
                    .map(|(i, c)| ((i * 10 + c.len()) as f64, f64::from(c.iter().sum::<f32>() / c.len() as f32)));
                (r.name.clone(), points.collect())
            })
            .collect();
        plot_series(&losses, "Training loss (mean of 10 steps)", "step", "loss", &dir.join("loss.svg"))?;
        plots.extend(["throughput.svg", "loss.svg"]);
    }
    if served {
        let series = [
            ("p50".to_string(), column(&|r| r.p50_us)),
            ("p95".to_string(), column(&|r| r.p95_us)),
            ("p99".to_string(), column(&|r| r.p99_us)),
        ];
        plot_bars(&names, &series, "Serving latency per request", "microseconds", &dir.join("latency.svg"))?;
        plots.push("latency.svg");
    }
    let mut hit_series = Vec::new();
    if trained {
        hit_series.push(("device (training)".to_string(), column(&|r| r.hit_ratio.device)));
        hit_series.push(("host (training)".to_string(), column(&|r| r.hit_ratio.host)));
    }
    if served {
        hit_series.push(("device (serving)".to_string(), column(&|r| r.serve_hit_ratio.device)));
        hit_series.push(("host (serving)".to_string(), column(&|r| r.serve_hit_ratio.host)));
    }
    plot_bars(&names, &hit_series, "Hit ratio per tier", "hit ratio", &dir.join("hit_ratio.svg"))?;
    plots.push("hit_ratio.svg");
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Strata experiment</title>");
    html.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>");
    html.push_str("<h1>Strata experiment</h1>");
    for table in summary_tables(results) {
        let _ = write!(html, "<h2>{}</h2><table><tr><th>{}</th></tr>", table.title, table.columns.join("</th><th>"));
        for row in &table.rows {
            let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
            let _ = write!(html, "<tr><td>{}</td></tr>", cells.join("</td><td>"));
        }
        html.push_str("</table>");
    }
    for svg in plots {
        let body = std::fs::read_to_string(dir.join(svg)).map_err(|e| ReportError::new(&dir.join(svg), e))?;
        let _ = write!(
            html,
            "<div>{}</div>",
            body.trim_start_matches(|c| c != '<').replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1)
        );
    }
    html.push_str("</body></html>\n");
    write_file(&dir.join("report.html"), html.as_bytes())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
