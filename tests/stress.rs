//! Stress: the whole pipeline (batch source thread, read-ahead, the storage thread with
//! its write-back buffer, io_uring, pread pools of many threads, mmap) with capacities
//! of a few rows per tier and a write buffer of a few rows, several tables trained at
//! once on threads of their own, hundreds of steps of a skewed stream each: every
//! pooled output and every row equals the flat in-memory reference, bit for bit.
//! Run it under `--release` (as `make test` does); in a debug build it is slow.

use std::path::PathBuf;

use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::{BackingStore, ReadConfig, ReadPath, TableFile};
use strata::engine::{Optimizer, Rounding, RowInit, RowLayout};

mod common;
use common::folders;
use common::transparency::{check_with_store, Case, Stream};

/// Three segments (the table closed and re-opened between them) of 150 batches of 16
/// bags (16 to 64 lookups a batch).
const LONG: Stream = Stream { segments: 3, batches: 150, bags: 16 };

/// One table of the stress run: its set-up and how its file is read.
struct Table {
    case: Case,
    read: ReadConfig,
}

fn tables() -> Vec<Table> {
    let adagrad = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
    let read = |read_path, queue_depth, pread_threads| ReadConfig { read_path, queue_depth, pread_threads, ..ReadConfig::default() };
    let sets = [
        // policy, hierarchy, device, host, window, write buffer, read path, depth, threads
        ("lru", Hierarchy::Inclusive, 2, 3, 4, 2, ReadPath::Pread, 32, 16),
        ("s3fifo", Hierarchy::Exclusive, 3, 4, 3, 3, ReadPath::IoUring, 64, 1),
        ("lookahead:64", Hierarchy::Inclusive, 1, 5, 2, 1, ReadPath::Pread, 32, 12),
        ("arc", Hierarchy::Exclusive, 2, 2, 4, 4, ReadPath::IoUring, 8, 1),
        ("clock", Hierarchy::Inclusive, 4, 0, 3, 2, ReadPath::Mmap, 32, 1),
        ("tinylfu", Hierarchy::Exclusive, 0, 3, 1, 3, ReadPath::Pread, 32, 8),
    ];
    sets.into_iter()
        .map(|(policy, hierarchy, device_rows, host_rows, window, write_buffer_rows, read_path, depth, threads)| Table {
            case: Case {
                policy,
                hierarchy,
                device_rows,
                host_rows,
                window,
                optimizer: adagrad,
                pooling: Pooling::Sum,
                write_buffer_rows,
                rounding: Rounding::Nearest,
            },
            read: read(read_path, depth, threads),
        })
        .collect()
}

#[test]
fn tiny_tiers_many_threads_and_tables_at_once_match_the_flat_table() {
    for folder in folders() {
        let runs: Vec<_> = tables()
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let path: PathBuf = folder.path().join(format!("stress-{i}.strata"));
                std::thread::spawn(move || {
                    let seed = 7000 + i as u64;
                    // dim 32 with an Adagrad state: 31 rows per 4 KiB page, 65 pages.
                    let layout = RowLayout::new(32, &table.case.optimizer);
                    TableFile::create(&path, 2000, layout, RowInit::Uniform { seed, scale: 0.1 }).unwrap();
                    let open = |path: &PathBuf| -> Box<dyn BackingStore> { Box::new(TableFile::open_with(path, table.read).unwrap()) };
                    let reopen = |closed: Box<dyn BackingStore>| {
                        drop(closed);
                        open(&path)
                    };
                    check_with_store(&table.case, LONG, seed, open(&path), &reopen);
                })
            })
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            if let Err(panic) = run.join() {
                eprintln!("stress table {i} failed");
                std::panic::resume_unwind(panic);
            }
        }
    }
}
