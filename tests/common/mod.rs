//! Helpers shared by the integration tests (each test crate uses some of them).
#![allow(dead_code)]

#[cfg(feature = "torch")]
pub mod model;
pub mod transparency;

use std::path::Path;

/// Folders to create tables in: the system temp folder, and one on the checkout's disk
/// (the temp folder may be a tmpfs, where O_DIRECT is refused and buffered I/O is used).
pub fn folders() -> Vec<tempfile::TempDir> {
    let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-test");
    std::fs::create_dir_all(&on_disk).expect("create target-test");
    vec![tempfile::tempdir().expect("temp dir"), tempfile::tempdir_in(on_disk).expect("temp dir on disk")]
}
