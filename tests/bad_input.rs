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
fn config_with_an_empty_scan_names_it_and_the_gen_trace_flag_too() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        lab_config(dir.path(), &format!("[trace]\nsource = \"synthetic\"\nrequests = 10\nscan = {{ every = 0, length = 5 }}\n{SIMULATE}"));
    let err = fails(&["run", &config]);
    assert!(err.contains(&config) && err.contains("trace.scan.every and scan.length must be at least 1"), "{err}");
    let config =
        lab_config(dir.path(), &format!("[trace]\nsource = \"synthetic\"\nrequests = 10\n[trace.synthetic]\nweighted = true\n{SIMULATE}"));
    let err = fails(&["run", &config]);
    assert!(err.contains(&config) && err.contains("trace.synthetic.weighted: a trace is keys only"), "{err}");
    let out = dir.path().join("t.txt");
    let err = fails(&["gen-trace", "--out", out.to_str().unwrap(), "--scan-every", "10", "--scan-length", "0"]);
    assert!(err.contains("--scan-length") && err.contains("at least 1"), "{err}");
    assert!(!out.exists(), "nothing is written for bad flags");
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

fn lab_config(dir: &Path, text: &str) -> String {
    write(dir, "lab.toml", text.as_bytes())
}

const SIMULATE: &str = "[simulate]\npolicies = [\"lru\"]\ncapacities = [0.1]\n";

#[test]
fn config_with_a_wrong_type_names_the_table_line_and_the_types() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_config(dir.path(), &format!("[trace]\nsource = \"synthetic\"\nrequests = \"many\"\n{SIMULATE}"));
    let err = fails(&["run", &config]);
    assert!(err.contains(&format!("{config}: line 1, column 1: in `[trace]`: invalid type: string \"many\", expected u64")), "{err}");
    let config =
        lab_config(dir.path(), "[trace]\nsource = \"synthetic\"\nrequests = 10\n[simulate]\npolicies = \"lru\"\ncapacities = [0.1]\n");
    let err = fails(&["run", &config]);
    assert!(err.contains(&format!("{config}: line 5, column 12: invalid type: string \"lru\", expected a sequence")), "{err}");
}

#[test]
fn config_with_a_toml_syntax_error_is_one_line_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_config(dir.path(), "[trace\nsource = \"synthetic\"\n");
    let err = fails(&["run", &config]);
    assert!(err.contains(&format!("{config}: line 1, column 7: invalid table header")), "{err}");
}

#[test]
fn config_missing_a_field_names_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_config(dir.path(), "[trace]\nsource = \"synthetic\"\nrequests = 10\n[simulate]\npolicies = [\"lru\"]\n");
    let err = fails(&["run", &config]);
    assert!(err.contains(&format!("{config}: line 4, column 1: in `[simulate]`: missing field `capacities`")), "{err}");
}

#[test]
fn config_with_impossible_capacities_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (capacity, problem) in [("-0.5", "must be positive"), ("2.5", "must be a whole number"), ("nan", "must be positive")] {
        let config = lab_config(
            dir.path(),
            &format!("[trace]\nsource = \"synthetic\"\nrequests = 10\n[simulate]\npolicies = [\"lru\"]\ncapacities = [{capacity}]\n"),
        );
        let err = fails(&["run", &config]);
        assert!(err.contains(&config) && err.contains("simulate.capacities") && err.contains(problem), "{err}");
    }
}

#[test]
fn config_with_an_unknown_policy_or_trace_source_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_config(
        dir.path(),
        "[trace]\nsource = \"synthetic\"\nrequests = 10\n[simulate]\npolicies = [\"lru\", \"bogus\"]\ncapacities = [2]\n",
    );
    let err = fails(&["run", &config]);
    assert!(err.contains(&config) && err.contains("unknown policy `bogus`"), "{err}");
    let config = lab_config(dir.path(), &format!("[trace]\nsource = \"s3\"\nrequests = 10\n{SIMULATE}"));
    let err = fails(&["run", &config]);
    assert!(err.contains(&format!("{config}: line 2, column 10: unknown variant `s3`")), "{err}");
}

