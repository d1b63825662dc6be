//! The storage tier's table files: round trips through every read path, batched and
//! partial-page writes, and clear errors for corrupted, truncated or foreign files.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::engine::storage::format::{self, HEADER_BYTES};
use strata::engine::storage::{journal_path, roll_back, ReadConfig, ReadPath, RollBack, StorageError, TableFile};
use strata::engine::{InitRows, RowInit, RowLayout};

mod common;
use common::folders;

const INIT: RowInit = RowInit::Uniform { seed: 7, scale: 0.5 };

fn expected(layout: RowLayout, rows: &[u64]) -> Vec<f32> {
    let mut out = vec![0f32; rows.len() * layout.words()];
    for (row, chunk) in rows.iter().zip(out.chunks_exact_mut(layout.words())) {
        INIT.fill(*row, layout, chunk);
    }
    out
}

fn read(table: &mut TableFile, rows: &[u64]) -> Vec<f32> {
    let mut out = vec![f32::NAN; rows.len() * table.layout().words()];
    table.read_rows(rows, &mut out).expect("read rows");
    out
}

fn create(folder: &Path, rows: u64, layout: RowLayout) -> PathBuf {
    let path = folder.join("table.strata");
    TableFile::create(&path, rows, layout, INIT).expect("create table");
    path
}

#[test]
fn every_read_path_returns_the_initial_rows_unordered_and_duplicated() {
    let layout = RowLayout::f32(128, 1);
    let rows = 3000u64; // 429 pages of 7 rows: more than one read batch.
    for folder in folders() {
        let path = create(folder.path(), rows, layout);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut request: Vec<u64> = (0..500).map(|_| rng.gen_range(0..rows)).collect();
        request.extend([0, rows - 1, 17, 17, 3, rows - 1]);
        let everything: Vec<u64> = (0..rows).rev().collect();
        for read_path in ReadPath::ALL {
            let mut table = TableFile::open(&path, read_path).expect("open");
            assert_eq!((table.rows(), table.layout(), table.read_path()), (rows, layout, read_path));
            assert_eq!(read(&mut table, &request), expected(layout, &request), "{read_path}");
            assert_eq!(read(&mut table, &everything), expected(layout, &everything), "{read_path}");
            let stats = table.stats();
            let mut pages: Vec<u64> = request.iter().map(|r| r / 7).collect();
            pages.sort_unstable();
            pages.dedup();
            assert_eq!(stats.read_calls, 2);
            assert_eq!(stats.rows_read, (request.len() + everything.len()) as u64);
            assert_eq!(stats.pages_read, pages.len() as u64 + 429, "{read_path}: each page once per call");
            assert_eq!(stats.bytes_read, stats.pages_read * 4096);
        }
    }
}

#[test]
fn writes_read_back_before_and_after_reopening_with_every_path() {
    let layout = RowLayout::f32(13, 1); // 73 rows per page
    let rows = 1000u64;
    for folder in folders() {
        let path = create(folder.path(), rows, layout);
        for (round, read_path) in ReadPath::ALL.into_iter().enumerate() {
            let mut table = TableFile::open(&path, read_path).expect("open");
            let targets: Vec<u64> = vec![5, 999, 400 + round as u64, 72, 73, 5];
            let data: Vec<f32> = (0..targets.len() * layout.words()).map(|i| (i as f32) * 0.25 + round as f32 * 100.0).collect();
            table.write_rows(&targets, &data).expect("write");
            table.sync().expect("sync");
            let mut want = data.clone();
            // The second write of row 5 wins.
            let floats = layout.words();
            want.copy_within(5 * floats..6 * floats, 0);
            assert_eq!(read(&mut table, &targets), want, "{read_path}");
            drop(table);
            for reopen_path in ReadPath::ALL {
                let mut reopened = TableFile::open(&path, reopen_path).expect("reopen");
                assert_eq!(read(&mut reopened, &targets), want, "{read_path} then {reopen_path}");
                let neighbours = [4, 6, 71, 74, 998];
                assert_eq!(read(&mut reopened, &neighbours), expected(layout, &neighbours));
            }
        }
    }
}

