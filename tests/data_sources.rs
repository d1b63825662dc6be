//! Training data from files: what `strata gen-data` writes (MLPerf NumPy layout, Criteo
//! TSV) reads back as exactly the synthetic batches; hand-written TSV lines give the
//! expected ids, dense counts and labels; bad files give one-line errors naming the
//! file and the position; numpy itself reads what Strata writes and the reverse.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::data::npy::{Dtype, NpyWriter};
use strata::data::{log_count, CriteoTsvSpec, DataError, DataSource, MlperfNumpySpec, SyntheticBatches, SyntheticConfig, TableLayout};
use strata::engine::batch::Batch;

const SCALE: f64 = 0.0005;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).env("STRATA_LOG", "error").output().unwrap()
}

fn gen_data(dir: &Path, format: &str, samples: u64, days: u32, one_hot: bool) {
    let (samples, days, scale) = (samples.to_string(), days.to_string(), SCALE.to_string());
    let mut args = vec!["gen-data", "--format", format, "--out", dir.to_str().unwrap(), "--samples", &samples, "--days", &days];
    args.extend_from_slice(&["--scale", &scale, "--seed", "11"]);
    if one_hot {
        args.push("--one-hot");
    }
    let out = strata(&args);
    assert!(out.status.success(), "gen-data: {}", String::from_utf8_lossy(&out.stderr));
}

fn synthetic(multi_hot: bool) -> SyntheticConfig {
    SyntheticConfig { scale: SCALE, seed: 11, multi_hot, ..SyntheticConfig::default() }
}

fn numpy(dir: &Path, multi_hot: bool) -> DataSource {
    DataSource::MlperfNumpy(MlperfNumpySpec { dir: dir.to_path_buf(), train_days: vec![0], eval_days: vec![1], multi_hot, scale: SCALE })
}

/// Every batch of the source's training stream, and its read error if any.
fn read(source: &DataSource, batch_size: usize, count: u64) -> (Vec<Batch>, Option<(u64, DataError)>) {
    let stream = source.train(batch_size, count).unwrap();
    let failure = stream.failure();
    let batches = stream.collect();
    (batches, failure.take())
}

fn assert_same(ours: &[Batch], expected: &[Batch]) {
    assert_eq!(ours.len(), expected.len());
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert_eq!(a.ids, b.ids, "batch {i}: ids");
        assert_eq!(a.bag_offsets, b.bag_offsets, "batch {i}: bag offsets");
        assert_eq!(a.start, b.start, "batch {i}: start");
        assert_eq!(a.dense, b.dense, "batch {i}: dense");
        assert_eq!(a.labels, b.labels, "batch {i}: labels");
    }
}

#[test]
fn numpy_files_read_back_as_the_synthetic_batches() {
    for multi_hot in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        gen_data(dir.path(), "numpy", 6 * 50, 2, !multi_hot);
        let source = numpy(dir.path(), multi_hot);
        source.check(true).unwrap();
        let expected: Vec<Batch> = SyntheticBatches::new(&synthetic(multi_hot), 50, Some(9)).unwrap().with_features().collect();
        let (train, failure) = read(&source, 50, 6);
        assert!(failure.is_none());
        assert_same(&train, &expected[..6]);
        assert_eq!(train[0].ids.len(), 50 * if multi_hot { 214 } else { 26 });
        // Held out: day 1 continues the stream where day 0 ends.
        assert_same(&source.held_out(50, 6, 3).unwrap(), &expected[6..9]);
        // The files end before the asked-for count; the last batch is short.
        let (short, failure) = read(&source, 40, 100);
        assert!(failure.is_none());
        assert_eq!(short.len(), 8);
        assert_eq!(short.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), vec![40, 40, 40, 40, 40, 40, 40, 20]);
        assert_eq!(short[7].ids, expected[5].ids[expected[5].ids.len() / 50 * 30..].to_vec());
    }
}

