//! The CUDA device tier against the CPU, bit for bit: the same reference checks as the
//! host tier. On a machine without libcuda, libnvrtc or a device each of those tests
//! prints `skipped: no CUDA device (reason)` and passes; on a GPU machine they really
//! run. The kernels are also compiled with NVRTC for Hopper on every machine `make test`
//! runs on, GPU or not, so a kernel that does not compile fails CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::engine::device::{compile_kernels, cuda_probe, nvrtc_probe, open_device, CudaSlab, DeviceKind};
use strata::engine::testing::{check_slab_against_vec, TestValues, ADAGRAD};
use strata::engine::{Optimizer, RowLayout, RowSlab, TierError};

fn gpu() -> bool {
    match cuda_probe() {
        Ok(()) => true,
        Err(reason) => {
            println!("skipped: no CUDA device ({reason})");
            false
        }
    }
}

#[test]
fn cuda_slab_matches_the_cpu_bit_for_bit() {
    if !gpu() {
        return;
    }
    for dim in [1, 7, 128] {
        let mut slab = CudaSlab::new(0, 300, RowLayout::new(dim, &ADAGRAD)).expect("open CUDA slab");
        println!("{}", slab.backend());
        assert!(!slab.emulated() && slab.host_row(0).is_none());
        check_slab_against_vec(&mut slab, &ADAGRAD);
        let sgd = Optimizer::Sgd { lr: 0.05 };
        let mut slab = CudaSlab::new(0, 300, RowLayout::new(dim, &sgd)).expect("open CUDA slab");
        check_slab_against_vec(&mut slab, &sgd);
    }
}

#[test]
fn cuda_slab_crosses_staging_chunks() {
    if !gpu() {
        return;
    }
    // More rows than one staging round trip (16384) in each call.
    let mut slab = CudaSlab::new(0, 40_000, RowLayout::new(16, &ADAGRAD)).expect("open CUDA slab");
    check_slab_against_vec(&mut slab, &ADAGRAD);
}

#[test]
fn cuda_slab_errors_instead_of_panicking() {
    if !gpu() {
        assert!(matches!(open_device(DeviceKind::Cuda, 4, RowLayout::new(4, &ADAGRAD)), Err(TierError::Backend { .. })));
        return;
    }
    let mut slab = open_device(DeviceKind::Cuda, 4, RowLayout::new(4, &ADAGRAD)).expect("open CUDA slab");
    assert!(matches!(slab.load(&[4], &mut [0.0; 5]), Err(TierError::BadSlot { slot: 4, .. })));
    assert!(slab.gather(&[0], &mut [0.0; 3]).is_err());
    assert!(slab.apply(&[1, 1], &[0.0; 8], &ADAGRAD).is_err(), "duplicate slots in one apply");
    assert!(slab.apply(&[1], &[0.0; 4], &Optimizer::Sgd { lr: 0.1 }).is_err());
    // Still usable afterwards.
    let mut values = TestValues::new(1);
    let mut row = [0f32; 5];
    values.fill(&mut row, 1.0);
    slab.store(&[2], &row).expect("store");
    let mut back = [0f32; 5];
    slab.load(&[2], &mut back).expect("load");
    assert_eq!(row.map(f32::to_bits), back.map(f32::to_bits));
}

/// Set by `make test` to the PyTorch venv, whose NVIDIA wheels ship NVRTC: there the
/// kernels must compile, and this test fails where NVRTC cannot be loaded.
const TORCH_VENV: &str = "STRATA_TORCH_VENV";
/// Set in the copy of the test that runs again with NVRTC's folder on LD_LIBRARY_PATH.
const RERUN: &str = "STRATA_NVRTC_RERUN";
/// The GPU architecture of the GPU machines (H100 / H200).
const HOPPER: &str = "compute_90";

/// The folder of `libnvrtc.so.13` in the venv: `lib/python3.*/site-packages/nvidia/cu13/lib`.
fn nvrtc_folder(venv: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("python3")))
        .collect();
    pythons.sort();
    pythons.into_iter().map(|python| python.join("site-packages/nvidia/cu13/lib")).find(|folder| folder.join("libnvrtc.so.13").is_file())
}

#[test]
fn kernels_compile_for_hopper_with_nvrtc() {
    if nvrtc_probe().is_ok() {
        let ptx = compile_kernels(Some(HOPPER)).unwrap_or_else(|e| panic!("the device kernels do not compile for {HOPPER}: {e}")).to_src();
        assert!(ptx.contains(".target sm_90"), "PTX for another target:\n{ptx}");
        for kernel in ["gather_rows", "scatter_rows", "apply_sgd", "apply_rowwise_adagrad"] {
            assert!(ptx.contains(&format!(".entry {kernel}(")), "no kernel {kernel} in the PTX");
        }
        println!("the device kernels compile for {HOPPER} ({} bytes of PTX)", ptx.len());
        return;
    }
    // glibc reads LD_LIBRARY_PATH once, when a process starts, and cudarc opens NVRTC by
    // name: the test runs again, in a process that starts with NVRTC's folder on it.
    assert!(std::env::var_os(RERUN).is_none(), "NVRTC does not load even from LD_LIBRARY_PATH={:?}", std::env::var_os("LD_LIBRARY_PATH"));
    let Some(venv) = std::env::var_os(TORCH_VENV) else {
        println!("skipped: {TORCH_VENV} (the PyTorch venv, which `make test` sets) is not set, and {}", nvrtc_probe().unwrap_err());
        return;
    };
    let venv = PathBuf::from(venv);
    let folder = nvrtc_folder(&venv)
        .unwrap_or_else(|| panic!("{TORCH_VENV}={}: no lib/python3*/site-packages/nvidia/cu13/lib/libnvrtc.so.13 in it", venv.display()));
    let library_path = match std::env::var_os("LD_LIBRARY_PATH") {
        Some(old) if !old.is_empty() => {
            std::env::join_paths(std::iter::once(folder.clone()).chain(std::env::split_paths(&old))).expect("paths without a colon")
        }
        _ => folder.clone().into_os_string(),
    };
    let this_test = std::env::current_exe().expect("the test's own executable");
    let rerun = Command::new(&this_test)
        .args(["kernels_compile_for_hopper_with_nvrtc", "--exact", "--nocapture", "--test-threads=1"])
        .env("LD_LIBRARY_PATH", library_path)
        .env(RERUN, "1")
        .output()
        .unwrap_or_else(|e| panic!("running {} again: {e}", this_test.display()));
    let output = format!("{}{}", String::from_utf8_lossy(&rerun.stdout), String::from_utf8_lossy(&rerun.stderr));
    assert!(rerun.status.success(), "with NVRTC from {}: {}\n{output}", folder.display(), rerun.status);
    assert!(output.contains("1 passed"), "the test did not run again:\n{output}");
    print!("with NVRTC from {}:\n{output}", folder.display());
}
