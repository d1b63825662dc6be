//! Memory budgets: the default experiment's set-ups (configs/default.toml: its model,
//! table of 1.02 M rows and tier sizes, cut to a few training steps) each run as a
//! `strata run` child process, and each one's peak resident set stays within the
//! peak of a baseline run that has no memory tier at all plus what the set-up is
//! configured to hold: the tiers' slabs, the write-back buffer, the tiers' row indexes
//! and policy metadata, the prefetch window, and a fixed overhead. Every term is
//! explained, with the figures measured, in docs/RELIABILITY.md ("Memory budgets").

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use strata::engine::host::HostSlab;
use strata::engine::RowLayout;
use strata::experiment::ExperimentConfig;

/// Training steps of each run: enough for the tiers to fill (the prefetch window and
/// the evaluation included), few enough for CI.
const STEPS: u64 = 6;
/// Bytes per slot of a tier beyond its row: the row -> slot entry of the slot's row and
/// the slot -> row entry and dirty bit (`Tier`), and the policy's metadata (at most 64
/// bytes a slot for the policies of the default set-ups).
const SLOT_OVERHEAD: u64 = 8 + 1 + 64;
/// What no configured size accounts for: allocator slack (freed memory the allocator
/// keeps) and the run-to-run variation of the baseline's peak. Measured: every set-up
/// stays 60 MiB or more below the bound without it (docs/RELIABILITY.md).
const FIXED_OVERHEAD: u64 = 32 << 20;

/// The default experiment with `setup` as its only set-up, `STEPS` steps of training,
/// its table file and reports in `dir`.
fn config_with(default: &toml::Table, setup: &toml::Value, dir: &Path) -> String {
    let mut config = default.clone();
    let data = config["data"].as_table_mut().unwrap();
    data.insert("train_batches".into(), (STEPS as i64).into());
    data.insert("eval_batches".into(), 2.into());
    data.insert("eval_every".into(), 3.into());
    let engine = config["engine"].as_table_mut().unwrap();
    engine.insert("table_file".into(), dir.join("table.strata").display().to_string().into());
    config.insert("setup".into(), toml::Value::Array(vec![setup.clone()]));
    config.insert("output".into(), toml::toml! { dir = "unused" }.into());
    toml::to_string(&config).unwrap()
}

/// Runs `strata run` on `config` and returns its peak resident set in bytes (the
/// child's `ru_maxrss`) and its report.
fn peak_rss(config: &str, dir: &Path) -> (u64, Value) {
    let path = dir.join("run.toml");
    std::fs::write(&path, config).unwrap();
    let out = dir.join("out");
    // Reaped by the wait4 below, which also reports the child's peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("STRATA_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // SAFETY: rusage is plain integers, for which all-zero bytes are a valid value.
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child, filling the two out-parameters.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "strata run failed: status {status:#x}");
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    (usage.ru_maxrss as u64 * 1024, report)
}

const MIB: f64 = (1 << 20) as f64;

#[test]
fn each_default_setup_stays_within_its_configured_memory_plus_the_documented_overhead() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("configs/default.toml")).unwrap();
    let config = ExperimentConfig::parse(&root.join("configs/default.toml"), &text).unwrap();
    let default: toml::Table = toml::from_str(&text).unwrap();
    let layout = RowLayout::new(config.model.embedding_dim.single().unwrap(), &config.engine.optimizer);
    let rows = config.rows();
    let (stride, row_bytes) = (HostSlab::stride_bytes(layout) as u64, layout.bytes() as u64);
    let dir = tempfile::tempdir_in(root.join("target-test")).or_else(|_| tempfile::tempdir()).unwrap();

    // The baseline: no memory tier, no buffer, no read-ahead (every row from the file).
    let baseline_setup = toml::toml! { name = "baseline" device = 0 host = 0 };
    let (baseline, _) = peak_rss(&config_with(&default, &baseline_setup.into(), dir.path()), dir.path());
    eprintln!("baseline peak {:.1} MiB ({rows} rows of {row_bytes} bytes)", baseline as f64 / MIB);

    // One batch in flight: its ids and next-access times (8 bytes each per lookup), bag
    // offsets, dense features and labels.
    let batch_size = config.data.batch_size as u64;
    let lookups = batch_size * config.data.source().layout().lookups_per_sample() as u64;
    let batch_bytes = lookups * 16 + (batch_size * 26 + 1) * 8 + batch_size * (13 + 1) * 4;

    for setup in default["setup"].as_array().unwrap() {
        let (peak, report) = peak_rss(&config_with(&default, setup, dir.path()), dir.path());
        let result = &report["setups"][0];
        let engine = &result["outcome"]["engine"];
        let capacity = |tier: &str| engine[tier]["capacity_rows"].as_u64().unwrap_or(0);
        let (device, host, buffered) = (capacity("device"), capacity("host"), engine["write_buffer"]["capacity_rows"].as_u64().unwrap());
        let window = setup.get("window").and_then(toml::Value::as_integer).unwrap_or(0) as u64;
        // The configured sizes: the slabs and the write-back buffer's rows.
        let slabs = (device + host) * stride;
        let buffer = buffered * row_bytes;
        // Each tier indexes every row of the table (4 bytes) and each of its slots.
        let tiers = u64::from(device > 0) + u64::from(host > 0);
        let index = tiers * rows * 4 + (device + host) * SLOT_OVERHEAD;
        // The window: 2 * window + 3 batches (queue, channel, the one being made) and
        // the rows read ahead for `window` batches (at most one per lookup).
        let read_ahead = if window > 0 { (2 * window + 3) * batch_bytes + window * lookups * row_bytes } else { 0 };
        let bound = baseline + slabs + buffer + index + read_ahead + FIXED_OVERHEAD;
        let extra = peak as i64 - baseline as i64;
        let accounted = (slabs + buffer + index + read_ahead) as i64;
        eprintln!(
            "{}: peak {:.1} MiB = baseline + {:.1} MiB; slabs {:.1} + buffer {:.1} + index {:.1} + read-ahead {:.1} = {:.1} MiB; unaccounted {:.1} MiB",
            result["name"],
            peak as f64 / MIB,
            extra as f64 / MIB,
            slabs as f64 / MIB,
            buffer as f64 / MIB,
            index as f64 / MIB,
            read_ahead as f64 / MIB,
            accounted as f64 / MIB,
            (extra - accounted) as f64 / MIB,
        );
        assert!(result["outcome"]["steps"] == STEPS, "{result}");
        assert!(peak <= bound, "{}: peak {peak} bytes exceeds the bound {bound}", result["name"]);
    }
}
