//! Criterion benches for the host tier: pooled embedding-bag gather of uniform random
//! rows from a 64-byte-aligned host slab, next to a plain memory copy of the same
//! number of bytes (`strata bench gather` runs the full-size comparison).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use strata::engine::host::HostSlab;
use strata::engine::pool::{pool_bags, Pooling};
use strata::engine::{Dtype, Optimizer, RowLayout, RowSlab};

const DIM: usize = 128;
const BAG: usize = 32;
const BATCH: usize = 1024;
/// Slab size: past the development VM's last-level cache (480 MiB reported).
const SLAB_BYTES: usize = 1 << 30;
/// Batches of ids cycled through, so repeated iterations do not re-read cached rows.
const ID_BATCHES: usize = 64;

fn gather(c: &mut Criterion) {
    let layout = RowLayout::new(DIM, &Optimizer::default());
    let mut slab = HostSlab::with_budget(SLAB_BYTES, layout).expect("host slab");
    let slots = slab.slots() as u32;
    for slot in 0..slots {
        slab.host_row_mut(slot).expect("row").fill(slot as f32);
    }
    let lookups = BAG * BATCH;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let ids: Vec<u32> = (0..lookups * ID_BATCHES).map(|_| rng.gen_range(0..slots)).collect();
    let offsets: Vec<usize> = (0..=BATCH).map(|b| b * BAG).collect();
    let mut out = vec![0f32; BATCH * DIM];
    let bytes = (lookups * DIM * 4) as u64;

    let mut group = c.benchmark_group("host_gather");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);
    group.bench_function("pool_bags_sum_dim128_bag32", |b| {
        let mut refs: Vec<&[f32]> = Vec::with_capacity(lookups);
        let mut batch = 0;
        b.iter(|| {
            refs.clear();
            let ids = &ids[batch % ID_BATCHES * lookups..][..lookups];
            batch += 1;
            refs.extend(ids.iter().map(|&id| slab.host_row(id).expect("row")));
            pool_bags(&refs, &offsets, &[], DIM, Dtype::F32, Pooling::Sum, &mut out);
            black_box(&out);
        })
    });
    let src = vec![1u8; 256 << 20];
    let mut dst = vec![0u8; src.len()];
    group.throughput(Throughput::Bytes(src.len() as u64));
    group.bench_function("memcpy_256MiB", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    group.finish();
}

criterion_group!(benches, gather);
criterion_main!(benches);
