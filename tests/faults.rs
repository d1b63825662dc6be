//! Fault injection in the storage tier: page reads that fail (EIO), come back short or
//! with a flipped byte, and page writes that fail, on every read path, through the
//! table file, the storage thread and the tiered table. Each gives an error naming the
//! file, the page and the row; under `on_io_error = { retry = N }` transient faults are
//! absorbed; nothing corrupt reaches the caller, and a failed write leaves the file's
//! previous pages intact (checked by re-opening and reading every row).

use std::path::{Path, PathBuf};

use strata::engine::batch::Batch;
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::{FaultPlan, OnIoError, PageFault, ReadConfig, ReadPath, StorageError, StorageService, TableFile};
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{EngineError, InitRows, Optimizer, RowInit, RowLayout};
use strata_policies::PolicyConfig;

mod common;
use common::folders;

const INIT: RowInit = RowInit::Uniform { seed: 11, scale: 0.5 };
/// 516-byte rows: 7 per 4 KiB page, so row `r` is in page `r / 7`.
const LAYOUT: RowLayout = RowLayout::f32(128, 1);
const ROWS: u64 = 100;

const READ_FAULTS: [PageFault; 3] = [PageFault::ReadEio, PageFault::ShortRead { bytes: 100 }, PageFault::FlipByte { offset: 5 * 516 + 9 }];

fn create(folder: &Path) -> PathBuf {
    let path = folder.join("faults.strata");
    TableFile::create(&path, ROWS, LAYOUT, INIT).expect("create table");
    path
}

fn open(path: &Path, read_path: ReadPath, on_io_error: OnIoError, plan: &FaultPlan) -> TableFile {
    let mut table = TableFile::open_with(path, ReadConfig { read_path, on_io_error, ..ReadConfig::default() }).expect("open");
    table.inject_faults(plan.clone());
    table
}

fn initial(rows: impl IntoIterator<Item = u64>) -> Vec<f32> {
    let mut out = Vec::new();
    let mut row = vec![0f32; LAYOUT.words()];
    for r in rows {
        INIT.fill(r, LAYOUT, &mut row);
        out.extend_from_slice(&row);
    }
    out
}

/// Every row of the file, read after re-opening it with each read path (all must agree
/// and every page must verify).
fn every_row(path: &Path) -> Vec<f32> {
    let all: Vec<u64> = (0..ROWS).collect();
    let mut first: Option<Vec<f32>> = None;
    for read_path in ReadPath::ALL {
        let mut table = TableFile::open(path, read_path).expect("re-open");
        let mut out = vec![f32::NAN; all.len() * LAYOUT.words()];
        table.read_rows(&all, &mut out).expect("every page verifies");
        match &first {
            Some(f) => assert_eq!(&out, f, "{read_path} reads the same rows"),
            None => first = Some(out),
        }
    }
    first.expect("three read paths")
}

fn row_of(data: &[f32], row: u64) -> &[f32] {
    let f = LAYOUT.words();
    &data[row as usize * f..(row as usize + 1) * f]
}

/// Checks the message of a failed read of page 2 for request row 15 under `fault`.
fn assert_read_error(error: &StorageError, path: &Path, fault: PageFault, tries: u32) {
    let message = error.to_string();
    assert!(message.starts_with(&format!("{}: page 2 (rows 14..21): ", path.display())), "{message}");
    match fault {
        PageFault::FlipByte { .. } => {
            assert!(matches!(error, StorageError::ChecksumMismatch { page: 2, row: 15, .. }), "{message}");
            assert!(message.contains("checksum mismatch (stored 0x"), "{message}");
        }
        _ => assert!(matches!(error, StorageError::PageIo { page: 2, row: 15, .. }), "{message}"),
    }
    let detail = match fault {
        PageFault::ReadEio => "reading row 15: Input/output error (os error 5)",
        PageFault::ShortRead { .. } => "reading row 15: short read: 100 of 4096 bytes",
        _ => "reading row 15",
    };
    let ending = if tries > 1 { format!("{detail} ({tries} tries)") } else { detail.to_string() };
    assert!(message.ends_with(&ending), "{message} should end with {ending}");
}

