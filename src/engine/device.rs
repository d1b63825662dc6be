//! The device tier: GPU HBM through cudarc, or an emulated device in host memory.
//!
//! [`CudaSlab`] keeps `slots` rows in device memory and moves them through a pinned
//! (page-locked, cacheable) host staging buffer on a copy stream; NVRTC kernels
//! (`device/kernels.cu`) gather rows and apply the optimizer on a compute stream. The
//! apply kernels mirror [`Optimizer::apply_row`] operation by operation and are
//! compiled without fused multiply-adds, fast math or flush-to-zero, so a row updated on
//! the GPU has the same bits as one updated on the CPU. cudarc loads libcuda and
//! libnvrtc at run time; both are probed first, so a machine without them gets a
//! [`TierError`], never a panic.
//!
//! [`EmulatedDevice`] stands in on machines without a GPU: a host slab with its own
//! capacity, which says "emulated-device" in every report.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};
use serde::{Deserialize, Serialize};

use super::host::HostSlab;
use super::{Optimizer, RowLayout, RowSlab, TierError};

/// Which device tier to open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// CUDA when libcuda and a device are present, else the emulated device.
    #[default]
    Auto,
    Cuda,
    Emulated,
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceKind::Auto),
            "cuda" => Ok(DeviceKind::Cuda),
            "emulated" => Ok(DeviceKind::Emulated),
            other => Err(format!("unknown device `{other}` (expected auto, cuda or emulated)")),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Auto => "auto",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Emulated => "emulated",
        })
    }
}

/// Opens a device slab of `slots` rows: CUDA device 0, or the emulated device. `Auto`
/// falls back to the emulated device (with a log line saying so) only when there is no
/// libcuda or no device; a GPU that is present but fails to open is an error.
pub fn open_device(kind: DeviceKind, slots: usize, layout: RowLayout) -> Result<Box<dyn RowSlab>, TierError> {
    match kind {
        DeviceKind::Emulated => Ok(Box::new(EmulatedDevice::new(slots, layout)?)),
        DeviceKind::Cuda => Ok(Box::new(CudaSlab::new(0, slots, layout)?)),
        DeviceKind::Auto => match cuda_probe() {
            Ok(()) => Ok(Box::new(CudaSlab::new(0, slots, layout)?)),
            Err(reason) => {
                tracing::info!("device tier: {reason}; using the emulated device (host memory)");
                Ok(Box::new(EmulatedDevice::new(slots, layout)?))
            }
        },
    }
}

/// The stand-in device: host memory with its own capacity.
pub struct EmulatedDevice {
    slab: HostSlab,
}

const EMULATED: &str = "emulated-device";

/// Renames a host-slab error to the emulated device.
fn retier(e: TierError) -> TierError {
    match e {
        TierError::Backend { message, .. } => TierError::Backend { tier: EMULATED.into(), message },
        TierError::BadSlot { slot, slots, .. } => TierError::BadSlot { tier: EMULATED.into(), slot, slots },
    }
}

impl EmulatedDevice {
    pub fn new(slots: usize, layout: RowLayout) -> Result<Self, TierError> {
        Ok(EmulatedDevice { slab: HostSlab::new(slots, layout).map_err(retier)? })
    }

    /// As many rows as fit in a device memory of `bytes`.
    pub fn with_budget(bytes: usize, layout: RowLayout) -> Result<Self, TierError> {
        Ok(EmulatedDevice { slab: HostSlab::with_budget(bytes, layout).map_err(retier)? })
    }

    pub fn resident_bytes(&self) -> usize {
        self.slab.resident_bytes()
    }
}

