//! `strata calibrate`: measures this machine's tiers with the benchmarks' probes and
//! writes them as a hardware profile for the planner.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use strata::data::SyntheticConfig;
use strata::engine::device::{cuda_probe, CudaSlab, DeviceKind, EmulatedDevice};
use strata::engine::host::HostSlab;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::storage::format::Header;
use strata::engine::storage::{ReadConfig, TableFile};
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::{Optimizer, Rounding, RowInit, RowLayout, RowSlab};
use strata::plan::profile::{EngineProfile, LinkProfile, ProfileFile, TierProfile};
use strata_policies::PolicyConfig;

use crate::bench::lookup::{LookupStream, SetupResult};
use crate::bench::probe;

/// The shipped nominal profiles the prices come from (measuring cannot find a price).
const DDR5_SERVER: (&str, &str) =
    ("profiles/ddr5-server.toml", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ddr5-server.toml")));
const NVME_GEN4: (&str, &str) = ("profiles/nvme-gen4.toml", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/nvme-gen4.toml")));
const H100_PCIE5: (&str, &str) =
    ("profiles/h100-pcie5.toml", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/h100-pcie5.toml")));

/// Rows per pooled bag, as `strata bench gather` uses.
const BAG: usize = 32;

/// `strata calibrate`'s options.
#[derive(Args)]
pub struct CalibrateArgs {
    /// The profile file to write.
    #[arg(long, default_value = "out/calibrate/profile.toml")]
    out: PathBuf,
    /// Folder for the scratch table file (created and removed when missing): put it
    /// on the drive the storage tier will use.
    #[arg(long, default_value = "out/calibrate/scratch")]
    dir: PathBuf,
    /// Row width (floats) of the gathered and read rows.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Device tier to measure: auto (CUDA when present, else emulated), cuda or emulated.
    #[arg(long, default_value = "auto")]
    device: DeviceKind,
    /// Run each probe briefly on small buffers and files (rough figures).
    #[arg(long)]
    quick: bool,
}

/// Measures this machine, writes the profile to `options.out` and prints its summary.
pub fn run(options: &CalibrateArgs) -> Result<()> {
    let measured = calibrate(options)?;
    write(&measured.profile, &options.out)?;
    print!("{}", measured.summary);
    println!("\nwrote {}", options.out.display());
    Ok(())
}

/// How long and how large each probe runs.
struct Effort {
    seconds: f64,
    memcpy_bytes: usize,
    slab_bytes: usize,
    /// Bags per gather batch.
    batch: usize,
    latency_reads: usize,
    file_bytes: u64,
    random_reads: u64,
    qd1_reads: u64,
    random_writes: u64,
    upload_rounds: usize,
    /// The engine probe's synthetic stream: its scale and timed batches of 256 samples.
    engine_scale: f64,
    engine_batches: u64,
}

impl Effort {
    fn new(quick: bool) -> Effort {
        if quick {
            Effort {
                seconds: 0.05,
                memcpy_bytes: 16 << 20,
                slab_bytes: 32_000_000,
                batch: 64,
                latency_reads: 10_000,
                file_bytes: 8 << 20,
                random_reads: 2_000,
                qd1_reads: 100,
                random_writes: 500,
                upload_rounds: 5,
                engine_scale: 0.0005,
                engine_batches: 4,
            }
        } else {
            Effort {
                seconds: 2.0,
                memcpy_bytes: 1 << 30,
                slab_bytes: 1_500_000_000,
                batch: 4096,
                latency_reads: 1_000_000,
                file_bytes: 1 << 30,
                random_reads: 200_000,
                qd1_reads: 5_000,
                random_writes: 50_000,
                upload_rounds: 50,
                engine_scale: 0.01,
                engine_batches: 60,
            }
        }
    }
}

/// What a run measured: the profile file and a Markdown summary of it.
pub struct Calibration {
    pub profile: ProfileFile,
    pub summary: String,
}

/// Measures the host, device and storage tiers and the link of this machine.
fn calibrate(options: &CalibrateArgs) -> Result<Calibration> {
    if options.dim == 0 {
        bail!("--dim must be at least 1");
    }
    let effort = Effort::new(options.quick);
    let layout = RowLayout::new(options.dim, &Optimizer::default());
    let ddr5 = shipped(DDR5_SERVER)?.host.context("profiles/ddr5-server.toml gives no [host]")?;
    let nvme = shipped(NVME_GEN4)?.storage.context("profiles/nvme-gen4.toml gives no [storage]")?;
    let memory_gb = mem_total_bytes()? as f64 / 1e9;

    eprintln!("calibrate: host memory");
    let memcpy_gbps = probe::memcpy_gbps(effort.memcpy_bytes, effort.seconds);
    let slots = (effort.slab_bytes / HostSlab::stride_bytes(layout)).max(1);
    let ids = probe::random_slots(slots, effort.batch * BAG * 8, 7);
    let host = {
        let mut slab = HostSlab::new(slots, layout)?;
        probe::touch_rows(&mut slab)?;
        TierProfile {
            name: format!("host memory ({})", cpu_model()),
            capacity_gb: memory_gb,
            price_per_gb: ddr5.price_per_gb,
            bandwidth_gbps: memcpy_gbps,
            latency_us: probe::row_read_latency_us(&slab, effort.latency_reads)?,
            iops: probe::pooled_gather_rows_per_s(&slab, &ids, BAG, effort.batch, effort.seconds)?,
            write_bandwidth_gbps: None,
            write_iops: None,
        }
    };

    let cuda = match options.device {
        DeviceKind::Emulated => false,
        DeviceKind::Cuda => true,
        DeviceKind::Auto => cuda_probe().is_ok(),
    };
    eprintln!("calibrate: device tier ({})", if cuda { "CUDA" } else { "emulated in host memory" });
    let (device, link) = if cuda {
        let h100 = shipped(H100_PCIE5)?.device.context("profiles/h100-pcie5.toml gives no [device]")?;
        let mut slab = CudaSlab::new(0, slots, layout)?;
        let device = measure_device(&slab, &ids, &effort, slab.device_memory_bytes()? as f64 / 1e9, h100.price_per_gb)?;
        let link = LinkProfile {
            name: format!("host to {} (pinned copies)", slab.backend()),
            bandwidth_gbps: slab.measure_upload_gbps(effort.upload_rounds)?,
            latency_us: probe::row_store_latency_us(&mut slab, effort.latency_reads.min(10_000))?,
        };
        (device, link)
    } else {
        let mut slab = EmulatedDevice::new(slots, layout)?;
        probe::touch_rows(&mut slab)?;
        let device = measure_device(&slab, &ids, &effort, memory_gb, ddr5.price_per_gb)?;
        let link = LinkProfile {
            name: "host to emulated device (memory copy)".into(),
            bandwidth_gbps: memcpy_gbps,
            latency_us: probe::row_store_latency_us(&mut slab, effort.latency_reads)?,
        };
        (device, link)
    };

    eprintln!("calibrate: storage under {}", options.dir.display());
    let scratch = Scratch::new(&options.dir)?;
    let storage = measure_storage(&scratch, layout, &effort, nvme.price_per_gb)?;
    eprintln!("calibrate: the engine's CPU time per row read from the store");
    let engine = measure_engine(&scratch, options.dim, options.device, &effort)?;
    drop(scratch);

    let mode = if options.quick { "--quick (brief probes, rough figures)" } else { "full probes" };
    let device_how = if cuda {
        "device tier: the CUDA device through the engine's gather kernel (rows copied back to the host), its total memory; link: pinned host-to-device copies, one-row store latency"
    } else {
        "device tier: no GPU in use, so the engine's emulated device (a slab in host memory), capacity = host memory; link: host memory copy"
    };
    let profile = ProfileFile {
        name: format!("calibrated: {} ({})", hostname(), if cuda { "CUDA device" } else { "emulated device" }),
        source: format!(
            "measured by `strata calibrate` ({mode}, rows of dim {}) on {}, {} cores; host: one-thread memcpy, pooled row gather, dependent single-row reads; {device_how}; storage: a scratch table file read and written through the engine's storage path; engine: a synthetic stream served from a scratch table file without read-ahead, the consumer's time outside store waits with small LRU tiers minus that with every row in the host tier, per row read, and the store's rows per second with those tiers and read-ahead 4; prices are nominal, from {}{} and {}",
            options.dim,
            hostname(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            DDR5_SERVER.0,
            if cuda { format!(", {}", H100_PCIE5.0) } else { String::new() },
            NVME_GEN4.0,
        ),
        device: Some(device),
        host: Some(host),
        storage: Some(storage),
        link: Some(link),
        engine: Some(engine),
    };
    let summary = summary(&profile);
    Ok(Calibration { profile, summary })
}

/// Writes the profile to `out`, checking that it reads back.
fn write(profile: &ProfileFile, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: creating", dir.display()))?;
    }
    let text = format!("# Written by `strata calibrate`: figures measured on this machine (see `source`).\n{}", profile.to_toml());
    ProfileFile::parse(out, &text)?;
    std::fs::write(out, text).with_context(|| format!("{}: writing", out.display()))
}

/// Device-tier figures through the slab's gather (the engine's device read path).
fn measure_device(slab: &dyn RowSlab, ids: &[u32], effort: &Effort, capacity_gb: f64, price_per_gb: f64) -> Result<TierProfile> {
    let row_bytes = (slab.layout().dim * 4) as f64;
    let lookups = effort.batch * BAG;
    let in_order: Vec<u32> = (0..slab.slots() as u32).cycle().take(lookups * 8).collect();
    Ok(TierProfile {
        name: slab.backend(),
        capacity_gb,
        price_per_gb,
        bandwidth_gbps: probe::gather_rows_per_s(slab, &in_order, lookups, effort.seconds)? * row_bytes / 1e9,
        latency_us: probe::row_read_latency_us(slab, effort.latency_reads)?,
        iops: probe::gather_rows_per_s(slab, ids, lookups, effort.seconds)?,
        write_bandwidth_gbps: None,
        write_iops: None,
    })
}

/// Storage-tier figures on a scratch table file in `scratch` (removed with it).
fn measure_storage(scratch: &Scratch, layout: RowLayout, effort: &Effort, price_per_gb: f64) -> Result<TierProfile> {
    let dir = &scratch.dir;
    let file = scratch.dir.join(format!("calibrate-{}.strata", std::process::id()));
    let sequential = scratch.dir.join(format!("calibrate-{}.seq", std::process::id()));
    scratch.remove_later(&file);
    scratch.remove_later(&sequential);
    let page = Header::new(1, layout).map_err(|e| anyhow::anyhow!("rows of dim {}: {e}", layout.dim))?;
    let rows = (effort.file_bytes / page.page_size as u64).max(1) * page.rows_per_page as u64;
    let mut table = TableFile::create(&file, rows, layout, RowInit::Uniform { seed: 1, scale: 0.01 })?;
    let batch = 256;
    let iops = effort.random_reads as f64 / probe::random_row_reads(&mut table, effort.random_reads, batch, 42)?;
    let write_iops = effort.random_writes as f64 / probe::random_row_writes(&mut table, effort.random_writes, batch, 43)?;
    let how = format!(
        "{}, {}, queue depth {}",
        table.read_path(),
        if table.direct_io() { "O_DIRECT" } else { "buffered" },
        ReadConfig::default().queue_depth
    );
    drop(table);
    let mut qd1 = TableFile::open_with(&file, ReadConfig { queue_depth: 1, ..ReadConfig::default() })?;
    let latency_us = probe::random_row_reads(&mut qd1, effort.qd1_reads, 1, 44)? * 1e6 / effort.qd1_reads as f64;
    drop(qd1);
    let bandwidth_gbps = probe::sequential_read_gbps(&file)?;
    let write_bandwidth_gbps = probe::sequential_write_gbps(&sequential, effort.file_bytes as usize)?;
    Ok(TierProfile {
        name: format!("storage under {} ({how})", dir.display()),
        capacity_gb: filesystem_bytes(&scratch.dir)? as f64 / 1e9,
        price_per_gb,
        bandwidth_gbps,
        latency_us,
        iops,
        write_bandwidth_gbps: Some(write_bandwidth_gbps),
        write_iops: Some(write_iops),
    })
}

/// The engine's CPU time per row read from the store: a synthetic MLPerf-shaped stream
/// served from a scratch table file in `scratch` without read-ahead (so the store's own
/// work falls inside the waits for it), once with every row in the host tier and once
/// with device 1% + host 5% LRU tiers that admit every row they miss. The consumer's
/// time outside store waits, per lookup, grows by the second run's work on each row it
/// read: staging it, the policies' inserts and evictions, the slab writes. A third run,
/// the small tiers with read-ahead, gives the store's rate while the consumer works
/// beside the storage thread.
fn measure_engine(scratch: &Scratch, dim: usize, device: DeviceKind, effort: &Effort) -> Result<EngineProfile> {
    let synthetic = SyntheticConfig { scale: effort.engine_scale, ..SyntheticConfig::default() };
    let rows = synthetic.layout().total_rows();
    let file = scratch.dir.join(format!("calibrate-{}-engine.strata", std::process::id()));
    scratch.remove_later(&file);
    let stream = LookupStream {
        file,
        synthetic,
        dim,
        batch: 256,
        warmup: effort.engine_batches / 2,
        batches: effort.engine_batches,
        read_path: ReadConfig::default().read_path,
    };
    let optimizer = Optimizer::default();
    stream.table_file(rows, RowLayout::new(dim, &optimizer))?;
    let tiers = |device_rows: u64, host_rows: u64| TableConfig {
        device: TierConfig::rows(device_rows as usize, PolicyConfig::Lru),
        device_backend: device,
        host: TierConfig::rows(host_rows as usize, PolicyConfig::Lru),
        hierarchy: Hierarchy::Inclusive,
        optimizer,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Rounding::Nearest,
    };
    let hits = stream.run_tiered("every row in the host tier", &tiers(0, rows), 0, true)?;
    let misses = stream.run_tiered("device 1% + host 5%", &tiers((rows / 100).max(1), (rows / 20).max(1)), 0, false)?;
    let busy_per_lookup = |run: &SetupResult| (1.0 - run.stall_fraction).max(0.0) / run.lookups_per_sec;
    let store_rows_per_lookup = misses.store_rows_read as f64 / misses.lookups.max(1) as f64;
    if store_rows_per_lookup <= 0.0 {
        bail!("the engine probe read no row from the store");
    }
    let extra = (busy_per_lookup(&misses) - busy_per_lookup(&hits)).max(0.0);
    // The same tiers with read-ahead: the store's reads run while the consumer works
    // (and the batch source makes batches) beside the storage thread, and the store is
    // what the run waits on; the rows it delivered per second are its shared rate.
    let ahead = stream.run_tiered("device 1% + host 5%, read-ahead 4", &tiers((rows / 100).max(1), (rows / 20).max(1)), 4, false)?;
    let seconds = ahead.lookups as f64 / ahead.lookups_per_sec.max(1e-9);
    if ahead.store_rows_read == 0 || seconds <= 0.0 {
        bail!("the engine probe's read-ahead run read no row from the store");
    }
    Ok(EngineProfile {
        name: format!("engine on {}, {} cores", cpu_model(), std::thread::available_parallelism().map_or(1, |n| n.get())),
        store_row_ns: extra / store_rows_per_lookup * 1e9,
        shared_store_iops: Some(ahead.store_rows_read as f64 / seconds),
    })
}

/// The scratch folder: files in it are removed when it goes, and the folder itself
/// when it did not exist before.
struct Scratch {
    dir: PathBuf,
    created: bool,
    files: std::cell::RefCell<Vec<PathBuf>>,
}

impl Scratch {
    fn new(dir: &Path) -> Result<Scratch> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).with_context(|| format!("{}: creating the scratch folder", dir.display()))?;
        Ok(Scratch { dir: dir.to_path_buf(), created, files: Default::default() })
    }

    fn remove_later(&self, file: &Path) {
        self.files.borrow_mut().push(file.to_path_buf());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for file in self.files.borrow().iter() {
            let _ = std::fs::remove_file(file);
        }
        if self.created {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A shipped profile, parsed (it is compiled in, so it cannot be missing).
fn shipped((path, text): (&str, &str)) -> Result<ProfileFile> {
    Ok(ProfileFile::parse(Path::new(path), text)?)
}

/// `MemTotal` of /proc/meminfo, bytes.
fn mem_total_bytes() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("/proc/meminfo: reading")?;
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("/proc/meminfo: no MemTotal line")?;
    Ok(kib * 1024)
}

/// Total bytes of the file system holding `dir` (statvfs).
fn filesystem_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).context("scratch folder name holds a NUL byte")?;
    // SAFETY: statvfs is a plain C struct of integers, valid when zeroed.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        bail!("{}: statvfs: {}", dir.display(), std::io::Error::last_os_error());
    }
    Ok(stat.f_blocks as u64 * stat.f_frsize as u64)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_string()).unwrap_or_else(|_| "this machine".into())
}

