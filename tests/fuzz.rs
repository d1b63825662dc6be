//! Fuzzing every reader and parser a user hands files to, with proptest: the text,
//! oracleGeneral and Criteo TSV trace readers, the table header decoder and table files,
//! and the lab and experiment config parsers get corpus seeds mutated a few times (byte
//! flips, insertions of format tokens, deletions, truncations, duplications) or
//! arbitrary bytes. Each must give records or an error naming the file (and, where it
//! reads them, what the simple reference reading of the format says), never a panic.
//! The seeds in tests/corpus/ (and configs/) are replayed unmutated first. Run longer
//! with `PROPTEST_CASES=100000`; see docs/RELIABILITY.md.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use strata::engine::storage::format::{self, Header, HEADER_BYTES};
use strata::engine::storage::{ReadConfig, ReadPath, TableFile};
use strata::lab::LabConfig;
use strata::trace::{annotate_next_access, CriteoTsvReader, KeySource, OracleGeneralReader, TextReader, TraceError, TraceRecord, NEVER};

/// The seed files of `target`: tests/corpus/TARGET/*, and `configs` files ending in
/// `suffix` for the config targets, sorted by name.
fn seeds(target: &str, configs: &[&str]) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("tests/corpus").join(target))
        .map(|dir| dir.map(|entry| entry.expect("corpus entry").path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths.extend(configs.iter().map(|name| root.join("configs").join(name)));
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

/// Pieces of the formats that mutations splice in.
const TOKENS: &[&str] = &[
    "\n",
    "\r\n",
    "\t",
    " ",
    "",
    "0",
    "1",
    "-1",
    "+1",
    "18446744073709551615",
    "18446744073709551616",
    "ffffffff",
    "zz",
    "\u{a0}",
    "\u{1F600}",
    "=",
    "[",
    "]",
    "[[setup]]",
    "{",
    "}",
    ",",
    "\"",
    "#",
    "1e400",
    "nan",
    "inf",
    "-0.0",
    "true",
    "kind",
    "= {}",
    "0x7fffffff",
];

/// Values that replace a config value (after `=`), a TSV field or a whole line.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "0.5",
    "2.5",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "5e-324",
    "4294967296",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "\"\"",
    "\"x\"",
    "\"lru\"",
    "\"lookahead:0\"",
    "\"static:0\"",
    "[]",
    "[0]",
    "[0.0, 1e9]",
    "{}",
    "{ kind = \"sgd\", lr = 0 }",
    "{ kind = \"frequency\", threshold = 0, counters = 0 }",
    "true",
    "ffffffff",
    "",
    "zz",
    "1.5",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// Replaces the value of a line `key = value`, else a tab-separated field, else
    /// the whole line.
    ReplaceValue {
        line: Index,
        field: Index,
        value: Index,
    },
    Flip {
        at: Index,
        bit: u8,
    },
    Set {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        token: Index,
    },
    InsertBytes {
        at: Index,
        bytes: Vec<u8>,
    },
    Delete {
        at: Index,
        len: usize,
    },
    Duplicate {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(line, field, value)| Mutation::ReplaceValue { line, field, value }),
        1 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::InsertBytes { at, bytes }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for m in mutations {
        let len = bytes.len();
        let pos = |at: &Index| if len == 0 { 0 } else { at.index(len) };
        match m {
            Mutation::ReplaceValue { line, field, value } => bytes = replace_value(&bytes, line, field, VALUES[value.index(VALUES.len())]),
            Mutation::Flip { at, bit } if len > 0 => bytes[pos(at)] ^= 1 << bit,
            Mutation::Set { at, byte } if len > 0 => bytes[pos(at)] = *byte,
            Mutation::Insert { at, token } => {
                let at = pos(at);
                bytes.splice(at..at, TOKENS[token.index(TOKENS.len())].bytes());
            }
            Mutation::InsertBytes { at, bytes: inserted } => {
                let at = pos(at);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Mutation::Delete { at, len: n } if len > 0 => {
                let at = pos(at);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate { at, len: n } if len > 0 => {
                let at = pos(at);
                let piece = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, piece);
            }
            Mutation::Truncate { at } => bytes.truncate(pos(at)),
            _ => {}
        }
    }
    bytes
}

fn replace_value(bytes: &[u8], line: &Index, field: &Index, value: &str) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let at = line.index(lines.len());
    let target = &mut lines[at];
    if let Some(eq) = target.iter().position(|&b| b == b'=') {
        target.truncate(eq + 1);
        target.push(b' ');
        target.extend_from_slice(value.as_bytes());
    } else if target.contains(&b'\t') {
        let mut fields: Vec<Vec<u8>> = target.split(|&b| b == b'\t').map(<[u8]>::to_vec).collect();
        let at = field.index(fields.len());
        fields[at] = value.as_bytes().to_vec();
        *target = fields.join(&b'\t');
    } else {
        *target = value.as_bytes().to_vec();
    }
    lines.join(&b'\n')
}

/// A seed mutated one to eight times (most cases), or arbitrary bytes.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..8)).prop_map(|(s, m)| mutate(&s, &m)),
        1 => prop::collection::vec(any::<u8>(), 0..600),
    ]
}