#[test]
fn partial_page_writes_keep_neighbours_and_full_pages_skip_the_read() {
    let layout = RowLayout::f32(13, 1);
    let per_page = 73u64;
    for folder in folders() {
        let path = create(folder.path(), 300, layout);
        let mut table = TableFile::open(&path, ReadPath::IoUring).expect("open");
        let one_row = vec![9.5f32; layout.words()];
        table.write_rows(&[per_page + 3], &one_row).expect("write one row");
        let stats = table.stats();
        assert_eq!((stats.pages_read, stats.pages_written), (1, 1), "read-modify-write of one page");
        let whole_page: Vec<u64> = (0..per_page).collect();
        let values = vec![-1.0f32; whole_page.len() * layout.words()];
        table.write_rows(&whole_page, &values).expect("write a whole page");
        let stats = table.stats();
        assert_eq!((stats.pages_read, stats.pages_written), (1, 2), "a fully covered page is not read");
        let page_one: Vec<u64> = (per_page..2 * per_page).collect();
        let mut want = expected(layout, &page_one);
        want[3 * layout.words()..4 * layout.words()].copy_from_slice(&one_row);
        assert_eq!(read(&mut table, &page_one), want);
        assert_eq!(read(&mut table, &whole_page), values);
        // The last page is partial: rows 292..300.
        table.write_rows(&[299], &one_row).expect("write into the last page");
        assert_eq!(read(&mut table, &[298, 299]), [expected(layout, &[298]), one_row.clone()].concat());
    }
}

#[test]
fn sgd_tables_have_no_state_and_zeros_init_reads_zeros() {
    for folder in folders() {
        let path = folder.path().join("zeros.strata");
        let layout = RowLayout::f32(1024, 0); // one row per 8 KiB page
        let mut table = TableFile::create(&path, 5, layout, RowInit::Zeros).expect("create");
        assert_eq!(table.header().page_size, 8192);
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 4096 + 5 * 8192);
        let mut out = vec![1f32; 2 * 1024];
        table.read_rows(&[4, 0], &mut out).expect("read");
        assert!(out.iter().all(|&v| v == 0.0));
    }
}

fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).expect("open for corruption");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0x40;
    file.write_all_at(&byte, offset).expect("write byte");
    file.sync_all().expect("sync");
}

#[test]
fn a_flipped_byte_gives_a_checksum_error_naming_file_page_and_row() {
    let layout = RowLayout::f32(128, 1);
    for folder in folders() {
        let path = create(folder.path(), 100, layout);
        // Page 2 holds rows 14..21; corrupt a byte of row 16.
        flip_byte(&path, HEADER_BYTES as u64 + 2 * 4096 + 2 * 516 + 10);
        for read_path in ReadPath::ALL {
            let mut table = TableFile::open(&path, read_path).expect("open");
            let mut out = vec![f32::NAN; 2 * layout.words()];
            let error = table.read_rows(&[3, 15], &mut out).expect_err("corrupted page");
            let message = error.to_string();
            assert!(matches!(error, StorageError::ChecksumMismatch { page: 2, row: 15, .. }), "{message}");
            assert!(message.starts_with(&path.display().to_string()), "{message}");
            assert!(message.contains("page 2 (rows 14..21): checksum mismatch (stored 0x"), "{message}");
            assert!(message.ends_with("reading row 15"), "{message}");
            assert!(out[layout.words()..].iter().all(|v| v.is_nan()), "no data from the corrupted page");
            assert_eq!(table.stats().checksum_failures, 1);
            assert_eq!(read(&mut table, &[3, 21]), expected(layout, &[3, 21]), "other pages still read");
            let error = table.write_rows(&[20], &vec![0.0; layout.words()]).expect_err("write into corrupted page");
            assert!(error.to_string().ends_with("writing row 20"), "{error}");
        }
        // Rewriting the whole page repairs it.
        let mut table = TableFile::open(&path, ReadPath::Pread).expect("open");
        let page: Vec<u64> = (14..21).collect();
        table.write_rows(&page, &expected(layout, &page)).expect("rewrite page");
        assert_eq!(read(&mut table, &page), expected(layout, &page));
    }
}

