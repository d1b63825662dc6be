//! Trace formats: what `gen-trace` writes reads back identically, next-access times
//! are right, and the simulator reads text, oracleGeneral and Criteo TSV alike.

use std::collections::HashMap;
use std::process::Command;

use strata::trace::{KeySource, OracleGeneralReader, TextReader, TraceFormat, TraceRecord, NEVER};

fn strata(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env("STRATA_LOG", "error").output().unwrap();
    assert!(out.status.success(), "strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn read_all(mut source: impl KeySource) -> Vec<TraceRecord> {
    let mut all = Vec::new();
    let mut chunk = Vec::new();
    loop {
        source.next_chunk(&mut chunk, 1000).unwrap();
        if chunk.is_empty() {
            return all;
        }
        all.extend_from_slice(&chunk);
    }
}

#[test]
fn text_and_oracle_general_hold_the_same_keys_with_correct_next_access() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("t.txt");
    let bin = dir.path().join("t.oracleGeneral");
    for path in [&txt, &bin] {
        strata(&["gen-trace", "--out", path.to_str().unwrap(), "--requests", "50000", "--scale", "0.0002", "--seed", "9"]);
    }
    let text = read_all(TextReader::open(&txt).unwrap());
    let oracle = read_all(OracleGeneralReader::open(&bin).unwrap());
    assert_eq!(text.len(), 50_000);
    assert_eq!(text.iter().map(|r| r.key).collect::<Vec<_>>(), oracle.iter().map(|r| r.key).collect::<Vec<_>>());
    // Brute-force next access.
    let mut next_seen: HashMap<u64, u64> = HashMap::new();
    for (i, r) in oracle.iter().enumerate().rev() {
        let expected = next_seen.insert(r.key, i as u64).unwrap_or(NEVER);
        assert_eq!(r.next_access, expected, "record {i}");
    }
    assert!(oracle.iter().any(|r| r.next_access != NEVER));
}

#[test]
fn oracle_general_records_have_libcachesim_layout() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("t.oracleGeneral");
    strata(&["gen-trace", "--out", bin.to_str().unwrap(), "--requests", "100", "--one-hot"]);
    let bytes = std::fs::read(&bin).unwrap();
    assert_eq!(bytes.len(), 100 * 24);
    for (i, rec) in bytes.chunks_exact(24).enumerate() {
        assert_eq!(u32::from_le_bytes(rec[0..4].try_into().unwrap()), i as u32, "time = index");
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().unwrap()), 1, "size 1");
        let next = i64::from_le_bytes(rec[16..24].try_into().unwrap());
        assert!(next == -1 || next > i as i64);
    }
}

#[test]
fn format_names_and_guesses() {
    assert_eq!("oracle-general".parse::<TraceFormat>().unwrap(), TraceFormat::OracleGeneral);
    assert_eq!("txt".parse::<TraceFormat>().unwrap(), TraceFormat::Txt);
    assert!("parquet".parse::<TraceFormat>().is_err());
    assert_eq!(TraceFormat::from_path("a/b.oracleGeneral".as_ref()), TraceFormat::OracleGeneral);
    assert_eq!(TraceFormat::from_path("day_0.tsv".as_ref()), TraceFormat::CriteoTsv);
    assert_eq!(TraceFormat::from_path("keys.txt".as_ref()), TraceFormat::Txt);
}

#[test]
fn same_trace_in_both_formats_simulates_identically() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("t.txt");
    let bin = dir.path().join("t.oracleGeneral");
    for path in [&txt, &bin] {
        strata(&["gen-trace", "--out", path.to_str().unwrap(), "--requests", "30000", "--scale", "0.0002"]);
    }
    let run = |path: &std::path::Path| {
        let json = strata(&[
            "simulate",
            "--trace",
            path.to_str().unwrap(),
            "--policies",
            "lru,s3fifo,belady",
            "--capacity",
            "0.05,500",
            "--json",
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["policy"].as_str().unwrap().to_string(), r["capacity_rows"].as_u64().unwrap(), r["misses"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let a = run(&txt);
    assert_eq!(a.len(), 6);
    assert_eq!(a, run(&bin));
}

#[test]
fn criteo_tsv_rows_are_hash_mod_table_size() {
    let dir = tempfile::tempdir().unwrap();
    let fields: Vec<String> = std::iter::once("0".to_string())
        .chain((0..13).map(|i| if i == 3 { String::new() } else { format!("{}", i as i64 - 2) }))
        .chain((0..26).map(|t| if t == 5 { String::new() } else { format!("{:08x}", 0x9000_0000u32 + t) }))
        .collect();
    let path = dir.path().join("day_0.tsv");
    std::fs::write(&path, format!("{}\n", fields.join("\t"))).unwrap();
    let layout = strata::data::TableLayout::criteo(0.001, false);
    let keys: Vec<u64> = read_all(strata::trace::CriteoTsvReader::open(&path, layout.rows()).unwrap()).iter().map(|r| r.key).collect();
    assert_eq!(keys.len(), 26);
    for (t, &key) in keys.iter().enumerate() {
        let hash = if t == 5 { 0 } else { 0x9000_0000u64 + t as u64 };
        assert_eq!(key, layout.global_row(t, hash % layout.rows()[t]), "table {t}");
    }
}

#[test]
fn a_scanned_trace_from_gen_trace_simulates_like_the_lab_config_that_describes_it() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("scan.oracleGeneral");
    let (every, length) = ("4000", "900");
    strata(&[
        "gen-trace",
        "--out",
        trace.to_str().unwrap(),
        "--requests",
        "30000",
        "--scale",
        "0.0002",
        "--scan-every",
        every,
        "--scan-length",
        length,
    ]);
    let records = read_all(OracleGeneralReader::open(&trace).unwrap());
    assert_eq!(records.len(), 30000);
    // The first scan starts at row 0 after `every` lookups and reads consecutive rows.
    let keys: Vec<u64> = records.iter().map(|r| r.key).collect();
    assert_eq!(keys[4000..4900], (0..900).collect::<Vec<u64>>()[..]);
    assert_eq!(keys[8900..9800], (900..1800).collect::<Vec<u64>>()[..]);

    let out = dir.path().join("lab");
    let config = dir.path().join("lab.toml");
    std::fs::write(
        &config,
        format!(
            "[trace]\nsource = \"synthetic\"\nrequests = 30000\nscan = {{ every = {every}, length = {length} }}\n[trace.synthetic]\nscale = 0.0002\n\
             [simulate]\npolicies = [\"lru\", \"tinylfu\", \"belady\"]\ncapacities = [0.05, 500]\nmrc = false\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    )
    .unwrap();
    strata(&["run", config.to_str().unwrap()]);
    let misses = |json: &serde_json::Value| {
        json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["policy"].as_str().unwrap().to_string(), r["capacity_rows"].as_u64().unwrap(), r["misses"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let lab: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let file: serde_json::Value = serde_json::from_str(&strata(&[
        "simulate",
        "--trace",
        trace.to_str().unwrap(),
        "--policies",
        "lru,tinylfu,belady",
        "--capacity",
        "0.05,500",
        "--json",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(misses(&lab).len(), 6);
    assert_eq!(misses(&lab), misses(&file));
}
