//! The machine probes shared by `strata bench` and `strata calibrate`: memory copy,
//! row gathers and single-row latency of a tier's slab, and random row reads and
//! writes, sequential reads and writes on the storage tier's files.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::engine::pool::{pool_bags, Pooling};
use strata::engine::storage::TableFile;
use strata::engine::Dtype;
use strata::engine::RowSlab;

/// Copies a buffer of `bytes` into another repeatedly, for at least `seconds` (and three
/// rounds): single-thread memory-copy GB/s (bytes copied per second).
pub fn memcpy_gbps(bytes: usize, seconds: f64) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let (start, mut rounds) = (Instant::now(), 0usize);
    while rounds < 3 || start.elapsed().as_secs_f64() < seconds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        rounds += 1;
    }
    (rounds * bytes) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Writes every row of a slab in host memory (row `s` all `s`), so that reads hit real
/// memory, not the shared zero page.
pub fn touch_rows(slab: &mut dyn RowSlab) -> Result<()> {
    for slot in 0..slab.slots() as u32 {
        let row = slab.host_row_mut(slot).context("the probe needs a slab in host memory")?;
        row.fill(slot as f32);
    }
    Ok(())
}

/// `count` slots drawn uniformly below `slots`.
pub fn random_slots(slots: usize, count: usize, seed: u64) -> Vec<u32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count).map(|_| rng.gen_range(0..slots as u32)).collect()
}

/// Pooled embedding-bag gather (sum) from a slab in host memory, one thread, for at
/// least `seconds` (and five batches): rows read per second. `ids` holds whole batches
/// of `batch` bags of `bag` rows, cycled.
pub fn pooled_gather_rows_per_s(slab: &dyn RowSlab, ids: &[u32], bag: usize, batch: usize, seconds: f64) -> Result<f64> {
    let (dim, lookups) = (slab.layout().dim, batch * bag);
    let batches_held = ids.len() / lookups;
    if batches_held == 0 {
        bail!("the gather probe needs at least one batch of {lookups} ids, got {}", ids.len());
    }
    let offsets: Vec<usize> = (0..=batch).map(|b| b * bag).collect();
    let mut refs: Vec<&[f32]> = Vec::with_capacity(lookups);
    let mut out = vec![0f32; batch * dim];
    let (start, mut batches) = (Instant::now(), 0usize);
    while batches < 5 || start.elapsed().as_secs_f64() < seconds {
        refs.clear();
        for &id in &ids[(batches % batches_held) * lookups..][..lookups] {
            refs.push(slab.host_row(id).context("row vanished from the host slab")?);
        }
        pool_bags(&refs, &offsets, &[], dim, Dtype::F32, Pooling::Sum, &mut out);
        std::hint::black_box(&out);
        batches += 1;
    }
    Ok((batches * lookups) as f64 / start.elapsed().as_secs_f64())
}

/// Batches of `lookups` rows gathered through [`RowSlab::gather`] (the device tier's
/// read path; on a GPU including the copy back to the host), for at least `seconds`
/// (and five batches): rows per second. `ids` holds whole batches, cycled.
pub fn gather_rows_per_s(slab: &dyn RowSlab, ids: &[u32], lookups: usize, seconds: f64) -> Result<f64> {
    let batches_held = ids.len() / lookups.max(1);
    if batches_held == 0 {
        bail!("the gather probe needs at least one batch of {lookups} ids, got {}", ids.len());
    }
    let mut values = vec![0f32; lookups * slab.layout().dim];
    let (start, mut batches) = (Instant::now(), 0usize);
    while batches < 5 || start.elapsed().as_secs_f64() < seconds {
        slab.gather(&ids[(batches % batches_held) * lookups..][..lookups], &mut values)?;
        std::hint::black_box(&values);
        batches += 1;
    }
    Ok((batches * lookups) as f64 / start.elapsed().as_secs_f64())
}

/// One row at a time through [`RowSlab::gather`], each slot drawn from the values of
/// the row read before, so that no read starts before the previous one ends: the
/// microseconds of one random row read at queue depth 1 (`reads` of them, averaged).
pub fn row_read_latency_us(slab: &dyn RowSlab, reads: usize) -> Result<f64> {
    let slots = slab.slots() as u64;
    let mut row = vec![0f32; slab.layout().dim];
    let mut slot = 0u64;
    let start = Instant::now();
    for step in 0..reads as u64 {
        slab.gather(&[slot as u32], &mut row)?;
        // A 64-bit mix of the value read and the step: the next slot depends on this read.
        let mixed = (u64::from(row[0].to_bits()) ^ step).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        slot = (mixed >> 17) % slots;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / reads.max(1) as f64)
}

