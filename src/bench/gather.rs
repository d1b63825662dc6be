//! `strata bench gather`: pooled embedding-bag gather from a host slab (and, with
//! `--backend cuda`, pinned host-to-device copy and device gather) against plain
//! single-thread memory copy, measured in the same run.

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GatherBackend {
    Host,
    Emulated,
    Cuda,
}

/// Seconds each timed loop of `bench gather` runs for, at least.
const GATHER_SECONDS: f64 = 2.0;

/// Copies a 1 GiB buffer into another repeatedly: single-thread memory-copy GB/s
/// (bytes copied per second).
fn memcpy_gbps() -> f64 {
    let len = 1usize << 30;
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src);
    let (start, mut rounds) = (std::time::Instant::now(), 0usize);
    while rounds < 3 || start.elapsed().as_secs_f64() < GATHER_SECONDS {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        rounds += 1;
    }
    (rounds * len) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Runs the benchmark and prints its Markdown table.
pub fn run(backend: GatherBackend, rows: Option<usize>, dim: usize, bag: usize, batch: usize) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use std::time::Instant;
    use strata::engine::device::{open_device, CudaSlab, DeviceKind};
    use strata::engine::host::HostSlab;
    use strata::engine::pool::{pool_bags, Pooling};
    use strata::engine::{Optimizer, RowLayout, RowSlab};

    if dim == 0 || bag == 0 || batch == 0 {
        bail!("--dim, --bag and --batch must be at least 1");
    }
    let layout = RowLayout::new(dim, &Optimizer::default());
    let stride = HostSlab::stride_bytes(layout);
    let slots = rows.unwrap_or(1_500_000_000 / stride);
    let memcpy = memcpy_gbps();
    let mut slab: Box<dyn RowSlab> = match backend {
        GatherBackend::Emulated => open_device(DeviceKind::Emulated, slots, layout)?,
        GatherBackend::Host | GatherBackend::Cuda => Box::new(HostSlab::new(slots, layout)?),
    };
    // Touch every row so reads hit real memory, not the shared zero page.
    for slot in 0..slots as u32 {
        let row = slab.host_row_mut(slot).context("the pooled gather needs a slab in host memory")?;
        row.fill(slot as f32);
    }
    let lookups = batch * bag;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let ids: Vec<u32> = (0..lookups * 8).map(|_| rng.gen_range(0..slots as u32)).collect();
    let offsets: Vec<usize> = (0..=batch).map(|b| b * bag).collect();
    let mut refs: Vec<&[f32]> = Vec::with_capacity(lookups);
    let mut out = vec![0f32; batch * dim];
    let (start, mut batches) = (Instant::now(), 0usize);
    while batches < 5 || start.elapsed().as_secs_f64() < GATHER_SECONDS {
        let ids = &ids[(batches % 8) * lookups..][..lookups];
        refs.clear();
        for &id in ids {
            refs.push(slab.host_row(id).context("row vanished from the host slab")?);
        }
        pool_bags(&refs, &offsets, dim, Pooling::Sum, &mut out);
        std::hint::black_box(&out);
        batches += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let rows_per_s = (batches * lookups) as f64 / seconds;
    let gather = rows_per_s * (dim * 4) as f64 / 1e9;
    println!("| measure ({}, {slots} rows of dim {dim}, {:.2} GB slab, bags of {bag}, batches of {batch}) | value |", slab.backend(), (slots * stride) as f64 / 1e9);
    println!("|---|---:|");
    println!("| memcpy, 1 GiB, one thread (GB/s copied) | {memcpy:.2} |");
    println!("| pooled gather, one thread (M rows/s) | {:.2} |", rows_per_s / 1e6);
    println!("| pooled gather (GB/s of row values read) | {gather:.2} |");
    println!("| pooled gather / memcpy | {:.0}% |", 100.0 * gather / memcpy);
    if backend == GatherBackend::Cuda {
        drop(refs);
        drop(slab);
        let cuda = CudaSlab::new(0, slots, layout)?;
        let h2d = cuda.measure_upload_gbps(50)?;
        let mut values = vec![0f32; lookups * dim];
        let (start, mut batches) = (Instant::now(), 0usize);
        while batches < 5 || start.elapsed().as_secs_f64() < GATHER_SECONDS {
            cuda.gather(&ids[(batches % 8) * lookups..][..lookups], &mut values)?;
            batches += 1;
        }
        let device_gather = (batches * lookups * dim * 4) as f64 / start.elapsed().as_secs_f64() / 1e9;
        println!("| device: {} | |", cuda.backend());
        println!("| pinned host-to-device copy (GB/s) | {h2d:.2} |");
        println!("| device gather to host, incl. copies (GB/s of row values) | {device_gather:.2} |");
    }
    Ok(())
}