#[test]
fn config_naming_a_missing_trace_file_names_that_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_config(dir.path(), &format!("[trace]\nsource = \"file\"\npath = \"/nonexistent/keys.txt\"\n{SIMULATE}"));
    let err = fails(&["run", &config, "--out", dir.path().join("out").to_str().unwrap()]);
    assert_eq!(err, "strata: error: /nonexistent/keys.txt: No such file or directory (os error 2)");
}

#[test]
fn missing_or_non_utf8_config_file_is_named() {
    let err = fails(&["run", "/nonexistent/lab.toml"]);
    assert!(err.contains("/nonexistent/lab.toml: No such file or directory"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "lab.toml", b"[trace]\nsource = \"synth\xffetic\"\n");
    let err = fails(&["run", &config]);
    assert!(err.contains(&format!("{config}: line 2, column 16: not valid UTF-8 (byte 23)")), "{err}");
}

/// configs/train-small.toml with `from` replaced by `to` (which must occur).
#[cfg(feature = "torch")]
fn experiment_config(dir: &Path, from: &str, to: &str) -> String {
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/train-small.toml")).unwrap();
    assert!(base.contains(from), "configs/train-small.toml no longer holds `{from}`");
    write(dir, "experiment.toml", base.replacen(from, to, 1).as_bytes())
}

/// Runs an experiment config that must fail before any work: no output is written.
#[cfg(feature = "torch")]
fn experiment_fails(dir: &Path, config: &str) -> String {
    let out = dir.join("out");
    let err = fails(&["run", config, "--out", out.to_str().unwrap()]);
    assert!(err.contains(config), "{err}");
    assert!(!out.exists(), "no output for a bad config");
    err
}

#[cfg(feature = "torch")]
#[test]
fn experiment_config_with_an_unknown_engine_field_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment_config(dir.path(), "init_seed = 1\n", "init_seed = 1\ncolour = \"red\"\n");
    let err = experiment_fails(dir.path(), &config);
    assert!(err.contains("unknown field `colour`") && err.contains("line "), "{err}");
}

#[cfg(feature = "torch")]
#[test]
fn experiment_config_with_a_wrong_type_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment_config(dir.path(), "init_scale = 0.05", "init_scale = \"big\"");
    let err = experiment_fails(dir.path(), &config);
    assert!(err.contains("invalid type: string \"big\", expected f32") && err.contains("line "), "{err}");
}

#[cfg(feature = "torch")]
#[test]
fn experiment_config_with_an_unknown_read_path_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment_config(dir.path(), "init_seed = 1\n", "init_seed = 1\nread_path = \"aio\"\n");
    let err = experiment_fails(dir.path(), &config);
    assert!(err.contains("unknown variant `aio`"), "{err}");
}

#[cfg(feature = "torch")]
#[test]
fn experiment_config_with_impossible_tier_sizes_names_the_setup() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, problem) in [
        ("device = 0.02", "device = 2.5", "device: capacity `2.5`: a capacity of 1 or more counts rows and must be a whole number"),
        ("host = 0.10", "host = -0.1", "host: capacity `-0.1` must be positive"),
    ] {
        let config = experiment_config(dir.path(), from, to);
        let err = experiment_fails(dir.path(), &config);
        assert!(err.contains("setup `device 2% + host 10%, LRU, no prefetch`") && err.contains(problem), "{err}");
    }
}

#[test]
fn text_key_beyond_u64_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "big.txt", b"1\n18446744073709551616\n");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "2"]);
    assert!(err.contains(&format!("{trace}:2: expected an unsigned integer key, found `18446744073709551616`")), "{err}");
}

#[test]
fn non_utf8_text_line_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "bytes.txt", b"1\n2\n\xff\xfe3\n");
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "2"]);
    assert!(err.contains(&format!("{trace}:3: expected an unsigned integer key")), "{err}");
}

fn oracle_record(time: u32, id: u64, next: i64) -> Vec<u8> {
    [&time.to_le_bytes()[..], &id.to_le_bytes(), &1u32.to_le_bytes(), &next.to_le_bytes()].concat()
}