impl RowSlab for EmulatedDevice {
    fn backend(&self) -> String {
        EMULATED.into()
    }
    fn emulated(&self) -> bool {
        true
    }
    fn layout(&self) -> RowLayout {
        self.slab.layout()
    }
    fn slots(&self) -> usize {
        self.slab.slots()
    }
    fn store(&mut self, slots: &[u32], rows: &[f32]) -> Result<(), TierError> {
        self.slab.store(slots, rows).map_err(retier)
    }
    fn load(&self, slots: &[u32], rows: &mut [f32]) -> Result<(), TierError> {
        self.slab.load(slots, rows).map_err(retier)
    }
    fn gather(&self, slots: &[u32], out: &mut [f32]) -> Result<(), TierError> {
        self.slab.gather(slots, out).map_err(retier)
    }
    fn apply(&mut self, slots: &[u32], grads: &[f32], optimizer: &Optimizer) -> Result<(), TierError> {
        self.slab.apply(slots, grads, optimizer).map_err(retier)
    }
    fn host_row(&self, slot: u32) -> Option<&[f32]> {
        self.slab.host_row(slot)
    }
    fn host_row_mut(&mut self, slot: u32) -> Option<&mut [f32]> {
        self.slab.host_row_mut(slot)
    }
}

fn cuda_error(message: impl fmt::Display) -> TierError {
    TierError::Backend { tier: "cuda".into(), message: message.to_string() }
}

fn driver(what: &'static str) -> impl Fn(DriverError) -> TierError {
    move |e| cuda_error(format_args!("{what}: {e}"))
}

/// Checks, without panicking, that libcuda, libnvrtc and at least one device are
/// present; the error says which is missing.
pub fn cuda_probe() -> Result<(), String> {
    // SAFETY: only tries to dlopen the library under its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver library (libcuda.so) found".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("CUDA driver present but unusable: {e}"))?;
    if count < 1 {
        return Err("CUDA driver present but no device".into());
    }
    nvrtc_probe()
}

/// Checks, without panicking, that libnvrtc can be loaded (the kernels compile with it
/// on machines without a GPU too).
pub fn nvrtc_probe() -> Result<(), String> {
    // SAFETY: only tries to dlopen the library under its usual names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC library (libnvrtc.so / libnvrtc.so.13) found; add its folder to LD_LIBRARY_PATH".into());
    }
    Ok(())
}

/// The kernels' CUDA source: gather, scatter and the optimizer updates, mirroring
/// `Optimizer::apply_row` statement by statement.
const KERNELS: &str = include_str!("device/kernels.cu");

/// Compiles the kernels to PTX with NVRTC for the GPU architecture `arch` (`None`:
/// NVRTC's default, which the driver JIT-compiles for the device at hand), with the
/// options that keep a row's update bit-identical to [`Optimizer::apply_row`]: no fused
/// multiply-adds, no flush-to-zero, IEEE division and square root, no fast math.
/// Fails, without panicking, where NVRTC cannot be loaded.
pub fn compile_kernels(arch: Option<&'static str>) -> Result<Ptx, TierError> {
    nvrtc_probe().map_err(cuda_error)?;
    let options = CompileOptions {
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        use_fast_math: Some(false),
        arch,
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, options).map_err(|e| cuda_error(format!("NVRTC: {e}")))
}

/// Rows moved per staging round trip.
const CHUNK_ROWS: usize = 16384;
const THREADS: u32 = 256;

/// Host and device buffers for one transfer of up to `CHUNK_ROWS` rows.
struct Staging {
    host: PinnedHostSlice<f32>,
    host_slots: PinnedHostSlice<u32>,
    dev: CudaSlice<f32>,
    dev_slots: CudaSlice<u32>,
}

struct Kernels {
    gather: CudaFunction,
    scatter: CudaFunction,
    sgd: CudaFunction,
    adagrad: CudaFunction,
}

/// Rows in GPU memory (CUDA device through cudarc).
pub struct CudaSlab {
    compute: Arc<CudaStream>,
    copy: Arc<CudaStream>,
    rows: CudaSlice<f32>,
    kernels: Kernels,
    staging: Mutex<Staging>,
    slots: usize,
    layout: RowLayout,
    name: String,
}

