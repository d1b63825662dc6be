//! `strata bench gather`: pooled embedding-bag gather from a host slab (and, with
//! `--backend cuda`, pinned host-to-device copy and device gather) against plain
//! single-thread memory copy, measured in the same run.

use anyhow::{bail, Result};
use clap::Args;
use strata::engine::device::{open_device, CudaSlab, DeviceKind};
use strata::engine::host::HostSlab;
use strata::engine::{Optimizer, RowLayout, RowSlab};

use super::probe::{gather_rows_per_s, memcpy_gbps, pooled_gather_rows_per_s, random_slots, touch_rows};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GatherBackend {
    Host,
    Emulated,
    Cuda,
}

/// Seconds each timed loop of `bench gather` runs for, at least.
const GATHER_SECONDS: f64 = 2.0;

/// `strata bench gather`'s options.
#[derive(Args)]
pub struct GatherBenchArgs {
    /// host, emulated or cuda.
    #[arg(long, default_value = "host")]
    backend: GatherBackend,
    /// Rows in the slab (default: as many as fit in about 1.5 GB).
    #[arg(long)]
    rows: Option<usize>,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Rows per bag.
    #[arg(long, default_value_t = 32)]
    bag: usize,
    /// Bags per batch.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
}

impl GatherBenchArgs {
    /// Runs the benchmark and prints its Markdown table.
    pub fn run(&self) -> Result<()> {
        let GatherBenchArgs { backend, rows, dim, bag, batch } = *self;
        if dim == 0 || bag == 0 || batch == 0 {
            bail!("--dim, --bag and --batch must be at least 1");
        }
        let layout = RowLayout::new(dim, &Optimizer::default());
        let stride = HostSlab::stride_bytes(layout);
        let slots = rows.unwrap_or(1_500_000_000 / stride);
        let memcpy = memcpy_gbps(1 << 30, GATHER_SECONDS);
        let mut slab: Box<dyn RowSlab> = match backend {
            GatherBackend::Emulated => open_device(DeviceKind::Emulated, slots, layout)?,
            GatherBackend::Host | GatherBackend::Cuda => Box::new(HostSlab::new(slots, layout)?),
        };
        touch_rows(slab.as_mut())?;
        let lookups = batch * bag;
        let ids = random_slots(slots, lookups * 8, 7);
        let rows_per_s = pooled_gather_rows_per_s(slab.as_ref(), &ids, bag, batch, GATHER_SECONDS)?;
        let gather = rows_per_s * (dim * 4) as f64 / 1e9;
        println!(
            "| measure ({}, {slots} rows of dim {dim}, {:.2} GB slab, bags of {bag}, batches of {batch}) | value |",
            slab.backend(),
            (slots * stride) as f64 / 1e9
        );
        println!("|---|---:|");
        println!("| memcpy, 1 GiB, one thread (GB/s copied) | {memcpy:.2} |");
        println!("| pooled gather, one thread (M rows/s) | {:.2} |", rows_per_s / 1e6);
        println!("| pooled gather (GB/s of row values read) | {gather:.2} |");
        println!("| pooled gather / memcpy | {:.0}% |", 100.0 * gather / memcpy);
        if backend == GatherBackend::Cuda {
            drop(slab);
            let cuda = CudaSlab::new(0, slots, layout)?;
            let h2d = cuda.measure_upload_gbps(50)?;
            let device_gather = gather_rows_per_s(&cuda, &ids, lookups, GATHER_SECONDS)? * (dim * 4) as f64 / 1e9;
            println!("| device: {} | |", cuda.backend());
            println!("| pinned host-to-device copy (GB/s) | {h2d:.2} |");
            println!("| device gather to host, incl. copies (GB/s of row values) | {device_gather:.2} |");
        }
        Ok(())
    }
}
