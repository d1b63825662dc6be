//! The CUDA device tier against the CPU, bit for bit: the same reference checks as the
//! host tier. On a machine without libcuda, libnvrtc or a device each test prints
//! `skipped: no CUDA device (reason)` and passes; on a GPU machine they really run.

use strata::engine::device::{cuda_probe, open_device, CudaSlab, DeviceKind};
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