#[test]
fn read_faults_name_file_page_and_row_and_hand_out_nothing_on_every_read_path() {
    for folder in folders() {
        let path = create(folder.path());
        for read_path in ReadPath::ALL {
            for fault in READ_FAULTS {
                let plan = FaultPlan::new();
                let mut table = open(&path, read_path, OnIoError::Stop, &plan);
                plan.arm(2, fault, 1);
                let request = [3u64, 15, 30];
                let mut out = vec![f32::NAN; request.len() * LAYOUT.words()];
                let error = table.read_rows(&request, &mut out).expect_err("page 2 fails");
                assert_read_error(&error, &path, fault, 1);
                assert!(out.iter().all(|v| v.is_nan()), "{read_path} {fault:?}: no row of the batch is handed out");
                assert_eq!(plan.fired(), 1);
                let stats = table.stats();
                assert_eq!((stats.retries, stats.checksum_failures), (0, u64::from(matches!(fault, PageFault::FlipByte { .. }))));
                // The fault was spent: the same read now succeeds.
                table.read_rows(&request, &mut out).expect("read again");
                assert_eq!(out, initial(request), "{read_path} {fault:?}");
            }
        }
    }
}

#[test]
fn retries_absorb_transient_faults_and_report_persistent_ones() {
    for folder in folders() {
        let path = create(folder.path());
        for read_path in ReadPath::ALL {
            for fault in READ_FAULTS {
                let plan = FaultPlan::new();
                let mut table = open(&path, read_path, OnIoError::Retry(2), &plan);
                let request = [15u64, 16, 40];
                let mut out = vec![f32::NAN; request.len() * LAYOUT.words()];
                plan.arm(2, fault, 2);
                table.read_rows(&request, &mut out).expect("two failures, then a good read");
                assert_eq!(out, initial(request), "{read_path} {fault:?}: only a verified re-read is used");
                assert_eq!(table.stats().retries, 2);
                plan.arm(2, fault, 3);
                out.fill(f32::NAN);
                let error = table.read_rows(&request, &mut out).expect_err("three failures");
                assert_read_error(&error, &path, fault, 3);
                assert!(out[..2 * LAYOUT.words()].iter().all(|v| v.is_nan()), "nothing from page 2");
                let stats = table.stats();
                assert_eq!(stats.retries, 4);
                let flips = u64::from(matches!(fault, PageFault::FlipByte { .. }));
                assert_eq!(stats.checksum_failures, 5 * flips, "every failed checksum is counted");
            }
        }
    }
}

#[test]
fn a_failed_write_leaves_the_previous_pages_intact_and_verifiable() {
    for folder in folders() {
        for read_path in ReadPath::ALL {
            let path = create(folder.path());
            let plan = FaultPlan::new();
            let mut table = open(&path, read_path, OnIoError::Stop, &plan);
            // Pages 1 and 2 form one run of adjacent pages, page 5 another.
            let targets = [8u64, 16, 17, 36];
            let data: Vec<f32> = (0..targets.len() * LAYOUT.words()).map(|i| i as f32 * 0.5).collect();
            plan.arm(2, PageFault::WriteEio, 1);
            let error = table.write_rows(&targets, &data).expect_err("page 2's run fails");
            let message = error.to_string();
            assert!(matches!(error, StorageError::PageIo { page: 1, row: 8, .. }), "{message}");
            assert_eq!(message, format!("{}: pages 1..=2 (rows 7..21): writing row 8: Input/output error (os error 5)", path.display()));
            drop(table);
            let rows = every_row(&path);
            for row in 0..ROWS {
                let want = if row == 36 { data[3 * LAYOUT.words()..].to_vec() } else { initial([row]) };
                assert_eq!(row_of(&rows, row), &want[..], "{read_path}: row {row}");
            }
            // Retried, the same write lands whole.
            let mut table = open(&path, read_path, OnIoError::Retry(1), &plan);
            plan.arm(2, PageFault::WriteEio, 1);
            table.write_rows(&targets, &data).expect("retried write");
            assert_eq!(table.stats().retries, 1);
            drop(table);
            let rows = every_row(&path);
            for (i, &row) in targets.iter().enumerate() {
                assert_eq!(row_of(&rows, row), &data[i * LAYOUT.words()..(i + 1) * LAYOUT.words()]);
            }
        }
    }
}

