//! Bad input to the CLI gives a one-line error naming the file and the position, a
//! non-zero exit, and never a panic.

use std::path::Path;
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env("STRATA_LOG", "error").output().expect("strata runs")
}

/// Asserts a clean failure and returns the error line.
fn fails(args: &[&str]) -> String {
    let out = strata(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert_ne!(out.status.code(), Some(101), "panicked for {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked for {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line for {args:?}, got: {stderr}");
    lines[0].to_string()
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn missing_trace_file_names_the_file() {
    let err = fails(&["simulate", "--trace", "/nonexistent/trace.txt", "--policies", "lru", "--capacity", "10"]);
    assert!(err.contains("/nonexistent/trace.txt"), "{err}");
}

#[test]
fn non_numeric_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "bad.txt", b"1\n2\n3\nfour\n5\n");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "2"]);
    assert!(err.contains(&format!("{trace}:4:")), "{err}");
    assert!(err.contains("four"), "{err}");
}

#[test]
fn truncated_binary_record_names_record_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for i in 0..3u64 {
        bytes.extend_from_slice(&(i as u32).to_le_bytes());
        bytes.extend_from_slice(&i.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(-1i64).to_le_bytes());
    }
    bytes.extend_from_slice(&[7, 0, 0, 0, 9]); // 5 bytes of a fourth record
    let trace = write(dir.path(), "t.oracleGeneral", &bytes);
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "2"]);
    assert!(err.contains(&trace), "{err}");
    assert!(err.contains("truncated record 3 at byte 72"), "{err}");
}

#[test]
fn unknown_policy_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "ok.txt", b"1\n2\n");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru,bogus", "--capacity", "2"]);
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn zero_and_malformed_capacities_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "ok.txt", b"1\n2\n");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "0"]);
    assert!(err.contains("capacity `0`"), "{err}");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "2.5"]);
    assert!(err.contains("2.5"), "{err}");
}

#[test]
fn empty_trace_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "empty.txt", b"");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "0.5"]);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn bad_criteo_tsv_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<String> = std::iter::once("1".to_string())
        .chain((0..13).map(|i| i.to_string()))
        .chain((0..26).map(|i| format!("{:08x}", i * 7919)))
        .collect();
    let mut bad = good.clone();
    bad[20] = "zz12".into();
    let text = format!("{}\n{}\n", good.join("\t"), bad.join("\t"));
    let tsv = write(dir.path(), "day_0.tsv", text.as_bytes());
    let err = fails(&["simulate", "--trace", &tsv, "--policies", "lru", "--capacity", "4"]);
    assert!(err.contains(&format!("{tsv}:2:")) && err.contains("column 21") && err.contains("zz12"), "{err}");

    let short = write(dir.path(), "short.tsv", b"1\t2\t3\n");
    let err = fails(&["simulate", "--trace", &short, "--policies", "lru", "--capacity", "4"]);
    assert!(err.contains(&format!("{short}:1:")) && err.contains("40 tab-separated fields"), "{err}");
}

#[test]
fn config_with_unknown_field_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "lab.toml",
        b"[trace]\nsource = \"synthetic\"\nrequests = 100\n\n[simulate]\npolicies = [\"lru\"]\ncapacities = [0.1]\ncolour = \"red\"\n",
    );
    let err = fails(&["run", &config]);
    assert!(err.contains(&config) && err.contains("line 8") && err.contains("colour"), "{err}");
}

#[test]
fn config_with_bad_values_is_rejected_before_work_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = write(
        dir.path(),
        "lab.toml",
        format!(
            "[trace]\nsource = \"synthetic\"\nrequests = 100\n[simulate]\npolicies = [\"lru\"]\ncapacities = [0.0]\n[output]\ndir = \"{}\"\n",
            out.display()
        )
        .as_bytes(),
    );
    let err = fails(&["run", &config]);
    assert!(err.contains(&config) && err.contains("capacities"), "{err}");
    assert!(!out.exists(), "no output may be written for a bad config");
}

#[test]
fn init_table_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.strata");
    let path = table.to_str().unwrap();
    let ok = strata(&["init-table", "--out", path, "--rows", "100", "--dim", "8"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let before = std::fs::read(&table).unwrap();
    let err = fails(&["init-table", "--out", path, "--rows", "5", "--dim", "4"]);
    assert!(err.contains(path) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&table).unwrap(), before, "the existing table is untouched");
    let forced = strata(&["init-table", "--out", path, "--rows", "5", "--dim", "4", "--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(&table).unwrap(), before);
}