/// Text for the config targets: mostly valid UTF-8 (invalid bytes replaced), so that
/// cases get past the UTF-8 check to the TOML parser and the checks behind it.
fn text_input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => input(seeds.clone()).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned().into_bytes()),
        1 => input(seeds),
    ]
}

/// A scratch file a target reads (one per test thread, rewritten for each case).
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        Scratch { _dir: dir, path }
    }

    fn holding(&self, bytes: &[u8]) -> &Path {
        std::fs::write(&self.path, bytes).expect("write scratch file");
        &self.path
    }
}

fn assert_names(error: &dyn std::fmt::Display, path: &Path) {
    let message = error.to_string();
    assert!(message.starts_with(&format!("{}:", path.display())), "error does not name the file: {message}");
    assert!(!message.contains('\n'), "error spans lines: {message}");
    assert!(!message.trim_end().ends_with(':'), "error says nothing after its position: {message}");
}

/// Every record of `source`, in chunks of 7 (to cross chunk boundaries), up to the
/// first error.
fn read_all(mut source: impl KeySource) -> (Vec<TraceRecord>, Option<TraceError>) {
    let (mut all, mut chunk) = (Vec::new(), Vec::new());
    loop {
        if let Err(e) = source.next_chunk(&mut chunk, 7) {
            return (all, Some(e));
        }
        if chunk.is_empty() {
            return (all, None);
        }
        all.extend_from_slice(&chunk);
    }
}

// ---- text traces ----

/// The text format read simply: the keys, or the 1-based line of the first bad one.
fn reference_text(bytes: &[u8]) -> Result<Vec<u64>, u64> {
    let mut keys = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if bytes.ends_with(b"\n") || bytes.is_empty() {
        lines.pop();
    }
    for (i, line) in lines.iter().enumerate() {
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let key = std::str::from_utf8(text).ok().filter(|t| t.bytes().all(|b| b.is_ascii_digit())).and_then(|t| t.parse::<u64>().ok());
        keys.push(key.ok_or(i as u64 + 1)?);
    }
    Ok(keys)
}

fn check_text(scratch: &Scratch, bytes: &[u8]) {
    let path = scratch.holding(bytes);
    let (records, error) = read_all(TextReader::open(path).expect("open"));
    let keys: Vec<u64> = records.iter().map(|r| r.key).collect();
    assert!(records.iter().all(|r| r.next_access == NEVER));
    match (reference_text(bytes), error) {
        (Ok(want), None) => assert_eq!(keys, want),
        (Err(line), Some(e)) => {
            assert_names(&e, path);
            assert!(e.to_string().starts_with(&format!("{}:{line}: ", path.display())), "{e} (reference: line {line})");
        }
        (want, got) => panic!("reference {want:?}, reader {:?} then {got:?}", keys),
    }
}

// ---- oracleGeneral traces ----