/// The profile as a Markdown table.
fn summary(profile: &ProfileFile) -> String {
    let mut s = format!("{}\n\n| tier | what | capacity GB | USD/GB | read GB/s | latency us | reads/s | write GB/s | writes/s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n", profile.name);
    for (table, tier) in [("device", &profile.device), ("host", &profile.host), ("storage", &profile.storage)] {
        if let Some(t) = tier {
            s += &format!(
                "| {table} | {} | {:.1} | {:.2} | {:.2} | {:.3} | {:.3e} | {:.2} | {:.3e} |\n",
                t.name,
                t.capacity_gb,
                t.price_per_gb,
                t.bandwidth_gbps,
                t.latency_us,
                t.iops,
                t.write_bandwidth_gbps(),
                t.write_iops()
            );
        }
    }
    if let Some(link) = &profile.link {
        s += &format!("| link | {} | | | {:.2} | {:.3} | | | |\n", link.name, link.bandwidth_gbps, link.latency_us);
    }
    if let Some(engine) = &profile.engine {
        s += &format!("\n{}: {:.0} ns of CPU per row read from the store\n", engine.name, engine.store_row_ns);
        if let Some(iops) = engine.shared_store_iops {
            s += &format!("{}: the store delivers {:.1} k rows/s under read-ahead, the consumer beside it\n", engine.name, iops / 1e3);
        }
    }
    s
}
