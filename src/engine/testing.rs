//! Reference checks that every [`RowSlab`] must pass, shared by the unit tests and the
//! CUDA integration tests: a slab must store, load, gather and update rows exactly as a
//! plain `Vec<f32>` updated with [`Optimizer::apply_row`] does, bit for bit. Compiled for
//! tests and the `test-utils` feature only.

use super::{Optimizer, RowLayout, RowSlab};

/// The optimizer the checks use by default (row-wise Adagrad, as MLPerf DLRM).
pub const ADAGRAD: Optimizer = Optimizer::RowWiseAdagrad { lr: 0.03, eps: 1e-8 };

/// A seeded stream of test values (splitmix64).
pub struct TestValues(u64);

impl TestValues {
    pub fn new(seed: u64) -> Self {
        TestValues(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`, with every few values scaled by a power of ten so
    /// sums of squares and square roots see a wide range of magnitudes.
    pub fn next_f32(&mut self, scale: f32) -> f32 {
        let h = self.next_u64();
        let unit = (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        let exponent = [1.0, 1.0, 1.0, 1e-3, 10.0][(h & 0xff) as usize % 5];
        scale * unit * exponent
    }

    pub fn fill(&mut self, values: &mut [f32], scale: f32) {
        values.iter_mut().for_each(|v| *v = self.next_f32(scale));
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Stores random rows into every slot of `slab` (in a shuffled order), then checks
/// `load`, `gather`, `host_row` and three rounds of `apply` with `optimizer` against a
/// plain `Vec` computation. Panics on the first difference.
pub fn check_slab_against_vec(slab: &mut dyn RowSlab, optimizer: &Optimizer) {
    let layout: RowLayout = slab.layout();
    let (dim, floats, slots) = (layout.dim, layout.words(), slab.slots());
    let mut values = TestValues::new(0x5EED ^ dim as u64);
    // Reference rows, with positive optimizer state.
    let mut reference = vec![0f32; slots * floats];
    for row in reference.chunks_exact_mut(floats) {
        values.fill(&mut row[..dim], 0.1);
        row[dim..].iter_mut().for_each(|s| *s = values.next_f32(1.0).abs());
    }
    // Store in a shuffled slot order.
    let mut order: Vec<u32> = (0..slots as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, values.next_u64() as usize % (i + 1));
    }
    let mut rows = Vec::with_capacity(slots * floats);
    for &slot in &order {
        rows.extend_from_slice(&reference[slot as usize * floats..][..floats]);
    }
    slab.store(&order, &rows).expect("store");
    let check_all = |slab: &dyn RowSlab, reference: &[f32], when: &str| {
        let all: Vec<u32> = (0..slots as u32).collect();
        let mut loaded = vec![0f32; slots * floats];
        slab.load(&all, &mut loaded).expect("load");
        assert_eq!(bits(&loaded), bits(reference), "{}: load {when}", slab.backend());
        for slot in 0..slots {
            if let Some(row) = slab.host_row(slot as u32) {
                assert_eq!(bits(row), bits(&reference[slot * floats..][..floats]), "host_row {slot} {when}");
            }
        }
    };
    check_all(slab, &reference, "after store");
    // Gather a few slots, with repeats, in a scrambled order.
    let picks: Vec<u32> = (0..slots * 2).map(|_| (values.next_u64() % slots as u64) as u32).collect();
    let mut gathered = vec![0f32; picks.len() * dim];
    slab.gather(&picks, &mut gathered).expect("gather");
    for (i, &slot) in picks.iter().enumerate() {
        let want = &reference[slot as usize * floats..][..dim];
        assert_eq!(bits(&gathered[i * dim..][..dim]), bits(want), "{}: gather slot {slot}", slab.backend());
    }
    // Three rounds of updates on distinct slots (every other slot, shuffled).
    for round in 0..3 {
        let touched: Vec<u32> = order.iter().copied().filter(|s| (s + round) % 2 == 0).collect();
        let mut grads = vec![0f32; touched.len() * dim];
        values.fill(&mut grads, 1.0);
        slab.apply(&touched, &grads, optimizer).expect("apply");
        for (&slot, grad) in touched.iter().zip(grads.chunks_exact(dim)) {
            optimizer.apply_row(&mut reference[slot as usize * floats..][..floats], grad);
        }
        check_all(slab, &reference, &format!("after apply round {round}"));
    }
}