#[test]
fn a_page_failing_its_checksum_is_never_rewritten_by_a_partial_write() {
    for folder in folders() {
        let path = create(folder.path());
        let plan = FaultPlan::new();
        let mut table = open(&path, ReadPath::Pread, OnIoError::Retry(1), &plan);
        plan.arm(4, PageFault::FlipByte { offset: 3 }, 2);
        let error = table.write_rows(&[30], &vec![1.0; LAYOUT.words()]).expect_err("page 4 read back corrupt twice");
        let message = error.to_string();
        assert!(matches!(error, StorageError::ChecksumMismatch { page: 4, row: 30, .. }), "{message}");
        assert!(message.ends_with("writing row 30 (2 tries)"), "{message}");
        assert_eq!(table.stats().pages_written, 0);
        drop(table);
        assert_eq!(every_row(&path), initial(0..ROWS));
    }
}

/// A tiered table over the file at `path` (a table file with `plan` set on it).
fn tiered(
    path: &Path,
    read_path: ReadPath,
    on_io_error: OnIoError,
    plan: &FaultPlan,
    host_rows: usize,
    write_buffer_rows: usize,
) -> TieredTable {
    let config = TableConfig {
        device: TierConfig::rows(4, PolicyConfig::Lru),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(host_rows, PolicyConfig::Lru),
        hierarchy: Hierarchy::Inclusive,
        optimizer: Optimizer::default(),
        pooling: Pooling::Sum,
        write_buffer_rows,
        rounding: Default::default(),
    };
    TieredTable::new(&config, Box::new(open(path, read_path, on_io_error, plan))).expect("tiered table")
}

/// Two bags: rows 3 and 15 (pages 0 and 2), and rows 15, 40 and 99.
fn batch() -> Batch {
    Batch::new(vec![3, 15, 15, 40, 99], vec![0, 2, 5], 0)
}

fn grads(batch: &Batch) -> Vec<f32> {
    (0..batch.bags() * LAYOUT.dim).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect()
}

fn storage_error(error: &EngineError) -> &StorageError {
    match error {
        EngineError::Storage(e) => e,
        other => panic!("expected a storage error, got {other}"),
    }
}

#[test]
fn lookups_fail_on_read_faults_and_succeed_bit_identically_when_retried() {
    let mut reference = FlatTable::new(ROWS, LAYOUT, INIT);
    let mut want = vec![0f32; 2 * LAYOUT.dim];
    reference.lookup(&batch(), Pooling::Sum, &mut want);
    for folder in folders() {
        let path = create(folder.path());
        for read_path in ReadPath::ALL {
            for fault in READ_FAULTS {
                let plan = FaultPlan::new();
                let mut table = tiered(&path, read_path, OnIoError::Stop, &plan, 16, 0);
                plan.arm(2, fault, 1);
                let mut out = vec![f32::NAN; 2 * LAYOUT.dim];
                let error = table.lookup(&batch(), &mut out).expect_err("page 2 fails");
                assert_read_error(storage_error(&error), &path, fault, 1);
                assert!(out.iter().all(|v| v.is_nan()), "{read_path} {fault:?}: no pooled output");
                drop(table);

                let mut table = tiered(&path, read_path, OnIoError::Retry(2), &plan, 16, 0);
                plan.arm(2, fault, 2);
                table.lookup(&batch(), &mut out).expect("retried");
                assert_eq!(out, want, "{read_path} {fault:?}");
                assert_eq!(plan.remaining(), 0);
            }
        }
    }
}

#[test]
fn apply_gradients_fails_on_a_read_fault_and_writes_nothing() {
    for folder in folders() {
        let path = create(folder.path());
        for fault in READ_FAULTS {
            let plan = FaultPlan::new();
            // No lookup first: the update reads its rows from the store itself, row 15
            // (page 2) first.
            let mut table = tiered(&path, ReadPath::IoUring, OnIoError::Stop, &plan, 16, 0);
            plan.arm(2, fault, 1);
            let batch = Batch::new(vec![15, 3, 40], vec![0, 1, 3], 0);
            let error = table.apply_gradients(&batch, &grads(&batch)).expect_err("page 2 fails");
            let error = storage_error(&error);
            assert!(error.to_string().contains("page 2 (rows 14..21)") && error.to_string().contains("reading row 15"), "{error}");
            drop(table);
            assert_eq!(every_row(&path), initial(0..ROWS), "{fault:?}: the file is unchanged");
        }
    }
}