fn check_oracle_general(scratch: &Scratch, bytes: &[u8]) {
    let path = scratch.holding(bytes);
    let (records, error) = read_all(OracleGeneralReader::open(path).expect("open"));
    let whole = bytes.len() / 24;
    let field = |r: usize, at: usize| i64::from_le_bytes(bytes[r * 24 + at..r * 24 + at + 8].try_into().expect("8 bytes"));
    let bad_next = (0..whole).find(|&r| field(r, 16) < -1);
    match (bad_next, bytes.len() % 24, error) {
        (Some(r), _, Some(e)) => {
            assert_names(&e, path);
            assert!(e.to_string().contains(&format!("record {r} at byte {}", r * 24)), "{e}");
        }
        (None, 0, None) => {
            assert_eq!(records.len(), whole);
            for (r, record) in records.iter().enumerate() {
                assert_eq!(record.key, field(r, 4) as u64);
                let next = field(r, 16);
                assert_eq!(record.next_access, if next == -1 { NEVER } else { next as u64 });
            }
        }
        (None, rest, Some(e)) if rest != 0 => {
            assert_names(&e, path);
            assert!(e.to_string().contains(&format!("truncated record {whole} at byte {}: {rest} of 24 bytes", whole * 24)), "{e}");
        }
        (bad, rest, got) => panic!("bad next_access at {bad:?}, {rest} trailing bytes, reader gave {got:?}"),
    }
    // Annotating next-access times rewrites the file: then every record's next access
    // is the next record with the same id.
    match annotate_next_access(path) {
        Ok(()) => {
            assert_eq!(bytes.len() % 24, 0);
            let (records, error) = read_all(OracleGeneralReader::open(path).expect("open"));
            assert!(error.is_none(), "{error:?}");
            for (i, record) in records.iter().enumerate() {
                let next = records[i + 1..].iter().position(|r| r.key == record.key).map_or(NEVER, |p| (i + 1 + p) as u64);
                assert_eq!(record.next_access, next, "record {i}");
            }
        }
        Err(e) => {
            assert_names(&e, path);
            assert_ne!(bytes.len() % 24, 0, "{e}");
        }
    }
}

// ---- Criteo TSV ----

fn check_criteo_tsv(scratch: &Scratch, bytes: &[u8]) {
    let path = scratch.holding(bytes);
    let layout = strata::data::TableLayout::criteo(0.0001, false);
    let (records, error) = read_all(CriteoTsvReader::open(path, layout.rows()).expect("open"));
    assert_eq!(records.len() % 26, 0, "26 ids per line");
    assert!(records.iter().all(|r| r.key < layout.total_rows()), "ids inside the tables");
    for (i, record) in records.iter().enumerate() {
        let table = i % 26;
        let offset = layout.global_row(table, 0);
        assert!(record.key >= offset && record.key < offset + layout.rows()[table], "record {i} outside table {table}");
    }
    if let Some(e) = error {
        assert_names(&e, path);
        let line = e.to_string()[path.display().to_string().len() + 1..].split(':').next().unwrap_or("").parse::<u64>();
        assert!(matches!(line, Ok(l) if l >= 1), "no line number: {e}");
    }
}

// ---- table files ----

/// Decodes the header page of `bytes` (resealed first when `reseal`, so mutations
/// reach the checks behind the checksum).
fn check_table_header(bytes: &[u8], reseal: bool) {
    let mut page = bytes.to_vec();
    if reseal && page.len() >= HEADER_BYTES {
        format::seal_header(&mut page);
    }
    if let Ok(header) = Header::decode(&page) {
        assert_eq!(header.page_size % format::ALIGN, 0);
        assert!(header.rows_per_page >= 1 && header.rows_per_page * header.layout.bytes() + format::CHECKSUM_BYTES <= header.page_size);
        let mut encoded = vec![0u8; HEADER_BYTES];
        header.encode(&mut encoded);
        assert_eq!(Header::decode(&encoded), Ok(header), "a decoded header encodes to the same header");
    }
}

/// Opens `bytes` as a table file with `read_path`; if it opens, reads every row and
/// writes one back: every outcome is rows or an error naming the file.
fn check_table_file(scratch: &Scratch, bytes: &[u8], read_path: ReadPath, reseal: bool) {
    let mut bytes = bytes.to_vec();
    if reseal && bytes.len() >= HEADER_BYTES {
        format::seal_header(&mut bytes[..HEADER_BYTES]);
    }
    let path = scratch.holding(&bytes);
    let mut table = match TableFile::open_with(path, ReadConfig { read_path, ..ReadConfig::default() }) {
        Ok(table) => table,
        Err(e) => return assert_names(&e, path),
    };
    let rows = table.rows();
    assert!(rows <= 1 << 20, "a fuzzed file of {} bytes opened with {rows} rows", bytes.len());
    let floats = table.layout().words();
    let all: Vec<u64> = (0..rows).collect();
    let mut out = vec![0f32; all.len() * floats];
    if let Err(e) = table.read_rows(&all, &mut out) {
        assert_names(&e, path);
    }
    if rows > 0 {
        let row: Vec<f32> = (0..floats).map(|i| i as f32 - 0.5).collect();
        match table.write_rows(&[rows - 1], &row) {
            Ok(()) => {
                let mut back = vec![0f32; floats];
                table.read_rows(&[rows - 1], &mut back).expect("a row just written reads back");
                assert_eq!(back, row);
            }
            Err(e) => assert_names(&e, path),
        }
    }
}

