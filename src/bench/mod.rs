//! The side-by-side benchmarks behind `strata bench`: each runs Strata next to a peer
//! or a machine limit in the same run and prints the ratio; `probe` holds the
//! measurements they share with `strata calibrate`.

pub mod embedding;
pub mod gather;
pub mod lookup;
pub mod probe;
pub mod simulate;
pub mod storage;
pub mod validate_plan;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Python interpreter: `$var` when set, else `fallback` when that file exists, else
/// `python3` on the PATH.
pub fn python_from_env(var: &str, fallback: Option<PathBuf>) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).or_else(|| fallback.filter(|p| p.is_file())).unwrap_or_else(|| PathBuf::from("python3"))
}

/// Runs `python script args..` and parses the one JSON document it prints on stdout;
/// `setup` tells the user how to get a working interpreter.
pub fn run_python_json<T: serde::de::DeserializeOwned, S: AsRef<std::ffi::OsStr>>(
    python: &Path,
    script: &str,
    args: &[S],
    setup: &str,
) -> anyhow::Result<T> {
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("{}: cannot start ({e}); {setup}", python.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{} {script} failed: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("no message")
        );
    }
    serde_json::from_slice(&output.stdout).map_err(|e| anyhow::anyhow!("{script}: unreadable output: {e}"))
}