fn open_error(path: &Path) -> String {
    match TableFile::open(path, ReadPath::Pread) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_header(path: &Path, at: usize, bytes: &[u8], reseal: bool) {
    let file = OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut header = vec![0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, 0).expect("read header");
    header[at..at + bytes.len()].copy_from_slice(bytes);
    if reseal {
        format::seal_header(&mut header);
    }
    file.write_all_at(&header, 0).expect("write header");
}

#[test]
fn foreign_or_damaged_headers_are_rejected_clearly() {
    let layout = RowLayout::f32(8, 1);
    for folder in folders() {
        let path = create(folder.path(), 50, layout);
        let name = path.display().to_string();
        edit_header(&path, 0, b"NOTATABL", false);
        let message = open_error(&path);
        assert!(message.starts_with(&format!("{name}: header: bad magic")), "{message}");
        edit_header(&path, 0, &format::MAGIC, false);
        edit_header(&path, 8, &2u32.to_le_bytes(), false);
        assert!(open_error(&path).contains("header: format version 2 is not supported"));
        edit_header(&path, 8, &format::VERSION.to_le_bytes(), false);
        edit_header(&path, 12, &7u32.to_le_bytes(), true);
        assert!(open_error(&path).contains("header: unknown dtype code 7"));
        // An f32 table's header that says bf16 describes other pages: refused.
        edit_header(&path, 12, &2u32.to_le_bytes(), true);
        let message = open_error(&path);
        assert!(message.contains("113 rows per page does not match rows of dim 8 bf16 values + 1 state value"), "{message}");
        edit_header(&path, 12, &0u32.to_le_bytes(), true);
        edit_header(&path, 16, &51u64.to_le_bytes(), false);
        assert!(open_error(&path).contains("header: header checksum mismatch"));
        edit_header(&path, 16, &50u64.to_le_bytes(), false);
        edit_header(&path, 24, &0u32.to_le_bytes(), true);
        assert!(open_error(&path).contains("dim must be at least 1"));
        edit_header(&path, 24, &8u32.to_le_bytes(), true);
        edit_header(&path, 32, &8192u32.to_le_bytes(), true);
        assert!(open_error(&path).contains("page size 8192"));
        edit_header(&path, 32, &4096u32.to_le_bytes(), true);
        TableFile::open(&path, ReadPath::Pread).expect("header restored");

        let full = std::fs::metadata(&path).expect("metadata").len();
        OpenOptions::new().write(true).open(&path).expect("open").set_len(full - 100).expect("truncate");
        let message = open_error(&path);
        assert!(message.starts_with(&name) && message.contains("truncated"), "{message}");
        std::fs::write(&path, b"tiny").expect("write");
        assert!(open_error(&path).contains("shorter than the 4096-byte header"));
    }
}

#[test]
fn bad_requests_are_errors_naming_the_file_and_the_row() {
    let layout = RowLayout::f32(4, 1);
    for folder in folders() {
        let path = create(folder.path(), 10, layout);
        let mut table = TableFile::open(&path, ReadPath::IoUring).expect("open");
        let mut out = vec![0f32; 3 * layout.words()];
        let message = table.read_rows(&[1, 10, 2], &mut out).expect_err("row 10").to_string();
        assert_eq!(message, format!("{}: row 10 (entry 1 of the request) is out of range: the table has 10 rows", path.display()));
        let message = table.write_rows(&[1], &[0.0; 3]).expect_err("short data").to_string();
        assert!(message.contains("write_rows: the buffer holds 3 floats, 1 rows of 5 floats need 5"), "{message}");
        assert_eq!(table.stats().read_calls, 0);
        let bad = TableFile::create(&folder.path().join("bad.strata"), 1, RowLayout::f32(0, 1), INIT);
        assert!(bad.err().expect("dim 0").to_string().contains("bad row layout: dim must be at least 1"));
        let missing = TableFile::open_with(&folder.path().join("missing.strata"), ReadConfig::default());
        assert!(missing.err().expect("missing").to_string().contains("missing.strata: opening:"));
    }
}

// The undo journal (docs/RELIABILITY.md, "Checkpoints").

/// Rows `0..rows` with every value set to `value` (state included).
fn filled(layout: RowLayout, rows: &[u64], value: f32) -> Vec<f32> {
    vec![value; rows.len() * layout.words()]
}

/// A table of 300 rows (dim 128 with state: 7 rows a page, 43 pages) where rows
/// `0..100` hold 1.0, protecting checkpoint 1 from then on.
fn protected_table(folder: &Path, read_path: ReadPath) -> (PathBuf, TableFile, Vec<f32>) {
    let layout = RowLayout::f32(128, 1);
    let path = create(folder, 300, layout);
    let mut table = TableFile::open(&path, read_path).expect("open");
    let first: Vec<u64> = (0..100).collect();
    table.write_rows(&first, &filled(layout, &first, 1.0)).expect("write");
    table.sync().expect("sync");
    table.protect_checkpoint(1).expect("protect");
    let all: Vec<u64> = (0..300).collect();
    let committed = read(&mut table, &all);
    (path, table, committed)
}

fn all_rows(path: &Path) -> Vec<f32> {
    let mut table = TableFile::open(path, ReadPath::Pread).expect("reopen");
    let all: Vec<u64> = (0..table.rows()).collect();
    read(&mut table, &all)
}

#[test]
fn journal_rolls_the_table_back_to_the_committed_checkpoint() {
    for folder in folders() {
        for read_path in ReadPath::ALL {
            let (path, mut table, committed) = protected_table(folder.path(), read_path);
            let layout = table.layout();
            // Three write calls after the checkpoint: partial and whole pages, a page
            // written twice (saved once), rows never written before.
            let writes: [Vec<u64>; 3] = [vec![3, 50, 51, 52, 53, 54, 55], vec![3, 4, 290], (140..161).collect()];
            for (i, rows) in writes.iter().enumerate() {
                table.write_rows(rows, &filled(layout, rows, 2.0 + i as f32)).expect("write after the checkpoint");
            }
            let mut pages: Vec<u64> = writes.iter().flatten().map(|r| r / 7).collect();
            pages.sort_unstable();
            pages.dedup();
            assert_eq!(table.stats().pages_journaled, pages.len() as u64, "{read_path}: each page saved once");
            assert_ne!(all_rows(&path), committed);
            drop(table); // the crash: no new checkpoint
            let outcome = roll_back(&path, 1).expect("roll back");
            assert_eq!(outcome, RollBack::RolledBack { pages: pages.len() as u64, torn: false }, "{read_path}");
            assert!(!journal_path(&path).exists(), "the journal is removed after the roll-back");
            assert_eq!(all_rows(&path), committed, "{read_path}: every row as at the checkpoint");
            assert_eq!(roll_back(&path, 1).expect("again"), RollBack::NoJournal);
        }
    }
}

#[test]
fn a_torn_last_journal_entry_is_ignored() {
    for folder in folders() {
        let (path, mut table, committed) = protected_table(folder.path(), ReadPath::Pread);
        let layout = table.layout();
        table.write_rows(&[10], &filled(layout, &[10], 5.0)).expect("first write"); // page 1
        let journal = journal_path(&path);
        let after_first = std::fs::metadata(&journal).expect("journal").len();
        table.write_rows(&[20], &filled(layout, &[20], 6.0)).expect("second write"); // page 2
        drop(table);
        // The crash tore the second entry: its page write was never issued, so put page
        // 2 back as it was and cut the entry short.
        let mut reopened = TableFile::open(&path, ReadPath::Pread).expect("open");
        let floats = layout.words();
        reopened.write_rows(&[20], &committed[20 * floats..21 * floats]).expect("restore page 2");
        drop(reopened);
        let len = std::fs::metadata(&journal).expect("journal").len();
        OpenOptions::new().write(true).open(&journal).expect("open journal").set_len(len - 100).expect("tear");
        assert!(len - 100 > after_first);
        assert_eq!(roll_back(&path, 1).expect("roll back"), RollBack::RolledBack { pages: 1, torn: true });
        assert_eq!(all_rows(&path), committed);

        // A flipped byte inside the last entry reads as torn the same way.
        let (path, mut table, committed) = protected_table(folder.path(), ReadPath::Pread);
        table.write_rows(&[10], &filled(layout, &[10], 5.0)).expect("write");
        drop(table);
        let len = std::fs::metadata(&journal).expect("journal").len();
        let file = OpenOptions::new().read(true).write(true).open(&journal).expect("open journal");
        file.write_all_at(&[0xFF, 0xFE], len - 50).expect("corrupt");
        drop(file);
        assert_eq!(roll_back(&path, 1).expect("roll back"), RollBack::RolledBack { pages: 0, torn: true });
        let mut expected_rows = committed;
        expected_rows[10 * layout.words()..11 * layout.words()].fill(5.0);
        assert_eq!(all_rows(&path), expected_rows, "a page whose entry is torn is left alone");
    }
}

#[test]
fn a_journal_of_an_older_checkpoint_is_discarded_and_a_newer_one_refused() {
    for folder in folders() {
        let (path, mut table, _) = protected_table(folder.path(), ReadPath::Pread);
        let layout = table.layout();
        table.write_rows(&[10, 11], &filled(layout, &[10, 11], 5.0)).expect("write");
        table.sync().expect("sync");
        drop(table);
        let newest = all_rows(&path);
        // Checkpoint 2 was committed (with these rows) before the journal was reset.
        match roll_back(&path, 2).expect("discard") {
            RollBack::Discarded { reason } => assert!(reason.contains("superseded by 2"), "{reason}"),
            other => panic!("expected a discarded journal, got {other:?}"),
        }
        assert!(!journal_path(&path).exists());
        assert_eq!(all_rows(&path), newest, "a stale journal is not applied");

        let (path, table, _) = protected_table(folder.path(), ReadPath::Pread);
        drop(table);
        let error = roll_back(&path, 0).expect_err("a journal newer than the manifest").to_string();
        assert!(error.contains(".journal") && error.contains("checkpoint 1") && error.contains("committed checkpoint 0"), "{error}");
        assert!(journal_path(&path).exists(), "kept for a look");
    }
}

#[test]
fn a_journal_reset_at_each_checkpoint_and_an_incomplete_header() {
    for folder in folders() {
        let (path, mut table, _) = protected_table(folder.path(), ReadPath::IoUring);
        let layout = table.layout();
        table.write_rows(&[10], &filled(layout, &[10], 5.0)).expect("write");
        table.sync().expect("sync");
        table.protect_checkpoint(2).expect("next checkpoint");
        let committed = all_rows(&path);
        table.write_rows(&[10, 200], &filled(layout, &[10, 200], 7.0)).expect("write");
        assert_eq!(table.stats().pages_journaled, 3, "page 1 saved again for checkpoint 2");
        drop(table);
        assert_eq!(roll_back(&path, 2).expect("roll back"), RollBack::RolledBack { pages: 2, torn: false });
        assert_eq!(all_rows(&path), committed);

        // A crash while the header was written: the journal protects nothing.
        std::fs::write(journal_path(&path), b"STRATAJN\x01").expect("write");
        assert!(matches!(roll_back(&path, 2).expect("discard"), RollBack::Discarded { .. }));
        // A new table at the path drops the old journal.
        std::fs::write(journal_path(&path), b"old").expect("write");
        TableFile::create(&path, 10, layout, INIT).expect("create");
        assert!(!journal_path(&path).exists());
    }
}