fn grid(threads_needed: usize) -> LaunchConfig {
    let blocks = threads_needed.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

impl CudaSlab {
    /// A zeroed slab of `slots` rows on CUDA device `ordinal`.
    pub fn new(ordinal: usize, slots: usize, layout: RowLayout) -> Result<Self, TierError> {
        cuda_probe().map_err(cuda_error)?;
        if layout.dim == 0 || slots == 0 || slots > u32::MAX as usize {
            return Err(cuda_error(format!("cannot hold {slots} slots of dim {}", layout.dim)));
        }
        let floats = layout.words();
        let ctx = CudaContext::new(ordinal).map_err(driver("open device"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver("compute capability"))?;
        let name = format!("cuda:{ordinal} ({}, sm_{major}{minor})", ctx.name().map_err(driver("device name"))?);
        let compute = ctx.new_stream().map_err(driver("compute stream"))?;
        let copy = ctx.new_stream().map_err(driver("copy stream"))?;
        let ptx = compile_kernels(None)?;
        let module = ctx.load_module(ptx).map_err(driver("load kernels"))?;
        let load = |name: &'static str| module.load_function(name).map_err(driver(name));
        let kernels = Kernels {
            gather: load("gather_rows")?,
            scatter: load("scatter_rows")?,
            sgd: load("apply_sgd")?,
            adagrad: load("apply_rowwise_adagrad")?,
        };
        let total = slots.checked_mul(floats).ok_or_else(|| cuda_error(format!("{slots} slots of {floats} floats overflow")))?;
        let rows = compute.alloc_zeros::<f32>(total).map_err(driver("allocate the slab"))?;
        let chunk = CHUNK_ROWS.min(slots) * floats;
        // SAFETY: the buffers are only read after being written. Flags 0: page-locked
        // and cacheable (cudarc's plain `alloc_pinned` is write-combined, slow to read).
        let staging = unsafe {
            Staging {
                host: ctx.alloc_pinned_with_flags(chunk, 0).map_err(driver("pinned staging"))?,
                host_slots: ctx.alloc_pinned_with_flags(CHUNK_ROWS.min(slots), 0).map_err(driver("pinned staging"))?,
                dev: copy.alloc::<f32>(chunk).map_err(driver("device staging"))?,
                dev_slots: copy.alloc::<u32>(CHUNK_ROWS.min(slots)).map_err(driver("device staging"))?,
            }
        };
        compute.synchronize().map_err(driver("synchronize"))?;
        Ok(CudaSlab { compute, copy, rows, kernels, staging: Mutex::new(staging), slots, layout, name })
    }

    /// Bytes of device memory the rows take.
    pub fn resident_bytes(&self) -> usize {
        self.slots * self.layout.bytes()
    }

    /// Bytes of memory the whole device has.
    pub fn device_memory_bytes(&self) -> Result<usize, TierError> {
        self.compute.context().total_mem().map_err(driver("device memory size"))
    }

    fn check(&self, what: &str, slots: &[u32], got: usize, per_row: usize) -> Result<(), TierError> {
        if got != slots.len() * per_row {
            return Err(cuda_error(format!("{what}: {got} floats for {} slots, expected {}", slots.len(), slots.len() * per_row)));
        }
        match slots.iter().find(|&&s| s as usize >= self.slots) {
            Some(&slot) => Err(TierError::BadSlot { tier: "cuda".into(), slot, slots: self.slots }),
            None => Ok(()),
        }
    }

    fn staging(&self) -> Result<std::sync::MutexGuard<'_, Staging>, TierError> {
        self.staging.lock().map_err(|_| cuda_error("staging buffer poisoned by an earlier panic"))
    }

    /// Copies `slots` (and, with `values`, `values.len()` floats) host-to-device
    /// through the pinned staging buffers, on the copy stream, and waits.
    fn upload(&self, staging: &mut Staging, slots: &[u32], values: &[f32]) -> Result<(), TierError> {
        let err = driver("host-to-device copy");
        staging.host_slots.as_mut_slice().map_err(&err)?[..slots.len()].copy_from_slice(slots);
        self.copy.memcpy_htod(&staging.host_slots.as_slice().map_err(&err)?[..slots.len()], &mut staging.dev_slots).map_err(&err)?;
        if !values.is_empty() {
            staging.host.as_mut_slice().map_err(&err)?[..values.len()].copy_from_slice(values);
            self.copy.memcpy_htod(&staging.host.as_slice().map_err(&err)?[..values.len()], &mut staging.dev).map_err(&err)?;
        }
        self.copy.synchronize().map_err(&err)
    }

    /// Gathers `width` floats of each slot into `out` (chunk by chunk).
    fn gather_width(&self, slots: &[u32], width: usize, out: &mut [f32]) -> Result<(), TierError> {
        let mut staging = self.staging()?;
        let floats = self.layout.words() as u32;
        for (chunk, out) in slots.chunks(CHUNK_ROWS).zip(out.chunks_mut(CHUNK_ROWS * width)) {
            self.upload(&mut staging, chunk, &[])?;
            let (n, w) = (chunk.len() as u32, width as u32);
            let Staging { host, dev, dev_slots, .. } = &mut *staging;
            let mut launch = self.compute.launch_builder(&self.kernels.gather);
            launch.arg(&self.rows).arg(&*dev_slots).arg(&n).arg(&w).arg(&floats).arg(&mut *dev);
            // SAFETY: the arguments match the kernel's signature; slots were checked
            // against the slab and `dev` holds at least n * width floats.
            unsafe { launch.launch(grid(out.len())) }.map_err(driver("gather kernel"))?;
            self.compute.synchronize().map_err(driver("gather kernel"))?;
            let err = driver("device-to-host copy");
            self.copy.memcpy_dtoh(&dev.slice(..out.len()), &mut host.as_mut_slice().map_err(&err)?[..out.len()]).map_err(&err)?;
            self.copy.synchronize().map_err(&err)?;
            out.copy_from_slice(&host.as_slice().map_err(&err)?[..out.len()]);
        }
        Ok(())
    }

    /// Pinned host-to-device bandwidth in GB/s: `bytes` (rounded down to the staging
    /// buffer's size per copy) copied `rounds` times.
    pub fn measure_upload_gbps(&self, rounds: usize) -> Result<f64, TierError> {
        let mut staging = self.staging()?;
        let Staging { host, dev, .. } = &mut *staging;
        let err = driver("host-to-device copy");
        self.copy.memcpy_htod(host.as_slice().map_err(&err)?, dev).map_err(&err)?;
        self.copy.synchronize().map_err(&err)?;
        let start = Instant::now();
        for _ in 0..rounds {
            self.copy.memcpy_htod(host.as_slice().map_err(&err)?, dev).map_err(&err)?;
        }
        self.copy.synchronize().map_err(&err)?;
        Ok((rounds * host.num_bytes()) as f64 / start.elapsed().as_secs_f64() / 1e9)
    }
}

impl RowSlab for CudaSlab {
    fn backend(&self) -> String {
        self.name.clone()
    }
    fn emulated(&self) -> bool {
        false
    }
    fn layout(&self) -> RowLayout {
        self.layout
    }
    fn slots(&self) -> usize {
        self.slots
    }

    fn store(&mut self, slots: &[u32], rows: &[f32]) -> Result<(), TierError> {
        let floats = self.layout.words();
        self.check("store", slots, rows.len(), floats)?;
        let mut staging = self.staging.lock().map_err(|_| cuda_error("staging buffer poisoned"))?;
        for (chunk, values) in slots.chunks(CHUNK_ROWS).zip(rows.chunks(CHUNK_ROWS * floats)) {
            self.upload(&mut staging, chunk, values)?;
            let (n, f) = (chunk.len() as u32, floats as u32);
            let Staging { dev, dev_slots, .. } = &*staging;
            let mut launch = self.compute.launch_builder(&self.kernels.scatter);
            launch.arg(&mut self.rows).arg(dev_slots).arg(&n).arg(&f).arg(dev);
            // SAFETY: arguments match the kernel; slots checked; `dev` holds the rows.
            unsafe { launch.launch(grid(values.len())) }.map_err(driver("store kernel"))?;
            self.compute.synchronize().map_err(driver("store kernel"))?;
        }
        Ok(())
    }

    fn load(&self, slots: &[u32], rows: &mut [f32]) -> Result<(), TierError> {
        let floats = self.layout.words();
        self.check("load", slots, rows.len(), floats)?;
        self.gather_width(slots, floats, rows)
    }

    fn gather(&self, slots: &[u32], out: &mut [f32]) -> Result<(), TierError> {
        let dim = self.layout.dim;
        self.check("gather", slots, out.len(), dim)?;
        self.gather_width(slots, dim, out)
    }

    fn apply(&mut self, slots: &[u32], grads: &[f32], optimizer: &Optimizer) -> Result<(), TierError> {
        let (dim, floats) = (self.layout.dim, self.layout.words());
        self.check("apply", slots, grads.len(), dim)?;
        if optimizer.state_floats() != self.layout.state {
            return Err(cuda_error(format!(
                "apply: {optimizer:?} keeps {} state floats per row, the slab {}",
                optimizer.state_floats(),
                self.layout.state
            )));
        }
        let mut sorted = slots.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(cuda_error(format!("apply: slot {} appears twice in one call", w[0])));
        }
        let mut staging = self.staging.lock().map_err(|_| cuda_error("staging buffer poisoned"))?;
        for (chunk, grads) in slots.chunks(CHUNK_ROWS).zip(grads.chunks(CHUNK_ROWS * dim)) {
            self.upload(&mut staging, chunk, grads)?;
            let (n, d, f) = (chunk.len() as u32, dim as u32, floats as u32);
            let Staging { dev, dev_slots, .. } = &*staging;
            let (kernel, lr, eps) = match *optimizer {
                Optimizer::Sgd { lr } => (&self.kernels.sgd, lr, None),
                Optimizer::RowWiseAdagrad { lr, eps } => (&self.kernels.adagrad, lr, Some(eps)),
            };
            let mut launch = self.compute.launch_builder(kernel);
            launch.arg(&mut self.rows).arg(dev_slots).arg(&n).arg(&d).arg(&f).arg(dev).arg(&lr);
            if let Some(eps) = eps.as_ref() {
                launch.arg(eps);
            }
            // SAFETY: arguments match the kernel (eps only for Adagrad); slots checked
            // and distinct, so no two threads update the same row.
            unsafe { launch.launch(grid(chunk.len())) }.map_err(driver("apply kernel"))?;
            self.compute.synchronize().map_err(driver("apply kernel"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{check_slab_against_vec, ADAGRAD};

    #[test]
    fn emulated_device_matches_a_plain_vec_bit_for_bit() {
        let mut device = EmulatedDevice::new(40, RowLayout::new(128, &ADAGRAD)).unwrap();
        assert!(device.emulated() && device.backend() == "emulated-device");
        check_slab_against_vec(&mut device, &ADAGRAD);
        let sgd = Optimizer::Sgd { lr: 0.5 };
        check_slab_against_vec(&mut EmulatedDevice::new(9, RowLayout::new(3, &sgd)).unwrap(), &sgd);
    }

    #[test]
    fn emulated_device_has_its_own_capacity_and_errors() {
        let layout = RowLayout::new(128, &ADAGRAD);
        let device = EmulatedDevice::with_budget(576 * 3, layout).unwrap();
        assert_eq!((device.slots(), device.resident_bytes()), (3, 1728));
        let err = device.gather(&[3], &mut [0.0; 128]).unwrap_err();
        assert!(matches!(&err, TierError::BadSlot { tier, slot: 3, .. } if tier == "emulated-device"), "{err}");
        assert!(EmulatedDevice::with_budget(100, layout).is_err());
    }

    #[test]
    fn device_kind_parses_and_round_trips() {
        for kind in [DeviceKind::Auto, DeviceKind::Cuda, DeviceKind::Emulated] {
            assert_eq!(kind.to_string().parse::<DeviceKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<DeviceKind>(&json).unwrap(), kind);
        }
        assert!("gpu".parse::<DeviceKind>().is_err());
    }

    #[test]
    fn open_device_says_what_runs() {
        let layout = RowLayout::new(8, &ADAGRAD);
        let emulated = open_device(DeviceKind::Emulated, 4, layout).unwrap();
        assert!(emulated.emulated() && emulated.host_row(0).is_some());
        let auto = open_device(DeviceKind::Auto, 4, layout).unwrap();
        match cuda_probe() {
            Ok(()) => assert!(auto.backend().starts_with("cuda:") && auto.host_row(0).is_none()),
            Err(_) => {
                assert_eq!(auto.backend(), "emulated-device");
                // Asking for CUDA without a GPU is an error, not a panic.
                assert!(matches!(open_device(DeviceKind::Cuda, 4, layout), Err(TierError::Backend { .. })));
            }
        }
    }
}