#[test]
fn negative_next_access_names_record_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = [oracle_record(0, 1, -1), oracle_record(1, 2, -5)].concat();
    let trace = write(dir.path(), "neg.oracleGeneral", &bytes);
    let err = fails(&["simulate", "--trace", &trace, "--policies", "lru", "--capacity", "2"]);
    assert!(err.contains(&format!("{trace}: record 1 at byte 24: next_access_vtime -5 is negative")), "{err}");
}

#[test]
fn binary_trace_shorter_than_one_record_is_truncated_record_zero() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "tiny.oracleGeneral", &[1, 2, 3]);
    let err = fails(&["simulate", "--trace", &trace, "--policies", "belady", "--capacity", "2"]);
    assert!(err.contains(&format!("{trace}: truncated record 0 at byte 0: 3 of 24 bytes")), "{err}");
}

fn criteo_line() -> Vec<String> {
    std::iter::once("1".to_string()).chain((0..13).map(|i| i.to_string())).chain((0..26).map(|i| format!("{:08x}", i * 7919))).collect()
}

/// Simulates a Criteo TSV of a good line then `bad`; returns the error line.
fn criteo_fails(bad: &[String]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}\n{}\n", criteo_line().join("\t"), bad.join("\t"));
    let tsv = write(dir.path(), "day_1.tsv", text.as_bytes());
    let err = fails(&["simulate", "--trace", &tsv, "--policies", "lru", "--capacity", "4"]);
    (tsv, err)
}

#[test]
fn criteo_label_other_than_0_or_1_names_line_and_column() {
    let mut bad = criteo_line();
    bad[0] = "2".into();
    let (tsv, err) = criteo_fails(&bad);
    assert!(err.contains(&format!("{tsv}:2: column 1: label must be 0 or 1, found `2`")), "{err}");
}

#[test]
fn criteo_non_integer_dense_feature_names_line_and_column() {
    let mut bad = criteo_line();
    bad[5] = "1.5".into();
    let (tsv, err) = criteo_fails(&bad);
    assert!(err.contains(&format!("{tsv}:2: column 6: expected an integer, found `1.5`")), "{err}");
}

#[test]
fn criteo_line_with_too_many_columns_names_the_count() {
    let mut bad = criteo_line();
    bad.push("extra".into());
    let (tsv, err) = criteo_fails(&bad);
    assert!(err.contains(&format!("{tsv}:2: expected 40 tab-separated fields, found 41")), "{err}");
}

#[test]
fn criteo_hash_wider_than_64_bits_is_bad_hex() {
    let mut bad = criteo_line();
    bad[30] = "1234567890abcdef01".into();
    let (tsv, err) = criteo_fails(&bad);
    assert!(err.contains(&format!("{tsv}:2: column 31: expected a hex hash, found `1234567890abcdef01`")), "{err}");
}

#[test]
fn trace_ids_beyond_the_table_are_rejected_and_leave_it_usable() {
    use strata::engine::batch::Batch;
    use strata::engine::flat::FlatTable;
    use strata::engine::pool::Pooling;
    use strata::engine::table::config::TableConfig;
    use strata::engine::table::TieredTable;
    use strata::engine::{EngineError, Optimizer, RowInit, RowLayout};
    let optimizer = Optimizer::default();
    let layout = RowLayout::new(4, &optimizer);
    let init = RowInit::Uniform { seed: 3, scale: 0.1 };
    let config = TableConfig::host_only(10, optimizer, Pooling::Sum);
    let mut table = TieredTable::new(&config, Box::new(FlatTable::new(100, layout, init))).unwrap();
    let beyond = Batch::new(vec![1, 100], vec![0, 2], 0);
    let mut out = vec![f32::NAN; layout.dim];
    let err = table.lookup(&beyond, &mut out).unwrap_err();
    assert!(matches!(err, EngineError::RowOutOfRange { row: 100, rows: 100 }), "{err}");
    assert_eq!(err.to_string(), "row 100 is out of range: the table has 100 rows");
    assert!(out.iter().all(|v| v.is_nan()));
    let err = table.apply_gradients(&beyond, &[0.5; 4]).unwrap_err();
    assert!(matches!(err, EngineError::RowOutOfRange { row: 100, .. }), "{err}");
    // The table is untouched and still serves good batches.
    let good = Batch::new(vec![1, 99], vec![0, 2], 0);
    table.lookup(&good, &mut out).unwrap();
    let mut reference = FlatTable::new(100, layout, init);
    let mut want = vec![0f32; layout.dim];
    reference.lookup(&good, Pooling::Sum, &mut want);
    assert_eq!(out, want);
}