// ---- configs ----

fn check_lab_config(scratch: &Scratch, bytes: &[u8]) {
    let path = scratch.holding(bytes);
    if let Err(e) = LabConfig::load(path) {
        assert_names(&e, path);
    }
}

#[cfg(feature = "torch")]
fn check_experiment_config(scratch: &Scratch, bytes: &[u8]) {
    let path = scratch.holding(bytes);
    let parsed = strata::config::read(path)
        .map_err(strata::experiment::ExperimentError::from)
        .and_then(|text| strata::experiment::ExperimentConfig::parse(path, &text));
    if let Err(e) = parsed {
        assert_names(&e, path);
    }
}

// ---- the committed corpus, replayed as it is ----

#[test]
fn corpus_replays_without_panics() {
    let scratch = Scratch::new("corpus");
    for seed in seeds("text", &[]) {
        check_text(&scratch, &seed);
    }
    for seed in seeds("oracle_general", &[]) {
        check_oracle_general(&scratch, &seed);
    }
    for seed in seeds("criteo_tsv", &[]) {
        check_criteo_tsv(&scratch, &seed);
    }
    for seed in seeds("table_file", &[]) {
        check_table_header(&seed, false);
        for read_path in ReadPath::ALL {
            check_table_file(&scratch, &seed, read_path, false);
        }
    }
    for seed in seeds("lab_config", &["policy-lab.toml"]) {
        check_lab_config(&scratch, &seed);
    }
    #[cfg(feature = "torch")]
    for seed in seeds("experiment_config", &["default.toml", "train-small.toml"]) {
        check_experiment_config(&scratch, &seed);
    }
}

#[test]
fn corpus_seeds_are_valid_inputs() {
    let scratch = Scratch::new("valid");
    for seed in seeds("text", &[]) {
        assert!(reference_text(&seed).is_ok());
    }
    for seed in seeds("table_file", &[]) {
        let path = scratch.holding(&seed);
        TableFile::open(path, ReadPath::Pread).expect("seed table opens");
    }
    for seed in seeds("lab_config", &["policy-lab.toml"]) {
        let path = scratch.holding(&seed);
        LabConfig::load(path).expect("seed lab config parses");
    }
}

proptest! {
    #[test]
    fn text_reader(bytes in input(seeds("text", &[]))) {
        thread_local!(static SCRATCH: Scratch = Scratch::new("trace.txt"));
        SCRATCH.with(|s| check_text(s, &bytes));
    }

    #[test]
    fn oracle_general_reader(bytes in input(seeds("oracle_general", &[]))) {
        thread_local!(static SCRATCH: Scratch = Scratch::new("trace.oracleGeneral"));
        SCRATCH.with(|s| check_oracle_general(s, &bytes));
    }

    #[test]
    fn criteo_tsv_reader(bytes in input(seeds("criteo_tsv", &[]))) {
        thread_local!(static SCRATCH: Scratch = Scratch::new("day_0.tsv"));
        SCRATCH.with(|s| check_criteo_tsv(s, &bytes));
    }

    #[test]
    fn table_header_decoder(bytes in input(seeds("table_file", &[]).into_iter().map(|s| s[..HEADER_BYTES].to_vec()).collect()), reseal in any::<bool>()) {
        check_table_header(&bytes, reseal);
    }

    #[test]
    fn table_file(bytes in input(seeds("table_file", &[])), read_path in prop::sample::select(ReadPath::ALL.to_vec()), reseal in any::<bool>()) {
        thread_local!(static SCRATCH: Scratch = Scratch::new("table.strata"));
        SCRATCH.with(|s| check_table_file(s, &bytes, read_path, reseal));
    }

    #[test]
    fn lab_config_parser(bytes in text_input(seeds("lab_config", &["policy-lab.toml"]))) {
        thread_local!(static SCRATCH: Scratch = Scratch::new("lab.toml"));
        SCRATCH.with(|s| check_lab_config(s, &bytes));
    }
}

#[cfg(feature = "torch")]
proptest! {
    #[test]
    fn experiment_config_parser(bytes in text_input(seeds("experiment_config", &["default.toml", "train-small.toml"]))) {
        thread_local!(static SCRATCH: Scratch = Scratch::new("experiment.toml"));
        SCRATCH.with(|s| check_experiment_config(s, &bytes));
    }
}