/// Runs lookups and updates of `batch()` and a batch on page 5, then flushes, with a
/// write fault armed on page 2 for `times` writes.
fn train_and_flush(table: &mut TieredTable, plan: &FaultPlan, times: u32) -> Result<(), EngineError> {
    let second = Batch::new(vec![36, 37], vec![0, 1, 2], 5);
    let mut out = vec![0f32; 2 * LAYOUT.dim];
    for batch in [batch(), second] {
        table.lookup(&batch, &mut out).expect("lookup");
        table.apply_gradients(&batch, &grads(&batch)).expect("update");
    }
    plan.arm(2, PageFault::WriteEio, times);
    table.flush()
}

fn trained_reference() -> FlatTable {
    let mut reference = FlatTable::new(ROWS, LAYOUT, INIT);
    for batch in [batch(), Batch::new(vec![36, 37], vec![0, 1, 2], 5)] {
        reference.apply_gradients(&batch, &grads(&batch), &Optimizer::default(), Pooling::Sum);
    }
    reference
}

#[test]
fn a_failed_flush_names_the_pages_keeps_them_intact_and_stops_the_table() {
    let reference = trained_reference();
    for folder in folders() {
        for write_buffer_rows in [0, 64] {
            let path = create(folder.path());
            let plan = FaultPlan::new();
            let mut table = tiered(&path, ReadPath::Pread, OnIoError::Stop, &plan, 16, write_buffer_rows);
            let error = train_and_flush(&mut table, &plan, 1).expect_err("page 2's write fails");
            let message = storage_error(&error).to_string();
            assert!(message.starts_with(&path.display().to_string()), "{message}");
            assert!(message.contains("page 2 (rows 14..21): writing row 15: Input/output error"), "{message}");
            // Every later call fails rather than serve rows the store may lack.
            let mut out = vec![0f32; 2 * LAYOUT.dim];
            let later = table.lookup(&Batch::new(vec![15, 16], vec![0, 1, 2], 9), &mut out).expect_err("stopped");
            assert!(matches!(later, EngineError::StoreFailed { .. }), "{later}");
            assert!(matches!(table.flush(), Err(EngineError::StoreFailed { .. })));
            drop(table);
            let rows = every_row(&path);
            for row in 0..ROWS {
                let want = if (14..21).contains(&row) { initial([row]) } else { reference.row(row).to_vec() };
                assert_eq!(row_of(&rows, row), &want[..], "buffer {write_buffer_rows}: row {row}");
            }
        }
    }
}

#[test]
fn a_retried_flush_lands_every_row() {
    let reference = trained_reference();
    for folder in folders() {
        let path = create(folder.path());
        let plan = FaultPlan::new();
        let mut table = tiered(&path, ReadPath::IoUring, OnIoError::Retry(2), &plan, 16, 64);
        train_and_flush(&mut table, &plan, 2).expect("two failed writes, then a good one");
        assert_eq!(plan.fired(), 2);
        table.close().expect("close");
        let rows = every_row(&path);
        for row in 0..ROWS {
            assert_eq!(row_of(&rows, row), reference.row(row), "row {row}");
        }
    }
}

#[test]
fn storage_service_reports_a_failed_write_on_the_next_call_and_serves_no_stale_row() {
    for folder in folders() {
        let path = create(folder.path());
        for write_buffer_rows in [0, 1] {
            let plan = FaultPlan::new();
            let service = StorageService::start(Box::new(open(&path, ReadPath::Pread, OnIoError::Stop, &plan)), write_buffer_rows);
            plan.arm(3, PageFault::WriteEio, 1);
            let rows = vec![21u64, 22];
            service.write(rows.clone(), vec![7.0; 2 * LAYOUT.words()]).expect("queued");
            // A read sent right behind the failed write must not see the old rows.
            let error = match service.read(rows.clone()).and_then(|pending| pending.wait()) {
                Ok(_) => panic!("buffer {write_buffer_rows}: a read after a failed write returned rows"),
                Err(e) => e,
            };
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{}: page 3 (rows 21..28): writing row 21: Input/output error", path.display())),
                "{message}"
            );
            let again = service.read(vec![0]).and_then(|p| p.wait()).map(|_| ()).expect_err("still failed");
            assert!(matches!(again, EngineError::StoreFailed { ref earlier } if earlier.contains("page 3")), "{again}");
            assert!(matches!(service.write(vec![0], vec![0.0; LAYOUT.words()]), Err(EngineError::StoreFailed { .. })));
            assert!(matches!(service.sync(), Err(EngineError::StoreFailed { .. })));
            assert!(service.into_store().is_err());
            assert_eq!(every_row(&path), initial(0..ROWS), "buffer {write_buffer_rows}: nothing was written");
        }
    }
}