/// A table file made by `init-table` (100 rows of dim 16), for the benchmark that opens
/// existing table files.
fn table_file(dir: &Path, name: &str) -> String {
    let path = dir.join(name).to_str().unwrap().to_string();
    let out = strata(&["init-table", "--out", &path, "--rows", "100", "--dim", "16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

fn bench_lookup_fails(table: &str) -> String {
    let err =
        fails(&["bench", "lookup", "--file", table, "--scale", "0.0001", "--dim", "8", "--batch", "4", "--warmup", "1", "--batches", "1"]);
    assert!(err.starts_with(&format!("strata: error: {table}: ")), "{err}");
    err
}

fn overwrite(path: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn table_file_with_wrong_magic_is_not_a_strata_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(dir.path(), "magic.strata");
    overwrite(&table, 0, b"PARQUET1");
    let err = bench_lookup_fails(&table);
    assert!(err.contains("header: bad magic \"PARQUET1\" (expected \"STRATATB\"): not a Strata table file"), "{err}");
}

#[test]
fn table_file_of_another_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(dir.path(), "version.strata");
    overwrite(&table, 8, &7u32.to_le_bytes());
    let err = bench_lookup_fails(&table);
    assert!(err.contains("header: format version 7 is not supported (this build reads version 1)"), "{err}");
}

#[test]
fn table_file_of_another_dim_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(dir.path(), "dim.strata");
    let err = bench_lookup_fails(&table);
    assert!(err.contains("holds 100 rows of dim 16 with 1 state values; this benchmark needs") && err.contains("of dim 8"), "{err}");
}

#[test]
fn truncated_table_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_file(dir.path(), "short.strata");
    std::fs::OpenOptions::new().write(true).open(&table).unwrap().set_len(4096 + 100).unwrap();
    let err = bench_lookup_fails(&table);
    assert!(err.contains("file is 4196 bytes but its header describes 12288 bytes") && err.contains("truncated"), "{err}");
}

/// Found by tests/fuzz.rs: errors the TOML parser leaves without a message.
#[test]
fn config_with_a_value_missing_at_the_end_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_config(dir.path(), "[trace]\nsource = \"synthetic\"\nrequests = ");
    let err = fails(&["run", &config]);
    assert!(err.ends_with(&format!("{config}: line 3, column 12: unexpected end of the file (a value is missing?)")), "{err}");
}

#[test]
fn criteo_line_that_is_not_utf8_names_the_line() {
    let mut bad = criteo_line().join("\t").into_bytes();
    bad[3] = 0xff;
    let dir = tempfile::tempdir().unwrap();
    let text = [criteo_line().join("\t").as_bytes(), b"\n", &bad, b"\n"].concat();
    let tsv = write(dir.path(), "day_2.tsv", &text);
    let err = fails(&["simulate", "--trace", &tsv, "--policies", "lru", "--capacity", "4"]);
    assert!(err.contains(&format!("{tsv}:2: not valid UTF-8 (byte 4 of the line)")), "{err}");
}

#[test]
fn config_with_an_impossible_criteo_scale_is_rejected_before_reading_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    for scale in ["0.0", "-1.0", "nan"] {
        let config = lab_config(
            dir.path(),
            &format!("[trace]\nsource = \"file\"\npath = \"/nonexistent/day_0.tsv\"\ncriteo_scale = {scale}\n{SIMULATE}"),
        );
        let err = fails(&["run", &config]);
        assert!(err.contains(&format!("{config}: trace.criteo_scale must be positive, got")), "{err}");
    }
}