/// One row at a time through [`RowSlab::store`] (on a GPU a host-to-device copy and a
/// scatter kernel): microseconds per row, `stores` random rows averaged.
pub fn row_store_latency_us(slab: &mut dyn RowSlab, stores: usize) -> Result<f64> {
    let slots = random_slots(slab.slots(), stores, 11);
    let row = vec![0.5f32; slab.layout().words()];
    let start = Instant::now();
    for &slot in &slots {
        slab.store(&[slot], &row)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / stores.max(1) as f64)
}

/// Asks the kernel to drop the cached pages of `file` (read from `path`), so that reads
/// go to the device.
pub fn drop_cached_pages(file: &File, path: &Path) -> Result<()> {
    // SAFETY: posix_fadvise only reads its integer arguments.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("{}: posix_fadvise(DONTNEED): {}", path.display(), std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// `reads` random single rows of `table` through its read path, `batch` rows per
/// `read_rows` call, after dropping the file's cached pages: the seconds they took.
pub fn random_row_reads(table: &mut TableFile, reads: u64, batch: usize, seed: u64) -> Result<f64> {
    drop_cached_pages(table.file(), table.path())?;
    let rows = table.rows();
    let mut rng = SmallRng::seed_from_u64(seed);
    let request: Vec<u64> = (0..reads).map(|_| rng.gen_range(0..rows)).collect();
    let floats = table.layout().words();
    let mut out = vec![0f32; batch * floats];
    let started = Instant::now();
    for chunk in request.chunks(batch) {
        table.read_rows(chunk, &mut out[..chunk.len() * floats])?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `writes` random single rows written to `table` through its write path, `batch` rows
/// per `write_rows` call (a row sharing its page with others costs a page read and a
/// page write), then synced: the seconds they took, the sync included.
pub fn random_row_writes(table: &mut TableFile, writes: u64, batch: usize, seed: u64) -> Result<f64> {
    drop_cached_pages(table.file(), table.path())?;
    let rows = table.rows();
    let mut rng = SmallRng::seed_from_u64(seed);
    let request: Vec<u64> = (0..writes).map(|_| rng.gen_range(0..rows)).collect();
    let data = vec![0.25f32; batch * table.layout().words()];
    let started = Instant::now();
    for chunk in request.chunks(batch) {
        table.write_rows(chunk, &data[..chunk.len() * table.layout().words()])?;
    }
    table.sync()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Bytes each sequential read or write call moves.
const SEQUENTIAL_CHUNK: usize = 4 << 20;

/// Reads the whole file at `path` front to back in 4 MiB calls, after dropping its
/// cached pages (buffered reads, so the kernel's read-ahead keeps the drive busy): GB/s.
pub fn sequential_read_gbps(path: &Path) -> Result<f64> {
    let mut file = File::open(path).with_context(|| format!("{}: opening", path.display()))?;
    drop_cached_pages(&file, path)?;
    let mut buf = vec![0u8; SEQUENTIAL_CHUNK];
    let (started, mut bytes) = (Instant::now(), 0usize);
    loop {
        let n = file.read(&mut buf).with_context(|| format!("{}: reading at byte {bytes}", path.display()))?;
        if n == 0 {
            break;
        }
        bytes += n;
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e9)
}

/// Writes a new file of `bytes` at `path` in 4 MiB calls and syncs it: GB/s, the sync
/// included. The file stays; the caller removes it.
pub fn sequential_write_gbps(path: &Path, bytes: usize) -> Result<f64> {
    let mut file = File::create(path).with_context(|| format!("{}: creating", path.display()))?;
    let buf = vec![0x5au8; SEQUENTIAL_CHUNK];
    let (started, mut written) = (Instant::now(), 0usize);
    while written < bytes {
        let n = SEQUENTIAL_CHUNK.min(bytes - written);
        file.write_all(&buf[..n]).with_context(|| format!("{}: writing at byte {written}", path.display()))?;
        written += n;
    }
    file.sync_all().with_context(|| format!("{}: fsync", path.display()))?;
    Ok(written as f64 / started.elapsed().as_secs_f64() / 1e9)
}