#[test]
fn tsv_files_read_back_as_the_synthetic_batches() {
    let dir = tempfile::tempdir().unwrap();
    gen_data(dir.path(), "tsv", 4 * 30, 2, true);
    let source = DataSource::CriteoTsv(CriteoTsvSpec {
        train_files: vec![dir.path().join("day_0.tsv")],
        eval_files: vec![dir.path().join("day_1.tsv")],
        scale: SCALE,
    });
    source.check(true).unwrap();
    let expected: Vec<Batch> = SyntheticBatches::new(&synthetic(false), 30, Some(6)).unwrap().with_features().collect();
    let (train, failure) = read(&source, 30, 4);
    assert!(failure.is_none());
    assert_same(&train, &expected[..4]);
    assert_same(&source.held_out(30, 4, 2).unwrap(), &expected[4..]);
}

#[test]
fn tsv_gen_data_needs_one_lookup_per_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = strata(&["gen-data", "--format", "tsv", "--out", dir.path().to_str().unwrap(), "--samples", "3"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--one-hot"), "{stderr}");
}

/// A Criteo line: label, 13 dense fields, 26 hashes; `None` = an empty (missing) field.
fn line(label: &str, dense: &[Option<&str>; 13], hashes: &[&str; 26]) -> String {
    let mut fields = vec![label.to_string()];
    fields.extend(dense.iter().map(|d| d.unwrap_or("").to_string()));
    fields.extend(hashes.iter().map(|h| h.to_string()));
    fields.join("\t")
}

fn tsv_source(path: &Path) -> DataSource {
    DataSource::CriteoTsv(CriteoTsvSpec { train_files: vec![path.to_path_buf()], eval_files: vec![], scale: 0.001 })
}

#[test]
fn hand_written_tsv_lines_give_the_expected_samples() {
    // Tables at scale 0.001: table 0 has 40,000 rows, table 1 has 40 (39,060 x 0.001
    // rounded up), table 5 has 1; offsets: table 1 starts at 40,000, table 2 at 40,040.
    let layout = TableLayout::criteo(0.001, false);
    assert_eq!((layout.rows()[0], layout.rows()[1], layout.rows()[5]), (40_000, 40, 1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hand.tsv");
    let mut hashes = ["0"; 26];
    hashes[0] = "0000a0c1"; // 41,153 mod 40,000 = 1,153
    hashes[1] = "1f"; // 31 < 40: row 31, global 40,031
    hashes[2] = ""; // missing: hash 0, row 0 of table 2: global 40,040
    hashes[5] = "ffffffff"; // a one-row table: row 0
    let mut dense = [Some("0"); 13];
    dense[0] = Some("5");
    dense[1] = None; // missing: 0
    dense[2] = Some("-3"); // negative: clamped to 0
    dense[12] = Some("123456");
    let first = line("1", &dense, &hashes);
    let second = line("0", &[Some("7"); 13], &["2"; 26]);
    std::fs::write(&path, format!("{first}\n\n{second}\n")).unwrap();
    let (batches, failure) = read(&tsv_source(&path), 8, 10);
    assert!(failure.is_none());
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.labels, vec![1.0, 0.0]);
    let mut dense_one = vec![0.0f32; 13];
    dense_one[0] = 5.0;
    dense_one[12] = 123_456.0;
    assert_eq!(batch.dense[..13], dense_one[..]);
    assert_eq!(batch.dense[13..], [7.0; 13]);
    assert_eq!(batch.ids[..3], [1_153, 40_031, 40_040]);
    assert_eq!(batch.ids[5], layout.global_row(5, 0));
    // Hash 2 in every table of the second line: row 2 mod rows of each table.
    let expected: Vec<u64> = (0..26).map(|t| layout.global_row(t, 2 % layout.rows()[t])).collect();
    assert_eq!(batch.ids[26..], expected[..]);
    assert_eq!(batch.bag_offsets, (0..=52).collect::<Vec<usize>>());
}

/// The one-line message of a TSV error met while streaming, with the batches before it.
fn tsv_stream_error(contents: &str) -> (String, usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tsv");
    std::fs::write(&path, contents).unwrap();
    let (batches, failure) = read(&tsv_source(&path), 1, 100);
    let (_, error) = failure.expect("a read error");
    let message = error.to_string();
    assert!(!message.contains('\n'), "{message}");
    assert!(message.starts_with(&format!("{}:", path.display())), "{message}");
    (message, batches.len(), path.display().to_string())
}

#[test]
fn bad_tsv_lines_name_the_file_line_and_column() {
    let good = line("0", &[Some("1"); 13], &["a"; 26]);
    let short = good.rsplit_once('\t').unwrap().0.to_string();
    let (message, before, path) = tsv_stream_error(&format!("{good}\n{good}\n{short}\n{good}\n"));
    assert_eq!(before, 2, "the two good lines are read before the error");
    assert!(message.contains(&format!("{path}:3: expected 40 tab-separated fields, found 39")), "{message}");

    let mut hashes = ["a"; 26];
    hashes[4] = "12xz";
    let (message, _, path) = tsv_stream_error(&format!("{good}\n{}\n", line("1", &[Some("1"); 13], &hashes)));
    assert!(message.contains(&format!("{path}:2: column 19: expected a hex hash, found `12xz`")), "{message}");

    let mut dense = [Some("1"); 13];
    dense[2] = Some("3.5");
    let (message, _, path) = tsv_stream_error(&line("1", &dense, &["a"; 26]));
    assert!(message.contains(&format!("{path}:1: column 4: expected an integer, found `3.5`")), "{message}");
}

/// Writes an array of `shape` filled with `value(i)` for element `i`.
fn write_array(path: &Path, dtype: Dtype, shape: &[u64], value: impl Fn(u64) -> f64) {
    let mut writer = NpyWriter::create(path, dtype, shape).unwrap();
    let n: u64 = shape.iter().product();
    match dtype {
        Dtype::F32 => writer.write_f32(&(0..n).map(|i| value(i) as f32).collect::<Vec<_>>()).unwrap(),
        _ => writer.write_ints((0..n).map(|i| value(i) as i64)).unwrap(),
    }
    writer.finish().unwrap();
}

/// A one-hot day of `rows` rows in `dir`: dense, labels and sparse of the right types.
fn write_day(dir: &Path, rows: u64) -> [PathBuf; 3] {
    let [dense, labels, sparse] = strata::data::day_files(dir, 0, false);
    write_array(&dense, Dtype::F32, &[rows, 13], |i| f64::from(log_count((i % 9) as f32)));
    write_array(&labels, Dtype::I32, &[rows, 1], |i| (i % 2) as f64);
    write_array(&sparse, Dtype::I64, &[rows, 26], |i| (i * 7) as f64);
    [dense, labels, sparse]
}

/// The one-line message `check` gives for day 0 of `dir`.
fn check_error(dir: &Path) -> String {
    let source = DataSource::MlperfNumpy(MlperfNumpySpec {
        dir: dir.to_path_buf(),
        train_days: vec![0],
        eval_days: vec![],
        multi_hot: false,
        scale: 0.001,
    });
    let message = source.check(false).unwrap_err().to_string();
    assert!(!message.contains('\n'), "{message}");
    message
}

#[test]
fn bad_numpy_files_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let [dense, labels, sparse] = write_day(dir.path(), 20);
    let source = numpy(dir.path(), false);
    let (batches, failure) = read(&source, 8, 10);
    assert!(failure.is_none());
    assert_eq!(batches.iter().map(|b| b.labels.len()).sum::<usize>(), 20);
    assert_eq!(batches[0].dense[..3], [0.0, 1.0, 2.0]);

    // Wrong magic.
    let mut bytes = std::fs::read(&dense).unwrap();
    bytes[1] = b'X';
    std::fs::write(&dense, &bytes).unwrap();
    let message = check_error(dir.path());
    assert!(message.starts_with(&format!("{}: not a NumPy .npy array", dense.display())), "{message}");

    // Wrong dtype, then wrong shape, of the dense features.
    write_array(&dense, Dtype::I32, &[20, 13], |_| 1.0);
    let message = check_error(dir.path());
    assert!(message.contains(&format!("{}: expected <f4 of shape [N, 13], found shape [20, 13] of <i4", dense.display())), "{message}");
    write_array(&dense, Dtype::F32, &[20, 12], |_| 1.0);
    let message = check_error(dir.path());
    assert!(message.contains(&format!("{}: expected <f4 of shape [N, 13], found shape [20, 12] of <f4", dense.display())), "{message}");

    // Row counts that disagree.
    write_day(dir.path(), 20);
    write_array(&labels, Dtype::I32, &[19, 1], |_| 0.0);
    let message = check_error(dir.path());
    assert!(message.contains(&format!("{}: 19 rows, but {} has 20", labels.display(), dense.display())), "{message}");
    write_day(dir.path(), 20);
    write_array(&sparse, Dtype::I32, &[21, 26], |_| 0.0);
    let message = check_error(dir.path());
    assert!(message.contains(&format!("{}: 21 rows, but {} has 20", sparse.display(), dense.display())), "{message}");

    // A file shorter than its header says.
    write_day(dir.path(), 20);
    let bytes = std::fs::read(&sparse).unwrap();
    std::fs::write(&sparse, &bytes[..bytes.len() - 8]).unwrap();
    let message = check_error(dir.path());
    assert!(
        message.contains(&format!("{}: shape [20, 26] of <i8 needs 4160 data bytes after byte 128, the file holds 4152", sparse.display())),
        "{message}"
    );

    // A missing file.
    std::fs::remove_file(&sparse).unwrap();
    let message = check_error(dir.path());
    assert!(message.contains(&format!("{}: No such file", sparse.display())), "{message}");

    // A bad value surfaces while streaming, naming the row.
    write_day(dir.path(), 20);
    write_array(&labels, Dtype::I32, &[20], |i| if i == 13 { 2.0 } else { 0.0 });
    let (batches, failure) = read(&source, 4, 10);
    assert_eq!(batches.len(), 3, "the batches before the bad row arrive");
    let (start, error) = failure.expect("a read error");
    assert_eq!(start, 12 * 26);
    assert_eq!(error.to_string(), format!("{}: row 13: label must be 0 or 1, found 2", labels.display()));
}

#[test]
fn multi_hot_archives_need_every_table_at_its_width() {
    let dir = tempfile::tempdir().unwrap();
    gen_data(dir.path(), "numpy", 10, 1, false);
    let npz = dir.path().join("day_0_sparse_multi_hot.npz");
    let layout = TableLayout::criteo(SCALE, true);
    let members: Vec<(String, PathBuf)> = (0..26)
        .map(|t| {
            let path = dir.path().join(format!("{t}.npy"));
            let width = if t == 20 { 99 } else { layout.multi_hot()[t] as u64 };
            write_array(&path, Dtype::I32, &[10, width], |i| i as f64);
            (t.to_string(), path)
        })
        .collect();
    strata::data::npy::write_npz(&npz, &members).unwrap();
    let source = DataSource::MlperfNumpy(MlperfNumpySpec {
        dir: dir.path().into(),
        train_days: vec![0],
        eval_days: vec![],
        multi_hot: true,
        scale: SCALE,
    });
    let message = source.check(false).unwrap_err().to_string();
    assert!(
        message
            .contains(&format!("{}:20.npy: expected <i4 or <i8 of shape [N, 100] (table 20), found shape [10, 99] of <i4", npz.display())),
        "{message}"
    );
    strata::data::npy::write_npz(&npz, &members[..25]).unwrap();
    let message = source.check(false).unwrap_err().to_string();
    assert!(message.contains(&format!("{}: no array `25`", npz.display())), "{message}");
}

/// Runs `script` with the Python of `make test` (which has numpy); `None` without it.
fn python(script: &str) -> Option<String> {
    let Some(python) = std::env::var_os("STRATA_PYTHON") else {
        assert!(std::env::var_os("CI").is_none(), "STRATA_PYTHON must be set in CI (make test sets it)");
        eprintln!("skipped: STRATA_PYTHON is not set; run through `make test` to cross-check with numpy");
        return None;
    };
    let out = Command::new(python).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn numpy_reads_what_strata_writes_and_strata_reads_what_numpy_writes() {
    let dir = tempfile::tempdir().unwrap();
    gen_data(dir.path(), "numpy", 64, 1, false);
    let d = dir.path().display();
    let script = format!(
        "import numpy as np\n\
         d = np.load('{d}/day_0_dense.npy'); l = np.load('{d}/day_0_labels.npy'); z = np.load('{d}/day_0_sparse_multi_hot.npz')\n\
         print(d.dtype, d.shape, l.dtype, l.shape, len(z.files), z['20'].dtype, z['20'].shape)\n\
         print(int(np.rint(np.exp(d) - 3).sum()), int(l.sum()), sum(int(z[str(t)].sum()) for t in range(26)))\n\
         n = 10\n\
         np.save('{d}/day_1_dense.npy', np.log(np.arange(n * 13).reshape(n, 13) % 50 + 3).astype(np.float32))\n\
         np.save('{d}/day_1_labels.npy', (np.arange(n) % 3 == 0).astype(np.int64))\n\
         np.save('{d}/day_1_sparse.npy', np.arange(n * 26, dtype=np.int64).reshape(n, 26) * 7919 - 1000)\n\
         np.savez('{d}/day_1_sparse_multi_hot.npz', **{{str(t): np.arange(n * w, dtype=np.int32).reshape(n, w) * 31 for t, w in enumerate([{}])}})\n\
         np.savez_compressed('{d}/day_2_sparse_multi_hot.npz', **{{str(t): np.zeros((n, 1), dtype=np.int32) for t in range(26)}})\n",
        strata::data::CRITEO_MULTI_HOT.map(|w| w.to_string()).join(",")
    );
    let Some(printed) = python(&script) else { return };
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "float32 (64, 13) int32 (64, 1) 26 int32 (64, 100)");
    let expected: Vec<Batch> = SyntheticBatches::new(&synthetic(true), 64, Some(1)).unwrap().with_features().collect();
    let layout = TableLayout::criteo(SCALE, true);
    let mut start = 0;
    let mut table_of = Vec::new();
    for (t, &w) in layout.multi_hot().iter().enumerate() {
        table_of.extend(std::iter::repeat_n(t, w));
        start += w;
    }
    assert_eq!(start, 214);
    let dense_sum: f64 = expected[0].dense.iter().map(|&x| f64::from(x)).sum();
    let label_sum: f64 = expected[0].labels.iter().map(|&x| f64::from(x)).sum();
    let row_sum: u64 = expected[0].ids.iter().enumerate().map(|(i, &id)| id - layout.global_row(table_of[i % 214], 0)).sum();
    assert_eq!(lines[1], format!("{dense_sum} {label_sum} {row_sum}"));

    // numpy's files, one-hot (int64 ids, some negative; labels [N] int64) and multi-hot.
    let n = 10u64;
    for multi_hot in [false, true] {
        let source = DataSource::MlperfNumpy(MlperfNumpySpec {
            dir: dir.path().into(),
            train_days: vec![1],
            eval_days: vec![],
            multi_hot,
            scale: 0.001,
        });
        let layout = source.layout();
        let (batches, failure) = read(&source, 10, 1);
        assert!(failure.is_none());
        let batch = &batches[0];
        assert_eq!(batch.labels, (0..n).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect::<Vec<f32>>());
        assert_eq!(batch.dense, (0..n * 13).map(|i| (i % 50) as f32).collect::<Vec<f32>>());
        let mut ids = Vec::new();
        for s in 0..n {
            for (t, &w) in layout.multi_hot().iter().enumerate() {
                for j in 0..w as i64 {
                    let id = if multi_hot { (s as i64 * w as i64 + j) * 31 } else { (s as i64 * 26 + t as i64) * 7919 - 1000 };
                    ids.push(layout.global_row(t, id.rem_euclid(layout.rows()[t] as i64) as u64));
                }
            }
        }
        assert_eq!(batch.ids, ids, "multi_hot {multi_hot}");
    }
    let compressed = DataSource::MlperfNumpy(MlperfNumpySpec {
        dir: dir.path().into(),
        train_days: vec![2],
        eval_days: vec![],
        multi_hot: true,
        scale: 0.001,
    });
    std::fs::copy(dir.path().join("day_1_dense.npy"), dir.path().join("day_2_dense.npy")).unwrap();
    std::fs::copy(dir.path().join("day_1_labels.npy"), dir.path().join("day_2_labels.npy")).unwrap();
    let message = compressed.check(false).unwrap_err().to_string();
    assert!(message.contains("day_2_sparse_multi_hot.npz: member `0.npy` is compressed"), "{message}");
}
